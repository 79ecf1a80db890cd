//! This broker's membership in the cluster: registration with a fresh incarnation id,
//! heartbeats to the active controller (which unfence it once it has caught up with the
//! metadata, and fence it when they stop), controlled shutdown, and ISR changes sent to
//! the controller on behalf of the partitions it leads (KIP-497 AlterPartition).

use std::sync::Arc;
use std::time::Duration;

use silt_broker::isr::{IsrUpdateError, IsrUpdater};
use silt_controller::{
    AlterPartitionRequest, BrokerId, BrokerRegistration, Controller, ControllerError,
    PartitionAssignment, TopicId,
};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a controlled shutdown may wait for the controller before the broker stops
/// anyway (its session then expires on the controller).
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The registration of this broker process and its fencing state as the active controller
/// last reported it.
#[derive(Debug)]
pub struct BrokerMembership {
    controller: Controller,
    registration: BrokerRegistration,
    heartbeat_interval: Duration,
    fenced: watch::Sender<bool>,
}

impl BrokerMembership {
    /// Registers this broker under a fresh incarnation id (Kafka's BrokerRegistration):
    /// a restarted broker comes back fenced, out of every ISR, until its heartbeats show it
    /// has applied the metadata up to its registration.
    ///
    /// Errors: the controller refused the registration or no controller answered.
    pub async fn register(
        controller: Controller,
        broker_id: BrokerId,
        host: String,
        port: u16,
        rack: Option<String>,
        heartbeat_interval: Duration,
    ) -> Result<Arc<BrokerMembership>, ControllerError> {
        let registration = BrokerRegistration {
            broker_id,
            incarnation_id: uuid::Uuid::new_v4(),
            host,
            port,
            rack,
            fenced: false,
        };
        controller.register_broker(registration.clone()).await?;
        info!(broker_id, incarnation_id = %registration.incarnation_id, "registered with the controller");
        let (fenced, _) = watch::channel(true);
        Ok(Arc::new(BrokerMembership {
            controller,
            registration,
            heartbeat_interval,
            fenced,
        }))
    }

    /// The incarnation id this process registered with.
    pub fn incarnation_id(&self) -> uuid::Uuid {
        self.registration.incarnation_id
    }

    /// Whether the active controller last reported this broker fenced.
    pub fn is_fenced(&self) -> bool {
        *self.fenced.borrow()
    }

    /// Sends one heartbeat with the metadata offset this node has applied; re-registers
    /// (same incarnation) if the controller lost the registration. Returns whether the
    /// broker is fenced.
    async fn heartbeat(&self) -> Result<bool, ControllerError> {
        let applied = self.controller.metadata().metadata_offset;
        let broker_id = self.registration.broker_id;
        let answer = match self
            .controller
            .broker_heartbeat(broker_id, self.registration.incarnation_id, applied)
            .await
        {
            Err(ControllerError::StaleBrokerEpoch(reason)) => {
                warn!(broker_id, %reason, "the controller does not know this incarnation, registering again");
                self.controller
                    .register_broker(self.registration.clone())
                    .await?;
                self.controller
                    .broker_heartbeat(broker_id, self.registration.incarnation_id, applied)
                    .await?
            }
            other => other?,
        };
        let was_fenced = self.fenced.send_replace(answer.fenced);
        if was_fenced != answer.fenced {
            info!(broker_id, fenced = answer.fenced, "broker fencing changed");
        }
        Ok(answer.fenced)
    }

    /// Heartbeats until the controller unfences this broker or `timeout` passes.
    pub async fn wait_until_unfenced(&self, timeout: Duration) -> Result<(), ControllerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval =
            tokio::time::interval(self.heartbeat_interval.min(Duration::from_millis(200)));
        loop {
            let _ = interval.tick().await;
            match self.heartbeat().await {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(error) => warn!(%error, "heartbeat failed while waiting to be unfenced"),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ControllerError::Raft(format!(
                    "broker {} was not unfenced within {timeout:?}",
                    self.registration.broker_id
                )));
            }
        }
    }

    /// Heartbeats every `broker.heartbeat.interval.ms` until the task is dropped.
    pub async fn run_heartbeats(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.heartbeat_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let _ = interval.tick().await;
            if let Err(error) = self.heartbeat().await {
                warn!(%error, "broker heartbeat failed");
            }
        }
    }

    /// Controlled shutdown: asks the controller to fence this broker now so its
    /// leaderships move before it stops. Failures are logged; the session expires anyway.
    pub async fn controlled_shutdown(&self) {
        let broker_id = self.registration.broker_id;
        let request = self
            .controller
            .controlled_shutdown(broker_id, self.registration.incarnation_id);
        match tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, request).await {
            Ok(Ok(())) => info!(broker_id, "controlled shutdown: leaderships moved"),
            Ok(Err(error)) => warn!(broker_id, %error, "controlled shutdown failed"),
            Err(_) => warn!(broker_id, "controlled shutdown timed out"),
        }
    }
}

/// Sends the ISR changes of partitions this broker leads to the controller.
#[derive(Debug)]
pub struct ControllerIsrUpdater {
    controller: Controller,
    broker_id: BrokerId,
}

impl ControllerIsrUpdater {
    /// An updater acting as broker `broker_id`.
    pub fn new(controller: Controller, broker_id: BrokerId) -> Self {
        ControllerIsrUpdater {
            controller,
            broker_id,
        }
    }
}

#[async_trait::async_trait]
impl IsrUpdater for ControllerIsrUpdater {
    async fn alter_isr(
        &self,
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
    ) -> Result<PartitionAssignment, IsrUpdateError> {
        let request = AlterPartitionRequest {
            broker_id: self.broker_id,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
        };
        self.controller
            .alter_partition(request)
            .await
            .map_err(|error| match error {
                ControllerError::FencedLeaderEpoch(_)
                | ControllerError::InvalidUpdateVersion(_)
                | ControllerError::NotLeaderOrFollower(_) => IsrUpdateError::StaleEpoch {
                    leader_epoch,
                    partition_epoch,
                },
                ControllerError::UnknownTopicOrPartition(_) | ControllerError::UnknownTopic(_) => {
                    IsrUpdateError::UnknownPartition
                }
                ControllerError::InvalidRequest(reason)
                | ControllerError::IneligibleReplica(reason) => IsrUpdateError::InvalidIsr(reason),
                other => IsrUpdateError::Unavailable(other.to_string()),
            })
    }
}
