//! Silt cluster metadata: brokers, topics, partitions, topic configs, producer id blocks
//! and KIP-405 remote log segment metadata, kept as an openraft replicated state machine with a durable log and snapshots on disk.
//!
//! [`Controller`] is the handle the broker and the gateway use: mutations go through the
//! raft log and return once applied; [`Controller::metadata`] and
//! [`Controller::subscribe`] expose the applied [`ClusterMetadata`].
//!
//! The quorum has 1, 3 or 5 voters ([`ControllerConfig::voters`]); voters talk HTTP + JSON
//! to each other. Writes may be issued on any node: a node that is not the active
//! controller (the raft leader) forwards them to it. A broker-only node attaches with
//! [`Controller::connect`]. The active controller also tracks broker liveness (heartbeats,
//! `broker.session.timeout.ms`), fences silent brokers and elects partition leaders.
//!
//! Metrics (`metrics` crate): `silt_controller_active` (gauge, 1 on the active
//! controller), `silt_controller_fenced_brokers` (gauge, as applied on this node) and
//! `silt_controller_leader_elections_total` (counter of partition leader changes decided
//! by this node while active).

mod applied_requests;
mod cluster_metadata;
mod command;
mod durable_file;
mod election;
mod error;
mod liveness;
mod log_store;
mod metadata_store;
mod network;
mod placement;
mod quorum_controller;
mod server;
mod snapshot;
mod state_machine;

pub use crate::cluster_metadata::AlterPartitionRequest;
pub use crate::cluster_metadata::BrokerId;
pub use crate::cluster_metadata::BrokerRegistration;
pub use crate::cluster_metadata::ClusterMetadata;
pub use crate::cluster_metadata::HeartbeatResponse;
pub use crate::cluster_metadata::NO_BROKER;
pub use crate::cluster_metadata::PartitionAssignment;
pub use crate::cluster_metadata::RemoteSegmentMetadata;
pub use crate::cluster_metadata::RemoteSegmentState;
pub use crate::cluster_metadata::RemoteSegments;
pub use crate::cluster_metadata::RestoredPartition;
pub use crate::cluster_metadata::RestoredTopic;
pub use crate::cluster_metadata::TopicId;
pub use crate::cluster_metadata::TopicMetadata;
pub use crate::cluster_metadata::generate_cluster_id;
pub use crate::command::CommandError;
pub use crate::error::ControllerError;
pub use crate::quorum_controller::Controller;
pub use crate::quorum_controller::ControllerConfig;
pub use crate::quorum_controller::ControllerTuning;
