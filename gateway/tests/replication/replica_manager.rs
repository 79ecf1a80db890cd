//! ISR replication between two replica managers in one process: broker 1 leads, broker
//! 2 follows, and the follower's fetches go through the leader's replica read path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use silt_broker::isr::{IsrUpdateError, IsrUpdater};
use silt_broker::partition::Partition;
use silt_broker::replica_manager::{PartitionError, ReplicaManager, ReplicaManagerConfig};
use silt_broker::test_util::batch;

use crate::fetch_from;
use silt_controller::{
    AlterPartitionRequest, BrokerId, ClusterMetadata, PartitionAssignment, TopicId, TopicMetadata,
};

const TOPIC: &str = "orders";
const LEADER: BrokerId = 1;
const FOLLOWER: BrokerId = 2;

fn topic_id() -> TopicId {
    TopicId(uuid::Uuid::from_u128(0x5117))
}

fn assignment(
    leader: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: Vec<BrokerId>,
) -> PartitionAssignment {
    PartitionAssignment {
        partition: 0,
        replicas: vec![LEADER, FOLLOWER],
        isr,
        leader,
        leader_epoch,
        partition_epoch,
    }
}

fn metadata(assignment: PartitionAssignment, configs: &[(&str, &str)]) -> ClusterMetadata {
    let topic = TopicMetadata {
        name: TOPIC.to_string(),
        topic_id: topic_id(),
        partitions: vec![assignment],
        configs: configs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        internal: false,
        log_start_offsets: BTreeMap::new(),
    };
    ClusterMetadata {
        topics: BTreeMap::from([(TOPIC.to_string(), topic)]),
        ..ClusterMetadata::default()
    }
}

fn replica_manager(
    dir: &std::path::Path,
    broker_id: BrokerId,
    lag_time_max_ms: i64,
) -> Arc<ReplicaManager> {
    ReplicaManager::new(ReplicaManagerConfig {
        broker_id,
        log_dirs: vec![dir.join(format!("broker-{broker_id}"))],
        log_defaults: BTreeMap::new(),
        replica_lag_time_max_ms: lag_time_max_ms,
        preallocate_max_bytes: silt_broker::preallocate::DEFAULT_PREALLOCATE_MAX_BYTES,
        writeback: silt_broker::writeback::WritebackConfig::default(),
    })
}

/// Records AlterPartition calls and commits them with the next partition epoch.
#[derive(Debug, Default)]
struct RecordingIsrUpdater {
    requests: Mutex<Vec<Vec<BrokerId>>>,
    refuse: bool,
}

#[async_trait::async_trait]
impl IsrUpdater for RecordingIsrUpdater {
    async fn alter_isr(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<PartitionAssignment, IsrUpdateError> {
        assert_eq!(request.broker_id, LEADER, "only the leader alters the isr");
        self.requests.lock().push(request.new_isr.clone());
        if self.refuse {
            return Err(IsrUpdateError::Unavailable("test".to_string()));
        }
        Ok(assignment(
            LEADER,
            request.leader_epoch,
            request.partition_epoch + 1,
            request.new_isr,
        ))
    }
}

/// One follower fetch round: read from the leader at the follower's LEO and append.
async fn replicate_once(leader: &ReplicaManager, follower: &ReplicaManager) -> usize {
    let following = follower.partition(TOPIC, 0).expect("follower partition");
    let read = leader
        .read_records_for_replica(
            TOPIC,
            0,
            FOLLOWER,
            fetch_from(
                following.log_end_offset(),
                following.leader_epoch(),
                1 << 20,
            ),
        )
        .await
        .expect("replica fetch");
    let bytes = read.records.len();
    if bytes > 0 {
        let _ = follower
            .follower(&following, following.leader_epoch())
            .append(read.records)
            .await
            .expect("follower append");
    }
    following.set_leader_high_watermark(read.high_watermark);
    bytes
}

async fn pair(
    dir: &std::path::Path,
    isr: Vec<BrokerId>,
) -> (Arc<ReplicaManager>, Arc<ReplicaManager>) {
    let leader = replica_manager(dir, LEADER, 30_000);
    let follower = replica_manager(dir, FOLLOWER, 30_000);
    let cluster = metadata(assignment(LEADER, 1, 1, isr), &[]);
    leader
        .apply_metadata(&cluster)
        .await
        .expect("leader metadata");
    follower
        .apply_metadata(&cluster)
        .await
        .expect("follower metadata");
    (leader, follower)
}

fn leader_partition(leader: &ReplicaManager) -> Arc<Partition> {
    leader.partition(TOPIC, 0).expect("leader partition")
}

#[tokio::test]
async fn high_watermark_waits_for_the_isr_follower_then_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let appended = leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    assert_eq!(appended.last_offset, 2);
    let hosted = leader_partition(&leader);
    assert_eq!((hosted.log_end_offset(), hosted.high_watermark()), (3, 0));
    // Consumers see nothing uncommitted.
    let consumer_read = leader
        .read_records(TOPIC, 0, fetch_from(0, -1, 1 << 20))
        .await
        .expect("consumer read");
    assert!(consumer_read.records.is_empty());

    assert!(replicate_once(&leader, &follower).await > 0);
    assert_eq!(
        hosted.high_watermark(),
        0,
        "the fetch at 0 does not cover the records"
    );
    assert_eq!(replicate_once(&leader, &follower).await, 0);
    assert_eq!(hosted.high_watermark(), 3);
    let following = follower.partition(TOPIC, 0).expect("follower partition");
    assert_eq!(
        (following.log_end_offset(), following.high_watermark()),
        (3, 3)
    );
    assert_eq!(hosted.follower_states()[&FOLLOWER].log_end_offset, 3);
}

#[tokio::test]
async fn leader_alone_in_the_isr_commits_at_its_log_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, _follower) = pair(dir.path(), vec![LEADER]).await;
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(4, 1_000)), 1)
        .await
        .expect("append");
    assert_eq!(leader_partition(&leader).high_watermark(), 4);
}

#[tokio::test]
async fn replica_fetches_are_refused_by_followers_and_below_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let refused = follower
        .read_records_for_replica(TOPIC, 0, LEADER, fetch_from(0, 1, 1024))
        .await
        .expect_err("follower refuses");
    assert_eq!(refused.kafka_error_code(), 6);
    let produce = follower
        .append_records(TOPIC, 0, Bytes::from(batch(1, 1_000)), 1)
        .await
        .expect_err("not leader");
    assert_eq!(produce.kafka_error_code(), 6);
    let fenced = leader
        .read_records_for_replica(TOPIC, 0, FOLLOWER, fetch_from(0, 0, 1024))
        .await
        .expect_err("fenced");
    assert_eq!(fenced.kafka_error_code(), 74);
    let out_of_range = leader
        .read_records_for_replica(TOPIC, 0, FOLLOWER, fetch_from(5, 1, 1024))
        .await
        .expect_err("past the end");
    assert_eq!(out_of_range.kafka_error_code(), 1);
    let stranger = leader
        .read_records_for_replica(TOPIC, 0, 9, fetch_from(0, 1, 1024))
        .await
        .expect_err("not a replica");
    assert_eq!(stranger.kafka_error_code(), 6);
}

#[tokio::test]
async fn acks_all_waiter_wakes_when_the_follower_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let appended = leader
        .append_records(TOPIC, 0, Bytes::from(batch(2, 1_000)), -1)
        .await
        .expect("append");
    let waiting_leader = Arc::clone(&leader);
    let waiter = tokio::spawn(async move {
        waiting_leader
            .wait_for_high_watermark(
                TOPIC,
                0,
                appended.last_offset + 1,
                appended.leader_epoch,
                Duration::from_secs(10),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    let _ = replicate_once(&leader, &follower).await;
    let _ = replicate_once(&leader, &follower).await;
    let outcome = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("waiter woke")
        .expect("join");
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn acks_all_waiter_times_out_without_the_follower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, _follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let appended = leader
        .append_records(TOPIC, 0, Bytes::from(batch(2, 1_000)), -1)
        .await
        .expect("append");
    let outcome = leader
        .wait_for_high_watermark(
            TOPIC,
            0,
            appended.last_offset + 1,
            appended.leader_epoch,
            Duration::from_millis(50),
        )
        .await;
    assert!(
        matches!(outcome, Err(PartitionError::RequestTimedOut { .. })),
        "{outcome:?}"
    );
    assert_eq!(outcome.expect_err("timed out").kafka_error_code(), 7);
}

#[tokio::test]
async fn acks_all_waiter_fails_when_leadership_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, _follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let appended = leader
        .append_records(TOPIC, 0, Bytes::from(batch(2, 1_000)), -1)
        .await
        .expect("append");
    let waiting_leader = Arc::clone(&leader);
    let waiter = tokio::spawn(async move {
        waiting_leader
            .wait_for_high_watermark(
                TOPIC,
                0,
                appended.last_offset + 1,
                appended.leader_epoch,
                Duration::from_secs(10),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader
        .apply_metadata(&metadata(assignment(FOLLOWER, 2, 2, vec![FOLLOWER]), &[]))
        .await
        .expect("new leader");
    let outcome = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("waiter woke")
        .expect("join");
    assert_eq!(outcome.expect_err("not leader").kafka_error_code(), 6);
}

#[tokio::test]
async fn acks_all_answers_not_enough_replicas_after_append_when_the_isr_shrinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leader = replica_manager(dir.path(), LEADER, 30_000);
    let configs = [("min.insync.replicas", "2")];
    leader
        .apply_metadata(&metadata(
            assignment(LEADER, 1, 1, vec![LEADER, FOLLOWER]),
            &configs,
        ))
        .await
        .expect("metadata");
    let appended = leader
        .append_records(TOPIC, 0, Bytes::from(batch(1, 1_000)), -1)
        .await
        .expect("append");
    let waiting_leader = Arc::clone(&leader);
    let waiter = tokio::spawn(async move {
        waiting_leader
            .wait_for_high_watermark(
                TOPIC,
                0,
                appended.last_offset + 1,
                appended.leader_epoch,
                Duration::from_secs(10),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader
        .apply_metadata(&metadata(assignment(LEADER, 1, 2, vec![LEADER]), &configs))
        .await
        .expect("shrunk isr");
    let outcome = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("waiter woke")
        .expect("join");
    assert_eq!(outcome.expect_err("isr too small").kafka_error_code(), 20);
    // New acks=all appends are refused up front.
    let refused = leader
        .append_records(TOPIC, 0, Bytes::from(batch(1, 1_000)), -1)
        .await
        .expect_err("not enough replicas");
    assert_eq!(refused.kafka_error_code(), 19);
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_from_the_epoch_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, _follower) = pair(dir.path(), vec![LEADER]).await;
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    // Re-elected at epoch 3: the new epoch starts at the log end offset.
    leader
        .apply_metadata(&metadata(assignment(LEADER, 3, 2, vec![LEADER]), &[]))
        .await
        .expect("epoch 3");
    assert_eq!(
        leader
            .end_offset_for_epoch(TOPIC, 0, 3, 3)
            .await
            .expect("current epoch"),
        (3, 3)
    );
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(2, 2_000)), 1)
        .await
        .expect("append");
    assert_eq!(
        leader
            .end_offset_for_epoch(TOPIC, 0, -1, 1)
            .await
            .expect("epoch 1"),
        (1, 3)
    );
    assert_eq!(
        leader
            .end_offset_for_epoch(TOPIC, 0, -1, 2)
            .await
            .expect("epoch 2"),
        (1, 3)
    );
    assert_eq!(
        leader
            .end_offset_for_epoch(TOPIC, 0, 3, 3)
            .await
            .expect("epoch 3"),
        (3, 5)
    );
    assert_eq!(
        leader
            .end_offset_for_epoch(TOPIC, 0, -1, 7)
            .await
            .expect("newer epoch"),
        (-1, -1),
        "UNDEFINED past the latest"
    );
    let fenced = leader
        .end_offset_for_epoch(TOPIC, 0, 2, 1)
        .await
        .expect_err("fenced");
    assert_eq!(fenced.kafka_error_code(), 74);
    let unknown = leader
        .end_offset_for_epoch(TOPIC, 0, 4, 1)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.kafka_error_code(), 75);
}

#[tokio::test]
async fn lagging_follower_is_removed_from_the_isr_after_the_lag_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leader = replica_manager(dir.path(), LEADER, 100);
    let updater = Arc::new(RecordingIsrUpdater::default());
    leader.set_isr_updater(Arc::clone(&updater) as Arc<dyn IsrUpdater>);
    leader
        .apply_metadata(&metadata(
            assignment(LEADER, 1, 1, vec![LEADER, FOLLOWER]),
            &[],
        ))
        .await
        .expect("metadata");
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    let _ = leader
        .read_records_for_replica(TOPIC, 0, FOLLOWER, fetch_from(0, 1, 1 << 20))
        .await
        .expect("fetch");
    assert_eq!(
        leader.run_isr_maintenance_pass().await,
        0,
        "within the lag time"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(leader.run_isr_maintenance_pass().await, 1);
    let hosted = leader_partition(&leader);
    for _ in 0..100 {
        if hosted.isr() == vec![LEADER] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(updater.requests.lock().clone(), vec![vec![LEADER]]);
    assert_eq!(hosted.isr(), vec![LEADER]);
    assert_eq!(hosted.partition_epoch(), 2);
    assert_eq!(
        hosted.high_watermark(),
        3,
        "without the follower the leader commits alone"
    );
}

#[tokio::test]
async fn caught_up_follower_is_added_back_to_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER]).await;
    let updater = Arc::new(RecordingIsrUpdater::default());
    leader.set_isr_updater(Arc::clone(&updater) as Arc<dyn IsrUpdater>);
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    let _ = replicate_once(&leader, &follower).await;
    assert!(
        updater.requests.lock().is_empty(),
        "behind the high watermark"
    );
    let _ = replicate_once(&leader, &follower).await;
    let hosted = leader_partition(&leader);
    for _ in 0..100 {
        if hosted.isr().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        updater.requests.lock().clone(),
        vec![vec![LEADER, FOLLOWER]]
    );
    assert_eq!(hosted.isr(), vec![LEADER, FOLLOWER]);
    assert!(!hosted.is_under_replicated());
}

#[tokio::test]
async fn failed_isr_change_is_retried_after_a_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER]).await;
    let updater = Arc::new(RecordingIsrUpdater {
        refuse: true,
        ..RecordingIsrUpdater::default()
    });
    leader.set_isr_updater(Arc::clone(&updater) as Arc<dyn IsrUpdater>);
    let _ = replicate_once(&leader, &follower).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = replicate_once(&leader, &follower).await;
    assert_eq!(
        updater.requests.lock().len(),
        1,
        "no new request within the backoff"
    );
    assert_eq!(leader_partition(&leader).isr(), vec![LEADER]);
    assert!(leader_partition(&leader).is_under_replicated());
}

#[tokio::test]
async fn reopened_replicated_partition_keeps_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    let _ = replicate_once(&leader, &follower).await;
    let _ = replicate_once(&leader, &follower).await;
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(2, 2_000)), 1)
        .await
        .expect("append");
    assert_eq!(leader_partition(&leader).high_watermark(), 3);
    leader.shutdown().await;

    let reopened = replica_manager(dir.path(), LEADER, 30_000);
    reopened
        .apply_metadata(&metadata(
            assignment(LEADER, 2, 2, vec![LEADER, FOLLOWER]),
            &[],
        ))
        .await
        .expect("reopen");
    let hosted = leader_partition(&reopened);
    assert_eq!((hosted.log_end_offset(), hosted.high_watermark()), (5, 3));
}

#[tokio::test]
async fn follower_truncates_and_restarts_at_the_leader_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let _ = leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    let _ = replicate_once(&leader, &follower).await;
    let following = follower.partition(TOPIC, 0).expect("follower partition");
    assert_eq!(
        follower
            .local_epoch_view(&following, Some(1))
            .await
            .expect("epochs"),
        (Some(1), Some((1, 3)))
    );
    assert_eq!(
        follower
            .follower(&following, 1)
            .truncate_to(1)
            .await
            .expect("truncate"),
        0,
        "the batch straddles 1"
    );
    follower
        .follower(&following, 1)
        .truncate_fully_and_start_at(7)
        .await
        .expect("restart");
    assert_eq!(
        (following.log_start_offset(), following.log_end_offset()),
        (7, 7)
    );
    let wrong_epoch = follower
        .follower(&following, 5)
        .truncate_to(0)
        .await
        .expect_err("not following epoch 5");
    assert_eq!(wrong_epoch.kafka_error_code(), 6);
}

#[tokio::test]
async fn list_offsets_is_answered_by_the_leader_once_its_high_watermark_reaches_its_epoch_start() {
    const CONSUMER: i32 = -1;
    const DEBUGGING: i32 = -2;
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_leader, new_leader) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let _ = old_leader
        .append_records(TOPIC, 0, Bytes::from(batch(3, 1_000)), 1)
        .await
        .expect("append");
    // The follower copies the records, but the high watermark it learned is still 0.
    assert!(replicate_once(&old_leader, &new_leader).await > 0);
    let elected = metadata(
        PartitionAssignment {
            replicas: vec![FOLLOWER, LEADER],
            ..assignment(FOLLOWER, 2, 2, vec![FOLLOWER, LEADER])
        },
        &[],
    );
    new_leader
        .apply_metadata(&elected)
        .await
        .expect("new leader");
    old_leader
        .apply_metadata(&elected)
        .await
        .expect("old leader");
    let hosted = new_leader.partition(TOPIC, 0).expect("partition");
    assert_eq!((hosted.log_end_offset(), hosted.high_watermark()), (3, 0));

    // A consumer is told to retry rather than given the stale end offset 0.
    let early = new_leader
        .list_offsets_partition(TOPIC, 0, CONSUMER, 2)
        .expect_err("high watermark below the epoch start");
    assert_eq!(
        early.kafka_error_code(),
        78,
        "OFFSET_NOT_AVAILABLE: {early}"
    );
    assert!(
        new_leader
            .list_offsets_partition(TOPIC, 0, DEBUGGING, -1)
            .is_ok()
    );
    // The deposed leader answers consumers NOT_LEADER_OR_FOLLOWER, but the debugging id
    // reads its copy.
    let deposed = old_leader
        .list_offsets_partition(TOPIC, 0, CONSUMER, -1)
        .expect_err("not the leader");
    assert_eq!(deposed.kafka_error_code(), 6);
    assert!(
        old_leader
            .list_offsets_partition(TOPIC, 0, DEBUGGING, -1)
            .is_ok()
    );

    // The old leader fetches at its log end: the high watermark reaches the epoch start.
    let following = old_leader
        .partition(TOPIC, 0)
        .expect("old leader partition");
    let _read = new_leader
        .read_records_for_replica(
            TOPIC,
            0,
            LEADER,
            fetch_from(following.log_end_offset(), 2, 1 << 20),
        )
        .await
        .expect("replica fetch");
    assert_eq!(hosted.high_watermark(), 3);
    let ready = new_leader
        .list_offsets_partition(TOPIC, 0, CONSUMER, 2)
        .expect("the high watermark reached the epoch start");
    assert_eq!(ready.high_watermark(), 3);
}

/// acks=all waits in the leader epoch of its append: a leader that loses leadership and
/// wins it back (a preferred-leader election right after a failover) before its high
/// watermark covers the records must not acknowledge them, since its log was
/// truncated and refilled from the other leader meanwhile (Kafka's DelayedProduce
/// answers NOT_LEADER_OR_FOLLOWER). Before, the wait only asked whether this broker
/// led, and answered the old offsets once the refilled log passed them.
#[tokio::test]
async fn acks_all_waits_in_the_epoch_of_its_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, _follower) = pair(dir.path(), vec![LEADER, FOLLOWER]).await;
    let appended = leader
        .append_records(TOPIC, 0, Bytes::from(batch(2, 1_000)), -1)
        .await
        .expect("append");
    assert_eq!(appended.leader_epoch, 1);
    let waiting = {
        let leader = Arc::clone(&leader);
        tokio::spawn(async move {
            leader
                .wait_for_high_watermark(
                    TOPIC,
                    0,
                    appended.last_offset + 1,
                    appended.leader_epoch,
                    Duration::from_secs(10),
                )
                .await
        })
    };
    tokio::task::yield_now().await;
    // Epoch 2 goes to the follower, epoch 3 back to this broker, alone in the ISR, with
    // no await between (the waiter does not see the follower state): its high
    // watermark passes the offsets at once.
    let hosted = leader_partition(&leader);
    let _ = hosted.apply_assignment(&assignment(FOLLOWER, 2, 2, vec![FOLLOWER]), 0);
    let _ = hosted.apply_assignment(&assignment(LEADER, 3, 3, vec![LEADER]), 0);
    assert!(hosted.is_leader());
    assert!(hosted.high_watermark() > appended.last_offset);
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the wait ends")
        .expect("wait task");
    assert!(
        matches!(outcome, Err(PartitionError::NotLeader { .. })),
        "an append of epoch 1 answered in epoch 3: {outcome:?}"
    );
}
