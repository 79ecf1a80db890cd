//! Silt cluster metadata: brokers, topics, partitions, topic configs, producer id blocks
//! and KIP-405 remote log segment metadata, kept as an openraft replicated state machine with a durable log and snapshots on disk.
//!
//! [`Controller`] is the handle the broker and the gateway use: mutations go through the
//! raft log and return once applied; [`Controller::metadata`] and
//! [`Controller::subscribe`] expose the applied [`ClusterMetadata`].
//!
//! The quorum has a single voter for now; the API is the one a multi-voter quorum uses
//! ([`ControllerError::NotController`] tells callers where the leader is).

mod command;
mod error;
mod fs_util;
mod log_store;
mod metadata_store;
mod network;
mod placement;
mod snapshot;
mod state_machine;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use openraft::BasicNode;
use openraft::Raft;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use parking_lot::Mutex;
use tokio::sync::watch;

pub use crate::error::ControllerError;
pub use crate::types::BrokerId;
pub use crate::types::BrokerRegistration;
pub use crate::types::ClusterMetadata;
pub use crate::types::NO_BROKER;
pub use crate::types::PartitionAssignment;
pub use crate::types::RemoteSegmentMetadata;
pub use crate::types::RemoteSegmentState;
pub use crate::types::RemoteSegments;
pub use crate::types::TopicId;
pub use crate::types::TopicMetadata;
pub use crate::types::generate_cluster_id;

use crate::command::Command;
use crate::command::CommandOutput;
use crate::command::NodeId;
use crate::command::TypeConfig;
use crate::log_store::LogStore;
use crate::metadata_store::MetadataPublisher;
use crate::metadata_store::MetadataStore;
use crate::network::ControllerNetwork;

const LOCK_FILE: &str = ".lock";

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
}

/// Raft tuning knobs; [`Default`] suits production.
#[derive(Clone, Debug)]
pub struct ControllerTuning {
    /// A snapshot is taken after this many log entries since the previous one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the latest snapshot (the rest is purged).
    pub entries_kept_after_snapshot: u64,
    /// How long [`Controller::start`] waits for this node to become leader.
    pub leadership_timeout: Duration,
}

impl Default for ControllerTuning {
    fn default() -> Self {
        ControllerTuning {
            snapshot_every_entries: 1_000,
            entries_kept_after_snapshot: 100,
            leadership_timeout: Duration::from_secs(30),
        }
    }
}

/// Handle to the running metadata quorum member of this node. Cheap to clone; all clones
/// drive the same raft node.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: BrokerId,
    raft: Raft<TypeConfig>,
    publisher: Arc<MetadataPublisher>,
    /// Held (locked) while running, so two processes never share a data dir.
    dir_lock: Mutex<Option<File>>,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.inner.node_id)
            .field(
                "metadata_offset",
                &self.inner.publisher.borrow().metadata_offset,
            )
            .finish()
    }
}

impl Controller {
    /// Opens or creates the durable raft log and state in `config.data_dir`; initializes the
    /// single-voter membership on first start; waits until this node is leader and has
    /// applied the whole log; sets the cluster id on first start.
    ///
    /// Errors: [`ControllerError::InvalidConfig`] for a negative node id or a cluster id that
    /// differs from the stored one, [`ControllerError::Storage`] if the directory cannot be
    /// used (locked by another process, unreadable, corrupt snapshot),
    /// [`ControllerError::Raft`] if leadership is not reached within the timeout.
    pub async fn start(config: ControllerConfig) -> Result<Controller, ControllerError> {
        Controller::start_with_tuning(config, ControllerTuning::default()).await
    }

    /// [`Controller::start`] with explicit raft tuning (snapshot frequency, log retention).
    pub async fn start_with_tuning(
        config: ControllerConfig,
        tuning: ControllerTuning,
    ) -> Result<Controller, ControllerError> {
        let Ok(raft_node_id) = NodeId::try_from(config.node_id) else {
            return Err(ControllerError::InvalidConfig(format!(
                "controller node id must be non-negative, got {}",
                config.node_id
            )));
        };
        if config.cluster_id.as_deref() == Some("") {
            return Err(ControllerError::InvalidConfig(
                "cluster id is empty".to_owned(),
            ));
        }
        tokio::fs::create_dir_all(&config.data_dir).await?;
        let dir_lock = lock_data_dir(&config.data_dir).await?;
        let log_store = LogStore::open(&config.data_dir).await?;
        let metadata_store = MetadataStore::open(&config.data_dir).await?;
        let publisher = metadata_store.publisher();

        let raft_config = openraft::Config {
            cluster_name: "silt-controller".to_owned(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_entries),
            max_in_snapshot_log_to_keep: tuning.entries_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|error| ControllerError::InvalidConfig(format!("raft config: {error}")))?;
        let raft = Raft::new(
            raft_node_id,
            Arc::new(raft_config),
            ControllerNetwork,
            log_store,
            metadata_store,
        )
        .await
        .map_err(|error| ControllerError::Raft(error.to_string()))?;

        let controller = Controller {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft,
                publisher,
                dir_lock: Mutex::new(Some(dir_lock)),
            }),
        };
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

    async fn become_ready(
        &self,
        config: &ControllerConfig,
        timeout: Duration,
    ) -> Result<(), ControllerError> {
        let raft = &self.inner.raft;
        let raft_node_id = NodeId::try_from(self.inner.node_id).unwrap_or_default();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(raft_node_id, BasicNode::default())]);
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(
                    node_id = self.inner.node_id,
                    "initialized single-voter controller quorum"
                ),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(ControllerError::Raft(error.to_string())),
            }
        }
        let _metrics = raft
            .wait(Some(timeout))
            .state(ServerState::Leader, "controller start")
            .await
            .map_err(|error| {
                ControllerError::Raft(format!("did not become controller leader: {error}"))
            })?;
        let _read_log_id = raft
            .ensure_linearizable()
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))?;

        let stored_cluster_id = self.metadata().cluster_id.clone();
        if stored_cluster_id.is_empty() {
            let cluster_id = config
                .cluster_id
                .clone()
                .unwrap_or_else(generate_cluster_id);
            match self.propose(Command::SetClusterId { cluster_id }).await? {
                CommandOutput::ClusterId(_) => {}
                other => return Err(unexpected_output(other)),
            }
        } else if let Some(configured) = &config.cluster_id
            && *configured != stored_cluster_id
        {
            return Err(ControllerError::InvalidConfig(format!(
                "configured cluster id {configured} does not match the stored cluster id {stored_cluster_id}"
            )));
        }
        let metadata = self.metadata();
        tracing::info!(
            node_id = self.inner.node_id,
            cluster_id = %metadata.cluster_id,
            metadata_offset = metadata.metadata_offset,
            topics = metadata.topics.len(),
            "controller ready"
        );
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> BrokerId {
        self.inner.node_id
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

    /// Adds or replaces the registration of `reg.broker_id` (a new incarnation id replaces
    /// the old one). Errors: [`ControllerError::InvalidConfig`] for a negative broker id.
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
    /// Errors: [`ControllerError::InvalidTopic`] (name rules),
    /// [`ControllerError::TopicAlreadyExists`], [`ControllerError::InvalidPartitions`]
    /// (`num_partitions < 1` or more than 10 000), [`ControllerError::InvalidReplicationFactor`]
    /// (`< 1` or more than the unfenced brokers), [`ControllerError::InvalidConfig`] (empty key).
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        internal: bool,
    ) -> Result<TopicMetadata, ControllerError> {
        state_machine::validate_topic_name(name)?;
        let command = Command::CreateTopic {
            name: name.to_owned(),
            topic_id: TopicId::random(),
            num_partitions,
            replication_factor,
            configs,
            internal,
        };
        match self.propose(command).await? {
            CommandOutput::Topic(topic) => Ok(topic),
            other => Err(unexpected_output(other)),
        }
    }

    /// Deletes a topic and returns its id. Its remote segments stay in
    /// [`ClusterMetadata::remote_segments`] until tiering has deleted their objects.
    /// Errors: [`ControllerError::UnknownTopic`].
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
    /// Errors: [`ControllerError::UnknownTopic`], [`ControllerError::InvalidPartitions`]
    /// (`new_total` not above the current count, or more than 10 000 added),
    /// [`ControllerError::InvalidReplicationFactor`] (too few unfenced brokers).
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
    /// Errors: [`ControllerError::UnknownTopic`], [`ControllerError::InvalidConfig`].
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

    /// Allocates a block of `count` producer ids durably (KIP-730 style) and returns the
    /// first; the block is `first..first + count`. Errors: [`ControllerError::InvalidConfig`]
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
    /// Errors: [`ControllerError::InvalidRemoteSegment`] if the topic id is unknown, the
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
    /// Errors: [`ControllerError::InvalidRemoteSegment`] if the segment does not exist, is not
    /// `CopyStarted`, or another `CopyFinished` segment of the partition overlaps
    /// `[base_offset, end_offset]`: the first finished upload wins, so a duplicate upload
    /// after a crash or a leader change is never served (delete it instead).
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
    /// Errors: [`ControllerError::InvalidRemoteSegment`] if the segment does not exist or is
    /// already `DeleteStarted` (a retry after a lost answer finds that state in
    /// [`Controller::metadata`] and goes on deleting the objects).
    pub async fn begin_remote_segment_delete(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
    ) -> Result<(), ControllerError> {
        let command = Command::BeginRemoteSegmentDelete {
            topic_id,
            partition,
            segment_id,
            event_timestamp_ms: now_ms(),
        };
        match self.propose(command).await? {
            CommandOutput::Done => Ok(()),
            other => Err(unexpected_output(other)),
        }
    }

    /// KIP-405 DELETE_FINISHED: the segment's objects are gone; removes its entry from
    /// [`ClusterMetadata::remote_segments`].
    ///
    /// Errors: [`ControllerError::InvalidRemoteSegment`] if the segment does not exist or is
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

    /// Stops the raft node and releases the data dir. Later calls on any clone fail with
    /// [`ControllerError::Raft`]; [`Controller::metadata`] keeps answering the last state.
    /// Calling it again is harmless.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|error| ControllerError::Raft(format!("raft shutdown: {error}")))?;
        let released = self.inner.dir_lock.lock().take();
        drop(released);
        tracing::info!(node_id = self.inner.node_id, "controller stopped");
        Ok(())
    }

    /// Writes `command` through raft and returns the state machine's answer once applied.
    async fn propose(&self, command: Command) -> Result<CommandOutput, ControllerError> {
        match self.inner.raft.client_write(command).await {
            Ok(response) => response.data.map_err(ControllerError::from),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ControllerError::NotController {
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
    fs_util::blocking(move || {
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
