//! Writeback of appended data started as it is written, not in the kernel's bursts.
//!
//! Left alone, Linux lets dirty pages pile up until they pass
//! `vm.dirty_background_ratio` (10% of memory, gigabytes here) or age past 30 s, and
//! then its flusher writes them back in one long burst. On a small machine that burst
//! takes a whole CPU for tens of ms at a time, and every produce request waits for the
//! broker threads it displaced. So a partition asks for writeback of each
//! `log.writeback.interval.bytes` it appends (`sync_file_range` with
//! `SYNC_FILE_RANGE_WRITE`: start the writes, wait for nothing, no fsync), on a thread
//! of its own: the same writes happen, spread evenly at the rate the data comes in, and
//! dirty pages stay a few MiB per partition. RocksDB's `bytes_per_sync` does the same.
//!
//! This is not durability: the pages reach the disk sooner, but nothing waits for them
//! and no cache flush is issued; `log.flush.*` still decides what is fsynced.
//!
//! The same thread also drops appended pages from the page cache once they are
//! `log.writeback.drop.behind.bytes` behind the end of the log
//! (`posix_fadvise(POSIX_FADV_DONTNEED)`; their writeback was started a window
//! earlier, so they are clean). The window reaches back across rolls into the segments
//! before the active one: a rolled segment's last pages go once the new segment has
//! grown past them, rather than staying cached until reclaim (with 256 MiB segments,
//! whole sealed segments stayed cached, and late runs of the latency benchmark slowed
//! down as the cache grew). Left in the cache, every appended page is a new page:
//! once memory is full each one is found by reclaim, at times directly in the
//! appending thread, and on a VM whose free memory went back to the host each one is
//! first touched at a host page fault (profiles showed the copy into the page cache
//! taking 30% of both CPUs instead of 2%). Dropping them keeps the log's cache a fixed
//! size, and new appends reuse the pages just freed. Consumers within the window read
//! from the cache; one further behind reads from disk with the kernel's read-ahead,
//! as from any bounded broker cache. 0 keeps every page, as Kafka does.

use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use tracing::warn;

/// Default of `log.writeback.interval.bytes`: bytes appended to a segment between two
/// writeback requests.
pub const DEFAULT_WRITEBACK_INTERVAL_BYTES: u64 = 4 * 1024 * 1024;

/// Default of `log.writeback.drop.behind.bytes`: appended bytes per partition left in
/// the page cache behind the end of its log.
pub const DEFAULT_DROP_BEHIND_BYTES: u64 = 256 * 1024 * 1024;

/// Writeback settings of a log (broker settings `log.writeback.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritebackConfig {
    /// `log.writeback.interval.bytes`: bytes appended to a segment between two
    /// writeback requests; 0 leaves writeback to the kernel (and turns dropping off).
    pub interval_bytes: u64,
    /// `log.writeback.drop.behind.bytes`: appended bytes behind the end of the log
    /// (across rolls) that stay in the page cache; older ones are dropped once written
    /// back. 0 keeps every page.
    pub drop_behind_bytes: u64,
}

impl Default for WritebackConfig {
    fn default() -> Self {
        WritebackConfig {
            interval_bytes: DEFAULT_WRITEBACK_INTERVAL_BYTES,
            drop_behind_bytes: DEFAULT_DROP_BEHIND_BYTES,
        }
    }
}

/// Requests waiting for the writeback thread; more are dropped (the kernel writes those
/// pages back in its own time).
const QUEUE_DEPTH: usize = 256;

/// Writeback is requested up to page boundaries, so the page appends are filling is
/// left alone.
const PAGE_BYTES: u64 = 4096;

/// Segments rolled away from that the window may still reach into; an older one is
/// forgotten (its pages left to reclaim), which only happens with segments smaller than
/// a sixteenth of the window.
const MAX_PREVIOUS_SEGMENTS: usize = 16;

/// One range of a segment file to write back, bytes `[start, end)`, and the ranges of
/// this and earlier segments to drop from the page cache (none when nothing is due).
#[derive(Debug)]
struct Request {
    file: Arc<File>,
    start: u64,
    end: u64,
    drops: Vec<(Arc<File>, Range<u64>)>,
}

/// What an append makes due for dropping: the ranges, and the new `dropped_to` of the
/// active segment and of each earlier one (oldest first), to keep once they are queued.
#[derive(Debug)]
struct DueDrops {
    drops: Vec<(Arc<File>, Range<u64>)>,
    active_dropped_to: u64,
    previous_dropped_to: Vec<u64>,
}

/// A segment the log rolled away from whose pages are not all dropped yet.
#[derive(Debug)]
struct PreviousSegment {
    /// None for a segment too short for any request: it has nothing to drop, but its
    /// bytes count towards the window.
    file: Option<Arc<File>>,
    /// Its length in bytes when the log rolled.
    size: u64,
    /// Its bytes below this position were handed over to be dropped.
    dropped_to: u64,
}

/// When the active segment of one partition next needs writeback.
#[derive(Debug)]
pub struct WritebackState {
    interval_bytes: u64,
    drop_behind_bytes: u64,
    /// A shared handle on the active segment's `.log` file, opened with the first
    /// request.
    file: Option<Arc<File>>,
    /// Writeback was requested for the segment's bytes below this position.
    requested_to: u64,
    /// The segment's bytes below this position were handed over to be dropped from
    /// the page cache.
    dropped_to: u64,
    /// Base offset of the active segment at the last append.
    base_offset: Option<i64>,
    /// The active segment's length at the last append.
    size: u64,
    /// Earlier segments the window still reaches into, oldest first.
    previous: VecDeque<PreviousSegment>,
}

impl WritebackState {
    /// Writeback every `config.interval_bytes` (> 0) appended to a segment, and
    /// dropping of pages `config.drop_behind_bytes` behind the log's end.
    pub fn new(config: WritebackConfig) -> WritebackState {
        WritebackState {
            interval_bytes: config.interval_bytes,
            drop_behind_bytes: config.drop_behind_bytes,
            file: None,
            requested_to: 0,
            dropped_to: 0,
            base_offset: None,
            size: 0,
            previous: VecDeque::new(),
        }
    }

    /// Forgets the active segment and the earlier ones: after a truncation the active
    /// one may be a new file under the same base offset, or shorter than the last
    /// request, and earlier ones may be gone.
    pub fn reset(&mut self) {
        self.start_segment();
        self.base_offset = None;
        self.previous.clear();
    }

    /// Starts over on a new active segment; the one before it (when it was written to
    /// at all) joins the segments the window may reach into.
    fn start_segment(&mut self) {
        let file = self.file.take();
        if self.drop_behind_bytes > 0 && self.size > 0 {
            self.previous.push_back(PreviousSegment {
                file,
                size: self.size,
                dropped_to: self.dropped_to,
            });
            if self.previous.len() > MAX_PREVIOUS_SEGMENTS {
                let _forgotten = self.previous.pop_front();
            }
        }
        self.requested_to = 0;
        self.dropped_to = 0;
        self.size = 0;
    }

    /// The ranges due to be dropped once the active segment's whole pages end at `end`:
    /// everything more than `drop_behind_bytes` behind it, counted back across the
    /// earlier segments, not handed over before.
    fn due_drops(&self, file: &Arc<File>, end: u64) -> DueDrops {
        let mut drops = Vec::new();
        let mut previous_dropped: Vec<u64> = self
            .previous
            .iter()
            .map(|segment| segment.dropped_to)
            .collect();
        if self.drop_behind_bytes == 0 {
            return DueDrops {
                drops,
                active_dropped_to: self.dropped_to,
                previous_dropped_to: previous_dropped,
            };
        }
        let behind = end.saturating_sub(self.drop_behind_bytes);
        let active_dropped = page_floor(behind).max(self.dropped_to);
        if active_dropped > self.dropped_to {
            drops.push((Arc::clone(file), self.dropped_to..active_dropped));
        }
        // How far the window reaches back past the active segment's start.
        let mut reach = self.drop_behind_bytes.saturating_sub(end);
        for (segment, dropped) in self.previous.iter().zip(previous_dropped.iter_mut()).rev() {
            let keep_from = if reach == 0 {
                // The whole file, its last partial page too.
                page_ceil(segment.size)
            } else {
                page_floor(segment.size.saturating_sub(reach))
            };
            if keep_from > *dropped {
                if let Some(file) = &segment.file {
                    drops.push((Arc::clone(file), *dropped..keep_from));
                }
                *dropped = keep_from;
            }
            reach = reach.saturating_sub(segment.size);
        }
        DueDrops {
            drops,
            active_dropped_to: active_dropped,
            previous_dropped_to: previous_dropped,
        }
    }

    /// After an append: once the active segment `base_offset` holds `size` bytes, at
    /// least `interval_bytes` of them past the last request, queues writeback of those
    /// bytes (up to the last whole page), with dropping of the whole pages more than
    /// `drop_behind_bytes` behind `size` not yet dropped (in this segment and, when the
    /// window reaches back past its start, in the segments before it), and returns
    /// true. A new `base_offset` means the log rolled. `open_file` gives a handle on the
    /// segment's `.log` file the first time a segment is seen.
    ///
    /// # Errors
    /// Only `open_file`'s; nothing is queued then.
    pub fn after_append(
        &mut self,
        base_offset: i64,
        size: u64,
        open_file: impl FnOnce() -> std::io::Result<File>,
    ) -> std::io::Result<bool> {
        if self.base_offset != Some(base_offset) {
            self.start_segment();
            self.base_offset = Some(base_offset);
        }
        self.size = size;
        let end = page_floor(size);
        if end < self.requested_to + self.interval_bytes {
            return Ok(false);
        }
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => {
                let file = Arc::new(open_file()?);
                self.file = Some(Arc::clone(&file));
                file
            }
        };
        let due = self.due_drops(&file, end);
        let request = Request {
            file,
            start: self.requested_to,
            end,
            drops: due.drops,
        };
        self.requested_to = end;
        match writeback_queue().try_send(request) {
            Ok(()) => {
                self.dropped_to = due.active_dropped_to;
                for (segment, dropped) in self.previous.iter_mut().zip(due.previous_dropped_to) {
                    segment.dropped_to = dropped;
                }
                self.previous
                    .retain(|segment| segment.dropped_to < page_ceil(segment.size));
                Ok(true)
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!("silt_log_writeback_dropped_total").increment(1);
                Ok(false)
            }
        }
    }
}

/// `bytes` rounded down to a whole page.
fn page_floor(bytes: u64) -> u64 {
    bytes - bytes % PAGE_BYTES
}

/// `bytes` rounded up to a whole page.
fn page_ceil(bytes: u64) -> u64 {
    page_floor(bytes + PAGE_BYTES - 1)
}

/// The queue of the broker's one writeback thread, started on first use.
fn writeback_queue() -> &'static SyncSender<Request> {
    static QUEUE: OnceLock<SyncSender<Request>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = mpsc::sync_channel::<Request>(QUEUE_DEPTH);
        let started = crate::background::spawn("silt-writeback".to_string(), move || {
            let mut warned = false;
            for request in receiver {
                for (file, range) in &request.drops {
                    match drop_cached(file, range) {
                        Ok(()) => metrics::counter!("silt_log_page_cache_dropped_bytes_total").increment(range.end - range.start),
                        Err(_) => metrics::counter!("silt_log_page_cache_drop_errors_total").increment(1),
                    }
                }
                match start_writeback(&request.file, request.start, request.end - request.start) {
                    Ok(()) => metrics::counter!("silt_log_writeback_bytes_total").increment(request.end - request.start),
                    Err(error) => {
                        metrics::counter!("silt_log_writeback_errors_total").increment(1);
                        if !warned {
                            warn!(%error, "starting writeback of segment data failed; the kernel writes it back later");
                            warned = true;
                        }
                    }
                }
            }
        });
        if let Err(error) = started {
            warn!(%error, "could not start the writeback thread; the kernel writes segment data back on its own");
        }
        sender
    })
}

/// `sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE)` (Linux): starts writeback
/// of the dirty pages in the range and returns without waiting for it (it can wait for
/// room in the device's queue).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: the descriptor stays open for the call (we hold `file`), and the call
    // takes no pointers.
    let result = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `posix_fadvise(fd, start, len, POSIX_FADV_DONTNEED)`: on Linux this starts
/// writeback of any dirty page in the range (without waiting) and evicts the clean,
/// unmapped pages not under writeback; the others stay cached until reclaim finds
/// them. Nothing is lost either way: only cached copies of written data go.
#[cfg(target_os = "linux")]
fn drop_cached(file: &File, range: &Range<u64>) -> std::io::Result<()> {
    let len = std::num::NonZeroU64::new(range.end - range.start);
    rustix::fs::fadvise(file, range.start, len, rustix::fs::Advice::DontNeed)
        .map_err(std::io::Error::from)
}

/// Elsewhere the page cache is left to the kernel.
#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &File, _range: &Range<u64>) -> std::io::Result<()> {
    Ok(())
}

/// Elsewhere the kernel's own writeback is all there is.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_interval_and_restart_with_each_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, vec![7u8; 64 * 1024]).expect("write");
        let open = || File::open(&path);
        let mut state = WritebackState::new(WritebackConfig {
            interval_bytes: 16 * 1024,
            drop_behind_bytes: 0,
        });
        assert!(!state.after_append(0, 10_000, open).expect("append"));
        // 20,000 bytes hold four whole pages: 16 KiB is due.
        assert!(state.after_append(0, 20_000, open).expect("append"));
        assert_eq!(state.requested_to, 16 * 1024);
        assert!(!state.after_append(0, 30_000, open).expect("append"));
        assert!(state.after_append(0, 40_000, open).expect("append"));
        assert_eq!(state.requested_to, 36_864);
        // A new active segment starts from its own beginning.
        assert!(!state.after_append(50, 8_000, open).expect("append"));
        assert_eq!(state.requested_to, 0);
        assert!(state.after_append(50, 17_000, open).expect("append"));
        assert_eq!(state.base_offset, Some(50));
        assert!(state.file.is_some());
        // After a truncation the same base offset starts over.
        state.reset();
        assert!(!state.after_append(50, 10_000, open).expect("append"));
        assert_eq!(state.requested_to, 0);
    }

    #[test]
    fn pages_are_dropped_a_window_behind_the_end_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, vec![7u8; 256 * 1024]).expect("write");
        let open = || File::open(&path);
        let mut state = WritebackState::new(WritebackConfig {
            interval_bytes: 16 * 1024,
            drop_behind_bytes: 40 * 1024,
        });
        // Nothing is 40 KiB behind the end yet.
        assert!(state.after_append(0, 16 * 1024, open).expect("append"));
        assert!(state.after_append(0, 32 * 1024, open).expect("append"));
        assert_eq!(state.dropped_to, 0);
        // 50,000 bytes hold 48 KiB of whole pages: the pages below 48 - 40 = 8 KiB are due.
        assert!(state.after_append(0, 50_000, open).expect("append"));
        assert_eq!(state.dropped_to, 8 * 1024);
        assert!(state.after_append(0, 100_000, open).expect("append"));
        assert_eq!(state.dropped_to, 57_344);
        // No request, nothing more dropped; a new segment starts from 0.
        assert!(!state.after_append(0, 101_000, open).expect("append"));
        assert_eq!(state.dropped_to, 57_344);
        assert!(state.after_append(9, 20_000, open).expect("append"));
        assert_eq!(state.dropped_to, 0);
    }

    #[test]
    fn the_window_reaches_back_into_the_segments_before_a_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<_> = (0..3)
            .map(|index| dir.path().join(format!("{index:020}.log")))
            .collect();
        for path in &paths {
            std::fs::write(path, vec![5u8; 128 * 1024]).expect("write");
        }
        let mut state = WritebackState::new(WritebackConfig {
            interval_bytes: 16 * 1024,
            drop_behind_bytes: 40 * 1024,
        });
        assert!(
            state
                .after_append(0, 100_000, || File::open(&paths[0]))
                .expect("append")
        );
        assert_eq!(state.dropped_to, 57_344);
        // Rolled: 16 KiB in the new segment, so the window keeps the last 24 KiB of the
        // old one; its pages below 100,000 - 24,576 (rounded down) are due.
        assert!(
            state
                .after_append(9, 20_000, || File::open(&paths[1]))
                .expect("append")
        );
        assert_eq!(state.dropped_to, 0);
        assert_eq!(state.previous.len(), 1);
        assert_eq!(state.previous[0].size, 100_000);
        assert_eq!(state.previous[0].dropped_to, 73_728);
        // A segment too small for any request still counts towards the window.
        assert!(
            !state
                .after_append(20, 8_192, || File::open(&paths[2]))
                .expect("append")
        );
        assert_eq!(state.previous.len(), 2);
        assert!(
            state
                .after_append(30, 36_864, || File::open(&paths[2]))
                .expect("append")
        );
        // 36 KiB in the active segment leaves 4 KiB of the window for the 8 KiB one
        // before it; the two older segments go entirely (their last partial pages too)
        // and are forgotten.
        assert_eq!(state.previous.len(), 1);
        assert!(state.previous[0].file.is_none());
        assert_eq!(state.previous[0].dropped_to, 4_096);
        // Once the active segment alone fills the window, the short one is forgotten.
        assert!(
            state
                .after_append(30, 60_000, || File::open(&paths[2]))
                .expect("append")
        );
        assert_eq!(state.dropped_to, 16_384);
        assert!(state.previous.is_empty());
        // A truncation forgets the earlier segments.
        assert!(
            state
                .after_append(40, 20_000, || File::open(&paths[0]))
                .expect("append")
        );
        assert_eq!(state.previous.len(), 1);
        state.reset();
        assert!(state.previous.is_empty());
    }

    #[test]
    fn dropping_cached_pages_of_a_written_range_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment.log");
        std::fs::write(&path, vec![3u8; 64 * 1024]).expect("write");
        let file = File::open(&path).expect("open");
        drop_cached(&file, &(0..64 * 1024)).expect("drop a written range");
        drop_cached(&file, &(4096..(1 << 30))).expect("a range past the end is fine");
        assert_eq!(std::fs::read(&path).expect("read"), vec![3u8; 64 * 1024]);
    }

    #[test]
    fn writeback_of_written_and_unwritten_ranges_succeeds_and_an_offset_past_i64_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment.log");
        std::fs::write(&path, vec![1u8; 256 * 1024]).expect("write");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        start_writeback(&file, 0, 128 * 1024).expect("writeback of written pages");
        start_writeback(&file, 128 * 1024, 1 << 30).expect("a range past the end is fine");
        if cfg!(target_os = "linux") {
            let bad = start_writeback(&file, u64::MAX, 1);
            assert_eq!(
                bad.map_err(|error| error.kind()),
                Err(std::io::ErrorKind::InvalidInput)
            );
        }
    }

    #[test]
    fn a_file_that_cannot_open_queues_nothing() {
        let mut state = WritebackState::new(WritebackConfig {
            interval_bytes: 4096,
            drop_behind_bytes: 8192,
        });
        let failed = state.after_append(0, 1 << 20, || {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        });
        assert!(failed.is_err());
        assert!(state.file.is_none());
    }
}
