//! Follower side of replication: one fetcher task per leader broker copies the
//! partitions this broker follows with the Kafka Fetch API (`replica_id` = our broker
//! id), after truncating each newly assigned partition by leader epoch (KIP-101,
//! KIP-279) with OffsetForLeaderEpoch.
//!
//! [`ReplicaFetcherManager::apply_metadata`] is called with every metadata version;
//! it starts, updates and stops fetcher tasks. Each task owns one connection to its
//! leader (a [`LeaderEndPoint`] from the front end) and runs requests one at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId as WireBrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use silt_controller::{BrokerId, ClusterMetadata, TopicId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::partition::Partition;
use crate::replica_manager::{PartitionError, ReplicaManager};
use crate::replication::truncation_point;

use crate::leader_end_point::{LeaderConnector, LeaderEndPoint, LeaderEndPointError};

/// Settings of the follower fetchers.
#[derive(Clone, Debug)]
pub struct ReplicaFetcherConfig {
    /// `replica.fetch.wait.max.ms`: how long the leader may hold a fetch (ms).
    pub max_wait_ms: i32,
    /// `replica.fetch.min.bytes`.
    pub min_bytes: i32,
    /// `replica.fetch.response.max.bytes`: byte budget of one fetch response.
    pub max_bytes: i32,
    /// `replica.fetch.max.bytes`: byte budget per partition.
    pub partition_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: pause after an error, for the connection or one
    /// partition (ms).
    pub backoff_ms: u64,
    /// How long a request may take before the connection is considered dead (ms),
    /// on top of `max_wait_ms`.
    pub request_timeout_ms: u64,
}

impl Default for ReplicaFetcherConfig {
    /// Kafka's defaults, except a 500 ms wait (Kafka: 500) and 1 s backoff.
    fn default() -> Self {
        ReplicaFetcherConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 10 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            backoff_ms: 1_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// A followed partition as the controller assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowedPartition {
    topic_id: TopicId,
    leader_epoch: i32,
}

type PartitionKey = (String, i32);
type Assignments = BTreeMap<PartitionKey, FollowedPartition>;

#[derive(Debug)]
struct FetcherHandle {
    address: (String, u16),
    assignments: watch::Sender<Assignments>,
    task: JoinHandle<()>,
}

/// Runs one fetcher task per leader this broker follows partitions of.
#[derive(Debug)]
pub struct ReplicaFetcherManager {
    replica_manager: Arc<ReplicaManager>,
    connector: Arc<dyn LeaderConnector>,
    config: ReplicaFetcherConfig,
    fetchers: parking_lot::Mutex<HashMap<BrokerId, FetcherHandle>>,
    shutdown: watch::Sender<bool>,
}

impl ReplicaFetcherManager {
    /// A manager with no fetchers; they start with [`Self::apply_metadata`] and reach
    /// leaders through `connector`.
    pub fn new(
        replica_manager: Arc<ReplicaManager>,
        connector: Arc<dyn LeaderConnector>,
        config: ReplicaFetcherConfig,
    ) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(ReplicaFetcherManager {
            replica_manager,
            connector,
            config,
            fetchers: parking_lot::Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Brings the fetchers in line with `metadata`: every partition with this broker
    /// among its replicas, a leader other than this broker and a registered leader
    /// broker is fetched from that leader; partitions whose leader or epoch changed
    /// move (and truncate again), others are dropped. Call after the replica manager
    /// applied the same metadata, from within the tokio runtime.
    pub fn apply_metadata(&self, metadata: &ClusterMetadata) {
        if *self.shutdown.borrow() {
            return;
        }
        let local = self.replica_manager.broker_id();
        let mut wanted: HashMap<BrokerId, ((String, u16), Assignments)> = HashMap::new();
        for topic in metadata.topics.values() {
            for assignment in &topic.partitions {
                if !assignment.replicas.contains(&local)
                    || assignment.leader == local
                    || assignment.leader < 0
                {
                    continue;
                }
                let Some(leader) = metadata.brokers.get(&assignment.leader) else {
                    continue;
                };
                let entry = wanted
                    .entry(assignment.leader)
                    .or_insert_with(|| ((leader.host.clone(), leader.port), Assignments::new()));
                let _ = entry.1.insert(
                    (topic.name.clone(), assignment.partition),
                    FollowedPartition {
                        topic_id: topic.topic_id,
                        leader_epoch: assignment.leader_epoch,
                    },
                );
            }
        }
        let mut fetchers = self.fetchers.lock();
        fetchers.retain(|leader_id, handle| {
            let keep = wanted
                .get(leader_id)
                .is_some_and(|(address, _)| *address == handle.address);
            if !keep {
                info!(leader = leader_id, "stopping replica fetcher");
                handle.task.abort();
            }
            keep
        });
        for (leader_id, (address, assignments)) in wanted {
            if let Some(handle) = fetchers.get(&leader_id) {
                let _ = handle.assignments.send_if_modified(|current| {
                    let changed = *current != assignments;
                    *current = assignments;
                    changed
                });
                continue;
            }
            info!(leader = leader_id, host = %address.0, port = address.1, partitions = assignments.len(), "starting replica fetcher");
            let (assignments_sender, assignments_receiver) = watch::channel(assignments);
            let fetcher = Fetcher {
                leader_id,
                address: address.clone(),
                replica_manager: Arc::clone(&self.replica_manager),
                connector: Arc::clone(&self.connector),
                config: self.config.clone(),
                assignments: assignments_receiver,
                shutdown: self.shutdown.subscribe(),
                states: HashMap::new(),
                connection: None,
            };
            let task = tokio::spawn(fetcher.run());
            let _ = fetchers.insert(
                leader_id,
                FetcherHandle {
                    address,
                    assignments: assignments_sender,
                    task,
                },
            );
        }
    }

    /// Leader ids that currently have a fetcher task.
    pub fn leaders(&self) -> Vec<BrokerId> {
        let mut leaders: Vec<BrokerId> = self.fetchers.lock().keys().copied().collect();
        leaders.sort_unstable();
        leaders
    }

    /// Stops every fetcher task and waits for them; later metadata starts none.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let handles: Vec<FetcherHandle> = self
            .fetchers
            .lock()
            .drain()
            .map(|(_, handle)| handle)
            .collect();
        for handle in handles {
            handle.task.abort();
            let _ = handle.task.await;
        }
    }
}

impl Drop for ReplicaFetcherManager {
    /// Fetcher tasks do not outlive their manager.
    fn drop(&mut self) {
        for handle in self.fetchers.get_mut().values() {
            handle.task.abort();
        }
    }
}

/// Errors of one fetcher connection; all of them drop the connection.
#[derive(thiserror::Error, Debug)]
enum FetcherError {
    #[error(transparent)]
    EndPoint(#[from] LeaderEndPointError),
    #[error("request to the leader timed out")]
    TimedOut,
    #[error("not connected to the leader")]
    NotConnected,
}

/// Bounds a request to the leader by `timeout`.
async fn within<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, LeaderEndPointError>>,
) -> Result<T, FetcherError> {
    match tokio::time::timeout(timeout, request).await {
        Err(_) => Err(FetcherError::TimedOut),
        Ok(result) => Ok(result?),
    }
}

/// Where one followed partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Must truncate by leader epoch before fetching.
    Truncating,
    /// Fetching from our log end offset.
    Fetching,
}

#[derive(Debug)]
struct PartitionState {
    target: FollowedPartition,
    phase: Phase,
    /// Skipped until then after an error.
    retry_at: Option<Instant>,
}

impl PartitionState {
    fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|retry_at| retry_at <= now)
    }
}

/// What a round did, to decide whether to pause.
enum Round {
    /// Requests were made.
    Worked,
    /// Nothing to do until this time (or an assignment change).
    Idle(Option<Instant>),
}

/// The task fetching every partition led by one broker.
struct Fetcher {
    leader_id: BrokerId,
    address: (String, u16),
    replica_manager: Arc<ReplicaManager>,
    config: ReplicaFetcherConfig,
    assignments: watch::Receiver<Assignments>,
    shutdown: watch::Receiver<bool>,
    states: HashMap<PartitionKey, PartitionState>,
    connector: Arc<dyn LeaderConnector>,
    connection: Option<Box<dyn LeaderEndPoint>>,
}

impl Fetcher {
    fn backoff(&self) -> Duration {
        Duration::from_millis(self.config.backoff_ms)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(
            self.config.request_timeout_ms + u64::try_from(self.config.max_wait_ms).unwrap_or(0),
        )
    }

    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            self.sync_assignments();
            if self.states.is_empty() {
                self.pause(None).await;
                continue;
            }
            if self.connection.is_none() {
                let connecting =
                    self.connector
                        .connect(self.leader_id, &self.address.0, self.address.1);
                match within(self.request_timeout(), connecting).await {
                    Ok(connection) => {
                        debug!(leader = self.leader_id, "connected to the leader");
                        self.connection = Some(connection);
                    }
                    Err(error) => {
                        warn!(leader = self.leader_id, host = %self.address.0, port = self.address.1, %error, "cannot connect to the leader");
                        self.pause(Some(Instant::now() + self.backoff())).await;
                        continue;
                    }
                }
            }
            match self.round().await {
                Ok(Round::Worked) => {}
                Ok(Round::Idle(until)) => self.pause(until).await,
                Err(error) => {
                    warn!(leader = self.leader_id, %error, "replica fetch failed, reconnecting");
                    self.connection = None;
                    self.pause(Some(Instant::now() + self.backoff())).await;
                }
            }
        }
    }

    /// Waits for an assignment change, shutdown, or `until`.
    async fn pause(&mut self, until: Option<Instant>) {
        let sleep = async {
            match until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.assignments.changed() => {
                if changed.is_err() {
                    // The manager dropped this fetcher.
                    std::future::pending::<()>().await;
                }
            }
            _ = self.shutdown.changed() => {}
            () = sleep => {}
        }
    }

    /// Applies the latest assignment: new partitions, and partitions with a new epoch,
    /// truncate first; removed partitions are dropped.
    fn sync_assignments(&mut self) {
        let assignments = self.assignments.borrow_and_update().clone();
        self.states.retain(|key, state| {
            assignments
                .get(key)
                .is_some_and(|target| *target == state.target)
        });
        for (key, target) in assignments {
            let _ = self.states.entry(key).or_insert(PartitionState {
                target,
                phase: Phase::Truncating,
                retry_at: None,
            });
        }
    }

    /// The hosted partition for a followed one, if it is the same topic incarnation.
    fn hosted(&self, key: &PartitionKey, target: &FollowedPartition) -> Option<Arc<Partition>> {
        self.replica_manager
            .partition(&key.0, key.1)
            .filter(|hosted| hosted.topic_id == target.topic_id)
    }

    fn back_off(&mut self, key: &PartitionKey) {
        let retry_at = Instant::now() + self.backoff();
        if let Some(state) = self.states.get_mut(key) {
            state.retry_at = Some(retry_at);
        }
    }

    fn set_phase(&mut self, key: &PartitionKey, phase: Phase) {
        if let Some(state) = self.states.get_mut(key) {
            state.phase = phase;
            state.retry_at = None;
        }
    }

    async fn round(&mut self) -> Result<Round, FetcherError> {
        let now = Instant::now();
        let ready = |phase: Phase| {
            self.states
                .iter()
                .filter(move |(_, state)| state.phase == phase && state.ready(now))
                .map(|(key, state)| (key.clone(), state.target))
                .collect::<Vec<_>>()
        };
        let truncating = ready(Phase::Truncating);
        let fetching = ready(Phase::Fetching);
        // As Kafka's fetcher thread: truncate, then fetch, each round, so a partition
        // still truncating never holds up the others.
        let worked = !truncating.is_empty() || !fetching.is_empty();
        if !truncating.is_empty() {
            self.truncate(truncating).await?;
        }
        if !fetching.is_empty() {
            self.fetch(fetching).await?;
        }
        if worked {
            return Ok(Round::Worked);
        }
        Ok(Round::Idle(
            self.states
                .values()
                .filter_map(|state| state.retry_at)
                .min(),
        ))
    }

    /// Asks the leader for the end offset of our latest epoch of each partition and
    /// truncates our log by Kafka's rule.
    async fn truncate(
        &mut self,
        partitions: Vec<(PartitionKey, FollowedPartition)>,
    ) -> Result<(), FetcherError> {
        let mut asked: Vec<(PartitionKey, FollowedPartition, Arc<Partition>, i32)> = Vec::new();
        for (key, target) in partitions {
            let Some(hosted) = self.hosted(&key, &target) else {
                self.back_off(&key);
                continue;
            };
            match self.replica_manager.local_epoch_view(&hosted, None).await {
                Ok((Some(latest_epoch), _)) => asked.push((key, target, hosted, latest_epoch)),
                Ok((None, _)) => {
                    // No epochs: nothing known to be ours beyond the high watermark.
                    let high_watermark = hosted.high_watermark();
                    self.apply_truncation(&key, &target, &hosted, high_watermark, true)
                        .await;
                }
                Err(error) => {
                    warn!(topic = %key.0, partition = key.1, %error, "reading the leader epoch cache failed");
                    self.back_off(&key);
                }
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
        for (key, target, _, latest_epoch) in &asked {
            let partition = OffsetForLeaderPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(target.leader_epoch)
                .with_leader_epoch(*latest_epoch);
            match topics
                .iter_mut()
                .find(|topic| topic.topic.0.as_str() == key.0)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(key.0.clone())))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(WireBrokerId(self.replica_manager.broker_id()))
            .with_topics(topics);
        let timeout = self.request_timeout();
        let connection = self.connection.as_mut().ok_or(FetcherError::NotConnected)?;
        let response: OffsetForLeaderEpochResponse =
            within(timeout, connection.fetch_epoch_end_offsets(request)).await?;
        let mut answers: HashMap<PartitionKey, (i16, i32, i64)> = HashMap::new();
        for topic in response.topics {
            for partition in topic.partitions {
                let _ = answers.insert(
                    (topic.topic.0.as_str().to_string(), partition.partition),
                    (
                        partition.error_code,
                        partition.leader_epoch,
                        partition.end_offset,
                    ),
                );
            }
        }
        for (key, target, hosted, _) in asked {
            if self
                .states
                .get(&key)
                .is_none_or(|state| state.target != target)
            {
                continue;
            }
            let Some((code, leader_epoch, leader_end_offset)) = answers.get(&key).copied() else {
                self.back_off(&key);
                continue;
            };
            if code.is_err() {
                debug!(topic = %key.0, partition = key.1, error_code = code, "leader refused offset for leader epoch");
                self.back_off(&key);
                continue;
            }
            let local_view = self
                .replica_manager
                .local_epoch_view(&hosted, (leader_epoch >= 0).then_some(leader_epoch))
                .await;
            let Ok((_, local_end_offset_for)) = local_view else {
                self.back_off(&key);
                continue;
            };
            let point = truncation_point(
                leader_epoch,
                leader_end_offset,
                local_end_offset_for,
                hosted.log_end_offset(),
                hosted.high_watermark(),
            );
            self.apply_truncation(&key, &target, &hosted, point.offset, point.completed)
                .await;
        }
        Ok(())
    }

    async fn apply_truncation(
        &mut self,
        key: &PartitionKey,
        target: &FollowedPartition,
        hosted: &Arc<Partition>,
        offset: i64,
        completed: bool,
    ) {
        let previous_log_end_offset = hosted.log_end_offset();
        match self
            .replica_manager
            .follower(hosted, target.leader_epoch)
            .truncate_to(offset.max(0))
            .await
        {
            Ok(log_end_offset) => {
                info!(topic = %key.0, partition = key.1, leader = self.leader_id, leader_epoch = target.leader_epoch, offset, previous_log_end_offset, log_end_offset, completed, "follower truncated by leader epoch");
                if completed {
                    self.set_phase(key, Phase::Fetching);
                }
            }
            Err(error) => {
                warn!(topic = %key.0, partition = key.1, %error, "follower truncation failed");
                self.back_off(key);
            }
        }
    }

    /// One Fetch round trip for the partitions ready to fetch.
    async fn fetch(
        &mut self,
        partitions: Vec<(PartitionKey, FollowedPartition)>,
    ) -> Result<(), FetcherError> {
        let mut requested: Vec<(PartitionKey, FollowedPartition, Arc<Partition>, i64)> = Vec::new();
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (key, target) in partitions {
            let Some(hosted) = self.hosted(&key, &target) else {
                self.back_off(&key);
                continue;
            };
            let fetch_offset = hosted.log_end_offset();
            let partition = FetchPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(target.leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(hosted.log_start_offset())
                .with_partition_max_bytes(self.config.partition_max_bytes);
            match topics
                .iter_mut()
                .find(|topic| topic.topic.0.as_str() == key.0)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(key.0.clone())))
                        .with_partitions(vec![partition]),
                ),
            }
            requested.push((key, target, hosted, fetch_offset));
        }
        if requested.is_empty() {
            return Ok(());
        }
        let request = FetchRequest::default()
            .with_replica_id(WireBrokerId(self.replica_manager.broker_id()))
            .with_max_wait_ms(self.config.max_wait_ms)
            .with_min_bytes(self.config.min_bytes)
            .with_max_bytes(self.config.max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        let timeout = self.request_timeout();
        let connection = self.connection.as_mut().ok_or(FetcherError::NotConnected)?;
        let response: FetchResponse = within(timeout, connection.fetch(request)).await?;
        if response.error_code.is_err() {
            warn!(
                leader = self.leader_id,
                error_code = response.error_code,
                "leader refused the fetch"
            );
            for (key, ..) in &requested {
                self.back_off(key);
            }
            return Ok(());
        }
        let mut answers: HashMap<
            PartitionKey,
            kafka_protocol::messages::fetch_response::PartitionData,
        > = HashMap::new();
        for topic in response.responses {
            let topic_name = topic.topic.0.as_str().to_string();
            for partition in topic.partitions {
                let _ = answers.insert((topic_name.clone(), partition.partition_index), partition);
            }
        }
        for (key, target, hosted, fetch_offset) in requested {
            // A partition moved meanwhile is refused by the epoch check of the append.
            if self
                .states
                .get(&key)
                .is_none_or(|state| state.target != target)
            {
                continue;
            }
            let Some(data) = answers.remove(&key) else {
                continue;
            };
            self.handle_partition_data(&key, &target, &hosted, fetch_offset, data)
                .await;
        }
        Ok(())
    }

    async fn handle_partition_data(
        &mut self,
        key: &PartitionKey,
        target: &FollowedPartition,
        hosted: &Arc<Partition>,
        fetch_offset: i64,
        data: kafka_protocol::messages::fetch_response::PartitionData,
    ) {
        match data.error_code.err() {
            None => {}
            Some(ResponseError::OffsetOutOfRange) if data.log_start_offset > fetch_offset => {
                // Behind the leader's log start: restart our log there.
                match self
                    .replica_manager
                    .follower(hosted, target.leader_epoch)
                    .truncate_fully_and_start_at(data.log_start_offset)
                    .await
                {
                    Ok(()) => {
                        info!(topic = %key.0, partition = key.1, offset = data.log_start_offset, "follower restarted at the leader's log start offset")
                    }
                    Err(error) => {
                        warn!(topic = %key.0, partition = key.1, %error, "restarting the follower log failed");
                        self.back_off(key);
                    }
                }
                return;
            }
            Some(ResponseError::OffsetOutOfRange) => {
                // Past the leader's end: truncate by epoch again.
                self.set_phase(key, Phase::Truncating);
                self.back_off(key);
                return;
            }
            Some(error) => {
                // NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH and the like: the
                // next metadata version moves or drops the partition; retry meanwhile.
                debug!(topic = %key.0, partition = key.1, %error, "leader refused the partition fetch");
                self.back_off(key);
                return;
            }
        }
        if let Some(records) = data.records.filter(|records| !records.is_empty()) {
            match self
                .replica_manager
                .follower(hosted, target.leader_epoch)
                .append(records)
                .await
            {
                Ok(_) => {}
                Err(PartitionError::NotFollower { .. }) => {
                    self.back_off(key);
                    return;
                }
                Err(error) => {
                    warn!(topic = %key.0, partition = key.1, fetch_offset, %error, "appending replicated records failed");
                    self.set_phase(key, Phase::Truncating);
                    self.back_off(key);
                    return;
                }
            }
        }
        hosted.set_leader_high_watermark(data.high_watermark);
        if data.log_start_offset > hosted.log_start_offset()
            && let Err(error) = self
                .replica_manager
                .follower(hosted, target.leader_epoch)
                .follow_log_start_offset(data.log_start_offset)
                .await
        {
            warn!(topic = %key.0, partition = key.1, %error, "following the leader's log start offset failed");
        }
    }
}
