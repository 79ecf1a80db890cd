//! Tombstones stay for `delete.retention.ms` after the pass that mapped them, then go;
//! the dirty-ratio and compaction-lag settings decide when a log is due.

use kafka_protocol::records::Compression;
use silt_broker::log_config::LogConfig;
use silt_compaction::cleaner::plan;

use crate::support::{Rec, clean, compacted, encode, open, read_log};

fn rec(key: &str, value: Option<&str>, timestamp: i64) -> Rec {
    Rec {
        key: key.as_bytes().to_vec(),
        value: value.map(|value| value.as_bytes().to_vec()),
        timestamp,
    }
}

fn keys_and_values(read: &[(i64, Rec)]) -> Vec<(String, Option<String>)> {
    read.iter()
        .map(|(_, rec)| {
            (
                String::from_utf8_lossy(&rec.key).into_owned(),
                rec.value
                    .as_ref()
                    .map(|value| String::from_utf8_lossy(value).into_owned()),
            )
        })
        .collect()
}

#[test]
fn a_tombstone_outlives_its_key_by_delete_retention_ms_then_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compacted(1 << 20, 60_000));
    let append = |records: &[Rec]| {
        let batch = encode(records, Compression::None, None);
        let mut guard = log.lock();
        guard.append_as_leader(&batch, 0, 0).expect("append");
        guard.roll(0).expect("roll");
    };
    append(&[rec("a", Some("a1"), 1_000), rec("b", Some("b1"), 1_001)]);
    append(&[rec("a", None, 2_000), rec("b", Some("b2"), 2_001)]);
    let stats = clean(&log, 1 << 20, 3_000).expect("pass");
    assert_eq!(stats.delete_horizon_ms, None, "nothing was clean before");
    assert_eq!(
        keys_and_values(&read_log(&log.lock())),
        vec![("a".into(), None), ("b".into(), Some("b2".into()))],
        "the older values go, the tombstone stays"
    );

    // Newer records, but less than delete.retention.ms newer: the tombstone stays.
    append(&[rec("c", Some("c1"), 50_000)]);
    let stats = clean(&log, 1 << 20, 50_001).expect("pass");
    assert_eq!(stats.tombstones_removed, 0);
    assert!(
        read_log(&log.lock())
            .iter()
            .any(|(_, rec)| rec.value.is_none())
    );

    // Once the clean section holds records delete.retention.ms newer than the
    // tombstone's segment, the next pass removes it.
    append(&[rec("d", Some("d1"), 200_000)]);
    let _stats = clean(&log, 1 << 20, 200_001).expect("pass");
    append(&[rec("e", Some("e1"), 200_002)]);
    let stats = clean(&log, 1 << 20, 200_003).expect("pass");
    assert_eq!(stats.tombstones_removed, 1, "{stats:?}");
    assert_eq!(
        keys_and_values(&read_log(&log.lock())),
        vec![
            ("b".into(), Some("b2".into())),
            ("c".into(), Some("c1".into())),
            ("d".into(), Some("d1".into())),
            ("e".into(), Some("e1".into())),
        ]
    );
    // Offsets never change.
    let offsets: Vec<i64> = read_log(&log.lock())
        .iter()
        .map(|(offset, _)| *offset)
        .collect();
    assert_eq!(offsets, vec![3, 4, 5, 6]);
}

#[test]
fn dirty_ratio_and_compaction_lags_decide_when_a_log_is_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        min_compaction_lag_ms: 10_000,
        ..compacted(1 << 20, 0)
    };
    let log = open(dir.path(), config);
    for round in 0..4i64 {
        let records: Vec<Rec> = (0..10)
            .map(|index| rec(&format!("k{index}"), Some("v"), 1_000 + round * 1_000))
            .collect();
        let mut guard = log.lock();
        guard
            .append_as_leader(&encode(&records, Compression::None, None), 0, 0)
            .expect("append");
        guard.roll(0).expect("roll");
    }
    let view = log.lock().cleaning_view();
    // At 5 s every segment is younger than min.compaction.lag.ms: nothing is cleanable.
    assert_eq!(plan(&view, 5_000), None);
    // At 12.5 s the first two segments (newest records at 1 s and 2 s) are cleanable.
    let due = plan(&view, 12_500).expect("plan");
    assert_eq!(due.first_uncleanable_offset, 20);
    assert!(due.is_due(0.5));
    let stats = clean(&log, 1 << 20, 12_500).expect("pass");
    assert_eq!(stats.end_offset, 20);
    assert_eq!(stats.records_removed, 10);
    // The first pass left the first 10 offsets clean: 1 dirty segment of 3 sealed ones
    // is below the ratio at 13.5 s.
    let view = log.lock().cleaning_view();
    let plan_now = plan(&view, 13_500).expect("plan");
    assert!(!plan_now.is_due(0.9), "{plan_now:?}");
    assert!(plan_now.is_due(0.2), "{plan_now:?}");
    // max.compaction.lag.ms makes an old dirty segment due whatever the ratio.
    let overdue = LogConfig {
        max_compaction_lag_ms: 5_000,
        ..view.config.clone()
    };
    log.lock().set_config(overdue);
    let view = log.lock().cleaning_view();
    let forced = plan(&view, 13_500).expect("plan");
    assert!(forced.overdue && forced.is_due(0.99), "{forced:?}");
}
