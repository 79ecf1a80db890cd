//! Which cluster owns an object-store prefix. A cluster that tiers writes
//! `<prefix>/cluster.json` (`{"version":1,"cluster_id":...,"created_ms":...}`) with a
//! conditional create before it writes anything else there, and refuses to start on a
//! prefix another cluster owns. Without this, a fresh cluster pointed at an old
//! cluster's prefix would take the old archive for orphans of its own and delete it.
//!
//! A prefix written before markers existed is claimed only by the cluster whose topics
//! its objects belong to: a cluster that finds objects of topic ids it does not know
//! refuses it as another cluster's archive.

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::TieringError;
use crate::object_layout::{parse_segment_object_location, topics_root};

/// Name of the marker object under the prefix.
pub const CLUSTER_MARKER: &str = "cluster.json";
const MARKER_VERSION: u32 = 1;

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClusterMarker {
    version: u32,
    cluster_id: String,
    /// When the cluster claimed the prefix (ms since the epoch).
    created_ms: i64,
}

/// Makes sure `prefix` belongs to cluster `cluster_id`: reads the marker and compares,
/// or, when there is none, checks that every topic folder under the prefix is in
/// `own_topic_dirs` (`<topic>-<topicId>` of this cluster's topics) and creates the
/// marker. Two clusters claiming a new prefix at once: one create wins, the other reads
/// the winner's marker.
///
/// # Errors
/// [`TieringError::PrefixOwned`] when another cluster's marker is there;
/// [`TieringError::ForeignObjects`] when an unmarked prefix holds topics this cluster
/// does not know; [`TieringError::CorruptMarker`] when the marker cannot be read as one;
/// [`TieringError::ObjectStore`] when the store fails.
pub async fn claim_prefix(
    store: &dyn ObjectStore,
    prefix: &Path,
    cluster_id: &str,
    own_topic_dirs: &HashSet<String>,
    now_ms: i64,
) -> Result<(), TieringError> {
    let marker_path = prefix.clone().join(CLUSTER_MARKER);
    loop {
        if let Some(owner) = read_marker(store, &marker_path).await? {
            if owner.cluster_id == cluster_id {
                return Ok(());
            }
            return Err(TieringError::PrefixOwned {
                prefix: prefix.to_string(),
                owner: owner.cluster_id,
                cluster_id: cluster_id.to_string(),
            });
        }
        let listed: Vec<ObjectMeta> = store.list(Some(&topics_root(prefix))).try_collect().await?;
        let foreign: HashSet<String> = listed
            .iter()
            .filter_map(|object| parse_segment_object_location(prefix, &object.location))
            .map(|location| location.topic_dir)
            .filter(|topic_dir| !own_topic_dirs.contains(topic_dir))
            .collect();
        if let Some(topic_dir) = foreign.into_iter().min() {
            return Err(TieringError::ForeignObjects {
                prefix: prefix.to_string(),
                topic_dir,
                cluster_id: cluster_id.to_string(),
            });
        }
        let marker = ClusterMarker {
            version: MARKER_VERSION,
            cluster_id: cluster_id.to_string(),
            created_ms: now_ms,
        };
        let bytes = serde_json::to_vec(&marker).map_err(|error| TieringError::CorruptMarker {
            object: marker_path.to_string(),
            reason: error.to_string(),
        })?;
        let created = store
            .put_opts(
                &marker_path,
                PutPayload::from(bytes),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match created {
            // Read back: some S3-compatible servers check `If-None-Match` apart from the
            // write, so a concurrent create may have replaced ours; the next pass sees
            // whose marker stands.
            Ok(_) => {
                if read_marker(store, &marker_path)
                    .await?
                    .is_some_and(|marker| marker.cluster_id == cluster_id)
                {
                    info!(prefix = %prefix, cluster_id, "claimed the object store prefix for this cluster");
                    return Ok(());
                }
            }
            // Another node (of this cluster or another) created it first: read theirs.
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether `prefix`'s marker names `cluster_id`. Checked before anything under the
/// prefix is deleted as an orphan, so that a cluster that lost its claim (a marker
/// replaced by another cluster, or removed) never deletes what it may not have written.
///
/// # Errors
/// [`TieringError::CorruptMarker`] for an unreadable marker, [`TieringError::ObjectStore`]
/// when the store fails.
pub async fn owns_prefix(
    store: &dyn ObjectStore,
    prefix: &Path,
    cluster_id: &str,
) -> Result<bool, TieringError> {
    let marker_path = prefix.clone().join(CLUSTER_MARKER);
    Ok(read_marker(store, &marker_path)
        .await?
        .is_some_and(|marker| marker.cluster_id == cluster_id))
}

async fn read_marker(
    store: &dyn ObjectStore,
    marker_path: &Path,
) -> Result<Option<ClusterMarker>, TieringError> {
    let bytes = match store.get(marker_path).await {
        Ok(result) => result.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let marker: ClusterMarker =
        serde_json::from_slice(&bytes).map_err(|error| TieringError::CorruptMarker {
            object: marker_path.to_string(),
            reason: error.to_string(),
        })?;
    if marker.version != MARKER_VERSION || marker.cluster_id.is_empty() {
        return Err(TieringError::CorruptMarker {
            object: marker_path.to_string(),
            reason: format!(
                "version {} with cluster id {:?}; this Silt reads version {MARKER_VERSION}",
                marker.version, marker.cluster_id
            ),
        });
    }
    Ok(Some(marker))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;

    fn dirs(names: &[&str]) -> HashSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[tokio::test]
    async fn the_first_cluster_claims_and_a_second_is_refused() {
        let store = Arc::new(InMemory::new());
        let prefix = Path::from("archive");
        claim_prefix(store.as_ref(), &prefix, "cluster-a", &dirs(&[]), 1)
            .await
            .expect("an empty prefix is claimed");
        claim_prefix(store.as_ref(), &prefix, "cluster-a", &dirs(&[]), 2)
            .await
            .expect("the owner claims again");
        let refused = claim_prefix(store.as_ref(), &prefix, "cluster-b", &dirs(&[]), 3).await;
        match refused {
            Err(TieringError::PrefixOwned {
                owner, cluster_id, ..
            }) => {
                assert_eq!(
                    (owner.as_str(), cluster_id.as_str()),
                    ("cluster-a", "cluster-b")
                );
            }
            other => panic!("expected PrefixOwned, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn ownership_follows_the_marker() {
        let store = Arc::new(InMemory::new());
        let prefix = Path::from("archive");
        assert!(
            !owns_prefix(store.as_ref(), &prefix, "a")
                .await
                .expect("check")
        );
        claim_prefix(store.as_ref(), &prefix, "a", &dirs(&[]), 1)
            .await
            .expect("claim");
        assert!(
            owns_prefix(store.as_ref(), &prefix, "a")
                .await
                .expect("check")
        );
        assert!(
            !owns_prefix(store.as_ref(), &prefix, "b")
                .await
                .expect("check")
        );
    }

    #[tokio::test]
    async fn an_unmarked_prefix_with_unknown_topics_is_refused() {
        let store = Arc::new(InMemory::new());
        let prefix = Path::from("old");
        let object = Path::from(format!(
            "old/topics/orders-AAAAAAAAAAAAAAAAAAAAAQ/0/{:020}-{}.log",
            0,
            uuid::Uuid::from_u128(1)
        ));
        let _put = store
            .put(&object, PutPayload::from_static(b"x"))
            .await
            .expect("put");
        let refused = claim_prefix(store.as_ref(), &prefix, "fresh", &dirs(&[]), 1).await;
        assert!(
            matches!(&refused, Err(TieringError::ForeignObjects { topic_dir, .. }) if topic_dir == "orders-AAAAAAAAAAAAAAAAAAAAAQ"),
            "{refused:?}"
        );
        claim_prefix(
            store.as_ref(),
            &prefix,
            "upgraded",
            &dirs(&["orders-AAAAAAAAAAAAAAAAAAAAAQ"]),
            1,
        )
        .await
        .expect("the cluster that wrote them claims the prefix");
    }

    #[tokio::test]
    async fn a_corrupt_marker_names_the_object() {
        let store = Arc::new(InMemory::new());
        let prefix = Path::from("p");
        let _put = store
            .put(
                &Path::from("p/cluster.json"),
                PutPayload::from_static(b"{not json"),
            )
            .await
            .expect("put");
        let refused = claim_prefix(store.as_ref(), &prefix, "a", &dirs(&[]), 1).await;
        assert!(
            matches!(&refused, Err(TieringError::CorruptMarker { object, .. }) if object == "p/cluster.json"),
            "{refused:?}"
        );
    }
}
