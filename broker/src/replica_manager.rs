//! The replica manager: which partitions this broker hosts, and the produce, fetch and
//! offset operations on them. It follows the controller's metadata (creating and
//! deleting logs) and runs the retention pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::RwLock;
use silt_controller::{AlterPartitionRequest, BrokerId, ClusterMetadata, TopicId};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::checkpoint::{read_high_watermark_checkpoint, write_high_watermark_checkpoint};
use crate::error::LogError;
use crate::isr::IsrUpdater;
use crate::log::{AppendInfo, PartitionLog, ReadInfo};
use crate::log_config::LogConfig;
use crate::partition::{IsrChangeRequest, Partition};
use crate::remote_log::{RemoteLog, RemoteLogError, RemotePartition};

/// Settings of the replica manager.
#[derive(Clone, Debug)]
pub struct ReplicaManagerConfig {
    /// This broker's id (`node.id`).
    pub broker_id: BrokerId,
    /// `log.dirs`: partitions are spread over these directories.
    pub log_dirs: Vec<PathBuf>,
    /// Broker-level defaults of topic configs, keyed by topic config name
    /// (`retention.ms`, not `log.retention.ms`).
    pub log_defaults: BTreeMap<String, String>,
    /// `replica.lag.time.max.ms`: an ISR follower not caught up with the leader for
    /// longer than this (ms) is removed from the ISR. Kafka's default is
    /// [`DEFAULT_REPLICA_LAG_TIME_MAX_MS`] (30000).
    pub replica_lag_time_max_ms: i64,
    /// `log.segment.preallocate.bytes`: bytes of disk blocks a fast-written partition
    /// allocates ahead of its appends in one step ([`crate::preallocate`]); 0 = off.
    pub preallocate_max_bytes: u64,
    /// `log.writeback.interval.bytes` and `log.writeback.drop.behind.bytes`: when
    /// appended data's writeback is started and when its pages leave the page cache
    /// ([`crate::writeback`]).
    pub writeback: crate::writeback::WritebackConfig,
}

pub use crate::replication::DEFAULT_REPLICA_LAG_TIME_MAX_MS;

/// Errors of partition operations; each maps to one Kafka error code.
#[derive(thiserror::Error, Debug)]
pub enum PartitionError {
    /// The topic or partition is not hosted here.
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
    /// This broker is not the leader of the partition.
    #[error("this broker is not the leader of {topic}-{partition}")]
    NotLeader {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`.
    #[error("in-sync replicas {isr} below min.insync.replicas {min_isr}")]
    NotEnoughReplicas {
        /// Current ISR size.
        isr: usize,
        /// Required minimum.
        min_isr: i32,
    },
    /// acks=all: the records were appended, but the ISR shrank below
    /// `min.insync.replicas` before they were committed.
    #[error("in-sync replicas {isr} fell below min.insync.replicas {min_isr} after the append")]
    NotEnoughReplicasAfterAppend {
        /// ISR size when the high watermark reached the records.
        isr: usize,
        /// Required minimum.
        min_isr: i32,
    },
    /// acks=all: the high watermark did not reach the records within the request's
    /// timeout.
    #[error("records not replicated to the in-sync replicas within {timeout_ms} ms")]
    RequestTimedOut {
        /// The request timeout (ms).
        timeout_ms: u64,
    },
    /// A replica fetch from a broker that is not a replica of the partition.
    #[error("broker {replica_id} is not a replica of {topic}-{partition}")]
    NotAssignedReplica {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The fetching broker.
        replica_id: BrokerId,
    },
    /// A follower operation (replicated append, truncation) on a partition this broker
    /// no longer follows at the given leader epoch.
    #[error("this broker no longer follows {topic}-{partition} at leader epoch {leader_epoch}")]
    NotFollower {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The leader epoch the operation was made for.
        leader_epoch: i32,
    },
    /// The request's leader epoch is older than the partition's.
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch {
        /// Epoch in the request.
        requested: i32,
        /// Current epoch.
        current: i32,
    },
    /// The request's leader epoch is newer than the partition's.
    #[error("leader epoch {requested} is newer than the current {current}")]
    UnknownLeaderEpoch {
        /// Epoch in the request.
        requested: i32,
        /// Current epoch.
        current: i32,
    },
    /// A leader elected at this epoch has a high watermark below the offset its epoch
    /// started at, so a client's ListOffsets could be answered with an offset older
    /// than what was committed; the client retries (Kafka's OFFSET_NOT_AVAILABLE).
    #[error(
        "the high watermark {high_watermark} of {topic}-{partition} is below its leader epoch's start offset {leader_epoch_start_offset}; retry"
    )]
    OffsetNotAvailable {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The leader's high watermark.
        high_watermark: i64,
        /// The log end offset when this leader's epoch began.
        leader_epoch_start_offset: i64,
    },
    /// The log refused the operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Reading tiered data failed.
    #[error(transparent)]
    Remote(#[from] RemoteLogError),
    /// A blocking log task failed to complete (panicked or was cancelled).
    #[error("storage task failed: {0}")]
    StorageTask(String),
    /// Applying metadata failed for more than one partition; the first failure.
    #[error("{count} partitions failed, the first: {first}")]
    Several {
        /// Partitions (or topics, for a bad topic config) that failed.
        count: usize,
        /// The first failure.
        first: Box<PartitionError>,
    },
}

impl PartitionError {
    /// The Kafka error to answer a request with.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            PartitionError::UnknownTopicOrPartition { .. } => {
                ResponseError::UnknownTopicOrPartition
            }
            PartitionError::NotLeader { .. }
            | PartitionError::NotAssignedReplica { .. }
            | PartitionError::NotFollower { .. } => ResponseError::NotLeaderOrFollower,
            PartitionError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            PartitionError::NotEnoughReplicasAfterAppend { .. } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            PartitionError::RequestTimedOut { .. } => ResponseError::RequestTimedOut,
            PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            PartitionError::OffsetNotAvailable { .. } => ResponseError::OffsetNotAvailable,
            PartitionError::Log(log_error) => log_error.kafka_error(),
            PartitionError::Remote(remote_error) => remote_error.kafka_error(),
            PartitionError::StorageTask(_) => ResponseError::KafkaStorageError,
            PartitionError::Several { first, .. } => first.kafka_error(),
        }
    }

    /// [`Self::kafka_error`] as the number on the wire.
    pub fn kafka_error_code(&self) -> i16 {
        self.kafka_error().code()
    }
}

/// Result of a partition read for Fetch.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    /// Whole record batches, possibly empty.
    pub records: Bytes,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
}

type PartitionKey = (Arc<str>, i32);

/// How far a leader read may go (Kafka's `FetchIsolation`): consumers read committed
/// records, a coordinator loading its state reads the whole log.
#[derive(Debug, Clone, Copy)]
enum ReadBound {
    HighWatermark,
    LogEnd,
}

/// Hosts the partitions assigned to this broker.
#[derive(Debug)]
pub struct ReplicaManager {
    config: ReplicaManagerConfig,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Serializes metadata application so two callers never open the same log twice.
    apply_lock: tokio::sync::Mutex<()>,
    /// One high-watermark checkpoint pass at a time, so files never go back in time.
    checkpoint_lock: tokio::sync::Mutex<()>,
    data_appended: Notify,
    orphans_removed: std::sync::atomic::AtomicBool,
    remote_log: std::sync::OnceLock<Arc<dyn RemoteLog>>,
    isr_updater: std::sync::OnceLock<Arc<dyn IsrUpdater>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a DeleteRecords request asks of one partition
/// ([`ReplicaManager::delete_records_target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRecordsTarget {
    /// The new log start offset, at most the high watermark.
    pub offset: i64,
    /// The partition's topic id.
    pub topic_id: TopicId,
    /// Whether the topic has `remote.storage.enable=true`.
    pub tiered: bool,
}

/// Runs a closure on the blocking pool against one partition's log.
pub(crate) async fn with_log<T, F>(partition: &Partition, operation: F) -> Result<T, PartitionError>
where
    T: Send + 'static,
    F: FnOnce(&mut PartitionLog) -> Result<T, LogError> + Send + 'static,
{
    let log = partition.log();
    let result = tokio::task::spawn_blocking(move || {
        let mut guard = log.lock();
        operation(&mut guard)
    })
    .await
    .map_err(|join_error| PartitionError::StorageTask(join_error.to_string()))?;
    Ok(result?)
}

/// An empty log below the end of its copied remote segments (`remote_end`, exclusive)
/// starts there: what lies below is read from the remote log. Any other log is left.
fn start_empty_log_at(log: &mut PartitionLog, remote_end: i64) -> Result<(), LogError> {
    if log.log_end_offset() == log.log_start_offset() && remote_end > log.log_end_offset() {
        log.truncate_fully_and_start_at(remote_end, now_ms())?;
    }
    Ok(())
}

/// [`with_log`] for operations that change the log's offsets: they are published before
/// the log lock is released ([`Partition::update_log`]).
pub(crate) async fn with_log_refreshed<T, F>(
    partition: &Arc<Partition>,
    operation: F,
) -> Result<T, PartitionError>
where
    T: Send + 'static,
    F: FnOnce(&mut PartitionLog) -> Result<T, LogError> + Send + 'static,
{
    let hosted = Arc::clone(partition);
    let result = tokio::task::spawn_blocking(move || hosted.update_log(operation))
        .await
        .map_err(|join_error| PartitionError::StorageTask(join_error.to_string()))?;
    Ok(result?)
}

impl ReplicaManager {
    /// Creates an empty replica manager; partitions appear with [`Self::apply_metadata`].
    pub fn new(config: ReplicaManagerConfig) -> Arc<Self> {
        Arc::new(ReplicaManager {
            config,
            partitions: RwLock::new(HashMap::new()),
            apply_lock: tokio::sync::Mutex::new(()),
            checkpoint_lock: tokio::sync::Mutex::new(()),
            data_appended: Notify::new(),
            orphans_removed: std::sync::atomic::AtomicBool::new(false),
            remote_log: std::sync::OnceLock::new(),
            isr_updater: std::sync::OnceLock::new(),
        })
    }

    /// Attaches the controller path for ISR changes (AlterPartition). Without it the
    /// ISR of led partitions never changes. Only the first call takes effect.
    pub fn set_isr_updater(&self, isr_updater: Arc<dyn IsrUpdater>) {
        let _ = self.isr_updater.set(isr_updater);
    }

    /// `replica.lag.time.max.ms` (ms).
    pub fn replica_lag_time_max_ms(&self) -> i64 {
        self.config.replica_lag_time_max_ms
    }

    /// How often [`Self::run_isr_maintenance_loop`] should run: half of
    /// `replica.lag.time.max.ms`, as Kafka schedules its ISR expiration, at least 100 ms.
    pub fn isr_check_interval(&self) -> Duration {
        Duration::from_millis(
            u64::try_from(self.config.replica_lag_time_max_ms / 2)
                .unwrap_or(0)
                .max(100),
        )
    }

    /// Attaches tiered storage: reads below a partition's local log start offset go to
    /// `remote_log`. Only the first call takes effect.
    pub fn set_remote_log(&self, remote_log: Arc<dyn RemoteLog>) {
        let _ = self.remote_log.set(remote_log);
    }

    fn remote_partition(hosted: &Partition) -> RemotePartition {
        RemotePartition {
            topic_id: hosted.topic_id,
            topic: hosted.topic.to_string(),
            partition: hosted.partition,
        }
    }

    /// The partition's log start offset as clients see it: the first remote offset when
    /// older data lives in tiered storage, else the local log start offset; never below
    /// the log start offset DeleteRecords set through the controller.
    pub fn log_start_offset(&self, hosted: &Partition) -> i64 {
        let local = hosted.log_start_offset();
        let Some(remote_log) = self.remote_log.get() else {
            return local;
        };
        let partition = Self::remote_partition(hosted);
        let start = remote_log
            .log_start_offset(&partition)
            .map_or(local, |remote_start| remote_start.min(local));
        start.max(remote_log.records_deleted_before(&partition))
    }

    /// This broker's id.
    pub fn broker_id(&self) -> BrokerId {
        self.config.broker_id
    }

    /// Broker-level topic config defaults (topic config names).
    pub fn log_defaults(&self) -> &BTreeMap<String, String> {
        &self.config.log_defaults
    }

    /// Woken whenever records are appended to any partition; Fetch long polls wait on it.
    pub fn data_appended(&self) -> &Notify {
        &self.data_appended
    }

    /// The hosted partition, if any.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let key: PartitionKey = (Arc::from(topic), partition);
        self.partitions.read().get(&key).cloned()
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    fn require_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        self.partition(topic, partition)
            .ok_or_else(|| PartitionError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    fn require_leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let hosted = self.require_partition(topic, partition)?;
        if hosted.leader() != self.config.broker_id {
            return Err(PartitionError::NotLeader {
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(hosted)
    }

    /// Checks a client-supplied leader epoch (-1 = not given) against the partition's.
    pub fn check_leader_epoch(
        partition: &Partition,
        requested_epoch: i32,
    ) -> Result<(), PartitionError> {
        let current = partition.leader_epoch();
        if requested_epoch < 0 || requested_epoch == current {
            return Ok(());
        }
        if requested_epoch < current {
            return Err(PartitionError::FencedLeaderEpoch {
                requested: requested_epoch,
                current,
            });
        }
        Err(PartitionError::UnknownLeaderEpoch {
            requested: requested_epoch,
            current,
        })
    }

    /// The partition a ListOffsets query from `replica_id` is answered from, checked as
    /// Kafka's `Partition.fetchOffsetForTimestamp` does: only the leader answers, except
    /// for the debugging replica id -2; `current_leader_epoch` must match (see
    /// [`ReplicaManager::check_leader_epoch`]); and a consumer (replica id -1) asking a
    /// leader whose high watermark is still below its epoch's start offset gets
    /// [`PartitionError::OffsetNotAvailable`].
    ///
    /// # Errors
    /// `UnknownTopicOrPartition`, `NotLeader`, `FencedLeaderEpoch`,
    /// `UnknownLeaderEpoch` or `OffsetNotAvailable`, as above.
    pub fn list_offsets_partition(
        &self,
        topic: &str,
        partition: i32,
        replica_id: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        const CONSUMER_REPLICA_ID: i32 = -1;
        const DEBUGGING_REPLICA_ID: i32 = -2;
        let hosted = if replica_id == DEBUGGING_REPLICA_ID {
            self.require_partition(topic, partition)?
        } else {
            self.require_leader(topic, partition)?
        };
        Self::check_leader_epoch(&hosted, current_leader_epoch)?;
        if replica_id == CONSUMER_REPLICA_ID
            && let Some(leader_epoch_start_offset) = hosted.leader_epoch_start_offset()
            && leader_epoch_start_offset > hosted.high_watermark()
        {
            return Err(PartitionError::OffsetNotAvailable {
                topic: topic.to_string(),
                partition,
                high_watermark: hosted.high_watermark(),
                leader_epoch_start_offset,
            });
        }
        Ok(hosted)
    }

    /// The log dir a new partition goes to: the one with the fewest hosted partitions,
    /// as Kafka's LogManager places new logs. No I/O: an existing directory of the
    /// partition wins over it (see [`existing_partition_dir`]).
    fn least_loaded_log_dir(&self) -> PathBuf {
        let partitions = self.partitions.read();
        self.config
            .log_dirs
            .iter()
            .min_by_key(|log_dir| {
                partitions
                    .values()
                    .filter(|hosted| hosted.dir.starts_with(log_dir.as_path()))
                    .count()
            })
            .cloned()
            .unwrap_or_else(|| PathBuf::from("silt-data"))
    }

    /// Brings hosted partitions in line with the controller's metadata: opens (and
    /// recovers) logs for partitions assigned to this broker, applies config and leader
    /// changes, and deletes logs of topics that no longer exist. Idempotent.
    ///
    /// One partition's failure (a log that cannot be opened, a full disk, a bad topic
    /// config) does not hold up the others: every other partition is still applied, each
    /// failure is logged with its partition, and the first is returned so the caller
    /// can retry the whole, already idempotent, application later.
    pub async fn apply_metadata(&self, metadata: &ClusterMetadata) -> Result<(), PartitionError> {
        let _serialized = self.apply_lock.lock().await;
        let mut wanted: HashSet<PartitionKey> = HashSet::new();
        let mut first_error = None;
        let mut failures = 0_usize;
        for topic in metadata.topics.values() {
            let topic_name: Arc<str> = Arc::from(topic.name.as_str());
            let config = match LogConfig::from_configs(&self.config.log_defaults, &topic.configs) {
                Ok(config) => config,
                Err(error) => {
                    // Keep what is hosted: a bad config must not delete the topic's logs.
                    for assignment in &topic.partitions {
                        if assignment.replicas.contains(&self.config.broker_id) {
                            wanted.insert((Arc::clone(&topic_name), assignment.partition));
                        }
                    }
                    failures += 1;
                    debug!(topic = %topic.name, %error, "topic config not applied");
                    first_error.get_or_insert(PartitionError::from(error));
                    continue;
                }
            };
            for assignment in &topic.partitions {
                if !assignment.replicas.contains(&self.config.broker_id) {
                    continue;
                }
                let key: PartitionKey = (Arc::clone(&topic_name), assignment.partition);
                wanted.insert(key.clone());
                let remote_log_end_offset =
                    metadata.remote_log_end_offset(topic.topic_id, assignment.partition);
                if let Err(error) = self
                    .apply_partition(
                        key,
                        topic.topic_id,
                        &config,
                        assignment,
                        remote_log_end_offset,
                    )
                    .await
                {
                    failures += 1;
                    debug!(topic = %topic.name, partition = assignment.partition, %error, "partition metadata not applied");
                    first_error.get_or_insert(error);
                }
            }
        }
        let gone: Vec<(PartitionKey, Arc<Partition>)> = self
            .partitions
            .read()
            .iter()
            .filter(|(key, _)| !wanted.contains(*key))
            .map(|(key, hosted)| (key.clone(), Arc::clone(hosted)))
            .collect();
        for (key, hosted) in gone {
            self.remove_partition(&key, &hosted).await;
        }
        if first_error.is_none()
            && !self
                .orphans_removed
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.remove_orphan_dirs(&wanted).await;
        }
        match first_error {
            None => Ok(()),
            Some(error) if failures == 1 => Err(error),
            Some(error) => Err(PartitionError::Several {
                count: failures,
                first: Box::new(error),
            }),
        }
    }

    /// Applies one assigned partition: opens it if new (or recreated under a new topic
    /// id), else applies its leader, ISR and config changes. An empty log below
    /// `remote_log_end_offset` (the end of its copied remote segments, e.g. after a
    /// restore) starts there: what lies below is read from the remote log.
    async fn apply_partition(
        &self,
        key: PartitionKey,
        topic_id: TopicId,
        config: &LogConfig,
        assignment: &silt_controller::PartitionAssignment,
        remote_log_end_offset: Option<i64>,
    ) -> Result<(), PartitionError> {
        let existing = self.partitions.read().get(&key).cloned();
        match existing {
            Some(hosted) if hosted.topic_id == topic_id => {
                self.apply_assignment(&hosted, assignment).await?;
                hosted.set_min_insync_replicas(config.min_insync_replicas);
                if let Some(remote_end) = remote_log_end_offset
                    && hosted.log_end_offset() == hosted.log_start_offset()
                    && remote_end > hosted.log_end_offset()
                {
                    // Its remote segments moved past an empty log (a read-only replica
                    // following a new restore point).
                    with_log_refreshed(&hosted, move |log| start_empty_log_at(log, remote_end))
                        .await?;
                }
                let new_config = config.clone();
                with_log(&hosted, move |log| {
                    if log.config() != &new_config {
                        log.set_config(new_config);
                    }
                    Ok(())
                })
                .await
            }
            stale => {
                if let Some(stale) = stale {
                    self.remove_partition(&key, &stale).await;
                }
                self.open_partition(
                    key,
                    topic_id,
                    config.clone(),
                    assignment,
                    remote_log_end_offset,
                )
                .await
            }
        }
    }

    async fn open_partition(
        &self,
        key: PartitionKey,
        topic_id: TopicId,
        config: LogConfig,
        assignment: &silt_controller::PartitionAssignment,
        remote_log_end_offset: Option<i64>,
    ) -> Result<(), PartitionError> {
        let dir_name = format!("{}-{}", key.0, key.1);
        let log_dirs = self.config.log_dirs.clone();
        let least_loaded = self.least_loaded_log_dir();
        let min_insync_replicas = config.min_insync_replicas;
        let preallocate_max_bytes = self.config.preallocate_max_bytes;
        let writeback = self.config.writeback;
        let (dir, log, checkpointed_high_watermark) = tokio::task::spawn_blocking(move || {
            let dir = existing_partition_dir(&log_dirs, &dir_name)
                .unwrap_or_else(|| least_loaded.join(&dir_name));
            let mut log = PartitionLog::open(&dir, config, now_ms())?;
            // A new replica, a restore, or one killed before it got here.
            if let Some(remote_end) = remote_log_end_offset {
                start_empty_log_at(&mut log, remote_end)?;
            }
            log.set_preallocation(preallocate_max_bytes);
            log.set_writeback(writeback);
            let checkpoint = read_high_watermark_checkpoint(&dir);
            Ok::<_, LogError>((dir, log, checkpoint))
        })
        .await
        .map_err(|join_error| PartitionError::StorageTask(join_error.to_string()))??;
        // With other replicas, only what the ISR had committed is committed; the
        // leader moves the high watermark up as followers fetch.
        let initial_high_watermark = if assignment.replicas.len() <= 1 {
            log.log_end_offset()
        } else {
            checkpointed_high_watermark.unwrap_or(log.log_start_offset())
        };
        info!(topic = %key.0, partition = key.1, dir = %dir.display(), log_end_offset = log.log_end_offset(), high_watermark = initial_high_watermark, "opened partition log");
        let hosted = Arc::new(Partition::new(
            Arc::clone(&key.0),
            key.1,
            topic_id,
            self.config.broker_id,
            log,
            initial_high_watermark,
        ));
        hosted.set_min_insync_replicas(min_insync_replicas);
        if let Some(checkpointed) = checkpointed_high_watermark {
            hosted.mark_high_watermark_checkpointed(checkpointed);
        }
        if let Some(remote_end) = remote_log_end_offset {
            self.restore_producer_state(&hosted, remote_end).await;
        }
        self.apply_assignment(&hosted, assignment).await?;
        self.partitions.write().insert(key, hosted);
        Ok(())
    }

    /// An empty log that starts at the end of its remote segments (`remote_end`) takes
    /// the idempotent producers' state from the producer snapshot copied with the last
    /// remote segment, as Kafka rebuilds a replica's auxiliary state from the remote log
    /// (KIP-405). Without it producers still go on, but a retry of a batch written
    /// before `remote_end` would be appended again. A failure is logged, not fatal.
    async fn restore_producer_state(&self, hosted: &Arc<Partition>, remote_end: i64) {
        let Some(remote_log) = self.remote_log.get() else {
            return;
        };
        if hosted.log_start_offset() != remote_end || hosted.log_end_offset() != remote_end {
            return;
        }
        let partition = Self::remote_partition(hosted);
        let snapshot = match remote_log.producer_snapshot(&partition, remote_end).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(error) => {
                warn!(topic = %hosted.topic, partition = hosted.partition, %error, "could not read the remote producer snapshot: retries of batches below the remote log end are not deduplicated");
                return;
            }
        };
        let source = format!(
            "the remote producer snapshot of {}-{} at offset {remote_end}",
            hosted.topic, hosted.partition
        );
        let installed = with_log(hosted, move |log| {
            log.install_producer_snapshot(remote_end, &snapshot, &source)
        })
        .await;
        if let Err(error) = installed {
            warn!(topic = %hosted.topic, partition = hosted.partition, %error, "could not install the remote producer snapshot: retries of batches below the remote log end are not deduplicated");
        }
    }

    /// Applies an assignment to a hosted partition; a new leader records its epoch in
    /// the log's epoch cache at its log end offset.
    async fn apply_assignment(
        &self,
        hosted: &Arc<Partition>,
        assignment: &silt_controller::PartitionAssignment,
    ) -> Result<(), PartitionError> {
        let change = hosted.apply_assignment(assignment, now_ms());
        if change.leadership_changed {
            info!(topic = %hosted.topic, partition = hosted.partition, leader = assignment.leader, leader_epoch = assignment.leader_epoch, isr = ?assignment.isr, "partition leadership changed");
        }
        if change.became_leader {
            let leader_epoch = assignment.leader_epoch;
            with_log(hosted, move |log| {
                let log_end_offset = log.log_end_offset();
                log.assign_epoch_start_offset(leader_epoch, log_end_offset)
            })
            .await?;
        }
        Ok(())
    }

    async fn remove_partition(&self, key: &PartitionKey, hosted: &Arc<Partition>) {
        self.partitions.write().remove(key);
        hosted.mark_removed();
        let log = hosted.log();
        let outcome = tokio::task::spawn_blocking(move || {
            // Holding the lock keeps an in-flight append from recreating files meanwhile.
            let mut guard = log.lock();
            guard.stop_background_writes();
            std::fs::remove_dir_all(guard.dir())
        })
        .await;
        match outcome {
            Ok(Ok(())) => info!(topic = %key.0, partition = key.1, "deleted partition log"),
            Ok(Err(io_error)) => {
                warn!(topic = %key.0, partition = key.1, error = %io_error, "could not delete partition log")
            }
            Err(join_error) => {
                warn!(topic = %key.0, partition = key.1, error = %join_error, "partition delete task failed")
            }
        }
    }

    /// Deletes `<topic>-<partition>` directories left behind by topics deleted while
    /// this broker was down.
    async fn remove_orphan_dirs(&self, wanted: &HashSet<PartitionKey>) {
        let wanted_names: HashSet<String> = wanted
            .iter()
            .map(|(topic, partition)| format!("{topic}-{partition}"))
            .collect();
        let log_dirs = self.config.log_dirs.clone();
        let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<PathBuf>> {
            let mut removed = Vec::new();
            for log_dir in log_dirs {
                let Ok(entries) = std::fs::read_dir(&log_dir) else {
                    continue;
                };
                for entry in entries {
                    let path = entry?.path();
                    if !path.is_dir() || !looks_like_partition_dir(&path) {
                        continue;
                    }
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if !wanted_names.contains(&name) {
                        std::fs::remove_dir_all(&path)?;
                        removed.push(path);
                    }
                }
            }
            Ok(removed)
        })
        .await;
        match outcome {
            Ok(Ok(removed)) => {
                for path in removed {
                    info!(dir = %path.display(), "removed log of a deleted topic");
                }
            }
            Ok(Err(io_error)) => {
                warn!(error = %io_error, "could not scan log dirs for deleted topics")
            }
            Err(join_error) => warn!(error = %join_error, "log dir scan task failed"),
        }
    }

    /// Appends producer batches as the leader (Produce). `required_acks` is Kafka's acks:
    /// 0, 1 or -1 (all); with -1 the ISR must hold at least `min.insync.replicas`.
    ///
    /// # Errors
    /// Unknown partition, not leader, not enough replicas, or the log's validation and
    /// idempotence errors; nothing is appended on error.
    pub async fn append_records(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        required_acks: i16,
    ) -> Result<AppendInfo, PartitionError> {
        let mut results = self
            .append_to_partitions(vec![(topic.to_string(), partition, records)], required_acks)
            .await;
        results.pop().unwrap_or_else(|| {
            Err(PartitionError::StorageTask(
                "append produced no result".to_string(),
            ))
        })
    }

    /// Appends to several partitions (one Produce request) with one trip to the blocking
    /// pool; results come back in input order, each as [`Self::append_records`] would
    /// answer it.
    pub async fn append_to_partitions(
        &self,
        appends: Vec<(String, i32, Bytes)>,
        required_acks: i16,
    ) -> Vec<Result<AppendInfo, PartitionError>> {
        let mut results: Vec<Option<Result<AppendInfo, PartitionError>>> =
            Vec::with_capacity(appends.len());
        let mut accepted: Vec<(usize, Arc<Partition>, Bytes)> = Vec::with_capacity(appends.len());
        for (index, (topic, partition, records)) in appends.into_iter().enumerate() {
            match self.require_leader(&topic, partition) {
                Ok(hosted) => {
                    accepted.push((index, hosted, records));
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let min_insync_check = required_acks == -1;
        let appended = run_blocking_here(move || {
            accepted
                .into_iter()
                .map(|(index, hosted, records)| {
                    (index, append_locked(&hosted, &records, min_insync_check))
                })
                .collect::<Vec<_>>()
        })
        .await;
        match appended {
            Ok(outcomes) => {
                let mut appended_records = 0u64;
                for (index, outcome) in outcomes {
                    if let Ok(info) = &outcome
                        && !info.duplicate
                    {
                        appended_records += u64::try_from(info.records_count).unwrap_or(0);
                    }
                    results[index] = Some(outcome);
                }
                metrics::counter!("silt_appended_records_total").increment(appended_records);
                self.data_appended.notify_waiters();
            }
            Err(join_error) => {
                let message = join_error.to_string();
                for slot in results.iter_mut().filter(|slot| slot.is_none()) {
                    *slot = Some(Err(PartitionError::StorageTask(message.clone())));
                }
            }
        }
        results
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    Err(PartitionError::StorageTask(
                        "append produced no result".to_string(),
                    ))
                })
            })
            .collect()
    }

    /// Reads committed batches for a consumer, from `fetch.fetch_offset` up to the high
    /// watermark, within `fetch`'s byte limits.
    ///
    /// # Errors
    /// Unknown partition, not leader, fenced/unknown leader epoch, or offset out of range.
    pub async fn read_records(
        &self,
        topic: &str,
        partition: i32,
        fetch: FetchPartition,
    ) -> Result<PartitionRead, PartitionError> {
        self.read_as_leader(topic, partition, fetch, ReadBound::HighWatermark)
            .await
    }

    /// Reads batches of a partition this broker leads up to its log end offset, not the
    /// high watermark (Kafka's `FetchIsolation.LOG_END`): for a coordinator loading its
    /// state on becoming leader, whose log holds every record the previous leader
    /// acknowledged even while its own high watermark still lags (it catches up with the
    /// followers' next fetches). At most `max_bytes`, the first batch always.
    ///
    /// # Errors
    /// Unknown partition, not leader, or offset out of range.
    pub async fn read_records_to_log_end(
        &self,
        topic: &str,
        partition: i32,
        fetch_offset: i64,
        max_bytes: usize,
    ) -> Result<PartitionRead, PartitionError> {
        let fetch = FetchPartition {
            fetch_offset,
            current_leader_epoch: -1,
            max_bytes,
            min_one_batch: true,
        };
        self.read_as_leader(topic, partition, fetch, ReadBound::LogEnd)
            .await
    }

    async fn read_as_leader(
        &self,
        topic: &str,
        partition: i32,
        fetch: FetchPartition,
        bound: ReadBound,
    ) -> Result<PartitionRead, PartitionError> {
        let FetchPartition {
            fetch_offset,
            current_leader_epoch,
            max_bytes,
            min_one_batch,
        } = fetch;
        let hosted = self.require_leader(topic, partition)?;
        Self::check_leader_epoch(&hosted, current_leader_epoch)?;
        let high_watermark = hosted.high_watermark();
        let upper_bound = match bound {
            ReadBound::LogEnd => hosted.log_end_offset(),
            ReadBound::HighWatermark => high_watermark,
        };
        let local_log_start_offset = hosted.log_start_offset();
        let log_start_offset = self.log_start_offset(&hosted);
        if fetch_offset < log_start_offset && fetch_offset >= local_log_start_offset {
            // Below a log start offset DeleteRecords moved past the local one.
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset,
                log_end_offset: upper_bound,
            }));
        }
        if fetch_offset == upper_bound && fetch_offset >= local_log_start_offset {
            return Ok(PartitionRead {
                records: Bytes::new(),
                high_watermark,
                log_start_offset,
            });
        }
        if fetch_offset < local_log_start_offset
            && fetch_offset >= log_start_offset
            && let Some(remote_log) = self.remote_log.get()
        {
            let remote_partition = Self::remote_partition(&hosted);
            let read = remote_log
                .read(&remote_partition, fetch_offset, max_bytes.max(1))
                .await?;
            // The remote reader always returns its first batch; only the first partition
            // of a response may exceed the byte budget (KIP-74).
            if !min_one_batch && read.records.len() > max_bytes {
                return Ok(PartitionRead {
                    records: Bytes::new(),
                    high_watermark,
                    log_start_offset,
                });
            }
            metrics::counter!("silt_remote_fetched_bytes_total")
                .increment(read.records.len() as u64);
            return Ok(PartitionRead {
                records: read.records,
                high_watermark,
                log_start_offset,
            });
        }
        let read: ReadInfo = with_log(&hosted, move |log| {
            log.read(fetch_offset, max_bytes, upper_bound, min_one_batch)
        })
        .await?;
        Ok(PartitionRead {
            records: read.records,
            high_watermark,
            log_start_offset: read.log_start_offset.min(log_start_offset),
        })
    }

    /// ListOffsets by timestamp: the first offset with a timestamp >= `timestamp_ms`
    /// and that timestamp, or `None` past the last record.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, PartitionError> {
        let hosted = self.require_leader(topic, partition)?;
        let high_watermark = hosted.high_watermark();
        if let Some(remote_log) = self.remote_log.get() {
            let remote_partition = Self::remote_partition(&hosted);
            let remote_found = remote_log
                .offset_for_timestamp(&remote_partition, timestamp_ms)
                .await?;
            if let Some((offset, timestamp)) = remote_found {
                // Never an offset DeleteRecords removed.
                return Ok(Some((
                    offset.max(self.log_start_offset(&hosted)),
                    timestamp,
                )));
            }
        }
        let found = with_log(&hosted, move |log| log.offset_for_timestamp(timestamp_ms)).await?;
        Ok(found.filter(|(offset, _)| *offset < high_watermark))
    }

    /// ListOffsets MAX_TIMESTAMP: the offset and timestamp of the record with the
    /// largest timestamp.
    pub async fn max_timestamp_offset(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(i64, i64)>, PartitionError> {
        let hosted = self.require_leader(topic, partition)?;
        with_log(&hosted, |log| Ok(log.max_timestamp_offset())).await
    }

    /// DeleteRecords, first step: the log start offset `offset` asks for (-1 = the high
    /// watermark) on a partition this broker leads, and whether the partition is tiered.
    /// A tiered partition's new start must be committed through the controller before
    /// [`Self::delete_records`], so that it binds the remote log and every replica.
    ///
    /// # Errors
    /// Unknown partition, not leader, or `OffsetOutOfRange` when `offset` is negative
    /// (other than -1) or past the high watermark.
    pub async fn delete_records_target(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<DeleteRecordsTarget, PartitionError> {
        let hosted = self.require_leader(topic, partition)?;
        let high_watermark = hosted.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target > high_watermark || target < 0 {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset: target,
                log_start_offset: self.log_start_offset(&hosted),
                log_end_offset: high_watermark,
            }));
        }
        let tiered = with_log(&hosted, |log| Ok(log.config().remote_storage_enable)).await?;
        Ok(DeleteRecordsTarget {
            offset: target,
            topic_id: hosted.topic_id,
            tiered,
        })
    }

    /// DeleteRecords: advances the local log start offset to `offset` (from
    /// [`Self::delete_records_target`]), deleting the local segments wholly below it;
    /// returns the partition's log start offset afterwards (the "low watermark").
    ///
    /// # Errors
    /// Unknown partition, not leader, or `OffsetOutOfRange` when `offset` is past the
    /// log end offset.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, PartitionError> {
        let hosted = self.require_leader(topic, partition)?;
        let _local =
            with_log_refreshed(&hosted, move |log| log.delete_records_before(offset)).await?;
        Ok(self.log_start_offset(&hosted))
    }

    /// OffsetForLeaderEpoch (KIP-101, KIP-279), answered by the leader from its
    /// leader-epoch cache: the largest epoch `<= leader_epoch` and its end offset (the
    /// start offset of the next epoch, or the log end offset for the latest epoch,
    /// exclusive). `(-1, -1)` (UNDEFINED) when the log has no such epoch.
    ///
    /// # Errors
    /// Unknown partition, not leader, or `current_leader_epoch` (-1 = not checked)
    /// fenced/unknown.
    pub async fn end_offset_for_epoch(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<(i32, i64), PartitionError> {
        let hosted = self.require_leader(topic, partition)?;
        Self::check_leader_epoch(&hosted, current_leader_epoch)?;
        let found = with_log(&hosted, move |log| {
            Ok(log.end_offset_for_epoch(leader_epoch))
        })
        .await?;
        Ok(found.unwrap_or((-1, -1)))
    }

    /// Fetch from a follower (`replica_id >= 0`): reads whole batches from
    /// `fetch_offset` up to the log end offset (not the high watermark), within `fetch`'s
    /// byte limits. Records
    /// `fetch_offset` as the follower's log end offset, which may advance the high
    /// watermark and start an ISR expansion. The answer carries the high watermark and
    /// the local log start offset.
    ///
    /// # Errors
    /// Unknown partition, not leader, fenced/unknown `current_leader_epoch` (-1 = not
    /// checked), `replica_id` not a replica, or `OffsetOutOfRange` when `fetch_offset`
    /// is below the local log start offset or above the log end offset (the follower
    /// then restarts at the local log start offset).
    pub async fn read_records_for_replica(
        &self,
        topic: &str,
        partition: i32,
        replica_id: BrokerId,
        fetch: FetchPartition,
    ) -> Result<PartitionRead, PartitionError> {
        let hosted = self.require_leader(topic, partition)?;
        Self::check_leader_epoch(&hosted, fetch.current_leader_epoch)?;
        let fetch_offset = fetch.fetch_offset;
        let log_start_offset = hosted.log_start_offset();
        let log_end_offset = hosted.log_end_offset();
        if fetch_offset < log_start_offset || fetch_offset > log_end_offset {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset,
                log_end_offset,
            }));
        }
        let (assigned, expansion) =
            hosted.update_follower_fetch_state(replica_id, fetch_offset, now_ms());
        if !assigned {
            return Err(PartitionError::NotAssignedReplica {
                topic: topic.to_string(),
                partition,
                replica_id,
            });
        }
        if let Some(request) = expansion {
            self.submit_isr_change(&hosted, request);
        }
        if fetch_offset == log_end_offset {
            return Ok(PartitionRead {
                records: Bytes::new(),
                high_watermark: hosted.high_watermark(),
                log_start_offset,
            });
        }
        let read: ReadInfo = with_log(&hosted, move |log| {
            log.read(fetch_offset, fetch.max_bytes, i64::MAX, fetch.min_one_batch)
        })
        .await?;
        Ok(PartitionRead {
            records: read.records,
            high_watermark: hosted.high_watermark(),
            log_start_offset: read.log_start_offset,
        })
    }

    /// acks=all: waits until the high watermark of a partition this broker leads is
    /// `>= required_offset` (the last appended offset + 1) in the leader epoch
    /// `leader_epoch` of the append ([`AppendInfo::leader_epoch`]), woken by
    /// high-watermark, leader and ISR changes, for at most `timeout`.
    ///
    /// The epoch matters: a leader that lost leadership and won it back while waiting
    /// has truncated its log meanwhile, and the offsets it appended at may now hold
    /// other records (Kafka's DelayedProduce answers NOT_LEADER_OR_FOLLOWER then too).
    ///
    /// # Errors
    /// `NotLeader` when leadership is lost, or moved to another epoch, (or the partition
    /// removed) while waiting, `RequestTimedOut` after `timeout`,
    /// `NotEnoughReplicasAfterAppend` when the high watermark got there with the ISR
    /// below `min.insync.replicas`.
    pub async fn wait_for_high_watermark(
        &self,
        topic: &str,
        partition: i32,
        required_offset: i64,
        leader_epoch: i32,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        let hosted = self.require_partition(topic, partition)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = hosted.state_changed().notified();
            tokio::pin!(changed);
            let _ = changed.as_mut().enable();
            if !hosted.is_leader() || hosted.leader_epoch() != leader_epoch {
                return Err(PartitionError::NotLeader {
                    topic: topic.to_string(),
                    partition,
                });
            }
            if hosted.high_watermark() >= required_offset {
                let isr = hosted.isr().len();
                let min_isr = hosted.min_insync_replicas();
                if (isr as i64) < i64::from(min_isr) {
                    return Err(PartitionError::NotEnoughReplicasAfterAppend { isr, min_isr });
                }
                return Ok(());
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                    return Err(PartitionError::RequestTimedOut { timeout_ms });
                }
            }
        }
    }

    /// Sends an ISR change to the controller in the background and applies the answer;
    /// without an [`IsrUpdater`] the change is dropped (retried after a backoff).
    fn submit_isr_change(&self, hosted: &Arc<Partition>, request: IsrChangeRequest) {
        let Some(updater) = self.isr_updater.get().cloned() else {
            debug!(topic = %hosted.topic, partition = hosted.partition, new_isr = ?request.new_isr, "no isr updater attached, isr change dropped");
            hosted.complete_isr_change(None, now_ms());
            return;
        };
        let hosted = Arc::clone(hosted);
        let hosted_broker_id = self.config.broker_id;
        let _task = tokio::spawn(async move {
            let outcome = updater
                .alter_isr(AlterPartitionRequest {
                    broker_id: hosted_broker_id,
                    topic_id: request.topic_id,
                    partition: request.partition,
                    leader_epoch: request.leader_epoch,
                    partition_epoch: request.partition_epoch,
                    new_isr: request.new_isr.clone(),
                })
                .await;
            match outcome {
                Ok(assignment) => {
                    if request.expand {
                        metrics::counter!("silt_isr_expands_total").increment(1);
                    } else {
                        metrics::counter!("silt_isr_shrinks_total").increment(1);
                    }
                    info!(topic = %hosted.topic, partition = hosted.partition, isr = ?assignment.isr, partition_epoch = assignment.partition_epoch, expand = request.expand, "isr changed");
                    hosted.complete_isr_change(Some(&assignment), now_ms());
                }
                Err(error) => {
                    warn!(topic = %hosted.topic, partition = hosted.partition, new_isr = ?request.new_isr, %error, "isr change failed");
                    hosted.complete_isr_change(None, now_ms());
                }
            }
        });
    }

    /// One ISR maintenance pass over the partitions this broker leads: asks the
    /// controller to remove followers not caught up for `replica.lag.time.max.ms` (and
    /// to add caught-up ones an earlier request failed to add), refreshes the
    /// `silt_under_replicated_partitions` and `silt_replica_lag_messages` gauges, and
    /// checkpoints changed high watermarks. Returns the number of ISR changes started.
    pub async fn run_isr_maintenance_pass(&self) -> usize {
        let now = now_ms();
        let mut changes = 0;
        let mut under_replicated = 0u64;
        for hosted in self.all_partitions() {
            if !hosted.is_leader() {
                continue;
            }
            if hosted.is_under_replicated() {
                under_replicated += 1;
            }
            let leader_log_end_offset = hosted.log_end_offset();
            for (replica_id, follower) in hosted.follower_states() {
                let lag = follower
                    .lag(leader_log_end_offset)
                    .unwrap_or(leader_log_end_offset - hosted.log_start_offset());
                metrics::gauge!(
                    "silt_replica_lag_messages",
                    "topic" => hosted.topic.to_string(),
                    "partition" => hosted.partition.to_string(),
                    "replica" => replica_id.to_string()
                )
                .set(lag as f64);
            }
            if let Some(request) = hosted.next_isr_change(now, self.config.replica_lag_time_max_ms)
            {
                if !request.expand {
                    info!(topic = %hosted.topic, partition = hosted.partition, isr = ?hosted.isr(), new_isr = ?request.new_isr, "shrinking isr of lagging followers");
                }
                self.submit_isr_change(&hosted, request);
                changes += 1;
            }
        }
        metrics::gauge!("silt_under_replicated_partitions").set(under_replicated as f64);
        self.checkpoint_high_watermarks().await;
        changes
    }

    /// Runs [`Self::run_isr_maintenance_pass`] every `interval` (see
    /// [`Self::isr_check_interval`]) until the task is dropped.
    pub async fn run_isr_maintenance_loop(self: Arc<Self>, interval: Duration) {
        crate::background::every(interval, || self.run_isr_maintenance_pass()).await;
    }

    /// Writes the high-watermark checkpoint of every partition whose high watermark
    /// changed since its last checkpoint.
    ///
    /// The files are written in one blocking task without taking any log lock, so their
    /// fsyncs never hold up an append.
    pub async fn checkpoint_high_watermarks(&self) {
        let _one_pass = self.checkpoint_lock.lock().await;
        let due: Vec<(Arc<Partition>, i64)> = self
            .all_partitions()
            .into_iter()
            .filter_map(|hosted| {
                hosted
                    .high_watermark_to_checkpoint()
                    .map(|high_watermark| (hosted, high_watermark))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let written = tokio::task::spawn_blocking(move || {
            for (hosted, high_watermark) in due {
                match write_high_watermark_checkpoint(&hosted.dir, high_watermark) {
                    Ok(()) => hosted.mark_high_watermark_checkpointed(high_watermark),
                    Err(error) => warn!(topic = %hosted.topic, partition = hosted.partition, %error, "writing the high watermark checkpoint failed"),
                }
            }
        })
        .await;
        if let Err(error) = written {
            warn!(%error, "high watermark checkpoint task failed");
        }
    }

    /// The follower side of `hosted` as followed at `leader_epoch`, for the replica
    /// fetcher's appends and truncations.
    pub fn follower<'a>(&self, hosted: &'a Arc<Partition>, leader_epoch: i32) -> FollowerLog<'a> {
        FollowerLog {
            hosted,
            leader_epoch,
        }
    }

    /// The local leader-epoch view a follower truncates with: the latest epoch in the
    /// log (`None` when it has none) and, for `epoch`, the largest local epoch `<=` it
    /// with its end offset (exclusive).
    ///
    /// # Errors
    /// A failed storage task.
    pub async fn local_epoch_view(
        &self,
        hosted: &Arc<Partition>,
        epoch: Option<i32>,
    ) -> Result<(Option<i32>, Option<(i32, i64)>), PartitionError> {
        with_log(hosted, move |log| {
            Ok((
                log.latest_epoch(),
                epoch.and_then(|epoch| log.end_offset_for_epoch(epoch)),
            ))
        })
        .await
    }

    /// Closes every log cleanly (flush, write indexes and snapshots, mark clean shutdown).
    pub async fn shutdown(&self) {
        let hosted: Vec<Arc<Partition>> = self
            .partitions
            .write()
            .drain()
            .map(|(_, hosted)| hosted)
            .collect();
        for partition in hosted {
            let log = partition.log();
            let dir = partition.dir.clone();
            let high_watermark = partition.high_watermark();
            partition.mark_removed();
            drop(partition);
            let outcome = tokio::task::spawn_blocking(move || {
                if let Err(io_error) = write_high_watermark_checkpoint(&dir, high_watermark) {
                    warn!(dir = %dir.display(), error = %io_error, "writing the high watermark checkpoint failed");
                }
                match Arc::try_unwrap(log) {
                    Ok(mutex) => mutex.into_inner().close(),
                    Err(shared) => shared.lock().flush(),
                }
            })
            .await;
            if let Ok(Err(error)) = outcome {
                warn!(%error, "closing a partition log failed");
            }
        }
    }
}

/// Runs `operation`, a short blocking storage call a request waits for, on this thread
/// with [`tokio::task::block_in_place`]: the runtime hands this worker's queue to
/// another thread first (a pool thread becomes a worker), so other tasks do not wait
/// behind it, while the request itself runs on at once and goes on on the same thread
/// afterwards. With `spawn_blocking` the request waited for a pool thread to be woken
/// and then for its task to be woken again; on a loaded machine each of those waited
/// up to 30 ms for a CPU. A current-thread runtime (some tests) cannot hand its queue
/// off, so there it goes to the blocking pool.
///
/// # Errors
/// Only on the blocking pool: the operation panicked or the runtime shut down. On this
/// thread a panic unwinds through the calling task instead.
async fn run_blocking_here<T, F>(operation: F) -> Result<T, tokio::task::JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        Ok(tokio::task::block_in_place(operation))
    } else {
        tokio::task::spawn_blocking(operation).await
    }
}

/// One leader append under the partition's log lock; blocking: call through [`run_blocking_here`] or the blocking pool.
/// Returns the append result and the log end offset after it.
fn append_locked(
    hosted: &Partition,
    records: &[u8],
    min_insync_check: bool,
) -> Result<AppendInfo, PartitionError> {
    let leader_epoch = hosted.leader_epoch();
    let isr_size = hosted.isr().len();
    let started = Instant::now();
    let mut locked_at = started;
    let result = hosted.update_log(|log| {
        locked_at = Instant::now();
        let min_isr = log.config().min_insync_replicas;
        if min_insync_check && (isr_size as i64) < i64::from(min_isr) {
            return Err(PartitionError::NotEnoughReplicas {
                isr: isr_size,
                min_isr,
            });
        }
        let appended = log.append_as_leader(records, leader_epoch, now_ms())?;
        Ok(AppendInfo {
            log_start_offset: log.log_start_offset(),
            leader_epoch,
            ..appended
        })
    });
    if let Err(PartitionError::Log(error)) = &result
        && error.kafka_error() == ResponseError::KafkaStorageError
    {
        metrics::counter!("silt_log_append_storage_errors_total").increment(1);
        if STORAGE_ERROR_LOG.due() {
            error!(topic = %hosted.topic, partition = hosted.partition, %error, "append failed in the log directory: producers get KAFKA_STORAGE_ERROR and retry until it has room again (free disk space or fix the disk); the failed batches are not appended");
        }
    }
    let took = started.elapsed();
    if took >= SLOW_APPEND {
        let lock_wait_us = (locked_at - started).as_micros() as u64;
        let took_us = took.as_micros() as u64;
        metrics::counter!("silt_log_slow_appends_total").increment(1);
        warn!(topic = %hosted.topic, partition = hosted.partition, bytes = records.len(), took_us, lock_wait_us, "slow append: producers of this partition waited");
    }
    result
}

/// Storage errors are logged at most once per [`STORAGE_ERROR_LOG_INTERVAL_MS`]: with
/// a full disk every produce request fails, and each would log.
static STORAGE_ERROR_LOG: LogThrottle = LogThrottle::new(STORAGE_ERROR_LOG_INTERVAL_MS);

/// Minimum time between two storage-error log lines, ms.
const STORAGE_ERROR_LOG_INTERVAL_MS: i64 = 10_000;

/// Lets a repeated log line through at most once per interval (process-wide).
struct LogThrottle {
    interval_ms: i64,
    /// Wall-clock ms of the last line let through; `i64::MIN` before the first.
    last_ms: std::sync::atomic::AtomicI64,
}

impl LogThrottle {
    const fn new(interval_ms: i64) -> LogThrottle {
        LogThrottle {
            interval_ms,
            last_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Whether a line may be logged now; at most one caller per interval gets true.
    fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        (last == i64::MIN || now.saturating_sub(last) >= self.interval_ms)
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// An append (log lock wait included) at least this long is logged and counted
/// (`silt_log_slow_appends_total`): at the default settings appends take tens of µs,
/// so one this slow is a stall every producer of the partition saw.
const SLOW_APPEND: Duration = Duration::from_millis(50);

/// The directory of a partition that already has a log in one of `log_dirs` (after a
/// restart). Blocking: call on the blocking pool.
fn existing_partition_dir(log_dirs: &[PathBuf], dir_name: &str) -> Option<PathBuf> {
    log_dirs
        .iter()
        .map(|log_dir| log_dir.join(dir_name))
        .find(|dir| dir.is_dir())
}

/// `<topic>-<partition>` where partition is a non-negative integer.
fn looks_like_partition_dir(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    match name.rsplit_once('-') {
        Some((topic, partition)) => {
            !topic.is_empty()
                && !partition.is_empty()
                && partition.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// One partition's part of a Fetch request (Kafka's `FetchRequest.PartitionData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    /// The first offset wanted.
    pub fetch_offset: i64,
    /// The fetcher's view of the leader epoch, checked against the partition's (-1: not
    /// checked; KIP-320).
    pub current_leader_epoch: i32,
    /// At most this many bytes of whole batches.
    pub max_bytes: usize,
    /// Return the first batch even when it is larger than `max_bytes` (KIP-74).
    pub min_one_batch: bool,
}

/// The follower side of one hosted partition as followed at one leader epoch (the
/// follower path of Kafka's `Partition`), from [`ReplicaManager::follower`].
///
/// Every operation first checks, under the log lock, that this broker still follows
/// the partition at that leader epoch, and refreshes the partition's offsets after it.
///
/// # Errors
/// Every operation returns `NotFollower` when the partition is led here or its leader
/// epoch moved on, `StorageTask` when the blocking task failed, and the log's errors.
#[derive(Debug, Clone, Copy)]
pub struct FollowerLog<'a> {
    hosted: &'a Arc<Partition>,
    leader_epoch: i32,
}

impl FollowerLog<'_> {
    fn require_follower(hosted: &Partition, leader_epoch: i32) -> Result<(), PartitionError> {
        if hosted.is_leader() || hosted.leader_epoch() != leader_epoch {
            return Err(PartitionError::NotFollower {
                topic: hosted.topic.to_string(),
                partition: hosted.partition,
                leader_epoch,
            });
        }
        Ok(())
    }

    async fn with_log<T, F>(&self, operation: F) -> Result<T, PartitionError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PartitionLog) -> Result<T, LogError> + Send + 'static,
    {
        let checked = Arc::clone(self.hosted);
        let leader_epoch = self.leader_epoch;
        tokio::task::spawn_blocking(move || {
            checked.update_log(|log| {
                Self::require_follower(&checked, leader_epoch)?;
                Ok(operation(log)?)
            })
        })
        .await
        .map_err(|join_error| PartitionError::StorageTask(join_error.to_string()))?
    }

    /// Appends batches fetched from the leader (they carry their offsets and leader
    /// epochs; the epoch cache follows them). The log rejects a first offset below its
    /// log end offset, bad framing and bad CRCs.
    pub async fn append(&self, records: Bytes) -> Result<AppendInfo, PartitionError> {
        self.with_log(move |log| log.append_as_follower(&records))
            .await
    }

    /// Removes every batch at or after `offset` (the new exclusive end); returns the log
    /// end offset after it.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, PartitionError> {
        let hosted = self.hosted;
        let high_watermark = hosted.high_watermark();
        let log_end_offset = self
            .with_log(move |log| {
                log.truncate_to(offset)?;
                Ok(log.log_end_offset())
            })
            .await?;
        if log_end_offset < high_watermark {
            // Only an unclean leader election takes committed records away.
            let lost = high_watermark - log_end_offset;
            metrics::counter!("silt_truncated_committed_records_total")
                .increment(u64::try_from(lost).unwrap_or(0));
            warn!(topic = %hosted.topic, partition = hosted.partition, high_watermark, log_end_offset, lost, "truncated committed records: the leader was elected uncleanly and lacks them");
        }
        Ok(log_end_offset)
    }

    /// Empties the log and restarts it at `offset` (when behind the leader's log start
    /// offset).
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), PartitionError> {
        self.with_log(move |log| log.truncate_fully_and_start_at(offset, now_ms()))
            .await
    }

    /// Moves the local log start offset up to the leader's `leader_log_start_offset` (at
    /// most the log end offset); returns the new local log start offset.
    pub async fn follow_log_start_offset(
        &self,
        leader_log_start_offset: i64,
    ) -> Result<i64, PartitionError> {
        if leader_log_start_offset <= self.hosted.log_start_offset() {
            return Ok(self.hosted.log_start_offset());
        }
        self.with_log(move |log| {
            let target = leader_log_start_offset.min(log.log_end_offset());
            log.delete_records_before(target)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;

    #[test]
    fn a_log_throttle_lets_one_line_through_per_interval() {
        let throttle = LogThrottle::new(60_000);
        assert!(throttle.due(), "the first line goes through");
        assert!(!throttle.due(), "a second within the interval does not");
        let open = LogThrottle::new(0);
        assert!(
            open.due() && open.due(),
            "a zero interval lets every line through"
        );
    }
}
