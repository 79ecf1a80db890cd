//! Every checkpoint file of a partition log and how it is written (Kafka's
//! `CheckpointFile`s): the recovery point, the high watermark and the log start offset
//! (`<version>\n<offset>\n`), the clean-shutdown marker, the producer snapshots' file
//! names, and the one atomic-write helper they all use. The leader-epoch checkpoint's
//! format lives with its cache (`leader_epoch_cache`).
//!
//! The recovery-point checkpoint is written off the append path.
//!
//! The recovery point advances when a rolled segment's background fsync is done, and
//! the log learns that on its next append, under the log lock. Writing the checkpoint
//! there renamed a new file over the old one; freeing the old file's block (a
//! synchronous discard on file systems mounted with `discard`) and allocating the new
//! one wait behind whatever the disk is doing: up to 170 ms while other partitions'
//! rolled segments were being fsynced, and every producer of the partition waited
//! with it. Kafka writes this checkpoint from its scheduler
//! (`log.flush.offset.checkpoint.interval.ms`), never from an append; here a
//! background thread writes it as soon as it is asked to.
//!
//! A write requested before a truncation must not land after it: each request carries
//! the log's truncation count, and [`RecoveryCheckpoint::write_now`] (truncation,
//! open, close) records the new count under the same lock the writer holds while
//! writing, so a stale request is dropped. Values only move forward between
//! truncations.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tracing::warn;

use crate::error::LogError;
use crate::segment::parse_offset_file_name;

/// Marker written by [`PartitionLog::close`](crate::log::PartitionLog::close), removed
/// by [`PartitionLog::open`](crate::log::PartitionLog::open).
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// Checkpoint of the log start offset.
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Checkpoint of the offset below which everything is known to be on disk.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// The cleaner checkpoint: offsets below it were cleaned by an earlier pass (Kafka keeps
/// one `cleaner-offset-checkpoint` per log dir; one per partition here, like the high
/// watermark).
pub const CLEANER_OFFSET_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Kafka's leader-epoch checkpoint.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Version line of Kafka's checkpoint files.
pub(crate) const CHECKPOINT_VERSION: i64 = 0;

/// Name of the per-partition high-watermark checkpoint file (Kafka keeps one
/// `replication-offset-checkpoint` per log dir; one file per partition keeps the
/// partition directory self-contained).
pub const HIGH_WATERMARK_CHECKPOINT_FILE: &str = "high-watermark";

/// Suffix of producer state snapshot files (`<offset:020>.snapshot`).
pub const SNAPSHOT_FILE_SUFFIX: &str = "snapshot";

/// The offset in a Kafka offset checkpoint file (version line, offset line); None
/// when the file is missing or not one.
pub(crate) fn read_offset_checkpoint(path: &Path) -> Option<i64> {
    let content = fs::read_to_string(path).ok()?;
    let mut lines = content.lines();
    let version: i64 = lines.next()?.trim().parse().ok()?;
    let offset: i64 = lines.next()?.trim().parse().ok()?;
    (version == CHECKPOINT_VERSION && offset >= 0).then_some(offset)
}

/// Writes a one-offset checkpoint file atomically, with fsyncs.
pub(crate) fn write_offset_checkpoint(path: &Path, offset: i64) -> io::Result<()> {
    write_file_atomically(path, format!("{CHECKPOINT_VERSION}\n{offset}\n").as_bytes())
}

/// [`write_offset_checkpoint`] without fsyncs: for checkpoints where an old or missing
/// file is safe (it only makes recovery scan more).
pub(crate) fn write_offset_checkpoint_unsynced(path: &Path, offset: i64) -> io::Result<()> {
    write_file_replacing(path, format!("{CHECKPOINT_VERSION}\n{offset}\n").as_bytes())
}

/// Reads `<partition dir>/high-watermark`; `None` when missing or unreadable.
pub(crate) fn read_high_watermark_checkpoint(dir: &Path) -> Option<i64> {
    read_offset_checkpoint(&dir.join(HIGH_WATERMARK_CHECKPOINT_FILE))
}

/// Writes the high-watermark checkpoint atomically; call on the blocking pool only.
pub(crate) fn write_high_watermark_checkpoint(dir: &Path, high_watermark: i64) -> io::Result<()> {
    write_offset_checkpoint(&dir.join(HIGH_WATERMARK_CHECKPOINT_FILE), high_watermark)
}

/// Offsets of the `.snapshot` files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut offsets = Vec::new();
    for dir_entry in fs::read_dir(dir)? {
        let file_name = dir_entry?.file_name();
        if let Some(offset) = file_name
            .to_str()
            .and_then(|name| parse_offset_file_name(name, SNAPSHOT_FILE_SUFFIX))
        {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// `<path>.tmp`: where a replacement for `path` is written before the rename.
fn temp_path_for(path: &Path) -> PathBuf {
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".tmp");
    PathBuf::from(temp_name)
}

/// Writes `content` to `path` through a temp file and a rename, without fsyncs:
/// readers see the old or the new file; after a crash the file may be old, missing
/// or empty.
pub(crate) fn write_file_replacing(path: &Path, content: &[u8]) -> io::Result<()> {
    let temp_path = temp_path_for(path);
    fs::write(&temp_path, content)?;
    fs::rename(&temp_path, path)
}

/// Writes `content` to `path` through a temp file, fsyncs, renames and
/// fsyncs the directory, so readers see the old or the new file.
pub fn write_file_atomically(path: &Path, content: &[u8]) -> io::Result<()> {
    let temp_path = temp_path_for(path);
    {
        let mut file = fs::File::create(&temp_path)?;
        file.write_all(content)?;
        file.sync_all()?;
    }
    fs::rename(&temp_path, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Fsyncs a directory, so renames and creations in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
/// What the file holds, and the truncation count it was written under.
#[derive(Debug)]
struct Written {
    /// `i64::MIN` when unknown (a synchronous write failed part-way).
    offset: i64,
    truncations: u64,
    /// Set when the log is closed or its directory deleted: nothing more is written.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// Held while the file is written.
    written: Mutex<Written>,
    /// The latest request not yet taken by the writer: (offset, truncations).
    pending: Mutex<Option<(i64, u64)>>,
    /// Whether a writer thread is running (it takes `pending` until it is empty).
    writing: AtomicBool,
}

/// The recovery-point checkpoint file (`recovery-point`) of one log.
#[derive(Debug, Clone)]
pub struct RecoveryCheckpoint {
    shared: Arc<Shared>,
}

impl RecoveryCheckpoint {
    /// The checkpoint at `path`, written with `offset` under `truncations` already
    /// (by the caller, e.g. at open).
    pub fn new(path: PathBuf, offset: i64, truncations: u64) -> RecoveryCheckpoint {
        RecoveryCheckpoint {
            shared: Arc::new(Shared {
                path,
                written: Mutex::new(Written {
                    offset,
                    truncations,
                    closed: false,
                }),
                pending: Mutex::new(None),
                writing: AtomicBool::new(false),
            }),
        }
    }

    /// Asks for `offset` to be written, in the background, without an fsync (losing
    /// it only means recovering more on restart). Returns at once. The write is
    /// dropped when a truncation counted after `truncations` has been written, or when
    /// the file holds `offset` or more already.
    pub fn request(&self, offset: i64, truncations: u64) {
        *self.shared.pending.lock() = Some((offset, truncations));
        if self.shared.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.shared.clone();
        let name = format!(
            "silt-checkpoint-{}",
            shared
                .path
                .parent()
                .and_then(|dir| dir.file_name())
                .and_then(|name| name.to_str())
                .unwrap_or_default()
        );
        if let Err(error) = crate::background::spawn(name, move || write_pending(&shared)) {
            // No thread: write here rather than lose the checkpoint.
            warn!(%error, "starting the checkpoint writer failed; writing the recovery point inline");
            write_pending(&self.shared);
        }
    }

    /// Writes `offset` now, with an fsync, as the value after truncation number
    /// `truncations`: waits for a background write in progress, and drops requests
    /// made before it.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn write_now(&self, offset: i64, truncations: u64) -> io::Result<()> {
        let mut written = self.shared.written.lock();
        written.truncations = written.truncations.max(truncations);
        // Unknown until the write succeeds, so that a later request may correct it.
        written.offset = i64::MIN;
        write_offset_checkpoint(&self.shared.path, offset)?;
        written.offset = offset;
        Ok(())
    }

    /// The offset the file holds (as far as this process wrote it).
    pub fn written(&self) -> i64 {
        self.shared.written.lock().offset
    }

    /// Waits until every request made so far is written or dropped.
    pub fn wait_idle(&self) {
        while self.shared.writing.load(Ordering::Acquire) || self.shared.pending.lock().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Stops all writes (close, deletion of the log's directory): waits for a write in
    /// progress; requests not yet written, and any made later, are dropped.
    pub fn close(&self) {
        self.shared.written.lock().closed = true;
        self.wait_idle();
    }
}

/// The writer thread: takes requests until none is left, then stops.
fn write_pending(shared: &Shared) {
    loop {
        let request = shared.pending.lock().take();
        let Some((offset, truncations)) = request else {
            shared.writing.store(false, Ordering::Release);
            // A request made between the take and the store found `writing` set and
            // left it to this thread.
            if shared.pending.lock().is_some() && !shared.writing.swap(true, Ordering::AcqRel) {
                continue;
            }
            return;
        };
        let mut written = shared.written.lock();
        if written.closed || truncations != written.truncations || offset <= written.offset {
            continue;
        }
        match write_offset_checkpoint_unsynced(&shared.path, offset) {
            Ok(()) => written.offset = offset,
            Err(error) => {
                warn!(path = %shared.path.display(), %error, "writing the recovery point checkpoint failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &std::path::Path) -> Option<i64> {
        read_offset_checkpoint(path)
    }

    /// A checkpoint in a fresh directory to which 100 was written in the background.
    fn checkpoint_at_100() -> (tempfile::TempDir, std::path::PathBuf, RecoveryCheckpoint) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("recovery-point");
        let checkpoint = RecoveryCheckpoint::new(path.clone(), 0, 0);
        checkpoint.request(100, 0);
        checkpoint.wait_idle();
        assert_eq!(read(&path), Some(100));
        (dir, path, checkpoint)
    }

    #[test]
    fn requests_are_written_in_the_background_and_only_move_forward() {
        let (_dir, path, checkpoint) = checkpoint_at_100();
        checkpoint.request(50, 0);
        checkpoint.wait_idle();
        assert_eq!(read(&path), Some(100), "an older value is not written back");
        for offset in 101..=200 {
            checkpoint.request(offset, 0);
        }
        checkpoint.wait_idle();
        assert_eq!(read(&path), Some(200));
        assert_eq!(checkpoint.written(), 200);
    }

    #[test]
    fn a_request_from_before_a_truncation_is_dropped() {
        let (_dir, path, checkpoint) = checkpoint_at_100();
        // A truncation to 40 (the log's first), then a request computed before it.
        checkpoint.write_now(40, 1).expect("write");
        checkpoint.request(120, 0);
        checkpoint.wait_idle();
        assert_eq!(read(&path), Some(40));
        checkpoint.request(60, 1);
        checkpoint.wait_idle();
        assert_eq!(
            read(&path),
            Some(60),
            "requests after the truncation still count"
        );
    }

    #[test]
    fn nothing_is_written_once_closed() {
        let (dir, path, checkpoint) = checkpoint_at_100();
        checkpoint.close();
        std::fs::remove_file(&path).expect("remove");
        checkpoint.request(200, 0);
        checkpoint.wait_idle();
        assert!(!path.exists(), "a request after close wrote the file");
        assert!(!dir.path().join("recovery-point.tmp").exists());
    }
}
