//! Damaged or missing remote objects give `RemoteLogError::Storage` (Kafka
//! KAFKA_STORAGE_ERROR), never a panic or wrong records.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use silt_broker::remote_log::{RemoteLog, RemoteLogError};
use silt_controller::RemoteSegmentMetadata;
use silt_tiering::chunk_cache::ChunkCacheConfig;
use silt_tiering::object_layout::ObjectKind;
use tempfile::TempDir;

use silt_tiering::testsuite::{TEST_CHUNK_BYTES, TieredPartition, tiered_partition};

async fn small_partition() -> (TempDir, TieredPartition) {
    let root = tempfile::tempdir().expect("store root");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(root.path()).expect("local store"));
    let tiered = tiered_partition(store, Path::from("silt"), 80, 12 * 1024).await;
    assert!(
        tiered.segments.len() >= 3,
        "{} segments",
        tiered.segments.len()
    );
    (root, tiered)
}

fn cache_config() -> ChunkCacheConfig {
    ChunkCacheConfig::memory_only(TEST_CHUNK_BYTES, 8 * 1024 * 1024)
}

async fn object(
    tiered: &TieredPartition,
    segment: &RemoteSegmentMetadata,
    kind: ObjectKind,
) -> Vec<u8> {
    tiered
        .store
        .get(&tiered.object_path(segment, kind))
        .await
        .expect("get object")
        .bytes()
        .await
        .expect("object bytes")
        .to_vec()
}

async fn replace_object(
    tiered: &TieredPartition,
    segment: &RemoteSegmentMetadata,
    kind: ObjectKind,
    bytes: Vec<u8>,
) {
    let _put = tiered
        .store
        .put(&tiered.object_path(segment, kind), PutPayload::from(bytes))
        .await
        .expect("put object");
}

fn assert_storage_error<T: std::fmt::Debug>(result: Result<T, RemoteLogError>, what: &str) {
    match result {
        Err(RemoteLogError::Storage(message)) => {
            assert!(!message.is_empty());
            eprintln!("{what}: {message}");
        }
        other => panic!("{what}: expected a storage error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_batch_length_is_a_storage_error() {
    let (_root, tiered) = small_partition().await;
    let segment = tiered.segments[1].clone();
    let mut log = object(&tiered, &segment, ObjectKind::Log).await;
    // batchLength of the segment's first batch.
    log[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    replace_object(&tiered, &segment, ObjectKind::Log, log).await;
    let reader = tiered.reader(cache_config()).await;
    assert_storage_error(
        reader
            .read(&tiered.partition, segment.base_offset, 1024)
            .await,
        "bad batch length",
    );
    // Other segments are unaffected.
    let other = &tiered.segments[0];
    let read = reader
        .read(&tiered.partition, other.base_offset, 1024)
        .await
        .expect("healthy segment");
    assert_eq!(read.records, tiered.local_read(other.base_offset, 1024));
}

#[tokio::test]
async fn an_unknown_magic_is_a_storage_error() {
    let (_root, tiered) = small_partition().await;
    let segment = tiered.segments[0].clone();
    let mut log = object(&tiered, &segment, ObjectKind::Log).await;
    log[16] = 1;
    replace_object(&tiered, &segment, ObjectKind::Log, log).await;
    let reader = tiered.reader(cache_config()).await;
    assert_storage_error(
        reader
            .read(&tiered.partition, segment.base_offset, 1024)
            .await,
        "magic 1",
    );
    assert_storage_error(
        reader
            .offset_for_timestamp(&tiered.partition, i64::MIN)
            .await,
        "timestamp lookup over magic 1",
    );
}

#[tokio::test]
async fn a_log_object_shorter_than_its_metadata_is_a_storage_error() {
    let (_root, tiered) = small_partition().await;
    let segment = tiered.segments[1].clone();
    let log = object(&tiered, &segment, ObjectKind::Log).await;
    replace_object(
        &tiered,
        &segment,
        ObjectKind::Log,
        log[..log.len() / 2].to_vec(),
    )
    .await;
    let reader = tiered.reader(cache_config()).await;
    assert_storage_error(
        reader
            .read(&tiered.partition, segment.end_offset, 1024 * 1024)
            .await,
        "truncated log object",
    );
}

#[tokio::test]
async fn a_missing_log_object_is_a_storage_error() {
    let (_root, tiered) = small_partition().await;
    let segment = tiered.segments[2].clone();
    tiered
        .store
        .delete(&tiered.object_path(&segment, ObjectKind::Log))
        .await
        .expect("delete");
    let reader = tiered.reader(cache_config()).await;
    assert_storage_error(
        reader
            .read(&tiered.partition, segment.base_offset, 1024)
            .await,
        "missing log object",
    );
}

#[tokio::test]
async fn a_torn_offset_index_is_a_storage_error() {
    let (_root, tiered) = small_partition().await;
    let segment = tiered.segments[0].clone();
    let mut index = object(&tiered, &segment, ObjectKind::OffsetIndex).await;
    assert!(!index.is_empty(), "the fixture indexes every 512 bytes");
    index.push(0);
    replace_object(&tiered, &segment, ObjectKind::OffsetIndex, index).await;
    let reader = tiered.reader(cache_config()).await;
    assert_storage_error(
        reader
            .read(&tiered.partition, segment.end_offset, 1024)
            .await,
        "torn offset index",
    );

    let mut pointing_outside = object(&tiered, &segment, ObjectKind::OffsetIndex).await;
    pointing_outside.truncate(8);
    pointing_outside[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    replace_object(&tiered, &segment, ObjectKind::OffsetIndex, pointing_outside).await;
    let reader = tiered.reader(cache_config()).await;
    assert_storage_error(
        reader
            .read(&tiered.partition, segment.end_offset, 1024)
            .await,
        "offset index entry past the log end",
    );
}

#[tokio::test]
async fn missing_indexes_fall_back_to_scanning_the_segment() {
    let (_root, tiered) = small_partition().await;
    for segment in &tiered.segments {
        for kind in [ObjectKind::OffsetIndex, ObjectKind::TimeIndex] {
            tiered
                .store
                .delete(&tiered.object_path(segment, kind))
                .await
                .expect("delete index");
        }
    }
    let reader = tiered.reader(cache_config()).await;
    for offset in (0..tiered.log_end_offset()).step_by(13) {
        let read = reader
            .read(&tiered.partition, offset, 2048)
            .await
            .expect("read without index");
        // Whole batches the local log has there; a read may stop at a chunk's end.
        let local = tiered.local_read(offset, 2048);
        assert!(
            !read.records.is_empty() && local.starts_with(&read.records),
            "offset {offset}"
        );
    }
    let timestamp = tiered.segments[1].max_timestamp_ms;
    assert_eq!(
        reader
            .offset_for_timestamp(&tiered.partition, timestamp)
            .await
            .expect("lookup without index"),
        tiered
            .log
            .offset_for_timestamp(timestamp)
            .expect("local lookup")
    );
}
