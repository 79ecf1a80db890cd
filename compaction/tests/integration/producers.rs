//! Idempotent producers survive cleaning: a producer's last batch stays (empty if all
//! its records were compacted away), so a retry after cleaning and after a restart that
//! rebuilds producer state from the log is still deduplicated.

use kafka_protocol::records::Compression;

use crate::support::{Producer, Rec, clean, compacted, encode, open, read_log};

#[test]
fn a_retry_after_cleaning_is_deduplicated_even_when_state_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = compacted(1 << 20, 0);
    let log = open(dir.path(), config.clone());
    let producer = Producer {
        id: 7,
        epoch: 0,
        sequence: 0,
    };
    let first = [Rec {
        key: b"k".to_vec(),
        value: Some(b"v1".to_vec()),
        timestamp: 1_000,
    }];
    let last_batch = encode(
        &[Rec {
            key: b"k".to_vec(),
            value: Some(b"v2".to_vec()),
            timestamp: 1_001,
        }],
        Compression::Lz4,
        Some(Producer {
            sequence: 1,
            ..producer
        }),
    );
    {
        let mut guard = log.lock();
        guard
            .append_as_leader(&encode(&first, Compression::Lz4, Some(producer)), 0, 0)
            .expect("append");
        guard.append_as_leader(&last_batch, 0, 0).expect("append");
        // Another writer supersedes the producer's last record.
        let other = [Rec {
            key: b"k".to_vec(),
            value: Some(b"v3".to_vec()),
            timestamp: 1_002,
        }];
        guard
            .append_as_leader(&encode(&other, Compression::None, None), 0, 0)
            .expect("append");
        guard.roll(0).expect("roll");
    }
    let stats = clean(&log, 1 << 20, 2_000).expect("pass");
    assert_eq!(stats.records_removed, 2);
    let values: Vec<Option<Vec<u8>>> = read_log(&log.lock())
        .into_iter()
        .map(|(_, rec)| rec.value)
        .collect();
    assert_eq!(values, vec![Some(b"v3".to_vec())]);
    // The producer's last batch is still there, empty, with its offsets.
    let retry = log
        .lock()
        .append_as_leader(&last_batch, 0, 0)
        .expect("retry");
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.first_offset, 1);

    // Crash, and lose the producer snapshots: state is rebuilt from the cleaned log.
    drop(log);
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "snapshot")
        {
            std::fs::remove_file(path).expect("remove snapshot");
        }
    }
    let log = open(dir.path(), config);
    let retry = log
        .lock()
        .append_as_leader(&last_batch, 0, 0)
        .expect("retry");
    assert!(
        retry.duplicate,
        "state rebuilt from the cleaned log: {retry:?}"
    );
    let next = encode(
        &[Rec {
            key: b"k".to_vec(),
            value: Some(b"v4".to_vec()),
            timestamp: 1_003,
        }],
        Compression::None,
        Some(Producer {
            sequence: 2,
            ..producer
        }),
    );
    let appended = log
        .lock()
        .append_as_leader(&next, 0, 0)
        .expect("next in sequence");
    assert!(!appended.duplicate);
    assert_eq!(appended.first_offset, 3);
}
