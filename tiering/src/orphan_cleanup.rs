//! Objects without metadata (e.g. a deletion whose entry was finished while another
//! process still wrote objects, or a bucket shared with a lost cluster state): found by
//! listing `<prefix>/topics/` and deleted after a grace period.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use silt_broker::replica_manager::{ReplicaManager, now_ms};
use silt_controller::{ClusterMetadata, Controller};
use tracing::info;
use uuid::Uuid;

use crate::TieringError;
use crate::object_layout::{parse_segment_object_location, topic_dir_name, topics_root};
use crate::segment_upload::delete_if_exists;

/// Deletes segment objects whose segment id is in no metadata entry and that are older
/// than `grace_ms`, in partitions this broker leads, or of unknown topics when `janitor`
/// says this broker cleans those. Returns the number of objects deleted.
pub(crate) async fn delete_unreferenced_objects(
    store: &dyn ObjectStore,
    prefix: &Path,
    controller: &Controller,
    replica_manager: &ReplicaManager,
    in_progress: &HashSet<Uuid>,
    grace_ms: i64,
    janitor: impl Fn(&ClusterMetadata) -> bool,
) -> Result<usize, TieringError> {
    let listed: Vec<ObjectMeta> = store.list(Some(&topics_root(prefix))).try_collect().await?;
    // Read after listing: an object listed above has its entry in this view unless orphaned.
    let metadata = controller.metadata();
    let known_segments: HashSet<Uuid> = metadata
        .remote_segments
        .values()
        .flat_map(|segments| segments.keys().copied())
        .collect();
    let live_topics: HashMap<String, &str> = metadata
        .topics
        .values()
        .map(|topic| {
            (
                topic_dir_name(&topic.name, topic.topic_id),
                topic.name.as_str(),
            )
        })
        .collect();
    let is_janitor = janitor(&metadata);
    let broker_id = replica_manager.broker_id();
    let now = now_ms();
    let mut deleted = 0usize;
    for object in listed {
        let Some(location) = parse_segment_object_location(prefix, &object.location) else {
            continue;
        };
        if known_segments.contains(&location.segment_id)
            || in_progress.contains(&location.segment_id)
        {
            continue;
        }
        let age_ms = now.saturating_sub(object.last_modified.timestamp_millis());
        if age_ms <= grace_ms {
            continue;
        }
        let responsible = match live_topics.get(&location.topic_dir) {
            Some(topic) => replica_manager
                .partition(topic, location.partition)
                .is_some_and(|partition| partition.leader() == broker_id),
            None => is_janitor,
        };
        if !responsible {
            continue;
        }
        info!(location = %object.location, segment_id = %location.segment_id, age_ms, "deleting remote object without metadata");
        delete_if_exists(store, &object.location).await?;
        deleted += 1;
    }
    if deleted > 0 {
        metrics::counter!(crate::remote_log_manager::METRIC_DELETED_OBJECTS)
            .increment(deleted as u64);
    }
    Ok(deleted)
}
