//! Errors returned by the [`Controller`](crate::Controller).

use crate::command::CommandError;
use crate::types::BrokerId;

/// Why a controller operation failed. Most variants are request errors that map one-to-one
/// onto Kafka error codes; [`ControllerError::InvalidRemoteSegment`] is a
/// refused remote segment transition (no Kafka code of its own); the rest are
/// controller-side failures.
#[derive(thiserror::Error, Debug)]
pub enum ControllerError {
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
    /// This node is not the raft leader; retry on `leader` if known (Kafka `NOT_CONTROLLER`).
    #[error("not the active controller (leader: {leader:?})")]
    NotController {
        /// The current raft leader, if this node knows it.
        leader: Option<BrokerId>,
    },
    /// The raft core failed or stopped (e.g. after [`Controller::shutdown`](crate::Controller::shutdown)).
    #[error("raft: {0}")]
    Raft(String),
    /// Reading or writing the controller's data directory failed.
    #[error("controller storage: {0}")]
    Storage(#[from] std::io::Error),
}

impl From<CommandError> for ControllerError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::TopicAlreadyExists(name) => ControllerError::TopicAlreadyExists(name),
            CommandError::UnknownTopic(name) => ControllerError::UnknownTopic(name),
            CommandError::InvalidTopic(reason) => ControllerError::InvalidTopic(reason),
            CommandError::InvalidPartitions(reason) => ControllerError::InvalidPartitions(reason),
            CommandError::InvalidReplicationFactor(reason) => {
                ControllerError::InvalidReplicationFactor(reason)
            }
            CommandError::InvalidConfig(reason) => ControllerError::InvalidConfig(reason),
            CommandError::InvalidRemoteSegment(reason) => {
                ControllerError::InvalidRemoteSegment(reason)
            }
            CommandError::StaleBrokerEpoch(reason) => ControllerError::StaleBrokerEpoch(reason),
            CommandError::NotLeaderOrFollower(reason) => {
                ControllerError::NotLeaderOrFollower(reason)
            }
            CommandError::FencedLeaderEpoch(reason) => ControllerError::FencedLeaderEpoch(reason),
            CommandError::InvalidUpdateVersion(reason) => {
                ControllerError::InvalidUpdateVersion(reason)
            }
            CommandError::IneligibleReplica(reason) => ControllerError::IneligibleReplica(reason),
            CommandError::InvalidRequest(reason) => ControllerError::InvalidRequest(reason),
            CommandError::UnknownTopicOrPartition(reason) => {
                ControllerError::UnknownTopicOrPartition(reason)
            }
        }
    }
}
