//! The replication append path: batches copied from a leader's log.

use kafka_protocol::records::Compression;
use silt_broker::log::{LogError, PartitionLog};
use silt_broker::log_config::LogConfig;
use silt_broker::test_util::{BatchSpec, open, read_all, small_segments};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn partition_log_can_be_shared_behind_a_mutex() {
    assert_send_sync::<PartitionLog>();
}

#[test]
fn follower_copies_the_leader_byte_for_byte() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut leader = open(
        &root.path().join("leader").join("clicks-0"),
        small_segments(2_048),
    );
    for index in 0..40 {
        let spec = BatchSpec::new(3, 1_000 + index)
            .tag(&format!("l{index}"))
            .compression(if index % 3 == 0 {
                Compression::Lz4
            } else {
                Compression::None
            })
            .idempotent(9, 0, (index * 3) as i32);
        let _info = leader
            .append_as_leader(&spec.encode(), 2 + (index / 20) as i32, 5_000)
            .expect("append");
    }
    let mut follower = open(
        &root.path().join("follower").join("clicks-0"),
        small_segments(2_048),
    );
    while follower.log_end_offset() < leader.log_end_offset() {
        let fetched = leader
            .read(follower.log_end_offset(), 3_000, i64::MAX, true)
            .expect("fetch");
        let end_before = follower.log_end_offset();
        let info = follower
            .append_as_follower(&fetched.records)
            .expect("replicate");
        assert_eq!(info.first_offset, end_before);
        assert_eq!(follower.log_end_offset(), info.last_offset + 1);
    }
    assert_eq!(follower.log_end_offset(), 120);
    assert_eq!(read_all(&follower, 0, 10_000), read_all(&leader, 0, 10_000));
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let from_leader = leader.read(offset, 1, i64::MAX, true).expect("read");
        let from_follower = follower.read(offset, 1, i64::MAX, true).expect("read");
        assert_eq!(
            from_leader.records, from_follower.records,
            "batch at {offset} differs"
        );
        offset += 3;
    }
    assert_eq!(
        follower.leader_epoch_entries(),
        leader.leader_epoch_entries()
    );
    assert_eq!(follower.producer_epoch(9), Some(0));

    // Already-present offsets are refused; an empty fetch is a no-op.
    let again = leader.read(0, 3_000, i64::MAX, true).expect("fetch");
    let error = follower
        .append_as_follower(&again.records)
        .expect_err("below LEO");
    assert!(matches!(error, LogError::InvalidOffset(_)));
    let nothing = follower.append_as_follower(&[]).expect("empty");
    assert_eq!(nothing.first_offset, -1);
    assert_eq!(follower.log_end_offset(), 120);
}

#[test]
fn follower_splits_a_large_fetch_across_segments() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut leader = open(&root.path().join("a").join("t-0"), LogConfig::default());
    for index in 0..30 {
        let _info = leader
            .append_as_leader(&BatchSpec::new(2, index).value_size(100).encode(), 0, 0)
            .expect("append");
    }
    let everything = leader
        .read(0, usize::MAX / 2, i64::MAX, true)
        .expect("read");
    let mut follower = open(&root.path().join("b").join("t-0"), small_segments(1_024));
    let info = follower
        .append_as_follower(&everything.records)
        .expect("replicate");
    assert_eq!(
        (info.first_offset, info.last_offset, info.records_count),
        (0, 59, 60)
    );
    assert!(follower.segment_count() > 3);
    assert_eq!(read_all(&follower, 0, 10_000), read_all(&leader, 0, 10_000));

    let mut corrupt = everything.records.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let mut fresh = open(&root.path().join("c").join("t-0"), LogConfig::default());
    let error = fresh.append_as_follower(&corrupt).expect_err("crc");
    assert_eq!(error.kafka_error_code(), 2);
    assert_eq!(fresh.log_end_offset(), 0);
}

/// A broker that became leader of an empty epoch (the epoch starts at its log end) and
/// lost it before appending must drop that epoch when it truncates to its log end as a
/// follower, as Kafka's `truncateTo` does: else it asks the new leader about an epoch
/// the leader never had, again and again, and never fetches.
#[test]
fn truncation_to_the_log_end_drops_an_epoch_with_no_records() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("offsets-0");
    let mut log = open(&dir, small_segments(4_096));
    for index in 0..3 {
        let _info = log
            .append_as_leader(&BatchSpec::new(2, 1_000 + index).encode(), 1, 5_000)
            .expect("append");
    }
    let end = log.log_end_offset();
    log.assign_epoch_start_offset(4, end).expect("epoch 4");
    assert_eq!(log.latest_epoch(), Some(4));

    log.truncate_to(end).expect("truncate to the log end");
    assert_eq!(log.log_end_offset(), end, "no record goes");
    assert_eq!(log.latest_epoch(), Some(1), "the empty epoch 4 is gone");
    drop(log);
    let reopened = open(&dir, small_segments(4_096));
    assert_eq!(
        reopened.latest_epoch(),
        Some(1),
        "and gone from the checkpoint"
    );

    // On an empty log the only epoch starts at 0, the log end: it goes too.
    let mut empty = open(&root.path().join("empty-0"), small_segments(4_096));
    empty.assign_epoch_start_offset(3, 0).expect("epoch 3");
    empty.truncate_to(0).expect("truncate");
    assert_eq!(empty.latest_epoch(), None);
}
