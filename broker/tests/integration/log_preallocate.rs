//! Disk blocks allocated ahead of a fast partition's appends: the file's length stays
//! the end of its records, sealing and closing free what was not used, a roll takes the
//! next segment's file allocated ahead, and a crash with blocks allocated ahead loses
//! nothing.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use silt_broker::log::PartitionLog;
use silt_broker::log_config::LogConfig;
use silt_broker::preallocate::STANDBY_FILE_NAME;
use silt_broker::test_util::{BatchSpec, log_files, offsets_and_values, open, small_segments};

const RECORDS_PER_BATCH: usize = 4;
const VALUE_BYTES: usize = 16 * 1024;
const MAX_AHEAD: u64 = 8 * 1024 * 1024;
/// Slack for block rounding and extent-tree blocks in allocation checks.
const SLACK: u64 = 256 * 1024;

fn spec(index: i64) -> BatchSpec {
    BatchSpec::new(RECORDS_PER_BATCH, 1_000 + index)
        .value_size(VALUE_BYTES)
        .tag(&format!("b{index}"))
}

/// Most batches of the warm-up that makes a partition count as fast (3.9 MB: they
/// fit a 4 MiB segment).
const MAX_WARM_UP_BATCHES: i64 = 60;

/// A fast-written log with preallocation: batches (64 KiB each) 10 ms apart, about
/// 6 MB/s (3 MB/s if sleeps take twice as long), until the partition counts as fast and
/// its standby file appears. Returns the log, the standby file's inode number once it is
/// allocated, and the batches written (offsets `0..4 * batches`); the next append rolls
/// into the standby file.
fn fast_log_with_standby(dir: &Path, config: LogConfig) -> (PartitionLog, u64, i64) {
    let standby_bytes = MAX_AHEAD.min(config.segment_bytes);
    let mut log = open(dir, config);
    log.set_preallocation(MAX_AHEAD);
    let mut batches = 0;
    while batches < MAX_WARM_UP_BATCHES && !dir.join(STANDBY_FILE_NAME).exists() {
        let _info = log
            .append_as_leader(&spec(batches).encode(), 0, 5_000)
            .expect("append");
        batches += 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(log.segment_count(), 1);
    let inode = prepared_standby(&log, dir, standby_bytes);
    (log, inode, batches)
}

/// [`fast_log_with_standby`] and then batches up to `batches` as fast as the machine
/// goes: the first of them rolls into the standby file.
fn fast_log(dir: &Path, config: LogConfig, batches: i64) -> PartitionLog {
    let (mut log, _inode, warm_up) = fast_log_with_standby(dir, config);
    for index in warm_up..batches {
        let _info = log
            .append_as_leader(&spec(index).encode(), 0, 5_000)
            .expect("append");
    }
    log
}

/// Waits (up to 10 s) for `log`'s standby file to be ready with `bytes` allocated;
/// returns its inode number.
fn prepared_standby(log: &PartitionLog, dir: &Path, bytes: u64) -> u64 {
    let path = dir.join(STANDBY_FILE_NAME);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if log.standby_ready()
            && let Ok(metadata) = fs::metadata(&path)
            && metadata.blocks() * 512 >= bytes
        {
            return metadata.ino();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby file was never allocated"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn expected(batches: i64) -> Vec<(i64, Vec<u8>)> {
    silt_broker::test_util::expected_values(batches, spec)
}

fn values(log: &PartitionLog) -> Vec<(i64, Vec<u8>)> {
    offsets_and_values(log, 1024 * 1024)
}

/// Where the last whole batch of a `.log` file ends.
fn batches_end(path: &Path) -> u64 {
    let bytes = fs::read(path).expect("read segment");
    let mut position = 0usize;
    while position + 12 <= bytes.len() {
        let length = i32::from_be_bytes(
            bytes[position + 8..position + 12]
                .try_into()
                .expect("4 bytes"),
        );
        let end = position + 12 + usize::try_from(length).unwrap_or(0);
        if length <= 0 || end > bytes.len() {
            break;
        }
        position = end;
    }
    position as u64
}

/// (length, bytes of disk blocks allocated) of a file.
fn sizes(path: &Path) -> (u64, u64) {
    let metadata = fs::metadata(path).expect("stat");
    (metadata.len(), metadata.blocks() * 512)
}

fn active(dir: &Path) -> PathBuf {
    dir.join(log_files(dir).last().expect("a segment"))
}

#[test]
fn fast_appends_allocate_blocks_ahead_without_growing_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 400;
    let log = fast_log(dir.path(), LogConfig::default(), batches);
    let (len, allocated) = sizes(&active(dir.path()));
    assert_eq!(
        batches_end(&active(dir.path())),
        len,
        "the file ends with its last batch"
    );
    assert!(
        allocated > len + 1024 * 1024,
        "blocks ahead of the records: {allocated} allocated for {len} bytes"
    );
    assert!(
        allocated <= len + MAX_AHEAD + SLACK,
        "at most the cap ahead: {allocated} allocated for {len} bytes"
    );
    assert_eq!(values(&log), expected(batches));
}

#[test]
fn slow_or_disabled_partitions_allocate_nothing_ahead() {
    for max_ahead in [MAX_AHEAD, 0] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        log.set_preallocation(max_ahead);
        let mut now = 5_000;
        for index in 0..40 {
            // Small batches: far below the rate that earns blocks ahead.
            let batch = BatchSpec::new(1, 1_000 + index)
                .tag(&format!("s{index}"))
                .encode();
            let _info = log.append_as_leader(&batch, 0, now).expect("append");
            now += 10;
            if max_ahead > 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let (len, allocated) = sizes(&active(dir.path()));
        assert!(
            allocated <= len + SLACK,
            "max_ahead {max_ahead}: {allocated} allocated for {len} bytes"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = {
        let mut log = open(dir.path(), LogConfig::default());
        log.set_preallocation(0);
        for index in 0..400 {
            let _info = log
                .append_as_leader(&spec(index).encode(), 0, 5_000)
                .expect("append");
        }
        log
    };
    let (len, allocated) = sizes(&active(dir.path()));
    assert!(
        allocated <= len + SLACK,
        "off: {allocated} allocated for {len} bytes"
    );
    assert_eq!(values(&log), expected(400));
}

#[test]
fn rolled_and_closed_segments_free_the_blocks_they_did_not_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 400;
    let config = small_segments(4 * 1024 * 1024);
    let log = fast_log(dir.path(), config.clone(), batches);
    assert!(
        log.segment_count() > 3,
        "expected several rolls, got {} segments",
        log.segment_count()
    );
    let files = log_files(dir.path());
    for name in &files[..files.len() - 1] {
        let (len, allocated) = sizes(&dir.path().join(name));
        assert_eq!(
            len,
            batches_end(&dir.path().join(name)),
            "sealed segment {name} ends with its last batch"
        );
        assert!(
            allocated <= len + SLACK,
            "sealed segment {name}: {allocated} allocated for {len} bytes"
        );
    }
    log.close().expect("close");
    let (len, allocated) = sizes(&active(dir.path()));
    assert!(
        allocated <= len + SLACK,
        "closed active segment: {allocated} allocated for {len} bytes"
    );
    let reopened = open(dir.path(), config);
    assert_eq!(values(&reopened), expected(batches));
}

#[test]
fn a_crash_with_blocks_allocated_ahead_loses_nothing_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 300;
    let log = fast_log(dir.path(), LogConfig::default(), batches);
    let (len, allocated) = sizes(&active(dir.path()));
    assert!(allocated > len, "blocks ahead before the crash");
    // Dropped without close: the process died.
    drop(log);

    let mut reopened = open(dir.path(), LogConfig::default());
    assert_eq!(
        sizes(&active(dir.path())).0,
        len,
        "recovery keeps every batch and nothing else"
    );
    assert_eq!(values(&reopened), expected(batches));
    reopened.set_preallocation(MAX_AHEAD);
    let info = reopened
        .append_as_leader(&spec(batches).encode(), 0, 5_000)
        .expect("append after recovery");
    assert_eq!(info.first_offset, batches * RECORDS_PER_BATCH as i64);
    assert_eq!(values(&reopened), expected(batches + 1));
    // The blocks allocated ahead before the crash are freed when the segment is sealed.
    reopened.close().expect("close");
    let (len, allocated) = sizes(&active(dir.path()));
    assert!(
        allocated <= len + SLACK,
        "after the crash and a close: {allocated} allocated for {len} bytes"
    );
}

#[test]
fn a_fast_partition_rolls_into_a_segment_allocated_ahead_and_close_removes_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_bytes = 4 * 1024 * 1024;
    let (mut log, standby_inode, warm_up) =
        fast_log_with_standby(dir.path(), small_segments(segment_bytes));
    let first = active(dir.path());
    let (first_len, first_allocated) = sizes(&first);
    assert!(
        first_allocated <= first_len + SLACK,
        "nothing allocated in place: {first_allocated} for {first_len} bytes"
    );
    assert_eq!(
        sizes(&dir.path().join(STANDBY_FILE_NAME)).0,
        0,
        "the standby file holds no data"
    );
    // The next append rolls into the standby file, long before the segment is full.
    let _info = log
        .append_as_leader(&spec(warm_up).encode(), 0, 5_000)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    let new_active = active(dir.path());
    assert_ne!(new_active, first);
    let metadata = fs::metadata(&new_active).expect("stat");
    assert_eq!(
        metadata.ino(),
        standby_inode,
        "the new segment is the file allocated ahead"
    );
    assert!(
        metadata.blocks() * 512 >= segment_bytes,
        "the new segment starts allocated"
    );
    assert_eq!(
        batches_end(&first),
        first_len,
        "the first segment ends with its last batch"
    );
    // 39 more batches (40 in all, 2.6 MB) stay in the new segment; past half of it the
    // one after it is prepared, and close removes that again.
    let batches = warm_up + 40;
    for index in warm_up + 1..batches {
        let _info = log
            .append_as_leader(&spec(index).encode(), 0, 5_000)
            .expect("append");
    }
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        batches_end(&new_active),
        fs::metadata(&new_active).expect("stat").len()
    );
    assert_eq!(values(&log), expected(batches));
    let _next = prepared_standby(&log, dir.path(), segment_bytes);
    log.close().expect("close");
    assert!(
        !dir.path().join(STANDBY_FILE_NAME).exists(),
        "close removes the standby file"
    );
    let reopened = open(dir.path(), small_segments(segment_bytes));
    assert_eq!(values(&reopened), expected(batches));
}

#[test]
fn a_standby_file_left_by_a_crash_is_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_bytes = 4 * 1024 * 1024;
    let (log, _inode, warm_up) = fast_log_with_standby(dir.path(), small_segments(segment_bytes));
    // Dropped without close: the process died.
    drop(log);
    assert!(dir.path().join(STANDBY_FILE_NAME).exists());
    let reopened = open(dir.path(), small_segments(segment_bytes));
    assert!(
        !dir.path().join(STANDBY_FILE_NAME).exists(),
        "open removes the leftover"
    );
    assert_eq!(
        reopened.segment_count(),
        1,
        "the leftover is not taken for a segment"
    );
    assert_eq!(values(&reopened), expected(warm_up));
}

#[test]
fn a_forced_roll_frees_the_unused_blocks_of_the_segment_it_seals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 200;
    let mut log = fast_log(dir.path(), LogConfig::default(), batches);
    let sealed = active(dir.path());
    let (len, allocated) = sizes(&sealed);
    assert!(
        allocated >= len + 4 * 1024 * 1024,
        "blocks ahead before the roll: {allocated} for {len} bytes"
    );
    // A roll long before the segment is full (as segment.ms does) leaves megabytes unused.
    let segments = log.segment_count();
    log.roll(6_000).expect("roll");
    assert_eq!(log.segment_count(), segments + 1);
    let (len, allocated) = sizes(&sealed);
    assert!(
        allocated <= len + SLACK,
        "the sealed segment keeps {allocated} allocated for {len} bytes"
    );
    assert_eq!(values(&log), expected(batches));
}
