//! Fixtures of the `uploads_*` tests: a real controller and replica manager with one
//! tiered topic, real record batches, and object stores to copy to (a local directory,
//! plus the S3 server named by `SILT_TEST_S3_*` when set).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;
use silt_broker::replica_manager::{ReplicaManager, ReplicaManagerConfig, now_ms};
use silt_controller::{BrokerRegistration, Controller, ControllerConfig, TopicId};
use silt_tiering::{ObjectStoreConfig, TieringConfig, open_object_store};
use tempfile::TempDir;

/// This broker's id.
pub(crate) const BROKER_ID: i32 = 1;
/// Partition every test uses.
pub(crate) const PARTITION: i32 = 0;

/// Settings with a short grace period and an orphan scan every round.
pub(crate) fn test_tiering_config() -> TieringConfig {
    TieringConfig {
        task_interval_ms: 100,
        orphan_grace_ms: 1_000,
        orphan_scan_interval_ms: 0,
        multipart_threshold_bytes: 512,
        multipart_part_bytes: 5 * 1024 * 1024,
        multipart_concurrency: 2,
        retry_backoff_initial_ms: 200,
        retry_backoff_max_ms: 1_000,
    }
}

/// The stores to run each scenario against: a local directory always, and the S3 server
/// of `SILT_TEST_S3_ENDPOINT` (with `SILT_TEST_S3_BUCKET`, `SILT_TEST_S3_ACCESS_KEY_ID`,
/// `SILT_TEST_S3_SECRET_ACCESS_KEY`) under a fresh prefix when it is set.
pub(crate) fn store_configs(local_dir: &std::path::Path) -> Vec<ObjectStoreConfig> {
    let mut configs = vec![ObjectStoreConfig {
        url: format!("file://{}", local_dir.display()),
        ..ObjectStoreConfig::default()
    }];
    if let Ok(endpoint) = std::env::var("SILT_TEST_S3_ENDPOINT")
        && !endpoint.is_empty()
    {
        let bucket =
            std::env::var("SILT_TEST_S3_BUCKET").unwrap_or_else(|_| "silt-test".to_string());
        configs.push(ObjectStoreConfig {
            // Short: s3s-fs names a metadata file after the base64 of the whole key.
            url: format!(
                "s3://{bucket}/u{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            s3_endpoint: Some(endpoint),
            s3_region: Some("us-east-1".to_string()),
            s3_access_key_id: std::env::var("SILT_TEST_S3_ACCESS_KEY_ID").ok(),
            s3_secret_access_key: std::env::var("SILT_TEST_S3_SECRET_ACCESS_KEY").ok(),
            s3_allow_http: true,
        });
    }
    configs
}

/// A one-broker cluster hosting one tiered topic with one partition.
pub(crate) struct Cluster {
    pub(crate) dir: TempDir,
    pub(crate) controller: Controller,
    pub(crate) replica_manager: Arc<ReplicaManager>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) topic: String,
    pub(crate) topic_id: TopicId,
}

impl Cluster {
    /// Starts a controller and replica manager in a tempdir and creates `topic` with
    /// `remote.storage.enable=true`, small segments and `extra_configs`.
    pub(crate) async fn start(
        store_config: &ObjectStoreConfig,
        topic: &str,
        extra_configs: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let controller = Controller::start(ControllerConfig {
            node_id: BROKER_ID,
            data_dir: dir.path().join("controller"),
            cluster_id: None,
            voters: std::collections::BTreeMap::new(),
            listen_addr: None,
        })
        .await
        .expect("controller");
        controller
            .register_broker(BrokerRegistration {
                broker_id: BROKER_ID,
                incarnation_id: uuid::Uuid::new_v4(),
                host: "127.0.0.1".to_string(),
                port: 9092,
                rack: None,
                fenced: false,
            })
            .await
            .expect("register broker");
        let mut configs = BTreeMap::from([
            ("segment.bytes".to_string(), "1024".to_string()),
            ("remote.storage.enable".to_string(), "true".to_string()),
        ]);
        for (key, value) in extra_configs {
            let _previous = configs.insert((*key).to_string(), (*value).to_string());
        }
        let created = controller
            .create_topic(topic, 1, 1, configs, false)
            .await
            .expect("create topic");
        let replica_manager = ReplicaManager::new(ReplicaManagerConfig {
            broker_id: BROKER_ID,
            log_dirs: vec![dir.path().join("logs")],
            log_defaults: BTreeMap::new(),
            replica_lag_time_max_ms: silt_broker::replica_manager::DEFAULT_REPLICA_LAG_TIME_MAX_MS,
            preallocate_max_bytes: silt_broker::preallocate::DEFAULT_PREALLOCATE_MAX_BYTES,
            writeback: silt_broker::writeback::WritebackConfig::default(),
        });
        replica_manager
            .apply_metadata(&controller.metadata())
            .await
            .expect("apply metadata");
        let (store, prefix) = open_object_store(store_config).await.expect("object store");
        Cluster {
            dir,
            controller,
            replica_manager,
            store,
            prefix,
            topic: topic.to_string(),
            topic_id: created.topic_id,
        }
    }

    /// Appends `count` batches of 3 records of 80 bytes stamped `timestamp_ms`.
    pub(crate) async fn append(&self, count: usize, timestamp_ms: i64) {
        for _ in 0..count {
            let batch = encode_batch(3, 80, timestamp_ms);
            let _info = self
                .replica_manager
                .append_records(&self.topic, PARTITION, batch, 1)
                .await
                .expect("append");
        }
    }

    /// Appends `count` batches stamped now.
    pub(crate) async fn append_now(&self, count: usize) {
        self.append(count, now_ms()).await;
    }

    /// Runs `inspect` on the partition log on a blocking thread.
    pub(crate) async fn with_log<T: Send + 'static>(
        &self,
        inspect: impl FnOnce(&silt_broker::log::PartitionLog) -> T + Send + 'static,
    ) -> T {
        let partition = self
            .replica_manager
            .partition(&self.topic, PARTITION)
            .expect("hosted");
        let log = partition.log();
        tokio::task::spawn_blocking(move || inspect(&log.lock()))
            .await
            .expect("log task")
    }

    /// Base offsets of the sealed local segments.
    pub(crate) async fn sealed_base_offsets(&self) -> Vec<i64> {
        self.with_log(|log| log.sealed_segment_base_offsets()).await
    }

    /// Every object under the store prefix.
    pub(crate) async fn objects(&self) -> Vec<ObjectMeta> {
        self.store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .expect("list")
    }

    /// The bytes of one object.
    pub(crate) async fn object_bytes(&self, path: &Path) -> Bytes {
        self.store
            .get(path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
    }
}

/// One v2 batch of `records` records with `value_size`-byte values.
pub(crate) fn encode_batch(records: usize, value_size: usize, timestamp_ms: i64) -> Bytes {
    let records: Vec<Record> = (0..records)
        .map(|index| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: -1,
            timestamp: timestamp_ms,
            key: Some(Bytes::from(format!("key-{index}"))),
            value: Some(Bytes::from(vec![b'v'; value_size])),
            headers: Default::default(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buffer.freeze()
}

/// Runs before a put of a matching object completes; may change cluster state.
pub(crate) type PutHook = Box<dyn FnOnce(Path) -> BoxFuture<'static, ()> + Send>;

/// A store wrapper that fails the next `fail_next` calls and can run a hook on a put.
pub(crate) struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fail_next: AtomicUsize,
    failures: AtomicUsize,
    hook: Mutex<Option<(String, PutHook)>>,
}

impl FaultyStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            fail_next: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            hook: Mutex::new(None),
        })
    }

    /// Makes the next `calls` calls fail.
    pub(crate) fn fail_next(&self, calls: usize) {
        self.fail_next.store(calls, Ordering::SeqCst);
    }

    /// Calls failed so far.
    pub(crate) fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    /// Runs `hook` once, before the first put whose path ends with `suffix` is stored.
    pub(crate) fn on_put(&self, suffix: &str, hook: PutHook) {
        *self.hook.lock() = Some((suffix.to_string(), hook));
    }

    fn injected_failure(&self) -> Option<object_store::Error> {
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if !failing {
            return None;
        }
        let _before = self.failures.fetch_add(1, Ordering::SeqCst);
        Some(object_store::Error::Generic {
            store: "faulty",
            source: "injected outage".into(),
        })
    }

    async fn run_hook(&self, location: &Path) {
        let hook = {
            let mut slot = self.hook.lock();
            match slot.as_ref() {
                Some((suffix, _)) if location.as_ref().ends_with(suffix.as_str()) => slot.take(),
                _ => None,
            }
        };
        if let Some((_, hook)) = hook {
            hook(location.clone()).await;
        }
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if let Some(error) = self.injected_failure() {
            return Err(error);
        }
        self.run_hook(location).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if let Some(error) = self.injected_failure() {
            return Err(error);
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if let Some(error) = self.injected_failure() {
            return Err(error);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if let Some(error) = self.injected_failure() {
            return Err(error);
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if let Some(error) = self.injected_failure() {
            return stream::once(async move { Err(error) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Some(error) = self.injected_failure() {
            return stream::once(async move { Err(error) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if let Some(error) = self.injected_failure() {
            return Err(error);
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if let Some(error) = self.injected_failure() {
            return Err(error);
        }
        self.inner.copy_opts(from, to, options).await
    }
}
