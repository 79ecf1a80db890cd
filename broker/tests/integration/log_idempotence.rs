//! Idempotent producers (KIP-98) against the partition log.

use silt_broker::log::{LogError, PartitionLog};
use silt_broker::log_config::LogConfig;
use silt_broker::test_util::{BatchSpec, batch, open, small_segments};

const PID: i64 = 4_242;

fn idempotent(epoch: i16, base_sequence: i32, records: usize) -> Vec<u8> {
    BatchSpec::new(records, 1_000)
        .idempotent(PID, epoch, base_sequence)
        .tag(&format!("e{epoch}s{base_sequence}"))
        .encode()
}

fn append(
    log: &mut PartitionLog,
    records: &[u8],
) -> Result<silt_broker::log::AppendInfo, LogError> {
    log.append_as_leader(records, 0, 2_000)
}

#[test]
fn retried_batch_returns_original_offsets_and_appends_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&root.path().join("payments-0"), LogConfig::default());
    let first = append(&mut log, &idempotent(0, 0, 3)).expect("append");
    let _other = append(&mut log, &batch(2, 1_000)).expect("other producer");
    let second = append(&mut log, &idempotent(0, 3, 2)).expect("append");
    assert_eq!((first.first_offset, first.last_offset), (0, 2));
    assert_eq!((second.first_offset, second.last_offset), (5, 6));
    let end = log.log_end_offset();
    let size = log.size_bytes();

    let retry = append(&mut log, &idempotent(0, 0, 3)).expect("retry");
    assert!(retry.duplicate);
    assert_eq!((retry.first_offset, retry.last_offset), (0, 2));
    let retry = append(&mut log, &idempotent(0, 3, 2)).expect("retry");
    assert!(retry.duplicate);
    assert_eq!((retry.first_offset, retry.last_offset), (5, 6));
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.size_bytes(), size);
}

#[test]
fn sequence_gap_is_rejected() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&root.path().join("payments-1"), LogConfig::default());
    let _first = append(&mut log, &idempotent(0, 0, 3)).expect("append");
    let error = append(&mut log, &idempotent(0, 4, 1)).expect_err("gap");
    assert!(matches!(
        error,
        LogError::OutOfOrderSequence {
            first_sequence: 4,
            expected_sequence: 3,
            ..
        }
    ));
    assert_eq!(error.kafka_error_code(), 45);
    assert_eq!(log.log_end_offset(), 3);
    let next = append(&mut log, &idempotent(0, 3, 1)).expect("in order");
    assert_eq!(next.first_offset, 3);
}

#[test]
fn fenced_epoch_is_rejected_and_a_new_epoch_starts_at_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&root.path().join("payments-2"), LogConfig::default());
    let _first = append(&mut log, &idempotent(2, 0, 1)).expect("append");
    assert_eq!(log.producer_epoch(PID), Some(2));
    let error = append(&mut log, &idempotent(1, 1, 1)).expect_err("old epoch");
    assert_eq!(error.kafka_error_code(), 47);
    let error = append(&mut log, &idempotent(3, 5, 1)).expect_err("new epoch must start at 0");
    assert_eq!(error.kafka_error_code(), 45);
    let _bumped = append(&mut log, &idempotent(3, 0, 1)).expect("new epoch");
    assert_eq!(log.producer_epoch(PID), Some(3));
    assert_eq!(log.producer_epoch(PID + 1), None);
}

#[test]
fn only_the_last_five_batches_are_deduplicated() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&root.path().join("payments-3"), LogConfig::default());
    for sequence in 0..6 {
        let _info = append(&mut log, &idempotent(0, sequence, 1)).expect("append");
    }
    assert!(
        append(&mut log, &idempotent(0, 1, 1))
            .expect("dup")
            .duplicate
    );
    let error = append(&mut log, &idempotent(0, 0, 1)).expect_err("too old to dedupe");
    assert_eq!(error.kafka_error_code(), 45);
}

#[test]
fn producer_state_survives_clean_and_unclean_restarts() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("payments-4");
    let config = small_segments(1_024);
    let mut log = open(&dir, config.clone());
    let mut sequence = 0;
    for _ in 0..30 {
        let _info = append(&mut log, &idempotent(1, sequence, 2)).expect("append");
        sequence += 2;
    }
    assert!(log.segment_count() > 2);
    log.close().expect("close");

    let mut log = open(&dir, config.clone());
    let retry = append(&mut log, &idempotent(1, sequence - 2, 2)).expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.first_offset, 58);
    let _next = append(&mut log, &idempotent(1, sequence, 2)).expect("append");
    sequence += 2;
    drop(log);

    // Crash: the state is rebuilt from the last snapshot plus the log.
    let mut log = open(&dir, config);
    let retry = append(&mut log, &idempotent(1, sequence - 2, 2)).expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.first_offset, 60);
    let error = append(&mut log, &idempotent(1, sequence + 1, 2)).expect_err("gap");
    assert_eq!(error.kafka_error_code(), 45);
    assert_eq!(log.producer_epoch(PID), Some(1));
}

#[test]
fn truncation_rolls_producer_state_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&root.path().join("payments-5"), small_segments(1_024));
    for sequence in 0..20 {
        let _info = append(&mut log, &idempotent(0, sequence, 1)).expect("append");
    }
    log.truncate_to(15).expect("truncate");
    let info = append(&mut log, &idempotent(0, 15, 1)).expect("sequence 15 again");
    assert!(!info.duplicate);
    assert_eq!(info.first_offset, 15);
}
