//! The chunk cache under the remote reader: chunk assembly, bounds, coalesced misses,
//! read-ahead and the disk tier.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use silt_tiering::chunk_cache::{ChunkCache, ChunkCacheConfig, ChunkCacheError};

const CHUNK: usize = 1000;

/// An object whose byte `i` is `i % 251`, so any misplaced byte shows.
fn object_bytes(size: usize) -> Bytes {
    (0..size).map(|index| (index % 251) as u8).collect()
}

async fn store_with(path: &Path, bytes: Bytes) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let _put = store
        .put(path, PutPayload::from(bytes))
        .await
        .expect("put object");
    store
}

async fn memory_cache() -> ChunkCache {
    ChunkCache::new(ChunkCacheConfig::memory_only(CHUNK, 1024 * 1024))
        .await
        .expect("cache")
}

#[tokio::test]
async fn ranges_spanning_chunks_are_assembled_and_the_last_chunk_is_short() {
    let path = Path::from("objects/a.log");
    let size = 4 * CHUNK + 321;
    let bytes = object_bytes(size);
    let store = store_with(&path, bytes.clone()).await;
    let cache = memory_cache().await;
    let size = size as u64;
    let ranges = [
        0..1,
        0..CHUNK as u64,
        10..20,
        (CHUNK as u64 - 1)..(CHUNK as u64 + 1),
        500..3500,
        0..size,
        (size - 10)..size,
        (4 * CHUNK as u64)..size,
        7..7,
    ];
    for range in ranges {
        let read = cache
            .get_range(&store, &path, size, range.clone())
            .await
            .expect("read");
        assert_eq!(
            read,
            bytes.slice(range.start as usize..range.end as usize),
            "range {range:?}"
        );
    }
    assert_eq!(cache.chunk_count(size), 5);
    let stats = cache.stats();
    assert_eq!(stats.misses, 5, "each chunk fetched once: {stats:?}");
    assert_eq!(stats.bytes_fetched, size);
    assert!(stats.memory_hits > 0);
}

#[tokio::test]
async fn ranges_outside_the_object_and_missing_objects_are_errors() {
    let path = Path::from("objects/b.log");
    let store = store_with(&path, object_bytes(2500)).await;
    let cache = memory_cache().await;
    assert!(matches!(
        cache.get_range(&store, &path, 2500, 2000..2501).await,
        Err(ChunkCacheError::OutOfBounds { .. })
    ));
    let reversed = std::ops::Range { start: 20, end: 10 };
    assert!(matches!(
        cache.get_range(&store, &path, 2500, reversed).await,
        Err(ChunkCacheError::OutOfBounds { .. })
    ));
    assert!(matches!(
        cache
            .get_range(&store, &Path::from("objects/missing.log"), 10, 0..10)
            .await,
        Err(ChunkCacheError::NotFound { .. })
    ));
    // A caller that believes the object is longer than it is gets an error, not a panic.
    let result = cache.get_range(&store, &path, 2600, 2400..2600).await;
    assert!(
        matches!(
            result,
            Err(ChunkCacheError::ShortChunk { .. } | ChunkCacheError::Fetch { .. })
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_chunk_share_one_get() {
    let path = Path::from("objects/c.log");
    let bytes = object_bytes(3 * CHUNK);
    let inner = InMemory::new();
    let _put = inner
        .put(&path, PutPayload::from(bytes.clone()))
        .await
        .expect("put object");
    let slow = ThrottledStore::new(
        inner,
        ThrottleConfig {
            wait_get_per_call: Duration::from_millis(200),
            ..ThrottleConfig::default()
        },
    );
    let store: Arc<dyn ObjectStore> = Arc::new(slow);
    let cache = Arc::new(memory_cache().await);
    let readers: Vec<_> = (0..8u64)
        .map(|reader| {
            let cache = Arc::clone(&cache);
            let store = Arc::clone(&store);
            let path = path.clone();
            tokio::spawn(async move {
                cache
                    .get_range(
                        &store,
                        &path,
                        3 * CHUNK as u64,
                        reader * 10..reader * 10 + 50,
                    )
                    .await
            })
        })
        .collect();
    for (reader, handle) in readers.into_iter().enumerate() {
        let start = reader * 10;
        let read = handle.await.expect("join").expect("read");
        assert_eq!(read, bytes.slice(start..start + 50));
    }
    assert_eq!(cache.stats().misses, 1, "{:?}", cache.stats());
}

#[tokio::test]
async fn prefetch_fills_the_cache_in_the_background() {
    let path = Path::from("objects/d.log");
    let size = 3 * CHUNK + 1;
    let bytes = object_bytes(size);
    let store = store_with(&path, bytes.clone()).await;
    let cache = Arc::new(memory_cache().await);
    for chunk_index in 1..=5 {
        cache.prefetch(&store, &path, size as u64, chunk_index);
    }
    let mut waited = Duration::ZERO;
    while cache.stats().misses < 3 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    assert_eq!(
        cache.stats().misses,
        3,
        "chunks 1..=3 exist, 4 and 5 do not"
    );
    let read = cache
        .get_range(&store, &path, size as u64, CHUNK as u64..size as u64)
        .await
        .expect("read");
    assert_eq!(read, bytes.slice(CHUNK..));
    let stats = cache.stats();
    assert_eq!(stats.misses, 3, "served from prefetched chunks: {stats:?}");
    assert_eq!(stats.memory_hits, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_cache_smaller_than_the_data_still_reads_every_byte() {
    let path = Path::from("objects/e.log");
    let size = 200 * CHUNK + 17;
    let bytes = object_bytes(size);
    let store = store_with(&path, bytes.clone()).await;
    let disk = tempfile::tempdir().expect("disk dir");
    let cache = ChunkCache::new(ChunkCacheConfig {
        chunk_bytes: CHUNK,
        memory_bytes: 8 * CHUNK,
        disk_bytes: 64 * 1024 * 1024,
        disk_dir: Some(disk.path().to_path_buf()),
        read_ahead_chunks: 0,
    })
    .await
    .expect("hybrid cache");
    for _pass in 0..2 {
        let mut position = 0u64;
        while position < size as u64 {
            let end = (position + 777).min(size as u64);
            let read = cache
                .get_range(&store, &path, size as u64, position..end)
                .await
                .expect("read");
            assert_eq!(read, bytes.slice(position as usize..end as usize));
            position = end;
        }
    }
    assert!(cache.stats().hits() > 0, "{:?}", cache.stats());
}

#[tokio::test]
async fn unusable_configs_are_refused() {
    assert!(matches!(
        ChunkCache::new(ChunkCacheConfig::memory_only(0, 1024)).await,
        Err(ChunkCacheError::InvalidConfig(_))
    ));
    let disk = tempfile::tempdir().expect("disk dir");
    let too_small_disk = ChunkCacheConfig {
        disk_bytes: 1024 * 1024,
        disk_dir: Some(disk.path().to_path_buf()),
        ..ChunkCacheConfig::default()
    };
    assert!(matches!(
        ChunkCache::new(too_small_disk).await,
        Err(ChunkCacheError::InvalidConfig(_))
    ));
    let default = ChunkCacheConfig::default();
    assert!(!default.has_disk_tier(), "no disk tier without a directory");
    assert_eq!(default.chunk_bytes, 4 * 1024 * 1024);
}
