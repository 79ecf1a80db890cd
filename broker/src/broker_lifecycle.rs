//! This broker's membership in the cluster (Kafka's `BrokerLifecycleManager`):
//! registration with a fresh incarnation id, heartbeats to the active controller (which
//! unfence it once it has caught up with the metadata, and fence it when they stop),
//! and controlled shutdown.

use std::sync::Arc;
use std::time::Duration;

use silt_controller::{BrokerId, BrokerRegistration, CommandError, Controller, ControllerError};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a controlled shutdown may wait for the controller before the broker stops
/// anyway (its session then expires on the controller).
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a controller error can go away by itself (no quorum or leader yet, a
/// forwarded request that timed out), so the request is worth retrying.
fn is_transient(error: &ControllerError) -> bool {
    matches!(
        error,
        ControllerError::NotController { .. }
            | ControllerError::Raft(_)
            | ControllerError::Rejected(CommandError::StaleBrokerEpoch(_))
    )
}

/// Start-up waits that retry until the cluster answers: logs the first failure and then
/// one line every [`WAIT_LOG_INTERVAL`], never gives up.
struct Waiting {
    what: &'static str,
    since: tokio::time::Instant,
    last_log: Option<tokio::time::Instant>,
}

/// How often a start-up wait logs that it is still waiting.
const WAIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Waiting {
    fn new(what: &'static str) -> Self {
        Waiting {
            what,
            since: tokio::time::Instant::now(),
            last_log: None,
        }
    }

    fn note(&mut self, reason: &dyn std::fmt::Display) {
        let now = tokio::time::Instant::now();
        if self
            .last_log
            .is_none_or(|logged| now.duration_since(logged) >= WAIT_LOG_INTERVAL)
        {
            self.last_log = Some(now);
            warn!(
                waited_s = now.duration_since(self.since).as_secs(),
                %reason,
                "still {}, retrying",
                self.what
            );
        }
    }

    async fn retry(&mut self, reason: &dyn std::fmt::Display) {
        self.note(reason);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The registration of this broker process and its fencing state as the active controller
/// last reported it.
#[derive(Debug)]
pub struct BrokerLifecycleManager {
    controller: Controller,
    registration: BrokerRegistration,
    heartbeat_interval: Duration,
    fenced: watch::Sender<bool>,
}

impl BrokerLifecycleManager {
    /// Registers this broker under a fresh incarnation id (Kafka's BrokerRegistration):
    /// a restarted broker comes back fenced, out of every ISR, until its heartbeats show it
    /// has applied the metadata up to its registration.
    ///
    /// While no controller answers (the quorum is still forming, or lost while other
    /// nodes restart) it retries every second and logs every 10 s: a node that gave up
    /// here would take its own controller voter down with it and could keep the quorum
    /// from forming.
    ///
    /// Errors: the controller refused the registration (an invalid one; not retried).
    pub async fn register(
        controller: Controller,
        broker_id: BrokerId,
        host: String,
        port: u16,
        rack: Option<String>,
        heartbeat_interval: Duration,
    ) -> Result<Arc<BrokerLifecycleManager>, ControllerError> {
        let registration = BrokerRegistration {
            broker_id,
            incarnation_id: uuid::Uuid::new_v4(),
            host,
            port,
            rack,
            fenced: false,
        };
        let mut waiting = Waiting::new("registering with the controller");
        loop {
            match controller.register_broker(registration.clone()).await {
                Ok(()) => break,
                Err(error) if is_transient(&error) => waiting.retry(&error).await,
                Err(error) => return Err(error),
            }
        }
        info!(broker_id, incarnation_id = %registration.incarnation_id, "registered with the controller");
        let (fenced, _) = watch::channel(true);
        Ok(Arc::new(BrokerLifecycleManager {
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
            Err(ControllerError::Rejected(CommandError::StaleBrokerEpoch(reason))) => {
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

    /// Heartbeats until the controller unfences this broker, however long that takes
    /// (the quorum may be down while other nodes restart); logs every 10 s meanwhile.
    pub async fn wait_until_unfenced(&self) {
        let mut interval =
            tokio::time::interval(self.heartbeat_interval.min(Duration::from_millis(200)));
        let mut waiting = Waiting::new("waiting to be unfenced by the controller");
        loop {
            let _ = interval.tick().await;
            match self.heartbeat().await {
                Ok(false) => return,
                Ok(true) => waiting.note(&"the controller still fences this broker"),
                Err(error) => waiting.note(&error),
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
