//! Opening a partition log after clean and unclean shutdowns.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use silt_broker::checkpoint::{
    CLEAN_SHUTDOWN_FILE, LEADER_EPOCH_CHECKPOINT_FILE, RECOVERY_POINT_FILE,
};
use silt_broker::log::{EpochEntry, PartitionLog};
use silt_broker::log_config::LogConfig;
use silt_broker::test_util::{BatchSpec, log_files, offsets_and_values, open, small_segments};

const RECORDS_PER_BATCH: i64 = 2;

fn spec(index: i64) -> BatchSpec {
    BatchSpec::new(RECORDS_PER_BATCH as usize, 1_000 + index).tag(&format!("r{index}"))
}

fn batch_len() -> u64 {
    spec(0).encode().len() as u64
}

/// A log of `batches` equal-sized batches, left open (as if the process died).
fn crashed_log(dir: &Path, config: &LogConfig, batches: i64) -> PartitionLog {
    let mut log = open(dir, config.clone());
    for index in 0..batches {
        let _info = log
            .append_as_leader(&spec(index).encode(), 0, 5_000)
            .expect("append");
    }
    log
}

/// The offset in the log's `recovery-point` checkpoint file.
fn read_recovery_point(dir: &Path) -> i64 {
    fs::read_to_string(dir.join(RECOVERY_POINT_FILE))
        .expect("checkpoint")
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("offset line")
}

fn active_log_file(dir: &Path) -> PathBuf {
    dir.join(log_files(dir).last().expect("a segment"))
}

fn segment_file(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// Flips one bit inside the record data of the batch at `position`.
fn corrupt_payload(path: &Path, position: u64) {
    let mut bytes = fs::read(path).expect("read segment");
    let target = position as usize + 70;
    bytes[target] ^= 0x01;
    fs::write(path, bytes).expect("write segment");
}

fn values(log: &PartitionLog) -> Vec<(i64, Vec<u8>)> {
    offsets_and_values(log, 1_000)
}

fn expected_values(batches: i64) -> Vec<(i64, Vec<u8>)> {
    silt_broker::test_util::expected_values(batches, spec)
}

#[test]
fn garbage_after_the_last_batch_is_truncated_on_open() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-3");
    let config = small_segments(1_024);
    let log = crashed_log(&dir, &config, 40);
    assert_eq!(log.log_end_offset(), 80);
    drop(log);

    let active = active_log_file(&dir);
    let size_before = fs::metadata(&active).expect("metadata").len();
    let mut file = OpenOptions::new().append(true).open(&active).expect("open");
    file.write_all(&[0xAB; 37]).expect("garbage");
    drop(file);

    let mut log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 80);
    assert_eq!(fs::metadata(&active).expect("metadata").len(), size_before);
    assert_eq!(values(&log), expected_values(40));
    let info = log
        .append_as_leader(&spec(40).encode(), 0, 6_000)
        .expect("append");
    assert_eq!(info.first_offset, 80);
}

#[test]
fn last_batch_cut_in_half_is_dropped_and_everything_before_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-0");
    let config = small_segments(1_024);
    drop(crashed_log(&dir, &config, 25));

    let active = active_log_file(&dir);
    let size = fs::metadata(&active).expect("metadata").len();
    let file = OpenOptions::new().write(true).open(&active).expect("open");
    file.set_len(size - batch_len() / 2).expect("cut");
    drop(file);

    let log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 48);
    assert_eq!(values(&log), expected_values(24));
    assert_eq!(
        fs::metadata(&active).expect("metadata").len(),
        size - batch_len()
    );
}

#[test]
fn corrupt_batch_in_the_active_segment_truncates_it_and_everything_after() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-1");
    let config = LogConfig::default();
    drop(crashed_log(&dir, &config, 10));
    corrupt_payload(&active_log_file(&dir), 6 * batch_len());

    let log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(values(&log), expected_values(6));
}

#[test]
fn clean_close_then_open_skips_the_recovery_scan() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-2");
    let config = LogConfig::default();
    crashed_log(&dir, &config, 10).close().expect("close");
    assert!(dir.join(CLEAN_SHUTDOWN_FILE).exists());
    // Damage that only a CRC scan would notice.
    corrupt_payload(&active_log_file(&dir), 9 * batch_len());

    let log = open(&dir, config.clone());
    assert!(
        !dir.join(CLEAN_SHUTDOWN_FILE).exists(),
        "marker consumed by open"
    );
    assert_eq!(log.log_end_offset(), 20, "no scan after a clean shutdown");
    drop(log);

    // Without a clean close the next open scans and drops the damaged batch.
    let log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 18);
}

#[test]
fn sealed_segments_below_the_recovery_point_are_not_rescanned() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-4");
    let config = small_segments(1_024);
    let mut log = crashed_log(&dir, &config, 40);
    assert!(log.segment_count() > 3);
    log.wait_for_background_flushes();
    assert!(log.recovery_point() > 0, "rolled segments flushed");
    assert_eq!(
        read_recovery_point(&dir),
        log.recovery_point(),
        "the checkpoint is written once the flushes are done"
    );
    drop(log);
    corrupt_payload(&segment_file(&dir, 0), 0);

    let log = open(&dir, config.clone());
    assert_eq!(log.log_end_offset(), 80, "flushed sealed segment trusted");
    drop(log);

    // Without a recovery point every segment is scanned: the damaged first
    // batch truncates the first segment and every later one is deleted.
    fs::remove_file(dir.join(RECOVERY_POINT_FILE)).expect("remove checkpoint");
    let log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log_files(&dir).len(), 1);
}

#[test]
fn a_rolled_segment_is_recovered_until_its_background_flush_is_done() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-5");
    let config = small_segments(1_024);
    let batches_per_segment = (1_024 / batch_len()) as i64;
    // Exactly one roll, and no append after it that could take the flush's result.
    let log = crashed_log(&dir, &config, batches_per_segment + 1);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(
        log.recovery_point(),
        0,
        "the roll does not wait for its fsync"
    );
    drop(log);
    corrupt_payload(&segment_file(&dir, 0), 0);

    // The recovery point on disk never moved past the sealed segment, so it is
    // scanned: the damaged first batch truncates it and the later segment goes.
    let log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn close_waits_for_background_flushes_and_moves_the_recovery_point_to_the_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-6");
    let config = small_segments(1_024);
    let log = crashed_log(&dir, &config, 30);
    assert!(log.segment_count() > 2);
    log.close().expect("close");
    assert_eq!(read_recovery_point(&dir), 60);
    let log = open(&dir, config);
    assert_eq!(values(&log), expected_values(30));
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt_from_the_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-5");
    let config = LogConfig {
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    crashed_log(&dir, &config, 30).close().expect("close");
    let index = dir.join(format!("{:020}.index", 0));
    let time_index = dir.join(format!("{:020}.timeindex", 0));
    let index_bytes = fs::read(&index).expect("index");
    let time_index_bytes = fs::read(&time_index).expect("time index");
    assert!(index_bytes.len() >= 8 * 10);

    fs::remove_file(&index).expect("remove index");
    fs::write(&time_index, [1u8; 5]).expect("damage time index");
    let log = open(&dir, config.clone());
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(fs::read(&index).expect("index"), index_bytes);
    assert_eq!(values(&log), expected_values(30));
    log.close().expect("close");
    // The rebuilt time index holds the same entries plus the final one written at close.
    let rebuilt_time_index = fs::read(&time_index).expect("time index");
    assert!(rebuilt_time_index.starts_with(&time_index_bytes[..time_index_bytes.len() - 12]));

    // An index entry pointing past the log is caught too.
    let mut bogus = index_bytes.clone();
    bogus.extend_from_slice(&[0, 0, 0, 100, 0xFF, 0xFF, 0, 0]);
    fs::write(&index, bogus).expect("bogus index");
    let log = open(&dir, config);
    assert_eq!(fs::read(&index).expect("index"), index_bytes);
    assert_eq!(
        log.offset_for_timestamp(1_020).expect("lookup"),
        Some((39, 1_020))
    );
}

#[test]
fn leader_epoch_checkpoint_tracks_epochs_and_survives_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-6");
    let config = LogConfig::default();
    let mut log = open(&dir, config.clone());
    for index in 0..5 {
        let _info = log
            .append_as_leader(&spec(index).encode(), 1, 5_000)
            .expect("append");
    }
    for index in 5..8 {
        let _info = log
            .append_as_leader(&spec(index).encode(), 3, 5_000)
            .expect("append");
    }
    let checkpoint = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
    assert_eq!(
        fs::read_to_string(&checkpoint).expect("checkpoint"),
        "0\n2\n1 0\n3 10\n"
    );
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 10)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 10)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 16)));
    assert_eq!(log.end_offset_for_epoch(4), None);
    drop(log);

    fs::remove_file(&checkpoint).expect("remove checkpoint");
    let mut log = open(&dir, config);
    assert_eq!(
        log.leader_epoch_entries(),
        &[
            EpochEntry {
                epoch: 1,
                start_offset: 0
            },
            EpochEntry {
                epoch: 3,
                start_offset: 10
            }
        ]
    );
    log.truncate_to(10).expect("truncate");
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(
        fs::read_to_string(&checkpoint).expect("checkpoint"),
        "0\n1\n1 0\n"
    );
}

#[test]
fn a_truncation_below_the_recovery_point_writes_the_checkpoint_down_at_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("events-7");
    let config = small_segments(1_024);
    let mut log = crashed_log(&dir, &config, 30);
    log.wait_for_background_flushes();
    let flushed = log.recovery_point();
    assert!(flushed > 10, "rolled segments flushed: {flushed}");
    assert_eq!(read_recovery_point(&dir), flushed);

    log.truncate_to(10).expect("truncate");
    assert_eq!(log.recovery_point(), 10);
    assert_eq!(read_recovery_point(&dir), 10, "written with the truncation");
    // Appends after it roll and flush again; the checkpoint follows from 10 up.
    for index in 0..20 {
        let _info = log
            .append_as_leader(&spec(index).encode(), 0, 5_000)
            .expect("append");
    }
    log.wait_for_background_flushes();
    assert!(log.recovery_point() > 10);
    assert_eq!(read_recovery_point(&dir), log.recovery_point());
}
