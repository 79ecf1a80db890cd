//! Writeback of appended data and dropping it from the page cache behind the end of
//! the log, across rolls: pages far enough behind leave the cache once written back, the
//! log's cache stays the window's size, and every record still reads back (from disk).
//! Residency is measured with `fincore` (util-linux).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use silt_broker::log::PartitionLog;
use silt_broker::test_util::{BatchSpec, offsets_and_values, open, small_segments};
use silt_broker::writeback::WritebackConfig;

const RECORDS_PER_BATCH: usize = 4;
const VALUE_BYTES: usize = 16 * 1024;
const BATCHES: i64 = 160;
const INTERVAL: u64 = 256 * 1024;
const DROP_BEHIND: u64 = 1024 * 1024;

fn spec(index: i64) -> BatchSpec {
    BatchSpec::new(RECORDS_PER_BATCH, 1_000 + index)
        .value_size(VALUE_BYTES)
        .tag(&format!("w{index}"))
}

/// Appends `BATCHES` batches of 64 KiB (10 MiB) to one segment, fsyncing every 8 so
/// that what is dropped is clean by then; returns the log and its segment file.
fn written_log(dir: &Path, writeback: WritebackConfig) -> (PartitionLog, std::path::PathBuf) {
    let log = written_log_in_segments(dir, writeback, 64 * 1024 * 1024);
    (log, dir.join(format!("{:020}.log", 0)))
}

/// [`written_log`] with segments of `segment_bytes`.
fn written_log_in_segments(
    dir: &Path,
    writeback: WritebackConfig,
    segment_bytes: u64,
) -> PartitionLog {
    let mut log = open(dir, small_segments(segment_bytes));
    log.set_writeback(writeback);
    for index in 0..BATCHES {
        let _info = log
            .append_as_leader(&spec(index).encode(), 0, 5_000)
            .expect("append");
        if index % 8 == 7 {
            log.flush().expect("flush");
        }
    }
    log.flush().expect("flush");
    log
}

/// Bytes of `path` in the page cache.
fn resident_bytes(path: &Path) -> u64 {
    let output = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(output.status.success(), "fincore failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore printed {output:?}"))
}

fn expected() -> Vec<(i64, Vec<u8>)> {
    silt_broker::test_util::expected_values(BATCHES, spec)
}

#[test]
fn pages_behind_the_window_leave_the_cache_and_every_record_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, segment) = written_log(
        dir.path(),
        WritebackConfig {
            interval_bytes: INTERVAL,
            drop_behind_bytes: DROP_BEHIND,
        },
    );
    let size = std::fs::metadata(&segment).expect("segment").len();
    assert!(size > 10 * 1024 * 1024, "segment holds {size} bytes");
    // The window, the interval the last request may have left, and one batch of
    // rounding; far below the 10 MiB written.
    let bound = DROP_BEHIND + 2 * INTERVAL + 64 * 1024;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut resident = resident_bytes(&segment);
    while resident > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        resident = resident_bytes(&segment);
    }
    assert!(
        resident <= bound,
        "{resident} of {size} bytes still cached; at most {bound} expected"
    );
    // Dropping cached copies loses nothing: every record reads back, in order.
    assert_eq!(offsets_and_values(&log, 1024 * 1024), expected());
}

#[test]
fn the_window_spans_rolls_so_rolled_segments_do_not_stay_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 10 MiB in segments of 1.5 MiB: without the window reaching back, every rolled
    // segment would keep its last 1 MiB cached.
    let log = written_log_in_segments(
        dir.path(),
        WritebackConfig {
            interval_bytes: INTERVAL,
            drop_behind_bytes: DROP_BEHIND,
        },
        3 * 512 * 1024,
    );
    assert!(log.segment_count() >= 6, "{} segments", log.segment_count());
    let segments: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    let bound = DROP_BEHIND + 2 * INTERVAL + 64 * 1024;
    let cached = || {
        segments
            .iter()
            .map(|path| resident_bytes(path))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut resident = cached();
    while resident > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        resident = cached();
    }
    assert!(
        resident <= bound,
        "{resident} bytes of {} segments still cached; at most {bound} expected",
        segments.len()
    );
    assert_eq!(offsets_and_values(&log, 1024 * 1024), expected());
}

#[test]
fn with_dropping_off_appended_pages_stay_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, segment) = written_log(
        dir.path(),
        WritebackConfig {
            interval_bytes: INTERVAL,
            drop_behind_bytes: 0,
        },
    );
    // Give the writeback thread time to act on every request.
    std::thread::sleep(Duration::from_millis(300));
    let size = std::fs::metadata(&segment).expect("segment").len();
    let resident = resident_bytes(&segment);
    assert!(
        resident * 10 >= size * 9,
        "only {resident} of {size} bytes cached with dropping off"
    );
    assert_eq!(offsets_and_values(&log, 1024 * 1024), expected());
}
