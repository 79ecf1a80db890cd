//! Three controller voters in one process on loopback: election, forwarding, failover,
//! catch-up, broker liveness and broker-only nodes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use silt_controller::AlterPartitionRequest;
use silt_controller::BrokerId;
use silt_controller::BrokerRegistration;
use silt_controller::ClusterMetadata;
use silt_controller::CommandError;
use silt_controller::Controller;
use silt_controller::ControllerConfig;
use silt_controller::ControllerError;
use silt_controller::ControllerTuning;

fn fast_tuning() -> ControllerTuning {
    ControllerTuning {
        leadership_timeout: Duration::from_secs(20),
        raft_heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        broker_session_timeout: Duration::from_millis(1_500),
        ..ControllerTuning::default()
    }
}

/// Free loopback ports, found by binding port 0.
fn free_addrs(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap())
        .collect()
}

struct Quorum {
    dir: tempfile::TempDir,
    addrs: BTreeMap<BrokerId, SocketAddr>,
    tuning: ControllerTuning,
}

impl Quorum {
    fn new(tuning: ControllerTuning) -> Quorum {
        let addrs = (1..=3).zip(free_addrs(3)).collect();
        Quorum {
            dir: tempfile::tempdir().unwrap(),
            addrs,
            tuning,
        }
    }

    fn voters(&self) -> BTreeMap<BrokerId, String> {
        self.addrs
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect()
    }

    fn config(&self, node_id: BrokerId) -> ControllerConfig {
        ControllerConfig {
            node_id,
            data_dir: data_dir(self.dir.path(), node_id),
            cluster_id: None,
            voters: self.voters(),
            listen_addr: Some(self.addrs[&node_id]),
        }
    }

    async fn start(&self, node_id: BrokerId) -> Controller {
        Controller::start_with_tuning(self.config(node_id), self.tuning.clone())
            .await
            .unwrap()
    }

    async fn start_all(&self) -> BTreeMap<BrokerId, Controller> {
        let (one, two, three) = tokio::join!(self.start(1), self.start(2), self.start(3));
        BTreeMap::from([(1, one), (2, two), (3, three)])
    }
}

fn data_dir(root: &Path, node_id: BrokerId) -> std::path::PathBuf {
    root.join(format!("node-{node_id}")).join("__controller")
}

fn broker(broker_id: BrokerId) -> BrokerRegistration {
    BrokerRegistration {
        broker_id,
        incarnation_id: uuid::Uuid::new_v4(),
        host: "127.0.0.1".to_owned(),
        port: 9092,
        rack: None,
        fenced: false,
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leader_of(nodes: &BTreeMap<BrokerId, Controller>) -> Option<BrokerId> {
    let active: Vec<BrokerId> = nodes
        .iter()
        .filter(|(_, node)| node.is_active())
        .map(|(id, _)| *id)
        .collect();
    (active.len() == 1).then(|| active[0])
}

/// The replicated part of the metadata (`controller_id` moves with each leader).
fn replicated(metadata: &ClusterMetadata) -> ClusterMetadata {
    ClusterMetadata {
        controller_id: -1,
        ..metadata.clone()
    }
}

async fn wait_same_metadata(nodes: &[&Controller], at_least_offset: u64) {
    eventually(Duration::from_secs(10), "replicas to agree", || async {
        let first = nodes[0].metadata();
        first.metadata_offset >= at_least_offset
            && nodes
                .iter()
                .all(|node| replicated(&node.metadata()) == replicated(&first))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_elect_a_leader_and_writes_through_a_follower_reach_all() {
    let quorum = Quorum::new(fast_tuning());
    let nodes = quorum.start_all().await;
    let leader = leader_of(&nodes).expect("exactly one active controller");
    for node in nodes.values() {
        assert_eq!(node.active_controller_id(), Some(leader));
        let metadata = node.metadata();
        assert_eq!(metadata.cluster_id.len(), 22);
        assert_eq!(metadata.controller_id, leader);
    }
    let cluster_ids: Vec<String> = nodes
        .values()
        .map(|node| node.metadata().cluster_id.clone())
        .collect();
    assert!(cluster_ids.iter().all(|id| *id == cluster_ids[0]));

    let follower_id = *nodes.keys().find(|id| **id != leader).unwrap();
    let follower = &nodes[&follower_id];
    assert!(!follower.is_active());
    for broker_id in 1..=3 {
        follower.register_broker(broker(broker_id)).await.unwrap();
    }
    let topic = follower
        .create_topic("orders", 3, 3, BTreeMap::new(), false)
        .await
        .unwrap();
    assert_eq!(topic.partitions.len(), 3);
    // Request errors travel back through the forwarding unchanged.
    let again = follower
        .create_topic("orders", 3, 3, BTreeMap::new(), false)
        .await;
    assert!(
        matches!(
            again,
            Err(ControllerError::Rejected(CommandError::TopicAlreadyExists(
                _
            )))
        ),
        "{again:?}"
    );

    let offset = nodes[&leader].metadata().metadata_offset;
    let all: Vec<&Controller> = nodes.values().collect();
    wait_same_metadata(&all, offset).await;
    for node in nodes.values() {
        assert_eq!(node.metadata().topic("orders"), Some(&topic));
    }
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leader_keeps_the_quorum_writable_and_the_restarted_voter_catches_up() {
    let quorum = Quorum::new(fast_tuning());
    let mut nodes = quorum.start_all().await;
    let first_leader = leader_of(&nodes).unwrap();
    nodes[&first_leader]
        .register_broker(broker(1))
        .await
        .unwrap();
    nodes[&first_leader]
        .create_topic("before", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();

    let stopped = nodes.remove(&first_leader).unwrap();
    stopped.shutdown().await.unwrap();
    let refused = stopped.allocate_producer_ids(1).await;
    assert!(
        matches!(refused, Err(ControllerError::Raft(_))),
        "{refused:?}"
    );
    drop(stopped);

    // Writes on either survivor go through once a new leader is elected.
    let survivors: Vec<BrokerId> = nodes.keys().copied().collect();
    nodes[&survivors[0]]
        .create_topic("during-1", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    nodes[&survivors[1]]
        .create_topic("during-2", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let new_leader = leader_of(&nodes).expect("a survivor leads");
    assert_ne!(new_leader, first_leader);
    let offset = nodes[&new_leader].metadata().metadata_offset;
    let alive: Vec<&Controller> = nodes.values().collect();
    wait_same_metadata(&alive, offset).await;
    for node in nodes.values() {
        assert_eq!(node.metadata().controller_id, new_leader);
        for name in ["before", "during-1", "during-2"] {
            assert!(node.metadata().topic(name).is_some(), "{name}");
        }
    }

    let restarted = quorum.start(first_leader).await;
    nodes[&new_leader]
        .create_topic("after", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let _ = nodes.insert(first_leader, restarted);
    let offset = nodes[&new_leader].metadata().metadata_offset;
    let all: Vec<&Controller> = nodes.values().collect();
    wait_same_metadata(&all, offset).await;
    let caught_up = nodes[&first_leader].metadata();
    for name in ["before", "during-1", "during-2", "after"] {
        assert!(caught_up.topic(name).is_some(), "{name}");
    }
    // The restarted voter serves writes too.
    nodes[&first_leader]
        .allocate_producer_ids(10)
        .await
        .unwrap();
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_broker_is_fenced_within_the_session_timeout_and_loses_its_leaderships() {
    let tuning = fast_tuning();
    let session_timeout = tuning.broker_session_timeout;
    let quorum = Quorum::new(tuning);
    let nodes = quorum.start_all().await;
    let leader = leader_of(&nodes).unwrap();
    let follower = nodes.values().find(|node| !node.is_active()).unwrap();

    let registrations: Vec<BrokerRegistration> = (1..=3).map(broker).collect();
    for registration in &registrations {
        follower
            .register_broker(registration.clone())
            .await
            .unwrap();
    }
    let topic = follower
        .create_topic("orders", 6, 3, BTreeMap::new(), false)
        .await
        .unwrap();
    let silent: BrokerId = 3;
    let led_by_silent: Vec<i32> = topic
        .partitions
        .iter()
        .filter(|partition| partition.leader == silent)
        .map(|partition| partition.partition)
        .collect();
    assert!(!led_by_silent.is_empty());

    // Brokers 1 and 2 heartbeat (through a follower); broker 3 stays silent.
    let heartbeats = {
        let follower = follower.clone();
        let live: Vec<BrokerRegistration> = registrations[..2].to_vec();
        tokio::spawn(async move {
            loop {
                for registration in &live {
                    let offset = follower.metadata().metadata_offset;
                    let answer = follower
                        .broker_heartbeat(
                            registration.broker_id,
                            registration.incarnation_id,
                            offset,
                        )
                        .await
                        .unwrap();
                    assert!(!answer.fenced);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = tokio::time::Instant::now();
    eventually(
        session_timeout * 3,
        "the silent broker to be fenced",
        || async {
            nodes[&leader]
                .metadata()
                .broker(silent)
                .is_some_and(|b| b.fenced)
        },
    )
    .await;
    let fenced_after = started.elapsed();
    assert!(
        fenced_after >= session_timeout / 2,
        "fenced too early: {fenced_after:?}"
    );
    assert!(
        fenced_after <= session_timeout + Duration::from_secs(1),
        "fenced late: {fenced_after:?}"
    );
    let metadata = nodes[&leader].metadata();
    assert!(!metadata.broker(1).unwrap().fenced);
    assert!(!metadata.broker(2).unwrap().fenced);
    let orders = metadata.topic("orders").unwrap();
    for partition in &orders.partitions {
        assert_ne!(partition.leader, silent);
        assert!(!partition.isr.contains(&silent));
        let before = &topic.partitions[partition.partition as usize];
        if led_by_silent.contains(&partition.partition) {
            assert_eq!(partition.leader, partition.isr[0]);
            assert_eq!(partition.leader_epoch, before.leader_epoch + 1);
        } else {
            assert_eq!(partition.leader, before.leader);
        }
        assert_eq!(partition.partition_epoch, before.partition_epoch + 1);
    }

    // A stale incarnation is refused; the live one is unfenced once caught up.
    let stale = follower
        .broker_heartbeat(silent, uuid::Uuid::new_v4(), u64::MAX)
        .await;
    assert!(
        matches!(
            stale,
            Err(ControllerError::Rejected(CommandError::StaleBrokerEpoch(_)))
        ),
        "{stale:?}"
    );
    let silent_incarnation = registrations[2].incarnation_id;
    let behind = follower
        .broker_heartbeat(silent, silent_incarnation, 0)
        .await
        .unwrap();
    assert!(
        behind.fenced,
        "a broker behind its registration stays fenced"
    );
    let offset = follower.metadata().metadata_offset;
    let caught_up = follower
        .broker_heartbeat(silent, silent_incarnation, offset)
        .await
        .unwrap();
    assert!(!caught_up.fenced);
    assert!(!nodes[&leader].metadata().broker(silent).unwrap().fenced);

    // AlterPartition from the leader of a partition puts broker 3 back in its ISR.
    let partition = nodes[&leader]
        .metadata()
        .topic("orders")
        .unwrap()
        .partitions[0]
        .clone();
    let mut new_isr = partition.isr.clone();
    new_isr.push(silent);
    let altered = follower
        .alter_partition(AlterPartitionRequest {
            broker_id: partition.leader,
            topic_id: topic.topic_id,
            partition: 0,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            new_isr: new_isr.clone(),
        })
        .await
        .unwrap();
    assert_eq!(altered.isr, new_isr);
    assert_eq!(altered.partition_epoch, partition.partition_epoch + 1);
    let stale_update = follower
        .alter_partition(AlterPartitionRequest {
            broker_id: partition.leader,
            topic_id: topic.topic_id,
            partition: 0,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            new_isr,
        })
        .await;
    assert!(
        matches!(
            stale_update,
            Err(ControllerError::Rejected(
                CommandError::InvalidUpdateVersion(_)
            ))
        ),
        "{stale_update:?}"
    );

    // Controlled shutdown fences at once, and heartbeats do not undo it.
    follower
        .controlled_shutdown(silent, silent_incarnation)
        .await
        .unwrap();
    assert!(nodes[&leader].metadata().broker(silent).unwrap().fenced);
    let offset = follower.metadata().metadata_offset;
    let still = follower
        .broker_heartbeat(silent, silent_incarnation, offset)
        .await
        .unwrap();
    assert!(still.fenced);

    heartbeats.abort();
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preferred_leaders_come_back_after_a_broker_returns() {
    let tuning = ControllerTuning {
        leader_imbalance_check_interval: Duration::from_millis(300),
        ..fast_tuning()
    };
    let quorum = Quorum::new(tuning);
    let nodes = quorum.start_all().await;
    let leader = leader_of(&nodes).unwrap();
    let active = &nodes[&leader];
    let registrations: Vec<BrokerRegistration> = (1..=2).map(broker).collect();
    for registration in &registrations {
        active.register_broker(registration.clone()).await.unwrap();
    }
    let topic = active
        .create_topic("t", 4, 2, BTreeMap::new(), false)
        .await
        .unwrap();
    let preferred: Vec<BrokerId> = topic.partitions.iter().map(|p| p.replicas[0]).collect();
    active
        .controlled_shutdown(1, registrations[0].incarnation_id)
        .await
        .unwrap();
    let moved = active.metadata();
    assert!(
        moved
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == 2)
    );

    // Broker 1 comes back and rejoins the ISRs; the periodic election restores it.
    let restarted = BrokerRegistration {
        incarnation_id: uuid::Uuid::new_v4(),
        ..registrations[0].clone()
    };
    active.register_broker(restarted.clone()).await.unwrap();
    let offset = active.metadata().metadata_offset;
    let answer = active
        .broker_heartbeat(1, restarted.incarnation_id, offset)
        .await
        .unwrap();
    assert!(!answer.fenced);
    for partition in active.metadata().topic("t").unwrap().partitions.clone() {
        let _altered = active
            .alter_partition(AlterPartitionRequest {
                broker_id: partition.leader,
                topic_id: topic.topic_id,
                partition: partition.partition,
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                new_isr: vec![2, 1],
            })
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(5), "preferred leaders", || async {
        let metadata = active.metadata();
        let leaders: Vec<BrokerId> = metadata
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        leaders == preferred
    })
    .await;
    assert_eq!(active.elect_preferred_leaders().await.unwrap(), 0);
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_only_node_follows_metadata_and_forwards_writes() {
    let quorum = Quorum::new(fast_tuning());
    let nodes = quorum.start_all().await;
    let observer = Controller::connect_with_tuning(7, quorum.voters(), fast_tuning())
        .await
        .unwrap();
    assert!(!observer.is_active());
    assert_eq!(
        observer.metadata().cluster_id,
        nodes[&1].metadata().cluster_id
    );
    observer.register_broker(broker(7)).await.unwrap();
    let topic = observer
        .create_topic("from-observer", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let mut updates = observer.subscribe();
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        updates.wait_for(|metadata| metadata.topic("from-observer").is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(seen.topic("from-observer"), Some(&topic));
    assert_eq!(observer.active_controller_id(), leader_of(&nodes));
    let heartbeat = observer
        .broker_heartbeat(
            7,
            seen.broker(7).unwrap().incarnation_id,
            seen.metadata_offset,
        )
        .await
        .unwrap();
    assert!(!heartbeat.fenced);
    observer.shutdown().await.unwrap();
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_voter_set_without_this_node_or_a_listener_is_refused() {
    let quorum = Quorum::new(fast_tuning());
    let mut missing_listener = quorum.config(1);
    missing_listener.listen_addr = None;
    let result = Controller::start_with_tuning(missing_listener, fast_tuning()).await;
    assert!(
        matches!(
            result,
            Err(ControllerError::Rejected(CommandError::InvalidConfig(_)))
        ),
        "{result:?}"
    );
    let mut not_a_voter = quorum.config(1);
    not_a_voter.node_id = 9;
    let result = Controller::start_with_tuning(not_a_voter, fast_tuning()).await;
    assert!(
        matches!(
            result,
            Err(ControllerError::Rejected(CommandError::InvalidConfig(_)))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_behind_the_purged_log_catches_up_from_a_snapshot() {
    let quorum = Quorum::new(ControllerTuning {
        snapshot_every_entries: 20,
        entries_kept_after_snapshot: 5,
        ..fast_tuning()
    });
    let mut nodes = quorum.start_all().await;
    let leader = leader_of(&nodes).unwrap();
    let lagging_id = *nodes.keys().find(|id| **id != leader).unwrap();
    let lagging = nodes.remove(&lagging_id).unwrap();
    lagging.shutdown().await.unwrap();
    drop(lagging);

    nodes[&leader].register_broker(broker(1)).await.unwrap();
    for round in 0..60 {
        nodes[&leader]
            .create_topic(&format!("t-{round}"), 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
    }
    let restarted = quorum.start(lagging_id).await;
    let _ = nodes.insert(lagging_id, restarted);
    let offset = nodes[&leader].metadata().metadata_offset;
    let all: Vec<&Controller> = nodes.values().collect();
    wait_same_metadata(&all, offset).await;
    assert_eq!(nodes[&lagging_id].metadata().topics.len(), 60);
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}
