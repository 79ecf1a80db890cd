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
//! [`LogSegment::preallocate_ahead`]: crate::segment::LogSegment::preallocate_ahead

use std::time::{Duration, Instant};

/// Default of `log.segment.preallocate.bytes`: the most bytes allocated ahead of one
/// partition's appends.
pub const DEFAULT_PREALLOCATE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A partition appending slower than this (bytes/s) allocates nothing ahead: its
/// appends are too rare to queue behind each other.
const FAST_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
/// Length of the intervals the append rate is measured over.
const RATE_INTERVAL: Duration = Duration::from_millis(100);

/// A partition's append rate, and from it how far ahead of its appends to allocate.
#[derive(Debug, Default)]
pub struct AppendRate {
    interval_start: Option<Instant>,
    interval_bytes: u64,
    bytes_per_sec: f64,
}

impl AppendRate {
    /// Accounts for `appended` bytes at `now` and returns how many bytes past its
    /// records the active segment should have allocated: `step_bytes` once the partition
    /// appends faster than [`FAST_BYTES_PER_SEC`], 0 while it is slower. Whole steps
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
            self.interval_start = Some(now);
            self.interval_bytes = 0;
        }
        if self.bytes_per_sec < FAST_BYTES_PER_SEC { 0 } else { step_bytes }
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
            assert_eq!(rate.ahead_bytes(1024, start + Duration::from_millis(ms), max), 0);
        }
        // 40 MB/s: a whole step.
        let mut ahead = 0;
        for ms in 201..=400u64 {
            ahead = rate.ahead_bytes(40_000, start + Duration::from_millis(ms), max);
        }
        assert_eq!(ahead, max);
        // Going quiet decays the allocation ahead instead of dropping it at once.
        let after_pause = rate.ahead_bytes(0, start + Duration::from_millis(700), max);
        assert!(after_pause > 0 && after_pause <= max, "{after_pause}");
        let mut later = after_pause;
        for step in 1..=20u64 {
            later = rate.ahead_bytes(0, start + Duration::from_millis(700 + 100 * step), max);
        }
        assert_eq!(later, 0);
    }
}
