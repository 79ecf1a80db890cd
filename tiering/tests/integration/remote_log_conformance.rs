//! The `RemoteLog` conformance suite (`silt_tiering::testsuite`) against every object
//! store Silt supports, through the remote reader with each cache configuration: an
//! in-memory store, the local filesystem, and the S3-compatible server of
//! `SILT_TEST_S3_*` (required under `CI=true`).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use silt_broker::remote_log::RemoteLog;
use silt_tiering::remote_reader::RemoteLogReader;
use silt_tiering::testsuite::{
    TieredPartition, cache_configs, last_offset_of, remote_log_conformance,
    remote_log_lifecycle_conformance, s3_test_settings, tiered_partition,
};

/// The whole suite with every cache configuration, each on a partition of about 20
/// segments written under `prefix` in `store`; a reader-specific check (the warm pass
/// is served from the cache) between the read and the life-cycle checks.
async fn passes_the_suite(store: Arc<dyn ObjectStore>, prefix: Path) {
    let disk_dir = tempfile::tempdir().expect("disk cache dir");
    for (name, config) in cache_configs(disk_dir.path()) {
        let tiered = tiered_partition(
            Arc::clone(&store),
            prefix.clone().join(name),
            400,
            16 * 1024,
        )
        .await;
        eprintln!(
            "remote log conformance: {name} cache, {} segments, {} records",
            tiered.segments.len(),
            tiered.log_end_offset()
        );
        let reader = tiered.reader(config).await;
        remote_log_conformance(&reader, &tiered).await;
        warm_pass_hits_the_cache(&tiered, &reader).await;
        remote_log_lifecycle_conformance(&reader, &tiered).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_passes_the_remote_log_suite() {
    passes_the_suite(Arc::new(InMemory::new()), Path::from("silt")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filesystem_passes_the_remote_log_suite() {
    let root = tempfile::tempdir().expect("store root");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(root.path()).expect("local store"));
    passes_the_suite(store, Path::from("silt")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_passes_the_remote_log_suite() {
    let Some(s3) = s3_test_settings() else {
        return;
    };
    // A fresh prefix per run, so runs never see each other's objects.
    let prefix = Path::from(format!(
        "r{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    passes_the_suite(s3.object_store(), prefix).await;
}

/// A second full pass is served from the cache: hits grow; with a memory tier that holds
/// the whole log, no chunk is fetched twice.
async fn warm_pass_hits_the_cache(tiered: &TieredPartition, reader: &RemoteLogReader) {
    let read_everything = || async {
        let mut next = 0;
        while next < tiered.log_end_offset() {
            let read = reader
                .read(&tiered.partition, next, 64 * 1024)
                .await
                .expect("remote read");
            next = last_offset_of(&read.records) + 1;
        }
    };
    read_everything().await;
    // Let read-ahead started by the last reads settle.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let cold = reader.cache().stats();
    read_everything().await;
    let warm = reader.cache().stats();
    eprintln!("cache after the cold pass {cold:?}, after the warm pass {warm:?}");
    assert!(
        warm.hits() > cold.hits(),
        "second pass must hit the cache: {cold:?} then {warm:?}"
    );
    let log_bytes: u64 = tiered
        .segments
        .iter()
        .map(|segment| segment.size_bytes)
        .sum();
    if reader.cache().config().memory_bytes as u64 > 2 * log_bytes {
        assert_eq!(warm.misses, cold.misses, "nothing fetched twice: {warm:?}");
        assert_eq!(warm.bytes_fetched, cold.bytes_fetched);
    }
}
