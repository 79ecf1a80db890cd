//! Replication over the real Kafka listener in one process: broker 1 leads and serves
//! Fetch and OffsetForLeaderEpoch on a loopback socket, broker 2 follows with the
//! replica fetcher. Metadata is built by hand; no controller quorum is involved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use silt_broker::consumer_offsets::ConsumerOffsetsLog;
use silt_broker::group_coordinator::GroupCoordinator;
use silt_broker::replica_fetcher::{ReplicaFetcherConfig, ReplicaFetcherManager};
use silt_broker::replica_manager::{ReplicaManager, ReplicaManagerConfig};
use silt_broker::test_util::BatchSpec;

use crate::fetch_from;
use silt_controller::{
    BrokerId, BrokerRegistration, ClusterMetadata, Controller, ControllerConfig,
    PartitionAssignment, TopicId, TopicMetadata,
};
use silt_gateway::config::{BrokerConfig, ServeArgs};
use silt_gateway::context::BrokerContext;
use silt_gateway::leader_end_point::KafkaLeaderConnector;
use tokio::net::TcpListener;
use tokio::sync::watch;

const TOPIC: &str = "orders";
const LEADER: BrokerId = 1;
const FOLLOWER: BrokerId = 2;

fn batch(records: usize, tag: &str) -> Bytes {
    BatchSpec::new(records, 1_000).tag(tag).encode_bytes()
}

fn cluster(
    leader: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: Vec<BrokerId>,
    leader_port: u16,
) -> ClusterMetadata {
    let topic = TopicMetadata {
        name: TOPIC.to_string(),
        topic_id: TopicId(uuid::Uuid::from_u128(0x5117)),
        partitions: vec![PartitionAssignment {
            partition: 0,
            replicas: vec![LEADER, FOLLOWER],
            isr,
            leader,
            leader_epoch,
            partition_epoch,
        }],
        configs: BTreeMap::new(),
        internal: false,
        log_start_offsets: BTreeMap::new(),
    };
    let registration = BrokerRegistration {
        broker_id: LEADER,
        incarnation_id: uuid::Uuid::new_v4(),
        host: "127.0.0.1".to_string(),
        port: leader_port,
        rack: None,
        fenced: false,
    };
    ClusterMetadata {
        brokers: BTreeMap::from([(LEADER, registration)]),
        topics: BTreeMap::from([(TOPIC.to_string(), topic)]),
        ..ClusterMetadata::default()
    }
}

fn replica_manager(dir: &std::path::Path, broker_id: BrokerId) -> Arc<ReplicaManager> {
    ReplicaManager::new(ReplicaManagerConfig {
        broker_id,
        log_dirs: vec![dir.join(format!("broker-{broker_id}"))],
        log_defaults: BTreeMap::new(),
        replica_lag_time_max_ms: 30_000,
        preallocate_max_bytes: silt_broker::preallocate::DEFAULT_PREALLOCATE_MAX_BYTES,
        writeback: silt_broker::writeback::WritebackConfig::default(),
    })
}

/// Serves broker 1's replica manager on a loopback listener; returns its port and the
/// listener's shutdown switch.
async fn serve_leader(
    dir: &std::path::Path,
    leader: &Arc<ReplicaManager>,
    listener: TcpListener,
) -> watch::Sender<bool> {
    let port = listener.local_addr().expect("listener address").port();
    let settings = BTreeMap::from([
        (
            "log.dirs".to_string(),
            dir.join("broker-1").display().to_string(),
        ),
        (
            "listeners".to_string(),
            format!("PLAINTEXT://127.0.0.1:{port}"),
        ),
        ("node.id".to_string(), LEADER.to_string()),
    ]);
    let config = BrokerConfig::load(&ServeArgs {
        config_file: None,
        settings,
        overrides: Vec::new(),
    })
    .expect("config");
    let controller = Controller::start(ControllerConfig {
        node_id: LEADER,
        data_dir: dir.join("controller"),
        cluster_id: None,
        voters: Default::default(),
        listen_addr: None,
    })
    .await
    .expect("controller");
    let group_coordinator = GroupCoordinator::new(
        Arc::new(ConsumerOffsetsLog::new(Arc::clone(leader))),
        config.group.clone(),
    );
    let context = Arc::new(BrokerContext::new(
        config,
        controller,
        Arc::clone(leader),
        group_coordinator,
        "127.0.0.1".to_string(),
        port,
    ));
    let (shutdown, shutdown_receiver) = watch::channel(false);
    drop(tokio::spawn(silt_gateway::server::serve(
        listener,
        context,
        shutdown_receiver,
    )));
    shutdown
}

fn fetcher_config() -> ReplicaFetcherConfig {
    ReplicaFetcherConfig {
        max_wait_ms: 100,
        backoff_ms: 50,
        ..ReplicaFetcherConfig::default()
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_copies_the_leader_and_acks_all_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let metadata = cluster(LEADER, 1, 1, vec![LEADER, FOLLOWER], port);
    let leader = replica_manager(dir.path(), LEADER);
    let follower = replica_manager(dir.path(), FOLLOWER);
    leader
        .apply_metadata(&metadata)
        .await
        .expect("leader metadata");
    follower
        .apply_metadata(&metadata)
        .await
        .expect("follower metadata");
    let listener_shutdown = serve_leader(dir.path(), &leader, listener).await;
    let fetchers = ReplicaFetcherManager::new(
        Arc::clone(&follower),
        Arc::new(KafkaLeaderConnector),
        fetcher_config(),
    );
    fetchers.apply_metadata(&metadata);
    assert_eq!(fetchers.leaders(), vec![LEADER]);

    let appended = leader
        .append_records(TOPIC, 0, batch(3, "a"), -1)
        .await
        .expect("append");
    leader
        .wait_for_high_watermark(
            TOPIC,
            0,
            appended.last_offset + 1,
            appended.leader_epoch,
            Duration::from_secs(10),
        )
        .await
        .expect("acks=all commit");
    let following = follower.partition(TOPIC, 0).expect("follower partition");
    assert_eq!(following.log_end_offset(), 3);
    eventually("the follower high watermark", || {
        following.high_watermark() == 3
    })
    .await;

    // Leadership moves away from broker 1: the fetcher is dropped.
    let moved = cluster(FOLLOWER, 2, 2, vec![FOLLOWER], port);
    follower
        .apply_metadata(&moved)
        .await
        .expect("follower leads");
    fetchers.apply_metadata(&moved);
    assert!(fetchers.leaders().is_empty());
    fetchers.shutdown().await;
    let _ = listener_shutdown.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergent_follower_truncates_by_leader_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let broker_1 = replica_manager(dir.path(), LEADER);
    let broker_2 = replica_manager(dir.path(), FOLLOWER);

    // Epoch 1: broker 2 leads alone, broker 1 copies the first three records.
    let epoch_1 = cluster(FOLLOWER, 1, 1, vec![FOLLOWER], port);
    broker_1.apply_metadata(&epoch_1).await.expect("metadata");
    broker_2.apply_metadata(&epoch_1).await.expect("metadata");
    let _ = broker_2
        .append_records(TOPIC, 0, batch(3, "committed"), 1)
        .await
        .expect("append");
    let copied = broker_2
        .read_records_for_replica(TOPIC, 0, LEADER, fetch_from(0, 1, 1 << 20))
        .await
        .expect("copy");
    let on_broker_1 = broker_1.partition(TOPIC, 0).expect("partition");
    let _ = broker_1
        .follower(&on_broker_1, 1)
        .append(copied.records)
        .await
        .expect("append as follower");
    // Two records broker 1 never gets.
    let _ = broker_2
        .append_records(TOPIC, 0, batch(2, "lost"), 1)
        .await
        .expect("append");

    // Epoch 2: broker 1 leads and writes its own record at offset 3.
    let epoch_2 = cluster(LEADER, 2, 2, vec![LEADER, FOLLOWER], port);
    broker_1.apply_metadata(&epoch_2).await.expect("metadata");
    broker_2.apply_metadata(&epoch_2).await.expect("metadata");
    let _ = broker_1
        .append_records(TOPIC, 0, batch(1, "new"), 1)
        .await
        .expect("append");
    let listener_shutdown = serve_leader(dir.path(), &broker_1, listener).await;
    let fetchers = ReplicaFetcherManager::new(
        Arc::clone(&broker_2),
        Arc::new(KafkaLeaderConnector),
        fetcher_config(),
    );
    fetchers.apply_metadata(&epoch_2);

    let leading = broker_1.partition(TOPIC, 0).expect("partition");
    eventually("the leader high watermark", || {
        leading.high_watermark() == 4
    })
    .await;
    let following = broker_2.partition(TOPIC, 0).expect("partition");
    assert_eq!(following.log_end_offset(), 4);
    let (latest_epoch, epoch_1_end) = broker_2
        .local_epoch_view(&following, Some(1))
        .await
        .expect("epochs");
    assert_eq!(
        (latest_epoch, epoch_1_end),
        (Some(2), Some((1, 3))),
        "the lost records were replaced"
    );
    fetchers.shutdown().await;
    let _ = listener_shutdown.send(true);
}
