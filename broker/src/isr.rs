//! ISR changes requested by the partition leader through the controller (KIP-497
//! AlterPartition). The trait lives here, with its caller; the binary implements it
//! over the controller client.

use silt_controller::{BrokerId, PartitionAssignment, TopicId};

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
    /// KIP-497 AlterPartition: asks the controller to set the ISR of a partition this
    /// broker leads at `leader_epoch`, from the assignment at `partition_epoch`.
    ///
    /// # Errors
    /// [`IsrUpdateError`] when the controller refuses or cannot commit the change; the
    /// leader retries later, or a newer assignment supersedes it.
    async fn alter_isr(
        &self,
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
    ) -> Result<PartitionAssignment, IsrUpdateError>;
}
