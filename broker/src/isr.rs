//! ISR changes requested by the partition leader through the controller (KIP-497
//! AlterPartition; Kafka's `AlterPartitionManager`): the trait, with its caller, and
//! [`ControllerIsrUpdater`], its implementation over the controller client.

use silt_controller::{
    AlterPartitionRequest, CommandError, Controller, ControllerError, PartitionAssignment,
};

/// Why the controller did not apply an ISR change.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IsrUpdateError {
    /// The request's leader epoch or partition epoch is not the controller's current
    /// one (Kafka's FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION); a newer metadata
    /// version will supersede this leader's view.
    #[error("stale leader epoch {leader_epoch} or partition epoch {partition_epoch}")]
    StaleEpoch {
        /// Leader epoch in the request.
        leader_epoch: i32,
        /// Partition epoch in the request.
        partition_epoch: i32,
    },
    /// The requested ISR is not acceptable (a replica outside the assignment, a fenced
    /// broker, the leader missing).
    #[error("invalid isr: {0}")]
    InvalidIsr(String),
    /// The topic or partition does not exist any more.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// The controller could not be reached or could not commit the change.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// Asks the controller to change the ISR of partitions this broker leads.
#[async_trait::async_trait]
pub trait IsrUpdater: Send + Sync + std::fmt::Debug {
    /// KIP-497 AlterPartition: asks the controller to set the ISR of a partition the
    /// request's broker leads at its `leader_epoch`, from the assignment at its
    /// `partition_epoch`.
    ///
    /// # Errors
    /// [`IsrUpdateError`] when the controller refuses or cannot commit the change; the
    /// leader retries later, or a newer assignment supersedes it.
    async fn alter_isr(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<PartitionAssignment, IsrUpdateError>;
}

/// Sends the ISR changes of partitions this broker leads to the controller.
#[derive(Debug)]
pub struct ControllerIsrUpdater {
    controller: Controller,
}

impl ControllerIsrUpdater {
    /// An updater sending requests through `controller`.
    pub fn new(controller: Controller) -> Self {
        ControllerIsrUpdater { controller }
    }
}

#[async_trait::async_trait]
impl IsrUpdater for ControllerIsrUpdater {
    async fn alter_isr(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<PartitionAssignment, IsrUpdateError> {
        let (leader_epoch, partition_epoch) = (request.leader_epoch, request.partition_epoch);
        self.controller
            .alter_partition(request)
            .await
            .map_err(|error| match error {
                ControllerError::Rejected(CommandError::FencedLeaderEpoch(_))
                | ControllerError::Rejected(CommandError::InvalidUpdateVersion(_))
                | ControllerError::Rejected(CommandError::NotLeaderOrFollower(_)) => {
                    IsrUpdateError::StaleEpoch {
                        leader_epoch,
                        partition_epoch,
                    }
                }
                ControllerError::Rejected(CommandError::UnknownTopicOrPartition(_))
                | ControllerError::Rejected(CommandError::UnknownTopic(_)) => {
                    IsrUpdateError::UnknownPartition
                }
                ControllerError::Rejected(CommandError::InvalidRequest(reason))
                | ControllerError::Rejected(CommandError::IneligibleReplica(reason)) => {
                    IsrUpdateError::InvalidIsr(reason)
                }
                other => IsrUpdateError::Unavailable(other.to_string()),
            })
    }
}
