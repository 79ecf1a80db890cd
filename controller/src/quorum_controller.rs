//! [`Controller`], the handle to the cluster metadata quorum (Kafka's
//! `QuorumController` and its client): starting or attaching to the raft quorum,
//! writes through the raft log (forwarded to the active controller when this node is
//! not it), reads of the applied metadata, and the active controller's background
//! duties (broker liveness, leader elections).
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use openraft::BasicNode;
use openraft::Raft;
use openraft::SnapshotPolicy;
use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster_metadata::AlterPartitionRequest;
use crate::cluster_metadata::BrokerId;
use crate::cluster_metadata::BrokerRegistration;
use crate::cluster_metadata::ClusterMetadata;
use crate::cluster_metadata::HeartbeatResponse;
use crate::cluster_metadata::PartitionAssignment;
use crate::cluster_metadata::RemoteSegmentMetadata;
use crate::cluster_metadata::RemoteSegmentState;
use crate::cluster_metadata::RestoredTopic;
use crate::cluster_metadata::TopicId;
use crate::cluster_metadata::TopicMetadata;
use crate::command::CommandError;
use crate::error::ControllerError;

use crate::command::Command;
use crate::command::CommandOutput;
use crate::command::NewTopic;
use crate::command::NodeId;
use crate::command::TypeConfig;
use crate::liveness::Liveness;
use crate::log_store::LogStore;
use crate::metadata_store::MetadataPublisher;
use crate::metadata_store::MetadataStore;
use crate::network::ControllerNetwork;
use crate::network::HeartbeatRequest;
use crate::network::LeaderAnswer;
use crate::network::routes;

const LOCK_FILE: &str = ".lock";

/// Per-attempt timeout of a write forwarded to the active controller.
const FORWARD_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between forwarding attempts while no leader is known.
const MAX_FORWARD_BACKOFF: Duration = Duration::from_millis(200);

/// Where and as whom a controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// This node's id (`node.id`), `>= 0`; also its raft voter id.
    pub node_id: BrokerId,
    /// The controller's own directory (e.g. `<log.dirs>/__controller`); created if missing.
    /// Holds the raft log, vote, snapshot and a lock file.
    pub data_dir: PathBuf,
    /// The cluster id to use on first start; generated (22-char base64url of a random uuid,
    /// as Kafka does) if `None`. On later starts it must match the stored one if given.
    pub cluster_id: Option<String>,
    /// Every voter of the quorum, this node included: node id -> controller RPC address
    /// (`host:port`, as the other voters reach it). Empty means a single-voter quorum of
    /// this node alone, which needs no listener.
    pub voters: BTreeMap<BrokerId, String>,
    /// Bind address of this node's controller RPC server (e.g. `0.0.0.0:9093`); required
    /// when `voters` is non-empty, ignored otherwise.
    pub listen_addr: Option<SocketAddr>,
}

/// Raft and liveness tuning knobs; [`Default`] suits production.
#[derive(Clone, Debug)]
pub struct ControllerTuning {
    /// A snapshot is taken after this many log entries since the previous one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the latest snapshot (the rest is purged).
    pub entries_kept_after_snapshot: u64,
    /// How long [`Controller::start`] waits for a leader to be elected and its state
    /// (with the cluster id) to be applied here. Default 60 s.
    pub leadership_timeout: Duration,
    /// Raft heartbeat interval of the leader. Default 150 ms.
    pub raft_heartbeat_interval: Duration,
    /// Lower bound of the randomized raft election timeout. Default 1 s.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized raft election timeout. Default 2 s.
    pub election_timeout_max: Duration,
    /// Kafka `broker.session.timeout.ms`: a broker without a heartbeat for this long is
    /// fenced. Default 9 s.
    pub broker_session_timeout: Duration,
    /// Kafka `unclean.leader.election.enable` for topics without an override. Default false.
    pub unclean_leader_election_enable: bool,
    /// Kafka `auto.leader.rebalance.enable`: move leadership back to preferred replicas
    /// every `leader_imbalance_check_interval`. Default true.
    pub auto_leader_rebalance_enable: bool,
    /// Kafka `leader.imbalance.check.interval.seconds`. Default 300 s.
    pub leader_imbalance_check_interval: Duration,
    /// How long a write keeps being retried across leader changes before
    /// [`ControllerError::NotController`]. Default 10 s.
    pub forward_timeout: Duration,
}

impl Default for ControllerTuning {
    fn default() -> Self {
        ControllerTuning {
            snapshot_every_entries: 1_000,
            entries_kept_after_snapshot: 100,
            leadership_timeout: Duration::from_secs(60),
            raft_heartbeat_interval: Duration::from_millis(150),
            election_timeout_min: Duration::from_millis(1_000),
            election_timeout_max: Duration::from_millis(2_000),
            broker_session_timeout: Duration::from_millis(9_000),
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            forward_timeout: Duration::from_secs(10),
        }
    }
}

/// Handle to this node's view of the metadata quorum: a voter (from [`Controller::start`])
/// or a broker-only observer (from [`Controller::connect`]). Cheap to clone; all clones
/// share the same node.
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) node_id: BrokerId,
    /// The local raft node; `None` on a broker-only node.
    pub(crate) raft: Option<Raft<TypeConfig>>,
    pub(crate) publisher: Arc<MetadataPublisher>,
    /// Voter id -> controller RPC address; empty for a single voter.
    pub(crate) voters: BTreeMap<BrokerId, String>,
    pub(crate) http: reqwest::Client,
    pub(crate) tuning: ControllerTuning,
    /// The cluster id to set when this node leads a quorum without one.
    pub(crate) configured_cluster_id: Option<String>,
    /// Heartbeat bookkeeping, used while this node is the active controller.
    pub(crate) liveness: Mutex<Liveness>,
    /// The active controller last heard of (broker-only nodes).
    pub(crate) leader_hint: Mutex<Option<BrokerId>>,
    /// Held (locked) while running, so two processes never share a data dir.
    pub(crate) dir_lock: Mutex<Option<File>>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A request only the active controller may serve.
#[derive(Clone, Debug)]
pub(crate) enum LeaderRequest {
    Propose(Command),
    Heartbeat(HeartbeatRequest),
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.inner.node_id)
            .field("voter", &self.inner.raft.is_some())
            .field(
                "metadata_offset",
                &self.inner.publisher.borrow().metadata_offset,
            )
            .finish()
    }
}

impl Controller {
    /// Opens or creates the durable raft log and state in `config.data_dir`, serves the
    /// controller RPC routes on `config.listen_addr` (multi-voter only), initializes the
    /// membership with every voter on first start, and waits until a leader is elected and
    /// this node has applied its state including the cluster id (set by the leader on first
    /// start).
    ///
    /// Errors: [`CommandError::InvalidConfig`] for a negative node id, a voter set
    /// without this node or without `listen_addr`, or a cluster id that differs from the
    /// stored one; [`ControllerError::Storage`] if the directory cannot be used (locked by
    /// another process, unreadable, corrupt snapshot) or the listener cannot be bound;
    /// [`ControllerError::Raft`] if no leader is ready within the timeout.
    pub async fn start(config: ControllerConfig) -> Result<Controller, ControllerError> {
        Controller::start_with_tuning(config, ControllerTuning::default()).await
    }

    /// [`Controller::start`] with explicit tuning (snapshots, raft timeouts, liveness).
    pub async fn start_with_tuning(
        config: ControllerConfig,
        tuning: ControllerTuning,
    ) -> Result<Controller, ControllerError> {
        let Ok(raft_node_id) = NodeId::try_from(config.node_id) else {
            return Err(ControllerError::Rejected(CommandError::InvalidConfig(
                format!(
                    "controller node id must be non-negative, got {}",
                    config.node_id
                ),
            )));
        };
        if config.cluster_id.as_deref() == Some("") {
            return Err(ControllerError::Rejected(CommandError::InvalidConfig(
                "cluster id is empty".to_owned(),
            )));
        }
        let listen_addr = validate_voters(&config)?;
        tokio::fs::create_dir_all(&config.data_dir).await?;
        let dir_lock = lock_data_dir(&config.data_dir).await?;
        let log_store = LogStore::open(&config.data_dir).await?;
        let metadata_store = MetadataStore::open(&config.data_dir).await?;
        metadata_store.set_local_node(config.node_id);
        let publisher = metadata_store.publisher();
        let http = crate::network::http_client().map_err(|error| {
            ControllerError::Rejected(CommandError::InvalidConfig(format!("http client: {error}")))
        })?;

        let raft_config = openraft::Config {
            cluster_name: "silt-controller".to_owned(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_entries),
            max_in_snapshot_log_to_keep: tuning.entries_kept_after_snapshot,
            heartbeat_interval: duration_ms(tuning.raft_heartbeat_interval),
            election_timeout_min: duration_ms(tuning.election_timeout_min),
            election_timeout_max: duration_ms(tuning.election_timeout_max),
            install_snapshot_timeout: 5_000,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|error| {
            ControllerError::Rejected(CommandError::InvalidConfig(format!("raft config: {error}")))
        })?;
        let raft = Raft::new(
            raft_node_id,
            Arc::new(raft_config),
            ControllerNetwork::new(http.clone()),
            log_store,
            metadata_store,
        )
        .await
        .map_err(|error| ControllerError::Raft(error.to_string()))?;

        let (stop, _stop_receiver) = watch::channel(false);
        let controller = Controller {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft: Some(raft),
                publisher,
                voters: config.voters.clone(),
                http,
                tuning: tuning.clone(),
                configured_cluster_id: config.cluster_id.clone(),
                liveness: Mutex::new(Liveness::default()),
                leader_hint: Mutex::new(None),
                dir_lock: Mutex::new(Some(dir_lock)),
                stop,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        if let Some(listen_addr) = listen_addr {
            match tokio::net::TcpListener::bind(listen_addr).await {
                Ok(listener) => {
                    let task = crate::server::spawn(controller.clone(), listener);
                    controller.inner.tasks.lock().push(task);
                }
                Err(error) => {
                    let _ignored = controller.shutdown().await;
                    return Err(ControllerError::Storage(io::Error::new(
                        error.kind(),
                        format!("binding the controller listener {listen_addr}: {error}"),
                    )));
                }
            }
        }
        let duties = tokio::spawn(crate::liveness::leader_duties(controller.clone()));
        controller.inner.tasks.lock().push(duties);

        match controller
            .become_ready(&config, tuning.leadership_timeout)
            .await
        {
            Ok(()) => Ok(controller),
            Err(error) => {
                if let Err(shutdown_error) = controller.shutdown().await {
                    tracing::warn!(%shutdown_error, "controller shutdown after a failed start failed");
                }
                Err(error)
            }
        }
    }

    /// Attaches a broker-only node (not a voter) to the quorum at `voters` (voter id ->
    /// controller `host:port`). The handle offers the same API as a voter's: metadata is
    /// long-polled from a voter, writes and heartbeats are forwarded to the active
    /// controller. Waits (up to 60 s) for the first metadata with a cluster id.
    ///
    /// Errors: [`CommandError::InvalidConfig`] for a negative node id or no voters,
    /// [`ControllerError::NotController`] if no voter answered in time.
    pub async fn connect(
        node_id: BrokerId,
        voters: BTreeMap<BrokerId, String>,
    ) -> Result<Controller, ControllerError> {
        Controller::connect_with_tuning(node_id, voters, ControllerTuning::default()).await
    }

    /// [`Controller::connect`] with explicit tuning (`leadership_timeout` bounds the wait
    /// for the first metadata, `forward_timeout` the retries of writes).
    pub async fn connect_with_tuning(
        node_id: BrokerId,
        voters: BTreeMap<BrokerId, String>,
        tuning: ControllerTuning,
    ) -> Result<Controller, ControllerError> {
        if node_id < 0 {
            return Err(ControllerError::Rejected(CommandError::InvalidConfig(
                format!("node id must be non-negative, got {node_id}"),
            )));
        }
        if voters.is_empty() {
            return Err(ControllerError::Rejected(CommandError::InvalidConfig(
                "a broker-only node needs the controller voters".to_owned(),
            )));
        }
        let http = crate::network::http_client().map_err(|error| {
            ControllerError::Rejected(CommandError::InvalidConfig(format!("http client: {error}")))
        })?;
        let (publisher, _initial) = watch::channel(Arc::new(ClusterMetadata::default()));
        let (stop, _stop_receiver) = watch::channel(false);
        let controller = Controller {
            inner: Arc::new(Inner {
                node_id,
                raft: None,
                publisher: Arc::new(publisher),
                voters,
                http,
                tuning: tuning.clone(),
                configured_cluster_id: None,
                liveness: Mutex::new(Liveness::default()),
                leader_hint: Mutex::new(None),
                dir_lock: Mutex::new(None),
                stop,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let poller = tokio::spawn(crate::server::follow_voters(controller.clone()));
        controller.inner.tasks.lock().push(poller);
        let mut updates = controller.subscribe();
        let first = tokio::time::timeout(
            tuning.leadership_timeout,
            updates.wait_for(|metadata| !metadata.cluster_id.is_empty()),
        )
        .await;
        if !matches!(first, Ok(Ok(_))) {
            let _ignored = controller.shutdown().await;
            return Err(ControllerError::NotController { leader: None });
        }
        Ok(controller)
    }

    async fn become_ready(
        &self,
        config: &ControllerConfig,
        timeout: Duration,
    ) -> Result<(), ControllerError> {
        let raft = self.raft()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))?;
        if !initialized {
            let members: BTreeMap<NodeId, BasicNode> = if config.voters.is_empty() {
                BTreeMap::from([(
                    NodeId::try_from(self.inner.node_id).unwrap_or_default(),
                    BasicNode::default(),
                )])
            } else {
                config
                    .voters
                    .iter()
                    .map(|(id, addr)| {
                        (
                            NodeId::try_from(*id).unwrap_or_default(),
                            BasicNode::new(addr.clone()),
                        )
                    })
                    .collect()
            };
            let voter_count = members.len();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(
                    node_id = self.inner.node_id,
                    voters = voter_count,
                    "initialized controller quorum"
                ),
                // Another voter initialized first with the same membership.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(ControllerError::Raft(error.to_string())),
            }
        }
        // Applied an entry of the current term: everything the leader had when elected
        // is applied here too.
        let _metrics = raft
            .wait(Some(deadline - tokio::time::Instant::now()))
            .metrics(
                |metrics| {
                    metrics.current_leader.is_some()
                        && metrics.last_applied.map(|log_id| log_id.leader_id.term)
                            == Some(metrics.current_term)
                },
                "controller leader known and its term applied",
            )
            .await
            .map_err(|error| {
                ControllerError::Raft(format!("no controller leader became ready: {error}"))
            })?;
        let mut updates = self.subscribe();
        let with_cluster_id = tokio::time::timeout_at(
            deadline,
            updates.wait_for(|metadata| !metadata.cluster_id.is_empty()),
        )
        .await;
        if !matches!(with_cluster_id, Ok(Ok(_))) {
            return Err(ControllerError::Raft(
                "the controller leader did not set a cluster id in time".to_owned(),
            ));
        }
        let metadata = self.metadata();
        if let Some(configured) = &config.cluster_id
            && *configured != metadata.cluster_id
        {
            return Err(ControllerError::Rejected(CommandError::InvalidConfig(
                format!(
                    "configured cluster id {configured} does not match the stored cluster id {}",
                    metadata.cluster_id
                ),
            )));
        }
        tracing::info!(
            node_id = self.inner.node_id,
            cluster_id = %metadata.cluster_id,
            active_controller = ?self.active_controller_id(),
            metadata_offset = metadata.metadata_offset,
            topics = metadata.topics.len(),
            "controller ready"
        );
        Ok(())
    }

    fn raft(&self) -> Result<&Raft<TypeConfig>, ControllerError> {
        self.inner
            .raft
            .as_ref()
            .ok_or_else(|| ControllerError::Raft("this node is not a controller voter".to_owned()))
    }

    /// Resolves once this voter's raft core has stopped by itself: a failed write of the
    /// raft log or state machine (a full or failed metadata log dir) ends openraft's core
    /// for good, after which no metadata change can be made here. Kafka shuts a broker
    /// down when its metadata log dir fails; the caller should do the same, so a
    /// supervisor restarts the node once the disk is fixed. Never resolves on a
    /// broker-only node or after [`Controller::shutdown`].
    ///
    /// Returns the reason as [`ControllerError::Raft`].
    pub async fn failed(&self) -> ControllerError {
        let Some(raft) = &self.inner.raft else {
            return std::future::pending().await;
        };
        let mut stop = self.inner.stop.subscribe();
        let mut metrics = raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state
                && !*stop.borrow()
            {
                return ControllerError::Raft(format!("the raft core stopped: {fatal}"));
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() && !*stop.borrow() {
                    return ControllerError::Raft("the raft core stopped".to_owned());
                },
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return std::future::pending().await;
            }
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> BrokerId {
        self.inner.node_id
    }

    /// True while this node is the active controller (the raft leader). Always false on a
    /// broker-only node.
    pub fn is_active(&self) -> bool {
        let Some(raft) = &self.inner.raft else {
            return false;
        };
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        metrics.state.is_leader()
            && metrics.current_leader == NodeId::try_from(self.inner.node_id).ok()
    }

    /// The active controller as this node knows it, if any: the raft leader on a voter,
    /// the last voter known to lead on a broker-only node.
    pub fn active_controller_id(&self) -> Option<BrokerId> {
        match &self.inner.raft {
            Some(raft) => raft
                .metrics()
                .borrow()
                .current_leader
                .and_then(|leader| BrokerId::try_from(leader).ok()),
            None => {
                let hint = *self.inner.leader_hint.lock();
                hint.or_else(|| {
                    let controller_id = self.metadata().controller_id;
                    (controller_id >= 0).then_some(controller_id)
                })
            }
        }
    }

    /// The latest applied metadata. Cheap (an `Arc` clone); never blocks on raft.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.inner.publisher.borrow())
    }

    /// A receiver of applied metadata versions. Versions arrive in log order
    /// (`metadata_offset` strictly increases); a slow receiver may skip intermediate
    /// versions but always sees the latest. The current version counts as seen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.inner.publisher.subscribe()
    }

    /// Broker heartbeat (Kafka BrokerHeartbeat), served by the active controller (forwarded
    /// there from any node). Keeps the broker's session alive; a fenced broker whose
    /// `metadata_offset` (the metadata offset it has applied) has reached its broker epoch
    /// (the offset of its registration) is unfenced. Answers whether the broker is fenced
    /// afterwards.
    ///
    /// Errors: [`CommandError::StaleBrokerEpoch`] if the broker is not registered or
    /// registered under another incarnation (register again),
    /// [`ControllerError::NotController`] if no active controller answered in time.
    pub async fn broker_heartbeat(
        &self,
        broker_id: BrokerId,
        incarnation_id: uuid::Uuid,
        metadata_offset: u64,
    ) -> Result<HeartbeatResponse, ControllerError> {
        let request = LeaderRequest::Heartbeat(HeartbeatRequest {
            broker_id,
            incarnation_id,
            metadata_offset,
        });
        match self.on_leader(request).await? {
            LeaderAnswer::Heartbeat(Ok(fenced)) => Ok(HeartbeatResponse { fenced }),
            LeaderAnswer::Heartbeat(Err(error)) => Err(error.into()),
            other => Err(ControllerError::Raft(format!(
                "unexpected heartbeat answer {other:?}"
            ))),
        }
    }

    /// Controlled shutdown of a broker (clean stop): fences incarnation `incarnation_id`
    /// of `broker_id` at once, moving its leaderships to other ISR members; its later
    /// heartbeats do not unfence it.
    ///
    /// Errors: [`CommandError::StaleBrokerEpoch`] if the broker is not registered under
    /// that incarnation.
    pub async fn controlled_shutdown(
        &self,
        broker_id: BrokerId,
        incarnation_id: uuid::Uuid,
    ) -> Result<(), ControllerError> {
        let command = Command::FenceBroker {
            broker_id,
            incarnation_id: Some(incarnation_id),
            unclean_leader_election_default: self.inner.tuning.unclean_leader_election_enable,
        };
        match self.propose(command).await? {
            CommandOutput::LeadersElected { .. } => Ok(()),
            other => Err(unexpected_output(other)),
        }
    }

    /// AlterPartition (KIP-497): the partition leader replaces the ISR. Returns the
    /// partition after the change (`partition_epoch` bumped by one).
    ///
    /// Errors: [`CommandError::UnknownTopicOrPartition`];
    /// [`CommandError::NotLeaderOrFollower`] if the requester does not lead the
    /// partition; [`CommandError::FencedLeaderEpoch`] and
    /// [`CommandError::InvalidUpdateVersion`] for a stale leader or partition epoch;
    /// [`CommandError::InvalidRequest`] for an ISR that is empty, lacks the leader, has
    /// duplicates or non-replicas; [`CommandError::IneligibleReplica`] if an added
    /// member is fenced or unregistered.
    pub async fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<PartitionAssignment, ControllerError> {
        match self.propose(Command::AlterPartition(request)).await? {
            CommandOutput::Partition(partition) => Ok(partition),
            other => Err(unexpected_output(other)),
        }
    }

    /// Preferred leader election: every partition whose first replica is unfenced and in
    /// the ISR but not leader gets it as leader. Returns the number of leader changes.
    pub async fn elect_preferred_leaders(&self) -> Result<u32, ControllerError> {
        match self.propose(Command::ElectPreferredLeaders).await? {
            CommandOutput::LeadersElected { changes, .. } => Ok(changes),
            other => Err(unexpected_output(other)),
        }
    }

    /// Registers broker `reg.broker_id` (Kafka BrokerRegistration). The first registration
    /// is stored as given; the same incarnation again is a no-op; a new incarnation id
    /// means the broker restarted: it is stored fenced (until a heartbeat shows it has
    /// caught up with the metadata), leaves every ISR where it is not the last member and
    /// loses its leaderships. Either way the broker epoch becomes the registration's
    /// metadata offset. Errors: [`CommandError::InvalidConfig`] for a negative broker id.
    pub async fn register_broker(&self, reg: BrokerRegistration) -> Result<(), ControllerError> {
        match self.propose(Command::RegisterBroker(reg)).await? {
            CommandOutput::Done => Ok(()),
            other => Err(unexpected_output(other)),
        }
    }

    /// Creates a topic with a fresh random [`TopicId`]. Replicas are placed round-robin over
    /// unfenced brokers with leader balance (rack-aware when every broker has a rack);
    /// leader = first replica, ISR = replicas, epochs start at 0. Callers resolve Kafka's
    /// `-1` defaults for partitions and replication factor before calling.
    ///
    /// Errors: [`CommandError::InvalidTopic`] (name rules),
    /// [`CommandError::TopicAlreadyExists`], [`CommandError::InvalidPartitions`]
    /// (`num_partitions < 1` or more than 10 000), [`CommandError::InvalidReplicationFactor`]
    /// (`< 1` or more than the unfenced brokers), [`CommandError::InvalidConfig`] (empty key).
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        internal: bool,
    ) -> Result<TopicMetadata, ControllerError> {
        crate::state_machine::validate_topic_name(name)?;
        let command = Command::CreateTopic(NewTopic {
            name: name.to_owned(),
            topic_id: TopicId::random(),
            num_partitions,
            replication_factor,
            configs,
            internal,
        });
        match self.propose(command).await? {
            CommandOutput::Topic(topic) => Ok(topic),
            other => Err(unexpected_output(other)),
        }
    }

    /// Deletes a topic and returns its id. Its remote segments stay in
    /// [`ClusterMetadata::remote_segments`] until tiering has deleted their objects.
    /// Errors: [`CommandError::UnknownTopic`].
    pub async fn delete_topic(&self, name: &str) -> Result<TopicId, ControllerError> {
        match self
            .propose(Command::DeleteTopic {
                name: name.to_owned(),
            })
            .await?
        {
            CommandOutput::TopicDeleted(topic_id) => Ok(topic_id),
            other => Err(unexpected_output(other)),
        }
    }

    /// Grows a topic to `new_total` partitions, placing the new ones like
    /// [`Controller::create_topic`] with the topic's replication factor.
    ///
    /// Errors: [`CommandError::UnknownTopic`], [`CommandError::InvalidPartitions`]
    /// (`new_total` not above the current count, or more than 10 000 added),
    /// [`CommandError::InvalidReplicationFactor`] (too few unfenced brokers).
    pub async fn create_partitions(
        &self,
        name: &str,
        new_total: i32,
    ) -> Result<TopicMetadata, ControllerError> {
        let command = Command::CreatePartitions {
            name: name.to_owned(),
            new_total,
        };
        match self.propose(command).await? {
            CommandOutput::Topic(topic) => Ok(topic),
            other => Err(unexpected_output(other)),
        }
    }

    /// Kafka IncrementalAlterConfigs semantics for SET and DELETE (APPEND/SUBTRACT are
    /// resolved by the caller): `set` overrides, `delete` removes overrides (deleting an
    /// absent key is not an error). Validates only that keys are non-empty and not both set
    /// and deleted; value validation is the broker's job.
    ///
    /// Errors: [`CommandError::UnknownTopic`], [`CommandError::InvalidConfig`].
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<TopicMetadata, ControllerError> {
        let command = Command::AlterTopicConfigs {
            name: name.to_owned(),
            set,
            delete,
        };
        match self.propose(command).await? {
            CommandOutput::Topic(topic) => Ok(topic),
            other => Err(unexpected_output(other)),
        }
    }

    /// Brings back the topics of a restore point (see [`Command`]'s `RestoreCluster`):
    /// topics with their ids and configs, partitions led above their old leader epochs,
    /// the remote segments below each cut, producer ids above `next_producer_id`.
    /// Returns how many topics it created; `0` when the same restore point was applied
    /// before, so a restarted restore can propose it again.
    ///
    /// Errors: [`CommandError::InvalidRequest`] when the cluster already has topics of its
    /// own or was restored from another restore point; [`CommandError::InvalidTopic`],
    /// [`CommandError::InvalidPartitions`], [`CommandError::InvalidConfig`] or
    /// [`CommandError::InvalidRemoteSegment`] for a restore point that does not hold
    /// together (nothing is applied then).
    pub async fn restore_cluster(
        &self,
        restore_point_id: &str,
        topics: Vec<RestoredTopic>,
        next_producer_id: i64,
    ) -> Result<usize, ControllerError> {
        let command = Command::RestoreCluster {
            restore_point_id: restore_point_id.to_owned(),
            topics,
            next_producer_id,
        };
        match self.propose(command).await? {
            CommandOutput::Restored { topics_created, .. } => Ok(topics_created),
            other => Err(unexpected_output(other)),
        }
    }

    /// Read-only replica: makes this cluster's topics those of another cluster's restore
    /// point (see [`Command`]'s `FollowRestorePoint`). Returns how many topics it created.
    ///
    /// Errors: [`CommandError::InvalidTopic`], [`CommandError::InvalidPartitions`],
    /// [`CommandError::InvalidConfig`] or [`CommandError::InvalidRemoteSegment`] for a
    /// restore point that does not hold together (nothing is applied then).
    pub async fn follow_restore_point(
        &self,
        restore_point_id: &str,
        topics: Vec<RestoredTopic>,
    ) -> Result<usize, ControllerError> {
        let command = Command::FollowRestorePoint {
            restore_point_id: restore_point_id.to_owned(),
            topics,
        };
        match self.propose(command).await? {
            CommandOutput::Restored { topics_created, .. } => Ok(topics_created),
            other => Err(unexpected_output(other)),
        }
    }

    /// Allocates a block of `count` producer ids durably (KIP-730 style) and returns the
    /// first; the block is `first..first + count`. Errors: [`CommandError::InvalidConfig`]
    /// if `count < 1` or the id space is exhausted.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<i64, ControllerError> {
        match self.propose(Command::AllocateProducerIds { count }).await? {
            CommandOutput::ProducerIdBlock { first_producer_id } => Ok(first_producer_id),
            other => Err(unexpected_output(other)),
        }
    }

    /// KIP-405 COPY_STARTED: registers the upload of `segment` before any byte of it is
    /// written, so an interrupted upload can be found and cleaned up. `segment.state` must be
    /// [`RemoteSegmentState::CopyStarted`]; `event_timestamp_ms` is kept as given.
    ///
    /// Errors: [`CommandError::InvalidRemoteSegment`] if the topic id is unknown, the
    /// partition does not exist, the segment id is nil or already registered for the
    /// partition, the state is not `CopyStarted`, the offsets are invalid (`base_offset < 0`,
    /// `base_offset > end_offset` or `end_offset == i64::MAX`), the leader epoch or broker id
    /// is negative, or `segment_leader_epochs` has a negative epoch, a start offset outside
    /// `[base_offset, end_offset]` or start offsets that do not increase with the epoch.
    pub async fn begin_remote_segment_copy(
        &self,
        segment: RemoteSegmentMetadata,
    ) -> Result<(), ControllerError> {
        match self
            .propose(Command::BeginRemoteSegmentCopy(segment))
            .await?
        {
            CommandOutput::Done => Ok(()),
            other => Err(unexpected_output(other)),
        }
    }

    /// KIP-405 COPY_FINISHED: makes a `CopyStarted` segment readable, stamps
    /// `event_timestamp_ms` with the current time and returns the updated segment.
    ///
    /// Errors: [`CommandError::InvalidRemoteSegment`] if the segment does not exist, is not
    /// `CopyStarted`, or its `end_offset` does not reach past the partition's remote log end
    /// offset: the first finished upload of an offset wins, so a duplicate upload after a
    /// crash or a leader change is never served (delete it instead). A segment overlapping
    /// the end is accepted: a new leader's segment boundaries differ from the old one's.
    pub async fn finish_remote_segment_copy(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
    ) -> Result<RemoteSegmentMetadata, ControllerError> {
        let command = Command::FinishRemoteSegmentCopy {
            topic_id,
            partition,
            segment_id,
            event_timestamp_ms: now_ms(),
        };
        match self.propose(command).await? {
            CommandOutput::RemoteSegment(segment) => Ok(segment),
            other => Err(unexpected_output(other)),
        }
    }

    /// KIP-405 DELETE_STARTED: from `CopyStarted` (cleanup of an abandoned upload) or
    /// `CopyFinished` (retention); from then on the segment is no longer readable. Stamps
    /// `event_timestamp_ms` with the current time.
    ///
    /// Errors: [`CommandError::InvalidRemoteSegment`] if the segment does not exist or is
    /// already `DeleteStarted` (a retry after a lost answer finds that state in
    /// [`Controller::metadata`] and goes on deleting the objects).
    pub async fn begin_remote_segment_delete(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
    ) -> Result<(), ControllerError> {
        self.begin_remote_segment_delete_from(topic_id, partition, segment_id, None)
            .await
    }

    /// [`Controller::begin_remote_segment_delete`], refused with
    /// [`CommandError::InvalidRemoteSegment`] unless the segment is in `expected_state`
    /// (when given) at the moment the command applies: the cleanup of an upload it
    /// believes abandoned must not delete a copy committed since it looked.
    pub async fn begin_remote_segment_delete_from(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
        expected_state: Option<RemoteSegmentState>,
    ) -> Result<(), ControllerError> {
        let command = Command::BeginRemoteSegmentDelete {
            topic_id,
            partition,
            segment_id,
            event_timestamp_ms: now_ms(),
            expected_state,
        };
        match self.propose(command).await? {
            CommandOutput::Done => Ok(()),
            other => Err(unexpected_output(other)),
        }
    }

    /// Swaps in a compacted copy of remote segments: the `CopyStarted` segment
    /// `segment_id` becomes `CopyFinished` and every segment of `replaced` becomes
    /// `DeleteStarted`, in one committed step, so a reader sees either the old segments
    /// or the new one, never a hole. Stamps `event_timestamp_ms` with the current time
    /// and returns the new segment. The caller deletes the replaced segments' objects
    /// afterwards.
    ///
    /// Errors: [`CommandError::InvalidRemoteSegment`] if the new segment does not exist
    /// or is not `CopyStarted`, `replaced` is empty, names it or a segment that does not
    /// exist or is not `CopyFinished` (retention or another swap got there first), or
    /// the new segment's offsets do not end where the replaced ones end or start outside
    /// their range.
    pub async fn replace_remote_segments(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
        replaced: Vec<uuid::Uuid>,
    ) -> Result<RemoteSegmentMetadata, ControllerError> {
        let command = Command::ReplaceRemoteSegments {
            topic_id,
            partition,
            segment_id,
            replaced,
            event_timestamp_ms: now_ms(),
        };
        match self.propose(command).await? {
            CommandOutput::RemoteSegment(segment) => Ok(segment),
            other => Err(unexpected_output(other)),
        }
    }

    /// DeleteRecords on a tiered partition: raises the partition's log start offset
    /// ([`crate::TopicMetadata::log_start_offsets`]) to `offset`, never lowering it.
    /// Returns the log start offset in force. The caller checks `offset` against the
    /// partition's high watermark.
    ///
    /// Errors: [`CommandError::UnknownTopicOrPartition`] if the topic id or partition
    /// does not exist; [`CommandError::InvalidRequest`] for a negative offset.
    pub async fn delete_records(
        &self,
        topic_id: TopicId,
        partition: i32,
        offset: i64,
    ) -> Result<i64, ControllerError> {
        let command = Command::DeleteRecords {
            topic_id,
            partition,
            offset,
        };
        match self.propose(command).await? {
            CommandOutput::LogStartOffset(start) => Ok(start),
            other => Err(unexpected_output(other)),
        }
    }

    /// KIP-405 DELETE_FINISHED: the segment's objects are gone; removes its entry from
    /// [`ClusterMetadata::remote_segments`].
    ///
    /// Errors: [`CommandError::InvalidRemoteSegment`] if the segment does not exist or is
    /// not `DeleteStarted`.
    pub async fn finish_remote_segment_delete(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
    ) -> Result<(), ControllerError> {
        let command = Command::FinishRemoteSegmentDelete {
            topic_id,
            partition,
            segment_id,
        };
        match self.propose(command).await? {
            CommandOutput::Done => Ok(()),
            other => Err(unexpected_output(other)),
        }
    }

    /// Stops the background tasks, the RPC server and the raft node, and releases the data
    /// dir. Later calls on any clone fail with [`ControllerError::Raft`] (voters) or
    /// [`ControllerError::NotController`] (broker-only nodes); [`Controller::metadata`]
    /// keeps answering the last state. Calling it again is harmless.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        let _previous = self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self.inner.tasks.lock().drain(..).collect();
        for mut task in tasks {
            // The server drains its connections; a stuck one must not hold the shutdown.
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        crate::liveness::set_active_gauge(false);
        if let Some(raft) = &self.inner.raft {
            raft.shutdown()
                .await
                .map_err(|error| ControllerError::Raft(format!("raft shutdown: {error}")))?;
        }
        let released = self.inner.dir_lock.lock().take();
        drop(released);
        tracing::info!(node_id = self.inner.node_id, "controller stopped");
        Ok(())
    }

    /// Writes `command` through raft on the active controller (forwarded there if this
    /// node is not it) and returns the state machine's answer once applied.
    /// The write carries a request id chosen here, so the retries of
    /// [`Controller::on_leader`] apply it once ([`Command::Once`]).
    async fn propose(&self, command: Command) -> Result<CommandOutput, ControllerError> {
        let command = Command::Once {
            request_id: uuid::Uuid::new_v4(),
            command: Box::new(command),
        };
        match self.on_leader(LeaderRequest::Propose(command)).await? {
            LeaderAnswer::Applied(result) => result.map_err(ControllerError::from),
            other => Err(ControllerError::Raft(format!(
                "unexpected answer to a write {other:?}"
            ))),
        }
    }

    /// Serves `request` on the active controller: here if this node is it, else over HTTP,
    /// following leader hints and retrying across leader changes for
    /// [`ControllerTuning::forward_timeout`]. Answers only `Applied` or `Heartbeat`.
    async fn on_leader(&self, request: LeaderRequest) -> Result<LeaderAnswer, ControllerError> {
        if *self.inner.stop.borrow() {
            return Err(match self.inner.raft {
                Some(_) => ControllerError::Raft("the controller is shut down".to_owned()),
                None => ControllerError::NotController { leader: None },
            });
        }
        let deadline = tokio::time::Instant::now() + self.inner.tuning.forward_timeout;
        let voter_ids: Vec<BrokerId> = self.inner.voters.keys().copied().collect();
        let mut rotation = 0_usize;
        let mut backoff = Duration::from_millis(20);
        let mut target = self.active_controller_id();
        loop {
            let answer = match target {
                Some(leader) if leader == self.inner.node_id && self.inner.raft.is_some() => {
                    self.serve_locally(&request).await?
                }
                Some(leader) if self.inner.voters.contains_key(&leader) => {
                    self.send_to(leader, &request).await
                }
                _ if self.inner.raft.is_some() && self.inner.voters.is_empty() => {
                    self.serve_locally(&request).await?
                }
                _ => match voter_ids.get(rotation % voter_ids.len().max(1)) {
                    Some(voter) => {
                        rotation += 1;
                        self.send_to(*voter, &request).await
                    }
                    None => LeaderAnswer::NotLeader { leader: None },
                },
            };
            let next_target = match answer {
                LeaderAnswer::Applied(_) | LeaderAnswer::Heartbeat(_) => return Ok(answer),
                LeaderAnswer::NotLeader {
                    leader: Some(leader),
                } if Some(leader) != target => Some(leader),
                LeaderAnswer::NotLeader { .. } | LeaderAnswer::Unavailable(_) => None,
            };
            if self.inner.raft.is_none() {
                *self.inner.leader_hint.lock() = next_target;
            }
            if *self.inner.stop.borrow() {
                return Err(ControllerError::NotController { leader: None });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ControllerError::NotController {
                    leader: self.active_controller_id(),
                });
            }
            if next_target.is_none() {
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(MAX_FORWARD_BACKOFF);
            }
            target = next_target.or_else(|| self.active_controller_id());
        }
    }

    /// Sends `request` to voter `voter`; transport failures read as `Unavailable`.
    async fn send_to(&self, voter: BrokerId, request: &LeaderRequest) -> LeaderAnswer {
        let Some(addr) = self.inner.voters.get(&voter) else {
            return LeaderAnswer::NotLeader { leader: None };
        };
        let sent = match request {
            LeaderRequest::Propose(command) => {
                crate::network::post_json(
                    &self.inner.http,
                    addr,
                    routes::WRITE,
                    command,
                    FORWARD_ATTEMPT_TIMEOUT,
                )
                .await
            }
            LeaderRequest::Heartbeat(heartbeat) => {
                crate::network::post_json(
                    &self.inner.http,
                    addr,
                    routes::HEARTBEAT,
                    heartbeat,
                    FORWARD_ATTEMPT_TIMEOUT,
                )
                .await
            }
        };
        sent.unwrap_or_else(|error| {
            tracing::debug!(voter, %error, "forwarding to the controller failed");
            LeaderAnswer::Unavailable(error.to_string())
        })
    }

    /// Serves `request` with the local raft node. Errors only if raft has stopped.
    pub(crate) async fn serve_locally(
        &self,
        request: &LeaderRequest,
    ) -> Result<LeaderAnswer, ControllerError> {
        let raft = match &self.inner.raft {
            Some(raft) => raft,
            None => return Ok(LeaderAnswer::NotLeader { leader: None }),
        };
        match request {
            LeaderRequest::Propose(command) => {
                let answer = self.write_locally(raft, command.clone()).await?;
                if let LeaderAnswer::Applied(Ok(_)) = &answer {
                    self.inner.liveness.lock().note_applied(command);
                }
                Ok(answer)
            }
            LeaderRequest::Heartbeat(heartbeat) => {
                if !self.is_active() {
                    return Ok(LeaderAnswer::NotLeader {
                        leader: self.active_controller_id(),
                    });
                }
                crate::liveness::handle_heartbeat(self, heartbeat).await
            }
        }
    }

    /// One `client_write` on the local raft node.
    pub(crate) async fn write_locally(
        &self,
        raft: &Raft<TypeConfig>,
        command: Command,
    ) -> Result<LeaderAnswer, ControllerError> {
        match raft.client_write(command).await {
            Ok(response) => Ok(LeaderAnswer::Applied(response.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Ok(LeaderAnswer::NotLeader {
                    leader: forward
                        .leader_id
                        .and_then(|leader| BrokerId::try_from(leader).ok()),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(ControllerError::Raft(error.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(ControllerError::Raft(fatal.to_string())),
        }
    }
}

/// Checks the voter set; answers the address to listen on (multi-voter only).
fn validate_voters(config: &ControllerConfig) -> Result<Option<SocketAddr>, ControllerError> {
    if config.voters.is_empty() {
        return Ok(None);
    }
    if !config.voters.contains_key(&config.node_id) {
        return Err(ControllerError::Rejected(CommandError::InvalidConfig(
            format!(
                "controller voters {:?} do not include this node {}",
                config.voters.keys().collect::<Vec<_>>(),
                config.node_id
            ),
        )));
    }
    if let Some(negative) = config.voters.keys().find(|id| **id < 0) {
        return Err(ControllerError::Rejected(CommandError::InvalidConfig(
            format!("controller voter id must be non-negative, got {negative}"),
        )));
    }
    match config.listen_addr {
        Some(addr) => Ok(Some(addr)),
        None => Err(ControllerError::Rejected(CommandError::InvalidConfig(
            "a multi-voter controller needs a listen address".to_owned(),
        ))),
    }
}

/// Whole milliseconds of `duration`, at least 1.
fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Milliseconds since the Unix epoch by the local clock (`0` for a clock before 1970).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

fn unexpected_output(output: CommandOutput) -> ControllerError {
    ControllerError::Raft(format!("unexpected state machine answer {output:?}"))
}

/// Takes an exclusive lock on `<dir>/.lock`; held until the returned file is dropped.
async fn lock_data_dir(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK_FILE);
    crate::durable_file::blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "controller data dir is in use by another process ({} is locked)",
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    })
    .await
}
