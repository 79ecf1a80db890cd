//! Disk blocks allocated ahead of appends.
//!
//! With delayed allocation (ext4, XFS) the kernel picks a segment's disk blocks when it
//! writes dirty pages back, holding the inode's block-map lock, and an append into new
//! pages needs that same lock to reserve its blocks. While the disk is busy the
//! allocation waits on block-bitmap reads, so an append, and with it every produce
//! request behind the partition's log lock, stalls for tens of ms. A partition that is
//! written fast therefore keeps blocks allocated ahead of its appends
//! ([`LogSegment::preallocate_ahead`], `fallocate` with `FALLOC_FL_KEEP_SIZE`): appends
//! then land in allocated blocks and writeback has nothing to allocate. The file's length
//! stays the end of its records, and sealing a segment frees what was not used.
//! Redpanda allocates segment space ahead in steps for the same reason.
//!
//! A `fallocate` itself holds the inode lock every append needs, and it too can wait
//! on bitmap reads, so it is done as rarely as possible: a whole step at a time, and
//! for the segment after the active one on a thread of its own ([`Standby`]), on
//! another file, so a roll swaps in a file whose blocks are already allocated.
//!
//! [`LogSegment::preallocate_ahead`]: crate::segment::LogSegment::preallocate_ahead

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Name of the standby file in a partition directory. Not a segment name, so nothing
/// reads it as one; a leftover (after a crash) is removed when the log opens.
pub const STANDBY_FILE_NAME: &str = "next-segment.log.standby";

/// Default of `log.segment.preallocate.bytes`: bytes allocated ahead of a fast
/// partition's appends in one step. The default segment size, so a fast partition's
/// segment is allocated whole, once; never more than the rest of the segment.
pub const DEFAULT_PREALLOCATE_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// A partition appending slower than this (bytes/s) allocates nothing ahead: its
/// appends are too rare to queue behind each other.
const FAST_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
/// Length of the intervals the append rate is measured over.
const RATE_INTERVAL: Duration = Duration::from_millis(100);
/// Intervals in a row above [`FAST_BYTES_PER_SEC`] before a partition counts as fast,
/// so a burst within one interval does not reserve a whole step of disk. Two, not more:
/// a partition that waits longer appends its first hundreds of MB unallocated, and at
/// half a second that cost 80 ms stalls in the first run on a fresh topic.
const SUSTAINED_INTERVALS: u32 = 2;

/// A partition's append rate, and from it how far ahead of its appends to allocate.
#[derive(Debug, Default)]
pub struct AppendRate {
    interval_start: Option<Instant>,
    interval_bytes: u64,
    bytes_per_sec: f64,
    /// Intervals in a row measured above [`FAST_BYTES_PER_SEC`] (kept while the
    /// smoothed rate stays above it).
    fast_intervals: u32,
}

impl AppendRate {
    /// Accounts for `appended` bytes at `now` and returns how many bytes past its
    /// records the active segment should have allocated: `step_bytes` once the partition
    /// has appended faster than [`FAST_BYTES_PER_SEC`] for [`SUSTAINED_INTERVALS`]
    /// intervals in a row, 0 before that and once it is slower. Whole steps
    /// rather than a little at a time, because each `fallocate` may wait on block-bitmap
    /// reads while holding the inode lock appends need: the fewer there are, the fewer
    /// stalls. The rate follows a rise at once and halves its distance to a lower rate
    /// every interval, so one quiet interval does not stop the allocation ahead.
    pub fn ahead_bytes(&mut self, appended: u64, now: Instant, step_bytes: u64) -> u64 {
        let start = *self.interval_start.get_or_insert(now);
        self.interval_bytes += appended;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_INTERVAL {
            let rate = self.interval_bytes as f64 / elapsed.as_secs_f64();
            self.bytes_per_sec = if rate >= self.bytes_per_sec {
                rate
            } else {
                (self.bytes_per_sec + rate) / 2.0
            };
            self.fast_intervals = if rate >= FAST_BYTES_PER_SEC {
                self.fast_intervals.saturating_add(1)
            } else if self.bytes_per_sec >= FAST_BYTES_PER_SEC {
                self.fast_intervals
            } else {
                0
            };
            self.interval_start = Some(now);
            self.interval_bytes = 0;
        }
        if self.bytes_per_sec < FAST_BYTES_PER_SEC || self.fast_intervals < SUSTAINED_INTERVALS {
            0
        } else {
            step_bytes
        }
    }
}

/// The next segment's `.log` file being allocated on its own thread: an empty file
/// with `bytes` of disk blocks allocated past its end (`FALLOC_FL_KEEP_SIZE`).
#[derive(Debug)]
pub struct Standby {
    path: PathBuf,
    bytes: u64,
    thread: JoinHandle<io::Result<()>>,
}

impl Standby {
    /// Starts allocating [`STANDBY_FILE_NAME`] in `dir` with `bytes` of blocks, on a
    /// thread named `thread_name`.
    ///
    /// # Errors
    /// The thread could not start.
    pub fn prepare(dir: &Path, bytes: u64, thread_name: String) -> io::Result<Standby> {
        let path = dir.join(STANDBY_FILE_NAME);
        let file_path = path.clone();
        let thread = crate::background::spawn(thread_name, move || {
            let file = File::create(&file_path)?;
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, bytes)
                .map_err(io::Error::from)
        })?;
        Ok(Standby {
            path,
            bytes,
            thread,
        })
    }

    /// Whether the allocation is done (or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the allocation and returns the file's path and its allocated bytes.
    ///
    /// # Errors
    /// The file could not be created or allocated (`EOPNOTSUPP` without `fallocate`);
    /// the file is removed then.
    pub fn finish(self) -> io::Result<(PathBuf, u64)> {
        let outcome = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("standby allocation thread panicked")));
        match outcome {
            Ok(()) => Ok((self.path, self.bytes)),
            Err(error) => {
                let _removed = std::fs::remove_file(&self.path);
                Err(error)
            }
        }
    }

    /// Waits for the allocation and removes the file (the log is closing).
    ///
    /// # Errors
    /// The removal failed.
    pub fn discard(self) -> io::Result<()> {
        let path = self.path.clone();
        let _outcome = self.finish();
        crate::checkpoint::remove_if_exists(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_ahead_follows_the_append_rate() {
        let mut rate = AppendRate::default();
        let start = Instant::now();
        let max = 64 * 1024 * 1024;
        // 1 KiB every ms: about 1 MB/s, too slow to allocate ahead.
        for ms in 0..=200u64 {
            assert_eq!(
                rate.ahead_bytes(1024, start + Duration::from_millis(ms), max),
                0
            );
        }
        // 40 MB/s: nothing until it has lasted two intervals, then a whole step.
        for ms in 201..=350u64 {
            assert_eq!(
                rate.ahead_bytes(40_000, start + Duration::from_millis(ms), max),
                0,
                "at {ms} ms"
            );
        }
        let mut ahead = 0;
        for ms in 351..=800u64 {
            ahead = rate.ahead_bytes(40_000, start + Duration::from_millis(ms), max);
        }
        assert_eq!(ahead, max);
        // Going quiet decays the allocation ahead instead of dropping it at once.
        let after_pause = rate.ahead_bytes(0, start + Duration::from_millis(1_100), max);
        assert_eq!(after_pause, max);
        let mut later = after_pause;
        for step in 1..=20u64 {
            later = rate.ahead_bytes(0, start + Duration::from_millis(1_100 + 100 * step), max);
        }
        assert_eq!(later, 0);
        // A burst within one interval earns nothing.
        let mut burst = AppendRate::default();
        for ms in 0..=150u64 {
            assert_eq!(
                burst.ahead_bytes(100_000, start + Duration::from_millis(ms), max),
                0
            );
        }
    }
}
