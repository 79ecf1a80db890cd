//! Fixtures of the `uploads_*` tests: a real controller and replica manager with one
//! tiered topic, real record batches, and object stores to copy to (a local directory,
//! plus the S3 server named by `SILT_TEST_S3_*` when set).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;
use silt_broker::replica_manager::{ReplicaManager, ReplicaManagerConfig, now_ms};
use silt_broker::test_util::BatchSpec;
use silt_controller::{BrokerRegistration, Controller, ControllerConfig, TopicId};
use silt_tiering::testsuite::s3_test_settings;
use silt_tiering::{ObjectStoreConfig, TieringConfig, claim_prefix, open_object_store};
use tempfile::TempDir;

/// This broker's id.
pub(super) const BROKER_ID: i32 = 1;
/// Partition every test uses.
pub(super) const PARTITION: i32 = 0;

/// Settings with a short grace period and an orphan scan every round.
pub(super) fn test_tiering_config() -> TieringConfig {
    TieringConfig {
        task_interval_ms: 100,
        orphan_grace_ms: 1_000,
        orphan_scan_interval_ms: 0,
        multipart_threshold_bytes: 512,
        multipart_part_bytes: 5 * 1024 * 1024,
        multipart_concurrency: 2,
        retry_backoff_initial_ms: 200,
        retry_backoff_max_ms: 1_000,
        replaced_segment_delete_delay_ms: 1_000,
    }
}

/// The stores to run each scenario against: a local directory always, and the S3 server
/// of [`s3_test_settings`] under a fresh prefix (required under `CI=true`).
pub(super) fn store_configs(local_dir: &std::path::Path) -> Vec<ObjectStoreConfig> {
    let mut configs = vec![ObjectStoreConfig {
        url: format!("file://{}", local_dir.display()),
        ..ObjectStoreConfig::default()
    }];
    if let Some(s3) = s3_test_settings() {
        configs.push(ObjectStoreConfig {
            // Short: s3s-fs names a metadata file after the base64 of the whole key.
            url: format!(
                "s3://{}/u{}",
                s3.bucket,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            s3_endpoint: Some(s3.endpoint),
            s3_region: Some(s3.region),
            s3_access_key_id: Some(s3.access_key_id),
            s3_secret_access_key: Some(s3.secret_access_key),
            s3_allow_http: true,
        });
    }
    configs
}

/// A one-broker cluster hosting one tiered topic with one partition.
pub(super) struct Cluster {
    /// Holds the controller and log directories for the cluster's lifetime.
    _dir: TempDir,
    pub(super) controller: Controller,
    pub(super) replica_manager: Arc<ReplicaManager>,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) prefix: Path,
    pub(super) topic: String,
    pub(super) topic_id: TopicId,
}

impl Cluster {
    /// Starts a controller and replica manager in a tempdir and creates `topic` with
    /// `remote.storage.enable=true`, small segments and `extra_configs`.
    pub(super) async fn start(
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
        claim_prefix(
            store.as_ref(),
            &prefix,
            &controller.metadata().cluster_id,
            &HashSet::new(),
            now_ms(),
        )
        .await
        .expect("claim the prefix");
        Cluster {
            _dir: dir,
            controller,
            replica_manager,
            store,
            prefix,
            topic: topic.to_string(),
            topic_id: created.topic_id,
        }
    }

    /// Appends `count` batches of 3 records of 80 bytes stamped `timestamp_ms`.
    pub(super) async fn append(&self, count: usize, timestamp_ms: i64) {
        for _ in 0..count {
            let batch = BatchSpec::with_timestamps(vec![timestamp_ms; 3])
                .value_size(80)
                .encode_bytes();
            let _info = self
                .replica_manager
                .append_records(&self.topic, PARTITION, batch, 1)
                .await
                .expect("append");
        }
    }

    /// Appends `count` batches stamped now.
    pub(super) async fn append_now(&self, count: usize) {
        self.append(count, now_ms()).await;
    }

    /// Runs `inspect` on the partition log on a blocking thread.
    pub(super) async fn with_log<T: Send + 'static>(
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
    pub(super) async fn sealed_base_offsets(&self) -> Vec<i64> {
        self.with_log(|log| log.sealed_segment_base_offsets()).await
    }

    /// Every object under the store prefix.
    pub(super) async fn objects(&self) -> Vec<ObjectMeta> {
        self.store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .expect("list")
    }

    /// The bytes of one object.
    pub(super) async fn object_bytes(&self, path: &Path) -> Bytes {
        self.store
            .get(path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
    }
}

/// Runs before a put of a matching object completes; may change cluster state.
pub(super) type PutHook = Box<dyn FnOnce(Path) -> BoxFuture<'static, ()> + Send>;

/// A store wrapper that fails the next `fail_next` calls and can run a hook on a put.
pub(super) struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fail_next: AtomicUsize,
    failures: AtomicUsize,
    hook: Mutex<Option<(String, PutHook)>>,
}

impl FaultyStore {
    pub(super) fn new(inner: Arc<dyn ObjectStore>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            fail_next: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            hook: Mutex::new(None),
        })
    }

    /// Makes the next `calls` calls fail.
    pub(super) fn fail_next(&self, calls: usize) {
        self.fail_next.store(calls, Ordering::SeqCst);
    }

    /// Calls failed so far.
    pub(super) fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    /// Runs `hook` once, before the first put whose path ends with `suffix` is stored.
    pub(super) fn on_put(&self, suffix: &str, hook: PutHook) {
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
