//! Room kept ahead of a fast partition's appends: readers never see it, sealing and
//! closing cut it off, and recovery after a crash trims it without losing a record.

mod log_support;

use std::fs;
use std::path::Path;

use log_support::{BatchSpec, log_files, open, read_all, small_segments};
use silt_broker::log::PartitionLog;
use silt_broker::log_config::LogConfig;
use silt_broker::prefault::Prefaulter;

const RECORDS_PER_BATCH: usize = 4;
const VALUE_BYTES: usize = 16 * 1024;
const MAX_AHEAD: u64 = 8 * 1024 * 1024;

fn spec(index: i64) -> BatchSpec {
    BatchSpec::new(RECORDS_PER_BATCH, 1_000 + index)
        .value_size(VALUE_BYTES)
        .tag(&format!("b{index}"))
}

/// A log with a prefaulter, `batches` batches (64 KiB each) appended as fast as the
/// machine goes: hundreds of MB/s, far above the rate that earns room ahead.
fn fast_log(dir: &Path, config: LogConfig, batches: i64) -> PartitionLog {
    let mut log = open(dir, config);
    log.set_prefaulter(Prefaulter::start(MAX_AHEAD).expect("prefault thread"));
    for index in 0..batches {
        let _info = log.append_as_leader(&spec(index).encode(), 0, 5_000).expect("append");
    }
    log
}

fn expected(batches: i64) -> Vec<(i64, Vec<u8>)> {
    (0..batches)
        .flat_map(|index| {
            let spec = spec(index);
            (0..RECORDS_PER_BATCH).map(move |record| {
                (index * RECORDS_PER_BATCH as i64 + record as i64, spec.value(record))
            })
        })
        .collect()
}

fn values(log: &PartitionLog) -> Vec<(i64, Vec<u8>)> {
    read_all(log, log.log_start_offset(), 1024 * 1024)
        .into_iter()
        .map(|(offset, _, value)| (offset, value))
        .collect()
}

/// Where the last whole batch of a `.log` file ends: its length when nothing follows.
fn batches_end(path: &Path) -> u64 {
    let bytes = fs::read(path).expect("read segment");
    let mut position = 0usize;
    while position + 12 <= bytes.len() {
        let length = i32::from_be_bytes(bytes[position + 8..position + 12].try_into().expect("4 bytes"));
        let end = position + 12 + usize::try_from(length).unwrap_or(0);
        if length <= 0 || end > bytes.len() {
            break;
        }
        position = end;
    }
    position as u64
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

#[test]
fn fast_appends_keep_room_that_readers_never_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 400;
    let log = fast_log(dir.path(), LogConfig::default(), batches);
    let active = dir.path().join(log_files(dir.path()).last().expect("a segment"));
    let records_end = batches_end(&active);
    assert_eq!(records_end, log.size_bytes(), "the file holds exactly the appended batches");
    assert!(
        file_len(&active) > records_end,
        "a fast partition keeps room past its records: file {} bytes, records {records_end}",
        file_len(&active)
    );
    assert!(file_len(&active) - records_end <= MAX_AHEAD, "the room is capped");
    assert_eq!(values(&log), expected(batches));
    assert_eq!(log.log_end_offset(), batches * RECORDS_PER_BATCH as i64);
}

#[test]
fn rolled_and_closed_segments_end_with_their_last_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 400;
    let log = fast_log(dir.path(), small_segments(4 * 1024 * 1024), batches);
    assert!(log.segment_count() > 3, "expected several rolls, got {} segments", log.segment_count());
    let sealed = log_files(dir.path());
    for name in &sealed[..sealed.len() - 1] {
        let path = dir.path().join(name);
        assert_eq!(file_len(&path), batches_end(&path), "sealed segment {name} keeps room past its records");
    }
    log.close().expect("close");
    for name in log_files(dir.path()) {
        let path = dir.path().join(&name);
        assert_eq!(file_len(&path), batches_end(&path), "closed segment {name} keeps room past its records");
    }
    let reopened = open(dir.path(), small_segments(4 * 1024 * 1024));
    assert_eq!(values(&reopened), expected(batches));
}

#[test]
fn a_crash_with_room_ahead_loses_nothing_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 300;
    let log = fast_log(dir.path(), LogConfig::default(), batches);
    let active = dir.path().join(log_files(dir.path()).last().expect("a segment"));
    assert!(file_len(&active) > batches_end(&active), "room ahead before the crash");
    // Dropped without close: the process died.
    drop(log);

    let mut reopened = open(dir.path(), LogConfig::default());
    assert_eq!(file_len(&active), batches_end(&active), "recovery trims the room");
    assert_eq!(values(&reopened), expected(batches));
    let info = reopened.append_as_leader(&spec(batches).encode(), 0, 5_000).expect("append after recovery");
    assert_eq!(info.first_offset, batches * RECORDS_PER_BATCH as i64);
    assert_eq!(values(&reopened), expected(batches + 1));
}

#[test]
fn zeros_after_a_sealed_segment_still_count_as_lost_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = 200;
    let log = fast_log(dir.path(), small_segments(4 * 1024 * 1024), batches);
    let files = log_files(dir.path());
    assert!(files.len() >= 3, "expected several segments, got {files:?}");
    drop(log);
    // The first segment ends in zeros, as when its last pages never reached the disk.
    let first = dir.path().join(&files[0]);
    let records_end = file_len(&first);
    fs::OpenOptions::new().write(true).open(&first).expect("open").set_len(records_end + 1_000).expect("grow");

    let reopened = open(dir.path(), small_segments(4 * 1024 * 1024));
    // Later segments would leave a gap in the offsets, so they go, as after any invalid batch.
    assert_eq!(reopened.segment_count(), 1, "segments after the damaged one are deleted");
    let kept = values(&reopened);
    let expected_all = expected(batches);
    assert!(!kept.is_empty() && kept.len() < expected_all.len());
    assert_eq!(reopened.size_bytes(), records_end, "the first segment's batches are all kept");
    assert_eq!(kept[..], expected_all[..kept.len()], "what is kept is a prefix of the log");
    assert_eq!(file_len(&first), batches_end(&first));
}
