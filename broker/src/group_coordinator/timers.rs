//! Timers of the classic group protocol, each a tokio task: member session expiry, expiry
//! of member ids handed out with MEMBER_ID_REQUIRED, the delayed completion of a join
//! phase, and the deadline for SyncGroup after a join phase. Every timer re-checks the
//! group under its lock when it fires and does nothing if it was superseded.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::info;

use super::GroupCoordinator;
use super::group::{Group, GroupState, PendingJoin};

/// What a timer does when it fires.
#[derive(Debug)]
pub(super) enum TimerAction {
    /// Expires the member unless it heartbeated in time; `token` identifies the member
    /// incarnation the timer watches.
    MemberSession {
        member_id: String,
        token: u64,
        wakeup: Arc<Notify>,
    },
    /// Forgets a member id handed out with MEMBER_ID_REQUIRED that never rejoined.
    PendingMember { member_id: String },
    /// Completes (or extends) the join phase started with timer epoch `epoch`.
    Join { epoch: u64 },
    /// Removes members that never sent SyncGroup after the join phase that set timer
    /// epoch `epoch`.
    PendingSync { epoch: u64 },
}

/// Resolves when `wakeup` is notified; never without one.
async fn notified(wakeup: Option<&Notify>) {
    match wakeup {
        Some(wakeup) => wakeup.notified().await,
        None => std::future::pending().await,
    }
}

/// `Duration` of a millisecond count from a request, negative counting as zero.
pub(super) fn millis(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

impl GroupCoordinator {
    /// Runs `action` at `deadline`, and again at the deadline it returns, until it returns
    /// `None` or the coordinator shuts down.
    pub(super) fn spawn_timer(&self, group_id: &str, deadline: Instant, action: TimerAction) {
        let coordinator = self.self_ref.clone();
        let mut shutdown = self.shutdown_signal.subscribe();
        let group_id = group_id.to_string();
        let wakeup = match &action {
            TimerAction::MemberSession { wakeup, .. } => Some(wakeup.clone()),
            _ => None,
        };
        let _task = tokio::spawn(async move {
            let mut deadline = deadline;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = notified(wakeup.as_deref()) => {}
                    _ = shutdown.wait_for(|stopped| *stopped) => return,
                }
                let Some(coordinator) = coordinator.upgrade() else {
                    return;
                };
                match coordinator.fire_timer(&group_id, &action) {
                    Some(next_deadline) => deadline = next_deadline,
                    None => return,
                }
            }
        });
    }

    /// Starts watching a member's session under a fresh token.
    pub(super) fn watch_member_session(&self, group: &mut Group, member_id: &str) {
        let token = self.next_token();
        let Some(member) = group.members.get_mut(member_id) else {
            return;
        };
        member.timer_token = token;
        let deadline = member.session_deadline;
        let action = TimerAction::MemberSession {
            member_id: member_id.to_string(),
            token,
            wakeup: member.session_wakeup.clone(),
        };
        self.spawn_timer(&group.group_id, deadline, action);
    }

    /// Arms the timer that completes the current join phase after `delay`.
    pub(super) fn schedule_join_completion(
        &self,
        group: &mut Group,
        pending_join: PendingJoin,
        delay: Duration,
    ) {
        let epoch = self.next_token();
        group.timer_epoch = epoch;
        group.pending_join = Some(pending_join);
        self.spawn_timer(
            &group.group_id,
            Instant::now() + delay,
            TimerAction::Join { epoch },
        );
    }

    fn fire_timer(&self, group_id: &str, action: &TimerAction) -> Option<Instant> {
        let handle = self.group(group_id)?;
        let mut group = handle.lock();
        if group.is(GroupState::Dead) {
            return None;
        }
        match action {
            TimerAction::MemberSession {
                member_id, token, ..
            } => self.on_session_timer(&mut group, member_id, *token),
            TimerAction::PendingMember { member_id } => {
                if group.pending_members.remove(member_id) {
                    info!(group_id, member_id = %member_id, "pending member expired before rejoining");
                    if group.is(GroupState::PreparingRebalance) {
                        self.try_complete_join(&mut group);
                    }
                }
                None
            }
            TimerAction::Join { epoch } => {
                if group.timer_epoch == *epoch && group.is(GroupState::PreparingRebalance) {
                    self.on_join_timer(&mut group);
                }
                None
            }
            TimerAction::PendingSync { epoch } => {
                let waits_for_sync = matches!(
                    group.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                );
                if group.timer_epoch == *epoch
                    && waits_for_sync
                    && !group.pending_sync_members.is_empty()
                {
                    self.expire_pending_sync(&mut group);
                }
                None
            }
        }
    }

    fn on_session_timer(&self, group: &mut Group, member_id: &str, token: u64) -> Option<Instant> {
        let member = group.members.get_mut(member_id)?;
        if member.timer_token != token {
            return None;
        }
        let now = Instant::now();
        if now < member.session_deadline {
            return Some(member.session_deadline);
        }
        if member.heartbeat_not_required() {
            member.session_deadline = now + millis(i64::from(member.identity.session_timeout_ms));
            return Some(member.session_deadline);
        }
        info!(
            group_id = %group.group_id,
            member_id,
            generation = group.generation_id,
            "member session expired"
        );
        self.remove_member_and_update_group(group, member_id, "session expired");
        None
    }

    /// Initial delay: extend while new members keep arriving, then complete. Otherwise the
    /// rebalance timeout expired: complete with whoever rejoined.
    fn on_join_timer(&self, group: &mut Group) {
        match group.pending_join {
            Some(PendingJoin::InitialDelay {
                delay_ms,
                remaining_ms,
            }) if group.new_member_added && remaining_ms != 0 => {
                group.new_member_added = false;
                let next_delay_ms = self
                    .config
                    .group_initial_rebalance_delay_ms
                    .min(remaining_ms);
                let next_remaining_ms = remaining_ms.saturating_sub(delay_ms);
                let next = PendingJoin::InitialDelay {
                    delay_ms: next_delay_ms,
                    remaining_ms: next_remaining_ms,
                };
                self.schedule_join_completion(group, next, Duration::from_millis(next_delay_ms));
            }
            _ => self.complete_join(group),
        }
    }

    fn expire_pending_sync(&self, group: &mut Group) {
        let late_members: Vec<String> = group.pending_sync_members.drain().collect();
        info!(
            group_id = %group.group_id,
            generation = group.generation_id,
            members = ?late_members,
            "removing members that did not send SyncGroup in time"
        );
        for member_id in &late_members {
            if let Some(member) = group.remove_member(member_id) {
                super::membership::fail_member(member, ResponseError::UnknownMemberId);
            }
        }
        self.prepare_rebalance(group, "members did not sync in time");
    }
}
