//! In-memory state of one classic consumer group (Kafka's `GroupMetadata`): its members,
//! generation, selected protocol and committed offsets. Pure state: timers, persistence and
//! request handling live in the sibling modules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::records::{
    self, GroupMetadataValue, MemberInfo, MemberMetadataValue, OffsetCommitValue,
};

/// Protocol type of groups formed by Kafka consumers.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// (topic, partition) of a committed offset.
pub(crate) type TopicPartition = (String, i32);

/// The classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    /// No members; the group may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment in SyncGroup.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Removed; requests on it must retry against a fresh group.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    fn valid_previous_states(self) -> &'static [GroupState] {
        use GroupState::*;
        match self {
            Empty => &[PreparingRebalance],
            PreparingRebalance => &[Stable, CompletingRebalance, Empty],
            CompletingRebalance => &[PreparingRebalance],
            Stable => &[CompletingRebalance],
            Dead => &[Stable, PreparingRebalance, CompletingRebalance, Empty, Dead],
        }
    }
}

/// What a blocked JoinGroup receives.
#[derive(Debug, Clone)]
pub(crate) struct JoinResult {
    pub(crate) error: Option<ResponseError>,
    pub(crate) member_id: String,
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader_id: String,
    pub(crate) skip_assignment: bool,
    /// Filled for the leader only: every member with its metadata for the selected protocol.
    pub(crate) members: Vec<JoinedMember>,
}

impl JoinResult {
    pub(crate) fn error(error: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: Some(error),
            member_id: member_id.to_string(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone)]
pub(crate) struct JoinedMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) metadata: Bytes,
}

/// What a blocked SyncGroup receives.
#[derive(Debug, Clone)]
pub(crate) struct SyncResult {
    pub(crate) error: Option<ResponseError>,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) assignment: Bytes,
}

impl SyncResult {
    pub(crate) fn error(error: ResponseError) -> Self {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// One member of a group (Kafka's `MemberMetadata`).
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) identity: MemberInfo,
    pub(crate) protocol_type: String,
    /// Supported protocols in the member's order of preference.
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    pub(crate) awaiting_join: Option<oneshot::Sender<JoinResult>>,
    pub(crate) awaiting_sync: Option<oneshot::Sender<SyncResult>>,
    /// Joined but not yet through a completed join phase (gets the longer join timeout).
    pub(crate) is_new: bool,
    pub(crate) session_deadline: Instant,
    /// Wakes the session timer when the deadline moves earlier.
    pub(crate) session_wakeup: Arc<Notify>,
    /// Identifies the session timer task watching this member.
    pub(crate) timer_token: u64,
}

impl Member {
    /// Metadata the member sent for `protocol`, empty if it does not support it.
    pub(crate) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Same protocols, in the same order, with the same metadata.
    pub(crate) fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Members blocked in JoinGroup or SyncGroup are not expected to heartbeat, except new
    /// members, which must complete their first join in time.
    pub(crate) fn heartbeat_not_required(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }

    /// Moves the session deadline to `session_timeout_ms` from now.
    pub(crate) fn refresh_session(&mut self) {
        let timeout =
            Duration::from_millis(u64::try_from(self.identity.session_timeout_ms).unwrap_or(0));
        let deadline = Instant::now() + timeout;
        if deadline < self.session_deadline {
            self.session_wakeup.notify_one();
        }
        self.session_deadline = deadline;
    }

    fn metadata_supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn vote(&self, candidates: &HashSet<&str>) -> Option<String> {
        self.protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| candidates.contains(name.as_str()))
            .cloned()
    }
}

/// Which delayed join is running while the group is in `PreparingRebalance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingJoin {
    /// First rebalance of an empty group: wait `delay_ms` for more members, extending while
    /// members keep arriving, up to `remaining_ms` more.
    InitialDelay { delay_ms: u64, remaining_ms: u64 },
    /// Completes as soon as every member rejoined, or when the rebalance timeout expires.
    AllMembersOrTimeout,
}

/// One classic group.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) group_id: String,
    pub(crate) state: GroupState,
    pub(crate) state_timestamp_ms: Option<i64>,
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader_id: Option<String>,
    pub(crate) members: IndexMap<String, Member>,
    /// group_instance_id → member_id of static members.
    pub(crate) static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED that have not rejoined yet.
    pub(crate) pending_members: HashSet<String>,
    /// Members that joined the current generation but have not sent SyncGroup yet.
    pub(crate) pending_sync_members: HashSet<String>,
    pub(crate) new_member_added: bool,
    pub(crate) pending_join: Option<PendingJoin>,
    /// Bumped whenever join or sync timers are superseded, so stale timers do nothing.
    pub(crate) timer_epoch: u64,
    /// Topics the members subscribe to, when every subscription could be read.
    pub(crate) subscribed_topics: Option<HashSet<String>>,
    pub(crate) offsets: BTreeMap<TopicPartition, OffsetCommitValue>,
}

impl Group {
    pub(crate) fn new(group_id: &str, now_ms: i64) -> Self {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: Some(now_ms),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashSet::new(),
            pending_sync_members: HashSet::new(),
            new_member_added: false,
            pending_join: None,
            timer_epoch: 0,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
        }
    }

    pub(crate) fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub(crate) fn transition_to(&mut self, state: GroupState, now_ms: i64) {
        debug_assert!(
            state.valid_previous_states().contains(&self.state),
            "invalid group transition {:?} -> {:?}",
            self.state,
            state
        );
        self.state = state;
        self.state_timestamp_ms = Some(now_ms);
    }

    /// Undoes a transition to Dead whose tombstones could not be written.
    pub(crate) fn revive_as_empty(&mut self) {
        debug_assert!(self.is(GroupState::Dead));
        self.state = GroupState::Empty;
    }

    pub(crate) fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        )
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub(crate) fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub(crate) fn static_member_id(&self, group_instance_id: &str) -> Option<&str> {
        self.static_members
            .get(group_instance_id)
            .map(String::as_str)
    }

    /// Kafka's `validateCurrentMember`: a static member must be the one currently mapped to
    /// its instance id; a dynamic member must exist.
    pub(crate) fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        match group_instance_id {
            Some(instance_id) => match self.static_member_id(instance_id) {
                Some(current_member_id) if current_member_id != member_id => {
                    Some(ResponseError::FencedInstanceId)
                }
                Some(_) => None,
                None => Some(ResponseError::UnknownMemberId),
            },
            None => (!self.has_member(member_id)).then_some(ResponseError::UnknownMemberId),
        }
    }

    /// A new member may join when the group is empty and it brings a protocol type and at
    /// least one protocol, or when one of its protocols is supported by every member.
    pub(crate) fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if self.is(GroupState::Empty) || self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|member| member.metadata_supports(name))
        })
    }

    pub(crate) fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.identity.member_id.clone());
        }
        if let Some(instance_id) = &member.identity.group_instance_id {
            let _ = self
                .static_members
                .insert(instance_id.clone(), member.identity.member_id.clone());
        }
        let _ = self.pending_members.remove(&member.identity.member_id);
        let _ = self
            .members
            .insert(member.identity.member_id.clone(), member);
    }

    /// Removes a member; the leadership passes to the oldest remaining member.
    pub(crate) fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.shift_remove(member_id)?;
        if let Some(instance_id) = &member.identity.group_instance_id
            && self.static_member_id(instance_id) == Some(member_id)
        {
            let _ = self.static_members.remove(instance_id);
        }
        let _ = self.pending_sync_members.remove(member_id);
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        Some(member)
    }

    /// Moves a static member to a new member id; whoever still waits under the old id is fenced.
    pub(crate) fn replace_static_member(
        &mut self,
        group_instance_id: &str,
        old_member_id: &str,
        new_member_id: &str,
    ) -> bool {
        let Some(mut member) = self.members.shift_remove(old_member_id) else {
            return false;
        };
        if let Some(waiter) = member.awaiting_join.take() {
            let _ = waiter.send(JoinResult::error(
                ResponseError::FencedInstanceId,
                old_member_id,
            ));
        }
        if let Some(waiter) = member.awaiting_sync.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        member.identity.member_id = new_member_id.to_string();
        if self.is_leader(old_member_id) {
            self.leader_id = Some(new_member_id.to_string());
        }
        if self.pending_sync_members.remove(old_member_id) {
            let _ = self.pending_sync_members.insert(new_member_id.to_string());
        }
        let _ = self
            .static_members
            .insert(group_instance_id.to_string(), new_member_id.to_string());
        let _ = self.members.insert(new_member_id.to_string(), member);
        true
    }

    /// The longest rebalance timeout of the members, 0 without members.
    pub(crate) fn rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|member| member.identity.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
            .max(0)
    }

    pub(crate) fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty()
            && self
                .members
                .values()
                .all(|member| member.awaiting_join.is_some())
    }

    /// Keeps the leader if it rejoined, else hands leadership to any member that did.
    /// Returns false when no member rejoined.
    pub(crate) fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader_id) = &self.leader_id else {
            return false;
        };
        let leader_joined = self
            .members
            .get(leader_id)
            .is_some_and(|leader| leader.awaiting_join.is_some());
        if leader_joined {
            return true;
        }
        match self
            .members
            .values()
            .find(|member| member.awaiting_join.is_some())
        {
            Some(joined) => {
                self.leader_id = Some(joined.identity.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> HashSet<&str> {
        let Some(first) = self.members.values().next() else {
            return HashSet::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|member| member.metadata_supports(name))
            })
            .collect()
    }

    /// Each member votes for its most preferred candidate; the most votes win, ties go to
    /// the protocol the oldest member prefers.
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: IndexMap<String, usize> = IndexMap::new();
        for member in self.members.values() {
            if let Some(choice) = member.vote(&candidates) {
                *votes.entry(choice).or_default() += 1;
            }
        }
        let most_votes = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, count)| *count == most_votes)
            .map(|(protocol, _)| protocol)
    }

    /// Starts the next generation once the join phase completed.
    pub(crate) fn init_next_generation(&mut self, now_ms: i64) {
        debug_assert!(self.is(GroupState::PreparingRebalance));
        self.generation_id = self.generation_id.wrapping_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition_to(GroupState::Empty, now_ms);
        } else {
            self.protocol_name = self.select_protocol();
            self.transition_to(GroupState::CompletingRebalance, now_ms);
        }
        self.subscribed_topics = self.compute_subscribed_topics();
        self.pending_sync_members.clear();
    }

    /// Every member with its metadata for the selected protocol, as sent to the leader.
    pub(crate) fn current_member_metadata(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .values()
            .map(|member| JoinedMember {
                member_id: member.identity.member_id.clone(),
                group_instance_id: member.identity.group_instance_id.clone(),
                metadata: member.metadata(protocol),
            })
            .collect()
    }

    /// The JoinGroup answer of `member_id` for the current generation.
    pub(crate) fn join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let is_leader = self.is_leader(member_id);
        JoinResult {
            error: None,
            member_id: member_id.to_string(),
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            skip_assignment,
            members: if is_leader {
                self.current_member_metadata()
            } else {
                Vec::new()
            },
        }
    }

    pub(crate) fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            let subscription =
                records::decode_subscription_topics(&member.metadata(protocol)).ok()?;
            topics.extend(subscription);
        }
        Some(topics)
    }

    /// The record persisted for this group; `assignment` overrides the members' current
    /// assignments (the leader's SyncGroup is persisted before it is handed out).
    pub(crate) fn metadata_value(
        &self,
        assignment: Option<&HashMap<String, Bytes>>,
    ) -> GroupMetadataValue {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let members = self
            .members
            .values()
            .map(|member| MemberMetadataValue {
                identity: member.identity.clone(),
                subscription: member.metadata(protocol),
                assignment: match assignment {
                    Some(assignment) => assignment
                        .get(&member.identity.member_id)
                        .cloned()
                        .unwrap_or_default(),
                    None => member.assignment.clone(),
                },
            })
            .collect();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms,
            members,
        }
    }

    /// Rebuilds a group from its persisted record: Stable with its members, or Empty. The
    /// caller starts the members' session timers.
    pub(crate) fn from_metadata_value(
        group_id: &str,
        value: GroupMetadataValue,
        now: Instant,
        now_ms: i64,
    ) -> Self {
        let mut group = Group::new(group_id, now_ms);
        group.generation_id = value.generation_id;
        group.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        group.protocol_name = value.protocol_name;
        group.state_timestamp_ms = value.current_state_timestamp_ms;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        for stored in value.members {
            let session_timeout = Duration::from_millis(
                u64::try_from(stored.identity.session_timeout_ms).unwrap_or(0),
            );
            let member = Member {
                identity: stored.identity,
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                protocols: vec![(protocol.clone(), stored.subscription)],
                assignment: stored.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                session_deadline: now + session_timeout,
                session_wakeup: Arc::new(Notify::new()),
                timer_token: 0,
            };
            group.add_member(member);
        }
        if let Some(leader_id) = value.leader_id
            && group.members.contains_key(&leader_id)
        {
            group.leader_id = Some(leader_id);
        }
        if !group.members.is_empty() && group.protocol_name.is_some() {
            group.state = GroupState::Stable;
        } else {
            group.members.clear();
            group.static_members.clear();
            group.leader_id = None;
        }
        group.subscribed_topics = group.compute_subscribed_topics();
        group
    }

    /// Kafka's `removeExpiredOffsets` selection: offsets past their explicit expire
    /// timestamp, or older than the retention counted from when the group became Empty (or
    /// from the commit, for standalone consumers and for topics a Stable consumer group no
    /// longer subscribes to).
    pub(crate) fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<TopicPartition> {
        let counts_from_empty = match (self.protocol_type.as_deref(), self.state) {
            (Some(_), GroupState::Empty) => true,
            (Some(CONSUMER_PROTOCOL_TYPE), GroupState::Stable)
                if self.subscribed_topics.is_some() =>
            {
                false
            }
            (None, _) => false,
            _ => return Vec::new(),
        };
        let still_subscribed = |topic: &str| {
            self.is(GroupState::Stable)
                && self
                    .subscribed_topics
                    .as_ref()
                    .is_some_and(|topics| topics.contains(topic))
        };
        let expired = |value: &OffsetCommitValue| match value.expire_timestamp_ms {
            Some(expire_timestamp_ms) => now_ms >= expire_timestamp_ms,
            None => {
                let base_ms = if counts_from_empty {
                    self.state_timestamp_ms.unwrap_or(value.commit_timestamp_ms)
                } else {
                    value.commit_timestamp_ms
                };
                now_ms.saturating_sub(base_ms) >= retention_ms
            }
        };
        self.offsets
            .iter()
            .filter(|((topic, _), value)| !still_subscribed(topic) && expired(value))
            .map(|(topic_partition, _)| topic_partition.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(member_id: &str, protocols: &[(&str, &[&str])]) -> Member {
        let protocols = protocols
            .iter()
            .map(|(name, topics)| {
                let mut metadata = vec![0u8, 0];
                metadata.extend_from_slice(&(topics.len() as i32).to_be_bytes());
                for topic in *topics {
                    metadata.extend_from_slice(&(topic.len() as i16).to_be_bytes());
                    metadata.extend_from_slice(topic.as_bytes());
                }
                metadata.extend_from_slice(&(-1i32).to_be_bytes());
                (name.to_string(), Bytes::from(metadata))
            })
            .collect();
        Member {
            identity: MemberInfo {
                member_id: member_id.to_string(),
                group_instance_id: None,
                client_id: "client".to_string(),
                client_host: "/127.0.0.1".to_string(),
                rebalance_timeout_ms: 1000,
                session_timeout_ms: 1000,
            },
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            protocols,
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
            session_deadline: Instant::now(),
            session_wakeup: Arc::new(Notify::new()),
            timer_token: 0,
        }
    }

    fn offset(commit_timestamp_ms: i64) -> OffsetCommitValue {
        OffsetCommitValue {
            offset: 1,
            leader_epoch: None,
            metadata: String::new(),
            commit_timestamp_ms,
            expire_timestamp_ms: None,
        }
    }

    #[test]
    fn protocol_is_chosen_by_vote_among_protocols_every_member_supports() {
        let mut group = Group::new("g", 0);
        group.add_member(member("a", &[("sticky", &["t"]), ("range", &["t"])]));
        group.add_member(member("b", &[("range", &["t"]), ("sticky", &["t"])]));
        group.add_member(member("c", &[("range", &["t"]), ("roundrobin", &["t"])]));
        assert_eq!(group.select_protocol().as_deref(), Some("range"));
        group.state = GroupState::PreparingRebalance;
        assert!(group.supports_protocols(
            CONSUMER_PROTOCOL_TYPE,
            &[("range".to_string(), Bytes::new())]
        ));
        assert!(!group.supports_protocols(
            CONSUMER_PROTOCOL_TYPE,
            &[("sticky".to_string(), Bytes::new())]
        ));
        assert!(!group.supports_protocols("connect", &[("range".to_string(), Bytes::new())]));
    }

    #[test]
    fn leadership_passes_to_the_oldest_remaining_member() {
        let mut group = Group::new("g", 0);
        group.add_member(member("a", &[("range", &["t"])]));
        group.add_member(member("b", &[("range", &["t"])]));
        group.add_member(member("c", &[("range", &["t"])]));
        assert!(group.is_leader("a"));
        let _ = group.remove_member("a");
        assert!(group.is_leader("b"));
    }

    #[test]
    fn offsets_of_an_empty_group_expire_counting_from_when_it_became_empty() {
        let mut group = Group::new("g", 0);
        group.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
        group.state_timestamp_ms = Some(1_000);
        let _ = group.offsets.insert(("t".to_string(), 0), offset(10));
        assert!(group.expired_offsets(1_050, 100).is_empty());
        assert_eq!(
            group.expired_offsets(1_100, 100),
            vec![("t".to_string(), 0)]
        );
    }

    #[test]
    fn stable_consumer_groups_expire_only_offsets_of_topics_they_no_longer_subscribe_to() {
        let mut group = Group::new("g", 0);
        group.add_member(member("a", &[("range", &["kept"])]));
        group.protocol_name = Some("range".to_string());
        group.state = GroupState::Stable;
        group.subscribed_topics = group.compute_subscribed_topics();
        let _ = group.offsets.insert(("kept".to_string(), 0), offset(0));
        let _ = group.offsets.insert(("dropped".to_string(), 0), offset(0));
        assert_eq!(
            group.expired_offsets(1_000, 100),
            vec![("dropped".to_string(), 0)]
        );
    }

    #[test]
    fn loaded_group_without_members_is_empty() {
        let value = GroupMetadataValue {
            protocol_type: String::new(),
            generation_id: 4,
            protocol_name: None,
            leader_id: None,
            current_state_timestamp_ms: Some(5),
            members: Vec::new(),
        };
        let group = Group::from_metadata_value("g", value, Instant::now(), 10);
        assert!(group.is(GroupState::Empty));
        assert_eq!(group.generation_id, 4);
        assert_eq!(group.protocol_type, None);
    }
}
