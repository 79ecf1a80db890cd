//! Errors returned by the [`Controller`](crate::Controller).

use crate::cluster_metadata::BrokerId;
use crate::command::CommandError;

/// Why a controller operation failed: a refused request ([`CommandError`], which maps
/// onto Kafka error codes), or a controller-side failure.
#[derive(thiserror::Error, Debug)]
pub enum ControllerError {
    /// The request was refused; the variant says why and which Kafka error it is.
    #[error(transparent)]
    Rejected(#[from] CommandError),
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
