//! A read-only replica (`remote.read.only=true`): a cluster of its own that serves
//! consumers straight from a bucket another cluster writes, as Redpanda's remote read
//! replicas do, for analytics readers that must not load the production cluster.
//!
//! It writes nothing under the bucket's prefix: it does not claim it, uploads nothing,
//! cleans nothing and writes no restore points. Its topics are those of the newest
//! restore point of the writing cluster, followed every `restore.point.interval.ms`:
//! each partition's log is empty and starts at the restore point's cut, everything
//! below is read from the bucket. Produce and topic changes are refused with
//! `POLICY_VIOLATION`; consumer groups and their offsets are its own.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path;
use silt_controller::Controller;
use silt_tiering::TieringError;
use silt_tiering::restore_point::{RestorePointSelector, select_restore_point};
use tokio::sync::watch;
use tracing::{info, warn};

/// Follows the newest intact restore point under `prefix` every `interval`, while this
/// node is the active controller, until `shutdown` turns true. A restore point that
/// cannot be read or applied is logged and tried again next time; the topics stay as
/// the last applied one left them.
pub async fn follow_restore_points(
    controller: Controller,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut missing_reported = false;
    loop {
        if controller.is_active() {
            let applied = controller.metadata().restored_from.clone();
            match select_restore_point(store.as_ref(), &prefix, &RestorePointSelector::Latest).await
            {
                Ok((restore_point, _)) if applied.as_deref() != Some(&restore_point.id) => {
                    match controller
                        .follow_restore_point(&restore_point.id, restore_point.topics.clone())
                        .await
                    {
                        Ok(created) => {
                            metrics::gauge!("silt_read_replica_restore_point_created_ms")
                                .set(restore_point.created_ms as f64);
                            info!(restore_point = %restore_point.id, source_cluster = %restore_point.cluster_id, topics_created = created, "following a new restore point");
                        }
                        Err(error) => {
                            warn!(restore_point = %restore_point.id, %error, "applying a restore point failed; trying again");
                        }
                    }
                }
                Ok(_) => {}
                Err(TieringError::NoRestorePoint { .. }) if !missing_reported => {
                    warn!(prefix = %prefix, "no restore point to follow yet: is a cluster with tiered storage writing to this prefix?");
                    missing_reported = true;
                }
                Err(TieringError::NoRestorePoint { .. }) => {}
                Err(error) => warn!(%error, "reading the restore points failed; trying again"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
