//! The openraft state machine: applies committed entries to the in-memory
//! [`ClusterMetadata`], publishes every new version to subscribers, and builds and installs
//! snapshots.
//!
//! The metadata itself is not written on apply; it is durable through snapshots plus the
//! raft log, which openraft replays from the last snapshot on start.

use std::io;
use std::io::Cursor;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;

use openraft::BasicNode;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StoredMembership;
use openraft::storage::RaftStateMachine;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::applied_requests::AppliedRequests;
use crate::cluster_metadata::BrokerId;
use crate::cluster_metadata::ClusterMetadata;
use crate::cluster_metadata::NO_BROKER;
use crate::command::CommandOutput;
use crate::command::CommandResult;
use crate::command::NodeId;
use crate::command::TypeConfig;
use crate::snapshot;
use crate::snapshot::StoredSnapshot;

/// Publishes each applied version of the metadata, in log order.
pub(crate) type MetadataPublisher = watch::Sender<Arc<ClusterMetadata>>;

/// The raft state machine of one controller node. Clones share state; the clone handed to
/// openraft as snapshot builder sees the same metadata.
#[derive(Clone)]
pub(crate) struct MetadataStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    applied: Mutex<AppliedState>,
    current_snapshot: Mutex<Option<StoredSnapshot>>,
    /// Serializes snapshot file writes of the snapshot builder and of installs.
    snapshot_writes: tokio::sync::Mutex<()>,
    publisher: Arc<MetadataPublisher>,
    /// This node's id once known, to count only the leader changes it decided.
    local_node: AtomicI64,
}

struct AppliedState {
    metadata: Arc<ClusterMetadata>,
    /// Answers of recent [`crate::command::Command::Once`] writes.
    requests: AppliedRequests,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
}

impl MetadataStore {
    /// Loads the latest snapshot of `dir`, if any, as the starting state.
    pub(crate) async fn open(dir: &Path) -> io::Result<MetadataStore> {
        let loaded = snapshot::load(dir).await?;
        let applied = match &loaded {
            Some(stored) => {
                let (metadata, requests) = snapshot::decode_state(&stored.data)?;
                AppliedState {
                    metadata: Arc::new(metadata),
                    requests,
                    last_applied: stored.meta.last_log_id,
                    last_membership: stored.meta.last_membership.clone(),
                }
            }
            None => AppliedState {
                metadata: Arc::new(ClusterMetadata::default()),
                requests: AppliedRequests::default(),
                last_applied: None,
                last_membership: StoredMembership::default(),
            },
        };
        if let Some(stored) = &loaded {
            tracing::info!(
                last_log_index = stored.meta.last_log_id.map(|log_id| log_id.index),
                snapshot_id = %stored.meta.snapshot_id,
                "loaded controller snapshot"
            );
        }
        let (publisher, _initial_receiver) = watch::channel(Arc::clone(&applied.metadata));
        Ok(MetadataStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                applied: Mutex::new(applied),
                current_snapshot: Mutex::new(loaded),
                snapshot_writes: tokio::sync::Mutex::new(()),
                publisher: Arc::new(publisher),
                local_node: AtomicI64::new(i64::from(NO_BROKER)),
            }),
        })
    }

    /// Tells the store which node it runs on (for metrics only).
    pub(crate) fn set_local_node(&self, node_id: BrokerId) {
        self.shared
            .local_node
            .store(i64::from(node_id), Ordering::Relaxed);
    }

    /// The channel every applied metadata version is published on.
    pub(crate) fn publisher(&self) -> Arc<MetadataPublisher> {
        Arc::clone(&self.shared.publisher)
    }

    /// Applies entries in order and publishes the result once.
    fn apply_entries(&self, entries: Vec<Entry<TypeConfig>>) -> Vec<CommandResult> {
        let mut responses = Vec::with_capacity(entries.len());
        if entries.is_empty() {
            return responses;
        }
        let mut guard = self.shared.applied.lock();
        let applied = &mut *guard;
        let metadata = Arc::make_mut(&mut applied.metadata);
        for entry in entries {
            debug_assert!(
                applied.last_applied < Some(entry.log_id),
                "entries apply in log order"
            );
            metadata.metadata_offset = entry.log_id.index;
            let response = match entry.payload {
                EntryPayload::Blank => {
                    metadata.controller_id = leader_of(&entry.log_id);
                    Ok(CommandOutput::Done)
                }
                EntryPayload::Normal(command) => {
                    metadata.controller_id = leader_of(&entry.log_id);
                    let result = applied.requests.apply(metadata, command);
                    let decided_here = i64::from(metadata.controller_id)
                        == self.shared.local_node.load(Ordering::Relaxed);
                    if let Ok(CommandOutput::LeadersElected { changes, unclean }) = &result
                        && decided_here
                    {
                        metrics::counter!("silt_controller_leader_elections_total")
                            .increment(u64::from(*changes));
                        for (topic, partition, leader) in unclean {
                            // Kafka's UncleanLeaderElectionsPerSec, and its warning.
                            metrics::counter!("silt_controller_unclean_leader_elections_total")
                                .increment(1);
                            tracing::warn!(
                                topic,
                                partition,
                                leader,
                                "unclean leader election: no in-sync replica is alive, an out-of-sync replica leads; records it lacks are lost"
                            );
                        }
                    }
                    result
                }
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(CommandOutput::Done)
                }
            };
            responses.push(response);
            applied.last_applied = Some(entry.log_id);
        }
        let fenced = applied
            .metadata
            .brokers
            .values()
            .filter(|broker| broker.fenced)
            .count();
        metrics::gauge!("silt_controller_fenced_brokers").set(fenced as f64);
        let _previous = self
            .shared
            .publisher
            .send_replace(Arc::clone(&applied.metadata));
        responses
    }

    /// Keeps `stored` as the current snapshot unless a newer one was saved meanwhile.
    async fn save_snapshot(&self, stored: &StoredSnapshot) -> io::Result<bool> {
        let _writing = self.shared.snapshot_writes.lock().await;
        let newer_exists = self
            .shared
            .current_snapshot
            .lock()
            .as_ref()
            .is_some_and(|current| current.meta.last_log_id > stored.meta.last_log_id);
        if newer_exists {
            return Ok(false);
        }
        snapshot::save(&self.shared.dir, stored).await?;
        *self.shared.current_snapshot.lock() = Some(stored.clone());
        Ok(true)
    }
}

/// The leader that wrote an entry is the active controller as of that entry.
fn leader_of(log_id: &LogId<NodeId>) -> BrokerId {
    BrokerId::try_from(log_id.leader_id.node_id).unwrap_or(NO_BROKER)
}

fn snapshot_error(
    meta: Option<&SnapshotMeta<NodeId, BasicNode>>,
    verb: ErrorVerb,
    error: io::Error,
) -> StorageError<NodeId> {
    StorageError::from_io_error(
        ErrorSubject::Snapshot(meta.map(SnapshotMeta::signature)),
        verb,
        error,
    )
}

fn to_raft_snapshot(stored: StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: stored.meta,
        snapshot: Box::new(Cursor::new(stored.data)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (metadata, requests, last_applied, last_membership) = {
            let applied = self.shared.applied.lock();
            (
                Arc::clone(&applied.metadata),
                applied.requests.clone(),
                applied.last_applied,
                applied.last_membership.clone(),
            )
        };
        let data = snapshot::encode_state(&metadata, &requests)
            .map_err(|error| snapshot_error(None, ErrorVerb::Write, error))?;
        let snapshot_id = match last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id.term,
                log_id.index,
                uuid::Uuid::new_v4().simple()
            ),
            None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership,
                snapshot_id,
            },
            data,
        };
        let kept = self
            .save_snapshot(&stored)
            .await
            .map_err(|error| snapshot_error(Some(&stored.meta), ErrorVerb::Write, error))?;
        tracing::info!(
            last_log_index = last_applied.map(|log_id| log_id.index),
            bytes = stored.data.len(),
            kept,
            "built controller snapshot"
        );
        Ok(to_raft_snapshot(stored))
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStore {
    type SnapshotBuilder = MetadataStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let applied = self.shared.applied.lock();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.apply_entries(entries.into_iter().collect()))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let (metadata, requests) = snapshot::decode_state(&data)
            .map_err(|error| snapshot_error(Some(meta), ErrorVerb::Read, error))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let _kept = self
            .save_snapshot(&stored)
            .await
            .map_err(|error| snapshot_error(Some(meta), ErrorVerb::Write, error))?;

        let mut applied = self.shared.applied.lock();
        applied.metadata = Arc::new(metadata);
        applied.requests = requests;
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        let _previous = self
            .shared
            .publisher
            .send_replace(Arc::clone(&applied.metadata));
        tracing::info!(
            last_log_index = meta.last_log_id.map(|log_id| log_id.index),
            "installed controller snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.shared.current_snapshot.lock().clone();
        Ok(current.map(to_raft_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::StoreBuilder;
    use openraft::testing::Suite;

    use super::*;
    use crate::log_store::LogStore;

    struct TempStores;

    impl StoreBuilder<TypeConfig, LogStore, MetadataStore, tempfile::TempDir> for TempStores {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, MetadataStore), StorageError<NodeId>> {
            let to_storage_error = |error: io::Error| {
                StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, error)
            };
            let dir = tempfile::tempdir().map_err(to_storage_error)?;
            let log_store = LogStore::open(dir.path()).await.map_err(to_storage_error)?;
            let metadata_store = MetadataStore::open(dir.path())
                .await
                .map_err(to_storage_error)?;
            Ok((dir, log_store, metadata_store))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn stores_pass_the_openraft_storage_suite() {
        Suite::test_all(TempStores).unwrap();
    }
}
