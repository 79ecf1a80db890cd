//! Retention of a tiered partition log (KIP-405): whole-log time and size retention is
//! left to remote storage, local retention deletes only segments already copied.

use silt_broker::log::PartitionLog;
use silt_broker::log_config::LogConfig;
use silt_broker::test_util::{batch, open, small_segments};

const HOUR_MS: i64 = 60 * 60 * 1000;

/// 40 batches of 2 records, batch `i` stamped `i` hours after the epoch start.
fn hourly_log(dir: &std::path::Path, config: LogConfig) -> PartitionLog {
    let mut log = open(dir, config);
    for index in 0..40 {
        let _info = log
            .append_as_leader(&batch(2, index * HOUR_MS), 0, index * HOUR_MS)
            .expect("append");
    }
    log
}

fn tiered(retention_ms: i64, retention_bytes: i64) -> LogConfig {
    LogConfig {
        remote_storage_enable: true,
        retention_ms,
        retention_bytes,
        ..small_segments(1_024)
    }
}

#[test]
fn whole_log_retention_leaves_tiered_logs_alone() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = hourly_log(&root.path().join("tiered-0"), tiered(HOUR_MS, 1));
    let segments = log.segment_count();
    assert_eq!(log.apply_retention(100 * HOUR_MS).expect("retention"), 0);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_start_offset(), 0);
    // DeleteRecords still moves the start and drops the segments below it.
    let second_base = log.sealed_segment_base_offsets()[1];
    assert_eq!(
        log.delete_records_before(second_base)
            .expect("delete records"),
        second_base
    );
    assert_eq!(log.segment_count(), segments - 1);
}

#[test]
fn local_retention_deletes_only_copied_segments() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = hourly_log(&root.path().join("tiered-0"), tiered(HOUR_MS, -1));
    let sealed = log.sealed_segment_base_offsets();
    assert!(sealed.len() >= 4, "{sealed:?}");
    assert_eq!(
        log.apply_local_retention(100 * HOUR_MS, i64::MIN)
            .expect("nothing copied"),
        0
    );
    // The first three segments are copied: only they may go, all of them by time.
    let copied_end = sealed[3];
    let deleted = log
        .apply_local_retention(100 * HOUR_MS, copied_end)
        .expect("local retention");
    assert_eq!(deleted, 3);
    assert_eq!(log.log_start_offset(), copied_end);
    assert_eq!(log.sealed_segment_base_offsets()[0], copied_end);
}

#[test]
fn local_retention_bytes_overrides_retention_bytes() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        local_retention_bytes: 0,
        ..tiered(-1, -1)
    };
    let mut log = hourly_log(&root.path().join("tiered-0"), config);
    let sealed = log.sealed_segment_base_offsets();
    let copied_end = sealed[2];
    assert_eq!(
        log.apply_local_retention(0, copied_end)
            .expect("local retention"),
        2
    );
    assert_eq!(log.log_start_offset(), copied_end);
    // Without local.retention.* and with unlimited retention.*, nothing goes.
    let mut kept = hourly_log(&root.path().join("kept-0"), tiered(-1, -1));
    assert_eq!(
        kept.apply_local_retention(100 * HOUR_MS, i64::MAX)
            .expect("local retention"),
        0
    );
}
