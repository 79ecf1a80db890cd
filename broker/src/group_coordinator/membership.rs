//! The classic rebalance protocol: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, with the
//! transitions Kafka's `GroupCoordinator` makes between Empty, PreparingRebalance,
//! CompletingRebalance and Stable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::group::{Group, GroupState, JoinResult, Member, PendingJoin, SyncResult};
use super::records::MemberInfo;
use super::timers::{TimerAction, millis};
use super::{GroupCoordinator, GroupHandle, now_ms, storage_error_code};
use crate::error::error_code;

/// How long a new member may take to complete its first join (Kafka's
/// `GroupCoordinator.NewMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// A JoinGroup request, normalized across versions.
#[derive(Debug)]
struct JoinParams {
    group_id: String,
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets its id with MEMBER_ID_REQUIRED.
    require_known_member_id: bool,
    /// v9+: a static member rejoining a Stable group may skip the assignment.
    supports_skip_assignment: bool,
    reason: String,
}

impl JoinParams {
    fn from_request(
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> Self {
        let rebalance_timeout_ms = if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        JoinParams {
            group_id: request.group_id.0.to_string(),
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.map(|id| id.to_string()),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            rebalance_timeout_ms,
            session_timeout_ms: request.session_timeout_ms,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|protocol| (protocol.name.to_string(), protocol.metadata))
                .collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
            reason: request
                .reason
                .map(|reason| reason.to_string())
                .unwrap_or_default(),
        }
    }
}

/// The answer to a JoinGroup: now, or once the join phase completes.
enum JoinStep {
    Done(JoinResult),
    Wait(oneshot::Receiver<JoinResult>),
}

/// The answer to a SyncGroup: now, once the leader's assignment is stored, or after storing
/// the leader's own assignment.
enum SyncStep {
    Done(SyncResult),
    Wait(oneshot::Receiver<SyncResult>),
    StoreThenWait {
        waiter: oneshot::Receiver<SyncResult>,
        generation: i32,
        assignment: HashMap<String, Bytes>,
    },
}

/// What is needed to persist, or undo, a static member's new member id.
struct StaticReplacement {
    group_instance_id: String,
    old_member_id: String,
    new_member_id: String,
    previous_leader_id: String,
    previous_protocols: Vec<(String, Bytes)>,
    previous_rebalance_timeout_ms: i32,
    previous_session_timeout_ms: i32,
    supports_skip_assignment: bool,
}

impl GroupCoordinator {
    pub(super) async fn join_group_request(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let params = JoinParams::from_request(request, version, client_id, client_host);
        let result = self.handle_join(params).await;
        join_response(result, version)
    }

    async fn handle_join(&self, params: JoinParams) -> JoinResult {
        let member_id = params.member_id.clone();
        if let Some(error) = self.unavailable_for(&params.group_id) {
            return JoinResult::error(error, &member_id);
        }
        if params.group_id.is_empty() {
            return JoinResult::error(ResponseError::InvalidGroupId, &member_id);
        }
        let session_timeouts =
            self.config.group_min_session_timeout_ms..=self.config.group_max_session_timeout_ms;
        if !session_timeouts.contains(&params.session_timeout_ms) {
            return JoinResult::error(ResponseError::InvalidSessionTimeout, &member_id);
        }
        let is_unknown_member = params.member_id.is_empty();
        let handle = if is_unknown_member {
            self.group_or_create(&params.group_id)
        } else {
            match self.group(&params.group_id) {
                Some(handle) => handle,
                None => return JoinResult::error(ResponseError::UnknownMemberId, &member_id),
            }
        };
        let step = {
            let mut group = handle.lock();
            let step = if is_unknown_member {
                self.join_new_member(&mut group, &handle, params)
            } else {
                self.join_current_member(&mut group, params)
            };
            if group.is(GroupState::PreparingRebalance) {
                self.try_complete_join(&mut group);
            }
            step
        };
        match step {
            JoinStep::Done(result) => result,
            JoinStep::Wait(waiter) => waiter.await.unwrap_or_else(|_| {
                JoinResult::error(ResponseError::CoordinatorNotAvailable, &member_id)
            }),
        }
    }

    fn join_new_member(
        &self,
        group: &mut Group,
        handle: &GroupHandle,
        params: JoinParams,
    ) -> JoinStep {
        if group.is(GroupState::Dead) {
            return JoinStep::Done(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                "",
            ));
        }
        if !group.supports_protocols(&params.protocol_type, &params.protocols) {
            return JoinStep::Done(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                "",
            ));
        }
        let id_prefix = params
            .group_instance_id
            .as_deref()
            .unwrap_or(&params.client_id);
        let new_member_id = format!("{id_prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance_id) = params.group_instance_id.clone() {
            return match group.static_member_id(&instance_id).map(str::to_string) {
                Some(old_member_id) => self.update_static_member_and_rebalance(
                    group,
                    handle,
                    params,
                    &old_member_id,
                    new_member_id,
                ),
                None => JoinStep::Wait(self.add_member_and_rebalance(group, params, new_member_id)),
            };
        }
        if params.require_known_member_id {
            let _ = group.pending_members.insert(new_member_id.clone());
            let deadline = Instant::now() + millis(i64::from(params.session_timeout_ms));
            let action = TimerAction::PendingMember {
                member_id: new_member_id.clone(),
            };
            self.spawn_timer(&group.group_id, deadline, action);
            info!(group_id = %group.group_id, member_id = %new_member_id, "member id required, assigned a new one");
            return JoinStep::Done(JoinResult::error(
                ResponseError::MemberIdRequired,
                &new_member_id,
            ));
        }
        JoinStep::Wait(self.add_member_and_rebalance(group, params, new_member_id))
    }

    fn join_current_member(&self, group: &mut Group, params: JoinParams) -> JoinStep {
        let member_id = params.member_id.clone();
        if group.is(GroupState::Dead) {
            return JoinStep::Done(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &member_id,
            ));
        }
        if !group.supports_protocols(&params.protocol_type, &params.protocols) {
            return JoinStep::Done(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            ));
        }
        if group.pending_members.contains(&member_id) {
            return JoinStep::Wait(self.add_member_and_rebalance(group, params, member_id));
        }
        if let Some(error) = group.validate_member(&member_id, params.group_instance_id.as_deref())
        {
            return JoinStep::Done(JoinResult::error(error, &member_id));
        }
        let protocols_unchanged = group
            .members
            .get(&member_id)
            .is_some_and(|member| member.matches(&params.protocols));
        match group.state {
            GroupState::PreparingRebalance => {
                JoinStep::Wait(self.update_member_and_rebalance(group, params))
            }
            GroupState::CompletingRebalance if protocols_unchanged => {
                JoinStep::Done(group.join_result(&member_id, false))
            }
            GroupState::CompletingRebalance => {
                JoinStep::Wait(self.update_member_and_rebalance(group, params))
            }
            GroupState::Stable if protocols_unchanged && !group.is_leader(&member_id) => {
                JoinStep::Done(group.join_result(&member_id, false))
            }
            GroupState::Stable => JoinStep::Wait(self.update_member_and_rebalance(group, params)),
            GroupState::Empty | GroupState::Dead => JoinStep::Done(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            )),
        }
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        params: JoinParams,
        member_id: String,
    ) -> oneshot::Receiver<JoinResult> {
        let (waiter, receiver) = oneshot::channel();
        let member = Member {
            identity: MemberInfo {
                member_id: member_id.clone(),
                group_instance_id: params.group_instance_id,
                client_id: params.client_id,
                client_host: params.client_host,
                rebalance_timeout_ms: params.rebalance_timeout_ms,
                session_timeout_ms: params.session_timeout_ms,
            },
            protocol_type: params.protocol_type,
            protocols: params.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(waiter),
            awaiting_sync: None,
            is_new: true,
            session_deadline: Instant::now() + NEW_MEMBER_JOIN_TIMEOUT,
            session_wakeup: Arc::new(Notify::new()),
            timer_token: 0,
        };
        if group.is(GroupState::PreparingRebalance) && group.generation_id == 0 {
            group.new_member_added = true;
        }
        group.add_member(member);
        self.watch_member_session(group, &member_id);
        self.rebalance_for_join(group, &member_id, &params.reason, "new member joined");
        receiver
    }

    /// Logs a (re)join and starts a rebalance for it.
    fn rebalance_for_join(&self, group: &mut Group, member_id: &str, reason: &str, what: &str) {
        info!(
            group_id = %group.group_id,
            member_id,
            generation = group.generation_id,
            reason,
            "{what}"
        );
        self.maybe_prepare_rebalance(group, what);
    }

    fn update_member_and_rebalance(
        &self,
        group: &mut Group,
        params: JoinParams,
    ) -> oneshot::Receiver<JoinResult> {
        let (waiter, receiver) = oneshot::channel();
        if let Some(member) = group.members.get_mut(&params.member_id) {
            member.protocols = params.protocols;
            member.identity.rebalance_timeout_ms = params.rebalance_timeout_ms;
            member.identity.session_timeout_ms = params.session_timeout_ms;
            member.awaiting_join = Some(waiter);
        }
        self.rebalance_for_join(group, &params.member_id, &params.reason, "member rejoined");
        receiver
    }

    fn update_static_member_and_rebalance(
        &self,
        group: &mut Group,
        handle: &GroupHandle,
        params: JoinParams,
        old_member_id: &str,
        new_member_id: String,
    ) -> JoinStep {
        let Some(group_instance_id) = params.group_instance_id.clone() else {
            return JoinStep::Done(JoinResult::error(ResponseError::UnknownServerError, ""));
        };
        let previous_leader_id = group.leader_id.clone().unwrap_or_default();
        if !group.replace_static_member(&group_instance_id, old_member_id, &new_member_id) {
            return JoinStep::Done(JoinResult::error(ResponseError::UnknownServerError, ""));
        }
        let (waiter, receiver) = oneshot::channel();
        let Some(member) = group.members.get_mut(&new_member_id) else {
            return JoinStep::Done(JoinResult::error(ResponseError::UnknownServerError, ""));
        };
        let previous_protocols = std::mem::replace(&mut member.protocols, params.protocols);
        let previous_rebalance_timeout_ms = std::mem::replace(
            &mut member.identity.rebalance_timeout_ms,
            params.rebalance_timeout_ms,
        );
        let previous_session_timeout_ms = std::mem::replace(
            &mut member.identity.session_timeout_ms,
            params.session_timeout_ms,
        );
        member.awaiting_join = Some(waiter);
        member.refresh_session();
        self.watch_member_session(group, &new_member_id);
        info!(
            group_id = %group.group_id,
            member_id = %new_member_id,
            old_member_id,
            group_instance_id = %group_instance_id,
            generation = group.generation_id,
            "static member rejoined with a new member id"
        );
        match group.state {
            GroupState::Stable if group.select_protocol() == group.protocol_name => {
                let replacement = StaticReplacement {
                    group_instance_id,
                    old_member_id: old_member_id.to_string(),
                    new_member_id,
                    previous_leader_id,
                    previous_protocols,
                    previous_rebalance_timeout_ms,
                    previous_session_timeout_ms,
                    supports_skip_assignment: params.supports_skip_assignment,
                };
                if let Some(coordinator) = self.this() {
                    let handle = handle.clone();
                    let generation = group.generation_id;
                    let _task = tokio::spawn(async move {
                        coordinator
                            .persist_static_replacement(handle, generation, replacement)
                            .await;
                    });
                }
            }
            GroupState::Stable => {
                self.maybe_prepare_rebalance(group, "static member changed its protocols")
            }
            GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, "static member rejoined during sync")
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
        JoinStep::Wait(receiver)
    }

    /// Persists a static member's new id in a Stable group, then answers its JoinGroup;
    /// restores the old id if the write failed.
    async fn persist_static_replacement(
        &self,
        handle: GroupHandle,
        generation: i32,
        replacement: StaticReplacement,
    ) {
        let stored = self
            .store_group(&handle, GroupState::Stable, generation, None)
            .await;
        let mut group = handle.lock();
        let new_member_id = replacement.new_member_id.as_str();
        match stored {
            // The group moved on to a rebalance, which answers the member.
            Ok(false) => {}
            Ok(true) => {
                let Some(waiter) = group
                    .members
                    .get_mut(new_member_id)
                    .and_then(|member| member.awaiting_join.take())
                else {
                    return;
                };
                let result = if replacement.supports_skip_assignment {
                    let is_leader = group.is_leader(new_member_id);
                    group.join_result(new_member_id, is_leader)
                } else {
                    // Older clients keep the old leader id, so a rejoining leader does not run
                    // an assignment the Stable group would never hand out.
                    JoinResult {
                        members: Vec::new(),
                        leader_id: replacement.previous_leader_id.clone(),
                        ..group.join_result(new_member_id, false)
                    }
                };
                let _ = waiter.send(result);
            }
            Err(error) => {
                warn!(
                    group_id = %group.group_id,
                    member_id = new_member_id,
                    %error,
                    "failed to persist static member id, reverting"
                );
                if !(group.is(GroupState::Stable) && group.generation_id == generation) {
                    return;
                }
                let Some(member) = group.members.get_mut(new_member_id) else {
                    return;
                };
                let waiter = member.awaiting_join.take();
                member.protocols = replacement.previous_protocols;
                member.identity.rebalance_timeout_ms = replacement.previous_rebalance_timeout_ms;
                member.identity.session_timeout_ms = replacement.previous_session_timeout_ms;
                let _ = group.replace_static_member(
                    &replacement.group_instance_id,
                    new_member_id,
                    &replacement.old_member_id,
                );
                self.watch_member_session(&mut group, &replacement.old_member_id);
                if let Some(waiter) = waiter {
                    let result = JoinResult {
                        leader_id: replacement.previous_leader_id,
                        generation_id: group.generation_id,
                        protocol_type: group.protocol_type.clone(),
                        protocol_name: group.protocol_name.clone(),
                        ..JoinResult::error(storage_error_code(&error), "")
                    };
                    let _ = waiter.send(result);
                }
            }
        }
    }

    pub(super) fn maybe_prepare_rebalance(&self, group: &mut Group, reason: &str) {
        if group.can_rebalance() {
            self.prepare_rebalance(group, reason);
        }
    }

    /// Moves the group to PreparingRebalance: an empty group waits the initial rebalance
    /// delay, others wait for every member up to the rebalance timeout.
    pub(super) fn prepare_rebalance(&self, group: &mut Group, reason: &str) {
        if group.is(GroupState::CompletingRebalance) {
            reset_and_propagate_assignment_error(group, ResponseError::RebalanceInProgress);
        }
        group.pending_sync_members.clear();
        let rebalance_timeout_ms = u64::try_from(group.rebalance_timeout_ms()).unwrap_or(0);
        let (pending_join, delay_ms) = if group.is(GroupState::Empty) {
            let delay_ms = self.config.group_initial_rebalance_delay_ms;
            let remaining_ms = rebalance_timeout_ms.saturating_sub(delay_ms);
            (
                PendingJoin::InitialDelay {
                    delay_ms,
                    remaining_ms,
                },
                delay_ms,
            )
        } else {
            (PendingJoin::AllMembersOrTimeout, rebalance_timeout_ms)
        };
        group.transition_to(GroupState::PreparingRebalance, now_ms());
        info!(
            group_id = %group.group_id,
            generation = group.generation_id,
            members = group.members.len(),
            reason,
            "preparing to rebalance"
        );
        self.schedule_join_completion(group, pending_join, Duration::from_millis(delay_ms));
        if pending_join == PendingJoin::AllMembersOrTimeout {
            self.try_complete_join(group);
        }
    }

    /// Completes the join phase early once every member rejoined (not during the initial
    /// delay, which always runs its course).
    pub(super) fn try_complete_join(&self, group: &mut Group) {
        let waits_for_members = group.pending_join == Some(PendingJoin::AllMembersOrTimeout);
        if group.is(GroupState::PreparingRebalance)
            && waits_for_members
            && group.has_all_members_joined()
        {
            self.complete_join(group);
        }
    }

    /// Ends the join phase: dynamic members that did not rejoin leave, the next generation
    /// starts and every joined member gets its JoinGroup answer.
    pub(super) fn complete_join(&self, group: &mut Group) {
        let not_rejoined: Vec<String> = group
            .members
            .values()
            .filter(|member| {
                member.awaiting_join.is_none() && member.identity.group_instance_id.is_none()
            })
            .map(|member| member.identity.member_id.clone())
            .collect();
        for member_id in &not_rejoined {
            info!(group_id = %group.group_id, member_id = %member_id, "member did not rejoin in time, removing");
            if let Some(member) = group.remove_member(member_id) {
                fail_member(member, ResponseError::UnknownMemberId);
            }
        }
        if !group.maybe_elect_new_joined_leader() && !group.members.is_empty() {
            // Nobody rejoined: wait for the static members' sessions to expire.
            let delay = millis(i64::from(group.rebalance_timeout_ms()));
            self.schedule_join_completion(group, PendingJoin::AllMembersOrTimeout, delay);
            return;
        }
        group.init_next_generation(now_ms());
        group.pending_join = None;
        group.timer_epoch = self.next_token();
        if group.is(GroupState::Empty) {
            info!(group_id = %group.group_id, generation = group.generation_id, "group is empty");
            self.spawn_store_group(&group.group_id, GroupState::Empty, group.generation_id);
            return;
        }
        info!(
            group_id = %group.group_id,
            generation = group.generation_id,
            protocol = group.protocol_name.as_deref().unwrap_or_default(),
            leader = group.leader_id.as_deref().unwrap_or_default(),
            members = group.members.len(),
            "join phase complete, waiting for sync"
        );
        let member_ids: Vec<String> = group.members.keys().cloned().collect();
        for member_id in member_ids {
            let result = group.join_result(&member_id, false);
            if let Some(member) = group.members.get_mut(&member_id) {
                if let Some(waiter) = member.awaiting_join.take() {
                    let _ = waiter.send(result);
                }
                member.refresh_session();
                member.is_new = false;
            }
            let _ = group.pending_sync_members.insert(member_id);
        }
        let deadline = Instant::now() + millis(i64::from(group.rebalance_timeout_ms()));
        self.spawn_timer(
            &group.group_id,
            deadline,
            TimerAction::PendingSync {
                epoch: group.timer_epoch,
            },
        );
    }

    /// Removes a member (left, expired or fenced) and lets the group react.
    pub(super) fn remove_member_and_update_group(
        &self,
        group: &mut Group,
        member_id: &str,
        reason: &str,
    ) {
        let Some(member) = group.remove_member(member_id) else {
            return;
        };
        fail_member(member, ResponseError::UnknownMemberId);
        match group.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(group, reason)
            }
            GroupState::PreparingRebalance => self.try_complete_join(group),
        }
    }

    /// Writes the group's metadata in the background if it is still at `generation`.
    fn spawn_store_group(&self, group_id: &str, expected_state: GroupState, generation: i32) {
        let Some(coordinator) = self.this() else {
            return;
        };
        let group_id = group_id.to_string();
        let _task = tokio::spawn(async move {
            let Some(handle) = coordinator.group(&group_id) else {
                return;
            };
            if let Err(error) = coordinator
                .store_group(&handle, expected_state, generation, None)
                .await
            {
                warn!(group_id = %group_id, generation, %error, "failed to store group metadata");
            }
        });
    }

    pub(super) async fn sync_group_request(
        &self,
        request: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let result = self.handle_sync(request, version).await;
        let mut response = SyncGroupResponse::default()
            .with_error_code(error_code(result.error))
            .with_assignment(result.assignment);
        if version >= 5 {
            response = response
                .with_protocol_type(result.protocol_type.map(StrBytes::from_string))
                .with_protocol_name(result.protocol_name.map(StrBytes::from_string));
        }
        response
    }

    async fn handle_sync(&self, request: SyncGroupRequest, version: i16) -> SyncResult {
        match self.unavailable_for(&request.group_id.0) {
            Some(ResponseError::CoordinatorLoadInProgress) => {
                // The rebalance state was lost with the restart: make the member rejoin.
                return SyncResult::error(ResponseError::RebalanceInProgress);
            }
            Some(error) => return SyncResult::error(error),
            None => {}
        }
        if request.group_id.0.is_empty() {
            return SyncResult::error(ResponseError::InvalidGroupId);
        }
        if version >= 5 && (request.protocol_type.is_none() || request.protocol_name.is_none()) {
            return SyncResult::error(ResponseError::InconsistentGroupProtocol);
        }
        let Some(handle) = self.group(&request.group_id.0) else {
            return SyncResult::error(ResponseError::UnknownMemberId);
        };
        let step = self.sync_locked(&mut handle.lock(), request);
        let waiter = match step {
            SyncStep::Done(result) => return result,
            SyncStep::Wait(waiter) => waiter,
            SyncStep::StoreThenWait {
                waiter,
                generation,
                assignment,
            } => {
                if let Some(coordinator) = self.this() {
                    let handle = handle.clone();
                    let _task = tokio::spawn(async move {
                        coordinator
                            .store_and_propagate_assignment(handle, generation, assignment)
                            .await;
                    });
                }
                waiter
            }
        };
        waiter
            .await
            .unwrap_or_else(|_| SyncResult::error(ResponseError::CoordinatorNotAvailable))
    }

    fn sync_locked(&self, group: &mut Group, request: SyncGroupRequest) -> SyncStep {
        let member_id = request.member_id.to_string();
        if group.is(GroupState::Dead) {
            return SyncStep::Done(SyncResult::error(ResponseError::CoordinatorNotAvailable));
        }
        let group_instance_id = request.group_instance_id.as_deref();
        if let Some(error) = group.validate_member(&member_id, group_instance_id) {
            return SyncStep::Done(SyncResult::error(error));
        }
        if request.generation_id != group.generation_id {
            return SyncStep::Done(SyncResult::error(ResponseError::IllegalGeneration));
        }
        let protocol_type_differs = request
            .protocol_type
            .as_deref()
            .is_some_and(|protocol_type| group.protocol_type.as_deref() != Some(protocol_type));
        let protocol_name_differs = request
            .protocol_name
            .as_deref()
            .is_some_and(|protocol_name| group.protocol_name.as_deref() != Some(protocol_name));
        if protocol_type_differs || protocol_name_differs {
            return SyncStep::Done(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty => SyncStep::Done(SyncResult::error(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                SyncStep::Done(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let _ = group.pending_sync_members.remove(&member_id);
                let assignment = match group.members.get_mut(&member_id) {
                    Some(member) => {
                        member.refresh_session();
                        member.assignment.clone()
                    }
                    None => Bytes::new(),
                };
                SyncStep::Done(group.sync_result(assignment))
            }
            GroupState::CompletingRebalance => {
                let (waiter, receiver) = oneshot::channel();
                if let Some(member) = group.members.get_mut(&member_id) {
                    member.awaiting_sync = Some(waiter);
                }
                let _ = group.pending_sync_members.remove(&member_id);
                if !group.is_leader(&member_id) {
                    return SyncStep::Wait(receiver);
                }
                let mut assignment: HashMap<String, Bytes> = request
                    .assignments
                    .into_iter()
                    .map(|entry| (entry.member_id.to_string(), entry.assignment))
                    .collect();
                for known_member_id in group.members.keys() {
                    let _ = assignment.entry(known_member_id.clone()).or_default();
                }
                info!(
                    group_id = %group.group_id,
                    member_id = %member_id,
                    generation = group.generation_id,
                    "leader sent the assignment"
                );
                SyncStep::StoreThenWait {
                    waiter: receiver,
                    generation: group.generation_id,
                    assignment,
                }
            }
            GroupState::Dead => {
                SyncStep::Done(SyncResult::error(ResponseError::CoordinatorNotAvailable))
            }
        }
    }

    /// Persists the leader's assignment, then hands it out and makes the group Stable.
    async fn store_and_propagate_assignment(
        &self,
        handle: GroupHandle,
        generation: i32,
        assignment: HashMap<String, Bytes>,
    ) {
        let stored = self
            .store_group(
                &handle,
                GroupState::CompletingRebalance,
                generation,
                Some(&assignment),
            )
            .await;
        let mut group = handle.lock();
        if !(group.is(GroupState::CompletingRebalance) && group.generation_id == generation) {
            return;
        }
        match stored {
            Ok(_) => {
                propagate_assignment(&mut group, &assignment);
                group.transition_to(GroupState::Stable, now_ms());
                info!(
                    group_id = %group.group_id,
                    generation,
                    members = group.members.len(),
                    "group is stable"
                );
            }
            Err(error) => {
                warn!(group_id = %group.group_id, generation, %error, "failed to store the group assignment");
                reset_and_propagate_assignment_error(&mut group, storage_error_code(&error));
                self.maybe_prepare_rebalance(&mut group, "failed to store the group assignment");
            }
        }
    }

    pub(super) fn heartbeat_request(
        &self,
        request: HeartbeatRequest,
        _version: i16,
    ) -> HeartbeatResponse {
        let error = self.handle_heartbeat(&request);
        HeartbeatResponse::default().with_error_code(error_code(error))
    }

    fn handle_heartbeat(&self, request: &HeartbeatRequest) -> Option<ResponseError> {
        match self.unavailable_for(&request.group_id.0) {
            // Kafka answers heartbeats blindly while loading.
            Some(ResponseError::CoordinatorLoadInProgress) => return None,
            Some(error) => return Some(error),
            None => {}
        }
        if request.group_id.0.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        let Some(handle) = self.group(&request.group_id.0) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let mut group = handle.lock();
        if group.is(GroupState::Dead) {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        let member_id = request.member_id.as_str();
        if let Some(error) = group.validate_member(member_id, request.group_instance_id.as_deref())
        {
            return Some(error);
        }
        if request.generation_id != group.generation_id {
            return Some(ResponseError::IllegalGeneration);
        }
        let state = group.state;
        if let Some(member) = group.members.get_mut(member_id) {
            member.refresh_session();
        }
        match state {
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => None,
            GroupState::Dead => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    pub(super) fn leave_group_request(
        &self,
        request: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let leaving = if version >= 3 {
            request.members
        } else {
            vec![MemberIdentity::default().with_member_id(request.member_id)]
        };
        let (error, member_errors) = self.handle_leave(&request.group_id.0, &leaving);
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            response.error_code = error_code(error);
            response.members = leaving
                .into_iter()
                .zip(member_errors)
                .map(|(member, member_error)| {
                    MemberResponse::default()
                        .with_member_id(member.member_id)
                        .with_group_instance_id(member.group_instance_id)
                        .with_error_code(error_code(member_error))
                })
                .collect();
        } else {
            let first_member_error = member_errors.into_iter().flatten().next();
            response.error_code = error_code(error.or(first_member_error));
        }
        response
    }

    /// Removes the leaving members; returns the group-level error and one error per member.
    fn handle_leave(
        &self,
        group_id: &str,
        leaving: &[MemberIdentity],
    ) -> (Option<ResponseError>, Vec<Option<ResponseError>>) {
        if let Some(error) = self.unavailable_for(group_id) {
            return (Some(error), Vec::new());
        }
        if group_id.is_empty() {
            return (Some(ResponseError::InvalidGroupId), Vec::new());
        }
        let Some(handle) = self.group(group_id) else {
            return (
                None,
                leaving
                    .iter()
                    .map(|_| Some(ResponseError::UnknownMemberId))
                    .collect(),
            );
        };
        let mut group = handle.lock();
        if group.is(GroupState::Dead) {
            return (Some(ResponseError::CoordinatorNotAvailable), Vec::new());
        }
        let member_errors = leaving
            .iter()
            .map(|member| self.leave_member(&mut group, member))
            .collect();
        (None, member_errors)
    }

    fn leave_member(&self, group: &mut Group, leaving: &MemberIdentity) -> Option<ResponseError> {
        let member_id = leaving.member_id.as_str();
        let group_instance_id = leaving.group_instance_id.as_deref();
        let reason = leaving.reason.as_deref().unwrap_or("member left the group");
        if member_id.is_empty() {
            // Administrative removal of a static member by instance id.
            let current_member_id = group_instance_id
                .and_then(|id| group.static_member_id(id))
                .map(str::to_string)?;
            info!(group_id = %group.group_id, member_id = %current_member_id, reason, "static member removed");
            self.remove_member_and_update_group(group, &current_member_id, reason);
            return None;
        }
        if group.pending_members.remove(member_id) {
            info!(group_id = %group.group_id, member_id, reason, "pending member left");
            if group.is(GroupState::PreparingRebalance) {
                self.try_complete_join(group);
            }
            return None;
        }
        if let Some(error) = group.validate_member(member_id, group_instance_id) {
            return Some(error);
        }
        info!(group_id = %group.group_id, member_id, generation = group.generation_id, reason, "member left");
        self.remove_member_and_update_group(group, member_id, reason);
        None
    }
}

/// Answers a removed member's blocked JoinGroup or SyncGroup.
pub(super) fn fail_member(mut member: Member, error: ResponseError) {
    if let Some(waiter) = member.awaiting_join.take() {
        let _ = waiter.send(JoinResult::error(error, &member.identity.member_id));
    }
    if let Some(waiter) = member.awaiting_sync.take() {
        let _ = waiter.send(SyncResult::error(error));
    }
}

/// Answers every blocked JoinGroup and SyncGroup of the group with `error`.
pub(super) fn fail_waiting_members(group: &mut Group, error: ResponseError) {
    for member in group.members.values_mut() {
        if let Some(waiter) = member.awaiting_join.take() {
            let _ = waiter.send(JoinResult::error(error, &member.identity.member_id));
        }
        if let Some(waiter) = member.awaiting_sync.take() {
            let _ = waiter.send(SyncResult::error(error));
        }
    }
}

fn reset_and_propagate_assignment_error(group: &mut Group, error: ResponseError) {
    for member in group.members.values_mut() {
        member.assignment = Bytes::new();
        if let Some(waiter) = member.awaiting_sync.take() {
            let _ = waiter.send(SyncResult::error(error));
        }
    }
}

fn propagate_assignment(group: &mut Group, assignment: &HashMap<String, Bytes>) {
    let protocol_type = group.protocol_type.clone();
    let protocol_name = group.protocol_name.clone();
    for member in group.members.values_mut() {
        member.assignment = assignment
            .get(&member.identity.member_id)
            .cloned()
            .unwrap_or_default();
        if let Some(waiter) = member.awaiting_sync.take() {
            let result = SyncResult {
                error: None,
                protocol_type: protocol_type.clone(),
                protocol_name: protocol_name.clone(),
                assignment: member.assignment.clone(),
            };
            let _ = waiter.send(result);
            member.refresh_session();
        }
    }
}

fn join_response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let protocol_name = if version >= 7 {
        result.protocol_name.map(StrBytes::from_string)
    } else {
        Some(StrBytes::from_string(
            result.protocol_name.unwrap_or_default(),
        ))
    };
    let members = result
        .members
        .into_iter()
        .map(|member| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(member.member_id))
                .with_group_instance_id(
                    member
                        .group_instance_id
                        .filter(|_| version >= 5)
                        .map(StrBytes::from_string),
                )
                .with_metadata(member.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(error_code(result.error))
        .with_generation_id(result.generation_id)
        .with_protocol_type(
            result
                .protocol_type
                .filter(|_| version >= 7)
                .map(StrBytes::from_string),
        )
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(result.leader_id))
        .with_skip_assignment(version >= 9 && result.skip_assignment)
        .with_member_id(StrBytes::from_string(result.member_id))
        .with_members(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_join_responses_never_carry_a_null_protocol_name() {
        let response = join_response(JoinResult::error(ResponseError::UnknownMemberId, ""), 5);
        assert_eq!(response.protocol_name.as_deref(), Some(""));
        let response = join_response(JoinResult::error(ResponseError::UnknownMemberId, ""), 7);
        assert_eq!(response.protocol_name, None);
    }

    #[test]
    fn member_ids_are_kept_in_error_answers() {
        let response = join_response(
            JoinResult::error(ResponseError::MemberIdRequired, "client-1"),
            4,
        );
        assert_eq!(response.member_id.as_str(), "client-1");
        assert_eq!(response.error_code, ResponseError::MemberIdRequired.code());
        assert_eq!(response.generation_id, -1);
    }

    #[test]
    fn arc_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Arc<GroupCoordinator>>();
    }
}
