//! Filling the page cache ahead of appends.
//!
//! An append that writes past the pages already in the page cache makes the kernel
//! allocate and zero every new page inside the `pwrite`, and when memory is full, reclaim
//! others first. On a busy machine (more so on a VM whose host backs guest memory on first
//! touch) that is most of the append's time, and it sits on the produce path. Instead, a
//! partition that is being written fast keeps zero-filled room past its active segment's
//! records ([`LogSegment::extend_ahead`]) and one thread reads that room, so its pages
//! exist before appends reach them and an append is a copy into cached pages. The room
//! is sparse (no disk blocks), its pages stay clean (nothing is written back), and it is
//! cut off when the segment is sealed; after a crash, recovery trims it.
//!
//! [`LogSegment::extend_ahead`]: crate::segment::LogSegment::extend_ahead

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::segment::PrefaultRange;

/// Default of `log.segment.prefault.bytes`: the most room kept ahead of one partition's
/// appends (bytes).
pub const DEFAULT_PREFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How far ahead of a partition's appends the room reaches, in time at its append rate.
const LEAD: Duration = Duration::from_millis(500);
/// Below this much room (bytes) the partition is slow enough that appends allocate their
/// pages themselves.
const MIN_AHEAD_BYTES: u64 = 1024 * 1024;
/// Length of the intervals the append rate is measured over.
const RATE_INTERVAL: Duration = Duration::from_millis(100);
/// Ranges waiting for the prefault thread; more are dropped (appends then allocate).
const QUEUE_LEN: usize = 256;
/// Read size of the prefault thread (bytes).
const READ_BYTES: usize = 256 * 1024;

/// Handle on the broker's prefault thread; cheap to clone, one per partition log.
/// The thread stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Prefaulter {
    sender: SyncSender<PrefaultRange>,
    max_ahead_bytes: u64,
}

impl Prefaulter {
    /// Starts the prefault thread; each partition keeps at most `max_ahead_bytes` of room.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(max_ahead_bytes: u64) -> io::Result<Prefaulter> {
        let (sender, receiver) = sync_channel(QUEUE_LEN);
        let _thread = std::thread::Builder::new()
            .name("silt-prefault".to_string())
            .spawn(move || run(&receiver))?;
        Ok(Prefaulter { sender, max_ahead_bytes })
    }

    /// The most room one partition keeps ahead of its appends (bytes).
    pub fn max_ahead_bytes(&self) -> u64 {
        self.max_ahead_bytes
    }

    /// Queues `range` for the prefault thread; drops it when the queue is full.
    pub fn submit(&self, range: PrefaultRange) {
        match self.sender.try_send(range) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("silt_log_prefault_dropped_total").increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {
                warn!("the prefault thread has stopped");
            }
        }
    }
}

fn run(receiver: &Receiver<PrefaultRange>) {
    let mut buf = vec![0u8; READ_BYTES];
    while let Ok(range) = receiver.recv() {
        match fill(&range, &mut buf) {
            Ok(bytes) => metrics::counter!("silt_log_prefaulted_bytes_total").increment(bytes),
            Err(error) => debug!(%error, "prefaulting a segment failed"),
        }
    }
}

/// Reads `range` so the kernel creates its page cache pages; stops early where the file
/// ends (the segment was sealed or truncated meanwhile). Returns the bytes read.
fn fill(range: &PrefaultRange, buf: &mut [u8]) -> io::Result<u64> {
    let mut at = range.start;
    while at < range.end {
        let want = (range.end - at).min(buf.len() as u64) as usize;
        match range.file.read_at(&mut buf[..want], at) {
            Ok(0) => break,
            Ok(read) => at += read as u64,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(at - range.start)
}

/// A partition's append rate, and from it the room to keep ahead of its appends.
#[derive(Debug, Default)]
pub struct AppendRate {
    interval_start: Option<Instant>,
    interval_bytes: u64,
    bytes_per_sec: f64,
}

impl AppendRate {
    /// Accounts for `appended` bytes at `now` and returns the room (bytes) the active
    /// segment should keep past its records: [`LEAD`] worth at the current rate, at most
    /// `max_ahead_bytes`, or 0 while the partition is slow. The rate follows a rise at
    /// once and halves its distance to a lower rate every interval, so one quiet interval
    /// does not drop the room.
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
    fn room_follows_the_append_rate() {
        let mut rate = AppendRate::default();
        let start = Instant::now();
        let max = 64 * 1024 * 1024;
        // 1 KiB every ms: about 1 MB/s, too slow for room.
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
        // Going quiet decays the room instead of dropping it at once.
        let after_pause = rate.ahead_bytes(0, start + Duration::from_millis(700), max);
        assert!(after_pause > 0 && after_pause <= max, "{after_pause}");
        let mut later = after_pause;
        for step in 1..=20u64 {
            later = rate.ahead_bytes(0, start + Duration::from_millis(700 + 100 * step), max);
        }
        assert_eq!(later, 0);
    }
}
