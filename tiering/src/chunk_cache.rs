//! A read-through cache of remote objects split into fixed-size chunks.
//!
//! Object `o` of `n` bytes is cut into chunks of [`ChunkCacheConfig::chunk_bytes`]:
//! chunk `k` covers bytes `k * chunk_bytes .. min((k + 1) * chunk_bytes, n)`, so only
//! the last chunk is short. Chunks live in a foyer hybrid cache (memory, then an
//! optional disk tier) keyed by `(object path, chunk index)`. A missing chunk costs
//! one ranged GET; concurrent misses on the same chunk share that GET.
//!
//! Remote segment objects are immutable (their key carries a fresh segment id), so
//! cached chunks never need invalidating.

use std::io::{Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    Source,
};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use tracing::{debug, warn};

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Default memory tier capacity: 256 MiB.
pub const DEFAULT_MEMORY_BYTES: usize = 256 * 1024 * 1024;
/// Default disk tier capacity: 2 GiB.
pub const DEFAULT_DISK_BYTES: usize = 2 * 1024 * 1024 * 1024;
/// Default number of chunks prefetched after a sequential read.
pub const DEFAULT_READ_AHEAD_CHUNKS: usize = 2;

const MIN_DISK_BLOCK_BYTES: usize = 16 * 1024 * 1024;
/// Room for foyer's per-entry and per-block headers next to a chunk in a disk block.
const DISK_BLOCK_SLACK_BYTES: usize = 64 * 1024;
/// The disk tier needs a few blocks to rotate through.
const MIN_DISK_BLOCKS: usize = 4;
const MAX_MEMORY_SHARDS: usize = 16;
/// Each memory shard should hold at least this many chunks.
const CHUNKS_PER_MEMORY_SHARD: usize = 16;

/// Sizes of the chunk cache. Byte counts are capacities, not reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCacheConfig {
    /// Size of one chunk in bytes (> 0); each miss fetches one chunk.
    pub chunk_bytes: usize,
    /// Capacity of the memory tier in bytes.
    pub memory_bytes: usize,
    /// Capacity of the disk tier in bytes; 0 keeps the cache in memory only.
    pub disk_bytes: usize,
    /// Directory of the disk tier; `None` keeps the cache in memory only.
    pub disk_dir: Option<PathBuf>,
    /// Chunks fetched in the background after a read that ends in chunk `k`:
    /// `k + 1 ..= k + read_ahead_chunks`. 0 disables read-ahead.
    pub read_ahead_chunks: usize,
}

impl Default for ChunkCacheConfig {
    fn default() -> ChunkCacheConfig {
        ChunkCacheConfig {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            disk_bytes: DEFAULT_DISK_BYTES,
            disk_dir: None,
            read_ahead_chunks: DEFAULT_READ_AHEAD_CHUNKS,
        }
    }
}

impl ChunkCacheConfig {
    /// A memory-only config with the given chunk size and capacity.
    pub fn memory_only(chunk_bytes: usize, memory_bytes: usize) -> ChunkCacheConfig {
        ChunkCacheConfig {
            chunk_bytes,
            memory_bytes,
            disk_bytes: 0,
            disk_dir: None,
            ..ChunkCacheConfig::default()
        }
    }

    /// Whether a disk tier is configured (a directory and a non-zero capacity).
    pub fn has_disk_tier(&self) -> bool {
        self.disk_dir.is_some() && self.disk_bytes > 0
    }

    /// Size of one disk-tier block: a power of two holding at least two chunks.
    fn disk_block_bytes(&self) -> usize {
        (self.chunk_bytes.saturating_add(DISK_BLOCK_SLACK_BYTES))
            .saturating_mul(2)
            .next_power_of_two()
            .max(MIN_DISK_BLOCK_BYTES)
    }

    fn memory_shards(&self) -> usize {
        let chunks = self.memory_bytes / self.chunk_bytes.max(1);
        (chunks / CHUNKS_PER_MEMORY_SHARD).clamp(1, MAX_MEMORY_SHARDS)
    }
}

/// Errors of the chunk cache.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkCacheError {
    /// The configuration cannot be used.
    #[error("invalid chunk cache config: {0}")]
    InvalidConfig(String),
    /// The range asked for is not inside the object.
    #[error("range {start}..{end} is outside object {path} of {object_size} bytes")]
    OutOfBounds {
        /// Object path.
        path: String,
        /// Start of the range (inclusive).
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// Object size in bytes, as given by the caller.
        object_size: u64,
    },
    /// The object does not exist.
    #[error("object {path} not found")]
    NotFound {
        /// Object path.
        path: String,
    },
    /// The object store failed.
    #[error("fetching chunk {chunk_index} of {path} failed: {message}")]
    Fetch {
        /// Object path.
        path: String,
        /// Index of the chunk.
        chunk_index: u64,
        /// The object store's error.
        message: String,
    },
    /// The object is shorter than the size the caller gave.
    #[error("chunk {chunk_index} of {path}: expected {expected} bytes, got {actual}")]
    ShortChunk {
        /// Object path.
        path: String,
        /// Index of the chunk.
        chunk_index: u64,
        /// Bytes the chunk should hold.
        expected: u64,
        /// Bytes the store returned.
        actual: u64,
    },
    /// The cache itself failed (disk tier I/O, closed cache).
    #[error("chunk cache failed: {0}")]
    Cache(String),
}

/// Counters since the cache was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCacheStats {
    /// Chunks served from the memory tier.
    pub memory_hits: u64,
    /// Chunks served from the disk tier.
    pub disk_hits: u64,
    /// Chunks fetched from the object store (one GET each), read-ahead included.
    pub misses: u64,
    /// Bytes fetched from the object store.
    pub bytes_fetched: u64,
}

impl ChunkCacheStats {
    /// Memory and disk hits together.
    pub fn hits(&self) -> u64 {
        self.memory_hits + self.disk_hits
    }
}

#[derive(Debug, Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    bytes_fetched: AtomicU64,
}

/// Cache key: one chunk of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChunkKey {
    path: String,
    chunk_index: u64,
}

/// Cache value: the bytes of one chunk.
#[derive(Debug, Clone)]
struct Chunk(Bytes);

fn encode_len(writer: &mut impl Write, len: usize) -> foyer::Result<()> {
    writer
        .write_all(&(len as u64).to_le_bytes())
        .map_err(foyer::Error::io_error)
}

fn decode_bytes(reader: &mut impl Read) -> foyer::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    reader
        .read_exact(&mut len)
        .map_err(foyer::Error::io_error)?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| {
        foyer::Error::new(
            foyer::ErrorKind::Parse,
            "cached entry length overflows usize",
        )
    })?;
    let mut buf = vec![0u8; len];
    reader
        .read_exact(&mut buf)
        .map_err(foyer::Error::io_error)?;
    Ok(buf)
}

impl Code for ChunkKey {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        encode_len(writer, self.path.len())?;
        writer
            .write_all(self.path.as_bytes())
            .map_err(foyer::Error::io_error)?;
        writer
            .write_all(&self.chunk_index.to_le_bytes())
            .map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<ChunkKey> {
        let path = String::from_utf8(decode_bytes(reader)?).map_err(|error| {
            foyer::Error::new(foyer::ErrorKind::Parse, "cached key is not utf-8").with_source(error)
        })?;
        let mut chunk_index = [0u8; 8];
        reader
            .read_exact(&mut chunk_index)
            .map_err(foyer::Error::io_error)?;
        Ok(ChunkKey {
            path,
            chunk_index: u64::from_le_bytes(chunk_index),
        })
    }

    fn estimated_size(&self) -> usize {
        8 + self.path.len() + 8
    }
}

impl Code for Chunk {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        encode_len(writer, self.0.len())?;
        writer.write_all(&self.0).map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Chunk> {
        Ok(Chunk(Bytes::from(decode_bytes(reader)?)))
    }

    fn estimated_size(&self) -> usize {
        8 + self.0.len()
    }
}

/// A hybrid (memory + disk) cache of fixed-size chunks of remote objects.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. Must be created and
/// used inside a tokio runtime (the disk tier and read-ahead spawn tasks).
#[derive(Debug)]
pub struct ChunkCache {
    cache: HybridCache<ChunkKey, Chunk>,
    config: ChunkCacheConfig,
    counters: Arc<Counters>,
}

impl ChunkCache {
    /// Builds the cache; opens (creating if missing) the disk tier directory when
    /// [`ChunkCacheConfig::has_disk_tier`].
    ///
    /// # Errors
    /// `InvalidConfig` for a zero chunk size or memory capacity, or a disk tier smaller
    /// than four disk blocks (a block holds two chunks, at least 16 MiB); `Cache` when
    /// the disk tier cannot be opened.
    pub async fn new(config: ChunkCacheConfig) -> Result<ChunkCache, ChunkCacheError> {
        if config.chunk_bytes == 0 || config.memory_bytes == 0 {
            return Err(ChunkCacheError::InvalidConfig(format!(
                "chunk_bytes ({}) and memory_bytes ({}) must be positive",
                config.chunk_bytes, config.memory_bytes
            )));
        }
        let memory = HybridCacheBuilder::new()
            .with_name("silt-remote-chunks")
            .memory(config.memory_bytes)
            .with_shards(config.memory_shards())
            .with_weighter(|key: &ChunkKey, chunk: &Chunk| key.path.len() + chunk.0.len())
            .storage();
        let cache = match &config.disk_dir {
            Some(dir) if config.disk_bytes > 0 => {
                let block_bytes = config.disk_block_bytes();
                if config.disk_bytes < block_bytes.saturating_mul(MIN_DISK_BLOCKS) {
                    return Err(ChunkCacheError::InvalidConfig(format!(
                        "disk_bytes ({}) must be at least {MIN_DISK_BLOCKS} disk blocks of {block_bytes} bytes",
                        config.disk_bytes
                    )));
                }
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(config.disk_bytes)
                    .build()
                    .map_err(|error| ChunkCacheError::Cache(error.to_string()))?;
                memory
                    .with_engine_config(
                        BlockEngineConfig::new(device)
                            .with_block_size(block_bytes)
                            .with_buffer_pool_size(block_bytes.saturating_mul(2)),
                    )
                    .build()
                    .await
            }
            _ => memory.build().await,
        }
        .map_err(|error| ChunkCacheError::Cache(error.to_string()))?;
        debug!(
            chunk_bytes = config.chunk_bytes,
            memory_bytes = config.memory_bytes,
            disk_bytes = config.disk_bytes,
            hybrid = cache.is_hybrid(),
            "chunk cache ready"
        );
        Ok(ChunkCache {
            cache,
            config,
            counters: Arc::new(Counters::default()),
        })
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &ChunkCacheConfig {
        &self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> ChunkCacheStats {
        ChunkCacheStats {
            memory_hits: self.counters.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.counters.disk_hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            bytes_fetched: self.counters.bytes_fetched.load(Ordering::Relaxed),
        }
    }

    /// Index of the chunk holding byte `position`.
    pub fn chunk_index_of(&self, position: u64) -> u64 {
        position / self.chunk_bytes()
    }

    /// Byte position (exclusive) where the chunk holding byte `position` ends, not
    /// capped at any object size.
    pub fn chunk_end_of(&self, position: u64) -> u64 {
        (self.chunk_index_of(position) + 1).saturating_mul(self.chunk_bytes())
    }

    /// Number of chunks of an object of `object_size` bytes.
    pub fn chunk_count(&self, object_size: u64) -> u64 {
        object_size.div_ceil(self.chunk_bytes())
    }

    fn chunk_bytes(&self) -> u64 {
        self.config.chunk_bytes as u64
    }

    /// Byte range of chunk `chunk_index` in an object of `object_size` bytes (the last
    /// chunk is short).
    fn chunk_span(&self, object_size: u64, chunk_index: u64) -> Range<u64> {
        let start = chunk_index.saturating_mul(self.chunk_bytes());
        let end = start.saturating_add(self.chunk_bytes()).min(object_size);
        start..end
    }

    /// Bytes `range` (end exclusive) of the object at `path`, whose total size is
    /// `object_size` bytes. Chunks covering the range are read concurrently, each from
    /// the cache or with one GET. An empty range gives empty bytes without any I/O.
    ///
    /// # Errors
    /// `OutOfBounds` when `range` is not inside `0..object_size`; `NotFound`, `Fetch`
    /// or `ShortChunk` when the store fails or the object is shorter than
    /// `object_size`; `Cache` when the disk tier fails.
    pub async fn get_range(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        object_size: u64,
        range: Range<u64>,
    ) -> Result<Bytes, ChunkCacheError> {
        if range.start > range.end || range.end > object_size {
            return Err(ChunkCacheError::OutOfBounds {
                path: path.to_string(),
                start: range.start,
                end: range.end,
                object_size,
            });
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let first_chunk = self.chunk_index_of(range.start);
        let last_chunk = self.chunk_index_of(range.end - 1);
        let chunks = futures::future::try_join_all(
            (first_chunk..=last_chunk)
                .map(|chunk_index| self.chunk(store, path, object_size, chunk_index)),
        )
        .await?;
        if let [chunk] = chunks.as_slice() {
            let chunk_start = first_chunk * self.chunk_bytes();
            return Ok(chunk
                .slice((range.start - chunk_start) as usize..(range.end - chunk_start) as usize));
        }
        let mut assembled = BytesMut::with_capacity((range.end - range.start) as usize);
        for (chunk_index, chunk) in (first_chunk..=last_chunk).zip(&chunks) {
            let chunk_start = chunk_index * self.chunk_bytes();
            let from = range.start.saturating_sub(chunk_start) as usize;
            let to = (range.end - chunk_start).min(chunk.len() as u64) as usize;
            assembled.extend_from_slice(&chunk[from..to]);
        }
        debug_assert_eq!(assembled.len() as u64, range.end - range.start);
        Ok(assembled.freeze())
    }

    /// Starts fetching chunk `chunk_index` of the object in the background unless it is
    /// already in memory; does nothing past the object's end. Errors are logged, not
    /// returned: a failed prefetch only means a later miss.
    pub fn prefetch(
        self: &Arc<Self>,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        object_size: u64,
        chunk_index: u64,
    ) {
        if chunk_index >= self.chunk_count(object_size) {
            return;
        }
        let key = ChunkKey {
            path: path.to_string(),
            chunk_index,
        };
        if self.cache.memory().contains(&key) {
            return;
        }
        let cache = Arc::clone(self);
        let store = Arc::clone(store);
        let path = path.clone();
        drop(tokio::spawn(async move {
            if let Err(error) = cache.chunk(&store, &path, object_size, chunk_index).await {
                warn!(%path, chunk_index, %error, "chunk prefetch failed");
            }
        }));
    }

    /// One whole chunk, from the cache or the store.
    async fn chunk(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        object_size: u64,
        chunk_index: u64,
    ) -> Result<Bytes, ChunkCacheError> {
        let key = ChunkKey {
            path: path.to_string(),
            chunk_index,
        };
        let span = self.chunk_span(object_size, chunk_index);
        let fetch_store = Arc::clone(store);
        let fetch_path = path.clone();
        let counters = Arc::clone(&self.counters);
        let entry = self
            .cache
            .get_or_fetch(&key, move || {
                fetch_chunk(fetch_store, fetch_path, chunk_index, span, counters)
            })
            .await
            .map_err(|error| match error.downcast_ref::<ChunkCacheError>() {
                Some(fetch_error) => fetch_error.clone(),
                None => ChunkCacheError::Cache(error.to_string()),
            })?;
        match entry.source() {
            Source::Memory => {
                let _previous = self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("silt_remote_cache_hits_total", "tier" => "memory").increment(1);
            }
            Source::Disk => {
                let _previous = self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("silt_remote_cache_hits_total", "tier" => "disk").increment(1);
            }
            // Counted by `fetch_chunk`, once per GET even when misses were coalesced.
            Source::Outer => {}
        }
        Ok(entry.value().0.clone())
    }
}

/// One ranged GET of a whole chunk; checks that the store returned all of it.
async fn fetch_chunk(
    store: Arc<dyn ObjectStore>,
    path: Path,
    chunk_index: u64,
    span: Range<u64>,
    counters: Arc<Counters>,
) -> Result<Chunk, ChunkCacheError> {
    let started = Instant::now();
    let expected = span.end - span.start;
    let options = GetOptions::new().with_range(Some(span));
    let fetched = match store.get_opts(&path, options).await {
        Ok(result) => result.bytes().await,
        Err(error) => Err(error),
    };
    let bytes = fetched.map_err(|error| match error {
        object_store::Error::NotFound { .. } => ChunkCacheError::NotFound {
            path: path.to_string(),
        },
        other => ChunkCacheError::Fetch {
            path: path.to_string(),
            chunk_index,
            message: other.to_string(),
        },
    })?;
    let elapsed = started.elapsed();
    metrics::histogram!("silt_remote_fetch_seconds").record(elapsed.as_secs_f64());
    if bytes.len() as u64 != expected {
        return Err(ChunkCacheError::ShortChunk {
            path: path.to_string(),
            chunk_index,
            expected,
            actual: bytes.len() as u64,
        });
    }
    let _previous = counters.misses.fetch_add(1, Ordering::Relaxed);
    let _previous = counters
        .bytes_fetched
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    metrics::counter!("silt_remote_cache_misses_total").increment(1);
    metrics::counter!("silt_remote_cache_bytes_fetched_total").increment(bytes.len() as u64);
    debug!(%path, chunk_index, bytes = bytes.len(), elapsed_ms = elapsed.as_millis() as u64, "fetched remote chunk");
    Ok(Chunk(bytes))
}
