//! One hosted partition: its log plus the replication state around it (leader, leader
//! epoch, partition epoch, ISR, the leader's view of its followers, high watermark, log
//! start/end offsets cached for lock-free reads).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use parking_lot::Mutex;
use silt_controller::{BrokerId, PartitionAssignment, TopicId};
use tokio::sync::Notify;

use crate::log::PartitionLog;
use crate::replication;
pub use crate::replication::FollowerState;

/// After a failed AlterPartition, how long (ms) the leader waits before asking again.
const ISR_CHANGE_RETRY_BACKOFF_MS: i64 = 1_000;

/// A partition this broker hosts as a replica.
///
/// The log is behind a blocking mutex because every log call does file I/O and is made
/// from `spawn_blocking`. Offsets are mirrored in atomics so Fetch and Metadata can read
/// them without touching the log.
#[derive(Debug)]
pub struct Partition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
    /// Topic id the log was created for; a re-created topic has a new id and a new log.
    pub topic_id: TopicId,
    /// The partition's directory, `<log dir>/<topic>-<partition>`.
    pub dir: std::path::PathBuf,
    local_broker_id: BrokerId,
    log: Arc<Mutex<PartitionLog>>,
    leader_epoch: AtomicI32,
    partition_epoch: AtomicI32,
    leader: AtomicI32,
    high_watermark: AtomicI64,
    log_end_offset: AtomicI64,
    log_start_offset: AtomicI64,
    /// Last high watermark written to the checkpoint file, -1 before the first write.
    checkpointed_high_watermark: AtomicI64,
    /// `min.insync.replicas` of the topic, mirrored for acks=all waiters.
    min_insync_replicas: AtomicI32,
    replicas: Mutex<ReplicaSet>,
    /// Woken when the high watermark, the leader or the ISR changes (acks=all waiters).
    state_changed: Notify,
}

/// Assignment and replication state; one lock so the high watermark is computed from a
/// consistent view.
#[derive(Debug, Default)]
struct ReplicaSet {
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    /// Leader only: every other replica's fetch state.
    followers: BTreeMap<BrokerId, FollowerState>,
    /// Leader only: the log end offset when this broker became leader at this epoch.
    leader_epoch_start_offset: i64,
    /// Leader only: the ISR an in-flight AlterPartition asks for.
    pending_isr: Option<Vec<BrokerId>>,
    /// Leader only: no new AlterPartition before this time (ms since the Unix epoch).
    isr_change_not_before_ms: i64,
    /// Follower only: the leader's high watermark from the last fetch, -1 unknown.
    leader_high_watermark: i64,
}

/// What [`Partition::apply_assignment`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentChange {
    /// The leader or leader epoch changed.
    pub leadership_changed: bool,
    /// This broker is now the leader at a new epoch: the log's epoch cache should
    /// record the epoch at the current log end offset.
    pub became_leader: bool,
    /// The assignment was older than the one applied and was ignored.
    pub stale: bool,
}

/// An ISR change for the controller (AlterPartition), decided by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChangeRequest {
    /// Topic id.
    pub topic_id: TopicId,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the change is made under.
    pub leader_epoch: i32,
    /// The partition epoch of the assignment the change starts from.
    pub partition_epoch: i32,
    /// The ISR asked for.
    pub new_isr: Vec<BrokerId>,
    /// True when replicas join, false when they leave.
    pub expand: bool,
}

impl Partition {
    /// Wraps an opened log hosted by broker `local_broker_id`; offsets are read from it.
    /// `initial_high_watermark` is clamped to the log's offsets (the log end offset for
    /// a single-replica partition, a checkpoint for replicated ones).
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        topic_id: TopicId,
        local_broker_id: BrokerId,
        log: PartitionLog,
        initial_high_watermark: i64,
    ) -> Self {
        let log_end_offset = log.log_end_offset();
        let log_start_offset = log.log_start_offset();
        let high_watermark = initial_high_watermark.clamp(log_start_offset, log_end_offset);
        Partition {
            topic,
            partition,
            topic_id,
            dir: log.dir().to_path_buf(),
            local_broker_id,
            log: Arc::new(Mutex::new(log)),
            leader_epoch: AtomicI32::new(-1),
            partition_epoch: AtomicI32::new(-1),
            leader: AtomicI32::new(-1),
            high_watermark: AtomicI64::new(high_watermark),
            log_end_offset: AtomicI64::new(log_end_offset),
            log_start_offset: AtomicI64::new(log_start_offset),
            checkpointed_high_watermark: AtomicI64::new(-1),
            min_insync_replicas: AtomicI32::new(1),
            replicas: Mutex::new(ReplicaSet {
                leader_high_watermark: -1,
                ..ReplicaSet::default()
            }),
            state_changed: Notify::new(),
        }
    }

    /// The log, for use inside `spawn_blocking` only.
    pub fn log(&self) -> Arc<Mutex<PartitionLog>> {
        Arc::clone(&self.log)
    }

    /// Applies the controller's view of this partition (replicas, ISR, leader, leader
    /// epoch, partition epoch) at `now_ms` (ms since the Unix epoch). A leadership
    /// change resets the follower states: their offsets are unknown until they fetch.
    /// An assignment older than the applied one (lower leader epoch, or same leader
    /// epoch and lower partition epoch) is ignored.
    pub fn apply_assignment(
        &self,
        assignment: &PartitionAssignment,
        now_ms: i64,
    ) -> AssignmentChange {
        let mut replica_set = self.replicas.lock();
        let previous_epoch = self.leader_epoch();
        let previous_partition_epoch = self.partition_epoch();
        let stale = assignment.leader_epoch < previous_epoch
            || (assignment.leader_epoch == previous_epoch
                && assignment.partition_epoch < previous_partition_epoch);
        if stale {
            return AssignmentChange {
                leadership_changed: false,
                became_leader: false,
                stale: true,
            };
        }
        let leadership_changed =
            assignment.leader_epoch != previous_epoch || assignment.leader != self.leader();
        self.leader_epoch
            .store(assignment.leader_epoch, Ordering::Release);
        self.partition_epoch
            .store(assignment.partition_epoch, Ordering::Release);
        self.leader.store(assignment.leader, Ordering::Release);
        replica_set.replicas = assignment.replicas.clone();
        replica_set.isr = assignment.isr.clone();
        let is_leader = assignment.leader == self.local_broker_id;
        if leadership_changed {
            replica_set.pending_isr = None;
            replica_set.isr_change_not_before_ms = 0;
            replica_set.followers.clear();
            replica_set.leader_high_watermark = -1;
            if is_leader {
                replica_set.leader_epoch_start_offset = self.log_end_offset();
            }
        }
        if is_leader {
            let local = self.local_broker_id;
            let isr = assignment.isr.clone();
            replica_set
                .followers
                .retain(|replica, _| assignment.replicas.contains(replica));
            for replica in assignment
                .replicas
                .iter()
                .filter(|replica| **replica != local)
            {
                let _ = replica_set
                    .followers
                    .entry(*replica)
                    .or_insert_with(|| FollowerState::reset(now_ms, isr.contains(replica)));
            }
        }
        self.update_high_watermark(&replica_set);
        drop(replica_set);
        self.state_changed.notify_waiters();
        AssignmentChange {
            leadership_changed,
            became_leader: leadership_changed && is_leader,
            stale: false,
        }
    }

    /// Marks the partition as no longer hosted here (deleted or reassigned): it has no
    /// leader any more, and acks=all waiters are woken.
    pub fn mark_removed(&self) {
        self.leader.store(-1, Ordering::Release);
        self.state_changed.notify_waiters();
    }

    /// Mirrors the topic's `min.insync.replicas`.
    pub fn set_min_insync_replicas(&self, min_insync_replicas: i32) {
        self.min_insync_replicas
            .store(min_insync_replicas, Ordering::Release);
    }

    /// The topic's `min.insync.replicas` as last applied.
    pub fn min_insync_replicas(&self) -> i32 {
        self.min_insync_replicas.load(Ordering::Acquire)
    }

    /// This broker's id.
    pub fn local_broker_id(&self) -> BrokerId {
        self.local_broker_id
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.leader() == self.local_broker_id
    }

    /// Current leader epoch, -1 before the first assignment.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Current partition epoch (bumped by the controller on every change of the
    /// partition's record), -1 before the first assignment.
    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch.load(Ordering::Acquire)
    }

    /// Current leader broker id, -1 when there is none.
    pub fn leader(&self) -> BrokerId {
        self.leader.load(Ordering::Acquire)
    }

    /// On the leader, the log end offset when this broker became leader at the current
    /// leader epoch; None on a follower. Until the high watermark reaches it, the new
    /// leader has not yet learned how far its predecessor had committed.
    pub fn leader_epoch_start_offset(&self) -> Option<i64> {
        (self.leader() == self.local_broker_id)
            .then(|| self.replicas.lock().leader_epoch_start_offset)
    }

    /// In-sync replica set as last applied from the controller.
    pub fn isr(&self) -> Vec<BrokerId> {
        self.replicas.lock().isr.clone()
    }

    /// All replicas as last applied from the controller.
    pub fn replicas(&self) -> Vec<BrokerId> {
        self.replicas.lock().replicas.clone()
    }

    /// Leader only: the followers' fetch states by replica id.
    pub fn follower_states(&self) -> BTreeMap<BrokerId, FollowerState> {
        self.replicas.lock().followers.clone()
    }

    /// High watermark: the first offset not yet known to be committed (exclusive bound
    /// of what consumers may read).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Log end offset (LEO): the offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Local log start offset: the first offset still in the local log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Woken whenever the high watermark, the leader or the ISR changes. Create the
    /// `notified()` future (and `enable` it) before checking the state it guards.
    pub fn state_changed(&self) -> &Notify {
        &self.state_changed
    }

    /// Runs `operation` on the log under its lock and refreshes the cached offsets before
    /// the lock is released, so changes made concurrently (appends, retention, truncation)
    /// publish their offsets in the order they changed the log. Blocking: call on the
    /// blocking pool.
    pub fn update_log<T>(&self, operation: impl FnOnce(&mut PartitionLog) -> T) -> T {
        let mut guard = self.log.lock();
        let value = operation(&mut guard);
        self.refresh_offsets(guard.log_start_offset(), guard.log_end_offset());
        value
    }

    /// Refreshes the cached offsets after the log changed and recomputes the high
    /// watermark; [`Partition::update_log`] calls it under the log lock.
    fn refresh_offsets(&self, log_start_offset: i64, log_end_offset: i64) {
        self.log_start_offset
            .store(log_start_offset, Ordering::Release);
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        let replica_set = self.replicas.lock();
        self.update_high_watermark(&replica_set);
    }

    /// Follower only: records the leader's high watermark from a fetch response; ours
    /// becomes min(leader's, our log end offset).
    pub fn set_leader_high_watermark(&self, leader_high_watermark: i64) {
        let mut replica_set = self.replicas.lock();
        replica_set.leader_high_watermark = leader_high_watermark;
        self.update_high_watermark(&replica_set);
    }

    /// The one place the high watermark is computed.
    /// - leader: min log end offset over the ISR (plus replicas an in-flight expansion
    ///   adds), never going back within the epoch;
    /// - follower: min(leader's high watermark, our log end offset);
    /// - otherwise: kept, at most the log end offset.
    fn update_high_watermark(&self, replica_set: &ReplicaSet) {
        let log_end_offset = self.log_end_offset();
        let current = self.high_watermark();
        let leader = self.leader();
        let new_high_watermark = if leader == self.local_broker_id {
            let mut effective_isr = replica_set.isr.clone();
            if let Some(pending) = &replica_set.pending_isr {
                effective_isr.extend(
                    pending
                        .iter()
                        .filter(|replica| !replica_set.isr.contains(replica)),
                );
            }
            replication::leader_high_watermark(
                current,
                leader,
                log_end_offset,
                &effective_isr,
                &replica_set.followers,
            )
        } else if leader >= 0 && replica_set.leader_high_watermark >= 0 {
            replica_set.leader_high_watermark.min(log_end_offset)
        } else {
            current.min(log_end_offset)
        };
        let new_high_watermark =
            new_high_watermark.max(self.log_start_offset().min(log_end_offset));
        if new_high_watermark != current {
            self.high_watermark
                .store(new_high_watermark, Ordering::Release);
            self.state_changed.notify_waiters();
        }
        debug_assert!(self.high_watermark() <= self.log_end_offset());
    }

    /// Leader only: records a follower's fetch at `fetch_offset` (its log end offset)
    /// made at `now_ms` (ms since the Unix epoch), advances the high watermark if it
    /// can, and returns the ISR expansion to ask the controller for when the follower
    /// is outside the ISR and has caught up. `None` for the change also when `replica_id`
    /// is not a replica of the partition (the `bool` is then false).
    pub fn update_follower_fetch_state(
        &self,
        replica_id: BrokerId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> (bool, Option<IsrChangeRequest>) {
        let mut replica_set = self.replicas.lock();
        let leader_log_end_offset = self.log_end_offset();
        let Some(follower) = replica_set.followers.get_mut(&replica_id) else {
            return (false, None);
        };
        follower.update_fetch_state(fetch_offset, now_ms, leader_log_end_offset);
        let lag = follower.lag(leader_log_end_offset).unwrap_or(0);
        metrics::gauge!(
            "silt_replica_lag_messages",
            "topic" => self.topic.to_string(),
            "partition" => self.partition.to_string(),
            "replica" => replica_id.to_string()
        )
        .set(lag as f64);
        self.update_high_watermark(&replica_set);
        let expansion = self.expansion_for(&mut replica_set, replica_id, now_ms);
        (true, expansion)
    }

    fn expansion_for(
        &self,
        replica_set: &mut ReplicaSet,
        replica_id: BrokerId,
        now_ms: i64,
    ) -> Option<IsrChangeRequest> {
        if replica_set.isr.contains(&replica_id)
            || replica_set.pending_isr.is_some()
            || now_ms < replica_set.isr_change_not_before_ms
        {
            return None;
        }
        let follower_log_end_offset = replica_set.followers.get(&replica_id)?.log_end_offset;
        if !replication::is_follower_in_sync(
            follower_log_end_offset,
            self.high_watermark(),
            replica_set.leader_epoch_start_offset,
        ) {
            return None;
        }
        let mut new_isr = replica_set.isr.clone();
        new_isr.push(replica_id);
        Some(self.begin_isr_change(replica_set, new_isr, true))
    }

    fn begin_isr_change(
        &self,
        replica_set: &mut ReplicaSet,
        new_isr: Vec<BrokerId>,
        expand: bool,
    ) -> IsrChangeRequest {
        replica_set.pending_isr = Some(new_isr.clone());
        IsrChangeRequest {
            topic_id: self.topic_id,
            partition: self.partition,
            leader_epoch: self.leader_epoch(),
            partition_epoch: self.partition_epoch(),
            new_isr,
            expand,
        }
    }

    /// Leader only: the ISR change this partition needs now, if none is in flight —
    /// removing followers not caught up for more than `lag_time_max_ms` (ms), or adding
    /// followers that caught up while an earlier request failed. Marks it in flight;
    /// finish it with [`Self::complete_isr_change`].
    pub fn next_isr_change(&self, now_ms: i64, lag_time_max_ms: i64) -> Option<IsrChangeRequest> {
        if !self.is_leader() {
            return None;
        }
        let mut replica_set = self.replicas.lock();
        if replica_set.pending_isr.is_some() || now_ms < replica_set.isr_change_not_before_ms {
            return None;
        }
        let leader_log_end_offset = self.log_end_offset();
        let lagging = replication::shrink_candidates(
            self.local_broker_id,
            leader_log_end_offset,
            &replica_set.isr,
            &replica_set.followers,
            now_ms,
            lag_time_max_ms,
        );
        if !lagging.is_empty() {
            let new_isr: Vec<BrokerId> = replica_set
                .isr
                .iter()
                .copied()
                .filter(|replica| !lagging.contains(replica))
                .collect();
            return Some(self.begin_isr_change(&mut replica_set, new_isr, false));
        }
        let candidates: Vec<BrokerId> = replica_set
            .followers
            .keys()
            .copied()
            .filter(|replica| !replica_set.isr.contains(replica))
            .collect();
        candidates
            .into_iter()
            .find_map(|replica| self.expansion_for(&mut replica_set, replica, now_ms))
    }

    /// Finishes the in-flight ISR change at `now_ms`: applies the controller's answer,
    /// or on failure allows a new attempt after a backoff.
    pub fn complete_isr_change(&self, outcome: Option<&PartitionAssignment>, now_ms: i64) {
        {
            let mut replica_set = self.replicas.lock();
            replica_set.pending_isr = None;
            if outcome.is_none() {
                replica_set.isr_change_not_before_ms = now_ms + ISR_CHANGE_RETRY_BACKOFF_MS;
            }
            self.update_high_watermark(&replica_set);
        }
        if let Some(assignment) = outcome {
            let _ = self.apply_assignment(assignment, now_ms);
        }
    }

    /// Leader only: whether the ISR is smaller than the replica set.
    pub fn is_under_replicated(&self) -> bool {
        let replica_set = self.replicas.lock();
        self.is_leader() && replica_set.isr.len() < replica_set.replicas.len()
    }

    /// The high watermark if it changed since the last [`Self::mark_high_watermark_checkpointed`].
    pub fn high_watermark_to_checkpoint(&self) -> Option<i64> {
        let high_watermark = self.high_watermark();
        (self.checkpointed_high_watermark.load(Ordering::Acquire) != high_watermark)
            .then_some(high_watermark)
    }

    /// Records that `high_watermark` is on disk.
    pub fn mark_high_watermark_checkpointed(&self, high_watermark: i64) {
        self.checkpointed_high_watermark
            .store(high_watermark, Ordering::Release);
    }
}
