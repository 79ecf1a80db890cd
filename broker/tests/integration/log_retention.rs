//! Retention, DeleteRecords and truncation of the partition log.

use silt_broker::checkpoint::LOG_START_OFFSET_FILE;
use silt_broker::log::LogError;
use silt_broker::log_config::LogConfig;
use silt_broker::test_util::{BatchSpec, batch, decode, log_files, open, read_all, small_segments};

const HOUR_MS: i64 = 60 * 60 * 1000;

/// 60 batches of 2 records, batch `i` stamped `i` hours after the epoch start.
fn hourly_log(dir: &std::path::Path, config: LogConfig) -> silt_broker::log::PartitionLog {
    let mut log = open(dir, config);
    for index in 0..60 {
        let _info = log
            .append_as_leader(&batch(2, index * HOUR_MS), 0, index * HOUR_MS)
            .expect("append");
    }
    log
}

#[test]
fn retention_ms_deletes_old_sealed_segments_and_moves_the_log_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("metrics-0");
    let config = LogConfig {
        retention_ms: 10 * HOUR_MS,
        ..small_segments(1_024)
    };
    let mut log = hourly_log(&dir, config);
    let segments_before = log.segment_count();
    let now = 60 * HOUR_MS;

    let deleted = log.apply_retention(now).expect("retention");
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), segments_before - deleted);
    assert_eq!(log_files(&dir).len(), log.segment_count());
    let start = log.log_start_offset();
    assert!(start > 0);
    // Every record still readable is from a segment holding something newer than the cutoff.
    let oldest_kept = read_all(&log, start, 10_000);
    assert_eq!(oldest_kept.first().map(|record| record.0), Some(start));
    let first_segment_newest = oldest_kept
        .iter()
        .filter(|record| {
            record.0
                < log
                    .sealed_segment_base_offsets()
                    .get(1)
                    .copied()
                    .unwrap_or(i64::MAX)
        })
        .map(|record| record.1)
        .max()
        .expect("records");
    assert!(now - first_segment_newest <= 10 * HOUR_MS);

    let error = log
        .read(start - 1, 1_000, i64::MAX, true)
        .expect_err("deleted");
    assert!(matches!(error, LogError::OffsetOutOfRange { .. }));
    assert_eq!(
        log.offset_for_timestamp(0)
            .expect("lookup")
            .map(|found| found.0),
        Some(start)
    );

    // Far in the future everything but the active segment goes.
    let _deleted = log.apply_retention(1_000 * HOUR_MS).expect("retention");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 120);
    assert!(!read_all(&log, log.log_start_offset(), 10_000).is_empty());
}

#[test]
fn retention_bytes_keeps_the_log_within_one_segment_of_the_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("metrics-1");
    let config = LogConfig {
        retention_ms: -1,
        retention_bytes: 3_000,
        ..small_segments(1_024)
    };
    let mut log = hourly_log(&dir, config);
    let size_before = log.size_bytes();
    assert!(size_before > 6_000);
    let deleted = log.apply_retention(0).expect("retention");
    assert!(deleted > 0);
    let size_after = log.size_bytes();
    assert!(
        size_after >= 3_000 - 1_024,
        "deleted too much: {size_after}"
    );
    assert!(
        size_after <= 3_000 + 1_024,
        "deleted too little: {size_after}"
    );
    assert_eq!(log.apply_retention(0).expect("retention"), 0, "stable");
}

#[test]
fn compact_only_topics_are_not_deleted_by_time() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("metrics-2");
    let config = LogConfig {
        retention_ms: 1,
        cleanup_policy: "compact".to_string(),
        ..small_segments(1_024)
    };
    let mut log = hourly_log(&dir, config);
    let segments = log.segment_count();
    assert_eq!(log.apply_retention(1_000 * HOUR_MS).expect("retention"), 0);
    assert_eq!(log.segment_count(), segments);
}

#[test]
fn delete_records_before_survives_reopen() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("ledger-7");
    let config = small_segments(1_024);
    let mut log = hourly_log(&dir, config.clone());
    let segments_before = log.segment_count();

    assert_eq!(log.delete_records_before(37).expect("delete records"), 37);
    assert_eq!(log.log_start_offset(), 37);
    assert!(log.segment_count() < segments_before);
    assert!(
        log.sealed_segment_base_offsets()
            .first()
            .is_some_and(|base| *base <= 37)
    );
    assert!(log.read(36, 1_000, i64::MAX, true).is_err());
    let from_start = decode(&log.read(37, 1, i64::MAX, true).expect("read").records);
    assert!(from_start.iter().any(|record| record.0 == 37));
    assert_eq!(
        log.delete_records_before(10).expect("no-op"),
        37,
        "never moves back"
    );
    let error = log.delete_records_before(121).expect_err("beyond LEO");
    assert_eq!(error.kafka_error_code(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join(LOG_START_OFFSET_FILE)).expect("checkpoint"),
        "0\n37\n"
    );
    drop(log);

    // After a crash.
    let log = open(&dir, config.clone());
    assert_eq!(log.log_start_offset(), 37);
    log.close().expect("close");
    // After a clean shutdown.
    let mut log = open(&dir, config);
    assert_eq!(log.log_start_offset(), 37);
    assert_eq!(
        log.offset_for_timestamp(0)
            .expect("lookup")
            .map(|found| found.0),
        Some(37)
    );

    // Deleting up to the log end keeps the active segment and an empty readable log.
    assert_eq!(log.delete_records_before(120).expect("all"), 120);
    assert!(
        log.read(120, 1_000, i64::MAX, true)
            .expect("read")
            .records
            .is_empty()
    );
    let info = log.append_as_leader(&batch(1, 0), 0, 0).expect("append");
    assert_eq!(info.first_offset, 120);
    assert_eq!(info.log_start_offset, 120);
}

#[test]
fn truncate_to_drops_whole_batches_and_later_segments() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("ledger-8");
    let config = small_segments(1_024);
    let mut log = hourly_log(&dir, config.clone());
    let segments_before = log.segment_count();

    log.truncate_to(41).expect("truncate");
    assert_eq!(
        log.log_end_offset(),
        40,
        "the batch straddling 41 goes entirely"
    );
    assert!(log.segment_count() < segments_before);
    assert_eq!(read_all(&log, 0, 10_000).len(), 40);
    let info = log
        .append_as_leader(&BatchSpec::new(2, 5).tag("after").encode(), 1, 0)
        .expect("append");
    assert_eq!(info.first_offset, 40);
    drop(log);

    let log = open(&dir, config);
    assert_eq!(log.log_end_offset(), 42);
    let tail = read_all(&log, 40, 10_000);
    assert_eq!(tail[0].2, BatchSpec::new(2, 5).tag("after").value(0));
}

#[test]
fn truncate_below_the_log_start_restarts_the_log_there() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("ledger-9");
    let mut log = hourly_log(&dir, small_segments(1_024));
    let _start = log.delete_records_before(50).expect("delete records");
    log.truncate_to(30).expect("truncate");
    assert_eq!(log.log_start_offset(), 30);
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.segment_count(), 1);
    let info = log.append_as_leader(&batch(2, 0), 0, 0).expect("append");
    assert_eq!(info.first_offset, 30);
}

#[test]
fn deleting_the_log_removes_its_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("doomed-0");
    let log = hourly_log(&dir, small_segments(1_024));
    log.delete().expect("delete");
    assert!(!dir.exists());
}
