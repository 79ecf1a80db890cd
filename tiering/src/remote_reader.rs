//! The read side of tiered storage: [`RemoteLogReader`] serves Fetch and ListOffsets
//! for offsets held in remote segments (KIP-405).
//!
//! Only segments the controller lists as `CopyFinished` are read. A read finds the
//! segment holding the offset, looks the offset up in the segment's offset index
//! (loaded whole and kept parsed in a small LRU), walks batch headers from the indexed
//! position to the batch containing the offset, and returns whole batches from there.
//! Every byte goes through the [`ChunkCache`]; a read that ends in chunk `k` prefetches
//! the next chunks of the segment, which a sequential reader asks for next.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use silt_broker::index_entry::{IndexEntry, OffsetPosition, TimestampOffset, decode_entries};
use silt_broker::record_batch::{
    BATCH_HEADER_SIZE, BatchHeader, LOG_OVERHEAD, RecordLookup, batch_size_from_prefix,
    find_record_by_timestamp, parse_header,
};
use silt_broker::remote_log::{RemoteLog, RemoteLogError, RemotePartition, RemoteRead};
use silt_controller::{Controller, RemoteSegmentMetadata};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::chunk_cache::{ChunkCache, ChunkCacheError};
use crate::object_layout::{ObjectKind, segment_object};

/// Parsed indexes kept in memory, per index kind.
const INDEX_CACHE_ENTRIES: usize = 256;

/// Reads committed remote segments of any partition through a shared [`ChunkCache`].
#[derive(Debug)]
pub struct RemoteLogReader {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    controller: Controller,
    cache: Arc<ChunkCache>,
    offset_indexes: Mutex<IndexLru<OffsetPosition>>,
    time_indexes: Mutex<IndexLru<TimestampOffset>>,
}

/// A batch found by a header scan.
#[derive(Debug, Clone, Copy)]
struct BatchAt {
    /// Byte position of the batch in the `.log` object.
    position: u64,
    header: BatchHeader,
}

/// One remote segment being read: its metadata and where its objects are.
struct SegmentRef<'a> {
    partition: &'a RemotePartition,
    metadata: RemoteSegmentMetadata,
    log_path: Path,
}

impl SegmentRef<'_> {
    /// Size of the `.log` object in bytes.
    fn log_size(&self) -> u64 {
        self.metadata.size_bytes
    }

    fn corrupt(&self, position: u64, reason: impl std::fmt::Display) -> RemoteLogError {
        RemoteLogError::Storage(format!(
            "corrupt remote segment {} (base offset {}) of {}-{} at position {position}: {reason}",
            self.metadata.segment_id,
            self.metadata.base_offset,
            self.partition.topic,
            self.partition.partition
        ))
    }
}

impl RemoteLogReader {
    /// A reader of the objects under `prefix` in `store` (laid out by
    /// [`crate::object_layout`]), serving the segments `controller` lists as
    /// `CopyFinished`, caching bytes in `cache`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        controller: Controller,
        cache: Arc<ChunkCache>,
    ) -> RemoteLogReader {
        RemoteLogReader {
            store,
            prefix,
            controller,
            cache,
            offset_indexes: Mutex::new(IndexLru::new(INDEX_CACHE_ENTRIES)),
            time_indexes: Mutex::new(IndexLru::new(INDEX_CACHE_ENTRIES)),
        }
    }

    /// The chunk cache the reader uses.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    fn object_path(
        &self,
        partition: &RemotePartition,
        metadata: &RemoteSegmentMetadata,
        kind: ObjectKind,
    ) -> Path {
        segment_object(
            &self.prefix,
            &partition.topic,
            partition.topic_id,
            partition.partition,
            metadata.base_offset,
            metadata.segment_id,
            kind,
        )
    }

    fn segment_ref<'a>(
        &self,
        partition: &'a RemotePartition,
        metadata: RemoteSegmentMetadata,
    ) -> SegmentRef<'a> {
        let log_path = self.object_path(partition, &metadata, ObjectKind::Log);
        SegmentRef {
            partition,
            metadata,
            log_path,
        }
    }

    /// The committed segment to read `offset` from: the one holding it or, when `offset`
    /// falls in a gap left by compaction, the next one (whose first batch is the first
    /// after `offset`). None when `offset` is below the remote start or at or past the
    /// remote end.
    fn segment_for_offset(
        &self,
        partition: &RemotePartition,
        offset: i64,
    ) -> Option<RemoteSegmentMetadata> {
        let metadata = self.controller.metadata();
        if let Some(holding) =
            metadata.remote_segment_for_offset(partition.topic_id, partition.partition, offset)
        {
            return Some(holding.clone());
        }
        let mut segments = metadata
            .copied_remote_segments(partition.topic_id, partition.partition)
            .peekable();
        if offset < segments.peek()?.base_offset {
            return None;
        }
        segments
            .find(|segment| segment.end_offset >= offset)
            .cloned()
    }

    async fn read_records(
        &self,
        partition: &RemotePartition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<RemoteRead, RemoteLogError> {
        let Some(metadata) = self.segment_for_offset(partition, offset) else {
            return Err(RemoteLogError::OffsetOutOfRange {
                topic: partition.topic.clone(),
                partition: partition.partition,
                offset,
            });
        };
        let segment = self.segment_ref(partition, metadata);
        let first = self.find_batch(&segment, offset).await?;
        let first_size = first.header.size_bytes() as u64;
        let budget = (max_bytes as u64).max(first_size);
        // Stop at the end of the chunk holding the first batch (or of the first batch, when
        // it runs past that chunk): the answer is then a slice of one cached chunk, never a
        // copy gathered from several, and the consumer's next fetch starts on the next one.
        let chunk_end = self
            .cache
            .chunk_end_of(first.position)
            .max(first.position + first_size);
        let read_end = first
            .position
            .saturating_add(budget)
            .min(chunk_end)
            .min(segment.log_size());
        let bytes = self.log_range(&segment, first.position..read_end).await?;
        let whole = whole_batches_len(&segment, first.position, &bytes)?;
        if whole == 0 {
            return Err(segment.corrupt(
                first.position,
                format_args!(
                    "first batch starts past the segment end offset {}",
                    segment.metadata.end_offset
                ),
            ));
        }
        let records = bytes.slice(..whole);
        self.read_ahead(&segment, first.position + whole as u64);
        let at_segment_end = first.position + whole as u64 >= segment.log_size();
        if at_segment_end && !holds_records(&records) && records.len() < max_bytes {
            // Only empty batches that compaction kept (a group's last batch, a
            // producer's last batch): librdkafka counts an answer without a record as
            // "message too large" and gives up after a few, so go on into the next
            // segment within the same fetch.
            let next_offset = segment.metadata.end_offset + 1;
            let rest =
                Box::pin(self.read_records(partition, next_offset, max_bytes - records.len()))
                    .await;
            if let Ok(rest) = rest {
                let mut joined = Vec::with_capacity(records.len() + rest.records.len());
                joined.extend_from_slice(&records);
                joined.extend_from_slice(&rest.records);
                return Ok(RemoteRead {
                    records: Bytes::from(joined),
                });
            }
        }
        debug!(
            topic = %partition.topic,
            partition = partition.partition,
            offset,
            segment_id = %segment.metadata.segment_id,
            position = first.position,
            bytes = records.len(),
            "remote read"
        );
        Ok(RemoteRead { records })
    }

    /// Prefetches the `read_ahead_chunks` chunks after the one holding byte `end - 1` of
    /// the segment, continuing into the partition's next remote segment when this one
    /// ends first, so a sequential reader does not wait at segment boundaries.
    fn read_ahead(&self, segment: &SegmentRef<'_>, end: u64) {
        let read_ahead = self.cache.config().read_ahead_chunks as u64;
        if read_ahead == 0 || end == 0 {
            return;
        }
        let last_chunk = self.cache.chunk_index_of(end - 1);
        let chunks_left = self
            .cache
            .chunk_count(segment.log_size())
            .saturating_sub(last_chunk + 1);
        for chunk_index in last_chunk + 1..=last_chunk + read_ahead.min(chunks_left) {
            self.cache.prefetch(
                &self.store,
                &segment.log_path,
                segment.log_size(),
                chunk_index,
            );
        }
        let spill = read_ahead.saturating_sub(chunks_left);
        if spill == 0 {
            return;
        }
        // The segment the reader's next fetch goes to, past any compaction gap.
        if let Some(next) =
            self.segment_for_offset(segment.partition, segment.metadata.end_offset + 1)
        {
            let next = self.segment_ref(segment.partition, next);
            for chunk_index in 0..spill {
                self.cache
                    .prefetch(&self.store, &next.log_path, next.log_size(), chunk_index);
            }
        }
    }

    /// The first batch of the segment whose last offset is `>= offset`, found from the
    /// offset index entry at or below `offset`.
    async fn find_batch(
        &self,
        segment: &SegmentRef<'_>,
        offset: i64,
    ) -> Result<BatchAt, RemoteLogError> {
        let start = self.indexed_position(segment, offset).await?;
        let mut position = start;
        loop {
            let batch = self.batch_at(segment, position).await?;
            if batch.header.last_offset() >= offset {
                return Ok(batch);
            }
            position += batch.header.size_bytes() as u64;
        }
    }

    /// Reads and checks the header of the batch at `position`. Running off the end of
    /// the segment is corruption: callers only scan for offsets the segment holds.
    async fn batch_at(
        &self,
        segment: &SegmentRef<'_>,
        position: u64,
    ) -> Result<BatchAt, RemoteLogError> {
        let log_size = segment.log_size();
        if position >= log_size {
            return Err(segment.corrupt(
                position,
                format_args!(
                    "segment ends before its end offset {}",
                    segment.metadata.end_offset
                ),
            ));
        }
        let header_end = position + BATCH_HEADER_SIZE as u64;
        if header_end > log_size {
            return Err(segment.corrupt(position, "truncated batch header"));
        }
        let header_bytes = self.log_range(segment, position..header_end).await?;
        let size = batch_size_from_prefix(&header_bytes)
            .map_err(|error| segment.corrupt(position, error))?;
        let header =
            parse_header(&header_bytes).map_err(|error| segment.corrupt(position, error))?;
        if position + size as u64 > log_size {
            return Err(segment.corrupt(
                position,
                format_args!("batch of {size} bytes runs past the object end {log_size}"),
            ));
        }
        if header.last_offset_delta < 0 || header.base_offset < segment.metadata.base_offset {
            return Err(segment.corrupt(
                position,
                format_args!(
                    "batch offsets {}..={} outside the segment",
                    header.base_offset,
                    header.last_offset()
                ),
            ));
        }
        Ok(BatchAt { position, header })
    }

    /// Bytes of the segment's `.log` object through the chunk cache.
    async fn log_range(
        &self,
        segment: &SegmentRef<'_>,
        range: Range<u64>,
    ) -> Result<Bytes, RemoteLogError> {
        self.cache
            .get_range(&self.store, &segment.log_path, segment.log_size(), range)
            .await
            .map_err(storage_error)
    }

    /// Position to scan from for `offset`: the offset index entry with the largest
    /// offset `<= offset`, or 0.
    async fn indexed_position(
        &self,
        segment: &SegmentRef<'_>,
        offset: i64,
    ) -> Result<u64, RemoteLogError> {
        let entries = self.offset_index(segment).await?;
        let after = entries.partition_point(|entry| entry.offset <= offset);
        Ok(after
            .checked_sub(1)
            .map_or(0, |index| u64::from(entries[index].position)))
    }

    async fn offset_index(
        &self,
        segment: &SegmentRef<'_>,
    ) -> Result<Arc<[OffsetPosition]>, RemoteLogError> {
        let segment_id = segment.metadata.segment_id;
        if let Some(entries) = self.offset_indexes.lock().get(segment_id) {
            return Ok(entries);
        }
        let raw = self.index_object(segment, ObjectKind::OffsetIndex).await?;
        let entries: Arc<[OffsetPosition]> = parse_offset_index(segment, &raw)?.into();
        self.offset_indexes
            .lock()
            .insert(segment_id, Arc::clone(&entries));
        Ok(entries)
    }

    async fn time_index(
        &self,
        segment: &SegmentRef<'_>,
    ) -> Result<Arc<[TimestampOffset]>, RemoteLogError> {
        let segment_id = segment.metadata.segment_id;
        if let Some(entries) = self.time_indexes.lock().get(segment_id) {
            return Ok(entries);
        }
        let raw = self.index_object(segment, ObjectKind::TimeIndex).await?;
        let entries: Arc<[TimestampOffset]> = parse_time_index(segment, &raw)?.into();
        self.time_indexes
            .lock()
            .insert(segment_id, Arc::clone(&entries));
        Ok(entries)
    }

    /// A whole index object through the chunk cache. A missing index is read as empty
    /// (scans then start at position 0): slower, still correct.
    async fn index_object(
        &self,
        segment: &SegmentRef<'_>,
        kind: ObjectKind,
    ) -> Result<Bytes, RemoteLogError> {
        let path = self.object_path(segment.partition, &segment.metadata, kind);
        let size = match self.store.head(&path).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => {
                warn!(
                    topic = %segment.partition.topic,
                    partition = segment.partition.partition,
                    segment_id = %segment.metadata.segment_id,
                    %path,
                    "remote index object missing, scanning the segment from its start"
                );
                return Ok(Bytes::new());
            }
            Err(error) => {
                return Err(RemoteLogError::Storage(format!(
                    "reading {path} failed: {error}"
                )));
            }
        };
        self.cache
            .get_range(&self.store, &path, size, 0..size)
            .await
            .map_err(storage_error)
    }

    async fn copied_producer_snapshot(
        &self,
        partition: &RemotePartition,
        end_offset: i64,
    ) -> Result<Option<Bytes>, RemoteLogError> {
        let Some(metadata) = self
            .controller
            .metadata()
            .remote_segment_for_offset(partition.topic_id, partition.partition, end_offset - 1)
            .filter(|segment| segment.end_offset + 1 == end_offset)
            .cloned()
        else {
            return Ok(None);
        };
        let path = self.object_path(partition, &metadata, ObjectKind::ProducerSnapshot);
        match self.store.get(&path).await {
            Ok(object) => object.bytes().await.map(Some).map_err(|error| {
                RemoteLogError::Storage(format!("reading {path} failed: {error}"))
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(RemoteLogError::Storage(format!(
                "reading {path} failed: {error}"
            ))),
        }
    }

    async fn find_by_timestamp(
        &self,
        partition: &RemotePartition,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, RemoteLogError> {
        let metadata = self.controller.metadata();
        let Some(min_offset) =
            metadata.remote_log_start_offset(partition.topic_id, partition.partition)
        else {
            return Ok(None);
        };
        let candidates: Vec<RemoteSegmentMetadata> = metadata
            .copied_remote_segments(partition.topic_id, partition.partition)
            .filter(|segment| segment.max_timestamp_ms >= timestamp_ms)
            .cloned()
            .collect();
        drop(metadata);
        for candidate in candidates {
            let segment = self.segment_ref(partition, candidate);
            if let Some(found) = self
                .find_in_segment(&segment, timestamp_ms, min_offset)
                .await?
            {
                debug!(
                    topic = %partition.topic,
                    partition = partition.partition,
                    timestamp_ms,
                    offset = found.0,
                    segment_id = %segment.metadata.segment_id,
                    "remote offset for timestamp"
                );
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the first record of the segment with offset
    /// `>= min_offset` and timestamp `>= timestamp_ms`; compressed `CreateTime` batches
    /// answer with their first offset and max timestamp, as Kafka does.
    async fn find_in_segment(
        &self,
        segment: &SegmentRef<'_>,
        timestamp_ms: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, RemoteLogError> {
        let time_index = self.time_index(segment).await?;
        let after = time_index.partition_point(|entry| entry.timestamp <= timestamp_ms);
        let indexed_offset = after
            .checked_sub(1)
            .map_or(segment.metadata.base_offset, |index| {
                time_index[index].offset
            });
        let mut position = self
            .indexed_position(segment, indexed_offset.max(min_offset))
            .await?;
        while position < segment.log_size() {
            let batch = self.batch_at(segment, position).await?;
            let header = batch.header;
            position += header.size_bytes() as u64;
            if header.last_offset() < min_offset || header.max_timestamp < timestamp_ms {
                continue;
            }
            let bytes = self.log_range(segment, batch.position..position).await?;
            match find_record_by_timestamp(&bytes, &header, timestamp_ms, min_offset) {
                RecordLookup::Found { offset, timestamp } => return Ok(Some((offset, timestamp))),
                RecordLookup::Compressed => {
                    return Ok(Some((
                        header.base_offset.max(min_offset),
                        header.max_timestamp,
                    )));
                }
                RecordLookup::NotFound => {}
            }
        }
        Ok(None)
    }
}

impl RemoteLog for RemoteLogReader {
    fn log_start_offset(&self, partition: &RemotePartition) -> Option<i64> {
        self.controller
            .metadata()
            .remote_log_start_offset(partition.topic_id, partition.partition)
    }

    fn log_end_offset(&self, partition: &RemotePartition) -> Option<i64> {
        self.controller
            .metadata()
            .remote_log_end_offset(partition.topic_id, partition.partition)
    }

    fn records_deleted_before(&self, partition: &RemotePartition) -> i64 {
        self.controller
            .metadata()
            .topic_by_id(partition.topic_id)
            .map_or(0, |topic| topic.records_deleted_before(partition.partition))
    }

    fn read<'a>(
        &'a self,
        partition: &'a RemotePartition,
        offset: i64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<RemoteRead, RemoteLogError>> {
        Box::pin(self.read_records(partition, offset, max_bytes))
    }

    fn offset_for_timestamp<'a>(
        &'a self,
        partition: &'a RemotePartition,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, RemoteLogError>> {
        Box::pin(self.find_by_timestamp(partition, timestamp_ms))
    }

    fn producer_snapshot<'a>(
        &'a self,
        partition: &'a RemotePartition,
        end_offset: i64,
    ) -> BoxFuture<'a, Result<Option<Bytes>, RemoteLogError>> {
        Box::pin(self.copied_producer_snapshot(partition, end_offset))
    }
}

fn storage_error(error: ChunkCacheError) -> RemoteLogError {
    RemoteLogError::Storage(error.to_string())
}

/// Length of the longest prefix of `bytes` (read from `start` in the segment) made of
/// whole batches that belong to the segment. The first batch must be whole; a batch cut
/// by the read budget ends the prefix; bad framing is corruption.
/// Whether `batches` (whole batches) hold a record or a control batch.
fn holds_records(batches: &[u8]) -> bool {
    let mut position = 0usize;
    while position < batches.len() {
        let remaining = &batches[position..];
        let (Ok(size), Ok(header)) = (batch_size_from_prefix(remaining), parse_header(remaining))
        else {
            return true;
        };
        if header.records_count > 0 || header.is_control() {
            return true;
        }
        position += size;
    }
    false
}

fn whole_batches_len(
    segment: &SegmentRef<'_>,
    start: u64,
    bytes: &[u8],
) -> Result<usize, RemoteLogError> {
    let read_to_object_end = start + bytes.len() as u64 == segment.log_size();
    let mut position = 0usize;
    while position < bytes.len() {
        let remaining = &bytes[position..];
        let at = start + position as u64;
        if remaining.len() < LOG_OVERHEAD {
            if read_to_object_end {
                return Err(segment.corrupt(at, "trailing bytes after the last batch"));
            }
            break;
        }
        let size = batch_size_from_prefix(remaining).map_err(|error| segment.corrupt(at, error))?;
        if size > remaining.len() {
            if read_to_object_end || position == 0 {
                return Err(segment.corrupt(
                    at,
                    format_args!("batch of {size} bytes runs past the object end"),
                ));
            }
            break;
        }
        let header = parse_header(remaining).map_err(|error| segment.corrupt(at, error))?;
        if header.base_offset > segment.metadata.end_offset {
            break;
        }
        position += size;
    }
    Ok(position)
}

fn parse_offset_index(
    segment: &SegmentRef<'_>,
    raw: &[u8],
) -> Result<Vec<OffsetPosition>, RemoteLogError> {
    if !raw.len().is_multiple_of(OffsetPosition::SIZE) {
        return Err(segment.corrupt(
            0,
            format_args!("offset index of {} bytes is not whole entries", raw.len()),
        ));
    }
    let base_offset = segment.metadata.base_offset;
    let mut entries: Vec<OffsetPosition> = Vec::with_capacity(raw.len() / OffsetPosition::SIZE);
    for entry in decode_entries::<OffsetPosition>(raw, base_offset) {
        let position = entry.position;
        let in_order = entries
            .last()
            .is_none_or(|last| entry.offset > last.offset && entry.position > last.position);
        if !in_order || u64::from(position) >= segment.log_size() {
            return Err(segment.corrupt(
                u64::from(position),
                format_args!("offset index entry {entry:?} out of order or outside the segment"),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_time_index(
    segment: &SegmentRef<'_>,
    raw: &[u8],
) -> Result<Vec<TimestampOffset>, RemoteLogError> {
    if !raw.len().is_multiple_of(TimestampOffset::SIZE) {
        return Err(segment.corrupt(
            0,
            format_args!("time index of {} bytes is not whole entries", raw.len()),
        ));
    }
    let base_offset = segment.metadata.base_offset;
    let mut entries: Vec<TimestampOffset> = Vec::with_capacity(raw.len() / TimestampOffset::SIZE);
    for entry in decode_entries::<TimestampOffset>(raw, base_offset) {
        let in_order = entries
            .last()
            .is_none_or(|last| entry.timestamp > last.timestamp && entry.offset >= last.offset);
        if !in_order || entry.offset > segment.metadata.end_offset {
            return Err(segment.corrupt(
                0,
                format_args!("time index entry {entry:?} out of order or outside the segment"),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// A tiny least-recently-used map from segment id to a parsed index.
#[derive(Debug)]
struct IndexLru<T> {
    capacity: usize,
    /// Least recently used first.
    entries: VecDeque<(Uuid, Arc<[T]>)>,
}

impl<T> IndexLru<T> {
    fn new(capacity: usize) -> IndexLru<T> {
        IndexLru {
            capacity,
            entries: VecDeque::with_capacity(capacity),
        }
    }

    fn get(&mut self, segment_id: Uuid) -> Option<Arc<[T]>> {
        let index = self.entries.iter().position(|(id, _)| *id == segment_id)?;
        let entry = self.entries.remove(index)?;
        let entries = Arc::clone(&entry.1);
        self.entries.push_back(entry);
        Some(entries)
    }

    fn insert(&mut self, segment_id: Uuid, entries: Arc<[T]>) {
        self.entries.retain(|(id, _)| *id != segment_id);
        self.entries.push_back((segment_id, entries));
        while self.entries.len() > self.capacity {
            let _evicted = self.entries.pop_front();
        }
    }
}
