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

/// How far ahead of a partition's appends blocks are allocated, in time at its rate.
const LEAD: Duration = Duration::from_millis(500);
/// Less than this much (bytes) ahead is not worth a `fallocate`: the partition is slow.
const MIN_AHEAD_BYTES: u64 = 1024 * 1024;
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
    /// records the active segment should have allocated: [`LEAD`] worth at the current rate, at most
    /// `max_ahead_bytes`, or 0 while the partition is slow. The rate follows a rise at
    /// once and halves its distance to a lower rate every interval, so one quiet interval
    /// does not drop the allocation ahead.
    pub fn ahead_bytes(&mut self, appended: u64, now: Instant, max_ahead_bytes: u64) -> u64 {
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
        let ahead = (self.bytes_per_sec * LEAD.as_secs_f64()) as u64;
        if ahead < MIN_AHEAD_BYTES {
            0
        } else {
            ahead.min(max_ahead_bytes)
        }
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
        // 40 MB/s: half a second of it.
        let mut ahead = 0;
        for ms in 201..=400u64 {
            ahead = rate.ahead_bytes(40_000, start + Duration::from_millis(ms), max);
        }
        assert!((19_000_000..=21_000_000).contains(&ahead), "{ahead}");
        // 1 GB/s is capped.
        for ms in 401..=600u64 {
            ahead = rate.ahead_bytes(1_000_000, start + Duration::from_millis(ms), max);
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
