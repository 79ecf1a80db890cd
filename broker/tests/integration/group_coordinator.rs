//! Scenarios of the classic consumer-group coordinator over an in-memory
//! `__consumer_offsets`. Requests and responses pass through the Kafka wire encoding at the
//! version under test, as they would through the gateway.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use parking_lot::Mutex;
use silt_broker::group_coordinator::{
    GroupConfig, GroupCoordinator, GroupError, OffsetsLog, OffsetsRecord,
};

// ---------------------------------------------------------------------------------------
// An in-memory __consumer_offsets
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct MemoryOffsetsLog {
    partitions: Mutex<HashMap<i32, Vec<OffsetsRecord>>>,
    fail_appends: AtomicBool,
    /// Leadership of every partition went elsewhere (the coordinator has not heard yet).
    deposed: AtomicBool,
}

impl MemoryOffsetsLog {
    fn records(&self) -> Vec<OffsetsRecord> {
        let partitions = self.partitions.lock();
        let mut all: Vec<_> = partitions.iter().collect();
        all.sort_by_key(|(partition, _)| **partition);
        all.into_iter()
            .flat_map(|(_, records)| records.clone())
            .collect()
    }

    fn push_raw(&self, partition: i32, key: &[u8], value: Option<&[u8]>) {
        let mut partitions = self.partitions.lock();
        partitions.entry(partition).or_default().push((
            Bytes::copy_from_slice(key),
            value.map(Bytes::copy_from_slice),
        ));
    }
}

impl OffsetsLog for MemoryOffsetsLog {
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), GroupError>> {
        Box::pin(async move {
            if self.fail_appends.load(Ordering::SeqCst) {
                return Err(GroupError::Storage("disk on fire".to_string()));
            }
            self.partitions
                .lock()
                .entry(partition)
                .or_default()
                .extend(records);
            Ok(())
        })
    }

    fn read_all(&self, partition: i32) -> BoxFuture<'_, Result<Vec<OffsetsRecord>, GroupError>> {
        Box::pin(async move {
            Ok(self
                .partitions
                .lock()
                .get(&partition)
                .cloned()
                .unwrap_or_default())
        })
    }

    fn leads_at(&self, _partition: i32, _leader_epoch: i32) -> bool {
        !self.deposed.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const GROUP: &str = "orders-processors";
const SESSION_TIMEOUT_MS: i32 = 10_000;

fn test_config() -> GroupConfig {
    GroupConfig {
        offsets_topic_num_partitions: 4,
        group_initial_rebalance_delay_ms: 200,
        group_min_session_timeout_ms: 100,
        group_max_session_timeout_ms: 60_000,
        offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
    }
}

async fn started(log: &Arc<MemoryOffsetsLog>, config: GroupConfig) -> Arc<GroupCoordinator> {
    let coordinator = GroupCoordinator::new(log.clone(), config);
    coordinator.load().await.expect("load");
    coordinator
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group_id(value: &str) -> GroupId {
    GroupId(text(value))
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// Encodes at `version` and decodes again, keeping only what that version carries.
fn wire<T: Encodable + Decodable>(message: T, version: i16) -> T {
    let mut buffer = BytesMut::new();
    message
        .encode(&mut buffer, version)
        .expect("message encodes at this version");
    let mut bytes = buffer.freeze();
    T::decode(&mut bytes, version).expect("message decodes at this version")
}

/// A consumer protocol subscription (`ConsumerProtocolSubscription` v0).
fn subscription(topics: &[&str]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(0);
    buffer.put_i32(topics.len() as i32);
    for topic in topics {
        buffer.put_i16(topic.len() as i16);
        buffer.put_slice(topic.as_bytes());
    }
    buffer.put_i32(-1);
    buffer.freeze()
}

#[derive(Clone)]
struct Join {
    version: i16,
    member_id: String,
    group_instance_id: Option<String>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(&'static str, Bytes)>,
}

impl Join {
    fn new(version: i16) -> Self {
        Join {
            version,
            member_id: String::new(),
            group_instance_id: None,
            session_timeout_ms: SESSION_TIMEOUT_MS,
            rebalance_timeout_ms: 5_000,
            protocols: vec![
                ("range", subscription(&["orders"])),
                ("roundrobin", subscription(&["orders"])),
            ],
        }
    }

    fn member(mut self, member_id: &str) -> Self {
        self.member_id = member_id.to_string();
        self
    }

    fn instance(mut self, group_instance_id: &str) -> Self {
        self.group_instance_id = Some(group_instance_id.to_string());
        self
    }

    fn session_timeout(mut self, session_timeout_ms: i32) -> Self {
        self.session_timeout_ms = session_timeout_ms;
        self
    }

    async fn send(&self, coordinator: &GroupCoordinator, group: &str) -> JoinGroupResponse {
        let protocols = self
            .protocols
            .iter()
            .map(|(name, metadata)| {
                JoinGroupRequestProtocol::default()
                    .with_name(text(name))
                    .with_metadata(metadata.clone())
            })
            .collect();
        let mut request = JoinGroupRequest::default()
            .with_group_id(group_id(group))
            .with_session_timeout_ms(self.session_timeout_ms)
            .with_member_id(text(&self.member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(protocols);
        if self.version >= 1 {
            request.rebalance_timeout_ms = self.rebalance_timeout_ms;
        }
        if self.version >= 5 {
            request.group_instance_id = self.group_instance_id.as_deref().map(text);
        }
        let request = wire(request, self.version);
        let response = coordinator
            .join_group(request, self.version, "consumer-client", "/127.0.0.1")
            .await;
        wire(response, self.version)
    }

    /// The v4+ dance: the first join hands out a member id, the second joins with it.
    async fn send_as_new_member(
        &self,
        coordinator: &GroupCoordinator,
        group: &str,
    ) -> JoinGroupResponse {
        let first = self.send(coordinator, group).await;
        if self.version < 4 || self.group_instance_id.is_some() {
            return first;
        }
        assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
        self.clone()
            .member(&first.member_id)
            .send(coordinator, group)
            .await
    }
}

async fn sync(
    coordinator: &GroupCoordinator,
    version: i16,
    group: &str,
    joined: &JoinGroupResponse,
    assignments: &[(&str, &str)],
) -> SyncGroupResponse {
    let mut request = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(
            assignments
                .iter()
                .map(|(member_id, assignment)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(text(member_id))
                        .with_assignment(Bytes::copy_from_slice(assignment.as_bytes()))
                })
                .collect(),
        );
    if version >= 5 {
        request.protocol_type = Some(text("consumer"));
        request.protocol_name = joined.protocol_name.clone();
    }
    let response = coordinator
        .sync_group(wire(request, version), version)
        .await;
    wire(response, version)
}

async fn heartbeat(
    coordinator: &GroupCoordinator,
    group: &str,
    member_id: &str,
    generation_id: i32,
) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(text(member_id))
        .with_generation_id(generation_id);
    wire(coordinator.heartbeat(wire(request, 4), 4).await, 4).error_code
}

async fn describe(
    coordinator: &GroupCoordinator,
    group: &str,
    version: i16,
) -> DescribeGroupsResponse {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    wire(
        coordinator
            .describe_groups(wire(request, version), version)
            .await,
        version,
    )
}

struct Commit<'a> {
    version: i16,
    member_id: &'a str,
    generation_id: i32,
    offsets: Vec<(&'a str, i32, i64, Option<&'a str>)>,
}

impl Commit<'_> {
    async fn send(&self, coordinator: &GroupCoordinator, group: &str) -> OffsetCommitResponse {
        let mut by_topic: Vec<(String, Vec<OffsetCommitRequestPartition>)> = Vec::new();
        for (topic, partition, offset, metadata) in &self.offsets {
            let mut entry = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_metadata(metadata.map(text));
            if self.version >= 6 {
                entry.committed_leader_epoch = 5;
            }
            match by_topic.iter_mut().find(|(name, _)| name == topic) {
                Some((_, partitions)) => partitions.push(entry),
                None => by_topic.push((topic.to_string(), vec![entry])),
            }
        }
        let topics = by_topic
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text(&name)))
                    .with_partitions(partitions)
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(self.generation_id)
            .with_member_id(text(self.member_id))
            .with_topics(topics);
        wire(
            coordinator
                .offset_commit(wire(request, self.version), self.version)
                .await,
            self.version,
        )
    }
}

fn commit_errors(response: &OffsetCommitResponse) -> Vec<i16> {
    response
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| partition.error_code)
        })
        .collect()
}

/// OffsetFetch v8 for one group: (topic, partition, offset, leader epoch, metadata).
async fn fetch(
    coordinator: &GroupCoordinator,
    group: &str,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> (i16, Vec<(String, i32, i64, i32, String)>) {
    let topics = topics.map(|topics| {
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(text(name)))
                    .with_partition_indexes(partitions)
            })
            .collect()
    });
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(topics),
    ]);
    let response: OffsetFetchResponse =
        wire(coordinator.offset_fetch(wire(request, 8), 8).await, 8);
    let group = &response.groups[0];
    let offsets = group
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| {
                (
                    topic.name.0.to_string(),
                    partition.partition_index,
                    partition.committed_offset,
                    partition.committed_leader_epoch,
                    partition
                        .metadata
                        .as_deref()
                        .unwrap_or("<null>")
                        .to_string(),
                )
            })
        })
        .collect();
    (group.error_code, offsets)
}

/// Forms a Stable group of `count` members on JoinGroup/SyncGroup v5; returns the join
/// answers, leader first.
async fn stable_group(
    coordinator: &Arc<GroupCoordinator>,
    group: &str,
    count: usize,
    join: Join,
) -> Vec<JoinGroupResponse> {
    let mut joins = Vec::new();
    for _ in 0..count {
        let coordinator = coordinator.clone();
        let join = join.clone();
        let group = group.to_string();
        joins.push(tokio::spawn(async move {
            join.send_as_new_member(&coordinator, &group).await
        }));
    }
    let mut responses = Vec::new();
    for join in joins {
        let response = join.await.expect("join task");
        assert_eq!(response.error_code, 0, "join failed: {response:?}");
        responses.push(response);
    }
    responses.sort_by_key(|response| response.member_id != response.leader);
    let assignments: Vec<(String, String)> = responses
        .iter()
        .map(|response| {
            (
                response.member_id.to_string(),
                format!("assignment-of-{}", response.member_id),
            )
        })
        .collect();
    let mut syncs = Vec::new();
    for response in &responses {
        let coordinator = coordinator.clone();
        let response = response.clone();
        let group = group.to_string();
        let assignments = assignments.clone();
        syncs.push(tokio::spawn(async move {
            let assignments: Vec<(&str, &str)> = if response.member_id == response.leader {
                assignments
                    .iter()
                    .map(|(member, assignment)| (member.as_str(), assignment.as_str()))
                    .collect()
            } else {
                Vec::new()
            };
            sync(&coordinator, 5, &group, &response, &assignments).await
        }));
    }
    for (response, sync) in responses.iter().zip(syncs) {
        let synced = sync.await.expect("sync task");
        assert_eq!(synced.error_code, 0, "sync failed: {synced:?}");
        assert_eq!(
            synced.assignment,
            Bytes::from(format!("assignment-of-{}", response.member_id))
        );
    }
    responses
}

async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn three_members_form_one_generation_and_each_gets_the_leaders_assignment() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;

    let joined = stable_group(&coordinator, GROUP, 3, Join::new(5)).await;

    let leader = &joined[0];
    assert_eq!(leader.members.len(), 3, "the leader sees every member");
    for response in &joined {
        assert_eq!(response.generation_id, 1);
        assert_eq!(response.leader, leader.member_id);
        assert_eq!(response.protocol_name.as_deref(), Some("range"));
        assert!(
            response.member_id.starts_with("consumer-client-"),
            "member id {}",
            response.member_id
        );
    }
    for follower in &joined[1..] {
        assert!(
            follower.members.is_empty(),
            "followers do not get the member list"
        );
    }
    assert!(
        leader
            .members
            .iter()
            .all(|member| member.metadata == subscription(&["orders"]))
    );

    let described = describe(&coordinator, GROUP, 5).await;
    let group = &described.groups[0];
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_type.as_str(), "consumer");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 3);
    for member in &group.members {
        assert_eq!(
            member.member_assignment,
            Bytes::from(format!("assignment-of-{}", member.member_id))
        );
        assert_eq!(member.client_host.as_str(), "/127.0.0.1");
    }
    coordinator.shutdown();
}

#[tokio::test]
async fn member_that_stops_heartbeating_is_expired_and_the_others_rebalance() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let joined = stable_group(&coordinator, GROUP, 2, Join::new(5).session_timeout(400)).await;
    let survivor = joined[1].clone();
    let generation = survivor.generation_id;

    // Only the survivor heartbeats; the other member was SIGKILLed.
    let mut saw_rebalance = false;
    for _ in 0..60 {
        let error = heartbeat(&coordinator, GROUP, &survivor.member_id, generation).await;
        if error == code(ResponseError::RebalanceInProgress) {
            saw_rebalance = true;
            break;
        }
        assert_eq!(error, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_rebalance, "the expired member triggers a rebalance");

    let rejoined = Join::new(5)
        .session_timeout(400)
        .member(&survivor.member_id)
        .send(&coordinator, GROUP)
        .await;
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(
        rejoined.leader, survivor.member_id,
        "the survivor leads the new generation"
    );
    assert_eq!(rejoined.members.len(), 1);
    let synced = sync(
        &coordinator,
        5,
        GROUP,
        &rejoined,
        &[(survivor.member_id.as_str(), "everything")],
    )
    .await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"everything"));

    let described = describe(&coordinator, GROUP, 5).await;
    assert_eq!(described.groups[0].members.len(), 1);
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");
    coordinator.shutdown();
}

#[tokio::test]
async fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let mut join = Join::new(5);
    join.rebalance_timeout_ms = 300;
    let joined = stable_group(&coordinator, GROUP, 2, join.clone()).await;
    let leader = &joined[0];

    // The leader rejoins (say, its subscription changed); the follower never does.
    let started_at = tokio::time::Instant::now();
    let rejoined = join
        .member(&leader.member_id)
        .send(&coordinator, GROUP)
        .await;
    assert_eq!(rejoined.error_code, 0);
    assert!(
        started_at.elapsed() >= Duration::from_millis(250),
        "waited for the follower"
    );
    assert_eq!(rejoined.generation_id, leader.generation_id + 1);
    assert_eq!(rejoined.members.len(), 1);
    let follower_heartbeat = heartbeat(
        &coordinator,
        GROUP,
        &joined[1].member_id,
        rejoined.generation_id,
    )
    .await;
    assert_eq!(follower_heartbeat, code(ResponseError::UnknownMemberId));
    coordinator.shutdown();
}

#[tokio::test]
async fn leaving_members_trigger_a_rebalance_and_the_last_one_empties_the_group() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let joined = stable_group(&coordinator, GROUP, 3, Join::new(5)).await;
    let generation = joined[0].generation_id;

    // v0: a single member, error at the top level.
    let request = LeaveGroupRequest::default()
        .with_group_id(group_id(GROUP))
        .with_member_id(joined[2].member_id.clone());
    let left = wire(coordinator.leave_group(wire(request, 0), 0).await, 0);
    assert_eq!(left.error_code, 0);
    assert_eq!(
        heartbeat(&coordinator, GROUP, &joined[0].member_id, generation).await,
        code(ResponseError::RebalanceInProgress)
    );

    // v3+: a batch, one error per member.
    let request = LeaveGroupRequest::default()
        .with_group_id(group_id(GROUP))
        .with_members(vec![
            MemberIdentity::default().with_member_id(joined[0].member_id.clone()),
            MemberIdentity::default().with_member_id(joined[1].member_id.clone()),
            MemberIdentity::default().with_member_id(text("never-joined")),
        ]);
    let left = wire(coordinator.leave_group(wire(request, 5), 5).await, 5);
    assert_eq!(left.error_code, 0);
    let member_errors: Vec<i16> = left
        .members
        .iter()
        .map(|member| member.error_code)
        .collect();
    assert_eq!(
        member_errors,
        vec![0, 0, code(ResponseError::UnknownMemberId)]
    );

    let described = describe(&coordinator, GROUP, 5).await;
    assert_eq!(described.groups[0].group_state.as_str(), "Empty");
    assert!(described.groups[0].members.is_empty());

    // An unknown member leaving with v1 gets the error at the top level.
    let request = LeaveGroupRequest::default()
        .with_group_id(group_id(GROUP))
        .with_member_id(text("ghost"));
    let left = wire(coordinator.leave_group(wire(request, 1), 1).await, 1);
    assert_eq!(left.error_code, code(ResponseError::UnknownMemberId));
    coordinator.shutdown();
}

#[tokio::test]
async fn member_id_required_from_join_group_v4() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;

    for version in [4, 7, 9] {
        let group = format!("group-v{version}");
        let first = Join::new(version).send(&coordinator, &group).await;
        assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
        assert!(first.member_id.starts_with("consumer-client-"));
        assert_eq!(first.generation_id, -1);
        let second = Join::new(version)
            .member(&first.member_id)
            .send(&coordinator, &group)
            .await;
        assert_eq!(second.error_code, 0, "v{version}: {second:?}");
        assert_eq!(second.member_id, first.member_id);
        assert_eq!(second.generation_id, 1);
        if version >= 7 {
            assert_eq!(second.protocol_type.as_deref(), Some("consumer"));
        }
    }

    // Before v4 a new member joins directly.
    let joined = Join::new(3).send(&coordinator, "group-v3").await;
    assert_eq!(joined.error_code, 0);
    assert!(!joined.member_id.is_empty());

    // JoinGroup v0 still works end to end.
    let joined = Join::new(0).send(&coordinator, "group-v0").await;
    assert_eq!(joined.error_code, 0);
    let synced = sync(
        &coordinator,
        0,
        "group-v0",
        &joined,
        &[(joined.member_id.as_str(), "a")],
    )
    .await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"a"));
    coordinator.shutdown();
}

#[tokio::test]
async fn join_and_sync_errors_follow_kafka() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;

    let too_short = Join::new(5)
        .session_timeout(10)
        .send(&coordinator, GROUP)
        .await;
    assert_eq!(
        too_short.error_code,
        code(ResponseError::InvalidSessionTimeout)
    );
    let too_long = Join::new(5)
        .session_timeout(600_000)
        .send(&coordinator, GROUP)
        .await;
    assert_eq!(
        too_long.error_code,
        code(ResponseError::InvalidSessionTimeout)
    );
    let no_group_id = Join::new(5).send(&coordinator, "").await;
    assert_eq!(no_group_id.error_code, code(ResponseError::InvalidGroupId));
    let unknown = Join::new(5)
        .member("made-up")
        .send(&coordinator, GROUP)
        .await;
    assert_eq!(unknown.error_code, code(ResponseError::UnknownMemberId));

    let joined = stable_group(&coordinator, GROUP, 1, Join::new(5)).await;
    let mut other_protocol = Join::new(5);
    other_protocol.protocols = vec![("sticky", subscription(&["orders"]))];
    let inconsistent = other_protocol.send(&coordinator, GROUP).await;
    assert_eq!(
        inconsistent.error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );

    let mut stale = joined[0].clone();
    stale.generation_id += 7;
    let synced = sync(&coordinator, 5, GROUP, &stale, &[]).await;
    assert_eq!(synced.error_code, code(ResponseError::IllegalGeneration));
    let mut stranger = joined[0].clone();
    stranger.member_id = text("stranger");
    let synced = sync(&coordinator, 3, GROUP, &stranger, &[]).await;
    assert_eq!(synced.error_code, code(ResponseError::UnknownMemberId));
    assert_eq!(
        heartbeat(&coordinator, GROUP, &joined[0].member_id, 99).await,
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        heartbeat(&coordinator, "no-such-group", "m", 1).await,
        code(ResponseError::UnknownMemberId)
    );

    // A follower joining a Stable group with unchanged metadata gets the current generation back.
    let again = Join::new(5)
        .member(&joined[0].member_id)
        .send(&coordinator, GROUP)
        .await;
    assert_eq!(again.error_code, 0);
    coordinator.shutdown();
}

#[tokio::test]
async fn static_member_rejoining_keeps_its_assignment_and_fences_the_old_member_id() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let join = Join::new(5).instance("instance-a");
    let joined = stable_group(&coordinator, GROUP, 1, join.clone()).await;
    let old_member_id = joined[0].member_id.to_string();
    assert!(old_member_id.starts_with("instance-a-"));

    // The same instance restarts: it joins without a member id, the group does not rebalance.
    let rejoined = join.send(&coordinator, GROUP).await;
    assert_eq!(rejoined.error_code, 0);
    assert_ne!(rejoined.member_id.as_str(), old_member_id);
    assert_eq!(rejoined.generation_id, joined[0].generation_id);
    let synced = sync(&coordinator, 5, GROUP, &rejoined, &[]).await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(
        synced.assignment,
        Bytes::from(format!("assignment-of-{old_member_id}"))
    );

    let request = HeartbeatRequest::default()
        .with_group_id(group_id(GROUP))
        .with_member_id(text(&old_member_id))
        .with_group_instance_id(Some(text("instance-a")))
        .with_generation_id(joined[0].generation_id);
    let fenced = coordinator.heartbeat(wire(request, 4), 4).await;
    assert_eq!(fenced.error_code, code(ResponseError::FencedInstanceId));

    // Administrative removal by instance id.
    let request = LeaveGroupRequest::default()
        .with_group_id(group_id(GROUP))
        .with_members(vec![
            MemberIdentity::default().with_group_instance_id(Some(text("instance-a"))),
        ]);
    let left = wire(coordinator.leave_group(wire(request, 4), 4).await, 4);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(
        describe(&coordinator, GROUP, 5).await.groups[0]
            .group_state
            .as_str(),
        "Empty"
    );
    coordinator.shutdown();
}

// ---------------------------------------------------------------------------------------
// Offsets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn committed_offsets_round_trip_with_metadata_and_leader_epoch() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;

    let standalone = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![
            ("orders", 0, 42, Some("checkpoint ✓ {\"a\":1}")),
            ("orders", 1, 7, None),
            ("payments", 3, 1000, Some("")),
        ],
    };
    assert_eq!(
        commit_errors(&standalone.send(&coordinator, GROUP).await),
        vec![0, 0, 0]
    );

    let (error, offsets) = fetch(
        &coordinator,
        GROUP,
        Some(vec![("orders", vec![0, 1, 2]), ("unknown-topic", vec![0])]),
    )
    .await;
    assert_eq!(error, 0);
    assert_eq!(
        offsets,
        vec![
            (
                "orders".to_string(),
                0,
                42,
                5,
                "checkpoint ✓ {\"a\":1}".to_string()
            ),
            ("orders".to_string(), 1, 7, 5, String::new()),
            ("orders".to_string(), 2, -1, -1, String::new()),
            ("unknown-topic".to_string(), 0, -1, -1, String::new()),
        ]
    );
    let (_, everything) = fetch(&coordinator, GROUP, None).await;
    assert_eq!(everything.len(), 3);

    // OffsetFetch v1..=7 carry a single group.
    for version in [1, 5, 7] {
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(GROUP))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text("orders")))
                    .with_partition_indexes(vec![0]),
            ]));
        let response = wire(
            coordinator
                .offset_fetch(wire(request, version), version)
                .await,
            version,
        );
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.committed_offset, 42);
        assert_eq!(
            partition.metadata.as_deref(),
            Some("checkpoint ✓ {\"a\":1}")
        );
        if version >= 5 {
            assert_eq!(partition.committed_leader_epoch, 5);
        }
    }

    // Older commits without a leader epoch.
    let old = Commit {
        version: 2,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 50, Some("v2"))],
    };
    assert_eq!(commit_errors(&old.send(&coordinator, GROUP).await), vec![0]);
    let (_, offsets) = fetch(&coordinator, GROUP, Some(vec![("orders", vec![0])])).await;
    assert_eq!(
        offsets,
        vec![("orders".to_string(), 0, 50, -1, "v2".to_string())]
    );

    let unknown_group = fetch(&coordinator, "nobody", Some(vec![("orders", vec![0])])).await;
    assert_eq!(
        unknown_group,
        (0, vec![("orders".to_string(), 0, -1, -1, String::new())])
    );
    assert_eq!(fetch(&coordinator, "nobody", None).await, (0, Vec::new()));
    coordinator.shutdown();
}

#[tokio::test]
async fn group_members_commit_only_in_their_generation() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let joined = stable_group(&coordinator, GROUP, 1, Join::new(5)).await;
    let member = joined[0].member_id.to_string();
    let generation = joined[0].generation_id;

    let ok = Commit {
        version: 8,
        member_id: &member,
        generation_id: generation,
        offsets: vec![("orders", 0, 10, None)],
    };
    assert_eq!(commit_errors(&ok.send(&coordinator, GROUP).await), vec![0]);
    let stale = Commit {
        version: 8,
        member_id: &member,
        generation_id: generation - 1,
        offsets: vec![("orders", 0, 11, None)],
    };
    assert_eq!(
        commit_errors(&stale.send(&coordinator, GROUP).await),
        vec![code(ResponseError::IllegalGeneration)]
    );
    let stranger = Commit {
        version: 8,
        member_id: "stranger",
        generation_id: generation,
        offsets: vec![("orders", 0, 12, None)],
    };
    assert_eq!(
        commit_errors(&stranger.send(&coordinator, GROUP).await),
        vec![code(ResponseError::UnknownMemberId)]
    );
    let standalone = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 13, None)],
    };
    assert_eq!(
        commit_errors(&standalone.send(&coordinator, GROUP).await),
        vec![code(ResponseError::UnknownMemberId)]
    );
    let unknown_group = Commit {
        version: 8,
        member_id: "m",
        generation_id: 3,
        offsets: vec![("orders", 0, 14, None)],
    };
    assert_eq!(
        commit_errors(&unknown_group.send(&coordinator, "other").await),
        vec![code(ResponseError::IllegalGeneration)]
    );
    let too_large = "x".repeat(5000);
    let oversized = Commit {
        version: 8,
        member_id: &member,
        generation_id: generation,
        offsets: vec![
            ("orders", 1, 1, Some(too_large.as_str())),
            ("orders", 2, 2, None),
        ],
    };
    assert_eq!(
        commit_errors(&oversized.send(&coordinator, GROUP).await),
        vec![code(ResponseError::OffsetMetadataTooLarge), 0]
    );

    let (_, offsets) = fetch(&coordinator, GROUP, Some(vec![("orders", vec![0, 1, 2])])).await;
    let committed: Vec<i64> = offsets.iter().map(|offset| offset.2).collect();
    assert_eq!(committed, vec![10, -1, 2]);
    coordinator.shutdown();
}

#[tokio::test]
async fn failed_appends_are_not_acknowledged_nor_visible() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    log.fail_appends.store(true, Ordering::SeqCst);
    let commit = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 10, None)],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![code(ResponseError::CoordinatorNotAvailable)]
    );
    let (_, offsets) = fetch(&coordinator, GROUP, Some(vec![("orders", vec![0])])).await;
    assert_eq!(offsets[0].2, -1);

    log.fail_appends.store(false, Ordering::SeqCst);
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0]
    );
    coordinator.shutdown();
}

#[tokio::test]
async fn offsets_of_empty_groups_expire_after_the_retention() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let config = GroupConfig {
        offsets_retention_ms: 200,
        ..test_config()
    };
    let coordinator = started(&log, config.clone()).await;
    let commit = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 10, None)],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0]
    );
    assert_eq!(coordinator.expire_offsets().await, 0, "not old enough yet");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(coordinator.expire_offsets().await, 1);
    let (_, offsets) = fetch(&coordinator, GROUP, Some(vec![("orders", vec![0])])).await;
    assert_eq!(offsets[0].2, -1);
    let listed = coordinator
        .list_groups(ListGroupsRequest::default(), 4)
        .await;
    assert!(
        listed.groups.is_empty(),
        "the empty group without offsets is gone"
    );
    coordinator.shutdown();

    let restarted = started(&log, config).await;
    let (_, offsets) = fetch(&restarted, GROUP, Some(vec![("orders", vec![0])])).await;
    assert_eq!(
        offsets[0].2, -1,
        "tombstones keep expired offsets gone after a restart"
    );
    restarted.shutdown();
}

#[tokio::test]
async fn deleting_a_topic_removes_its_committed_offsets() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let commit = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 10, None), ("payments", 0, 20, None)],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0, 0]
    );
    coordinator.on_topic_deleted("orders").await;
    let (_, offsets) = fetch(&coordinator, GROUP, None).await;
    assert_eq!(
        offsets,
        vec![("payments".to_string(), 0, 20, 5, String::new())]
    );
    coordinator.shutdown();
}

// ---------------------------------------------------------------------------------------
// Restart, administration, robustness
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn restart_over_the_same_log_keeps_offsets_and_group_metadata() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let config = test_config();
    let coordinator = started(&log, config.clone()).await;
    let joined = stable_group(&coordinator, GROUP, 2, Join::new(5).session_timeout(1_000)).await;
    let leader = joined[0].member_id.to_string();
    let generation = joined[0].generation_id;
    let commit = Commit {
        version: 8,
        member_id: &leader,
        generation_id: generation,
        offsets: vec![("orders", 0, 99, Some("meta"))],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0]
    );
    let simple = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 3, 5, None)],
    };
    assert_eq!(
        commit_errors(&simple.send(&coordinator, "standalone").await),
        vec![0]
    );
    coordinator.shutdown();
    drop(coordinator);

    let restarted = started(&log, config).await;
    let (_, offsets) = fetch(&restarted, GROUP, None).await;
    assert_eq!(
        offsets,
        vec![("orders".to_string(), 0, 99, 5, "meta".to_string())]
    );
    let (_, offsets) = fetch(&restarted, "standalone", None).await;
    assert_eq!(
        offsets,
        vec![("orders".to_string(), 3, 5, 5, String::new())]
    );

    let described = describe(&restarted, GROUP, 5).await;
    let group = &described.groups[0];
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 2);
    for member in &group.members {
        assert_eq!(
            member.member_assignment,
            Bytes::from(format!("assignment-of-{}", member.member_id))
        );
        assert_eq!(member.member_metadata, subscription(&["orders"]));
    }
    let listed = wire(
        restarted.list_groups(ListGroupsRequest::default(), 5).await,
        5,
    );
    let names: Vec<(&str, &str, &str)> = listed
        .groups
        .iter()
        .map(|group| {
            (
                group.group_id.0.as_str(),
                group.protocol_type.as_str(),
                group.group_state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![(GROUP, "consumer", "Stable"), ("standalone", "", "Empty")]
    );

    // A member that kept running through the restart keeps its session by heartbeating.
    assert_eq!(heartbeat(&restarted, GROUP, &leader, generation).await, 0);
    // The other member's session runs out: the group rebalances, the leader rejoins alone.
    eventually("the silent member to expire", async || {
        heartbeat(&restarted, GROUP, &leader, generation).await
            == code(ResponseError::RebalanceInProgress)
    })
    .await;
    let rejoined = Join::new(5)
        .session_timeout(1_000)
        .member(&leader)
        .send(&restarted, GROUP)
        .await;
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    restarted.shutdown();
}

#[tokio::test]
async fn list_groups_filters_by_state_and_type() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let _joined = stable_group(&coordinator, GROUP, 1, Join::new(5)).await;
    let simple = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 1, None)],
    };
    assert_eq!(
        commit_errors(&simple.send(&coordinator, "standalone").await),
        vec![0]
    );

    let request = ListGroupsRequest::default().with_states_filter(vec![text("stable")]);
    let listed = wire(coordinator.list_groups(wire(request, 4), 4).await, 4);
    let names: Vec<&str> = listed
        .groups
        .iter()
        .map(|group| group.group_id.0.as_str())
        .collect();
    assert_eq!(names, vec![GROUP]);

    let request = ListGroupsRequest::default().with_types_filter(vec![text("consumer")]);
    let listed = wire(coordinator.list_groups(wire(request, 5), 5).await, 5);
    assert!(listed.groups.is_empty(), "no KIP-848 groups here");

    let listed = wire(
        coordinator
            .list_groups(ListGroupsRequest::default(), 0)
            .await,
        0,
    );
    assert_eq!(listed.groups.len(), 2);
    coordinator.shutdown();
}

#[tokio::test]
async fn delete_groups_removes_only_empty_groups_and_survives_restart() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let _joined = stable_group(&coordinator, "busy", 1, Join::new(5)).await;
    let simple = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 1, None)],
    };
    assert_eq!(
        commit_errors(&simple.send(&coordinator, "idle").await),
        vec![0]
    );

    let request = DeleteGroupsRequest::default().with_groups_names(vec![
        group_id("busy"),
        group_id("idle"),
        group_id("ghost"),
    ]);
    let deleted = wire(coordinator.delete_groups(wire(request, 2), 2).await, 2);
    let results: Vec<(&str, i16)> = deleted
        .results
        .iter()
        .map(|result| (result.group_id.0.as_str(), result.error_code))
        .collect();
    assert_eq!(
        results,
        vec![
            ("busy", code(ResponseError::NonEmptyGroup)),
            ("idle", 0),
            ("ghost", code(ResponseError::GroupIdNotFound)),
        ]
    );
    assert_eq!(
        fetch(&coordinator, "idle", Some(vec![("orders", vec![0])]))
            .await
            .1[0]
            .2,
        -1
    );
    let described = describe(&coordinator, "idle", 0).await;
    assert_eq!(described.groups[0].group_state.as_str(), "Dead");
    coordinator.shutdown();

    let restarted = started(&log, test_config()).await;
    assert_eq!(
        fetch(&restarted, "idle", Some(vec![("orders", vec![0])]))
            .await
            .1[0]
            .2,
        -1
    );
    let listed = restarted.list_groups(ListGroupsRequest::default(), 3).await;
    let names: Vec<&str> = listed
        .groups
        .iter()
        .map(|group| group.group_id.0.as_str())
        .collect();
    assert_eq!(names, vec!["busy"]);
    restarted.shutdown();
}

#[tokio::test]
async fn requests_before_load_get_coordinator_load_in_progress() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = GroupCoordinator::new(log.clone(), test_config());
    let joined = Join::new(5).send(&coordinator, GROUP).await;
    assert_eq!(
        joined.error_code,
        code(ResponseError::CoordinatorLoadInProgress)
    );
    let commit = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 1, None)],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![code(ResponseError::CoordinatorLoadInProgress)]
    );
    assert_eq!(
        fetch(&coordinator, GROUP, None).await.0,
        code(ResponseError::CoordinatorLoadInProgress)
    );
    let listed = coordinator
        .list_groups(ListGroupsRequest::default(), 5)
        .await;
    assert_eq!(
        listed.error_code,
        code(ResponseError::CoordinatorLoadInProgress)
    );

    coordinator.load().await.expect("load");
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0]
    );
    coordinator.shutdown();
}

#[tokio::test]
async fn a_deposed_leader_answers_not_coordinator_before_it_resigns() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let commit = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 7, None)],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0]
    );
    // The partition's leadership moved, and commits go on elsewhere: this broker's cache
    // must not answer, although `sync_leadership` has not told it yet.
    log.deposed.store(true, Ordering::SeqCst);
    assert_eq!(
        fetch(&coordinator, GROUP, None).await.0,
        code(ResponseError::NotCoordinator)
    );
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![code(ResponseError::NotCoordinator)]
    );
    log.deposed.store(false, Ordering::SeqCst);
    assert_eq!(fetch(&coordinator, GROUP, None).await.0, 0);
    coordinator.shutdown();
}

#[tokio::test]
async fn malformed_records_are_skipped_at_load_without_panicking() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = started(&log, test_config()).await;
    let commit = Commit {
        version: 8,
        member_id: "",
        generation_id: -1,
        offsets: vec![("orders", 0, 77, Some("kept"))],
    };
    assert_eq!(
        commit_errors(&commit.send(&coordinator, GROUP).await),
        vec![0]
    );
    coordinator.shutdown();

    let garbage: Vec<(&[u8], Option<&[u8]>)> = vec![
        (b"", Some(b"")),
        (b"\x00", None),
        (b"\x00\x01\x7f\xff", Some(b"\x00\x03")),
        (
            b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x01",
            Some(b"\x00\x03\x00"),
        ),
        (
            b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x02",
            Some(b"\x00\x63whatever"),
        ),
        (
            b"\x00\x02\x00\x01g",
            Some(b"\x00\x03\x00\x08consumer\x00\x00\x00\x01\xff\xff\xff\xff\x7f\xff\xff\xff"),
        ),
        (b"\x00\x02\x00\x02g2", Some(b"\x00\x03\xff\xff")),
        (b"\x00\x02\xff\xfe", None),
        (b"\x00\x07anything", Some(b"ignored: unknown key version")),
    ];
    for (key, value) in garbage {
        log.push_raw(0, key, value);
    }
    let restarted = started(&log, test_config()).await;
    let (_, offsets) = fetch(&restarted, GROUP, None).await;
    assert_eq!(
        offsets,
        vec![("orders".to_string(), 0, 77, 5, "kept".to_string())]
    );
    assert!(log.records().len() > 9);
    restarted.shutdown();
}

#[tokio::test]
async fn partition_placement_matches_kafka() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let coordinator = GroupCoordinator::new(log, GroupConfig::default());
    // abs("hello".hashCode()) = 99162322; "polygenelubricants".hashCode() is Integer.MIN_VALUE.
    assert_eq!(coordinator.partition_for("hello"), 99_162_322 % 50);
    assert_eq!(coordinator.partition_for("polygenelubricants"), 0);
    assert_eq!(coordinator.partition_for(""), 0);
}

#[tokio::test]
async fn shutdown_answers_waiting_joins() {
    let log = Arc::new(MemoryOffsetsLog::default());
    let config = GroupConfig {
        group_initial_rebalance_delay_ms: 60_000,
        ..test_config()
    };
    let coordinator = started(&log, config).await;
    let waiting = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move { Join::new(3).send(&coordinator, GROUP).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    coordinator.shutdown();
    let answered = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(answered.error_code, code(ResponseError::NotCoordinator));
}
