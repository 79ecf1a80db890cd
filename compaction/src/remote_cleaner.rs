//! Compaction of the remote tier (what Kafka's tiered storage cannot do; KIP-1272
//! proposes it): for every partition this broker leads whose topic has
//! `remote.storage.enable=true` and `cleanup.policy` containing `compact`, a pass
//!
//! 1. plans from the controller's remote segment metadata ([`plan_remote`]): segments
//!    written by an earlier pass are the clean section, the ones uploaded since are
//!    dirty; the pass is due at `min.cleanable.dirty.ratio` or `max.compaction.lag.ms`
//!    as on the local tier;
//! 2. maps the keys of the dirty remote segments (downloaded one at a time into the
//!    log's scratch directory); records only local are left out, so the bucket stays a
//!    compaction of itself that a restore can rely on (a newer local value supersedes
//!    the remote ones at the first pass after it is copied);
//! 3. rewrites the remote log from its start in groups of at most `segment.bytes` with
//!    the local cleaner's record filter, each group's last batch kept (empty if need
//!    be) so a replacement ends where its group ends;
//! 4. uploads each replacement under a new segment id and swaps it in through the
//!    controller ([`RemoteLogManager::replace_remote_segments`]): the new segment
//!    becomes `COPY_SEGMENT_FINISHED` and the replaced ones `DELETE_SEGMENT_STARTED` in
//!    one committed step, then their objects are deleted.
//!
//! A crash or an object-store outage at any point leaves the old segments readable
//! (the upload is a `CopyStarted` entry that cleanup deletes) or the new one (the old
//! ones are `DeleteStarted` entries whose deletion cleanup finishes): never a hole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use silt_broker::ReplicaManager;
use silt_broker::background::run_niced;
use silt_broker::cleaning::{CleaningView, SealedSegment, scratch_path};
use silt_broker::log_config::LogConfig;
use silt_broker::partition::Partition;
use silt_broker::replica_manager::now_ms;
use silt_controller::{Controller, RemoteSegmentMetadata};
use silt_tiering::{CleanedSegment, RemoteLogManager};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cleaner::{
    Cleaner, CleanerConfig, CleanerStats, ReplacementTarget, RetainRules, clean_group,
    delete_horizon, group_by_size, is_due, map_segment, megabytes_per_second,
};
use crate::error::CleanerError;
use crate::offset_map::OffsetMap;
use crate::throttler::Throttler;

/// Name of the threads a remote pass's CPU and disk work runs on (nice 10).
const REMOTE_CLEANER_THREAD: &str = "remote-cleaner";

/// One readable remote segment as a pass sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemotePiece {
    /// The controller's entry.
    pub metadata: RemoteSegmentMetadata,
    /// First offset read from it: its base offset, or where the previous segment ended
    /// when two leaders' segments overlap.
    pub start: i64,
}

impl RemotePiece {
    /// The piece as the cleaner's group code sees a segment, its `.log` at `log_path`
    /// (a download).
    fn as_sealed(&self, log_path: PathBuf) -> SealedSegment {
        SealedSegment {
            base_offset: self.start,
            next_offset: self.metadata.next_offset(),
            size_bytes: self.metadata.size_bytes,
            max_timestamp: self.metadata.max_timestamp_ms,
            first_batch_timestamp: None,
            log_path,
        }
    }
}

/// Where the remote log's dirty section lies and whether it is due.
#[derive(Debug, Clone, PartialEq)]
pub struct RemotePlan {
    /// The readable remote segments from the remote log start, in offset order.
    pub pieces: Vec<RemotePiece>,
    /// First offset not cleaned by an earlier remote pass.
    pub first_dirty_offset: i64,
    /// First offset the pass may not clean: the remote log end, or the start of the
    /// first dirty segment holding a record younger than `min.compaction.lag.ms`.
    pub first_uncleanable_offset: i64,
    /// Bytes of the dirty segments.
    pub dirty_bytes: u64,
    /// `dirty_bytes` over the bytes of every segment below the first uncleanable offset.
    pub dirty_ratio: f64,
    /// The oldest dirty segment's newest record is older than `max.compaction.lag.ms`.
    pub overdue: bool,
    /// Tombstones at or before this time (ms) go: the newest timestamp of the clean
    /// section minus `delete.retention.ms`; None while no section is clean.
    pub delete_horizon_ms: Option<i64>,
}

impl RemotePlan {
    /// Due: the dirty ratio reached `min_ratio`, or a record is overdue.
    pub fn is_due(&self, min_ratio: f64) -> bool {
        is_due(self.dirty_bytes, self.dirty_ratio, self.overdue, min_ratio)
    }
}

/// The remote dirty section of a partition whose readable remote segments are `copied`
/// (any order) under `config`, at `now_ms` (ms). Segments wholly below `log_start_offset`
/// (DeleteRecords) are left to retention. None when the topic is not compacted or
/// nothing remote is dirty.
pub fn plan_remote(
    copied: &[RemoteSegmentMetadata],
    config: &LogConfig,
    log_start_offset: i64,
    now_ms: i64,
) -> Option<RemotePlan> {
    if !config.is_compacted() {
        return None;
    }
    let mut sorted: Vec<&RemoteSegmentMetadata> = copied
        .iter()
        .filter(|segment| segment.next_offset() > log_start_offset)
        .collect();
    sorted.sort_by_key(|segment| (segment.base_offset, segment.segment_id));
    let mut pieces: Vec<RemotePiece> = Vec::with_capacity(sorted.len());
    for segment in sorted {
        let start = pieces.last().map_or(segment.base_offset, |previous| {
            segment.base_offset.max(previous.metadata.next_offset())
        });
        if start > segment.end_offset {
            continue;
        }
        pieces.push(RemotePiece {
            metadata: segment.clone(),
            start,
        });
    }
    let clean = pieces
        .iter()
        .take_while(|piece| piece.metadata.compacted)
        .count();
    let first_dirty_offset = match clean {
        0 => pieces.first()?.start,
        count => pieces[count - 1].metadata.next_offset(),
    };
    let min_lag_cutoff = now_ms.saturating_sub(config.min_compaction_lag_ms);
    let remote_end = pieces.last()?.metadata.next_offset();
    let first_uncleanable_offset = pieces[clean..]
        .iter()
        .find(|piece| {
            config.min_compaction_lag_ms > 0 && piece.metadata.max_timestamp_ms > min_lag_cutoff
        })
        .map_or(remote_end, |piece| piece.start);
    let (mut dirty_bytes, mut total_bytes) = (0u64, 0u64);
    for (index, piece) in pieces.iter().enumerate() {
        if piece.start >= first_uncleanable_offset {
            break;
        }
        total_bytes += piece.metadata.size_bytes;
        if index >= clean {
            dirty_bytes += piece.metadata.size_bytes;
        }
    }
    if dirty_bytes == 0 {
        return None;
    }
    let overdue = config.max_compaction_lag_ms < i64::MAX
        && pieces.get(clean).is_some_and(|oldest| {
            now_ms.saturating_sub(oldest.metadata.max_timestamp_ms) > config.max_compaction_lag_ms
        });
    let delete_horizon_ms = delete_horizon(
        pieces[..clean]
            .iter()
            .map(|piece| piece.metadata.max_timestamp_ms),
        config.delete_retention_ms,
    );
    Some(RemotePlan {
        pieces,
        first_dirty_offset,
        first_uncleanable_offset,
        dirty_bytes,
        dirty_ratio: dirty_bytes as f64 / total_bytes.max(1) as f64,
        overdue,
        delete_horizon_ms,
    })
}

/// What one remote pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteCleanerStats {
    /// The map and filter figures, as for a local pass (`bytes_*` are remote bytes).
    pub pass: CleanerStats,
    /// Bytes downloaded from the object store.
    pub bytes_downloaded: u64,
    /// Replacement segments uploaded and swapped in.
    pub segments_swapped: usize,
}

/// The remote cleaner of one broker: a task that cleans, one at a time, the tiered
/// compacted partitions this broker leads. Start it with [`RemoteLogCleaner::run`].
pub struct RemoteLogCleaner {
    replica_manager: Arc<ReplicaManager>,
    controller: Controller,
    remote: Arc<RemoteLogManager>,
    cleaner: Cleaner,
    backoff: Duration,
    enable: bool,
    stop: Arc<AtomicBool>,
    /// Serializes passes (the task's and [`RemoteLogCleaner::clean_partition`]'s).
    pass: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RemoteLogCleaner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RemoteLogCleaner")
            .field("broker_id", &self.replica_manager.broker_id())
            .finish()
    }
}

impl RemoteLogCleaner {
    /// A remote cleaner over `replica_manager`'s led partitions, reading and swapping
    /// remote segments through `remote`. It shares the local cleaner's settings: the
    /// map gets `log.cleaner.dedupe.buffer.size` divided by `log.cleaner.threads + 1`,
    /// its bytes count against `log.cleaner.io.max.bytes.per.second` through
    /// `throttler`, it sleeps `log.cleaner.backoff.ms` when nothing is due, and does
    /// nothing when `log.cleaner.enable` is false.
    pub fn new(
        replica_manager: Arc<ReplicaManager>,
        controller: Controller,
        remote: Arc<RemoteLogManager>,
        config: &crate::LogCleanerConfig,
        throttler: Arc<Throttler>,
    ) -> Arc<RemoteLogCleaner> {
        let stop = Arc::new(AtomicBool::new(false));
        let cleaner = Cleaner::new(
            CleanerConfig {
                dedupe_buffer_bytes: config.dedupe_buffer_bytes / (config.threads.max(1) + 1),
            },
            throttler,
            Arc::clone(&stop),
        );
        Arc::new(RemoteLogCleaner {
            replica_manager,
            controller,
            remote,
            cleaner,
            backoff: config.backoff,
            enable: config.enable,
            stop,
            pass: tokio::sync::Mutex::new(()),
        })
    }

    /// Cleans due partitions until `shutdown` turns true: after a round that cleaned
    /// something the next starts at once, else after the backoff.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if !self.enable {
            return;
        }
        info!(
            broker_id = self.replica_manager.broker_id(),
            "remote log cleaner started"
        );
        loop {
            let mut cleaned = false;
            for partition in self.replica_manager.all_partitions() {
                if *shutdown.borrow() {
                    break;
                }
                let started = std::time::Instant::now();
                match self.clean_partition(&partition, false).await {
                    Ok(Some(stats)) => {
                        cleaned = true;
                        log_remote_pass(&partition, &stats, started.elapsed().as_millis());
                    }
                    Ok(None) => {}
                    Err(error) if error.is_abort() => {
                        debug!(topic = %partition.topic, partition = partition.partition, %error, "remote cleaning pass dropped; the next one starts over");
                    }
                    Err(error) => {
                        metrics::counter!("silt_remote_log_cleaner_failures_total").increment(1);
                        warn!(topic = %partition.topic, partition = partition.partition, %error, "remote cleaning pass failed");
                    }
                }
            }
            let pause = if cleaned {
                Duration::ZERO
            } else {
                self.backoff
            };
            tokio::select! {
                _changed = shutdown.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
            if *shutdown.borrow() {
                self.stop.store(true, Ordering::SeqCst);
                break;
            }
        }
        debug!("remote log cleaner stopped");
    }

    /// One remote pass over `partition` if this broker leads it, its topic is tiered and
    /// compacted, and the pass is due (or, with `force`, whenever something remote is
    /// dirty). Returns None when there was nothing to do.
    ///
    /// # Errors
    /// [`CleanerError::is_abort`] errors when the partition changed under the pass
    /// (retention, a new leader, a swap refused); object store, controller, I/O and
    /// batch errors otherwise. Replacements swapped in before the error stay, and are
    /// correct.
    pub async fn clean_partition(
        &self,
        partition: &Arc<Partition>,
        force: bool,
    ) -> Result<Option<RemoteCleanerStats>, CleanerError> {
        if partition.leader() != self.replica_manager.broker_id() {
            return Ok(None);
        }
        let _pass = self.pass.lock().await;
        let log = partition.log();
        let view = tokio::task::spawn_blocking(move || log.lock().cleaning_view())
            .await
            .map_err(task_error)?;
        if !view.config.remote_storage_enable {
            return Ok(None);
        }
        let metadata = self.controller.metadata();
        let Some(topic) = metadata.topic_by_id(partition.topic_id) else {
            return Ok(None);
        };
        let log_start_offset = topic.records_deleted_before(partition.partition);
        let copied: Vec<RemoteSegmentMetadata> = metadata
            .copied_remote_segments(partition.topic_id, partition.partition)
            .cloned()
            .collect();
        let now = now_ms();
        let Some(plan) = plan_remote(&copied, &view.config, log_start_offset, now) else {
            return Ok(None);
        };
        if !force && !plan.is_due(view.config.min_cleanable_dirty_ratio) {
            return Ok(None);
        }
        let mut stats = RemoteCleanerStats {
            pass: CleanerStats {
                first_dirty_offset: plan.first_dirty_offset,
                delete_horizon_ms: plan.delete_horizon_ms,
                ..CleanerStats::default()
            },
            ..RemoteCleanerStats::default()
        };
        let (map, end) = self.build_map(partition, &view, &plan, &mut stats).await?;
        stats.pass.keys = map.len();
        stats.pass.end_offset = end;
        let map = Arc::new(map);
        let to_clean: Vec<&RemotePiece> = plan
            .pieces
            .iter()
            .filter(|piece| piece.start < end)
            .collect();
        let as_sealed: Vec<SealedSegment> = to_clean
            .iter()
            .map(|piece| piece.as_sealed(PathBuf::new()))
            .collect();
        let groups: Vec<std::ops::Range<usize>> = {
            let mut offset = 0;
            group_by_size(&as_sealed, view.config.segment_bytes)
                .into_iter()
                .map(|group| {
                    let range = offset..offset + group.len();
                    offset += group.len();
                    range
                })
                .collect()
        };
        let view = Arc::new(view);
        for range in groups {
            let group: Vec<RemotePiece> = to_clean[range]
                .iter()
                .map(|piece| (*piece).clone())
                .collect();
            let swapped = self
                .clean_remote_group(partition, &view, &plan, &map, &group, &mut stats)
                .await?;
            if !swapped {
                return Err(CleanerError::RemoteSwapRefused(format!(
                    "{}-{}",
                    partition.topic, partition.partition
                )));
            }
        }
        metrics::counter!("silt_remote_log_cleaner_passes_total").increment(1);
        metrics::counter!("silt_remote_log_cleaner_bytes_reclaimed_total").increment(
            stats
                .pass
                .bytes_before
                .saturating_sub(stats.pass.bytes_after),
        );
        Ok(Some(stats))
    }

    /// Maps the dirty remote segments; returns the map and the end of the section it
    /// covers (exclusive). Records still only local are left out on purpose: the
    /// bucket is the system of record, and a restore from it must find every key's
    /// latest value below its cut, so a value in the bucket is only removed by a newer
    /// one in the bucket (at the first pass after that one is copied).
    async fn build_map(
        &self,
        partition: &Arc<Partition>,
        view: &CleaningView,
        plan: &RemotePlan,
        stats: &mut RemoteCleanerStats,
    ) -> Result<(OffsetMap, i64), CleanerError> {
        let mut map = OffsetMap::new(self.cleaner.dedupe_buffer_bytes());
        let (start, limit) = (plan.first_dirty_offset, plan.first_uncleanable_offset);
        for piece in plan
            .pieces
            .iter()
            .filter(|piece| piece.metadata.next_offset() > start && piece.start < limit)
        {
            let path = self
                .download(partition, view, &piece.metadata, stats)
                .await?;
            let cleaner = self.cleaner.clone();
            let from = start.max(piece.start);
            let (returned, mapped, pass_stats) = run_niced(REMOTE_CLEANER_THREAD, move || {
                let mut pass_stats = CleanerStats::default();
                let mapped = map_segment(&path, from, limit, &mut map, &cleaner, &mut pass_stats);
                remove_scratch(&path);
                (map, mapped, pass_stats)
            })
            .await?;
            map = returned;
            stats.pass.bytes_read += pass_stats.bytes_read;
            if mapped?.is_some() {
                // Whole segments only: the clean section must end on a segment boundary.
                if piece.start <= start {
                    return Err(CleanerError::MapTooSmall {
                        segment_bytes: piece.metadata.size_bytes,
                    });
                }
                return Ok((map, piece.start));
            }
        }
        Ok((map, limit))
    }

    /// Downloads, filters, uploads and swaps one group; false when the swap was refused.
    async fn clean_remote_group(
        &self,
        partition: &Arc<Partition>,
        view: &Arc<CleaningView>,
        plan: &RemotePlan,
        map: &Arc<OffsetMap>,
        group: &[RemotePiece],
        stats: &mut RemoteCleanerStats,
    ) -> Result<bool, CleanerError> {
        let mut sealed = Vec::with_capacity(group.len());
        let downloaded = async {
            for piece in group {
                let path = self
                    .download(partition, view, &piece.metadata, stats)
                    .await?;
                sealed.push(piece.as_sealed(path));
            }
            Ok::<(), CleanerError>(())
        }
        .await;
        let downloads: Vec<PathBuf> = sealed
            .iter()
            .map(|segment| segment.log_path.clone())
            .collect();
        if let Err(error) = downloaded {
            run_niced(REMOTE_CLEANER_THREAD, move || {
                downloads.iter().for_each(|path| remove_scratch(path))
            })
            .await?;
            return Err(error);
        }
        let cleaner = self.cleaner.clone();
        let (view_for_task, map_for_task) = (Arc::clone(view), Arc::clone(map));
        let (first_dirty_offset, delete_horizon_ms) =
            (plan.first_dirty_offset, plan.delete_horizon_ms);
        let (cleaned, group_stats) = run_niced(REMOTE_CLEANER_THREAD, move || {
            let mut group_stats = CleanerStats::default();
            let rules = RetainRules {
                map: &map_for_task,
                first_dirty_offset,
                delete_horizon_ms,
                producer_last_offsets: &view_for_task.producer_last_offsets,
            };
            let target = ReplacementTarget {
                dir: &view_for_task.dir,
                index_interval_bytes: view_for_task.config.index_interval_bytes,
                keep_last_batch: true,
                now_ms: now_ms(),
            };
            let cleaned = clean_group(&target, &sealed, &rules, &cleaner, &mut group_stats)
                .and_then(|replacement| Ok(replacement.seal()?));
            sealed
                .iter()
                .for_each(|segment| remove_scratch(&segment.log_path));
            (cleaned, group_stats)
        })
        .await?;
        let cleaned = cleaned?;
        let bytes_before: u64 = group.iter().map(|piece| piece.metadata.size_bytes).sum();
        stats.pass.bytes_read += group_stats.bytes_read;
        stats.pass.records_removed += group_stats.records_removed;
        stats.pass.tombstones_removed += group_stats.tombstones_removed;
        stats.pass.segments_before += group.len();
        stats.pass.bytes_before += bytes_before;
        let unchanged = group.len() == 1
            && group[0].metadata.compacted
            && group_stats.records_removed == 0
            && cleaned.size_bytes == bytes_before;
        if unchanged {
            run_niced(REMOTE_CLEANER_THREAD, move || cleaned.remove()).await?;
            stats.pass.segments_after += 1;
            stats.pass.bytes_after += bytes_before;
            return Ok(true);
        }
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            run_niced(REMOTE_CLEANER_THREAD, move || cleaned.remove()).await?;
            return Ok(true);
        };
        let upload = CleanedSegment {
            base_offset: first.start,
            end_offset: last.metadata.end_offset,
            max_timestamp_ms: cleaned.max_timestamp,
            log: cleaned.log.clone(),
            offset_index: cleaned.offset_index.clone(),
            time_index: cleaned.time_index.clone(),
        };
        let replaced: Vec<RemoteSegmentMetadata> =
            group.iter().map(|piece| piece.metadata.clone()).collect();
        let swapped = self
            .remote
            .replace_remote_segments(partition, &replaced, &upload)
            .await;
        let size_after = cleaned.size_bytes;
        run_niced(REMOTE_CLEANER_THREAD, move || cleaned.remove()).await?;
        let swapped = swapped?;
        if swapped.is_some() {
            stats.segments_swapped += 1;
            stats.pass.segments_after += 1;
            stats.pass.bytes_after += size_after;
        }
        Ok(swapped.is_some())
    }

    /// Downloads a remote segment's `.log` into the log's scratch directory.
    async fn download(
        &self,
        partition: &Partition,
        view: &CleaningView,
        segment: &RemoteSegmentMetadata,
        stats: &mut RemoteCleanerStats,
    ) -> Result<PathBuf, CleanerError> {
        self.cleaner.check_stop()?;
        let (dir, name) = (
            view.dir.clone(),
            format!("remote-{}.log", segment.segment_id),
        );
        let path = run_niced(REMOTE_CLEANER_THREAD, move || scratch_path(&dir, &name)).await??;
        match self
            .remote
            .download_segment_log(partition, segment, &path)
            .await
        {
            Ok(bytes) => {
                stats.bytes_downloaded += bytes;
                let cleaner = self.cleaner.clone();
                // The download counts against the cleaner's I/O rate too.
                run_niced(REMOTE_CLEANER_THREAD, move || cleaner.throttle(bytes)).await?;
                Ok(path)
            }
            Err(error) => {
                run_niced(REMOTE_CLEANER_THREAD, move || remove_scratch(&path)).await?;
                Err(CleanerError::Remote(error))
            }
        }
    }
}

fn remove_scratch(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), %error, "removing a downloaded segment failed");
    }
}

fn task_error(error: tokio::task::JoinError) -> CleanerError {
    CleanerError::Io(std::io::Error::other(format!(
        "a cleaner task failed: {error}"
    )))
}

/// Logs a finished remote pass.
fn log_remote_pass(partition: &Partition, stats: &RemoteCleanerStats, elapsed_ms: u128) {
    let pass = &stats.pass;
    let rate = megabytes_per_second(pass.bytes_before, elapsed_ms);
    info!(
        topic = %partition.topic,
        partition = partition.partition,
        elapsed_ms = elapsed_ms as u64,
        mb_per_sec = format!("{rate:.1}"),
        first_dirty_offset = pass.first_dirty_offset,
        end_offset = pass.end_offset,
        keys = pass.keys,
        bytes_before = pass.bytes_before,
        bytes_after = pass.bytes_after,
        bytes_downloaded = stats.bytes_downloaded,
        records_removed = pass.records_removed,
        tombstones_removed = pass.tombstones_removed,
        segments_before = pass.segments_before,
        segments_after = pass.segments_after,
        segments_swapped = stats.segments_swapped,
        "cleaned remote log"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use silt_controller::{RemoteSegmentState, TopicId};

    use super::*;

    const NOW: i64 = 1_700_000_100_000;

    fn segment(id: u128, base: i64, end: i64, compacted: bool) -> RemoteSegmentMetadata {
        RemoteSegmentMetadata {
            topic_id: TopicId(uuid::Uuid::from_u128(7)),
            partition: 0,
            segment_id: uuid::Uuid::from_u128(id),
            base_offset: base,
            end_offset: end,
            max_timestamp_ms: NOW - 60_000 + end,
            size_bytes: 1_000,
            leader_epoch: 0,
            state: RemoteSegmentState::CopyFinished,
            broker_id: 1,
            event_timestamp_ms: NOW,
            segment_leader_epochs: BTreeMap::new(),
            compacted,
        }
    }

    fn compacted_config() -> LogConfig {
        LogConfig {
            cleanup_policy: "compact".into(),
            remote_storage_enable: true,
            delete_retention_ms: 10_000,
            ..LogConfig::default()
        }
    }

    #[test]
    fn the_dirty_section_starts_after_the_compacted_prefix() {
        let copied = [
            segment(3, 200, 299, false),
            segment(1, 0, 99, true),
            segment(2, 100, 199, true),
            segment(4, 300, 399, false),
        ];
        let plan = plan_remote(&copied, &compacted_config(), 0, NOW).expect("dirty");
        let order: Vec<i64> = plan.pieces.iter().map(|piece| piece.start).collect();
        assert_eq!(order, vec![0, 100, 200, 300]);
        assert_eq!(plan.first_dirty_offset, 200);
        assert_eq!(plan.first_uncleanable_offset, 400);
        assert_eq!(plan.dirty_bytes, 2_000);
        assert!((plan.dirty_ratio - 0.5).abs() < 1e-9);
        assert!(plan.is_due(0.5) && !plan.is_due(0.6));
        // The clean section's newest record is at NOW - 60_000 + 199.
        assert_eq!(plan.delete_horizon_ms, Some(NOW - 60_000 + 199 - 10_000));
    }

    #[test]
    fn nothing_dirty_or_not_compacted_plans_nothing() {
        let clean = [segment(1, 0, 99, true), segment(2, 100, 199, true)];
        assert_eq!(plan_remote(&clean, &compacted_config(), 0, NOW), None);
        let deleting = LogConfig {
            cleanup_policy: "delete".into(),
            ..compacted_config()
        };
        assert_eq!(
            plan_remote(&[segment(1, 0, 99, false)], &deleting, 0, NOW),
            None
        );
        assert_eq!(plan_remote(&[], &compacted_config(), 0, NOW), None);
    }

    #[test]
    fn overlapping_segments_of_two_leaders_are_read_from_where_the_last_ended() {
        let copied = [segment(1, 0, 99, false), segment(2, 50, 149, false)];
        let plan = plan_remote(&copied, &compacted_config(), 0, NOW).expect("dirty");
        let ranges: Vec<(i64, i64)> = plan
            .pieces
            .iter()
            .map(|piece| (piece.start, piece.metadata.end_offset))
            .collect();
        assert_eq!(ranges, vec![(0, 99), (100, 149)]);
        assert_eq!(plan.first_dirty_offset, 0);
        assert_eq!(plan.delete_horizon_ms, None);
    }

    #[test]
    fn compaction_lags_and_deleted_records_bound_the_section() {
        let copied = [
            segment(1, 0, 99, false),
            segment(2, 100, 199, false),
            segment(3, 200, 299, false),
        ];
        // Segment 3's newest record (NOW - 59_701) is younger than a 59.75 s lag.
        let lagging = LogConfig {
            min_compaction_lag_ms: 59_750,
            ..compacted_config()
        };
        let plan = plan_remote(&copied, &lagging, 0, NOW).expect("dirty");
        assert_eq!(plan.first_uncleanable_offset, 200);
        assert_eq!(plan.dirty_bytes, 2_000);
        // All of it is younger than a 10 minute lag.
        let young = LogConfig {
            min_compaction_lag_ms: 600_000,
            ..compacted_config()
        };
        assert_eq!(plan_remote(&copied, &young, 0, NOW), None);
        // Overdue: the oldest dirty segment is older than max.compaction.lag.ms.
        let overdue = LogConfig {
            max_compaction_lag_ms: 30_000,
            ..compacted_config()
        };
        let plan = plan_remote(&copied, &overdue, 0, NOW).expect("dirty");
        assert!(plan.overdue && plan.is_due(1.1));
        // Segments wholly below a DeleteRecords start are left to retention.
        let plan = plan_remote(&copied, &compacted_config(), 150, NOW).expect("dirty");
        assert_eq!(plan.pieces.first().map(|piece| piece.start), Some(100));
    }
}
