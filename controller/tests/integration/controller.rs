//! End-to-end scenarios of the controller through its public API, on a real data dir.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use silt_controller::BrokerRegistration;
use silt_controller::ClusterMetadata;
use silt_controller::CommandError;
use silt_controller::Controller;
use silt_controller::ControllerConfig;
use silt_controller::ControllerError;
use silt_controller::ControllerTuning;
use silt_controller::RemoteSegmentMetadata;
use silt_controller::RemoteSegmentState;
use silt_controller::TopicId;

fn config(dir: &Path) -> ControllerConfig {
    ControllerConfig {
        node_id: 1,
        data_dir: dir.join("__controller"),
        cluster_id: None,
        voters: std::collections::BTreeMap::new(),
        listen_addr: None,
    }
}

fn broker(broker_id: i32) -> BrokerRegistration {
    BrokerRegistration {
        broker_id,
        incarnation_id: uuid::Uuid::new_v4(),
        host: "127.0.0.1".to_owned(),
        port: 9092 + broker_id as u16,
        rack: None,
        fenced: false,
    }
}

fn remote_segment(
    topic_id: TopicId,
    partition: i32,
    base_offset: i64,
    end_offset: i64,
) -> RemoteSegmentMetadata {
    RemoteSegmentMetadata {
        topic_id,
        partition,
        segment_id: uuid::Uuid::new_v4(),
        base_offset,
        end_offset,
        max_timestamp_ms: 1_700_000_000_000 + end_offset,
        size_bytes: 1024 * 1024,
        leader_epoch: 0,
        state: RemoteSegmentState::CopyStarted,
        broker_id: 1,
        event_timestamp_ms: 1_700_000_000_000,
        segment_leader_epochs: BTreeMap::from([(0, base_offset)]),
        compacted: false,
    }
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// The parts of the metadata that must survive a restart (the offset and controller id
/// move on with the new leader term).
fn durable_part(metadata: &ClusterMetadata) -> ClusterMetadata {
    ClusterMetadata {
        controller_id: -1,
        metadata_offset: 0,
        ..metadata.clone()
    }
}

#[tokio::test]
async fn restart_keeps_topics_configs_brokers_and_producer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(config(dir.path())).await.unwrap();
    let first = controller.metadata();
    assert_eq!(first.cluster_id.len(), 22);
    assert_eq!(first.controller_id, 1);

    controller.register_broker(broker(1)).await.unwrap();
    controller.register_broker(broker(2)).await.unwrap();
    let orders = controller
        .create_topic("orders", 6, 2, configs(&[("retention.ms", "60000")]), false)
        .await
        .unwrap();
    controller
        .create_topic(
            "__consumer_offsets",
            3,
            1,
            configs(&[("cleanup.policy", "compact")]),
            true,
        )
        .await
        .unwrap();
    let doomed = controller
        .create_topic("doomed", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let copied = remote_segment(orders.topic_id, 0, 0, 99);
    controller
        .begin_remote_segment_copy(copied.clone())
        .await
        .unwrap();
    let finished = controller
        .finish_remote_segment_copy(orders.topic_id, 0, copied.segment_id)
        .await
        .unwrap();
    assert_eq!(finished.state, RemoteSegmentState::CopyFinished);
    assert!(finished.event_timestamp_ms >= copied.event_timestamp_ms);
    let uploading = remote_segment(orders.topic_id, 0, 100, 199);
    controller
        .begin_remote_segment_copy(uploading.clone())
        .await
        .unwrap();
    let retired = remote_segment(orders.topic_id, 1, 0, 49);
    controller
        .begin_remote_segment_copy(retired.clone())
        .await
        .unwrap();
    controller
        .finish_remote_segment_copy(orders.topic_id, 1, retired.segment_id)
        .await
        .unwrap();
    controller
        .begin_remote_segment_delete(orders.topic_id, 1, retired.segment_id)
        .await
        .unwrap();
    let removed = remote_segment(orders.topic_id, 2, 0, 9);
    controller
        .begin_remote_segment_copy(removed.clone())
        .await
        .unwrap();
    controller
        .begin_remote_segment_delete(orders.topic_id, 2, removed.segment_id)
        .await
        .unwrap();
    controller
        .finish_remote_segment_delete(orders.topic_id, 2, removed.segment_id)
        .await
        .unwrap();
    let orphan = remote_segment(doomed.topic_id, 0, 0, 9);
    controller
        .begin_remote_segment_copy(orphan.clone())
        .await
        .unwrap();
    controller
        .alter_topic_configs(
            "orders",
            configs(&[("segment.bytes", "1048576")]),
            vec!["retention.ms".to_owned()],
        )
        .await
        .unwrap();
    controller.create_partitions("orders", 8).await.unwrap();
    controller.delete_topic("doomed").await.unwrap();
    assert_eq!(controller.allocate_producer_ids(1000).await.unwrap(), 0);
    assert_eq!(controller.allocate_producer_ids(1000).await.unwrap(), 1000);
    let before = controller.metadata();
    controller.shutdown().await.unwrap();

    let restarted = Controller::start(config(dir.path())).await.unwrap();
    let after = restarted.metadata();
    assert_eq!(durable_part(&after), durable_part(&before));
    // A sole voter that restarts keeps its term and may resume without a new entry.
    assert!(after.metadata_offset >= before.metadata_offset);
    assert_eq!(after.controller_id, 1);
    let orders_after = after.topic("orders").unwrap();
    assert_eq!(orders_after.topic_id, orders.topic_id);
    assert_eq!(orders_after.partitions.len(), 8);
    assert_eq!(
        orders_after.configs,
        configs(&[("segment.bytes", "1048576")])
    );
    assert!(after.topic("__consumer_offsets").unwrap().internal);
    assert!(after.topic("doomed").is_none());
    assert_eq!(restarted.allocate_producer_ids(10).await.unwrap(), 2000);

    assert_eq!(
        after.remote_segment(orders.topic_id, 0, copied.segment_id),
        Some(&finished)
    );
    assert_eq!(
        after.remote_segment(orders.topic_id, 0, uploading.segment_id),
        Some(&uploading)
    );
    assert_eq!(
        after
            .remote_segment(orders.topic_id, 1, retired.segment_id)
            .map(|segment| segment.state),
        Some(RemoteSegmentState::DeleteStarted)
    );
    assert!(
        after
            .remote_segment(orders.topic_id, 2, removed.segment_id)
            .is_none()
    );
    assert_eq!(after.remote_log_start_offset(orders.topic_id, 0), Some(0));
    assert_eq!(after.remote_log_end_offset(orders.topic_id, 0), Some(100));
    assert_eq!(after.remote_log_end_offset(orders.topic_id, 1), None);
    assert_eq!(
        after
            .remote_segments(doomed.topic_id, 0)
            .collect::<Vec<_>>(),
        vec![&orphan]
    );
    let orphans: Vec<(TopicId, i32)> = after
        .remote_partitions()
        .filter(|(topic_id, _)| after.topic_by_id(*topic_id).is_none())
        .collect();
    assert_eq!(orphans, vec![(doomed.topic_id, 0)]);
    // Transitions go on from the restored states.
    restarted
        .finish_remote_segment_copy(orders.topic_id, 0, uploading.segment_id)
        .await
        .unwrap();
    restarted
        .finish_remote_segment_delete(orders.topic_id, 1, retired.segment_id)
        .await
        .unwrap();
    assert_eq!(
        restarted
            .metadata()
            .remote_log_end_offset(orders.topic_id, 0),
        Some(200)
    );
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn snapshot_and_log_purge_keep_state_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = ControllerTuning {
        snapshot_every_entries: 50,
        entries_kept_after_snapshot: 10,
        ..ControllerTuning::default()
    };
    let controller = Controller::start_with_tuning(config(dir.path()), tuning.clone())
        .await
        .unwrap();
    controller.register_broker(broker(1)).await.unwrap();
    let tiered = controller
        .create_topic("tiered", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let mut tiered_segments = Vec::new();
    for (index, base_offset) in (0..10i64).map(|index| (index, index * 100)) {
        let segment = remote_segment(tiered.topic_id, 0, base_offset, base_offset + 99);
        controller
            .begin_remote_segment_copy(segment.clone())
            .await
            .unwrap();
        if index < 8 {
            controller
                .finish_remote_segment_copy(tiered.topic_id, 0, segment.segment_id)
                .await
                .unwrap();
        }
        if index == 0 {
            controller
                .begin_remote_segment_delete(tiered.topic_id, 0, segment.segment_id)
                .await
                .unwrap();
        }
        tiered_segments.push(segment);
    }
    for i in 0..60 {
        let name = format!("topic-{i:03}");
        controller
            .create_topic(&name, 2, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let value = (i * 1000).to_string();
        controller
            .alter_topic_configs(&name, configs(&[("retention.ms", &value)]), Vec::new())
            .await
            .unwrap();
    }
    for _ in 0..40 {
        controller.allocate_producer_ids(5).await.unwrap();
    }
    let before = controller.metadata();
    assert!(before.metadata_offset > 150);

    let data_dir = config(dir.path()).data_dir;
    let log_path = data_dir.join("raft.log");
    let first_topic_purged = || {
        std::fs::read(&log_path)
            .unwrap()
            .windows(9)
            .all(|window| window != b"topic-000")
    };
    for _ in 0..100 {
        if first_topic_purged() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        first_topic_purged(),
        "early log entries were not purged after snapshots"
    );
    assert!(data_dir.join("snapshot.bin").exists());
    controller.shutdown().await.unwrap();

    let restarted = Controller::start_with_tuning(config(dir.path()), tuning)
        .await
        .unwrap();
    let after = restarted.metadata();
    assert_eq!(durable_part(&after), durable_part(&before));
    assert_eq!(after.topics.len(), 61);
    assert_eq!(
        after.topic("topic-059").unwrap().configs["retention.ms"],
        "59000"
    );
    assert_eq!(after.next_producer_id, 200);
    let states: Vec<RemoteSegmentState> = after
        .remote_segments(tiered.topic_id, 0)
        .map(|segment| segment.state)
        .collect();
    let mut expected = vec![RemoteSegmentState::DeleteStarted];
    expected.extend([RemoteSegmentState::CopyFinished; 7]);
    expected.extend([RemoteSegmentState::CopyStarted; 2]);
    assert_eq!(states, expected);
    assert_eq!(after.remote_log_start_offset(tiered.topic_id, 0), Some(100));
    assert_eq!(after.remote_log_end_offset(tiered.topic_id, 0), Some(800));
    let restored_ids: Vec<uuid::Uuid> = after
        .remote_segments(tiered.topic_id, 0)
        .map(|segment| segment.segment_id)
        .collect();
    let uploaded_ids: Vec<uuid::Uuid> = tiered_segments
        .iter()
        .map(|segment| segment.segment_id)
        .collect();
    assert_eq!(restored_ids, uploaded_ids);
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn torn_log_tail_is_tolerated_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = config(dir.path()).data_dir.join("raft.log");

    let first_run = Controller::start(config(dir.path())).await.unwrap();
    first_run.register_broker(broker(1)).await.unwrap();
    first_run
        .create_topic("kept", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    first_run.shutdown().await.unwrap();

    // A record header whose payload never reached the disk.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    log.write_all(&[120, 0, 0, 0, 9, 9, 9, 9, b'{', b'"'])
        .unwrap();
    drop(log);
    let after_garbage = Controller::start(config(dir.path())).await.unwrap();
    assert!(after_garbage.metadata().topic("kept").is_some());
    after_garbage
        .create_topic("last", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    after_garbage.shutdown().await.unwrap();

    // The final record ("last") cut short, as by a crash in the middle of its write.
    let cut_log = std::fs::OpenOptions::new()
        .write(true)
        .open(&log_path)
        .unwrap();
    let len = cut_log.metadata().unwrap().len();
    cut_log.set_len(len - 3).unwrap();
    drop(cut_log);
    let after_cut = Controller::start(config(dir.path())).await.unwrap();
    let metadata = after_cut.metadata();
    assert!(metadata.topic("kept").is_some());
    assert!(metadata.topic("last").is_none());
    after_cut
        .create_topic("last", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    after_cut.shutdown().await.unwrap();

    let after_rewrite = Controller::start(config(dir.path())).await.unwrap();
    assert!(after_rewrite.metadata().topic("last").is_some());
    after_rewrite.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_errors_map_to_kafka_meanings() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(config(dir.path())).await.unwrap();
    let no_brokers = controller
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await;
    assert!(
        matches!(
            no_brokers,
            Err(ControllerError::Rejected(
                CommandError::InvalidReplicationFactor(_)
            ))
        ),
        "{no_brokers:?}"
    );
    controller.register_broker(broker(1)).await.unwrap();

    let bad_name = controller
        .create_topic("bad name", 1, 1, BTreeMap::new(), false)
        .await;
    assert!(
        matches!(
            bad_name,
            Err(ControllerError::Rejected(CommandError::InvalidTopic(_)))
        ),
        "{bad_name:?}"
    );
    let too_many = controller
        .create_topic("t", 1, 2, BTreeMap::new(), false)
        .await;
    assert!(
        matches!(
            too_many,
            Err(ControllerError::Rejected(
                CommandError::InvalidReplicationFactor(_)
            ))
        ),
        "{too_many:?}"
    );
    let zero = controller
        .create_topic("t", 0, 1, BTreeMap::new(), false)
        .await;
    assert!(
        matches!(
            zero,
            Err(ControllerError::Rejected(CommandError::InvalidPartitions(
                _
            )))
        ),
        "{zero:?}"
    );

    controller
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let again = controller
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await;
    assert!(
        matches!(again, Err(ControllerError::Rejected(CommandError::TopicAlreadyExists(name))) if name == "t")
    );
    let unknown = controller.delete_topic("missing").await;
    assert!(
        matches!(unknown, Err(ControllerError::Rejected(CommandError::UnknownTopic(name))) if name == "missing")
    );
    let shrink = controller.create_partitions("t", 1).await;
    assert!(
        matches!(
            shrink,
            Err(ControllerError::Rejected(CommandError::InvalidPartitions(
                _
            )))
        ),
        "{shrink:?}"
    );
    let empty_key = controller
        .alter_topic_configs("t", configs(&[("", "x")]), Vec::new())
        .await;
    assert!(
        matches!(
            empty_key,
            Err(ControllerError::Rejected(CommandError::InvalidConfig(_)))
        ),
        "{empty_key:?}"
    );

    let topic_id = controller.metadata().topic("t").unwrap().topic_id;
    let unknown_topic = controller
        .begin_remote_segment_copy(remote_segment(TopicId(uuid::Uuid::new_v4()), 0, 0, 9))
        .await;
    assert!(
        matches!(
            unknown_topic,
            Err(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(_)
            ))
        ),
        "{unknown_topic:?}"
    );
    let backwards = controller
        .begin_remote_segment_copy(remote_segment(topic_id, 0, 10, 9))
        .await;
    assert!(
        matches!(
            backwards,
            Err(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(_)
            ))
        ),
        "{backwards:?}"
    );
    let first = remote_segment(topic_id, 0, 0, 9);
    let duplicate = remote_segment(topic_id, 0, 5, 9);
    controller
        .begin_remote_segment_copy(first.clone())
        .await
        .unwrap();
    let same_id = controller.begin_remote_segment_copy(first.clone()).await;
    assert!(
        matches!(
            same_id,
            Err(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(_)
            ))
        ),
        "{same_id:?}"
    );
    controller
        .begin_remote_segment_copy(duplicate.clone())
        .await
        .unwrap();
    controller
        .finish_remote_segment_copy(topic_id, 0, first.segment_id)
        .await
        .unwrap();
    let overlap = controller
        .finish_remote_segment_copy(topic_id, 0, duplicate.segment_id)
        .await;
    assert!(
        matches!(
            overlap,
            Err(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(_)
            ))
        ),
        "{overlap:?}"
    );
    let not_deleting = controller
        .finish_remote_segment_delete(topic_id, 0, first.segment_id)
        .await;
    assert!(
        matches!(
            not_deleting,
            Err(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(_)
            ))
        ),
        "{not_deleting:?}"
    );
    let unknown_segment = controller
        .begin_remote_segment_delete(topic_id, 0, uuid::Uuid::new_v4())
        .await;
    assert!(
        matches!(
            unknown_segment,
            Err(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(_)
            ))
        ),
        "{unknown_segment:?}"
    );

    controller.shutdown().await.unwrap();
    let stopped = controller.allocate_producer_ids(1).await;
    assert!(
        matches!(stopped, Err(ControllerError::Raft(_))),
        "{stopped:?}"
    );
    controller.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribers_follow_changes_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(config(dir.path())).await.unwrap();
    let mut updates = controller.subscribe();
    let start_offset = updates.borrow().metadata_offset;

    controller.register_broker(broker(1)).await.unwrap();
    updates.changed().await.unwrap();
    let registered = updates.borrow_and_update().clone();
    assert!(registered.metadata_offset > start_offset);
    assert!(registered.broker(1).is_some());

    let topic = controller
        .create_topic("events", 3, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    updates.changed().await.unwrap();
    let created = updates.borrow_and_update().clone();
    assert!(created.metadata_offset > registered.metadata_offset);
    assert_eq!(created.topic_by_id(topic.topic_id), Some(&topic));
    assert_eq!(
        controller.metadata().metadata_offset,
        created.metadata_offset
    );
    controller.shutdown().await.unwrap();
}

#[tokio::test]
async fn data_dir_is_exclusive_and_cluster_id_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut first_config = config(dir.path());
    first_config.cluster_id = Some("MkU3OEVBNTcwNTJENDM2Qk".to_owned());
    let controller = Controller::start(first_config.clone()).await.unwrap();
    assert_eq!(controller.metadata().cluster_id, "MkU3OEVBNTcwNTJENDM2Qk");

    let second = Controller::start(config(dir.path())).await;
    assert!(
        matches!(second, Err(ControllerError::Storage(_))),
        "{second:?}"
    );
    controller.shutdown().await.unwrap();

    let mut other_cluster = config(dir.path());
    other_cluster.cluster_id = Some("another-cluster-id-xyz".to_owned());
    let mismatch = Controller::start(other_cluster).await;
    assert!(
        matches!(
            mismatch,
            Err(ControllerError::Rejected(CommandError::InvalidConfig(_)))
        ),
        "{mismatch:?}"
    );

    let restarted = Controller::start(config(dir.path())).await.unwrap();
    assert_eq!(restarted.metadata().cluster_id, "MkU3OEVBNTcwNTJENDM2Qk");
    restarted.shutdown().await.unwrap();

    let negative = Controller::start(ControllerConfig {
        node_id: -1,
        ..config(dir.path())
    })
    .await;
    assert!(
        matches!(
            negative,
            Err(ControllerError::Rejected(CommandError::InvalidConfig(_)))
        ),
        "{negative:?}"
    );
}
