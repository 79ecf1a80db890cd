//! The remote log manager (KIP-405 `RemoteLogManager`, copy side): a periodic task that,
//! for every partition this broker leads whose topic has `remote.storage.enable=true`,
//!
//! 1. cleans up remote segments left half-way (`CopyStarted` uploads that are no longer
//!    running, `DeleteStarted` deletions that were interrupted);
//! 2. copies each sealed segment above the remote log end offset, in offset order:
//!    `begin_remote_segment_copy` (COPY_STARTED), upload of the `.log`, `.index`,
//!    `.timeindex`, producer snapshot and leader-epoch checkpoint, then
//!    `finish_remote_segment_copy` (COPY_FINISHED); a refused finish (another upload of
//!    the same offsets finished first) deletes this upload again;
//! 3. applies local retention (`local.retention.ms/bytes`) to segments already copied;
//! 4. applies remote retention (`retention.ms/bytes`), deleting whole remote segments
//!    oldest first (DELETE_STARTED, objects, DELETE_FINISHED).
//!
//! A partition whose round fails backs off exponentially and nothing local is deleted
//! meanwhile. Objects and metadata of deleted topics, and objects without metadata older
//! than a grace period, are removed too (see `orphan_cleanup`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::path::Path;
use parking_lot::Mutex;
use silt_broker::log::LogError;
use silt_broker::log_config::LogConfig;
use silt_broker::partition::Partition;
use silt_broker::replica_manager::{ReplicaManager, now_ms};
use silt_controller::{
    ClusterMetadata, CommandError, Controller, ControllerError, RemoteSegmentMetadata,
    RemoteSegmentState, TopicId,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::TieringError;
use crate::config::TieringConfig;
use crate::object_layout::{ObjectKind, segment_object_prefix, topics_root};
use crate::remote_retention::{RemoteRetention, expired_segments};
use crate::restore_point::PinnedSegments;
use crate::segment_upload::{
    CleanedSegment, SealedSegment, SegmentObjects, UploadSettings, delete_segment_objects,
    delete_segment_objects_by_listing, download_object, upload_cleaned_segment, upload_segment,
};

/// Gauge: sealed segments waiting to be copied, per topic and partition.
pub(crate) const METRIC_UPLOAD_BACKLOG_SEGMENTS: &str = "silt_tiering_upload_backlog_segments";
/// Counter: bytes of `.log` files copied to remote storage, per topic.
pub(crate) const METRIC_UPLOADED_BYTES: &str = "silt_tiering_uploaded_bytes_total";
/// Counter: segments copied to remote storage, per topic.
pub(crate) const METRIC_UPLOADED_SEGMENTS: &str = "silt_tiering_uploaded_segments_total";
/// Counter: failed partition rounds (copy, cleanup or retention), per topic.
pub(crate) const METRIC_UPLOAD_ERRORS: &str = "silt_tiering_upload_errors_total";
/// Counter: remote segments deleted, per reason (`retention`, `delete_records`,
/// `abandoned`, `duplicate`, `deleted_topic`, `compacted`).
pub(crate) const METRIC_DELETED_SEGMENTS: &str = "silt_tiering_deleted_segments_total";
/// Counter: objects without metadata deleted by the orphan scan.
pub(crate) const METRIC_DELETED_OBJECTS: &str = "silt_tiering_orphan_objects_deleted_total";
/// Gauge: bytes of readable remote segments, per topic and partition.
pub(crate) const METRIC_REMOTE_BYTES: &str = "silt_tiering_remote_bytes";

/// What one round did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundSummary {
    /// Segments copied and committed (COPY_FINISHED).
    pub segments_copied: usize,
    /// Bytes of `.log` files copied.
    pub bytes_copied: u64,
    /// Uploads refused at finish because another copy of the offsets won.
    pub duplicates_discarded: usize,
    /// Remote segments deleted by retention.
    pub remote_segments_expired: usize,
    /// Local segments deleted by local retention.
    pub local_segments_deleted: usize,
    /// Abandoned, duplicate-free orphan entries and deleted-topic segments cleaned up.
    pub orphan_segments_deleted: usize,
    /// Objects without any metadata entry deleted.
    pub orphan_objects_deleted: usize,
    /// Partitions whose round failed (they back off).
    pub failed_partitions: usize,
    /// Partitions skipped because they are backing off after a failure.
    pub partitions_backing_off: usize,
}

/// Retry state of a partition whose round failed.
#[derive(Clone, Copy, Debug)]
struct RetryState {
    consecutive_failures: u32,
    retry_at: Instant,
}

/// Outcome of copying one segment.
enum CopyOutcome {
    /// Committed as COPY_FINISHED.
    Copied(u64),
    /// Refused at finish (overlaps a finished copy); the upload was deleted.
    Duplicate,
}

/// Removes a segment id from the in-progress set when the upload ends, however it ends.
struct InProgressGuard<'a> {
    uploads: &'a Mutex<HashSet<Uuid>>,
    segment_id: Uuid,
}

impl Drop for InProgressGuard<'_> {
    fn drop(&mut self) {
        let _was_present = self.uploads.lock().remove(&self.segment_id);
    }
}

/// The remote log manager of one broker. Create it with [`RemoteLogManager::new`], then
/// [`RemoteLogManager::start`] its periodic task or drive rounds with
/// [`RemoteLogManager::run_round`].
pub struct RemoteLogManager {
    config: TieringConfig,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    controller: Controller,
    replica_manager: Arc<ReplicaManager>,
    /// Segment ids whose upload runs in this process right now.
    uploads_in_progress: Mutex<HashSet<Uuid>>,
    retries: Mutex<HashMap<(TopicId, i32), RetryState>>,
    /// Serializes rounds; holds when the unreferenced-object scan last ran.
    round: tokio::sync::Mutex<Option<Instant>>,
    /// Segments kept restore points name, refreshed every round.
    pinned: tokio::sync::Mutex<PinnedSegments>,
    /// This round's pinned segment ids; `None` when they could not be read, and then
    /// the round deletes no remote segment or object.
    pinned_now: Mutex<Option<HashSet<Uuid>>>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RemoteLogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLogManager")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .field("broker_id", &self.replica_manager.broker_id())
            .finish()
    }
}

impl RemoteLogManager {
    /// A manager without a background task: [`RemoteLogManager::start`] one, or call
    /// [`RemoteLogManager::run_round`].
    /// `store` and `prefix` come from [`open_object_store`](crate::open_object_store).
    pub fn new(
        config: TieringConfig,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        controller: Controller,
        replica_manager: Arc<ReplicaManager>,
    ) -> Arc<Self> {
        let (shutdown, _receiver) = watch::channel(false);
        Arc::new(RemoteLogManager {
            config,
            store,
            prefix,
            controller,
            replica_manager,
            uploads_in_progress: Mutex::new(HashSet::new()),
            retries: Mutex::new(HashMap::new()),
            round: tokio::sync::Mutex::new(None),
            pinned: tokio::sync::Mutex::new(PinnedSegments::default()),
            pinned_now: Mutex::new(None),
            shutdown,
            task: Mutex::new(None),
        })
    }

    /// Spawns the manager's task on the current tokio runtime: a round right away,
    /// then one every `config.task_interval_ms` (after the previous round ends). The task
    /// stops on [`RemoteLogManager::shutdown`] or when the last `Arc` of the manager is
    /// dropped. Returns the manager.
    pub fn start(self: Arc<Self>) -> Arc<Self> {
        let manager = self;
        let weak = Arc::downgrade(&manager);
        let shutdown = manager.shutdown.subscribe();
        let interval = Duration::from_millis(manager.config.task_interval_ms.max(1));
        let handle = tokio::spawn(run_task(weak, shutdown, interval));
        *manager.task.lock() = Some(handle);
        info!(
            broker_id = manager.replica_manager.broker_id(),
            interval_ms = manager.config.task_interval_ms,
            "remote log manager started"
        );
        manager
    }

    /// Stops the periodic task after its current round; uploads cut short by a process
    /// exit are cleaned up by the next start. Calling it again is harmless.
    pub async fn shutdown(&self) {
        let _receivers = self.shutdown.send(true);
        let handle = self.task.lock().take();
        if let Some(handle) = handle
            && let Err(join_error) = handle.await
        {
            warn!(error = %join_error, "remote log manager task failed");
        }
    }

    /// The object store segments are copied to.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix of every object.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The settings.
    pub fn config(&self) -> &TieringConfig {
        &self.config
    }

    /// One round over every hosted partition this broker leads (see the module docs),
    /// then the cleanup of deleted topics and, every `orphan_scan_interval_ms`, of objects
    /// without metadata. Rounds never overlap: a second caller waits. Failures are logged,
    /// counted and retried with backoff; they never abort the round.
    pub async fn run_round(&self) -> RoundSummary {
        let mut last_orphan_scan = self.round.lock().await;
        let mut summary = RoundSummary::default();
        let refreshed = {
            let mut pinned = self.pinned.lock().await;
            pinned
                .refresh(self.store.as_ref(), &self.prefix)
                .await
                .map(|()| pinned.ids())
        };
        *self.pinned_now.lock() = match refreshed {
            Ok(ids) => Some(ids),
            Err(error) => {
                warn!(%error, "reading the restore points failed: this round deletes nothing remote");
                None
            }
        };
        let broker_id = self.replica_manager.broker_id();
        for partition in self.replica_manager.all_partitions() {
            if partition.leader() != broker_id {
                // Followers never upload, but trim what the leader has copied.
                self.follower_local_retention(&partition).await;
                continue;
            }
            let key = (partition.topic_id, partition.partition);
            let retry = self.retries.lock().get(&key).copied();
            if retry.is_some_and(|retry| Instant::now() < retry.retry_at) {
                summary.partitions_backing_off += 1;
                self.refresh_backlog(&partition).await;
                continue;
            }
            match self.tier_partition(&partition, &mut summary).await {
                Ok(()) => {
                    let _cleared = self.retries.lock().remove(&key);
                }
                Err(error) => {
                    summary.failed_partitions += 1;
                    let failures =
                        retry.map_or(1, |retry| retry.consecutive_failures.saturating_add(1));
                    let delay = self.config.retry_backoff(failures);
                    let _previous = self.retries.lock().insert(
                        key,
                        RetryState {
                            consecutive_failures: failures,
                            retry_at: Instant::now() + delay,
                        },
                    );
                    metrics::counter!(METRIC_UPLOAD_ERRORS, "topic" => partition.topic.to_string())
                        .increment(1);
                    warn!(topic = %partition.topic, partition = partition.partition, %error, consecutive_failures = failures, retry_in_ms = delay.as_millis() as u64, "tiering round failed");
                }
            }
        }
        match self.clean_deleted_topics().await {
            Ok(deleted) => summary.orphan_segments_deleted += deleted,
            Err(error) => warn!(%error, "cleaning remote segments of deleted topics failed"),
        }
        let scan_interval = Duration::from_millis(self.config.orphan_scan_interval_ms);
        let scan_due = last_orphan_scan.is_none_or(|last| last.elapsed() >= scan_interval);
        if scan_due {
            match self.delete_unreferenced_objects().await {
                Ok(deleted) => {
                    summary.orphan_objects_deleted += deleted;
                    *last_orphan_scan = Some(Instant::now());
                }
                Err(error) => warn!(%error, "scanning remote storage for orphan objects failed"),
            }
        }
        if summary != RoundSummary::default() {
            debug!(?summary, "tiering round done");
        }
        summary
    }

    /// Local retention on a follower replica: segments go only once the controller has a
    /// committed remote copy of their offsets, as on the leader.
    async fn follower_local_retention(&self, partition: &Arc<Partition>) {
        let metadata = self.controller.metadata();
        if metadata.topic_by_id(partition.topic_id).is_none() {
            return;
        }
        let remote_end = metadata.remote_log_end_offset(partition.topic_id, partition.partition);
        if remote_end.is_none() {
            return;
        }
        if let Err(error) = apply_local_retention(partition, remote_end).await {
            warn!(topic = %partition.topic, partition = partition.partition, %error, "local retention on a follower failed");
        }
    }

    /// Keeps the backlog gauge of a partition that is backing off current: sealed
    /// segments keep piling up while the object store is unreachable.
    async fn refresh_backlog(&self, partition: &Arc<Partition>) {
        let copy_from = self
            .controller
            .metadata()
            .remote_log_end_offset(partition.topic_id, partition.partition);
        if let Ok(view) = read_log_view(partition, copy_from, partition.high_watermark()).await
            && view.config.remote_storage_enable
        {
            metrics::gauge!(METRIC_UPLOAD_BACKLOG_SEGMENTS, "topic" => partition.topic.to_string(), "partition" => partition.partition.to_string())
                .set(view.candidates.len() as f64);
        }
    }

    /// Cleanup, copy, local retention and remote retention of one led partition.
    async fn tier_partition(
        &self,
        partition: &Arc<Partition>,
        summary: &mut RoundSummary,
    ) -> Result<(), TieringError> {
        let topic_id = partition.topic_id;
        let index = partition.partition;
        let metadata = self.controller.metadata();
        if metadata.topic_by_id(topic_id).is_none() {
            return Ok(());
        }
        let copy_from = metadata.remote_log_end_offset(topic_id, index);
        let view = read_log_view(partition, copy_from, partition.high_watermark()).await?;
        if !view.config.remote_storage_enable {
            return Ok(());
        }
        summary.orphan_segments_deleted +=
            self.clean_abandoned_segments(partition, &metadata).await?;

        let backlog = metrics::gauge!(METRIC_UPLOAD_BACKLOG_SEGMENTS, "topic" => partition.topic.to_string(), "partition" => index.to_string());
        backlog.set(view.candidates.len() as f64);
        let mut remaining = view.candidates.len();
        let mut copy_error = None;
        for segment in &view.candidates {
            match self.copy_segment(partition, segment).await {
                Ok(CopyOutcome::Copied(bytes)) => {
                    summary.segments_copied += 1;
                    summary.bytes_copied += bytes;
                    remaining -= 1;
                    backlog.set(remaining as f64);
                }
                Ok(CopyOutcome::Duplicate) => {
                    summary.duplicates_discarded += 1;
                    break;
                }
                Err(error) => {
                    copy_error = Some(error);
                    break;
                }
            }
        }

        let remote_end = self
            .controller
            .metadata()
            .remote_log_end_offset(topic_id, index);
        let (local_deleted, local_only_bytes) =
            apply_local_retention(partition, remote_end).await?;
        summary.local_segments_deleted += local_deleted;
        if let Some(error) = copy_error {
            return Err(error);
        }
        summary.remote_segments_expired += self
            .apply_remote_retention(partition, &view.config, local_only_bytes)
            .await?;
        let remote_bytes: u64 = self
            .controller
            .metadata()
            .copied_remote_segments(topic_id, index)
            .map(|segment| segment.size_bytes)
            .sum();
        metrics::gauge!(METRIC_REMOTE_BYTES, "topic" => partition.topic.to_string(), "partition" => index.to_string())
            .set(remote_bytes as f64);
        Ok(())
    }

    /// Copies one sealed segment: COPY_STARTED, objects, COPY_FINISHED.
    async fn copy_segment(
        &self,
        partition: &Arc<Partition>,
        segment: &SealedSegment,
    ) -> Result<CopyOutcome, TieringError> {
        let files = &segment.files;
        let size_bytes = tokio::fs::metadata(&files.log).await?.len();
        let leader_epoch = partition.leader_epoch();
        let remote_segment = RemoteSegmentMetadata {
            topic_id: partition.topic_id,
            partition: partition.partition,
            segment_id: Uuid::new_v4(),
            base_offset: files.base_offset,
            end_offset: files.next_offset - 1,
            max_timestamp_ms: segment.max_timestamp_ms,
            size_bytes,
            leader_epoch,
            state: RemoteSegmentState::CopyStarted,
            broker_id: self.replica_manager.broker_id(),
            event_timestamp_ms: now_ms(),
            segment_leader_epochs: segment.segment_leader_epochs.clone(),
            compacted: false,
        };
        let segment_id = remote_segment.segment_id;
        let _uploads_in_progress = self.track_upload(segment_id);
        let objects = self.segment_objects(&partition.topic, &remote_segment);
        self.controller
            .begin_remote_segment_copy(remote_segment.clone())
            .await?;
        debug!(topic = %partition.topic, partition = partition.partition, base_offset = files.base_offset, %segment_id, "copy started");

        let uploaded = upload_segment(
            self.store.as_ref(),
            &objects,
            segment,
            self.upload_settings(),
        )
        .await;
        let failure = self.upload_failure(partition, leader_epoch, uploaded);
        if let Some(error) = failure {
            if let Err(cleanup_error) = self
                .delete_remote_segment(Some(&partition.topic), &remote_segment, "abandoned")
                .await
            {
                debug!(topic = %partition.topic, partition = partition.partition, %segment_id, error = %cleanup_error, "cleanup of a failed upload failed; a later round retries it");
            }
            return Err(error);
        }

        match self
            .controller
            .finish_remote_segment_copy(partition.topic_id, partition.partition, segment_id)
            .await
        {
            Ok(finished) => {
                debug_assert_eq!(finished.state, RemoteSegmentState::CopyFinished);
                metrics::counter!(METRIC_UPLOADED_BYTES, "topic" => partition.topic.to_string())
                    .increment(size_bytes);
                metrics::counter!(METRIC_UPLOADED_SEGMENTS, "topic" => partition.topic.to_string())
                    .increment(1);
                info!(topic = %partition.topic, partition = partition.partition, base_offset = finished.base_offset, end_offset = finished.end_offset, size_bytes, %segment_id, "copied segment to remote storage");
                Ok(CopyOutcome::Copied(size_bytes))
            }
            Err(ControllerError::Rejected(CommandError::InvalidRemoteSegment(reason))) => {
                info!(topic = %partition.topic, partition = partition.partition, base_offset = files.base_offset, %segment_id, %reason, "remote copy refused as a duplicate; deleting it");
                self.delete_remote_segment(Some(&partition.topic), &remote_segment, "duplicate")
                    .await?;
                Ok(CopyOutcome::Duplicate)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Why an upload made under `leader_epoch` must not be committed: it failed, or this
    /// broker stopped leading the partition in that epoch meanwhile.
    fn upload_failure(
        &self,
        partition: &Partition,
        leader_epoch: i32,
        uploaded: Result<u64, TieringError>,
    ) -> Option<TieringError> {
        let changed = partition.leader() != self.replica_manager.broker_id()
            || partition.leader_epoch() != leader_epoch;
        match uploaded {
            Err(error) => Some(error),
            Ok(_) if changed => Some(TieringError::PartitionChanged(format!(
                "leader epoch {leader_epoch} of {}-{} ended during the upload",
                partition.topic, partition.partition
            ))),
            Ok(_) => None,
        }
    }

    fn track_upload(&self, segment_id: Uuid) -> InProgressGuard<'_> {
        let _inserted = self.uploads_in_progress.lock().insert(segment_id);
        InProgressGuard {
            uploads: &self.uploads_in_progress,
            segment_id,
        }
    }

    fn upload_settings(&self) -> UploadSettings {
        UploadSettings {
            multipart_threshold_bytes: self.config.multipart_threshold_bytes,
            multipart_part_bytes: self.config.multipart_part_bytes,
            multipart_concurrency: self.config.multipart_concurrency,
        }
    }

    /// Deletes `CopyStarted` entries of the partition whose upload does not run here (this
    /// broker's own at once, other brokers' after the grace period) and finishes
    /// interrupted deletions. Returns how many segments were deleted.
    async fn clean_abandoned_segments(
        &self,
        partition: &Partition,
        metadata: &ClusterMetadata,
    ) -> Result<usize, TieringError> {
        let broker_id = self.replica_manager.broker_id();
        let grace_ms = i64::try_from(self.config.orphan_grace_ms).unwrap_or(i64::MAX);
        let now = now_ms();
        let pinned = self.pinned_now.lock().clone();
        let abandoned: Vec<RemoteSegmentMetadata> = metadata
            .remote_segments(partition.topic_id, partition.partition)
            .filter(|segment| match segment.state {
                RemoteSegmentState::CopyStarted => {
                    let running = self
                        .uploads_in_progress
                        .lock()
                        .contains(&segment.segment_id);
                    let stale = now.saturating_sub(segment.event_timestamp_ms) > grace_ms;
                    !running && (segment.broker_id == broker_id || stale)
                }
                // Segments a compaction replaced stay for the delete delay and while a
                // kept restore point names them (or the restore points cannot be read).
                RemoteSegmentState::DeleteStarted => {
                    let replaced = metadata
                        .copied_remote_segments(partition.topic_id, partition.partition)
                        .any(|copied| copied.compacted && copied.overlaps(segment));
                    let delay_ms = i64::try_from(self.config.replaced_segment_delete_delay_ms)
                        .unwrap_or(i64::MAX);
                    let waiting =
                        replaced && now.saturating_sub(segment.event_timestamp_ms) < delay_ms;
                    !waiting
                        && pinned
                            .as_ref()
                            .is_some_and(|pinned| !pinned.contains(&segment.segment_id))
                }
                RemoteSegmentState::CopyFinished | RemoteSegmentState::DeleteFinished => false,
            })
            .cloned()
            .collect();
        for segment in &abandoned {
            info!(topic = %partition.topic, partition = partition.partition, segment_id = %segment.segment_id, base_offset = segment.base_offset, state = ?segment.state, uploader = segment.broker_id, "cleaning up an abandoned remote segment");
            self.delete_remote_segment(Some(&partition.topic), segment, "abandoned")
                .await?;
        }
        Ok(abandoned.len())
    }

    /// Remote retention of one partition, and the deletion of the segments wholly below
    /// a log start offset DeleteRecords set; returns the number of segments deleted.
    async fn apply_remote_retention(
        &self,
        partition: &Partition,
        config: &LogConfig,
        local_only_bytes: u64,
    ) -> Result<usize, TieringError> {
        let metadata = self.controller.metadata();
        let log_start_offset = metadata
            .topic_by_id(partition.topic_id)
            .map_or(0, |topic| topic.records_deleted_before(partition.partition));
        let by_retention = config.deletes_by_retention();
        if !by_retention && log_start_offset == 0 {
            return Ok(0);
        }
        let copied: Vec<&RemoteSegmentMetadata> = metadata
            .copied_remote_segments(partition.topic_id, partition.partition)
            .collect();
        let retention = RemoteRetention {
            retention_ms: if by_retention {
                config.retention_ms
            } else {
                -1
            },
            retention_bytes: if by_retention {
                config.retention_bytes
            } else {
                -1
            },
            local_only_bytes,
            log_start_offset,
        };
        let Some(pinned) = self.pinned_now.lock().clone() else {
            return Ok(0);
        };
        // A segment a kept restore point names stays, and so does every later one.
        let expired: Vec<&RemoteSegmentMetadata> = expired_segments(&copied, retention, now_ms())
            .into_iter()
            .take_while(|segment| !pinned.contains(&segment.segment_id))
            .collect();
        for segment in &expired {
            let reason = if segment.next_offset() <= log_start_offset {
                "delete_records"
            } else {
                "retention"
            };
            info!(topic = %partition.topic, partition = partition.partition, segment_id = %segment.segment_id, base_offset = segment.base_offset, end_offset = segment.end_offset, max_timestamp_ms = segment.max_timestamp_ms, reason, "remote retention deleting segment");
            self.delete_remote_segment(Some(&partition.topic), segment, reason)
                .await?;
        }
        Ok(expired.len())
    }

    /// Downloads the `.log` object of the remote segment `segment` of `partition` to the
    /// local file `to` (created or truncated); returns its size in bytes.
    ///
    /// # Errors
    /// Object store errors (NotFound when the segment was deleted meanwhile); I/O errors.
    pub async fn download_segment_log(
        &self,
        partition: &Partition,
        segment: &RemoteSegmentMetadata,
        to: &std::path::Path,
    ) -> Result<u64, TieringError> {
        let objects = self.segment_objects(&partition.topic, segment);
        download_object(self.store.as_ref(), &objects.path(ObjectKind::Log), to).await
    }

    /// Swaps a compacted copy in for remote segments of a partition this broker leads:
    /// registers the copy (COPY_STARTED), uploads it, then has the controller make it
    /// readable and the `replaced` segments (sorted by offset, all `CopyFinished`)
    /// unreadable in one step, so a reader sees the old set or the new one. The old
    /// segments stay `DeleteStarted` with their objects for
    /// `replaced_segment_delete_delay_ms` and while a kept restore point names them;
    /// the round's cleanup deletes them after that. Returns the new segment, or None
    /// when the swap was refused because the partition changed meanwhile (retention,
    /// another swap, or a new leader); the upload is deleted then.
    ///
    /// A crash before the swap leaves a `CopyStarted` entry that cleanup deletes; a
    /// crash after it leaves `DeleteStarted` entries that cleanup finishes.
    ///
    /// # Errors
    /// Object store and I/O errors (the upload is deleted again, or left to cleanup
    /// when that fails too); controller errors (the swap may have committed without an
    /// answer: the upload is left to cleanup, which deletes it only if it is still
    /// `CopyStarted`).
    pub async fn replace_remote_segments(
        &self,
        partition: &Arc<Partition>,
        replaced: &[RemoteSegmentMetadata],
        cleaned: &CleanedSegment,
    ) -> Result<Option<RemoteSegmentMetadata>, TieringError> {
        let Some(last) = replaced.last() else {
            return Ok(None);
        };
        let size_bytes = tokio::fs::metadata(&cleaned.log).await?.len();
        let leader_epoch = partition.leader_epoch();
        let mut segment_leader_epochs = BTreeMap::new();
        for old in replaced {
            for (&epoch, &start) in &old.segment_leader_epochs {
                let start = start.max(cleaned.base_offset);
                if start <= cleaned.end_offset {
                    let first = segment_leader_epochs.entry(epoch).or_insert(start);
                    *first = (*first).min(start);
                }
            }
        }
        let remote_segment = RemoteSegmentMetadata {
            topic_id: partition.topic_id,
            partition: partition.partition,
            segment_id: Uuid::new_v4(),
            base_offset: cleaned.base_offset,
            end_offset: cleaned.end_offset,
            max_timestamp_ms: cleaned.max_timestamp_ms,
            size_bytes,
            leader_epoch,
            state: RemoteSegmentState::CopyStarted,
            broker_id: self.replica_manager.broker_id(),
            event_timestamp_ms: now_ms(),
            segment_leader_epochs,
            compacted: true,
        };
        let segment_id = remote_segment.segment_id;
        let _uploads_in_progress = self.track_upload(segment_id);
        self.controller
            .begin_remote_segment_copy(remote_segment.clone())
            .await?;
        let objects = self.segment_objects(&partition.topic, &remote_segment);
        let carried_from = self.segment_objects(&partition.topic, last);
        let uploaded = upload_cleaned_segment(
            self.store.as_ref(),
            &objects,
            cleaned,
            &carried_from,
            self.upload_settings(),
        )
        .await;
        let failure = self.upload_failure(partition, leader_epoch, uploaded);
        let swapped = match failure {
            Some(error) => Err(error),
            None => self
                .controller
                .replace_remote_segments(
                    partition.topic_id,
                    partition.partition,
                    segment_id,
                    replaced.iter().map(|old| old.segment_id).collect(),
                )
                .await
                .map_err(TieringError::from),
        };
        let swapped = match swapped {
            Ok(swapped) => swapped,
            Err(TieringError::Controller(ControllerError::Rejected(
                CommandError::InvalidRemoteSegment(reason),
            ))) => {
                info!(topic = %partition.topic, partition = partition.partition, %segment_id, %reason, "compacted remote copy refused: the segments changed meanwhile");
                self.abandon_upload(partition, &remote_segment).await;
                return Ok(None);
            }
            Err(error @ (TieringError::Controller(_) | TieringError::Task(_))) => {
                // The swap may have committed although its answer was lost: the copy
                // is left to cleanup, which deletes it only if it is still CopyStarted.
                return Err(error);
            }
            Err(error) => {
                self.abandon_upload(partition, &remote_segment).await;
                return Err(error);
            }
        };
        info!(topic = %partition.topic, partition = partition.partition, base_offset = swapped.base_offset, end_offset = swapped.end_offset, size_bytes, replaced = replaced.len(), replaced_bytes = replaced.iter().map(|old| old.size_bytes).sum::<u64>(), %segment_id, "swapped in a compacted remote segment");
        // The replaced segments stay DELETE_STARTED with their objects for
        // `replaced_segment_delete_delay_ms`; cleanup deletes them after that.
        Ok(Some(swapped))
    }

    /// Deletes an upload that will not be committed (its entry must still be
    /// `CopyStarted`); a failure is left to cleanup.
    async fn abandon_upload(&self, partition: &Partition, segment: &RemoteSegmentMetadata) {
        if let Err(error) = self
            .delete_remote_segment(Some(&partition.topic), segment, "abandoned")
            .await
        {
            debug!(topic = %partition.topic, partition = partition.partition, segment_id = %segment.segment_id, %error, "cleanup of an abandoned upload failed; a later round retries it");
        }
    }

    /// Where the objects of `segment` of topic `topic` are.
    fn segment_objects(&self, topic: &str, segment: &RemoteSegmentMetadata) -> SegmentObjects {
        SegmentObjects {
            partition_prefix: segment_object_prefix(
                &self.prefix,
                topic,
                segment.topic_id,
                segment.partition,
            ),
            base_offset: segment.base_offset,
            segment_id: segment.segment_id,
        }
    }

    /// DELETE_STARTED (unless already), objects, DELETE_FINISHED. `topic` is the topic
    /// name when known; without it the objects are found by listing.
    pub(crate) async fn delete_remote_segment(
        &self,
        topic: Option<&str>,
        segment: &RemoteSegmentMetadata,
        reason: &'static str,
    ) -> Result<(), TieringError> {
        let (topic_id, partition, segment_id) =
            (segment.topic_id, segment.partition, segment.segment_id);
        if segment.state != RemoteSegmentState::DeleteStarted {
            // Only from the state the caller saw: an upload that looked abandoned in a
            // stale view may have been committed since (a compaction swap).
            match self
                .controller
                .begin_remote_segment_delete_from(
                    topic_id,
                    partition,
                    segment_id,
                    Some(segment.state),
                )
                .await
            {
                Ok(()) => {}
                Err(ControllerError::Rejected(CommandError::InvalidRemoteSegment(reason_text))) => {
                    let current = self
                        .controller
                        .metadata()
                        .remote_segment(topic_id, partition, segment_id)
                        .map(|current| current.state);
                    match current {
                        Some(RemoteSegmentState::DeleteStarted) => {}
                        None => return Ok(()),
                        Some(_) => {
                            return Err(ControllerError::Rejected(
                                CommandError::InvalidRemoteSegment(reason_text),
                            )
                            .into());
                        }
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        match topic {
            Some(topic) => {
                let objects = self.segment_objects(topic, segment);
                delete_segment_objects(self.store.as_ref(), &objects).await?;
            }
            None => {
                for topic_dir in self.topic_dirs_of(topic_id).await? {
                    let partition_prefix = topic_dir.clone().join(partition.to_string().as_str());
                    let _deleted = delete_segment_objects_by_listing(
                        self.store.as_ref(),
                        &partition_prefix,
                        segment_id,
                    )
                    .await?;
                }
            }
        }
        match self
            .controller
            .finish_remote_segment_delete(topic_id, partition, segment_id)
            .await
        {
            Ok(()) => {}
            Err(ControllerError::Rejected(CommandError::InvalidRemoteSegment(_)))
                if self
                    .controller
                    .metadata()
                    .remote_segment(topic_id, partition, segment_id)
                    .is_none() => {}
            Err(error) => return Err(error.into()),
        }
        metrics::counter!(METRIC_DELETED_SEGMENTS, "reason" => reason).increment(1);
        debug!(%topic_id, partition, %segment_id, reason, "deleted remote segment");
        Ok(())
    }

    /// The `<prefix>/topics/<topic>-<topicId>` folders of a topic id (the name is not
    /// known once the topic is deleted).
    async fn topic_dirs_of(&self, topic_id: TopicId) -> Result<Vec<Path>, TieringError> {
        let suffix = format!("-{topic_id}");
        let listing = self
            .store
            .list_with_delimiter(Some(&topics_root(&self.prefix)))
            .await?;
        Ok(listing
            .common_prefixes
            .into_iter()
            .filter(|dir| dir.filename().is_some_and(|name| name.ends_with(&suffix)))
            .collect())
    }

    /// Whether this broker cleans up after deleted topics: the lowest unfenced broker,
    /// or any broker while none is registered.
    pub(crate) fn is_janitor(&self, metadata: &ClusterMetadata) -> bool {
        metadata
            .unfenced_brokers()
            .next()
            .is_none_or(|broker| broker.broker_id == self.replica_manager.broker_id())
    }

    /// Deletes the remote segments (objects, then entries) of topics that no longer exist.
    async fn clean_deleted_topics(&self) -> Result<usize, TieringError> {
        let metadata = self.controller.metadata();
        if !self.is_janitor(&metadata) {
            return Ok(0);
        }
        let Some(pinned) = self.pinned_now.lock().clone() else {
            return Ok(0);
        };
        let mut deleted = 0usize;
        for (topic_id, partition) in metadata.remote_partitions() {
            if metadata.topic_by_id(topic_id).is_some() {
                continue;
            }
            let segments: Vec<RemoteSegmentMetadata> = metadata
                .remote_segments(topic_id, partition)
                .cloned()
                .collect();
            for segment in segments
                .iter()
                .filter(|segment| !pinned.contains(&segment.segment_id))
            {
                info!(%topic_id, partition, segment_id = %segment.segment_id, "deleting remote segment of a deleted topic");
                self.delete_remote_segment(None, segment, "deleted_topic")
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Lists `<prefix>/topics/` and deletes objects whose segment id has no metadata entry
    /// and that are older than the grace period, for partitions this broker leads (or of
    /// deleted topics, when this broker is the janitor).
    async fn delete_unreferenced_objects(&self) -> Result<usize, TieringError> {
        let cluster_id = self.controller.metadata().cluster_id.clone();
        if !crate::prefix_owner::owns_prefix(self.store.as_ref(), &self.prefix, &cluster_id).await?
        {
            warn!(prefix = %self.prefix, cluster_id, "the object store prefix's cluster.json does not name this cluster: deleting no objects without metadata");
            return Ok(0);
        }
        let grace_ms = i64::try_from(self.config.orphan_grace_ms).unwrap_or(i64::MAX);
        let Some(pinned) = self.pinned_now.lock().clone() else {
            return Ok(0);
        };
        // Objects a kept restore point names are never orphans, even without metadata
        // (a cluster restored from an older restore point does not know them).
        let mut in_progress = self.uploads_in_progress.lock().clone();
        in_progress.extend(pinned);
        crate::orphan_cleanup::delete_unreferenced_objects(
            self.store.as_ref(),
            &self.prefix,
            &self.controller,
            &self.replica_manager,
            &in_progress,
            grace_ms,
            |metadata| self.is_janitor(metadata),
        )
        .await
    }
}

async fn run_task(
    manager: Weak<RemoteLogManager>,
    mut shutdown: watch::Receiver<bool>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _changed = shutdown.changed() => break,
            _instant = ticker.tick() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let Some(manager) = manager.upgrade() else {
            break;
        };
        let _summary = manager.run_round().await;
    }
    debug!("remote log manager task stopped");
}

/// The log's config and the sealed segments to copy, read under the log lock.
struct LogView {
    config: LogConfig,
    candidates: Vec<SealedSegment>,
}

/// Reads the config and the sealed segments with base offset `>= copy_from` (all when
/// nothing is remote) that end at or below the high watermark, in offset order.
async fn read_log_view(
    partition: &Partition,
    copy_from: Option<i64>,
    high_watermark: i64,
) -> Result<LogView, TieringError> {
    let log = partition.log();
    tokio::task::spawn_blocking(move || {
        let guard = log.lock();
        let config = guard.config().clone();
        if !config.remote_storage_enable {
            return LogView {
                config,
                candidates: Vec::new(),
            };
        }
        let epochs = guard.leader_epoch_entries().to_vec();
        let candidates = guard
            .sealed_segment_base_offsets()
            .into_iter()
            .filter_map(|base_offset| guard.sealed_segment_files(base_offset))
            // A new leader's segments need not start where the old leader's ended: the one
            // holding the remote end offset goes whole (its earlier offsets are identical).
            .filter(|files| copy_from.is_none_or(|from| files.next_offset > from))
            .filter(|files| files.next_offset > files.base_offset)
            .take_while(|files| files.next_offset <= high_watermark)
            .map(|files| {
                let max_timestamp_ms = guard.segment_max_timestamp(files.base_offset).unwrap_or(-1);
                SealedSegment::new(files, max_timestamp_ms, &epochs)
            })
            .collect();
        LogView { config, candidates }
    })
    .await
    .map_err(|join_error| TieringError::Task(join_error.to_string()))
}

/// Runs local retention against the remote log end offset; refreshes the partition's
/// offsets when segments went. Returns the segments deleted and the bytes of the local
/// log not yet in remote storage.
async fn apply_local_retention(
    partition: &Arc<Partition>,
    remote_log_end_offset: Option<i64>,
) -> Result<(usize, u64), TieringError> {
    let hosted = Arc::clone(partition);
    let copied_end = remote_log_end_offset.unwrap_or(i64::MIN);
    let (deleted, log_start_offset, local_only_bytes) = tokio::task::spawn_blocking(move || {
        hosted.update_log(|log| -> Result<_, LogError> {
            let deleted = log.apply_local_retention(now_ms(), copied_end)?;
            Ok((
                deleted,
                log.log_start_offset(),
                log.size_bytes_after(copied_end),
            ))
        })
    })
    .await
    .map_err(|join_error| TieringError::Task(join_error.to_string()))??;
    if deleted > 0 {
        info!(topic = %partition.topic, partition = partition.partition, deleted, log_start_offset, remote_log_end_offset = copied_end, "local retention deleted copied segments");
    }
    Ok((deleted, local_only_bytes))
}
