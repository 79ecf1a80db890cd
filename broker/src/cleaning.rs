//! What a partition log offers its cleaner (the key compaction in `silt-compaction`):
//! a view of the sealed segments to plan from, replacement segments, their crash-safe
//! swap into the log, and the cleaner checkpoint. Kafka's `UnifiedLog.replaceSegments`
//! with its `.cleaned`/`.swap` files; the deciding of what to keep lives in the
//! compaction crate.
//!
//! A replacement is written as an ordinary segment, indexes included, in
//! `<partition dir>/cleaner-scratch/` and fsynced. Installing it over the sealed
//! segments based in `[base, end)`:
//!
//! 1. its indexes move to `<base>.index.swap` and `<base>.timeindex.swap`;
//! 2. its log moves to `<base>-<end>.log.swap` and the directory is fsynced: the
//!    commit point;
//! 3. the files of every segment based in `[base, end)` are deleted;
//! 4. the swap files take their final names (`<base>.index`, `<base>.timeindex`,
//!    `<base>.log`) and the directory is fsynced.
//!
//! A crash before 2 leaves the old segments; [`recover_interrupted_swaps`] (run by
//! [`PartitionLog::open`](crate::log::PartitionLog::open)) deletes the leftovers. A
//! crash after 2 leaves the `.log.swap`, whose name says which segments it replaces;
//! recovery finishes 3 and 4. Either way the log holds the old segments or the new one,
//! never a mix. A missing index is rebuilt when the segment is opened.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::checkpoint::{fsync_dir, remove_if_exists};
use crate::error::LogError;
use crate::record_batch::{batch_size_from_prefix, validate_stored_batch};
use crate::segment::{
    INDEX_FILE_SUFFIX, LOG_FILE_SUFFIX, LogSegment, SegmentFile, TIME_INDEX_FILE_SUFFIX,
    offset_file_path, parse_offset_file_name,
};

/// Directory, inside a partition's directory, where replacements are written.
pub const CLEANER_SCRATCH_DIR: &str = "cleaner-scratch";
/// Suffix of a committed replacement's log file: `<base:020>-<end:020>.log.swap`.
const LOG_SWAP_SUFFIX: &str = "log.swap";
/// Suffix added to a replacement's index files while they wait for the swap.
const SWAP_SUFFIX: &str = "swap";

/// One sealed segment as the cleaner plans with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// Base offset (the first offset it may hold).
    pub base_offset: i64,
    /// Offset after its last batch (exclusive); the base offset when empty.
    pub next_offset: i64,
    /// Size of the `.log` file (bytes).
    pub size_bytes: u64,
    /// Largest record timestamp (ms), -1 when it holds no timestamp.
    pub max_timestamp: i64,
    /// Timestamp of its first batch (ms), None when empty.
    pub first_batch_timestamp: Option<i64>,
    /// The `.log` file; read it with its own handle, the log may delete it meanwhile.
    pub log_path: PathBuf,
}

/// A consistent view of a log for one cleaning pass, taken under the log lock.
#[derive(Debug, Clone)]
pub struct CleaningView {
    /// The partition's directory.
    pub dir: PathBuf,
    /// The log's settings.
    pub config: crate::log_config::LogConfig,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Base offset of the active segment, which is never cleaned.
    pub active_base_offset: i64,
    /// Every sealed segment, in offset order.
    pub sealed: Vec<SealedSegment>,
    /// Offsets below this were cleaned by an earlier pass (the cleaner checkpoint,
    /// clamped to `[log_start_offset, active_base_offset]`).
    pub first_dirty_offset: i64,
    /// For every idempotent producer, the last offset of its last batch: Kafka's cleaner
    /// keeps that batch (empty if need be) so that producer state survives cleaning.
    pub producer_last_offsets: std::collections::HashMap<i64, i64>,
    /// The log's truncation count: a replacement planned from this view is refused
    /// after a truncation.
    pub(crate) truncations: u64,
}

/// A segment being written to replace a run of sealed segments; see the module doc.
#[derive(Debug)]
pub struct ReplacementSegment {
    segment: LogSegment,
    scratch: PathBuf,
}

impl ReplacementSegment {
    /// Starts a replacement based at `base_offset` in `<log_dir>/cleaner-scratch/`
    /// (created; a leftover of the same base is overwritten), with an offset-index entry
    /// every `index_interval_bytes`.
    ///
    /// # Errors
    /// I/O errors creating the directory or files.
    pub fn create(
        log_dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<ReplacementSegment, LogError> {
        let scratch = scratch_dir(log_dir)?;
        let segment = LogSegment::open(
            &scratch,
            base_offset,
            index_interval_bytes,
            now_ms,
            SegmentFile::Empty,
        )?;
        Ok(ReplacementSegment { segment, scratch })
    }

    /// Appends complete batches (already holding their final offsets, which must be
    /// above every offset appended before).
    ///
    /// # Errors
    /// [`LogError::Batch`] when a batch fails its framing or CRC; I/O errors.
    pub fn append(&mut self, batches: &[u8]) -> Result<(), LogError> {
        let mut headers = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let size = batch_size_from_prefix(&batches[position..])?;
            let batch = batches.get(position..position + size).ok_or(
                crate::record_batch::BatchError::Truncated {
                    needed: size,
                    available: batches.len() - position,
                },
            )?;
            let header = validate_stored_batch(batch)?;
            if header.base_offset < self.segment.next_offset() {
                return Err(LogError::InvalidOffset(format!(
                    "replacement batch at {} below {}",
                    header.base_offset,
                    self.segment.next_offset()
                )));
            }
            headers.push(header);
            position += size;
        }
        if headers.is_empty() {
            return Ok(());
        }
        self.segment.append(batches, &headers)
    }

    /// First offset the replacement may hold.
    pub fn base_offset(&self) -> i64 {
        self.segment.base_offset()
    }

    /// Offset after its last batch (exclusive).
    pub fn next_offset(&self) -> i64 {
        self.segment.next_offset()
    }

    /// Bytes written so far.
    pub fn size_bytes(&self) -> u64 {
        self.segment.size()
    }

    /// Seals and fsyncs the replacement for a copy elsewhere (the remote tier) instead of
    /// an install here; the caller removes its files with [`SealedReplacement::remove`].
    ///
    /// # Errors
    /// I/O errors sealing or syncing.
    pub fn seal(mut self) -> Result<SealedReplacement, LogError> {
        self.segment.seal()?;
        fsync_dir(&self.scratch)?;
        let segment = &self.segment;
        Ok(SealedReplacement {
            base_offset: segment.base_offset(),
            next_offset: segment.next_offset(),
            size_bytes: segment.size(),
            max_timestamp: segment.max_timestamp(),
            log: segment.log_path().to_path_buf(),
            offset_index: segment.offset_index_path().to_path_buf(),
            time_index: segment.time_index_path().to_path_buf(),
        })
    }

    /// Removes the replacement's files (an aborted pass).
    pub fn discard(self) {
        let ReplacementSegment { segment, .. } = self;
        if let Err(error) = segment.delete() {
            warn!(%error, "removing an abandoned replacement segment failed");
        }
    }

    /// Seals and fsyncs the replacement, returning its base offset and scratch dir.
    fn finish(mut self) -> Result<(i64, PathBuf), LogError> {
        self.segment.seal()?;
        fsync_dir(&self.scratch)?;
        let base_offset = self.segment.base_offset();
        Ok((base_offset, self.scratch))
    }
}

/// A sealed replacement's files in the cleaner's scratch directory.
#[derive(Debug, Clone)]
pub struct SealedReplacement {
    /// The base offset it was created with.
    pub base_offset: i64,
    /// Offset after its last batch (exclusive); the base offset when it holds none.
    pub next_offset: i64,
    /// Bytes of its `.log` file.
    pub size_bytes: u64,
    /// Largest record timestamp (ms), -1 when it holds none.
    pub max_timestamp: i64,
    /// The `.log` file.
    pub log: PathBuf,
    /// The `.index` file.
    pub offset_index: PathBuf,
    /// The `.timeindex` file.
    pub time_index: PathBuf,
}

impl SealedReplacement {
    /// Deletes the files; missing ones are fine.
    pub fn remove(&self) {
        for path in [&self.log, &self.offset_index, &self.time_index] {
            if let Err(error) = remove_if_exists(path) {
                warn!(path = %path.display(), %error, "removing a replacement file failed");
            }
        }
    }
}

/// A path named `file_name` in `<log_dir>/cleaner-scratch/` (created if need be, but
/// never `log_dir` itself: a log deleted meanwhile must not be brought back). Whatever
/// is there when the log is opened again is removed.
///
/// # Errors
/// I/O errors creating the directory (NotFound when the log is gone).
pub fn scratch_path(log_dir: &Path, file_name: &str) -> Result<PathBuf, LogError> {
    Ok(scratch_dir(log_dir)?.join(file_name))
}

fn scratch_dir(log_dir: &Path) -> Result<PathBuf, LogError> {
    let scratch = log_dir.join(CLEANER_SCRATCH_DIR);
    match fs::create_dir(&scratch) {
        Ok(()) => Ok(scratch),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(scratch),
        Err(error) => Err(error.into()),
    }
}

fn log_swap_name(base_offset: i64, end: i64) -> String {
    format!("{base_offset:020}-{end:020}.{LOG_SWAP_SUFFIX}")
}

/// `(base, end)` out of a `<base:020>-<end:020>.log.swap` name.
fn parse_log_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(LOG_SWAP_SUFFIX)?.strip_suffix('.')?;
    let (base, end) = stem.split_once('-')?;
    let digits = |part: &str| part.len() == 20 && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(base) || !digits(end) {
        return None;
    }
    Some((base.parse().ok()?, end.parse().ok()?))
}

fn index_swap_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}.{SWAP_SUFFIX}"))
}

/// Deletes the files of every segment of `dir` based in `[from, to)`.
fn delete_segment_files_in(dir: &Path, from: i64, to: i64) -> Result<(), LogError> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let base = [LOG_FILE_SUFFIX, INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX]
            .iter()
            .find_map(|suffix| parse_offset_file_name(&name, suffix));
        if base.is_some_and(|base| base >= from && base < to) {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// Which step [`install`] stops after, for crash tests: `None` runs them all.
pub(crate) type StopAfter = Option<u8>;

/// Installs `replacement` over the segments based in `[base, end)` (steps 1-4 of the
/// module doc). The caller has dropped those segments' handles.
pub(crate) fn install(
    dir: &Path,
    replacement: ReplacementSegment,
    end: i64,
    stop_after: StopAfter,
) -> Result<(), LogError> {
    let (base, scratch) = replacement.finish()?;
    let stop = |step: u8| stop_after.is_some_and(|stop| stop <= step);
    for suffix in [INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX] {
        fs::rename(
            offset_file_path(&scratch, base, suffix),
            index_swap_path(dir, base, suffix),
        )?;
    }
    if stop(1) {
        return Ok(());
    }
    let log_swap = dir.join(log_swap_name(base, end));
    fs::rename(offset_file_path(&scratch, base, LOG_FILE_SUFFIX), &log_swap)?;
    fsync_dir(dir)?;
    if stop(2) {
        return Ok(());
    }
    finish_swap(dir, base, end, &log_swap, stop_after)
}

/// Steps 3 and 4 for a committed swap.
fn finish_swap(
    dir: &Path,
    base: i64,
    end: i64,
    log_swap: &Path,
    stop_after: StopAfter,
) -> Result<(), LogError> {
    delete_segment_files_in(dir, base, end)?;
    if stop_after.is_some_and(|stop| stop <= 3) {
        return Ok(());
    }
    for suffix in [INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX] {
        let swap = index_swap_path(dir, base, suffix);
        if swap.exists() {
            fs::rename(&swap, offset_file_path(dir, base, suffix))?;
        }
    }
    fs::rename(log_swap, offset_file_path(dir, base, LOG_FILE_SUFFIX))?;
    fsync_dir(dir)?;
    debug!(dir = %dir.display(), base, end, "replaced segments");
    Ok(())
}

/// Finishes or undoes what a crash interrupted (see the module doc): committed swaps
/// are completed, uncommitted leftovers and the scratch directory removed. Runs before
/// the segments are listed.
pub(crate) fn recover_interrupted_swaps(dir: &Path) -> Result<(), LogError> {
    let scratch = dir.join(CLEANER_SCRATCH_DIR);
    if scratch.exists() {
        if fs::read_dir(&scratch)?.next().is_some() {
            info!(dir = %dir.display(), "removing an unfinished cleaner replacement");
        }
        fs::remove_dir_all(&scratch)?;
    }
    let mut committed = Vec::new();
    let mut index_swaps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some((base, end)) = parse_log_swap_name(&name) {
            committed.push((base, end, entry.path()));
        } else if name.ends_with(&format!(".{SWAP_SUFFIX}")) {
            index_swaps.push(entry.path());
        }
    }
    committed.sort_unstable_by_key(|(base, _, _)| *base);
    for (base, end, path) in &committed {
        info!(dir = %dir.display(), base, end, "finishing a segment replacement a crash interrupted");
        finish_swap(dir, *base, *end, path, None)?;
    }
    for path in index_swaps {
        if path.exists() {
            debug!(path = %path.display(), "removing an uncommitted replacement index");
            remove_if_exists(&path)?;
        }
    }
    fsync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip() {
        let name = log_swap_name(42, 1000);
        assert_eq!(name, "00000000000000000042-00000000000000001000.log.swap");
        assert_eq!(parse_log_swap_name(&name), Some((42, 1000)));
        assert_eq!(parse_log_swap_name("00000000000000000042.log"), None);
        assert_eq!(parse_log_swap_name("42-1000.log.swap"), None);
    }
}
