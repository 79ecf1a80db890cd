//! One cleaning pass over one partition log: Kafka's `Cleaner.clean`.
//!
//! 1. Plan from a [`CleaningView`]: the dirty section runs from the cleaner checkpoint
//!    to the first uncleanable offset (the active segment, or the first segment with a
//!    record younger than `min.compaction.lag.ms`). The log is due when the dirty
//!    section is at least `min.cleanable.dirty.ratio` of the sealed bytes, or when its
//!    oldest batch is older than `max.compaction.lag.ms`.
//! 2. Build the offset map over the dirty section: each key's latest offset, until the
//!    map's budget (`log.cleaner.dedupe.buffer.size`) is spent; the pass then covers the
//!    log up to the last mapped batch.
//! 3. Rewrite the sealed segments from the log start to that end in groups of at most
//!    `segment.bytes`, keeping a record unless a later record of its key is mapped, it
//!    has no key (Kafka drops those as invalid), or it is a tombstone past the delete
//!    horizon. Offsets never change; batches keep their headers (see
//!    [`rebuild_batch`]); a producer's last batch stays, empty if need be. Each group's
//!    replacement goes in through [`PartitionLog::replace_segments`], crash safe.
//! 4. Move the cleaner checkpoint to the end of the pass.
//!
//! Tombstones: the delete horizon is the largest timestamp of the section cleaned by
//! earlier passes minus `delete.retention.ms` (Kafka's rule, with record timestamps in
//! place of file modification times, and per tombstone rather than per segment, so a
//! tombstone does not live on because its segment was merged with newer ones). A
//! tombstone goes only once it lies in that clean section, so the pass that mapped it
//! has already removed every older record of its key, and only when its timestamp is
//! at or before the horizon.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use silt_broker::PartitionLog;
use silt_broker::cleaning::{CleaningView, ReplacementSegment, SealedSegment};
use silt_broker::record_batch::{
    BatchHeader, TimestampType, decompressed_records, rebuild_batch, record_entries,
};
use silt_broker::segment::visit_batches;
use tracing::{debug, info};

use crate::error::CleanerError;
use crate::offset_map::OffsetMap;
use crate::throttler::Throttler;

/// Bytes of rewritten batches buffered before they are written to the replacement.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// What one pass may use.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// Budget of the offset map (bytes): `log.cleaner.dedupe.buffer.size` divided among
    /// the cleaner threads.
    pub dedupe_buffer_bytes: usize,
}

/// Runs cleaning passes ([`Cleaner::clean`]) within a map budget and an I/O rate, and
/// stops them early on request.
#[derive(Debug, Clone)]
pub struct Cleaner {
    config: CleanerConfig,
    throttler: Arc<Throttler>,
    stop: Arc<AtomicBool>,
}

/// Where a log's dirty section lies and whether it is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleaningPlan {
    /// First offset not cleaned by an earlier pass.
    pub first_dirty_offset: i64,
    /// First offset the pass may not clean: the active segment's base, or the first
    /// segment holding a record younger than `min.compaction.lag.ms`.
    pub first_uncleanable_offset: i64,
    /// Bytes of the sealed segments in the dirty section.
    pub dirty_bytes: u64,
    /// `dirty_bytes` over the bytes of every sealed segment up to the first uncleanable
    /// offset (0.0-1.0).
    pub dirty_ratio: f64,
    /// The oldest dirty batch is older than `max.compaction.lag.ms`.
    pub overdue: bool,
}

impl CleaningPlan {
    /// Due: the dirty ratio reached `min_ratio`, or a record is overdue.
    pub fn is_due(&self, min_ratio: f64) -> bool {
        is_due(self.dirty_bytes, self.dirty_ratio, self.overdue, min_ratio)
    }
}

/// Kafka's rule, on either tier: something is dirty, and the dirty ratio reached
/// `min_ratio` or a record is overdue.
pub(crate) fn is_due(dirty_bytes: u64, dirty_ratio: f64, overdue: bool, min_ratio: f64) -> bool {
    dirty_bytes > 0 && (dirty_ratio >= min_ratio || overdue)
}

/// The delete horizon (ms): the newest of the clean section's largest timestamps
/// (`-1`, no timestamp, left out) minus `delete_retention_ms`; None while nothing with
/// a timestamp is clean.
pub(crate) fn delete_horizon(
    clean_max_timestamps: impl Iterator<Item = i64>,
    delete_retention_ms: i64,
) -> Option<i64> {
    clean_max_timestamps
        .filter(|timestamp| *timestamp >= 0)
        .max()
        .map(|newest| newest.saturating_sub(delete_retention_ms))
}

/// Throughput of a pass that went over `bytes` in `elapsed_ms` (MB/s, 10^6 bytes).
pub(crate) fn megabytes_per_second(bytes: u64, elapsed_ms: u128) -> f64 {
    bytes as f64 / 1e6 / (elapsed_ms.max(1) as f64 / 1e3)
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanerStats {
    /// Where the pass's dirty section began.
    pub first_dirty_offset: i64,
    /// The new cleaner checkpoint: offsets below it are clean.
    pub end_offset: i64,
    /// Keys in the offset map.
    pub keys: usize,
    /// Bytes read from segments (map and rewrite).
    pub bytes_read: u64,
    /// Bytes of sealed segments before the pass, in the cleaned range.
    pub bytes_before: u64,
    /// Bytes of their replacements.
    pub bytes_after: u64,
    /// Records removed, tombstones included.
    pub records_removed: u64,
    /// Tombstones removed (past the delete horizon).
    pub tombstones_removed: u64,
    /// Segments in the cleaned range before the pass.
    pub segments_before: usize,
    /// Segments that replaced them.
    pub segments_after: usize,
    /// The delete horizon (ms), None while no section is clean.
    pub delete_horizon_ms: Option<i64>,
}

fn is_dirty(segment: &SealedSegment, plan_start: i64, plan_end: i64) -> bool {
    segment.next_offset > plan_start && segment.base_offset < plan_end
}

/// The dirty section of `view` at `now_ms` (ms); None when the log is not compacted or
/// has nothing sealed past the checkpoint.
pub fn plan(view: &CleaningView, now_ms: i64) -> Option<CleaningPlan> {
    if !view.config.is_compacted() {
        return None;
    }
    let first_dirty_offset = view.first_dirty_offset;
    let min_lag_cutoff = now_ms.saturating_sub(view.config.min_compaction_lag_ms);
    let first_uncleanable_offset = view
        .sealed
        .iter()
        .filter(|segment| segment.next_offset > first_dirty_offset)
        .find(|segment| {
            view.config.min_compaction_lag_ms > 0 && segment.max_timestamp > min_lag_cutoff
        })
        .map_or(view.active_base_offset, |segment| segment.base_offset);
    let live = |segment: &&SealedSegment| segment.next_offset > view.log_start_offset;
    let (mut dirty_bytes, mut total_bytes) = (0u64, 0u64);
    let mut oldest_dirty: Option<i64> = None;
    for segment in view.sealed.iter().filter(live) {
        if segment.base_offset >= first_uncleanable_offset {
            break;
        }
        total_bytes += segment.size_bytes;
        if is_dirty(segment, first_dirty_offset, first_uncleanable_offset) {
            dirty_bytes += segment.size_bytes;
            if oldest_dirty.is_none() {
                oldest_dirty = segment.first_batch_timestamp;
            }
        }
    }
    if dirty_bytes == 0 {
        return None;
    }
    let overdue = view.config.max_compaction_lag_ms < i64::MAX
        && oldest_dirty
            .is_some_and(|first| now_ms.saturating_sub(first) > view.config.max_compaction_lag_ms);
    Some(CleaningPlan {
        first_dirty_offset,
        first_uncleanable_offset,
        dirty_bytes,
        dirty_ratio: dirty_bytes as f64 / total_bytes.max(1) as f64,
        overdue,
    })
}

impl Cleaner {
    /// A cleaner with an offset map of `config.dedupe_buffer_bytes`, moving bytes through
    /// `throttler`, that stops a pass once `stop` is set.
    pub fn new(config: CleanerConfig, throttler: Arc<Throttler>, stop: Arc<AtomicBool>) -> Cleaner {
        Cleaner {
            config,
            throttler,
            stop,
        }
    }

    /// Cleans `log` once if it is due (or whenever it has a dirty section, with
    /// `force`) at `now_ms` (ms). Returns None when there was nothing to do.
    ///
    /// # Errors
    /// [`CleanerError::is_abort`] errors when the log changed under the pass or the
    /// cleaner is stopping (nothing was installed for the group in progress; groups
    /// installed before stay, and are correct); I/O and batch errors otherwise. A
    /// failed pass leaves the checkpoint, so the next pass covers the same section.
    pub fn clean(
        &self,
        log: &Mutex<PartitionLog>,
        now_ms: i64,
        force: bool,
    ) -> Result<Option<CleanerStats>, CleanerError> {
        clean_log(log, self, now_ms, force)
    }

    /// The offset map budget of one pass (bytes).
    pub(crate) fn dedupe_buffer_bytes(&self) -> usize {
        self.config.dedupe_buffer_bytes
    }

    /// Counts `bytes` against the I/O rate, sleeping if it is spent (blocking).
    pub(crate) fn throttle(&self, bytes: u64) {
        self.throttler.maybe_throttle(bytes);
    }

    pub(crate) fn check_stop(&self) -> Result<(), CleanerError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(CleanerError::Stopped);
        }
        Ok(())
    }
}

fn clean_log(
    log: &Mutex<PartitionLog>,
    cleaner: &Cleaner,
    now_ms: i64,
    force: bool,
) -> Result<Option<CleanerStats>, CleanerError> {
    let view = log.lock().cleaning_view();
    let Some(plan) = plan(&view, now_ms) else {
        return Ok(None);
    };
    if !force && !plan.is_due(view.config.min_cleanable_dirty_ratio) {
        return Ok(None);
    }
    let mut stats = CleanerStats {
        first_dirty_offset: plan.first_dirty_offset,
        ..CleanerStats::default()
    };
    let (map, end) = build_offset_map(&view, &plan, cleaner, &mut stats)?;
    stats.keys = map.len();
    stats.end_offset = end;
    stats.delete_horizon_ms = delete_horizon(
        view.sealed
            .iter()
            .filter(|segment| segment.next_offset <= plan.first_dirty_offset)
            .map(|segment| segment.max_timestamp),
        view.config.delete_retention_ms,
    );
    let to_clean: Vec<SealedSegment> = view
        .sealed
        .iter()
        .filter(|segment| segment.next_offset > view.log_start_offset && segment.base_offset < end)
        .cloned()
        .collect();
    let rules = RetainRules {
        map: &map,
        first_dirty_offset: plan.first_dirty_offset,
        delete_horizon_ms: stats.delete_horizon_ms,
        producer_last_offsets: &view.producer_last_offsets,
    };
    let target = ReplacementTarget {
        dir: &view.dir,
        index_interval_bytes: view.config.index_interval_bytes,
        keep_last_batch: false,
        now_ms,
    };
    for group in group_by_size(&to_clean, view.config.segment_bytes) {
        let replacement = clean_group(&target, group, &rules, cleaner, &mut stats)?;
        stats.segments_before += group.len();
        stats.segments_after += 1;
        stats.bytes_before += group.iter().map(|segment| segment.size_bytes).sum::<u64>();
        stats.bytes_after += replacement.size_bytes();
        log.lock()
            .replace_segments(&view, group, replacement, now_ms)?;
    }
    log.lock().set_cleaner_checkpoint(end)?;
    Ok(Some(stats))
}

/// Maps every key of the dirty section to its latest offset, until the map is full;
/// returns the map and the end of the mapped section (exclusive).
fn build_offset_map(
    view: &CleaningView,
    plan: &CleaningPlan,
    cleaner: &Cleaner,
    stats: &mut CleanerStats,
) -> Result<(OffsetMap, i64), CleanerError> {
    let mut map = OffsetMap::new(cleaner.config.dedupe_buffer_bytes);
    let (start, limit) = (plan.first_dirty_offset, plan.first_uncleanable_offset);
    for segment in view
        .sealed
        .iter()
        .filter(|segment| is_dirty(segment, start, limit))
    {
        if let Some(end) = map_segment(&segment.log_path, start, limit, &mut map, cleaner, stats)? {
            return Ok((map, end));
        }
    }
    Ok((map, limit))
}

/// Adds the keys of the segment file at `path` with offsets in `[start, limit)` to
/// `map`. Returns the end of the mapped section (exclusive) when the map filled up
/// before the segment's end, None when the whole segment went in.
pub(crate) fn map_segment(
    path: &std::path::Path,
    start: i64,
    limit: i64,
    map: &mut OffsetMap,
    cleaner: &Cleaner,
    stats: &mut CleanerStats,
) -> Result<Option<i64>, CleanerError> {
    let file = open_segment(path)?;
    let mut mapped_end = None;
    visit_batches(&file, |header, batch| {
        stats.bytes_read += batch.len() as u64;
        if header.base_offset >= limit {
            return Ok(false);
        }
        if header.last_offset() < start || header.is_control() {
            return Ok(true);
        }
        let section = decompressed_records(batch, header)?;
        for entry in record_entries(header, &section)? {
            if let Some(key) = &entry.key {
                map.put(&section[key.clone()], entry.offset);
            }
        }
        if map.is_full() {
            mapped_end = Some(header.next_offset());
            return Ok(false);
        }
        cleaner.check_stop()?;
        cleaner.throttler.maybe_throttle(batch.len() as u64);
        Ok::<bool, CleanerError>(true)
    })?;
    if let Some(end) = mapped_end {
        debug!(
            end,
            keys = map.len(),
            "offset map full; the pass stops there"
        );
    }
    Ok(mapped_end)
}

/// Where and how a group's replacement is written.
pub(crate) struct ReplacementTarget<'a> {
    /// The partition's log directory (the replacement goes to its scratch directory).
    pub(crate) dir: &'a std::path::Path,
    pub(crate) index_interval_bytes: u32,
    /// Keep the group's last batch (empty if need be), so the replacement ends where
    /// the group ends: a remote segment's end offset must not move.
    pub(crate) keep_last_batch: bool,
    pub(crate) now_ms: i64,
}

/// A handle of the cleaner's own on a sealed segment's `.log` file.
///
/// # Errors
/// [`CleanerError::SegmentGone`] when retention deleted the file since the pass was
/// planned; other I/O errors.
pub(crate) fn open_segment(path: &std::path::Path) -> Result<std::fs::File, CleanerError> {
    std::fs::File::open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            CleanerError::SegmentGone(path.display().to_string())
        } else {
            CleanerError::Io(error)
        }
    })
}

/// Consecutive segments of at most `max_bytes` together (one segment at least), whose
/// offsets stay within what a segment's relative index entries can address.
pub(crate) fn group_by_size(segments: &[SealedSegment], max_bytes: u64) -> Vec<&[SealedSegment]> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < segments.len() {
        let mut end = start + 1;
        let mut bytes = segments[start].size_bytes;
        while let Some(next) = segments.get(end) {
            let span = next.next_offset - segments[start].base_offset;
            if bytes + next.size_bytes > max_bytes || span > i64::from(i32::MAX) {
                break;
            }
            bytes += next.size_bytes;
            end += 1;
        }
        groups.push(&segments[start..end]);
        start = end;
    }
    groups
}

/// What decides whether a record stays.
pub(crate) struct RetainRules<'a> {
    pub(crate) map: &'a OffsetMap,
    pub(crate) first_dirty_offset: i64,
    /// Tombstones at or before this time (ms) go; None keeps them all.
    pub(crate) delete_horizon_ms: Option<i64>,
    pub(crate) producer_last_offsets: &'a HashMap<i64, i64>,
}

/// Writes the records of `group` that stay into a new replacement segment based at the
/// first segment's `base_offset`. Batches below a segment's `base_offset` are skipped
/// (remote segments of two leaders may overlap; the later one is read from where the
/// earlier one ended).
pub(crate) fn clean_group(
    target: &ReplacementTarget<'_>,
    group: &[SealedSegment],
    rules: &RetainRules<'_>,
    cleaner: &Cleaner,
    stats: &mut CleanerStats,
) -> Result<ReplacementSegment, CleanerError> {
    let throttler = &cleaner.throttler;
    let base = group.first().map_or(0, |segment| segment.base_offset);
    let group_end = group.last().map_or(base, |segment| segment.next_offset);
    let mut replacement =
        ReplacementSegment::create(target.dir, base, target.index_interval_bytes, target.now_ms)?;
    let written = (|| {
        for segment in group {
            let file = open_segment(&segment.log_path)?;
            let mut buffer = Vec::new();
            visit_batches(&file, |header, batch| {
                stats.bytes_read += batch.len() as u64;
                if header.last_offset() < segment.base_offset {
                    return Ok(true);
                }
                let keep = target.keep_last_batch && header.next_offset() == group_end;
                match filter_batch(header, batch, rules, stats, keep)? {
                    Filtered::Whole => buffer.extend_from_slice(batch),
                    Filtered::Rebuilt(rebuilt) => buffer.extend_from_slice(&rebuilt),
                    Filtered::Dropped => {}
                }
                if buffer.len() >= WRITE_BUFFER_BYTES {
                    replacement.append(&buffer)?;
                    throttler.maybe_throttle(buffer.len() as u64);
                    buffer.clear();
                }
                cleaner.check_stop()?;
                throttler.maybe_throttle(batch.len() as u64);
                Ok::<bool, CleanerError>(true)
            })?;
            replacement.append(&buffer)?;
        }
        Ok::<(), CleanerError>(())
    })();
    match written {
        Ok(()) => Ok(replacement),
        Err(error) => {
            replacement.discard();
            Err(error)
        }
    }
}

/// What stays of one batch.
enum Filtered {
    /// Every record: the batch is copied as it is.
    Whole,
    /// Some records, or none but the batch is its producer's last: a rebuilt batch.
    Rebuilt(Vec<u8>),
    /// Nothing.
    Dropped,
}

/// What stays of `batch`; with `keep`, the batch stays even when no record does.
fn filter_batch(
    header: &BatchHeader,
    batch: &[u8],
    rules: &RetainRules<'_>,
    stats: &mut CleanerStats,
    keep: bool,
) -> Result<Filtered, CleanerError> {
    if header.is_control() {
        return Ok(Filtered::Whole);
    }
    let section = decompressed_records(batch, header)?;
    let entries = record_entries(header, &section)?;
    let mut kept = Vec::with_capacity(section.len());
    let mut kept_count = 0i32;
    let mut max_timestamp = i64::MIN;
    for entry in &entries {
        let superseded = entry.key.as_ref().is_none_or(|key| {
            rules
                .map
                .get(&section[key.clone()])
                .is_some_and(|latest| entry.offset < latest)
        });
        let expired_tombstone = entry.value.is_none()
            && entry.offset < rules.first_dirty_offset
            && rules
                .delete_horizon_ms
                .is_some_and(|horizon| entry.timestamp <= horizon);
        if superseded || expired_tombstone {
            stats.records_removed += 1;
            if expired_tombstone && !superseded {
                stats.tombstones_removed += 1;
            }
            continue;
        }
        kept.extend_from_slice(&section[entry.bytes.clone()]);
        kept_count += 1;
        max_timestamp = max_timestamp.max(entry.timestamp);
    }
    let producers_last = header.has_producer_id()
        && rules.producer_last_offsets.get(&header.producer_id) == Some(&header.last_offset());
    // An empty batch an earlier pass kept goes once it is no longer needed.
    if kept_count == 0 && !producers_last && !keep {
        return Ok(Filtered::Dropped);
    }
    if kept_count as usize == entries.len() {
        return Ok(Filtered::Whole);
    }
    if kept_count == 0 || header.timestamp_type() == TimestampType::LogAppendTime {
        max_timestamp = header.max_timestamp;
    }
    Ok(Filtered::Rebuilt(rebuild_batch(
        header,
        &kept,
        kept_count,
        max_timestamp,
    )?))
}

/// Logs a finished pass.
pub(crate) fn log_pass(topic: &str, partition: i32, stats: &CleanerStats, elapsed_ms: u128) {
    let rate = megabytes_per_second(stats.bytes_before, elapsed_ms);
    info!(
        %topic,
        partition,
        elapsed_ms = elapsed_ms as u64,
        mb_per_sec = format!("{rate:.1}"),
        first_dirty_offset = stats.first_dirty_offset,
        end_offset = stats.end_offset,
        keys = stats.keys,
        bytes_before = stats.bytes_before,
        bytes_after = stats.bytes_after,
        records_removed = stats.records_removed,
        tombstones_removed = stats.tombstones_removed,
        segments_before = stats.segments_before,
        segments_after = stats.segments_after,
        "cleaned log"
    );
}
