//! Broker liveness on the active controller (Kafka KRaft semantics): heartbeats keep a
//! broker's session alive, silent brokers are fenced after `broker.session.timeout.ms`,
//! caught-up fenced brokers are unfenced, and preferred leaders are elected periodically.
//!
//! Heartbeat times live in memory on the active controller only; a new active controller
//! gives every broker a fresh session (grace period).

use std::collections::HashMap;
use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::Controller;
use crate::ControllerError;
use crate::cluster_metadata::BrokerId;
use crate::command::Command;
use crate::command::CommandError;
use crate::election;
use crate::network::HeartbeatRequest;
use crate::network::LeaderAnswer;

/// How often the active controller looks for expired broker sessions.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Heartbeat bookkeeping of the active controller.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// Last heartbeat (or registration, or leadership start) per broker.
    last_heartbeat: HashMap<BrokerId, Instant>,
    /// Incarnations in controlled shutdown: their heartbeats never unfence them.
    shutting_down: HashSet<(BrokerId, uuid::Uuid)>,
}

impl Liveness {
    /// Records the liveness effect of a command applied through this node.
    pub(crate) fn note_applied(&mut self, command: &Command) {
        match command {
            Command::Once { command, .. } => self.note_applied(command),
            Command::RegisterBroker(registration) => {
                let _previous = self
                    .last_heartbeat
                    .insert(registration.broker_id, Instant::now());
            }
            Command::FenceBroker {
                broker_id,
                incarnation_id: Some(incarnation_id),
                ..
            } => {
                let _new = self.shutting_down.insert((*broker_id, *incarnation_id));
            }
            _ => {}
        }
    }
}

/// Sets the `silt_controller_active` gauge.
pub(crate) fn set_active_gauge(active: bool) {
    metrics::gauge!("silt_controller_active").set(if active { 1.0 } else { 0.0 });
}

/// Serves a heartbeat on the active controller.
pub(crate) async fn handle_heartbeat(
    controller: &Controller,
    heartbeat: &HeartbeatRequest,
) -> Result<LeaderAnswer, ControllerError> {
    let metadata = controller.metadata();
    let broker_id = heartbeat.broker_id;
    let Some(broker) = metadata.broker(broker_id) else {
        return Ok(LeaderAnswer::Heartbeat(Err(
            CommandError::StaleBrokerEpoch(format!("broker {broker_id} is not registered")),
        )));
    };
    if broker.incarnation_id != heartbeat.incarnation_id {
        return Ok(LeaderAnswer::Heartbeat(Err(
            CommandError::StaleBrokerEpoch(format!(
                "broker {broker_id} is registered as incarnation {}, not {}",
                broker.incarnation_id, heartbeat.incarnation_id
            )),
        )));
    }
    let in_controlled_shutdown = {
        let mut liveness = controller.inner.liveness.lock();
        let _previous = liveness.last_heartbeat.insert(broker_id, Instant::now());
        liveness
            .shutting_down
            .contains(&(broker_id, heartbeat.incarnation_id))
    };
    if !broker.fenced || in_controlled_shutdown {
        return Ok(LeaderAnswer::Heartbeat(Ok(broker.fenced)));
    }
    let broker_epoch = metadata.broker_epochs.get(&broker_id).copied().unwrap_or(0);
    if heartbeat.metadata_offset < broker_epoch {
        return Ok(LeaderAnswer::Heartbeat(Ok(true)));
    }
    let Some(raft) = &controller.inner.raft else {
        return Ok(LeaderAnswer::NotLeader { leader: None });
    };
    let unfence = Command::UnfenceBroker {
        broker_id,
        incarnation_id: heartbeat.incarnation_id,
        unclean_leader_election_default: controller.inner.tuning.unclean_leader_election_enable,
    };
    match controller.write_locally(raft, unfence).await? {
        LeaderAnswer::Applied(Ok(_)) => {
            tracing::info!(broker_id, broker_epoch, "unfenced broker");
            Ok(LeaderAnswer::Heartbeat(Ok(false)))
        }
        LeaderAnswer::Applied(Err(error)) => Ok(LeaderAnswer::Heartbeat(Err(error))),
        other => Ok(other),
    }
}

/// Runs on every voter for its whole life; acts while this node is the active controller.
pub(crate) async fn leader_duties(controller: Controller) {
    let Some(raft) = controller.inner.raft.clone() else {
        return;
    };
    let mut stop = controller.inner.stop.subscribe();
    let mut raft_metrics = raft.metrics();
    let mut ticker = tokio::time::interval(SESSION_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rebalance_interval = controller.inner.tuning.leader_imbalance_check_interval;
    let mut next_rebalance = Instant::now() + rebalance_interval;
    let mut was_active = false;
    set_active_gauge(false);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            changed = raft_metrics.changed() => if changed.is_err() { break },
            _ = ticker.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        let active = controller.is_active();
        if active != was_active {
            set_active_gauge(active);
            if active {
                tracing::info!(
                    node_id = controller.node_id(),
                    "became the active controller"
                );
                start_grace_period(&controller);
                next_rebalance = Instant::now() + rebalance_interval;
            } else {
                tracing::info!(
                    node_id = controller.node_id(),
                    "no longer the active controller"
                );
            }
            was_active = active;
        }
        if !active {
            continue;
        }
        if controller.metadata().cluster_id.is_empty() {
            set_cluster_id(&controller).await;
        }
        fence_expired_brokers(&controller).await;
        if controller.inner.tuning.auto_leader_rebalance_enable && Instant::now() >= next_rebalance
        {
            next_rebalance = Instant::now() + rebalance_interval;
            rebalance_leaders(&controller).await;
        }
    }
    set_active_gauge(false);
}

/// Every registered broker's session starts now.
fn start_grace_period(controller: &Controller) {
    let metadata = controller.metadata();
    let now = Instant::now();
    let mut liveness = controller.inner.liveness.lock();
    liveness.last_heartbeat = metadata.brokers.keys().map(|id| (*id, now)).collect();
}

async fn set_cluster_id(controller: &Controller) {
    let cluster_id = controller
        .inner
        .configured_cluster_id
        .clone()
        .unwrap_or_else(crate::generate_cluster_id);
    let Some(raft) = &controller.inner.raft else {
        return;
    };
    match controller
        .write_locally(raft, Command::SetClusterId { cluster_id })
        .await
    {
        Ok(LeaderAnswer::Applied(Ok(_))) => {
            tracing::info!(cluster_id = %controller.metadata().cluster_id, "set the cluster id");
        }
        Ok(other) => tracing::warn!(answer = ?other, "setting the cluster id failed"),
        Err(error) => tracing::warn!(%error, "setting the cluster id failed"),
    }
}

async fn fence_expired_brokers(controller: &Controller) {
    let metadata = controller.metadata();
    let session_timeout = controller.inner.tuning.broker_session_timeout;
    let now = Instant::now();
    let expired: Vec<(BrokerId, uuid::Uuid)> = {
        let mut liveness = controller.inner.liveness.lock();
        metadata
            .unfenced_brokers()
            .filter(|broker| {
                let last = *liveness
                    .last_heartbeat
                    .entry(broker.broker_id)
                    .or_insert(now);
                now.duration_since(last) > session_timeout
            })
            .map(|broker| (broker.broker_id, broker.incarnation_id))
            .collect()
    };
    let Some(raft) = &controller.inner.raft else {
        return;
    };
    for (broker_id, incarnation_id) in expired {
        let fence = Command::FenceBroker {
            broker_id,
            // Not the controlled-shutdown marker: the liveness map is not told.
            incarnation_id: Some(incarnation_id),
            unclean_leader_election_default: controller.inner.tuning.unclean_leader_election_enable,
        };
        match controller.write_locally(raft, fence).await {
            Ok(LeaderAnswer::Applied(Ok(_))) => tracing::warn!(
                broker_id,
                session_timeout_ms = session_timeout.as_millis(),
                "fenced broker after its session expired"
            ),
            Ok(other) => tracing::debug!(broker_id, answer = ?other, "fencing broker failed"),
            Err(error) => tracing::debug!(broker_id, %error, "fencing broker failed"),
        }
    }
}

async fn rebalance_leaders(controller: &Controller) {
    let metadata = controller.metadata();
    let imbalanced = metadata
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .any(|partition| election::prefers_another_leader(&metadata, partition));
    if !imbalanced {
        return;
    }
    let Some(raft) = &controller.inner.raft else {
        return;
    };
    match controller
        .write_locally(raft, Command::ElectPreferredLeaders)
        .await
    {
        Ok(LeaderAnswer::Applied(Ok(output))) => {
            tracing::info!(?output, "elected preferred leaders");
        }
        Ok(other) => tracing::debug!(answer = ?other, "preferred leader election failed"),
        Err(error) => tracing::debug!(%error, "preferred leader election failed"),
    }
}
