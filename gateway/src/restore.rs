//! Bringing a cluster back from its restore points (`docs/disaster-recovery.md`).
//!
//! `silt restore` ([`prepare_restore`]) picks a restore point in the object store and
//! leaves it in a fresh log dir as [`PENDING_RESTORE_FILE`]; nothing is downloaded, the
//! restored partitions read their history from the bucket. The following `silt serve`
//! adopts the restore point's cluster id, applies it through the controller
//! ([`apply_restore`]: topics with their ids and configs, the remote segments below each
//! cut, producer ids), opens every partition at its cut, commits the restored group
//! offsets of the groups it coordinates ([`restore_group_offsets`]) and only then
//! removes the file and serves clients. Every step can run again: a node killed in the
//! middle finishes the restore on its next start.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use silt_broker::checkpoint::write_file_atomically;
use silt_broker::consumer_offsets::CONSUMER_OFFSETS_TOPIC;
use silt_broker::group_coordinator::GroupCoordinator;
use silt_broker::replica_manager::now_ms;
use silt_controller::{BrokerId, Controller, ControllerError, RestoredTopic};
use silt_tiering::restore_point::{
    GroupOffsets, RestorePoint, RestorePointSelector, list_restore_points, select_restore_point,
};
use silt_tiering::{ObjectStoreConfig, TieringError, open_object_store};
use tracing::{debug, info, warn};

use crate::restore_point_writer::committed_offsets;

/// The restore point a restore leaves in the (first) log dir for `silt serve`.
pub const PENDING_RESTORE_FILE: &str = "restore-point.pending";

/// How often a refused commit of a group's restored offsets is tried (every 100 ms).
const COMMIT_ATTEMPTS: u32 = 600;

/// A restore is refused while the newest restore point is younger than this many of the
/// cluster's restore point intervals: the cluster is probably still running.
const LIVE_CLUSTER_INTERVALS: i64 = 3;

/// Errors of a restore.
#[derive(thiserror::Error, Debug)]
pub enum RestoreError {
    /// The object store or a restore point in it failed.
    #[error(transparent)]
    Tiering(#[from] TieringError),
    /// The controller refused or failed the restore.
    #[error("controller: {0}")]
    Controller(#[from] ControllerError),
    /// Reading or writing the log dir failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The log dir holds data already: a restore needs a fresh one.
    #[error(
        "log dir {dir} is not empty (it holds {entry}): restore into a fresh log dir, or \
         move this one away first"
    )]
    LogDirInUse {
        /// The log dir.
        dir: String,
        /// The first entry found.
        entry: String,
    },
    /// The cluster of the restore point still writes restore points.
    #[error(
        "cluster {cluster_id} wrote restore point {id} {age_s} s ago and is probably still \
         running on this prefix: stop every node of it first (a restore waits for \
         {threshold_s} s of silence), or pass --force if it is gone"
    )]
    ClusterStillRunning {
        /// The old cluster's id.
        cluster_id: String,
        /// The newest restore point.
        id: String,
        /// Its age in seconds.
        age_s: i64,
        /// How long after the newest restore point a restore is allowed, in seconds.
        threshold_s: i64,
    },
    /// The pending restore file cannot be read.
    #[error("pending restore {path}: {reason}; run `silt restore` again")]
    BadPendingRestore {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--cluster-id` names another cluster than the restore point.
    #[error(
        "cluster.id is {configured} but the pending restore is of cluster {restored}: drop \
         the setting or restore the right cluster"
    )]
    ClusterIdMismatch {
        /// The configured id.
        configured: String,
        /// The restore point's cluster id.
        restored: String,
    },
}

/// `<log_dir>/restore-point.pending`.
pub fn pending_restore_path(log_dir: &Path) -> PathBuf {
    log_dir.join(PENDING_RESTORE_FILE)
}

/// The restore point `silt restore` left in `log_dir`, if any.
///
/// # Errors
/// [`RestoreError::BadPendingRestore`] when the file is there but does not check out.
pub fn read_pending_restore(log_dir: &Path) -> Result<Option<RestorePoint>, RestoreError> {
    let path = pending_restore_path(log_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(RestoreError::BadPendingRestore {
                path: path.display().to_string(),
                reason: error.to_string(),
            });
        }
    };
    RestorePoint::decode(&bytes, &path.display().to_string())
        .map(Some)
        .map_err(|error| RestoreError::BadPendingRestore {
            path: path.display().to_string(),
            reason: error.to_string(),
        })
}

/// Removes the pending restore once it is applied.
///
/// # Errors
/// [`RestoreError::Io`] when the file cannot be removed.
pub fn remove_pending_restore(log_dir: &Path) -> Result<(), RestoreError> {
    match std::fs::remove_file(pending_restore_path(log_dir)) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::Io {
            what: format!("removing {}", pending_restore_path(log_dir).display()),
            source,
        }),
    }
}

/// What `silt restore` did.
#[derive(Debug)]
pub struct PreparedRestore {
    /// The restore point left for `silt serve`.
    pub restore_point: RestorePoint,
    /// Newer restore points skipped because they do not check out.
    pub skipped: Vec<TieringError>,
}

/// `silt restore`: picks the restore point `selector` names under `object_store` and
/// leaves it in `log_dir` for the next `silt serve`. The log dir must be fresh (missing,
/// empty, or holding only an earlier pending restore, which is replaced). Unless
/// `force`, a restore is refused while the restore point's cluster still writes restore
/// points (its newest is younger than three of its intervals).
///
/// # Errors
/// [`RestoreError::LogDirInUse`], [`RestoreError::ClusterStillRunning`], the object
/// store's errors, [`TieringError::NoRestorePoint`] when nothing qualifies,
/// [`RestoreError::Io`] when the log dir cannot be written.
pub async fn prepare_restore(
    object_store: &ObjectStoreConfig,
    log_dir: &Path,
    selector: &RestorePointSelector,
    force: bool,
) -> Result<PreparedRestore, RestoreError> {
    check_fresh_log_dir(log_dir)?;
    let (store, prefix) = open_object_store(object_store).await?;
    let (restore_point, skipped) = select_restore_point(store.as_ref(), &prefix, selector).await?;
    if !force {
        let newest = list_restore_points(store.as_ref(), &prefix)
            .await?
            .pop()
            .map_or(restore_point.created_ms, |newest| newest.created_ms);
        let threshold_ms = restore_point
            .interval_ms
            .saturating_mul(LIVE_CLUSTER_INTERVALS);
        let age_ms = now_ms().saturating_sub(newest);
        if threshold_ms > 0 && age_ms < threshold_ms {
            return Err(RestoreError::ClusterStillRunning {
                cluster_id: restore_point.cluster_id.clone(),
                id: restore_point.id.clone(),
                age_s: age_ms / 1000,
                threshold_s: threshold_ms / 1000,
            });
        }
    }
    let bytes = restore_point.encode()?;
    let path = pending_restore_path(log_dir);
    let write = path.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(write.parent().unwrap_or(Path::new(".")))?;
        write_file_atomically(&write, &bytes)
    })
    .await
    .map_err(|error| RestoreError::Io {
        what: "writing the pending restore".to_string(),
        source: io::Error::other(error.to_string()),
    })?
    .map_err(|source| RestoreError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok(PreparedRestore {
        restore_point,
        skipped,
    })
}

fn check_fresh_log_dir(log_dir: &Path) -> Result<(), RestoreError> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RestoreError::Io {
                what: format!("reading log dir {}", log_dir.display()),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| RestoreError::Io {
            what: format!("reading log dir {}", log_dir.display()),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover_of_a_restore =
            name == PENDING_RESTORE_FILE || name == format!("{PENDING_RESTORE_FILE}.tmp");
        if !leftover_of_a_restore {
            return Err(RestoreError::LogDirInUse {
                dir: log_dir.display().to_string(),
                entry: name,
            });
        }
    }
    Ok(())
}

/// Applies `restore_point` through the controller: once enough brokers are unfenced for
/// its replication factors (at most `cluster_size`), proposes the restore (a no-op when
/// it was applied before) and waits until this node's metadata holds it. Internal topics
/// are left to the brokers, which create `__consumer_offsets` as usual.
///
/// # Errors
/// The controller's refusal (a cluster with topics of its own, or restored from another
/// restore point already).
pub async fn apply_restore(
    controller: &Controller,
    restore_point: &RestorePoint,
    cluster_size: usize,
) -> Result<(), RestoreError> {
    let topics: Vec<RestoredTopic> = restore_point
        .topics
        .iter()
        .filter(|topic| !topic.internal)
        .cloned()
        .collect();
    let wanted_brokers = topics
        .iter()
        .map(|topic| usize::from(topic.replication_factor.max(1).unsigned_abs()))
        .max()
        .unwrap_or(1)
        .min(cluster_size.max(1));
    let mut updates = controller.subscribe();
    let mut waited = false;
    loop {
        let metadata = controller.metadata();
        if metadata.restored_from.as_deref() == Some(restore_point.id.as_str()) {
            return Ok(());
        }
        let brokers = metadata.unfenced_brokers().count();
        if brokers >= wanted_brokers {
            match controller
                .restore_cluster(
                    &restore_point.id,
                    topics.clone(),
                    restore_point.next_producer_id,
                )
                .await
            {
                Ok(created) => {
                    info!(restore_point = %restore_point.id, cluster_id = %restore_point.cluster_id, topics = created, "restored the cluster's topics from the restore point");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        updates.wait_for(|metadata| {
                            metadata.restored_from.as_deref() == Some(restore_point.id.as_str())
                        }),
                    )
                    .await;
                    continue;
                }
                Err(ControllerError::Rejected(error)) => {
                    return Err(ControllerError::Rejected(error).into());
                }
                Err(error) => {
                    warn!(%error, "restoring the cluster's topics failed; retrying");
                }
            }
        } else if !waited {
            info!(
                brokers,
                wanted_brokers, "the restore waits for the brokers its replication factors need"
            );
            waited = true;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), updates.changed()).await;
    }
}

/// Commits the restored offsets of every group whose coordinator this broker is, for
/// the partitions that have no committed offset yet (so a rerun never moves a group
/// back). Groups coordinated by other brokers are left to them: every node of a restored
/// cluster restores. Waits until `__consumer_offsets` exists and the partitions this
/// broker leads are loaded. Returns how many offsets it committed.
pub async fn restore_group_offsets(
    controller: &Controller,
    coordinator: &GroupCoordinator,
    broker_id: BrokerId,
    groups: &[GroupOffsets],
) -> usize {
    let mut committed = 0;
    for group in groups {
        let mut attempts = 0;
        loop {
            let metadata = controller.metadata();
            let partition = coordinator.partition_for(&group.group_id);
            let leader = metadata
                .topic(CONSUMER_OFFSETS_TOPIC)
                .and_then(|topic| topic.partition(partition))
                .map(|assignment| assignment.leader);
            match leader {
                Some(leader)
                    if leader == broker_id && coordinator.is_coordinator_for(&group.group_id) =>
                {
                    match commit_missing_offsets(coordinator, group).await {
                        Ok(count) => {
                            committed += count;
                            break;
                        }
                        // The coordinator may answer before its partition's log is
                        // hosted here (it follows the same metadata): try again.
                        Err(errors) if attempts < COMMIT_ATTEMPTS => {
                            attempts += 1;
                            debug!(group = %group.group_id, ?errors, "restoring the group's committed offsets: retrying");
                        }
                        Err(errors) => {
                            warn!(group = %group.group_id, ?errors, "restoring the group's committed offsets failed; the group starts from its auto.offset.reset");
                            break;
                        }
                    }
                }
                // Led here but not loaded yet: wait.
                Some(leader) if leader == broker_id => {}
                Some(leader) if leader >= 0 => break,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    committed
}

/// Commits the offsets of `group` its coordinator does not have (OffsetCommit without a
/// generation, as an admin tool commits for an empty group). Returns how many it
/// committed, or the error codes of the partitions the coordinator refused.
async fn commit_missing_offsets(
    coordinator: &GroupCoordinator,
    group: &GroupOffsets,
) -> Result<usize, Vec<i16>> {
    let group_id = GroupId(StrBytes::from_string(group.group_id.clone()));
    let fetched = coordinator
        .offset_fetch(
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(group_id.clone())
                    .with_topics(None),
            ]),
            8,
        )
        .await;
    let present: std::collections::HashSet<(String, i32)> = fetched
        .groups
        .iter()
        .flat_map(committed_offsets)
        .map(|committed| (committed.topic, committed.partition))
        .collect();
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for offset in &group.offsets {
        if present.contains(&(offset.topic.clone(), offset.partition)) {
            continue;
        }
        by_topic.entry(offset.topic.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(offset.partition)
                .with_committed_offset(offset.offset)
                .with_committed_leader_epoch(offset.leader_epoch)
                .with_committed_metadata(Some(StrBytes::from_string(offset.metadata.clone()))),
        );
    }
    let count: usize = by_topic.values().map(Vec::len).sum();
    if count == 0 {
        return Ok(0);
    }
    let topics = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id)
        .with_generation_id_or_member_epoch(-1)
        .with_topics(topics);
    let response = coordinator.offset_commit(request, 8).await;
    let failed: Vec<i16> = response
        .topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .map(|partition| partition.error_code)
        .filter(|code| *code != 0)
        .collect();
    if failed.is_empty() {
        info!(group = %group.group_id, offsets = count, "restored the group's committed offsets");
        Ok(count)
    } else {
        Err(failed)
    }
}
