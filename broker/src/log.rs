//! The partition log: an ordered set of segments in
//! `<data>/<topic>-<partition>/`, laid out as Kafka does:
//!
//! - `<baseOffset:020>.log|.index|.timeindex`: the segments;
//! - `<offset:020>.snapshot`: producer state up to `offset` (exclusive);
//! - `leader-epoch-checkpoint`: Kafka's epoch → start-offset file;
//! - `log-start-offset` and `recovery-point`: offset checkpoints
//!   (`0\n<offset>\n`);
//! - `.clean-shutdown`: present only between a clean close and the next open.
//!
//! [`PartitionLog`] is not internally synchronized: callers hold it in a
//! mutex and call it from blocking threads.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::checkpoint::{
    CLEAN_SHUTDOWN_FILE, CLEANER_OFFSET_CHECKPOINT_FILE, LEADER_EPOCH_CHECKPOINT_FILE,
    LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE, RecoveryCheckpoint, SNAPSHOT_FILE_SUFFIX,
    fsync_dir, list_snapshots, read_offset_checkpoint, remove_if_exists, write_file_atomically,
    write_offset_checkpoint,
};
use crate::cleaning::{CleaningView, ReplacementSegment, SealedSegment, StopAfter};
pub use crate::error::LogError;
pub use crate::leader_epoch_cache::EpochEntry;
use crate::leader_epoch_cache::LeaderEpochCache;
use crate::log_config::LogConfig;
use crate::preallocate::{AppendRate, STANDBY_FILE_NAME, Standby};
use crate::producer_state::{BatchMetadata, ProducerStateManager, SequenceCheck};
use crate::record_batch::{
    BatchHeader, NO_TIMESTAMP, TimestampType, decompressed_records, parse_header, record_entries,
    set_log_append_time, validate_batches, validate_replicated_batches,
};
use crate::segment::{
    INDEX_FILE_SUFFIX, LOG_FILE_SUFFIX, LogSegment, ReadLimits, SegmentFile,
    TIME_INDEX_FILE_SUFFIX, offset_file_path, parse_offset_file_name,
};
use crate::writeback::{WritebackConfig, WritebackState};

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first appended record (-1 when nothing was appended).
    pub first_offset: i64,
    /// Offset of the last appended record (-1 when nothing was appended).
    pub last_offset: i64,
    /// Broker time stamped on the batches for `LogAppendTime` topics (ms), -1 for `CreateTime`.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// The batches were already in the log; the offsets are the original ones.
    pub duplicate: bool,
    /// Largest batch max timestamp appended (ms).
    pub max_timestamp: i64,
    /// Number of records appended.
    pub records_count: i64,
    /// The leader epoch of the partition when a leader appended (or found, for
    /// duplicates) the batches, set by the replica manager; -1 from the log itself.
    /// acks=all answers only if the high watermark covers them in this same epoch.
    pub leader_epoch: i32,
}

/// Result of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadInfo {
    /// Zero or more whole batches, starting with the batch containing the requested offset.
    pub records: Bytes,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
}

/// Paths of the files that make up one segment, for shipping it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFiles {
    /// Base offset of the segment.
    pub base_offset: i64,
    /// Offset after its last batch (exclusive).
    pub next_offset: i64,
    /// The `.log` file.
    pub log: PathBuf,
    /// The `.index` file.
    pub offset_index: PathBuf,
    /// The `.timeindex` file.
    pub time_index: PathBuf,
    /// The producer snapshot taken when the segment was rolled, if present.
    pub producer_snapshot: Option<PathBuf>,
    /// The partition's leader-epoch checkpoint.
    pub leader_epoch_checkpoint: PathBuf,
}

fn system_now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Splits a `<topic>-<partition>` directory name for log fields.
fn topic_partition_of(dir: &Path) -> (String, i32) {
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    match name.rsplit_once('-') {
        Some((topic, partition)) => match partition.parse() {
            Ok(partition) => (topic.to_string(), partition),
            Err(_) => (name.to_string(), -1),
        },
        None => (name.to_string(), -1),
    }
}

/// The log of one partition replica.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    topic: String,
    partition: i32,
    config: LogConfig,
    /// Segments by base offset; the last one is the active segment. Never empty.
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    log_end_offset: i64,
    recovery_point: i64,
    producer_state: ProducerStateManager,
    epoch_cache: LeaderEpochCache,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// Wall-clock time (ms) the active segment was first seen holding records, by an
    /// append or by [`PartitionLog::roll_if_idle`]; `None` while it is empty or not yet
    /// seen (after a roll, a truncation, or at open).
    active_since_ms: Option<i64>,
    /// fsyncs of rolled segments still running, oldest first.
    background_flushes: std::collections::VecDeque<BackgroundFlush>,
    /// The last append as leader failed with an i/o error (a full disk) and none has
    /// succeeded since: the batches of that request are missing from the log.
    append_failing: bool,
    /// Bumped by every truncation: a background flush started before one no longer
    /// proves the offsets below its `up_to` durable.
    truncations: u64,
    /// The `recovery-point` file, written in the background as rolled segments
    /// become durable.
    recovery_checkpoint: RecoveryCheckpoint,
    /// A rolled segment's fsync failed: later flushes do not prove it durable, so the
    /// recovery point stays until a full [`PartitionLog::flush`] succeeds.
    flush_failed: bool,
    /// Block preallocation ahead of the active segment's appends: the step (bytes) and
    /// the partition's append rate. None when off.
    preallocation: Option<(u64, AppendRate)>,
    /// The next segment's file, allocated ahead on its own thread while the partition is
    /// written fast; a roll takes it once it is ready.
    standby: Option<Standby>,
    /// Writeback started every `log.writeback.interval.bytes` of appends; None when off.
    writeback: Option<WritebackState>,
    /// The cleaner checkpoint: offsets below it were cleaned by an earlier pass (0 when
    /// never cleaned); lowered by truncations.
    cleaner_checkpoint: i64,
}

/// A rolled segment being fsynced on its own thread. Kafka flushes a rolled segment
/// from its scheduler rather than in the roll, so an append never waits for the
/// writeback of a whole segment; the recovery point moves only when the fsync is done.
#[derive(Debug)]
struct BackgroundFlush {
    /// Offsets below this are durable once the fsync succeeds (the new active
    /// segment's base offset).
    up_to: i64,
    /// [`PartitionLog::truncations`] when the flush started.
    truncations: u64,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

/// fsyncs a rolled segment's `files`, the producer `snapshot` written at the roll,
/// and their directory `dir`.
fn sync_rolled_segment(files: Vec<fs::File>, snapshot: PathBuf, dir: PathBuf) -> io::Result<()> {
    for file in files {
        file.sync_data()?;
    }
    fs::File::open(snapshot)?.sync_all()?;
    fsync_dir(&dir)
}

impl PartitionLog {
    /// Opens the log in `dir` (created if missing). After a clean shutdown
    /// (marker present) segments are loaded from their indexes; otherwise
    /// every segment that may hold offsets at or after the recovery point is
    /// recovered (at least the active one): the first invalid batch and
    /// everything after it is truncated, later segments are deleted.
    /// Segments with missing or inconsistent indexes are always recovered.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<PartitionLog, LogError> {
        fs::create_dir_all(dir)?;
        let (topic, partition) = topic_partition_of(dir);
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = marker.exists();
        let base_offsets = Self::scan_dir(dir)?;
        let checkpointed_start = read_offset_checkpoint(&dir.join(LOG_START_OFFSET_FILE));
        let recovery_point = if clean_shutdown {
            i64::MAX
        } else {
            read_offset_checkpoint(&dir.join(RECOVERY_POINT_FILE)).unwrap_or(0)
        };
        info!(%topic, partition, clean_shutdown, segments = base_offsets.len(), recovery_point, "opening partition log");

        let mut segments = BTreeMap::new();
        let mut previous_next_offset: Option<i64> = None;
        let mut discard_rest = false;
        for (index, base_offset) in base_offsets.iter().copied().enumerate() {
            if discard_rest {
                warn!(%topic, partition, base_offset, "deleting segment after a truncated one");
                LogSegment::open(
                    dir,
                    base_offset,
                    config.index_interval_bytes,
                    now_ms,
                    SegmentFile::Existing,
                )?
                .delete()?;
                continue;
            }
            let mut segment = LogSegment::open(
                dir,
                base_offset,
                config.index_interval_bytes,
                now_ms,
                SegmentFile::Existing,
            )?;
            let next_base = base_offsets.get(index + 1).copied();
            let may_hold_unflushed =
                !clean_shutdown && next_base.is_none_or(|next| next > recovery_point);
            let problem = segment.needs_recovery().map(str::to_string);
            if may_hold_unflushed || problem.is_some() {
                if let Some(problem) = &problem {
                    warn!(%topic, partition, base_offset, %problem, "segment needs recovery");
                }
                let truncated = segment.recover()?;
                if truncated > 0 {
                    warn!(%topic, partition, base_offset, truncated_bytes = truncated, next_offset = segment.next_offset(), "truncated invalid data during recovery");
                    metrics::counter!("silt_log_recovery_truncated_bytes_total")
                        .increment(truncated);
                    discard_rest = next_base.is_some();
                }
            }
            if let Some(previous) = previous_next_offset
                && previous > base_offset
            {
                return Err(LogError::Corrupt(format!(
                    "{}: segment {base_offset} overlaps the previous segment ending at {previous}",
                    dir.display()
                )));
            }
            previous_next_offset = Some(segment.next_offset());
            let _previous = segments.insert(base_offset, segment);
        }

        if segments.is_empty() {
            let start = checkpointed_start.unwrap_or(0);
            let segment = LogSegment::open(
                dir,
                start,
                config.index_interval_bytes,
                now_ms,
                SegmentFile::Empty,
            )?;
            let _previous = segments.insert(start, segment);
        }
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_end_offset = segments
            .values()
            .next_back()
            .map_or(first_base, LogSegment::next_offset);
        let log_start_offset = checkpointed_start.unwrap_or(first_base).max(first_base);

        let (epoch_cache, epoch_cache_loaded) = match LeaderEpochCache::load(dir) {
            Some(cache) => (cache, true),
            None => (LeaderEpochCache::empty(dir), false),
        };
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            topic,
            partition,
            config,
            segments,
            log_start_offset,
            log_end_offset,
            recovery_point: log_end_offset,
            producer_state: ProducerStateManager::new(),
            epoch_cache,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            active_since_ms: None,
            background_flushes: std::collections::VecDeque::new(),
            append_failing: false,
            truncations: 0,
            recovery_checkpoint: RecoveryCheckpoint::new(
                dir.join(RECOVERY_POINT_FILE),
                log_end_offset,
                0,
            ),
            flush_failed: false,
            preallocation: None,
            standby: None,
            writeback: None,
            cleaner_checkpoint: read_offset_checkpoint(&dir.join(CLEANER_OFFSET_CHECKPOINT_FILE))
                .unwrap_or(0),
        };
        if log.log_start_offset > log.log_end_offset {
            warn!(topic = %log.topic, partition = log.partition, log_start_offset, log_end_offset, "log start offset beyond the recovered log; emptying it");
            log.truncate_fully_and_start_at(log_start_offset, now_ms)?;
        }
        if !epoch_cache_loaded {
            log.rebuild_epoch_cache()?;
        }
        let mut epochs_changed = log.epoch_cache.truncate_from_end(log.log_end_offset);
        epochs_changed |= log.epoch_cache.truncate_from_start(log.log_start_offset);
        if epochs_changed || !epoch_cache_loaded {
            log.epoch_cache.write()?;
        }
        log.load_producer_state()?;
        log.remove_stray_snapshots()?;

        write_offset_checkpoint(&log.dir.join(LOG_START_OFFSET_FILE), log.log_start_offset)?;
        log.recovery_checkpoint
            .write_now(log.recovery_point, log.truncations)?;
        if clean_shutdown {
            fs::remove_file(&marker)?;
            fsync_dir(&log.dir)?;
        }
        info!(topic = %log.topic, partition = log.partition, log_start_offset = log.log_start_offset, log_end_offset = log.log_end_offset, segments = log.segments.len(), "opened partition log");
        Ok(log)
    }

    /// Lists segment base offsets and removes leftovers: temp files of our
    /// checkpoints, indexes whose `.log` is gone, and a standby segment file.
    fn scan_dir(dir: &Path) -> Result<Vec<i64>, LogError> {
        crate::cleaning::recover_interrupted_swaps(dir)?;
        let mut log_offsets = Vec::new();
        let mut index_files = Vec::new();
        for dir_entry in fs::read_dir(dir)? {
            let dir_entry = dir_entry?;
            let Some(name) = dir_entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(base_offset) = parse_offset_file_name(&name, LOG_FILE_SUFFIX) {
                log_offsets.push(base_offset);
            } else if name == STANDBY_FILE_NAME {
                remove_if_exists(&dir_entry.path())?;
            } else if let Some(base_offset) = parse_offset_file_name(&name, INDEX_FILE_SUFFIX)
                .or_else(|| parse_offset_file_name(&name, TIME_INDEX_FILE_SUFFIX))
            {
                index_files.push((base_offset, dir_entry.path()));
            } else if let Some(stem) = name.strip_suffix(".tmp") {
                let ours = [
                    LOG_START_OFFSET_FILE,
                    RECOVERY_POINT_FILE,
                    LEADER_EPOCH_CHECKPOINT_FILE,
                    CLEAN_SHUTDOWN_FILE,
                    CLEANER_OFFSET_CHECKPOINT_FILE,
                ]
                .contains(&stem)
                    || parse_offset_file_name(stem, SNAPSHOT_FILE_SUFFIX).is_some();
                if ours {
                    remove_if_exists(&dir_entry.path())?;
                }
            }
        }
        log_offsets.sort_unstable();
        for (base_offset, path) in index_files {
            if log_offsets.binary_search(&base_offset).is_err() {
                debug!(path = %path.display(), "removing orphan index file");
                remove_if_exists(&path)?;
            }
        }
        Ok(log_offsets)
    }

    /// Rebuilds the leader-epoch cache from batch headers (checkpoint lost).
    fn rebuild_epoch_cache(&mut self) -> Result<(), LogError> {
        let mut cache = LeaderEpochCache::empty(&self.dir);
        for segment in self.segments.values() {
            segment.for_each_batch_from(segment.base_offset(), |location| {
                let _changed = cache.assign(
                    location.header.partition_leader_epoch,
                    location.header.base_offset,
                );
                Ok(())
            })?;
        }
        self.epoch_cache = cache;
        Ok(())
    }

    /// Loads the newest readable snapshot at or below the log end offset and
    /// replays batch headers after it. Snapshots beyond the log end offset
    /// are deleted.
    fn load_producer_state(&mut self) -> Result<(), LogError> {
        let mut snapshot_offsets = list_snapshots(&self.dir)?;
        while let Some(offset) = snapshot_offsets.last().copied()
            && offset > self.log_end_offset
        {
            let _removed = snapshot_offsets.pop();
            remove_if_exists(&offset_file_path(&self.dir, offset, SNAPSHOT_FILE_SUFFIX))?;
        }
        let mut state = ProducerStateManager::new();
        let mut replay_from = self.segments.keys().next().copied().unwrap_or(0);
        while let Some(offset) = snapshot_offsets.pop() {
            let path = offset_file_path(&self.dir, offset, SNAPSHOT_FILE_SUFFIX);
            match ProducerStateManager::read_snapshot(&path) {
                Ok((snapshot_offset, loaded)) if snapshot_offset == offset => {
                    state = loaded;
                    replay_from = replay_from.max(offset);
                    break;
                }
                Ok(_) | Err(LogError::Corrupt(_)) => {
                    warn!(topic = %self.topic, partition = self.partition, path = %path.display(), "deleting unreadable producer snapshot");
                    remove_if_exists(&path)?;
                }
                Err(error) => return Err(error),
            }
        }
        for segment in self.segments.values() {
            if segment.next_offset() <= replay_from {
                continue;
            }
            segment.for_each_batch_from(replay_from, |location| {
                state.update(&location.header);
                Ok(())
            })?;
        }
        debug!(topic = %self.topic, partition = self.partition, replay_from, producers = state.len(), "loaded producer state");
        self.producer_state = state;
        Ok(())
    }

    /// Keeps the snapshots at segment base offsets and the newest one.
    fn remove_stray_snapshots(&self) -> Result<(), LogError> {
        let snapshot_offsets = list_snapshots(&self.dir)?;
        let newest = snapshot_offsets.last().copied();
        for offset in snapshot_offsets {
            if Some(offset) != newest && !self.segments.contains_key(&offset) {
                remove_if_exists(&offset_file_path(&self.dir, offset, SNAPSHOT_FILE_SUFFIX))?;
            }
        }
        Ok(())
    }

    /// Deletes snapshots below `offset`.
    fn delete_snapshots_before(&self, offset: i64) -> Result<(), LogError> {
        for snapshot_offset in list_snapshots(&self.dir)? {
            if snapshot_offset < offset {
                remove_if_exists(&offset_file_path(
                    &self.dir,
                    snapshot_offset,
                    SNAPSHOT_FILE_SUFFIX,
                ))?;
            }
        }
        Ok(())
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The topic, from the directory name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition index, from the directory name (-1 if unparsable).
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The current config.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the config; takes effect for the next append, roll and retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offset the next appended record gets (exclusive end of the log).
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Offset below which the log is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Current epoch of producer `pid`, if the log knows it.
    pub fn producer_epoch(&self, pid: i64) -> Option<i16> {
        self.producer_state.entry(pid).map(|entry| entry.epoch)
    }

    /// The idempotent-producer state.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producer_state
    }

    /// The leader-epoch cache, oldest epoch first.
    pub fn leader_epoch_entries(&self) -> &[EpochEntry] {
        self.epoch_cache.entries()
    }

    /// The latest leader epoch seen in appended batches.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epoch_cache.latest_epoch()
    }

    /// OffsetForLeaderEpoch: the largest epoch `<= epoch` known to the log
    /// and the end offset (exclusive) of that epoch. None when undefined.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epoch_cache.end_offset_for(epoch, self.log_end_offset)
    }

    /// Records that `epoch` starts at `start_offset` in the leader-epoch cache, as a
    /// new leader does at its log end offset before its first append (so
    /// OffsetForLeaderEpoch answers for the new epoch at once). Ignored when the
    /// cache already has this or a newer epoch.
    ///
    /// # Errors
    /// Writing the checkpoint failed.
    pub fn assign_epoch_start_offset(
        &mut self,
        epoch: i32,
        start_offset: i64,
    ) -> Result<(), LogError> {
        if self.epoch_cache.assign(epoch, start_offset) {
            info!(topic = %self.topic, partition = self.partition, epoch, start_offset, "new leader epoch in log");
            self.epoch_cache.write()?;
        }
        Ok(())
    }

    /// Total size of all segments in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(LogSegment::size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offset of the active segment.
    pub fn active_segment_base_offset(&self) -> i64 {
        self.segments
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.log_end_offset)
    }

    /// Sealed (non-active) segments' base offsets, ascending.
    pub fn sealed_segment_base_offsets(&self) -> Vec<i64> {
        let active = self.active_segment_base_offset();
        self.segments
            .keys()
            .copied()
            .filter(|base_offset| *base_offset != active)
            .collect()
    }

    /// The files of the sealed segment starting at `base_offset`.
    pub fn sealed_segment_files(&self, base_offset: i64) -> Option<SegmentFiles> {
        if base_offset == self.active_segment_base_offset() {
            return None;
        }
        let segment = self.segments.get(&base_offset)?;
        let next_base = self
            .segments
            .range(base_offset + 1..)
            .next()
            .map_or(self.log_end_offset, |(next, _)| *next);
        let snapshot = offset_file_path(&self.dir, next_base, SNAPSHOT_FILE_SUFFIX);
        Some(SegmentFiles {
            base_offset,
            next_offset: segment.next_offset(),
            log: segment.log_path().to_path_buf(),
            offset_index: segment.offset_index_path().to_path_buf(),
            time_index: segment.time_index_path().to_path_buf(),
            producer_snapshot: snapshot.exists().then_some(snapshot),
            leader_epoch_checkpoint: self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
        })
    }

    fn active_segment(&self) -> Result<&LogSegment, LogError> {
        self.segments
            .values()
            .next_back()
            .ok_or_else(|| LogError::Corrupt(format!("{}: no segment", self.dir.display())))
    }

    fn active_segment_mut(&mut self) -> Result<&mut LogSegment, LogError> {
        let dir = &self.dir;
        self.segments
            .values_mut()
            .next_back()
            .ok_or_else(|| LogError::Corrupt(format!("{}: no segment", dir.display())))
    }

    /// Appends a produce request's record set: one or more v2 batches as
    /// received. Everything is validated first (nothing is appended if any
    /// batch is bad; a batch over `max.message.bytes` is
    /// [`LogError::MessageTooLarge`]), then idempotent-producer checks run;
    /// offsets are assigned from the log end offset by patching `baseOffset`
    /// and `partitionLeaderEpoch` (and the timestamp for `LogAppendTime`
    /// topics). Rolls and flushes per config. A request whose batches were
    /// all appended before returns their original offsets with
    /// `duplicate = true` and appends nothing.
    pub fn append_as_leader(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let headers = validate_batches(records)?;
        let max_message_bytes = self.config.max_message_bytes as usize;
        if let Some(too_large) = headers
            .iter()
            .find(|header| header.size_bytes() > max_message_bytes)
        {
            return Err(LogError::MessageTooLarge {
                size: too_large.size_bytes(),
                max: max_message_bytes,
            });
        }
        if records.len() as u64 > self.config.segment_bytes {
            return Err(LogError::RecordListTooLarge {
                size: records.len(),
                max: self.config.segment_bytes,
            });
        }
        if self.config.is_compacted() {
            self.check_keys(records, &headers)?;
        }
        let checks = match self.producer_state.check_batches(&headers) {
            // A producer's pipelined request behind one that failed on the disk: answer
            // with the storage error, as Kafka does once the log dir is offline, so the
            // client retries both in order instead of resetting its sequences.
            Err(LogError::OutOfOrderSequence { .. }) if self.append_failing => {
                return Err(LogError::AppendsFailing);
            }
            checks => checks?,
        };
        if let Some(info) = self.duplicate_append_info(&headers, &checks)? {
            debug!(topic = %self.topic, partition = self.partition, first_offset = info.first_offset, last_offset = info.last_offset, "duplicate produce ignored");
            return Ok(info);
        }

        // The segment writes each batch's offset prefix (baseOffset, batchLength,
        // partitionLeaderEpoch) from these headers and the rest as received: no copy
        // to assign offsets.
        let mut next_offset = self.log_end_offset;
        let assigned_headers: Vec<BatchHeader> = headers
            .iter()
            .map(|header| {
                let assigned = BatchHeader {
                    base_offset: next_offset,
                    partition_leader_epoch: leader_epoch,
                    ..*header
                };
                next_offset = assigned.next_offset();
                assigned
            })
            .collect();
        let result = self.stamp_and_append(records, assigned_headers, now_ms);
        self.append_failing = matches!(result, Err(LogError::Io(_)));
        result
    }

    /// Appends batches with their final offsets, stamping `LogAppendTime` topics'
    /// batches with `now_ms` first.
    fn stamp_and_append(
        &mut self,
        records: &[u8],
        mut assigned_headers: Vec<BatchHeader>,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if self.config.message_timestamp_type != TimestampType::LogAppendTime {
            return self.append_batches(records, &assigned_headers, now_ms);
        }
        // LogAppendTime changes CRC-covered fields: stamp a copy.
        let mut stamped = records.to_vec();
        let mut position = 0usize;
        for header in &mut assigned_headers {
            let batch = &mut stamped[position..position + header.size_bytes()];
            set_log_append_time(batch, now_ms);
            *header = BatchHeader {
                base_offset: header.base_offset,
                partition_leader_epoch: header.partition_leader_epoch,
                ..parse_header(batch)?
            };
            position += header.size_bytes();
        }
        let mut info = self.append_batches(&stamped, &assigned_headers, now_ms)?;
        info.log_append_time_ms = now_ms;
        Ok(info)
    }

    /// Every record of a compacted topic must have a key. Walks the records of the
    /// batches (`headers` are theirs, in order), decompressed: only compacted topics pay.
    fn check_keys(&self, records: &[u8], headers: &[BatchHeader]) -> Result<(), LogError> {
        let mut position = 0;
        for header in headers {
            let batch = &records[position..position + header.size_bytes()];
            position += header.size_bytes();
            let section = decompressed_records(batch, header)?;
            if record_entries(header, &section)?
                .iter()
                .any(|entry| entry.key.is_none())
            {
                return Err(LogError::RecordWithoutKey {
                    topic: self.topic.clone(),
                    partition: self.partition,
                });
            }
        }
        Ok(())
    }

    /// If every batch is a duplicate, the append result to answer with;
    /// duplicates mixed with new batches are rejected.
    fn duplicate_append_info(
        &self,
        headers: &[BatchHeader],
        checks: &[SequenceCheck],
    ) -> Result<Option<AppendInfo>, LogError> {
        let duplicates: Vec<BatchMetadata> = checks
            .iter()
            .filter_map(|check| match check {
                SequenceCheck::Duplicate(original) => Some(*original),
                SequenceCheck::Accept => None,
            })
            .collect();
        let (Some(first), Some(last)) = (duplicates.first(), duplicates.last()) else {
            return Ok(None);
        };
        if duplicates.len() != headers.len() {
            let duplicate_header = headers
                .iter()
                .zip(checks)
                .find(|(_, check)| matches!(check, SequenceCheck::Duplicate(_)))
                .map(|(header, _)| *header);
            return Err(LogError::DuplicateSequence {
                producer_id: duplicate_header.map_or(-1, |header| header.producer_id),
                first_sequence: duplicate_header.map_or(-1, |header| header.base_sequence),
            });
        }
        let log_append_time = self.config.message_timestamp_type == TimestampType::LogAppendTime;
        Ok(Some(AppendInfo {
            first_offset: first.first_offset,
            last_offset: last.last_offset,
            log_append_time_ms: if log_append_time { last.timestamp } else { -1 },
            log_start_offset: self.log_start_offset,
            duplicate: true,
            max_timestamp: duplicates
                .iter()
                .map(|batch| batch.timestamp)
                .max()
                .unwrap_or(NO_TIMESTAMP),
            records_count: duplicates
                .iter()
                .map(|batch| batch.last_offset - batch.first_offset + 1)
                .sum(),
            leader_epoch: -1,
        }))
    }

    /// Appends batches fetched from the leader, which already carry offsets
    /// and leader epochs: framing and CRC are checked, the first base offset
    /// must be `>= log_end_offset` and offsets must increase (gaps from
    /// compaction are allowed). Producer state is updated without sequence
    /// checks. An empty record set appends nothing (offsets -1).
    pub fn append_as_follower(&mut self, records: &[u8]) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Ok(AppendInfo {
                first_offset: -1,
                last_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: self.log_start_offset,
                duplicate: false,
                max_timestamp: NO_TIMESTAMP,
                records_count: 0,
                leader_epoch: -1,
            });
        }
        let headers = validate_replicated_batches(records)?;
        if let Some(first) = headers.first()
            && first.base_offset < self.log_end_offset
        {
            return Err(LogError::InvalidOffset(format!(
                "replicated batch at offset {} is below the log end offset {}",
                first.base_offset, self.log_end_offset
            )));
        }
        let now_ms = system_now_ms();
        // Append in groups no larger than a segment so every group fits one.
        let mut combined: Option<AppendInfo> = None;
        let mut group_start = 0usize;
        let mut position = 0usize;
        let mut group_headers: Vec<BatchHeader> = Vec::new();
        for (index, header) in headers.iter().enumerate() {
            group_headers.push(*header);
            position += header.size_bytes();
            let next_fits = headers.get(index + 1).is_some_and(|next| {
                (position - group_start + next.size_bytes()) as u64 <= self.config.segment_bytes
            });
            if !next_fits {
                let info =
                    self.append_batches(&records[group_start..position], &group_headers, now_ms)?;
                combined = Some(match combined {
                    None => info,
                    Some(previous) => AppendInfo {
                        last_offset: info.last_offset,
                        max_timestamp: previous.max_timestamp.max(info.max_timestamp),
                        records_count: previous.records_count + info.records_count,
                        log_start_offset: info.log_start_offset,
                        ..previous
                    },
                });
                group_headers.clear();
                group_start = position;
            }
        }
        combined.ok_or_else(|| LogError::Corrupt("record set without batches".to_string()))
    }

    /// Once the partition is written fast, allocates disk blocks ahead of the active
    /// segment's appends in steps of `max_ahead_bytes` (at most the rest of the segment),
    /// and the next segment's file ahead of the roll (see [`crate::preallocate`]); 0
    /// turns it off.
    pub fn set_preallocation(&mut self, max_ahead_bytes: u64) {
        self.preallocation =
            (max_ahead_bytes > 0).then(|| (max_ahead_bytes, AppendRate::default()));
    }

    /// Starts writeback of the active segment's data every `config.interval_bytes`
    /// appended to it, and drops written-back pages `config.drop_behind_bytes` behind its
    /// end from the page cache (see [`crate::writeback`]); an interval of 0 leaves both
    /// to the kernel.
    pub fn set_writeback(&mut self, config: WritebackConfig) {
        self.writeback = (config.interval_bytes > 0).then(|| WritebackState::new(config));
    }

    /// After an append: queues writeback of the active segment's data when due. A
    /// failure only costs smoothness, so it is logged and writeback is left to the kernel
    /// for this log.
    fn start_writeback(&mut self) {
        let Some(writeback) = &mut self.writeback else {
            return;
        };
        let Some(active) = self.segments.values().next_back() else {
            return;
        };
        if let Err(error) = writeback.after_append(active.base_offset(), active.size(), || {
            active.try_clone_log_file()
        }) {
            warn!(topic = %self.topic, partition = self.partition, %error, "opening the segment for writeback failed; the kernel writes it back on its own");
            self.writeback = None;
        }
    }

    /// After an append of `appended` bytes: preallocates blocks ahead of the active
    /// segment when the append rate asks for it. A failure only costs speed, so it is
    /// logged and preallocation is turned off for this log.
    fn preallocate_ahead(&mut self, appended: usize) {
        let Some((max_ahead_bytes, rate)) = &mut self.preallocation else {
            return;
        };
        let ahead = rate.ahead_bytes(appended as u64, std::time::Instant::now(), *max_ahead_bytes);
        if ahead == 0 {
            return;
        }
        let Some(active) = self.segments.values().next_back() else {
            return;
        };
        // An active segment with nothing allocated (a new partition's first) is not
        // allocated in place, which would hold its inode lock through the whole step:
        // the standby file is prepared at once and the log rolls into it when it is
        // ready (`maybe_roll`). Otherwise the standby waits until the active segment is
        // half full, so the two allocations do not compete for the same block groups.
        let allocation_started = active.allocation_started();
        let active_half_full = active.size() >= self.config.segment_bytes / 2;
        if self.standby.is_none() && (!allocation_started || active_half_full) {
            let bytes = ahead.min(self.config.segment_bytes);
            match Standby::prepare(
                &self.dir,
                bytes,
                format!("silt-standby-{}-{}", self.topic, self.partition),
            ) {
                Ok(standby) => self.standby = Some(standby),
                Err(error) => {
                    warn!(topic = %self.topic, partition = self.partition, %error, "could not start allocating the next segment; preallocation is off for this log");
                    self.preallocation = None;
                    return;
                }
            }
        }
        if !allocation_started && self.standby.is_some() {
            return;
        }
        let Some(active) = self.segments.values_mut().next_back() else {
            return;
        };
        match active.preallocate_ahead(ahead, self.config.segment_bytes) {
            Ok(true) => metrics::counter!("silt_log_preallocations_total").increment(1),
            Ok(false) => {}
            Err(error) => {
                warn!(topic = %self.topic, partition = self.partition, %error, "preallocating segment blocks failed; appends go on without");
                self.preallocation = None;
            }
        }
    }

    /// A new active segment at `base_offset`: from the standby file when its allocation
    /// is done, else a fresh file. A standby whose allocation failed turns preallocation
    /// off, like a failed inline allocation.
    fn create_segment(&mut self, base_offset: i64, now_ms: i64) -> Result<LogSegment, LogError> {
        let interval = self.config.index_interval_bytes;
        if let Some(standby) = self.standby.take_if(|standby| standby.is_finished()) {
            match standby.finish() {
                Ok((path, bytes)) => match LogSegment::open(
                    &self.dir,
                    base_offset,
                    interval,
                    now_ms,
                    SegmentFile::Standby {
                        path: &path,
                        allocated_bytes: bytes,
                    },
                ) {
                    Ok(segment) => {
                        metrics::counter!("silt_log_standby_segments_total").increment(1);
                        return Ok(segment);
                    }
                    Err(error) => {
                        warn!(topic = %self.topic, partition = self.partition, %error, "using the preallocated next segment failed; creating it afresh, preallocation is off for this log");
                        self.preallocation = None;
                        if let Err(error) = remove_if_exists(&path) {
                            warn!(topic = %self.topic, partition = self.partition, %error, "removing the unused preallocated segment failed");
                        }
                    }
                },
                Err(error) => {
                    warn!(topic = %self.topic, partition = self.partition, %error, "allocating the next segment failed; preallocation is off for this log");
                    self.preallocation = None;
                }
            }
        }
        LogSegment::open(&self.dir, base_offset, interval, now_ms, SegmentFile::Empty)
    }

    /// Whether the next segment's file is allocated and a roll would take it
    /// ([`crate::preallocate::Standby`]).
    pub fn standby_ready(&self) -> bool {
        self.standby.as_ref().is_some_and(Standby::is_finished)
    }

    /// Waits for a standby allocation still running and removes its file. Call before
    /// removing the log's directory other than through [`PartitionLog::delete`], so the
    /// allocation thread cannot create its file in the middle of the removal.
    pub fn discard_standby(&mut self) {
        if let Some(standby) = self.standby.take()
            && let Err(error) = standby.discard()
        {
            warn!(topic = %self.topic, partition = self.partition, %error, "removing the preallocated next segment failed");
        }
    }

    /// Appends validated batches with final offsets: rolls if needed, writes
    /// to the active segment, updates producer state, the epoch cache and
    /// the log end offset, and flushes per config.
    fn append_batches(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let (Some(first), Some(last)) = (headers.first().copied(), headers.last().copied()) else {
            return Err(LogError::Corrupt("record set without batches".to_string()));
        };
        debug_assert!(
            first.base_offset >= self.log_end_offset,
            "offsets must be monotonic"
        );
        let max_timestamp = headers
            .iter()
            .map(|header| header.max_timestamp)
            .max()
            .unwrap_or(NO_TIMESTAMP);
        self.maybe_roll(records.len(), max_timestamp, &first, &last, now_ms)?;
        self.active_segment_mut()?.append(records, headers)?;
        let _since = self.active_since_ms.get_or_insert(now_ms);
        self.preallocate_ahead(records.len());
        self.start_writeback();

        let previous_end_offset = self.log_end_offset;
        self.log_end_offset = last.next_offset();
        debug_assert!(self.log_end_offset > previous_end_offset);
        let mut records_count = 0i64;
        let mut epochs_changed = false;
        for header in headers {
            self.producer_state.update(header);
            epochs_changed |= self
                .epoch_cache
                .assign(header.partition_leader_epoch, header.base_offset);
            records_count += i64::from(header.records_count);
        }
        self.unflushed_messages = self
            .unflushed_messages
            .saturating_add(records_count.max(0) as u64);
        metrics::counter!("silt_log_appended_bytes_total").increment(records.len() as u64);
        metrics::counter!("silt_log_appended_records_total").increment(records_count.max(0) as u64);
        if epochs_changed {
            info!(topic = %self.topic, partition = self.partition, epoch = ?self.epoch_cache.latest_epoch(), start_offset = first.base_offset, "new leader epoch in log");
            self.epoch_cache.write()?;
        }
        self.maybe_flush(now_ms)?;
        Ok(AppendInfo {
            first_offset: first.base_offset,
            last_offset: last.last_offset(),
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset,
            duplicate: false,
            max_timestamp,
            records_count,
            leader_epoch: -1,
        })
    }

    /// Kafka's `maybeRoll`: a new segment when the records would overflow
    /// `segment.bytes`, when `segment.ms` has passed since the active
    /// segment's first batch timestamp (or its creation when it has none),
    /// or when offsets or positions would not fit the indexes.
    fn maybe_roll(
        &mut self,
        records_size: usize,
        max_timestamp: i64,
        first: &BatchHeader,
        last: &BatchHeader,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let active = self.active_segment()?;
        let size_after = active.size() + records_size as u64;
        let full = size_after > self.config.segment_bytes;
        let time_waited = match active.first_batch_timestamp() {
            Some(first_timestamp) if first_timestamp >= 0 => {
                max_timestamp.saturating_sub(first_timestamp)
            }
            _ => now_ms.saturating_sub(active.created_ms()),
        };
        let aged = time_waited > self.config.segment_ms;
        // A fast partition's segment that was never allocated ahead rolls into the
        // standby file once it is ready (see `preallocate_ahead`).
        let into_standby =
            self.preallocation.is_some() && !active.allocation_started() && self.standby_ready();
        let overflows = last.last_offset() - active.base_offset() > i64::from(i32::MAX)
            || size_after > u64::from(u32::MAX);
        if active.is_empty() {
            if overflows {
                return self.roll_to(first.base_offset, now_ms);
            }
            return Ok(());
        }
        if full || aged || overflows || into_standby {
            debug!(topic = %self.topic, partition = self.partition, full, aged, overflows, into_standby, "rolling log segment");
            let new_base = if overflows {
                first.base_offset
            } else {
                self.log_end_offset
            };
            return self.roll_to(new_base, now_ms);
        }
        Ok(())
    }

    /// For a topic with `remote.storage.enable=true`: seals the active segment once it
    /// has held records for `segment.ms` of wall-clock time, even with no further
    /// append, so that idle or slow partitions reach the object store within a bound
    /// (Kafka rolls only on an append). The first call that finds records in a segment
    /// not yet timed starts its clock. Returns whether it rolled.
    ///
    /// # Errors
    /// The roll's I/O errors.
    pub fn roll_if_idle(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if !self.config.remote_storage_enable || self.active_segment()?.is_empty() {
            return Ok(false);
        }
        let since = *self.active_since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < self.config.segment_ms {
            return Ok(false);
        }
        info!(topic = %self.topic, partition = self.partition, segment_ms = self.config.segment_ms, log_end_offset = self.log_end_offset, "rolling an idle log segment for tiering");
        self.roll_to(self.log_end_offset, now_ms)?;
        Ok(true)
    }

    /// Seals the active segment and starts a new one at the log end offset;
    /// does nothing when the active segment is empty. Writes a producer
    /// snapshot named after the new base offset and the recovery point.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.active_segment()?.is_empty() {
            return Ok(());
        }
        self.roll_to(self.log_end_offset, now_ms)
    }

    fn roll_to(&mut self, new_base_offset: i64, now_ms: i64) -> Result<(), LogError> {
        debug_assert!(new_base_offset >= self.log_end_offset);
        self.active_since_ms = None;
        let started = std::time::Instant::now();
        let active = self.active_segment_mut()?;
        let active_base = active.base_offset();
        if active.is_empty() {
            if active_base == new_base_offset {
                return Ok(());
            }
            if let Some(empty) = self.segments.remove(&active_base) {
                empty.delete()?;
            }
        } else {
            active.seal_for_roll()?;
        }
        let sealed_files = match self.segments.get(&active_base) {
            Some(sealed) => sealed.sync_handles()?,
            None => Vec::new(),
        };
        let segment = self.create_segment(new_base_offset, now_ms)?;
        let _previous = self.segments.insert(new_base_offset, segment);
        let snapshot = self
            .producer_state
            .write_snapshot_unsynced(&self.dir, new_base_offset)?;
        self.reap_background_flushes(false);
        let dir = self.dir.clone();
        let thread = crate::background::spawn(
            format!("silt-flush-{}-{}", self.topic, self.partition),
            move || sync_rolled_segment(sealed_files, snapshot, dir),
        )?;
        self.background_flushes.push_back(BackgroundFlush {
            up_to: new_base_offset,
            truncations: self.truncations,
            thread,
        });
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        metrics::counter!("silt_log_segments_rolled_total").increment(1);
        // As Kafka's "Rolled new log segment at offset N in M ms": the roll runs under
        // the log lock, so its time is appends' waiting time.
        let took_us = started.elapsed().as_micros() as u64;
        info!(topic = %self.topic, partition = self.partition, base_offset = new_base_offset, previous_base_offset = active_base, took_us, "rolled log segment");
        Ok(())
    }

    /// Waits for the background fsyncs of rolled segments, fsyncs every segment
    /// from the one holding the recovery point on, and moves the in-memory
    /// recovery point to the log end offset. The recovery-point checkpoint itself
    /// is written when a rolled segment's fsync completes, on truncation and on
    /// close; recovery always covers the active segment anyway.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.reap_background_flushes(true);
        // Segments before the one holding the recovery point are durable already.
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(base_offset, _)| *base_offset);
        for (_, segment) in self.segments.range(from..) {
            segment.flush()?;
        }
        self.flush_failed = false;
        self.recovery_point = self.log_end_offset;
        self.unflushed_messages = 0;
        Ok(())
    }

    /// Waits until every rolled segment's background fsync has finished, moves the
    /// recovery point past those that succeeded and waits for its checkpoint to be
    /// written.
    pub fn wait_for_background_flushes(&mut self) {
        self.reap_background_flushes(true);
        self.recovery_checkpoint.wait_idle();
    }

    /// Takes the results of finished background flushes of rolled segments (all of them,
    /// waiting, with `wait`), in roll order, and moves the recovery point past each one
    /// that succeeded with no truncation since it started. The recovery-point checkpoint
    /// is written on a background thread ([`RecoveryCheckpoint::request`]): this runs
    /// under the log lock, on appends.
    fn reap_background_flushes(&mut self, wait: bool) {
        let mut advanced = false;
        while let Some(flush) = self.background_flushes.front() {
            if !wait && !flush.thread.is_finished() {
                break;
            }
            let Some(flush) = self.background_flushes.pop_front() else {
                break;
            };
            match flush.thread.join() {
                Ok(Ok(())) if flush.truncations == self.truncations && !self.flush_failed => {
                    let durable = flush.up_to.min(self.log_end_offset);
                    if durable > self.recovery_point {
                        self.recovery_point = durable;
                        advanced = true;
                    }
                }
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.flush_failed = true;
                    metrics::counter!("silt_log_flush_errors_total").increment(1);
                    warn!(topic = %self.topic, partition = self.partition, up_to = flush.up_to, %error, "fsync of a rolled segment failed; it will be recovered after a crash");
                }
                Err(_) => {
                    self.flush_failed = true;
                    warn!(topic = %self.topic, partition = self.partition, "segment flush thread panicked")
                }
            }
        }
        if advanced {
            self.recovery_checkpoint
                .request(self.recovery_point, self.truncations);
        }
    }

    /// Flushes when `flush.messages` records are unflushed or the last
    /// flush is older than `flush.ms`; for a periodic task and after appends.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.reap_background_flushes(false);
        if self.unflushed_messages == 0 {
            return Ok(());
        }
        let by_count = self.unflushed_messages >= self.config.flush_messages;
        let by_time = now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms;
        if by_count || by_time {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// Reads whole batches starting with the batch containing
    /// `start_offset`, at most `max_bytes` in total, only batches whose last
    /// offset is below `max_offset` (exclusive, e.g. the high watermark;
    /// clamped to the log end offset). With `min_one_batch` the first batch
    /// is returned even if larger than `max_bytes` (KIP-74). Reads from one
    /// segment. `start_offset` outside `[log_start_offset, log_end_offset]`
    /// is [`LogError::OffsetOutOfRange`]; at the log end the records are empty.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadInfo, LogError> {
        if start_offset < self.log_start_offset || start_offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let mut info = ReadInfo {
            records: Bytes::new(),
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        let max_offset = max_offset.min(self.log_end_offset);
        if start_offset >= max_offset {
            return Ok(info);
        }
        let floor_base = self
            .segments
            .range(..=start_offset)
            .next_back()
            .map_or(i64::MIN, |(base_offset, _)| *base_offset);
        for segment in self
            .segments
            .range(floor_base..)
            .map(|(_, segment)| segment)
        {
            let limits = ReadLimits {
                max_bytes,
                max_offset,
                min_one_batch,
            };
            if let Some(records) = segment.read(start_offset, limits)? {
                info.records = Bytes::from(records);
                break;
            }
        }
        Ok(info)
    }

    /// ListOffsets by timestamp: the first offset at or after the log start
    /// whose record timestamp is `>= ts`, with that timestamp (for
    /// compressed `CreateTime` batches: the batch's first offset and max
    /// timestamp). None if no record is that recent.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < ts || segment.next_offset() <= self.log_start_offset {
                continue;
            }
            if let Some(found) = segment.find_by_timestamp(ts, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): offset and timestamp of the first
    /// record with the largest timestamp (batch-level for compressed
    /// `CreateTime` batches). None if no record has a timestamp.
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for segment in self.segments.values() {
            if segment.next_offset() <= self.log_start_offset
                || segment.max_timestamp() <= NO_TIMESTAMP
            {
                continue;
            }
            if best.is_none_or(|(_, timestamp)| segment.max_timestamp() > timestamp) {
                best = Some((
                    segment.offset_of_max_timestamp().max(self.log_start_offset),
                    segment.max_timestamp(),
                ));
            }
        }
        best
    }

    /// Retention pass, like Kafka's `deleteOldSegments`: with
    /// `cleanup.policy` including `delete`, removes the oldest sealed
    /// segments whose largest timestamp is more than `retention.ms` before
    /// `now_ms`, then while the log minus a segment stays above
    /// `retention.bytes`; for every policy, segments wholly below the log
    /// start offset. The active segment is never deleted. Returns the number
    /// of segments deleted.
    ///
    /// With `remote.storage.enable` the time and size rules are skipped: the
    /// whole log's retention then belongs to remote retention, and local
    /// copies go by [`PartitionLog::apply_local_retention`] (KIP-405).
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0usize;
        if self.config.deletes_by_retention() && !self.config.remote_storage_enable {
            if self.config.retention_ms >= 0 {
                let mut count = 0usize;
                for segment in self.sealed_segments() {
                    let age = now_ms.saturating_sub(segment.largest_timestamp()?);
                    if age <= self.config.retention_ms {
                        break;
                    }
                    count += 1;
                }
                deleted += self.delete_oldest_segments(count, "retention.ms")?;
            }
            if self.config.retention_bytes >= 0 {
                let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
                let mut count = 0usize;
                for segment in self.sealed_segments() {
                    if excess - (segment.size() as i64) < 0 {
                        break;
                    }
                    excess -= segment.size() as i64;
                    count += 1;
                }
                deleted += self.delete_oldest_segments(count, "retention.bytes")?;
            }
        }
        let count = self.segments_below_log_start();
        deleted += self.delete_oldest_segments(count, "log start offset")?;
        Ok(deleted)
    }

    /// Local-tier retention of a tiered partition (KIP-405): deletes the
    /// oldest sealed segments that are wholly in remote storage (their next
    /// offset `<= remote_log_end_offset`, the exclusive end of the copied
    /// offsets), first while their largest timestamp is more than
    /// `local.retention.ms` before `now_ms`, then while the local log minus
    /// a segment stays above `local.retention.bytes`; `-2` means "as
    /// `retention.ms` / `retention.bytes`", `-1` unlimited. Moves the local
    /// log start offset up. Does nothing unless `remote.storage.enable` is on.
    /// Runs with any `cleanup.policy`: on a compacted topic too, the local tier
    /// only holds what is not yet old enough for the bucket, where the remote
    /// log cleaner compacts it. Returns the number of segments deleted.
    pub fn apply_local_retention(
        &mut self,
        now_ms: i64,
        remote_log_end_offset: i64,
    ) -> Result<usize, LogError> {
        if !self.config.remote_storage_enable {
            return Ok(0);
        }
        let local_retention_ms = match self.config.local_retention_ms {
            -2 => self.config.retention_ms,
            configured => configured,
        };
        let local_retention_bytes = match self.config.local_retention_bytes {
            -2 => self.config.retention_bytes,
            configured => configured,
        };
        let copied: Vec<&LogSegment> = self
            .sealed_segments()
            .take_while(|segment| segment.next_offset() <= remote_log_end_offset)
            .collect();
        let mut by_time = 0usize;
        if local_retention_ms >= 0 {
            for segment in &copied {
                let age = now_ms.saturating_sub(segment.largest_timestamp()?);
                if age <= local_retention_ms {
                    break;
                }
                by_time += 1;
            }
        }
        let mut by_size = 0usize;
        if local_retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - local_retention_bytes;
            for segment in &copied {
                if excess - (segment.size() as i64) < 0 {
                    break;
                }
                excess -= segment.size() as i64;
                by_size += 1;
            }
        }
        let reason = if by_size > by_time {
            "local.retention.bytes"
        } else {
            "local.retention.ms"
        };
        self.delete_oldest_segments(by_time.max(by_size), reason)
    }

    /// Largest record timestamp of the segment starting at `base_offset`
    /// (ms, -1 when no batch carries one), if the segment exists.
    pub fn segment_max_timestamp(&self, base_offset: i64) -> Option<i64> {
        self.segments
            .get(&base_offset)
            .map(LogSegment::max_timestamp)
    }

    /// Total size in bytes of the segments holding offsets at or after
    /// `offset` (the active segment always counts), e.g. the part of a
    /// tiered log not yet copied to remote storage.
    pub fn size_bytes_after(&self, offset: i64) -> u64 {
        let active = self.active_segment_base_offset();
        self.segments
            .values()
            .filter(|segment| segment.next_offset() > offset || segment.base_offset() == active)
            .map(LogSegment::size)
            .sum()
    }

    fn sealed_segments(&self) -> impl Iterator<Item = &LogSegment> {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments.values().take(sealed)
    }

    /// Number of leading sealed segments whose successor starts at or below
    /// the log start offset.
    fn segments_below_log_start(&self) -> usize {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        bases
            .windows(2)
            .take_while(|pair| pair[1] <= self.log_start_offset)
            .count()
    }

    /// Deletes the `count` oldest segments (never the active one) and moves
    /// the log start offset up to the new first segment.
    fn delete_oldest_segments(&mut self, count: usize, reason: &str) -> Result<usize, LogError> {
        let count = count.min(self.segments.len().saturating_sub(1));
        if count == 0 {
            return Ok(0);
        }
        for _ in 0..count {
            let Some((base_offset, segment)) = self.segments.pop_first() else {
                break;
            };
            info!(topic = %self.topic, partition = self.partition, base_offset, size = segment.size(), reason, "deleting log segment");
            segment.delete()?;
        }
        metrics::counter!("silt_log_segments_deleted_total").increment(count as u64);
        let first_base = self
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.log_end_offset);
        if first_base > self.log_start_offset {
            self.log_start_offset = first_base;
            write_offset_checkpoint(&self.dir.join(LOG_START_OFFSET_FILE), self.log_start_offset)?;
        }
        self.delete_snapshots_before(first_base)?;
        if self.epoch_cache.truncate_from_start(self.log_start_offset) {
            self.epoch_cache.write()?;
        }
        Ok(count)
    }

    /// DeleteRecords: moves the log start offset to `offset` (the caller
    /// checks it against the high watermark; it must be `<=` the log end
    /// offset), deletes segments wholly below it, then persists it. Returns
    /// the new log start offset (unchanged if `offset` is not above it).
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset < 0 || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        info!(topic = %self.topic, partition = self.partition, log_start_offset = offset, "log start offset moved by delete records");
        // The segments go before the checkpoint is written: on a full disk they are
        // what makes room for it.
        let count = self.segments_below_log_start();
        let _deleted = self.delete_oldest_segments(count, "delete records")?;
        write_offset_checkpoint(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
        if self.epoch_cache.truncate_from_start(self.log_start_offset) {
            self.epoch_cache.write()?;
        }
        Ok(self.log_start_offset)
    }

    /// Removes every batch whose last offset is `>= offset` (a batch
    /// straddling `offset` goes entirely, so the log end may end up below
    /// `offset`). Below the log start offset the log is emptied and restarts
    /// at `offset`. Producer state and the epoch cache follow.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::InvalidOffset(format!(
                "cannot truncate to {offset}"
            )));
        }
        if offset >= self.log_end_offset {
            // Nothing to cut, but an epoch may start at the log end with no record of
            // its own (a leader elected that appended nothing before losing it): drop
            // it, as Kafka does, or the follower asks the leader about it forever.
            if self.epoch_cache.truncate_from_end(self.log_end_offset) {
                self.epoch_cache.write()?;
            }
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset, system_now_ms());
        }
        while self.segments.len() > 1
            && self
                .segments
                .keys()
                .next_back()
                .is_some_and(|base_offset| *base_offset >= offset)
        {
            if let Some((base_offset, segment)) = self.segments.pop_last() {
                debug!(topic = %self.topic, partition = self.partition, base_offset, "deleting segment on truncation");
                segment.delete()?;
            }
        }
        let active = self.active_segment_mut()?;
        let _removed_bytes = active.truncate_to(offset)?;
        active.flush()?;
        let new_end_offset = active.next_offset();
        info!(topic = %self.topic, partition = self.partition, offset, previous_log_end_offset = self.log_end_offset, log_end_offset = new_end_offset, "truncated log");
        self.log_end_offset = new_end_offset;
        if self.log_end_offset < self.log_start_offset {
            // The removed batch straddled the log start offset.
            return self.truncate_fully_and_start_at(offset, system_now_ms());
        }
        self.after_truncation()
    }

    /// Deletes every segment and restarts the log empty at `offset`, which
    /// becomes both the log start and end offset (follower behind the
    /// leader's log start).
    pub fn truncate_fully_and_start_at(
        &mut self,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::InvalidOffset(format!(
                "cannot restart the log at {offset}"
            )));
        }
        while let Some((_, segment)) = self.segments.pop_first() {
            segment.delete()?;
        }
        let segment = LogSegment::open(
            &self.dir,
            offset,
            self.config.index_interval_bytes,
            now_ms,
            SegmentFile::Empty,
        )?;
        let _previous = self.segments.insert(offset, segment);
        info!(topic = %self.topic, partition = self.partition, offset, "log emptied and restarted");
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        write_offset_checkpoint(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
        if self.epoch_cache.clear() {
            self.epoch_cache.write()?;
        }
        self.delete_snapshots_before(i64::MAX)?;
        self.after_truncation()
    }

    /// A view of the sealed segments for one cleaning pass (see [`crate::cleaning`]).
    pub fn cleaning_view(&self) -> CleaningView {
        let active_base_offset = self.active_segment_base_offset();
        CleaningView {
            dir: self.dir.clone(),
            config: self.config.clone(),
            log_start_offset: self.log_start_offset,
            active_base_offset,
            sealed: self
                .sealed_segments()
                .map(|segment| SealedSegment {
                    base_offset: segment.base_offset(),
                    next_offset: segment.next_offset(),
                    size_bytes: segment.size(),
                    max_timestamp: segment.max_timestamp(),
                    first_batch_timestamp: segment.first_batch_timestamp(),
                    log_path: segment.log_path().to_path_buf(),
                })
                .collect(),
            first_dirty_offset: self.cleaner_checkpoint.clamp(
                self.log_start_offset,
                active_base_offset.max(self.log_start_offset),
            ),
            producer_last_offsets: self.producer_state.last_offsets(),
            truncations: self.truncations,
        }
    }

    /// Replaces the sealed segments `replaced` (consecutive, as listed in `view`) by
    /// `replacement`, crash safe (see [`crate::cleaning`]). The replacement must hold
    /// only offsets in `[replaced[0].base_offset, end)`, `end` being the base offset of
    /// the segment after the last replaced one.
    ///
    /// # Errors
    /// [`LogError::CleaningAborted`] (the replacement is discarded, nothing changes) when
    /// the log was truncated since `view`, a replaced segment is gone or changed, or the
    /// replacement does not fit; I/O errors from the swap, after which reopening the log
    /// completes or undoes it.
    pub fn replace_segments(
        &mut self,
        view: &CleaningView,
        replaced: &[SealedSegment],
        replacement: ReplacementSegment,
        now_ms: i64,
    ) -> Result<(), LogError> {
        self.replace_segments_until(view, replaced, replacement, now_ms, None)
    }

    /// Test kit: [`Self::replace_segments`] stopping after `step` (1-3) of the swap as a
    /// crash there would, leaving the log unusable until it is reopened.
    ///
    /// # Errors
    /// As [`Self::replace_segments`].
    #[cfg(feature = "test-util")]
    pub fn replace_segments_crashing_after(
        &mut self,
        view: &CleaningView,
        replaced: &[SealedSegment],
        replacement: ReplacementSegment,
        step: u8,
    ) -> Result<(), LogError> {
        self.replace_segments_until(view, replaced, replacement, 0, Some(step))
    }

    /// [`Self::replace_segments`] stopping after a step of the swap, as a crash would.
    fn replace_segments_until(
        &mut self,
        view: &CleaningView,
        replaced: &[SealedSegment],
        replacement: ReplacementSegment,
        now_ms: i64,
        stop_after: StopAfter,
    ) -> Result<(), LogError> {
        let end = match self.replacement_end(view, replaced, &replacement) {
            Ok(end) => end,
            Err(reason) => {
                replacement.discard();
                return Err(LogError::CleaningAborted(reason));
            }
        };
        let base = replacement.base_offset();
        for segment in replaced {
            let _old = self.segments.remove(&segment.base_offset);
        }
        let installed = crate::cleaning::install(&self.dir, replacement, end, stop_after);
        if stop_after.is_some() {
            return installed;
        }
        if let Err(error) = &installed {
            // Finish or undo on disk what the failed install left, as an open would.
            warn!(topic = %self.topic, partition = self.partition, base, end, %error, "installing a replacement segment failed");
            crate::cleaning::recover_interrupted_swaps(&self.dir)?;
        }
        // Whatever is on disk now (the replacement, or the old segments) goes back into
        // the log, so a reader never meets a hole.
        self.load_segments_in(base, end, now_ms)?;
        installed
    }

    /// Opens the segments whose files are based in `[from, to)` into the log.
    fn load_segments_in(&mut self, from: i64, to: i64, now_ms: i64) -> Result<(), LogError> {
        let mut bases = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(base) = name
                .to_str()
                .and_then(|name| parse_offset_file_name(name, LOG_FILE_SUFFIX))
                .filter(|base| *base >= from && *base < to)
            {
                bases.push(base);
            }
        }
        for base in bases {
            let mut segment = LogSegment::open(
                &self.dir,
                base,
                self.config.index_interval_bytes,
                now_ms,
                SegmentFile::Existing,
            )?;
            if let Some(problem) = segment.needs_recovery() {
                debug!(topic = %self.topic, partition = self.partition, base, %problem, "rebuilding the indexes of a segment");
                let _truncated = segment.recover()?;
            }
            let _previous = self.segments.insert(base, segment);
        }
        Ok(())
    }

    /// The exclusive end of the offsets `replaced` covers, if the replacement may go in.
    fn replacement_end(
        &self,
        view: &CleaningView,
        replaced: &[SealedSegment],
        replacement: &ReplacementSegment,
    ) -> Result<i64, String> {
        if view.truncations != self.truncations {
            return Err("the log was truncated".to_string());
        }
        let (Some(first), Some(last)) = (replaced.first(), replaced.last()) else {
            return Err("no segment to replace".to_string());
        };
        if replacement.base_offset() != first.base_offset {
            return Err(format!(
                "replacement based at {}, replaced segments at {}",
                replacement.base_offset(),
                first.base_offset
            ));
        }
        let active_base = self.active_segment_base_offset();
        let current: Vec<&LogSegment> = self
            .segments
            .range(first.base_offset..=last.base_offset)
            .map(|(_, segment)| segment)
            .collect();
        let unchanged = current.len() == replaced.len()
            && current.iter().zip(replaced).all(|(segment, planned)| {
                segment.base_offset() == planned.base_offset
                    && segment.size() == planned.size_bytes
                    && segment.base_offset() < active_base
            });
        if !unchanged {
            return Err(format!(
                "segments {}..={} changed since the pass began",
                first.base_offset, last.base_offset
            ));
        }
        let end = self
            .segments
            .range(last.base_offset + 1..)
            .next()
            .map_or(active_base, |(base, _)| *base);
        if replacement.next_offset() > end {
            return Err(format!(
                "replacement ends at {}, past the next segment at {end}",
                replacement.next_offset()
            ));
        }
        Ok(end)
    }

    /// Offsets below this were cleaned by an earlier pass (0 when never cleaned).
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.cleaner_checkpoint
    }

    /// Records that offsets below `offset` are clean (`cleaner-offset-checkpoint`).
    ///
    /// # Errors
    /// I/O errors writing the checkpoint.
    pub fn set_cleaner_checkpoint(&mut self, offset: i64) -> Result<(), LogError> {
        write_offset_checkpoint(&self.dir.join(CLEANER_OFFSET_CHECKPOINT_FILE), offset)?;
        self.cleaner_checkpoint = offset;
        Ok(())
    }

    /// Takes the idempotent producers' state at the log end offset from `snapshot` (the
    /// bytes of a producer snapshot file taken at `offset`, such as the one copied with
    /// the remote segment ending there), so that a log restarted at the end of its remote
    /// segments deduplicates retries and checks sequences as before. Returns false, and
    /// changes nothing, unless the log is empty at `offset` and tracks no producer.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] when the snapshot fails its checksum or is taken at another
    /// offset; [`LogError::Io`] when it cannot be written to the log dir.
    pub fn install_producer_snapshot(
        &mut self,
        offset: i64,
        snapshot: &[u8],
        source: &str,
    ) -> Result<bool, LogError> {
        if offset != self.log_end_offset
            || self.log_start_offset != self.log_end_offset
            || !self.producer_state.is_empty()
        {
            return Ok(false);
        }
        let (snapshot_offset, state) = ProducerStateManager::parse_snapshot(snapshot, source)?;
        if snapshot_offset != offset {
            return Err(LogError::Corrupt(format!(
                "{source}: producer snapshot at offset {snapshot_offset}, expected {offset}"
            )));
        }
        let _path = state.write_snapshot(&self.dir, offset)?;
        info!(topic = %self.topic, partition = self.partition, offset, producers = state.len(), "installed producer state from {source}");
        self.producer_state = state;
        Ok(true)
    }

    /// Realigns derived state with a log end offset that went down.
    fn after_truncation(&mut self) -> Result<(), LogError> {
        self.truncations += 1;
        if self.cleaner_checkpoint > self.log_end_offset {
            self.set_cleaner_checkpoint(self.log_end_offset)?;
        }
        self.active_since_ms = None;
        if let Some(writeback) = &mut self.writeback {
            writeback.reset();
        }
        if self.epoch_cache.truncate_from_end(self.log_end_offset) {
            self.epoch_cache.write()?;
        }
        self.load_producer_state()?;
        self.recovery_point = self.recovery_point.min(self.log_end_offset);
        self.recovery_checkpoint
            .write_now(self.recovery_point, self.truncations)?;
        self.unflushed_messages = 0;
        Ok(())
    }

    /// Forgets producers idle for longer than `max_idle_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many.
    pub fn remove_expired_producers(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        self.producer_state.remove_expired(now_ms, max_idle_ms)
    }

    /// Clean shutdown: seals and fsyncs the active segment, writes the
    /// producer snapshot at the log end offset and the checkpoints, then the
    /// clean-shutdown marker, so the next open skips recovery.
    pub fn close(mut self) -> Result<(), LogError> {
        self.discard_standby();
        // `flush` fsyncs the active segment after its final time index entry.
        self.active_segment_mut()?.seal_unflushed()?;
        self.flush()?;
        let _snapshot = self
            .producer_state
            .write_snapshot(&self.dir, self.log_end_offset)?;
        self.recovery_point = self.log_end_offset;
        self.recovery_checkpoint.close();
        self.recovery_checkpoint
            .write_now(self.recovery_point, self.truncations)?;
        write_offset_checkpoint(&self.dir.join(LOG_START_OFFSET_FILE), self.log_start_offset)?;
        self.epoch_cache.write()?;
        write_file_atomically(&self.dir.join(CLEAN_SHUTDOWN_FILE), b"")?;
        info!(topic = %self.topic, partition = self.partition, log_end_offset = self.log_end_offset, "closed partition log");
        Ok(())
    }

    /// Stops the threads that create files in the log's directory: removes the standby
    /// segment and stops the checkpoint writer (a write still running would put a file
    /// back into a directory being deleted, or an old offset into a recreated one).
    /// Call before deleting the directory; the log writes no checkpoint after this.
    pub fn stop_background_writes(&mut self) {
        self.discard_standby();
        self.recovery_checkpoint.close();
    }

    /// Deletes every file of the log and its directory (topic deletion).
    pub fn delete(mut self) -> Result<(), LogError> {
        self.stop_background_writes();
        let PartitionLog {
            dir,
            topic,
            partition,
            segments,
            ..
        } = self;
        drop(segments);
        fs::remove_dir_all(&dir)?;
        info!(%topic, partition, dir = %dir.display(), "deleted partition log");
        Ok(())
    }
}
