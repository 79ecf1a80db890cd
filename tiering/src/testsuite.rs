//! The `RemoteLog` conformance suite (feature `testsuite`), for any implementation of
//! [`RemoteLog`] over any object store.
//!
//! [`tiered_partition`] writes a real partition log of mixed batches (codecs, sizes,
//! timestamps going back), ships its sealed segments to a store at their
//! [object layout](crate::object_layout) paths and commits them through a real
//! controller. [`remote_log_conformance`] then checks every read of a `&dyn RemoteLog`
//! against the local log; [`remote_log_lifecycle_conformance`] checks that unfinished
//! and deleted segments are never served. [`s3_test_settings`] names the S3 server the
//! tests run against; under `CI=true` a missing one fails the run instead of skipping.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use silt_broker::log::PartitionLog;
use silt_broker::log_config::LogConfig;
use silt_broker::record_batch::{batch_size_from_prefix, parse_header};
use silt_broker::remote_log::{RemoteLog, RemoteLogError, RemotePartition};
use silt_broker::test_util::BatchSpec;
use silt_controller::{
    BrokerRegistration, Controller, ControllerConfig, RemoteSegmentMetadata, RemoteSegmentState,
};
use tempfile::TempDir;

use crate::chunk_cache::{ChunkCache, ChunkCacheConfig};
use crate::object_layout::{ObjectKind, segment_object};
use crate::remote_reader::RemoteLogReader;

/// Chunks small enough that batches straddle chunk boundaries.
pub const TEST_CHUNK_BYTES: usize = 1024;
/// First record timestamp of the fixture log (ms).
pub const FIRST_TIMESTAMP: i64 = 1_700_000_000_000;
const BROKER_ID: i32 = 1;
const LEADER_EPOCH: i32 = 0;

/// The S3-compatible server tests run against, from `SILT_TEST_S3_ENDPOINT`,
/// `SILT_TEST_S3_BUCKET`, `SILT_TEST_S3_ACCESS_KEY_ID`, `SILT_TEST_S3_SECRET_ACCESS_KEY`
/// and optionally `SILT_TEST_S3_REGION` (`minio-dev/start` prints them).
#[derive(Debug, Clone)]
pub struct S3TestSettings {
    /// `http://host:port` of the server.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Region (default `us-east-1`).
    pub region: String,
}

impl S3TestSettings {
    /// A client for the bucket (path-style requests, plain HTTP allowed).
    ///
    /// # Panics
    /// When object_store refuses the settings.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .build()
            .expect("s3 store from SILT_TEST_S3_* settings");
        Arc::new(store)
    }
}

/// The S3 test settings from the environment, or `None` when any is missing.
///
/// # Panics
/// When a setting is missing and `CI=true`: CI must never pass by skipping S3.
pub fn s3_test_settings() -> Option<S3TestSettings> {
    let setting = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let settings = (|| {
        Some(S3TestSettings {
            endpoint: setting("SILT_TEST_S3_ENDPOINT")?,
            bucket: setting("SILT_TEST_S3_BUCKET")?,
            access_key_id: setting("SILT_TEST_S3_ACCESS_KEY_ID")?,
            secret_access_key: setting("SILT_TEST_S3_SECRET_ACCESS_KEY")?,
            region: setting("SILT_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
        })
    })();
    if settings.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the S3 test server is not configured: run `eval \"$(minio-dev/start)\"` \
             to set SILT_TEST_S3_ENDPOINT, SILT_TEST_S3_BUCKET, SILT_TEST_S3_ACCESS_KEY_ID and \
             SILT_TEST_S3_SECRET_ACCESS_KEY"
        );
        eprintln!(
            "skipped S3: set SILT_TEST_S3_ENDPOINT, SILT_TEST_S3_BUCKET, SILT_TEST_S3_ACCESS_KEY_ID \
             and SILT_TEST_S3_SECRET_ACCESS_KEY (minio-dev/start prints them) to run against S3"
        );
    }
    settings
}

/// A deterministic pseudo-random sequence (64-bit LCG), so failures reproduce.
#[derive(Debug)]
pub struct Lcg(u64);

impl Lcg {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    /// A value in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// A partition whose whole log is also committed in remote storage.
pub struct TieredPartition {
    /// Holds the controller and log directories.
    pub dir: TempDir,
    /// The controller the segments were committed through (one voter, in `dir`).
    pub controller: Controller,
    /// The local log the remote copy is checked against (every segment sealed).
    pub log: PartitionLog,
    /// The partition as the remote log knows it.
    pub partition: RemotePartition,
    /// Committed remote segments, by base offset.
    pub segments: Vec<RemoteSegmentMetadata>,
    /// The store the segment objects were written to.
    pub store: Arc<dyn ObjectStore>,
    /// Where under `store` they were written.
    pub prefix: Path,
}

impl TieredPartition {
    /// Offset after the last record (exclusive), local and remote alike.
    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// The object path of `segment`'s file of `kind`.
    pub fn object_path(&self, segment: &RemoteSegmentMetadata, kind: ObjectKind) -> Path {
        segment_object(
            &self.prefix,
            &self.partition.topic,
            self.partition.topic_id,
            self.partition.partition,
            segment.base_offset,
            segment.segment_id,
            kind,
        )
    }

    /// A reader over this partition's store with a fresh cache.
    pub async fn reader(&self, config: ChunkCacheConfig) -> RemoteLogReader {
        let cache = ChunkCache::new(config).await.expect("chunk cache");
        RemoteLogReader::new(
            Arc::clone(&self.store),
            self.prefix.clone(),
            self.controller.clone(),
            Arc::new(cache),
        )
    }

    /// The local log's answer to a fetch of `offset`, as the remote reader must give it.
    pub fn local_read(&self, offset: i64, max_bytes: usize) -> Bytes {
        self.log
            .read(offset, max_bytes, i64::MAX, true)
            .expect("local read")
            .records
    }

    /// Registers a copy of `segment`'s offsets that never finishes (state `CopyStarted`)
    /// and returns it.
    pub async fn begin_unfinished_copy(
        &self,
        base_offset: i64,
        end_offset: i64,
    ) -> RemoteSegmentMetadata {
        let segment = remote_segment_metadata(&self.partition, base_offset, end_offset, 0, 1);
        self.controller
            .begin_remote_segment_copy(segment.clone())
            .await
            .expect("begin copy");
        segment
    }
}

fn remote_segment_metadata(
    partition: &RemotePartition,
    base_offset: i64,
    end_offset: i64,
    max_timestamp_ms: i64,
    size_bytes: u64,
) -> RemoteSegmentMetadata {
    RemoteSegmentMetadata {
        topic_id: partition.topic_id,
        partition: partition.partition,
        segment_id: uuid::Uuid::new_v4(),
        base_offset,
        end_offset,
        max_timestamp_ms,
        size_bytes,
        leader_epoch: LEADER_EPOCH,
        state: RemoteSegmentState::CopyStarted,
        broker_id: BROKER_ID,
        event_timestamp_ms: FIRST_TIMESTAMP,
        segment_leader_epochs: BTreeMap::from([(LEADER_EPOCH, base_offset)]),
        compacted: false,
    }
}

/// Largest batch max timestamp of a `.log` file.
fn max_timestamp_of(log_bytes: &[u8]) -> i64 {
    let mut position = 0;
    let mut max_timestamp = -1;
    while position < log_bytes.len() {
        let header = parse_header(&log_bytes[position..]).expect("local batch header");
        max_timestamp = max_timestamp.max(header.max_timestamp);
        position += batch_size_from_prefix(&log_bytes[position..]).expect("local batch size");
    }
    max_timestamp
}

/// Writes a log of `batches` mixed batches (uncompressed and compressed, one to 24
/// records, values up to 300 bytes, timestamps mostly increasing with some going back)
/// into segments of about `segment_bytes`, then ships every segment to `store` under
/// `prefix` and commits it through a fresh controller.
pub async fn tiered_partition(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    batches: usize,
    segment_bytes: u64,
) -> TieredPartition {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start(ControllerConfig {
        node_id: BROKER_ID,
        data_dir: dir.path().join("__controller"),
        cluster_id: None,
        voters: std::collections::BTreeMap::new(),
        listen_addr: None,
    })
    .await
    .expect("controller start");
    controller
        .register_broker(BrokerRegistration {
            broker_id: BROKER_ID,
            incarnation_id: uuid::Uuid::new_v4(),
            host: "127.0.0.1".to_owned(),
            port: 9092,
            rack: None,
            fenced: false,
        })
        .await
        .expect("register broker");
    // Short names keep object keys short (s3s-fs names files after the whole key).
    let topic_name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let topic = controller
        .create_topic(&topic_name, 1, 1, BTreeMap::new(), false)
        .await
        .expect("create topic");
    let partition = RemotePartition {
        topic_id: topic.topic_id,
        topic: topic_name.clone(),
        partition: 0,
    };

    let log = write_log(
        &dir.path().join(format!("{topic_name}-0")),
        batches,
        segment_bytes,
    );
    let mut tiered = TieredPartition {
        dir,
        controller,
        log,
        partition,
        segments: Vec::new(),
        store,
        prefix,
    };
    for base_offset in tiered.log.sealed_segment_base_offsets() {
        let files = tiered
            .log
            .sealed_segment_files(base_offset)
            .expect("sealed segment files");
        let segment = ship_segment(
            &tiered,
            &files.log,
            &files.offset_index,
            &files.time_index,
            base_offset,
            files.next_offset,
        )
        .await;
        tiered.segments.push(segment);
    }
    tiered
}

fn write_log(dir: &FsPath, batches: usize, segment_bytes: u64) -> PartitionLog {
    let config = LogConfig {
        segment_bytes,
        index_interval_bytes: 512,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir, config, FIRST_TIMESTAMP).expect("open log");
    let mut random = Lcg::new(0x5117);
    let mut next_timestamp = FIRST_TIMESTAMP;
    for batch_index in 0..batches {
        let records = 1 + random.below(24) as usize;
        let value_size = random.below(300) as usize;
        let timestamps: Vec<i64> = (0..records)
            .map(|_| {
                next_timestamp += random.below(4) as i64;
                // Every few records one goes back in time (CreateTime is the producer's).
                if random.below(7) == 0 {
                    next_timestamp - 1 - random.below(20) as i64
                } else {
                    next_timestamp
                }
            })
            .collect();
        let compression = match batch_index % 4 {
            1 => Compression::Gzip,
            3 => Compression::Zstd,
            _ => Compression::None,
        };
        let batch = BatchSpec::with_timestamps(timestamps)
            .value_size(value_size)
            .compression(compression)
            .encode();
        let _appended = log
            .append_as_leader(&batch, LEADER_EPOCH, FIRST_TIMESTAMP)
            .expect("append");
    }
    log.roll(FIRST_TIMESTAMP).expect("roll the last segment");
    log
}

async fn ship_segment(
    tiered: &TieredPartition,
    log_file: &FsPath,
    offset_index_file: &FsPath,
    time_index_file: &FsPath,
    base_offset: i64,
    next_offset: i64,
) -> RemoteSegmentMetadata {
    let log_bytes = std::fs::read(log_file).expect("read segment log");
    let segment = remote_segment_metadata(
        &tiered.partition,
        base_offset,
        next_offset - 1,
        max_timestamp_of(&log_bytes),
        log_bytes.len() as u64,
    );
    tiered
        .controller
        .begin_remote_segment_copy(segment.clone())
        .await
        .expect("begin copy");
    for (kind, bytes) in [
        (ObjectKind::Log, log_bytes),
        (
            ObjectKind::OffsetIndex,
            std::fs::read(offset_index_file).expect("read offset index"),
        ),
        (
            ObjectKind::TimeIndex,
            std::fs::read(time_index_file).expect("read time index"),
        ),
    ] {
        let _put = tiered
            .store
            .put(&tiered.object_path(&segment, kind), PutPayload::from(bytes))
            .await
            .expect("put segment object");
    }
    tiered
        .controller
        .finish_remote_segment_copy(segment.topic_id, segment.partition, segment.segment_id)
        .await
        .expect("finish copy")
}

/// The cache configurations every store is checked with: memory only, and a hybrid
/// cache whose memory tier is too small for the log, so chunks move to disk.
pub fn cache_configs(disk_dir: &FsPath) -> Vec<(&'static str, ChunkCacheConfig)> {
    vec![
        (
            "memory",
            ChunkCacheConfig::memory_only(TEST_CHUNK_BYTES, 64 * 1024 * 1024),
        ),
        (
            "hybrid",
            ChunkCacheConfig {
                chunk_bytes: TEST_CHUNK_BYTES,
                memory_bytes: 16 * 1024,
                disk_bytes: 64 * 1024 * 1024,
                disk_dir: Some(disk_dir.to_path_buf()),
                read_ahead_chunks: 2,
            },
        ),
    ]
}

/// The read checks of the suite, against `remote` serving `tiered`'s partition: offsets,
/// byte-for-byte reads of every batch, of every offset and of large sequential reads,
/// `max_bytes` bounds, out-of-range errors and timestamp lookups, each compared with
/// the local log the segments came from. Leaves `tiered` unchanged.
///
/// # Panics
/// On the first check `remote` fails, naming the offset or timestamp.
pub async fn remote_log_conformance(remote: &dyn RemoteLog, tiered: &TieredPartition) {
    assert!(
        tiered.segments.len() >= 5,
        "the fixture should span several segments, got {}",
        tiered.segments.len()
    );
    offsets_come_from_committed_segments(remote, tiered);
    batch_by_batch_reads_equal_the_local_log(remote, tiered).await;
    large_sequential_reads_equal_the_local_log(remote, tiered).await;
    every_offset_starts_at_its_batch(remote, tiered).await;
    max_bytes_is_respected_with_one_batch_minimum(remote, tiered).await;
    out_of_range_offsets_are_errors(remote, tiered).await;
    timestamp_lookups_equal_the_local_log(remote, tiered).await;
}

/// The segment life-cycle checks of the suite: a copy that never finished and a
/// segment whose deletion started are not served, and the remote log start moves past
/// the deleted segment. Changes `tiered`'s remote metadata (deletes its first segment),
/// so run it after [`remote_log_conformance`].
///
/// # Panics
/// On the first check `remote` fails.
pub async fn remote_log_lifecycle_conformance(remote: &dyn RemoteLog, tiered: &TieredPartition) {
    uncommitted_and_deleted_segments_are_not_served(remote, tiered).await;
}

fn offsets_come_from_committed_segments(remote: &dyn RemoteLog, tiered: &TieredPartition) {
    assert_eq!(remote.log_start_offset(&tiered.partition), Some(0));
    assert_eq!(
        remote.log_end_offset(&tiered.partition),
        Some(tiered.log_end_offset())
    );
}

/// Reading from 0 to the end one batch at a time gives exactly the local log's bytes.
async fn batch_by_batch_reads_equal_the_local_log(
    remote: &dyn RemoteLog,
    tiered: &TieredPartition,
) {
    let mut next = 0;
    let mut remote_bytes = Vec::new();
    let mut local_bytes = Vec::new();
    while next < tiered.log_end_offset() {
        let remote = remote
            .read(&tiered.partition, next, 1)
            .await
            .unwrap_or_else(|error| panic!("remote read at {next}: {error}"));
        let local = tiered.local_read(next, 1);
        assert_eq!(remote.records, local, "batch at offset {next}");
        let header = parse_header(&remote.records).expect("remote batch header");
        assert_eq!(
            batch_size_from_prefix(&remote.records).expect("batch size"),
            remote.records.len(),
            "max_bytes 1 returns exactly one batch"
        );
        remote_bytes.extend_from_slice(&remote.records);
        local_bytes.extend_from_slice(&local);
        next = header.next_offset();
    }
    assert_eq!(next, tiered.log_end_offset());
    assert_eq!(remote_bytes, local_bytes);
    let local_total: u64 = tiered
        .segments
        .iter()
        .map(|segment| segment.size_bytes)
        .sum();
    assert_eq!(
        remote_bytes.len() as u64,
        local_total,
        "every byte of every segment"
    );
}

/// Reading from 0 to the end with a large `max_bytes`, as a catching-up consumer does,
/// makes progress on every read and gives exactly the local log's bytes.
async fn large_sequential_reads_equal_the_local_log(
    remote: &dyn RemoteLog,
    tiered: &TieredPartition,
) {
    let mut next = 0;
    let mut remote_bytes = Vec::new();
    while next < tiered.log_end_offset() {
        let remote = remote
            .read(&tiered.partition, next, 1024 * 1024)
            .await
            .unwrap_or_else(|error| panic!("remote read at {next}: {error}"));
        assert!(
            !remote.records.is_empty(),
            "read at {next} returned nothing"
        );
        remote_bytes.extend_from_slice(&remote.records);
        next = last_offset_of(&remote.records) + 1;
    }
    assert_eq!(next, tiered.log_end_offset());
    let mut local = Vec::new();
    let mut local_next = 0;
    while local_next < tiered.log_end_offset() {
        let read = tiered.local_read(local_next, usize::MAX);
        local.extend_from_slice(&read);
        local_next = last_offset_of(&read) + 1;
    }
    assert_eq!(
        remote_bytes.len(),
        local.len(),
        "every byte of every segment"
    );
    assert!(
        remote_bytes == local,
        "large reads give the local log's bytes"
    );
}

/// A read of any offset, including one in the middle of a batch, starts with the batch
/// holding it.
async fn every_offset_starts_at_its_batch(remote: &dyn RemoteLog, tiered: &TieredPartition) {
    for offset in 0..tiered.log_end_offset() {
        let remote = remote
            .read(&tiered.partition, offset, 1)
            .await
            .unwrap_or_else(|error| panic!("remote read at {offset}: {error}"));
        let header = parse_header(&remote.records).expect("remote batch header");
        assert!(
            header.base_offset <= offset && offset <= header.last_offset(),
            "offset {offset} read batch {}..={}",
            header.base_offset,
            header.last_offset()
        );
        assert_eq!(
            remote.records,
            tiered.local_read(offset, 1),
            "offset {offset}"
        );
    }
}

/// Reads stop at `max_bytes` on a batch boundary and within one segment, but always
/// return the first batch, as local reads do.
async fn max_bytes_is_respected_with_one_batch_minimum(
    remote: &dyn RemoteLog,
    tiered: &TieredPartition,
) {
    let mut random = Lcg::new(74);
    for _ in 0..300 {
        let offset = random.below(tiered.log_end_offset() as u64) as i64;
        let max_bytes = match random.below(4) {
            0 => 0,
            1 => random.below(200) as usize,
            2 => random.below(8 * 1024) as usize,
            _ => 1024 * 1024,
        };
        let remote = remote
            .read(&tiered.partition, offset, max_bytes)
            .await
            .unwrap_or_else(|error| panic!("remote read at {offset}: {error}"));
        let local = tiered.local_read(offset, max_bytes);
        // A remote read may stop early, at the end of the cache chunk holding its first
        // batch; what it returns is always whole batches the local log has there.
        assert!(
            !remote.records.is_empty() && local.starts_with(&remote.records),
            "offset {offset} max_bytes {max_bytes}: remote {} bytes, local {} bytes",
            remote.records.len(),
            local.len()
        );
        let first_size = batch_size_from_prefix(&remote.records).expect("first batch");
        assert!(remote.records.len() >= first_size.min(local.len()));
        assert!(remote.records.len() <= max_bytes.max(first_size));
        let segment = tiered
            .segments
            .iter()
            .find(|segment| segment.base_offset <= offset && offset <= segment.end_offset)
            .expect("segment of offset");
        let last = last_offset_of(&remote.records);
        assert!(last <= segment.end_offset, "read crossed the segment end");
    }
}

/// Last offset of the last batch of `records`.
pub fn last_offset_of(records: &[u8]) -> i64 {
    let mut position = 0;
    let mut last = -1;
    while position < records.len() {
        let header = parse_header(&records[position..]).expect("batch header");
        last = header.last_offset();
        position += header.size_bytes();
    }
    last
}

/// Asserts that `result` is `OffsetOutOfRange` for `offset`.
///
/// # Panics
/// When it is anything else.
pub fn assert_out_of_range(result: Result<impl std::fmt::Debug, RemoteLogError>, offset: i64) {
    match result {
        Err(RemoteLogError::OffsetOutOfRange {
            offset: reported, ..
        }) => assert_eq!(reported, offset),
        other => panic!("offset {offset}: expected OffsetOutOfRange, got {other:?}"),
    }
}

async fn out_of_range_offsets_are_errors(remote: &dyn RemoteLog, tiered: &TieredPartition) {
    let end = tiered.log_end_offset();
    for offset in [-1, end, end + 1, i64::MAX] {
        assert_out_of_range(remote.read(&tiered.partition, offset, 1024).await, offset);
    }
    let unknown = RemotePartition {
        topic_id: silt_controller::TopicId::random(),
        ..tiered.partition.clone()
    };
    assert_out_of_range(remote.read(&unknown, 0, 1024).await, 0);
    assert_eq!(remote.log_start_offset(&unknown), None);
    assert_eq!(remote.log_end_offset(&unknown), None);
    assert_eq!(
        remote
            .offset_for_timestamp(&unknown, FIRST_TIMESTAMP)
            .await
            .expect("lookup on an empty partition"),
        None
    );
}

/// ListOffsets by timestamp answers like the local log for timestamps before, inside
/// and after the log.
async fn timestamp_lookups_equal_the_local_log(remote: &dyn RemoteLog, tiered: &TieredPartition) {
    let max_timestamp = tiered
        .segments
        .iter()
        .map(|segment| segment.max_timestamp_ms)
        .max()
        .expect("segments");
    let mut timestamps: Vec<i64> = vec![i64::MIN, -1, 0, FIRST_TIMESTAMP - 1];
    timestamps.extend((FIRST_TIMESTAMP..=max_timestamp + 2).step_by(7));
    timestamps.extend([
        max_timestamp - 1,
        max_timestamp,
        max_timestamp + 1,
        i64::MAX,
    ]);
    for timestamp in timestamps {
        let remote = remote
            .offset_for_timestamp(&tiered.partition, timestamp)
            .await
            .unwrap_or_else(|error| panic!("remote lookup of {timestamp}: {error}"));
        let local = tiered
            .log
            .offset_for_timestamp(timestamp)
            .expect("local lookup");
        assert_eq!(remote, local, "timestamp {timestamp}");
    }
}

/// Segments that are still being copied, or whose deletion started, are never read.
async fn uncommitted_and_deleted_segments_are_not_served(
    remote: &dyn RemoteLog,
    tiered: &TieredPartition,
) {
    let end = tiered.log_end_offset();
    let _unfinished = tiered.begin_unfinished_copy(end, end + 100).await;
    assert_eq!(remote.log_end_offset(&tiered.partition), Some(end));
    assert_out_of_range(remote.read(&tiered.partition, end, 1024).await, end);

    let first = &tiered.segments[0];
    tiered
        .controller
        .begin_remote_segment_delete(first.topic_id, first.partition, first.segment_id)
        .await
        .expect("begin delete");
    let second_base = tiered.segments[1].base_offset;
    assert_eq!(
        remote.log_start_offset(&tiered.partition),
        Some(second_base)
    );
    assert_out_of_range(remote.read(&tiered.partition, 0, 1024).await, 0);
    assert_out_of_range(
        remote.read(&tiered.partition, second_base - 1, 1024).await,
        second_base - 1,
    );
    let read = remote
        .read(&tiered.partition, second_base, 1)
        .await
        .expect("the next segment is still served");
    assert_eq!(read.records, tiered.local_read(second_base, 1));
    // Timestamp lookups start at the new remote start too.
    let found = remote
        .offset_for_timestamp(&tiered.partition, i64::MIN)
        .await
        .expect("lookup");
    assert_eq!(found.map(|(offset, _)| offset), Some(second_base));
}
