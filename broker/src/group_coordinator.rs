//! The classic consumer-group coordinator (Kafka's `GroupCoordinator`): group membership
//! and rebalances (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), committed offsets
//! (OffsetCommit, OffsetFetch) and group administration (ListGroups, DescribeGroups,
//! DeleteGroups).
//!
//! Group state is persisted in the compacted internal topic `__consumer_offsets` through
//! [`OffsetsLog`], in Apache Kafka's record layout. A group lives in partition
//! [`GroupCoordinator::partition_for`] and every write to a partition is serialized, so the
//! log order always matches the order in which the in-memory state changed.
//!
//! Module map: `group` is the state of one group, `membership` the rebalance protocol,
//! `offsets` commits, fetches and expiry, `admin` listing, describing and deleting groups,
//! `timers` session and rebalance timers, `records` the on-log encoding.

mod admin;
mod group;
mod membership;
mod offsets;
mod records;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tracing::{info, warn};

use self::group::{Group, GroupState};
use self::records::RecordKey;
use crate::replica_manager::now_ms;

/// How often expired offsets and dead groups are cleaned up
/// (Kafka's `offsets.retention.check.interval.ms`).
const OFFSETS_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// One `__consumer_offsets` record: key and value, `None` being a tombstone.
pub type OffsetsRecord = (Bytes, Option<Bytes>);

/// Persistence for group state: the internal compacted topic `__consumer_offsets`.
/// Implemented by the replica manager on top of the partition log.
pub trait OffsetsLog: Send + Sync + 'static {
    /// Appends records (key, value; value `None` = tombstone) to partition `partition` of
    /// `__consumer_offsets` as one batch; resolves once appended locally (and durable as
    /// configured).
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), GroupError>>;

    /// Every record of the partition from its log start offset, in offset order.
    fn read_all(&self, partition: i32) -> BoxFuture<'_, Result<Vec<OffsetsRecord>, GroupError>>;

    /// Whether this broker leads `partition` at `leader_epoch` right now. Checked on every
    /// request, so that a deposed leader stops answering from its cache at once rather
    /// than when [`GroupCoordinator::sync_leadership`] next runs. A log without a notion
    /// of leadership (tests) answers true.
    fn leads_at(&self, partition: i32, leader_epoch: i32) -> bool {
        let _ = (partition, leader_epoch);
        true
    }
}

/// Group coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` (default 50).
    pub offsets_topic_num_partitions: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members (default 3000).
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms` (default 6000).
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (default 1800000).
    pub group_max_session_timeout_ms: i32,
    /// `offsets.retention.ms`: how long offsets of an empty group are kept (default 7 days).
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// Errors of the group coordinator and of its [`OffsetsLog`].
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum GroupError {
    /// Reading or appending `__consumer_offsets` failed.
    #[error("consumer offsets storage: {0}")]
    Storage(String),
    /// A `__consumer_offsets` record could not be decoded or encoded.
    #[error("invalid consumer offsets record: {0}")]
    InvalidRecord(String),
}

type GroupHandle = Arc<Mutex<Group>>;

/// Load state of a `__consumer_offsets` partition this broker leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionLoad {
    Loading,
    Loaded,
}

/// The consumer-group coordinator of this broker. Create it with [`GroupCoordinator::new`],
/// call [`GroupCoordinator::load`] once at startup, then serve requests concurrently.
pub struct GroupCoordinator {
    log: Arc<dyn OffsetsLog>,
    config: GroupConfig,
    groups: RwLock<HashMap<String, GroupHandle>>,
    /// One writer at a time per `__consumer_offsets` partition.
    partition_write_locks: Vec<tokio::sync::Mutex<()>>,
    /// The `__consumer_offsets` partitions this broker coordinates (it leads them), and
    /// whether their groups are loaded yet.
    /// With the leader epoch each was loaded at: a partition led again at a later epoch
    /// is replayed again, since commits may have been made elsewhere in between.
    owned: RwLock<HashMap<i32, (PartitionLoad, i32)>>,
    /// Set by the first [`GroupCoordinator::load`] or [`GroupCoordinator::sync_leadership`].
    started: AtomicBool,
    loading: tokio::sync::Mutex<()>,
    shutting_down: AtomicBool,
    shutdown_signal: watch::Sender<bool>,
    next_token: AtomicU64,
    self_ref: Weak<GroupCoordinator>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupCoordinator")
            .field("config", &self.config)
            .field("groups", &self.groups.read().len())
            .field("owned_partitions", &self.owned.read().len())
            .finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    /// A coordinator over `log`. It answers `COORDINATOR_LOAD_IN_PROGRESS` until
    /// [`GroupCoordinator::load`] has replayed the log.
    pub fn new(log: Arc<dyn OffsetsLog>, config: GroupConfig) -> Arc<Self> {
        let partition_count =
            usize::try_from(config.offsets_topic_num_partitions.max(1)).unwrap_or(1);
        let (shutdown_signal, _) = watch::channel(false);
        Arc::new_cyclic(|self_ref| GroupCoordinator {
            log,
            config,
            groups: RwLock::new(HashMap::new()),
            partition_write_locks: (0..partition_count)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            owned: RwLock::new(HashMap::new()),
            started: AtomicBool::new(false),
            loading: tokio::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            shutdown_signal,
            next_token: AtomicU64::new(1),
            self_ref: self_ref.clone(),
        })
    }

    /// The `__consumer_offsets` partition of a group, as Kafka places it:
    /// `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        let partition_count = self.config.offsets_topic_num_partitions.max(1);
        let hash = java_string_hash_code(group_id);
        let non_negative = if hash == i32::MIN { 0 } else { hash.abs() };
        non_negative % partition_count
    }

    /// Coordinates every `__consumer_offsets` partition (a single broker leads them all):
    /// replays them (committed offsets, group metadata, tombstones) and starts serving.
    /// Undecodable records are skipped with a warning. Loading twice is a no-op.
    pub async fn load(&self) -> Result<(), GroupError> {
        let all: BTreeMap<i32, i32> = (0..self.config.offsets_topic_num_partitions.max(1))
            .map(|partition| (partition, 0))
            .collect();
        self.sync_leadership(&all).await
    }

    /// Follows leadership of `__consumer_offsets` (Kafka's `onElection`/`onResignation`):
    /// `led` maps each partition this broker leads to its leader epoch. Partitions not
    /// coordinated here at that epoch are replayed and their groups served; groups of
    /// partitions no longer in `led`, or led at another epoch than they were loaded at
    /// (leadership went elsewhere and came back, possibly unseen), are dropped first
    /// (their waiting members get `NOT_COORDINATOR` and rejoin). Starts the offsets
    /// retention task on the first call.
    ///
    /// Errors: reading a newly led partition failed; that partition stays unowned and the
    /// next call retries it.
    pub async fn sync_leadership(&self, led: &BTreeMap<i32, i32>) -> Result<(), GroupError> {
        let _loading = self.loading.lock().await;
        let resigned: Vec<i32> = self
            .owned
            .read()
            .iter()
            .filter(|(partition, (_, epoch))| led.get(partition) != Some(epoch))
            .map(|(partition, _)| *partition)
            .collect();
        for partition in resigned {
            let _ = self.owned.write().remove(&partition);
            let dropped: Vec<GroupHandle> = {
                let mut groups = self.groups.write();
                let ids: Vec<String> = groups
                    .keys()
                    .filter(|id| self.partition_for(id) == partition)
                    .cloned()
                    .collect();
                ids.iter().filter_map(|id| groups.remove(id)).collect()
            };
            for handle in &dropped {
                membership::fail_waiting_members(&mut handle.lock(), ResponseError::NotCoordinator);
            }
            info!(
                partition,
                groups = dropped.len(),
                "resigned as coordinator of a __consumer_offsets partition"
            );
        }
        let mut first_error = None;
        for (&partition, &leader_epoch) in led {
            if self.owned.read().contains_key(&partition) {
                continue;
            }
            let _ = self
                .owned
                .write()
                .insert(partition, (PartitionLoad::Loading, leader_epoch));
            match self.load_partition(partition).await {
                Ok(groups) => {
                    let _ = self
                        .owned
                        .write()
                        .insert(partition, (PartitionLoad::Loaded, leader_epoch));
                    if groups > 0 {
                        info!(
                            partition,
                            leader_epoch, groups, "loaded groups of a __consumer_offsets partition"
                        );
                    }
                }
                Err(error) => {
                    let _ = self.owned.write().remove(&partition);
                    warn!(partition, %error, "loading a __consumer_offsets partition failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        if !self.started.swap(true, Ordering::AcqRel) {
            self.spawn_retention_task();
            info!(partitions = led.len(), "group coordinator started");
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Replays one partition into the group map; returns how many groups it holds.
    async fn load_partition(&self, partition: i32) -> Result<usize, GroupError> {
        let started = std::time::Instant::now();
        let records = self.log.read_all(partition).await?;
        let record_count = records.len();
        // Decoding a large partition takes a while: keep it off the async workers.
        let replay = tokio::task::spawn_blocking(move || {
            let mut replay = Replay::default();
            for (key, value) in records {
                if let Err(error) = replay.apply(&key, value.as_deref()) {
                    warn!(partition, %error, "skipping undecodable __consumer_offsets record");
                }
            }
            replay
        })
        .await
        .map_err(|error| {
            GroupError::Storage(format!("replaying __consumer_offsets-{partition}: {error}"))
        })?;
        let groups = self.install_replay(replay);
        // The log cleaner keeps this bounded by the live groups and offsets.
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        info!(
            partition,
            records = record_count,
            groups,
            elapsed_ms,
            "replayed a __consumer_offsets partition"
        );
        metrics::histogram!("silt_group_coordinator_load_seconds").record(elapsed_ms / 1000.0);
        Ok(groups)
    }

    /// Joins a member to a group (JoinGroup v0..=9); blocks until the rebalance completes.
    pub async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        self.join_group_request(req, version, client_id, client_host)
            .await
    }

    /// Receives the leader's assignment or waits for it (SyncGroup v0..=5).
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        self.sync_group_request(req, version).await
    }

    /// Extends a member's session (Heartbeat v0..=4).
    pub async fn heartbeat(&self, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
        self.heartbeat_request(req, version)
    }

    /// Removes members from a group (LeaveGroup v0..=5).
    pub async fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        self.leave_group_request(req, version)
    }

    /// Persists committed offsets before answering (OffsetCommit v2..=8).
    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        self.offset_commit_request(req, version).await
    }

    /// Returns committed offsets (OffsetFetch v1..=8).
    pub async fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        self.offset_fetch_request(req, version)
    }

    /// Lists the groups (ListGroups v0..=5).
    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        self.list_groups_request(req, version)
    }

    /// Describes groups and their members (DescribeGroups v0..=5).
    pub async fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        self.describe_groups_request(req, version)
    }

    /// Deletes empty groups with their offsets (DeleteGroups v0..=2).
    pub async fn delete_groups(
        &self,
        req: DeleteGroupsRequest,
        version: i16,
    ) -> DeleteGroupsResponse {
        self.delete_groups_request(req, version).await
    }

    /// Removes committed offsets of a deleted topic.
    pub async fn on_topic_deleted(&self, topic: &str) {
        self.remove_topic_offsets(topic).await;
    }

    /// Runs one offsets retention pass now (the coordinator also runs one every ten
    /// minutes): expires offsets older than `offsets.retention.ms` and removes empty groups
    /// left without offsets. Returns how many offsets were removed.
    pub async fn expire_offsets(&self) -> usize {
        self.run_offsets_retention().await
    }

    /// Stops timers (session expiry, rebalance and retention tasks) and answers the
    /// requests still waiting in JoinGroup or SyncGroup with `NOT_COORDINATOR`.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let _ = self.shutdown_signal.send(true);
        for handle in self.all_groups() {
            let mut group = handle.lock();
            membership::fail_waiting_members(&mut group, ResponseError::NotCoordinator);
        }
        info!("group coordinator shut down");
    }

    /// The error every request gets before serving starts or after shutdown.
    fn unavailable(&self) -> Option<ResponseError> {
        if self.shutting_down.load(Ordering::Acquire) {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if !self.started.load(Ordering::Acquire) {
            Some(ResponseError::CoordinatorLoadInProgress)
        } else {
            None
        }
    }

    /// The error a request about `group_id` gets: [`Self::unavailable`], else
    /// `NOT_COORDINATOR` when another broker leads the group's partition, else
    /// `COORDINATOR_LOAD_IN_PROGRESS` while the partition is being replayed.
    fn unavailable_for(&self, group_id: &str) -> Option<ResponseError> {
        if let Some(error) = self.unavailable() {
            return Some(error);
        }
        let partition = self.partition_for(group_id);
        let owned = self.owned.read().get(&partition).copied();
        match owned {
            None => Some(ResponseError::NotCoordinator),
            Some((PartitionLoad::Loading, _)) => Some(ResponseError::CoordinatorLoadInProgress),
            Some((PartitionLoad::Loaded, epoch)) if !self.log.leads_at(partition, epoch) => {
                Some(ResponseError::NotCoordinator)
            }
            Some((PartitionLoad::Loaded, _)) => None,
        }
    }

    /// Whether this broker coordinates `group_id` now (its partition is led and loaded).
    pub fn is_coordinator_for(&self, group_id: &str) -> bool {
        self.unavailable_for(group_id).is_none()
    }

    fn group(&self, group_id: &str) -> Option<GroupHandle> {
        self.groups.read().get(group_id).cloned()
    }

    fn group_or_create(&self, group_id: &str) -> GroupHandle {
        if let Some(handle) = self.group(group_id) {
            return handle;
        }
        let mut groups = self.groups.write();
        groups
            .entry(group_id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(group_id, now_ms()))))
            .clone()
    }

    fn all_groups(&self) -> Vec<GroupHandle> {
        self.groups.read().values().cloned().collect()
    }

    /// Forgets a group that went Dead, unless it was already replaced.
    fn remove_dead_group(&self, group_id: &str, handle: &GroupHandle) {
        let mut groups = self.groups.write();
        if groups
            .get(group_id)
            .is_some_and(|current| Arc::ptr_eq(current, handle))
        {
            let _ = groups.remove(group_id);
        }
    }

    fn next_token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    fn this(&self) -> Option<Arc<GroupCoordinator>> {
        self.self_ref.upgrade()
    }

    fn write_lock(&self, partition: i32) -> &tokio::sync::Mutex<()> {
        let index = usize::try_from(partition).unwrap_or(0) % self.partition_write_locks.len();
        &self.partition_write_locks[index]
    }

    /// Persists the group's metadata if it is still in `expected_state` at
    /// `expected_generation`; returns whether it wrote. The record is built under the
    /// partition's write lock, so records reach the log in the order of the state changes.
    async fn store_group(
        &self,
        handle: &GroupHandle,
        expected_state: GroupState,
        expected_generation: i32,
        assignment: Option<&HashMap<String, Bytes>>,
    ) -> Result<bool, GroupError> {
        let group_id = handle.lock().group_id.clone();
        let partition = self.partition_for(&group_id);
        let _write = self.write_lock(partition).lock().await;
        let record = {
            let group = handle.lock();
            if !group.is(expected_state) || group.generation_id != expected_generation {
                return Ok(false);
            }
            let key = records::encode_group_key(&group.group_id)?;
            let value = records::encode_group_value(&group.metadata_value(assignment))?;
            (key, Some(value))
        };
        self.log.append(partition, vec![record]).await?;
        tracing::debug!(group_id = %group_id, generation = expected_generation, "stored group metadata");
        Ok(true)
    }

    /// Builds the groups of a replayed partition and starts their members' session timers.
    fn install_replay(&self, replay: Replay) -> usize {
        let now = tokio::time::Instant::now();
        let now_ms = now_ms();
        let mut groups = self.groups.write();
        let mut loaded = 0;
        let mut group_ids: Vec<String> = replay.metadata.keys().cloned().collect();
        group_ids.extend(
            replay
                .offsets
                .keys()
                .filter(|id| !replay.metadata.contains_key(*id))
                .cloned(),
        );
        for group_id in group_ids {
            let metadata = replay.metadata.get(&group_id).cloned().flatten();
            let offsets = replay.offsets.get(&group_id).cloned().unwrap_or_default();
            if metadata.is_none() && offsets.is_empty() {
                continue;
            }
            let mut group = match metadata {
                Some(value) => Group::from_metadata_value(&group_id, value, now, now_ms),
                None => Group::new(&group_id, now_ms),
            };
            group.offsets = offsets;
            let member_ids: Vec<String> = group.members.keys().cloned().collect();
            for member_id in member_ids {
                self.watch_member_session(&mut group, &member_id);
            }
            let _ = groups.insert(group_id, Arc::new(Mutex::new(group)));
            loaded += 1;
        }
        loaded
    }

    fn spawn_retention_task(&self) {
        let coordinator = self.self_ref.clone();
        let mut shutdown = self.shutdown_signal.subscribe();
        let _task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(OFFSETS_RETENTION_CHECK_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let _first_tick_is_immediate = interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = shutdown.wait_for(|stopped| *stopped) => return,
                }
                let Some(coordinator) = coordinator.upgrade() else {
                    return;
                };
                let _removed = coordinator.run_offsets_retention().await;
            }
        });
    }
}

/// Records replayed at load, the last one per key winning.
#[derive(Default)]
struct Replay {
    /// `None` marks a group metadata tombstone.
    metadata: HashMap<String, Option<records::GroupMetadataValue>>,
    offsets: HashMap<
        String,
        std::collections::BTreeMap<group::TopicPartition, records::OffsetCommitValue>,
    >,
}

impl Replay {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), GroupError> {
        match records::decode_key(key)? {
            RecordKey::Offset {
                group_id,
                topic,
                partition,
            } => {
                let offsets = self.offsets.entry(group_id).or_default();
                match value {
                    Some(value) => {
                        let _ = offsets
                            .insert((topic, partition), records::decode_offset_value(value)?);
                    }
                    None => {
                        let _ = offsets.remove(&(topic, partition));
                    }
                }
            }
            RecordKey::GroupMetadata { group_id } => {
                let metadata = value.map(records::decode_group_value).transpose()?;
                let _ = self.metadata.insert(group_id, metadata);
            }
            RecordKey::Unknown { version } => {
                tracing::debug!(
                    version,
                    "ignoring __consumer_offsets record with unknown key version"
                );
            }
        }
        Ok(())
    }
}

/// Java's `String.hashCode` over UTF-16 code units.
fn java_string_hash_code(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The Kafka error a client gets when a `__consumer_offsets` write fails.
fn storage_error_code(error: &GroupError) -> ResponseError {
    match error {
        GroupError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        GroupError::InvalidRecord(_) => ResponseError::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    /// `__consumer_offsets` in memory, shared by the coordinators of a test.
    #[derive(Default)]
    struct MemoryLog {
        partitions: Mutex<HashMap<i32, Vec<OffsetsRecord>>>,
    }

    impl OffsetsLog for MemoryLog {
        fn append(
            &self,
            partition: i32,
            records: Vec<OffsetsRecord>,
        ) -> BoxFuture<'_, Result<(), GroupError>> {
            self.partitions
                .lock()
                .entry(partition)
                .or_default()
                .extend(records);
            Box::pin(async { Ok(()) })
        }

        fn read_all(
            &self,
            partition: i32,
        ) -> BoxFuture<'_, Result<Vec<OffsetsRecord>, GroupError>> {
            let records = self
                .partitions
                .lock()
                .get(&partition)
                .cloned()
                .unwrap_or_default();
            Box::pin(async move { Ok(records) })
        }
    }

    fn commit(group: &str, offset: i64) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset),
                    ]),
            ])
    }

    fn fetch(group: &str) -> OffsetFetchRequest {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders")))
                    .with_partition_indexes(vec![0]),
            ]))
    }

    /// A broker paused while leadership went elsewhere and came back sees only the later
    /// epoch: it must replay the partition, not serve the offsets it had cached.
    #[tokio::test]
    async fn leadership_regained_at_a_later_epoch_replays_the_partition() {
        let log = Arc::new(MemoryLog::default());
        let config = GroupConfig {
            offsets_topic_num_partitions: 4,
            ..GroupConfig::default()
        };
        let paused = GroupCoordinator::new(log.clone(), config.clone());
        let group = "ledger";
        let partition = paused.partition_for(group);
        paused
            .sync_leadership(&BTreeMap::from([(partition, 3)]))
            .await
            .expect("sync");
        let first = paused.offset_commit(commit(group, 10), 8).await;
        assert_eq!(first.topics[0].partitions[0].error_code, 0);

        let other = GroupCoordinator::new(log, config);
        other
            .sync_leadership(&BTreeMap::from([(partition, 4)]))
            .await
            .expect("sync");
        let later = other.offset_commit(commit(group, 11), 8).await;
        assert_eq!(later.topics[0].partitions[0].error_code, 0);

        // Same epoch: nothing to reload; a later epoch: the commit made elsewhere shows.
        paused
            .sync_leadership(&BTreeMap::from([(partition, 5)]))
            .await
            .expect("sync");
        let fetched = paused.offset_fetch(fetch(group), 5).await;
        assert_eq!(fetched.topics[0].partitions[0].committed_offset, 11);
    }

    #[tokio::test]
    async fn leadership_moves_groups_between_coordinators() {
        let log = Arc::new(MemoryLog::default());
        let config = GroupConfig {
            offsets_topic_num_partitions: 4,
            ..GroupConfig::default()
        };
        let first = GroupCoordinator::new(log.clone(), config.clone());
        let group = "payments";
        let partition = first.partition_for(group);
        let other = (partition + 1) % 4;

        first
            .sync_leadership(&BTreeMap::from([(other, 0)]))
            .await
            .expect("sync");
        let refused = first.offset_commit(commit(group, 42), 8).await;
        assert_eq!(
            refused.topics[0].partitions[0].error_code,
            ResponseError::NotCoordinator.code()
        );

        first
            .sync_leadership(&BTreeMap::from([(partition, 0)]))
            .await
            .expect("sync");
        let committed = first.offset_commit(commit(group, 42), 8).await;
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
        assert!(first.is_coordinator_for(group));

        // Resigning drops the group; the broker that takes over replays it from the log.
        first.sync_leadership(&BTreeMap::new()).await.expect("sync");
        assert!(!first.is_coordinator_for(group));
        assert_eq!(
            first.offset_fetch(fetch(group), 5).await.error_code,
            ResponseError::NotCoordinator.code()
        );
        let second = GroupCoordinator::new(log, config);
        second
            .sync_leadership(&BTreeMap::from([(partition, 0)]))
            .await
            .expect("sync");
        let fetched = second.offset_fetch(fetch(group), 5).await;
        assert_eq!(fetched.error_code, 0);
        assert_eq!(fetched.topics[0].partitions[0].committed_offset, 42);
        first.shutdown();
        second.shutdown();
    }

    #[test]
    fn java_hash_code_matches_java() {
        assert_eq!(java_string_hash_code(""), 0);
        assert_eq!(java_string_hash_code("a"), 97);
        assert_eq!(java_string_hash_code("hello"), 99_162_322);
        assert_eq!(java_string_hash_code("polygenelubricants"), i32::MIN);
    }
}
