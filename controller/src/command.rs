//! Commands replicated through the raft log, their results, and the openraft type binding.
//!
//! Commands carry every non-deterministic input (ids, the cluster id) so that applying them
//! is a pure function of the metadata and the command.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::Deserialize;
use serde::Serialize;

use crate::cluster_metadata::AlterPartitionRequest;
use crate::cluster_metadata::BrokerId;
use crate::cluster_metadata::BrokerRegistration;
use crate::cluster_metadata::PartitionAssignment;
use crate::cluster_metadata::RemoteSegmentMetadata;
use crate::cluster_metadata::RestoredTopic;
use crate::cluster_metadata::TopicId;
use crate::cluster_metadata::TopicMetadata;

/// Raft node id type; equal to the non-negative [`BrokerId`](crate::BrokerId) of the node.
pub(crate) type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the metadata quorum.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A metadata change, as written to the raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// `command` under a request id chosen once by the node that proposed it: however
    /// often a forwarded write is retried (its answer lost to a timeout or a leader
    /// change), it is applied once, and every retry gets the first answer.
    Once {
        request_id: uuid::Uuid,
        command: Box<Command>,
    },
    /// Sets the cluster id if none is set yet; answers with the cluster id in force.
    SetClusterId { cluster_id: String },
    /// Adds a broker registration; a new incarnation of a known broker is registered
    /// fenced (it restarted), the same incarnation is a no-op.
    RegisterBroker(BrokerRegistration),
    /// Creates a topic, placing replicas on unfenced brokers.
    CreateTopic(NewTopic),
    /// Deletes a topic.
    DeleteTopic { name: String },
    /// Grows a topic to `new_total` partitions.
    CreatePartitions { name: String, new_total: i32 },
    /// Sets and removes topic config overrides.
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Hands out `count` producer ids.
    AllocateProducerIds { count: i64 },
    /// KIP-405 COPY_STARTED: registers a remote segment upload (state `CopyStarted`).
    BeginRemoteSegmentCopy(RemoteSegmentMetadata),
    /// KIP-405 COPY_FINISHED: makes a `CopyStarted` segment readable.
    FinishRemoteSegmentCopy {
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
        /// Milliseconds since the Unix epoch, read by the proposer.
        event_timestamp_ms: i64,
    },
    /// KIP-405 DELETE_STARTED: makes a `CopyStarted` or `CopyFinished` segment unreadable.
    BeginRemoteSegmentDelete {
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
        /// Milliseconds since the Unix epoch, read by the proposer.
        event_timestamp_ms: i64,
        /// Refuse unless the segment is in this state: the cleanup of an abandoned
        /// upload must not delete a copy committed since it looked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_state: Option<crate::cluster_metadata::RemoteSegmentState>,
    },
    /// Compaction of the remote tier: in one step makes the `CopyStarted` segment
    /// `segment_id` (the cleaned copy) readable and the `CopyFinished` segments
    /// `replaced` `DeleteStarted`, so a reader sees the old set or the new one.
    ReplaceRemoteSegments {
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
        replaced: Vec<uuid::Uuid>,
        /// Milliseconds since the Unix epoch, read by the proposer.
        event_timestamp_ms: i64,
    },
    /// KIP-405 DELETE_FINISHED: removes a `DeleteStarted` segment.
    FinishRemoteSegmentDelete {
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
    },
    /// Fences a broker: out of every ISR (unless the last member), leaderships moved.
    FenceBroker {
        broker_id: BrokerId,
        /// If set, only this incarnation is fenced (controlled shutdown); another one is
        /// refused as a stale broker epoch.
        incarnation_id: Option<uuid::Uuid>,
        /// `unclean.leader.election.enable` for topics without an override.
        unclean_leader_election_default: bool,
    },
    /// Unfences a caught-up broker and gives it the leadership of the offline partitions
    /// whose ISR holds it, or, where unclean election is enabled, of offline partitions
    /// it is only a replica of.
    UnfenceBroker {
        broker_id: BrokerId,
        incarnation_id: uuid::Uuid,
        /// `unclean.leader.election.enable` for topics without an override; absent in
        /// logs written before it existed.
        #[serde(default)]
        unclean_leader_election_default: bool,
    },
    /// KIP-497 AlterPartition: an ISR change requested by the partition leader.
    AlterPartition(AlterPartitionRequest),
    /// Moves leadership to the preferred replica (the first one) wherever it is unfenced
    /// and in the ISR.
    ElectPreferredLeaders,
    /// Brings back a cluster from a restore point: its topics with their ids and
    /// configs, partitions led above their old leader epochs, the `CopyFinished` remote
    /// segments below each cut, and producer ids above every id handed out. Applied once:
    /// again with the same restore point id it is a no-op.
    RestoreCluster {
        restore_point_id: String,
        topics: Vec<RestoredTopic>,
        next_producer_id: i64,
    },
    /// A read-only replica follows another cluster's restore point: its topics become
    /// the restore point's (created, grown, configs set, remote segments replaced;
    /// topics the restore point lacks are deleted).
    FollowRestorePoint {
        restore_point_id: String,
        topics: Vec<RestoredTopic>,
    },
    /// DeleteRecords on a tiered partition: raises its log start offset to `offset`.
    DeleteRecords {
        topic_id: TopicId,
        partition: i32,
        offset: i64,
    },
}

/// What a successfully applied entry answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum CommandOutput {
    /// Nothing to report (blank and membership entries, broker registration).
    Done,
    /// The cluster id in force after [`Command::SetClusterId`].
    ClusterId(String),
    /// The topic after the change.
    Topic(TopicMetadata),
    /// The id of the topic that was deleted.
    TopicDeleted(TopicId),
    /// The restore point the cluster was restored from, and how many topics it created
    /// (`0` when it had been applied before).
    Restored {
        restore_point_id: String,
        topics_created: usize,
    },
    /// A partition's log start offset after [`Command::DeleteRecords`].
    LogStartOffset(i64),
    /// The first id of an allocated producer id block.
    ProducerIdBlock { first_producer_id: i64 },
    /// A remote segment after the change.
    RemoteSegment(RemoteSegmentMetadata),
    /// A partition after an AlterPartition.
    Partition(PartitionAssignment),
    /// How many partitions changed leader, and which of them got an out-of-sync leader
    /// by unclean election (`unclean.leader.election.enable`): (topic, partition, new
    /// leader), each losing the records its new leader lacks.
    LeadersElected {
        changes: u32,
        unclean: Vec<(String, i32, BrokerId)>,
    },
}

/// A topic to create. Serialized inside [`Command::CreateTopic`] exactly as that
/// variant's fields were when it was a struct variant, so older logs still load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NewTopic {
    /// Topic name (Kafka's naming rules).
    pub(crate) name: String,
    /// The id the proposer drew (KIP-516); never the nil uuid.
    pub(crate) topic_id: TopicId,
    /// Partitions, `>= 1`.
    pub(crate) num_partitions: i32,
    /// Replicas per partition, `>= 1` and at most the unfenced brokers.
    pub(crate) replication_factor: i16,
    /// Topic configs by Kafka name.
    pub(crate) configs: BTreeMap<String, String>,
    /// Internal topic (`__consumer_offsets`).
    pub(crate) internal: bool,
}

/// A request the controller refused, by the state machine (the metadata is left
/// unchanged) or by the checks before it. Each maps onto one Kafka error code. Part
/// of the raft log's format (serde_json): renaming a variant is a format change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The topic exists already (Kafka `TOPIC_ALREADY_EXISTS`). Carries the topic name.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// No topic has this name (Kafka `UNKNOWN_TOPIC_OR_PARTITION`). Carries the topic name.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The topic name breaks Kafka's naming rules (Kafka `INVALID_TOPIC_EXCEPTION`).
    /// Carries a description of the problem.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// Partition count out of range or not an increase (Kafka `INVALID_PARTITIONS`).
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// Replication factor below 1 or above the number of unfenced brokers (Kafka
    /// `INVALID_REPLICATION_FACTOR`).
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// A bad config key, a bad [`ControllerConfig`](crate::ControllerConfig), a bad broker
    /// registration or an invalid producer id block request (Kafka `INVALID_CONFIG` /
    /// `INVALID_REQUEST`).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A KIP-405 remote segment change was refused: unknown topic, partition or segment,
    /// a duplicate segment id, invalid offsets or epochs, a transition not allowed from the
    /// segment's current state, or a `CopyFinished` overlap. Carries a description.
    #[error("invalid remote segment: {0}")]
    InvalidRemoteSegment(String),
    /// The broker is not registered, or under another incarnation than the one given
    /// (Kafka `STALE_BROKER_EPOCH`, code 77): it must register again.
    #[error("stale broker epoch: {0}")]
    StaleBrokerEpoch(String),
    /// The requester does not lead the partition (Kafka `NOT_LEADER_OR_FOLLOWER`, code 6).
    #[error("not the leader: {0}")]
    NotLeaderOrFollower(String),
    /// The request's leader epoch is not the partition's current one (Kafka
    /// `FENCED_LEADER_EPOCH`, code 74).
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(String),
    /// The request's partition epoch is not the partition's current one (Kafka
    /// `INVALID_UPDATE_VERSION`, code 95): refresh metadata and retry.
    #[error("invalid update version: {0}")]
    InvalidUpdateVersion(String),
    /// A replica added to the ISR is fenced or not registered (Kafka `INELIGIBLE_REPLICA`,
    /// code 107).
    #[error("ineligible replica: {0}")]
    IneligibleReplica(String),
    /// A malformed request, e.g. an ISR without the leader, with duplicates or with
    /// non-replicas (Kafka `INVALID_REQUEST`, code 42).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No such topic id or partition (Kafka `UNKNOWN_TOPIC_OR_PARTITION`, code 3).
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
}

/// The raft response of one applied entry.
pub(crate) type CommandResult = Result<CommandOutput, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Raft logs and snapshots written before `CreateTopic` held a [`NewTopic`] still
    /// decode, and new entries are written the same way.
    #[test]
    fn create_topic_keeps_its_log_format() {
        let written = r#"{"CreateTopic":{"name":"orders","topic_id":"6f1c4c3e-93b4-4d9e-a0a4-2f8d3c1b5e77","num_partitions":6,"replication_factor":3,"configs":{"retention.ms":"1000"},"internal":false}}"#;
        let command: Command = serde_json::from_str(written).expect("an old entry decodes");
        let Command::CreateTopic(new_topic) = &command else {
            panic!("decoded as {command:?}");
        };
        assert_eq!(new_topic.name, "orders");
        assert_eq!(new_topic.num_partitions, 6);
        assert_eq!(
            serde_json::to_string(&command).expect("encodes"),
            written,
            "written as before"
        );
    }
}
