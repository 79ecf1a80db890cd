//! Writes restore points (`silt_tiering::restore_point`) on a schedule, on the active
//! controller only, and on demand (`silt restore-points create`, on any node), then
//! prunes those past `restore.point.retention.ms`.
//!
//! The cluster metadata (topics, remote segments, producer ids) is the node's own
//! replica of the controller's state, all of one metadata offset. Committed offsets are
//! asked of every unfenced broker over the Kafka protocol (ListGroups, then OffsetFetch
//! v8 for the groups it coordinates), as an admin client would. A broker that does not
//! answer fails the restore point: none is written rather than one that misses groups.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::{ListGroupsRequest, OffsetFetchRequest};
use object_store::ObjectStore;
use object_store::path::Path;
use silt_broker::error::error_code;
use silt_broker::replica_manager::now_ms;
use silt_controller::{BrokerRegistration, Controller};
use silt_tiering::TieringError;
use silt_tiering::restore_point::{
    CommittedOffset, GroupOffsets, RestorePoint, prune_restore_points, write_restore_point,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::kafka_connection::{ConnectionError, KafkaConnection};

/// Largest response the writer accepts from a broker, in bytes.
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// How long one broker may take to list its groups and their offsets.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors writing a restore point.
#[derive(thiserror::Error, Debug)]
pub enum RestorePointWriteError {
    /// The object store failed; no restore point was written.
    #[error(transparent)]
    Tiering(#[from] TieringError),
    /// A broker did not list its groups' offsets; no restore point was written.
    #[error("broker {broker_id} at {address} did not list its consumer groups: {reason}")]
    Groups {
        /// The broker.
        broker_id: i32,
        /// Its advertised address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The cluster id is not known yet.
    #[error("the cluster id is not known yet")]
    NoClusterId,
}

/// Writes restore points for one node.
pub struct RestorePointWriter {
    controller: Controller,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// `restore.point.interval.ms`; 0 = only on demand.
    interval_ms: u64,
    /// `restore.point.retention.ms`.
    retention_ms: i64,
    /// Serializes writes (schedule and demand).
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RestorePointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestorePointWriter")
            .field("prefix", &self.prefix)
            .field("interval_ms", &self.interval_ms)
            .field("retention_ms", &self.retention_ms)
            .finish_non_exhaustive()
    }
}

impl RestorePointWriter {
    /// A writer to `store` under `prefix`: one restore point every `interval_ms` (0 =
    /// only on demand) while this node is the active controller, keeping them
    /// `retention_ms`.
    pub fn new(
        controller: Controller,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        interval_ms: u64,
        retention_ms: i64,
    ) -> Arc<Self> {
        Arc::new(RestorePointWriter {
            controller,
            store,
            prefix,
            interval_ms,
            retention_ms,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes one restore point now and prunes old ones; returns it.
    ///
    /// # Errors
    /// [`RestorePointWriteError`]: nothing was written (a failed prune after a written
    /// restore point is only logged).
    pub async fn create(&self) -> Result<RestorePoint, RestorePointWriteError> {
        let _one_at_a_time = self.writing.lock().await;
        let metadata = self.controller.metadata();
        if metadata.cluster_id.is_empty() {
            return Err(RestorePointWriteError::NoClusterId);
        }
        let mut groups = Vec::new();
        for broker in metadata.unfenced_brokers() {
            groups.extend(broker_group_offsets(broker).await?);
        }
        let mut restore_point = RestorePoint::from_metadata(&metadata, groups, now_ms());
        restore_point.interval_ms = i64::try_from(self.interval_ms).unwrap_or(i64::MAX);
        let started = std::time::Instant::now();
        write_restore_point(self.store.as_ref(), &self.prefix, &restore_point).await?;
        metrics::counter!("silt_restore_points_written_total").increment(1);
        metrics::gauge!("silt_restore_point_last_created_ms").set(restore_point.created_ms as f64);
        info!(
            id = %restore_point.id,
            partitions = restore_point.partition_count(),
            bytes = restore_point.size_bytes(),
            groups = restore_point.groups.len(),
            write_ms = started.elapsed().as_millis() as u64,
            "wrote a restore point"
        );
        match prune_restore_points(
            self.store.as_ref(),
            &self.prefix,
            self.retention_ms,
            now_ms(),
        )
        .await
        {
            Ok(pruned) if !pruned.is_empty() => {
                debug!(count = pruned.len(), "pruned old restore points");
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "pruning old restore points failed"),
        }
        Ok(restore_point)
    }

    /// Runs the schedule until `shutdown` turns true: every `interval_ms`, a restore
    /// point if this node is the active controller. A failed one (an S3 outage, a broker
    /// that does not answer) is logged and counted; the next interval tries again.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.interval_ms == 0 {
            return;
        }
        let interval = Duration::from_millis(self.interval_ms);
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if !self.controller.is_active() {
                continue;
            }
            if let Err(error) = self.create().await {
                metrics::counter!("silt_restore_point_failures_total").increment(1);
                warn!(%error, "no restore point this interval");
            }
        }
    }
}

/// The committed offsets of every group `broker` coordinates.
async fn broker_group_offsets(
    broker: &BrokerRegistration,
) -> Result<Vec<GroupOffsets>, RestorePointWriteError> {
    let address = format!("{}:{}", broker.host, broker.port);
    let failed = |reason: String| RestorePointWriteError::Groups {
        broker_id: broker.broker_id,
        address: address.clone(),
        reason,
    };
    let asked = tokio::time::timeout(BROKER_TIMEOUT, async {
        let mut connection =
            KafkaConnection::connect(address.as_str(), "silt-restore-points", MAX_RESPONSE_BYTES)
                .await
                .map_err(ConnectionError::from)?;
        let listed = connection.call(&ListGroupsRequest::default(), 4).await?;
        if listed.error_code != error_code(None) {
            return Ok(Err(format!("ListGroups error code {}", listed.error_code)));
        }
        if listed.groups.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let request = OffsetFetchRequest::default().with_groups(
            listed
                .groups
                .iter()
                .map(|group| {
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group.group_id.clone())
                        .with_topics(None)
                })
                .collect(),
        );
        let fetched = connection.call(&request, 8).await?;
        Ok::<_, ConnectionError>(Ok(fetched.groups))
    })
    .await
    .map_err(|_| failed(format!("no answer within {} s", BROKER_TIMEOUT.as_secs())))?
    .map_err(|error| failed(error.to_string()))?
    .map_err(failed)?;
    let mut groups = Vec::new();
    for group in asked {
        if group.error_code != error_code(None) {
            return Err(failed(format!(
                "OffsetFetch of group {} error code {}",
                group.group_id.0, group.error_code
            )));
        }
        let offsets = committed_offsets(&group);
        if !offsets.is_empty() {
            groups.push(GroupOffsets {
                group_id: group.group_id.0.to_string(),
                offsets,
            });
        }
    }
    Ok(groups)
}

/// The committed offsets in one group's OffsetFetch (v8) answer; partitions without a
/// committed offset are left out.
pub(crate) fn committed_offsets(group: &OffsetFetchResponseGroup) -> Vec<CommittedOffset> {
    group
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|partition| partition.committed_offset >= 0)
                .map(|partition| CommittedOffset {
                    topic: topic.name.0.to_string(),
                    partition: partition.partition_index,
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: partition
                        .metadata
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                })
        })
        .collect()
}
