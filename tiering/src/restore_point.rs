//! Restore points: what is needed to bring a whole cluster back from the object store
//! alone, written under the prefix as one consistent cut (`docs/disaster-recovery.md`).
//!
//! A restore point is one object, `<prefix>/restore-points/<id>.rp`, never rewritten: a
//! new restore point is a new key, written with a conditional create, so neither a torn
//! nor a concurrent write can replace a good one. Its bytes are a header line and a JSON
//! body:
//!
//! ```text
//! silt-restore-point 1 crc32c=<8 hex digits> length=<body bytes>\n
//! {"format_version":1,"id":...,"cluster_id":...,"topics":[...],"groups":[...]}
//! ```
//!
//! The CRC32C (Castagnoli) covers the body's exact bytes. Ids are
//! `<created_ms, 13 digits>-<8 hex digits>`, so their order is their age.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use silt_controller::{ClusterMetadata, RestoredPartition, RestoredTopic};
use tracing::warn;

use crate::TieringError;

/// Folder under the store prefix holding the restore points.
pub const RESTORE_POINTS_DIR: &str = "restore-points";
/// File extension of a restore point object.
pub const RESTORE_POINT_EXTENSION: &str = "rp";
/// The body format this code writes and reads.
pub const RESTORE_POINT_FORMAT_VERSION: u32 = 1;
const HEADER_MAGIC: &str = "silt-restore-point";

/// Everything needed to bring a cluster back, as of one cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// [`RESTORE_POINT_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// `<created_ms, 13 digits>-<8 hex digits>`; also the object's name.
    pub id: String,
    /// The cluster the restore point was taken of; a restored cluster keeps it.
    pub cluster_id: String,
    /// When it was taken, ms since the Unix epoch.
    pub created_ms: i64,
    /// The controller's metadata offset (raft log index) it was taken at.
    pub metadata_offset: u64,
    /// The writer's `restore.point.interval.ms` (0 = on demand only): a restore waits
    /// until the newest restore point is a few intervals old, lest the cluster still runs.
    #[serde(default)]
    pub interval_ms: i64,
    /// Producer ids below this were handed out; a restored cluster hands out none of
    /// them again.
    pub next_producer_id: i64,
    /// Every topic with its partitions' cuts and remote segments.
    pub topics: Vec<RestoredTopic>,
    /// Committed offsets of every consumer group known when it was taken, each at most
    /// its partition's cut.
    pub groups: Vec<GroupOffsets>,
}

/// The committed offsets of one consumer group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// The group id.
    pub group_id: String,
    /// Its committed offsets, by topic and partition.
    pub offsets: Vec<CommittedOffset>,
}

/// One committed offset (Kafka's `OffsetAndMetadata`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: i32,
    /// The next offset the group consumes.
    pub offset: i64,
    /// The leader epoch of the last consumed record, `-1` when unknown (KIP-320).
    pub leader_epoch: i32,
    /// The committer's metadata string.
    pub metadata: String,
}

/// A restore point as listed: its id and size, without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePointObject {
    /// The restore point's id.
    pub id: String,
    /// When it was taken (from the id), ms since the Unix epoch.
    pub created_ms: i64,
    /// The object's path.
    pub location: Path,
    /// The object's size in bytes.
    pub size: u64,
}

/// Which restore point a restore uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestorePointSelector {
    /// The newest intact one.
    Latest,
    /// The one with this id (it must be intact).
    Id(String),
    /// The newest intact one taken at or before this time, ms since the Unix epoch.
    Before(i64),
}

impl RestorePoint {
    /// The restore point of `metadata` and the groups' committed `groups` as of
    /// `created_ms`, with a fresh id. Each partition's cut is the end of the contiguous
    /// run of `CopyFinished` segments from its remote log start; group offsets above a
    /// cut are lowered to it, and offsets of unknown topics or partitions are left out.
    pub fn from_metadata(
        metadata: &ClusterMetadata,
        groups: Vec<GroupOffsets>,
        created_ms: i64,
    ) -> RestorePoint {
        let topics: Vec<RestoredTopic> = metadata
            .topics
            .values()
            .map(|topic| RestoredTopic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
                configs: topic.configs.clone(),
                internal: topic.internal,
                replication_factor: topic.partitions.first().map_or(1, |assignment| {
                    i16::try_from(assignment.replicas.len()).unwrap_or(i16::MAX)
                }),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|assignment| {
                        let mut segments: Vec<_> = metadata
                            .copied_remote_segments(topic.topic_id, assignment.partition)
                            .cloned()
                            .collect();
                        segments.sort_by_key(|segment| segment.base_offset);
                        let contiguous = segments
                            .windows(2)
                            .position(|pair| pair[1].base_offset != pair[0].next_offset())
                            .map_or(segments.len(), |gap| gap + 1);
                        segments.truncate(contiguous);
                        RestoredPartition {
                            partition: assignment.partition,
                            leader_epoch: assignment.leader_epoch,
                            cut_offset: segments.last().map_or(0, |last| last.next_offset()),
                            segments,
                            records_deleted_before: topic
                                .records_deleted_before(assignment.partition),
                        }
                    })
                    .collect(),
            })
            .collect();
        let cuts: BTreeMap<(&str, i32), i64> = topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(|partition| {
                    (
                        (topic.name.as_str(), partition.partition),
                        partition.cut_offset,
                    )
                })
            })
            .collect();
        let groups = groups
            .into_iter()
            .map(|group| GroupOffsets {
                offsets: group
                    .offsets
                    .into_iter()
                    .filter_map(|mut committed| {
                        let cut = *cuts.get(&(committed.topic.as_str(), committed.partition))?;
                        committed.offset = committed.offset.min(cut);
                        Some(committed)
                    })
                    .collect(),
                group_id: group.group_id,
            })
            .filter(|group| !group.offsets.is_empty())
            .collect();
        RestorePoint {
            format_version: RESTORE_POINT_FORMAT_VERSION,
            id: format!("{created_ms:013}-{:08x}", rand::random::<u32>()),
            cluster_id: metadata.cluster_id.clone(),
            created_ms,
            metadata_offset: metadata.metadata_offset,
            interval_ms: 0,
            next_producer_id: metadata.next_producer_id,
            topics,
            groups,
        }
    }

    /// Partitions in the restore point.
    pub fn partition_count(&self) -> usize {
        self.topics.iter().map(|topic| topic.partitions.len()).sum()
    }

    /// Bytes of remote segments the restore point names.
    pub fn size_bytes(&self) -> u64 {
        self.topics
            .iter()
            .flat_map(|topic| &topic.partitions)
            .map(RestoredPartition::size_bytes)
            .sum()
    }

    /// Ids of every remote segment the restore point names (retention keeps them while
    /// the restore point is kept).
    pub fn segment_ids(&self) -> impl Iterator<Item = uuid::Uuid> + '_ {
        self.topics
            .iter()
            .flat_map(|topic| &topic.partitions)
            .flat_map(|partition| &partition.segments)
            .map(|segment| segment.segment_id)
    }

    /// The object's bytes: header line and JSON body.
    ///
    /// # Errors
    /// [`TieringError::CorruptRestorePoint`] if the body cannot be serialized.
    pub fn encode(&self) -> Result<Vec<u8>, TieringError> {
        let body = serde_json::to_vec(self).map_err(|error| TieringError::CorruptRestorePoint {
            object: self.id.clone(),
            reason: error.to_string(),
        })?;
        let mut bytes = format!(
            "{HEADER_MAGIC} {RESTORE_POINT_FORMAT_VERSION} crc32c={:08x} length={}\n",
            crc32c::crc32c(&body),
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Reads a restore point from its object's bytes; `object` names it in errors.
    ///
    /// # Errors
    /// [`TieringError::CorruptRestorePoint`] for a missing or bad header, a length or
    /// checksum that does not match (a torn or damaged object), a format version this
    /// code does not know, or a body that is not a restore point.
    pub fn decode(bytes: &[u8], object: &str) -> Result<RestorePoint, TieringError> {
        let corrupt = |reason: String| TieringError::CorruptRestorePoint {
            object: object.to_string(),
            reason,
        };
        let newline = bytes
            .iter()
            .position(|byte| *byte == b'\n')
            .ok_or_else(|| corrupt("no header line".to_string()))?;
        let header = std::str::from_utf8(&bytes[..newline])
            .map_err(|_| corrupt("the header is not text".to_string()))?;
        let body = &bytes[newline + 1..];
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, version, crc, length] = fields.as_slice() else {
            return Err(corrupt(format!("bad header '{header}'")));
        };
        if *magic != HEADER_MAGIC {
            return Err(corrupt(format!("bad header '{header}'")));
        }
        if version.parse::<u32>().ok() != Some(RESTORE_POINT_FORMAT_VERSION) {
            return Err(corrupt(format!(
                "format version {version}; this silt reads version {RESTORE_POINT_FORMAT_VERSION}"
            )));
        }
        let length = length
            .strip_prefix("length=")
            .and_then(|length| length.parse::<usize>().ok())
            .ok_or_else(|| corrupt(format!("bad length in header '{header}'")))?;
        if body.len() != length {
            return Err(corrupt(format!(
                "{} body bytes, the header says {length} (torn write?)",
                body.len()
            )));
        }
        let crc = crc
            .strip_prefix("crc32c=")
            .and_then(|crc| u32::from_str_radix(crc, 16).ok())
            .ok_or_else(|| corrupt(format!("bad checksum in header '{header}'")))?;
        let actual = crc32c::crc32c(body);
        if actual != crc {
            return Err(corrupt(format!(
                "checksum mismatch: crc32c {actual:08x}, the header says {crc:08x}"
            )));
        }
        serde_json::from_slice(body).map_err(|error| corrupt(error.to_string()))
    }
}

/// `<prefix>/restore-points`.
pub fn restore_points_root(prefix: &Path) -> Path {
    prefix.clone().join(RESTORE_POINTS_DIR)
}

/// `<prefix>/restore-points/<id>.rp`.
pub fn restore_point_object(prefix: &Path, id: &str) -> Path {
    restore_points_root(prefix).join(format!("{id}.{RESTORE_POINT_EXTENSION}"))
}

/// Writes `restore_point` as a new object (conditional create: an object of the same
/// id is never replaced).
///
/// # Errors
/// [`TieringError::ObjectStore`] when the store fails or the id exists already.
pub async fn write_restore_point(
    store: &dyn ObjectStore,
    prefix: &Path,
    restore_point: &RestorePoint,
) -> Result<(), TieringError> {
    let bytes = restore_point.encode()?;
    store
        .put_opts(
            &restore_point_object(prefix, &restore_point.id),
            PutPayload::from(bytes),
            PutOptions::from(PutMode::Create),
        )
        .await?;
    Ok(())
}

/// Every restore point object under `prefix`, oldest first. Objects whose names are not
/// restore point names are left out.
///
/// # Errors
/// [`TieringError::ObjectStore`] when the listing fails.
pub async fn list_restore_points(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<Vec<RestorePointObject>, TieringError> {
    let listed: Vec<ObjectMeta> = store
        .list(Some(&restore_points_root(prefix)))
        .try_collect()
        .await?;
    let mut points: Vec<RestorePointObject> = listed
        .into_iter()
        .filter_map(|object| {
            let name = object.location.filename()?;
            let id = name.strip_suffix(&format!(".{RESTORE_POINT_EXTENSION}"))?;
            let created_ms = id.split_once('-')?.0.parse::<i64>().ok()?;
            Some(RestorePointObject {
                id: id.to_string(),
                created_ms,
                location: object.location.clone(),
                size: object.size,
            })
        })
        .collect();
    points.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(points)
}

/// Reads and checks one restore point.
///
/// # Errors
/// [`TieringError::ObjectStore`] when the store fails (also when it is missing);
/// [`TieringError::CorruptRestorePoint`] when its bytes do not check out.
pub async fn read_restore_point(
    store: &dyn ObjectStore,
    object: &RestorePointObject,
) -> Result<RestorePoint, TieringError> {
    let bytes = store.get(&object.location).await?.bytes().await?;
    let restore_point = RestorePoint::decode(&bytes, object.location.as_ref())?;
    if restore_point.id != object.id {
        return Err(TieringError::CorruptRestorePoint {
            object: object.location.to_string(),
            reason: format!("it holds restore point {}", restore_point.id),
        });
    }
    Ok(restore_point)
}

/// The restore point `selector` picks: the newest intact one for `Latest` and `Before`
/// (a corrupt newer one is skipped with a warning and reported in the second value),
/// or exactly the one named by `Id`.
///
/// # Errors
/// [`TieringError::NoRestorePoint`] when none qualifies; for `Id`, the named one's
/// read error ([`TieringError::CorruptRestorePoint`] naming the object).
pub async fn select_restore_point(
    store: &dyn ObjectStore,
    prefix: &Path,
    selector: &RestorePointSelector,
) -> Result<(RestorePoint, Vec<TieringError>), TieringError> {
    let points = list_restore_points(store, prefix).await?;
    let none = || TieringError::NoRestorePoint {
        prefix: prefix.to_string(),
        wanted: format!("{selector:?}"),
    };
    if let RestorePointSelector::Id(id) = selector {
        let object = points
            .iter()
            .find(|point| &point.id == id)
            .ok_or_else(none)?;
        return Ok((read_restore_point(store, object).await?, Vec::new()));
    }
    let mut skipped = Vec::new();
    for object in points.iter().rev() {
        if let RestorePointSelector::Before(time_ms) = selector
            && object.created_ms > *time_ms
        {
            continue;
        }
        match read_restore_point(store, object).await {
            Ok(restore_point) => return Ok((restore_point, skipped)),
            Err(error @ TieringError::CorruptRestorePoint { .. }) => {
                warn!(%error, "skipping a corrupt restore point");
                skipped.push(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(none())
}

/// Deletes the restore points taken more than `retention_ms` before `now_ms`, but never
/// the newest intact one. Returns the ids deleted.
///
/// # Errors
/// [`TieringError::ObjectStore`] when listing or deleting fails (what was deleted before
/// stays deleted).
pub async fn prune_restore_points(
    store: &dyn ObjectStore,
    prefix: &Path,
    retention_ms: i64,
    now_ms: i64,
) -> Result<Vec<String>, TieringError> {
    let points = list_restore_points(store, prefix).await?;
    let mut newest_intact = None;
    for object in points.iter().rev() {
        if read_restore_point(store, object).await.is_ok() {
            newest_intact = Some(object.id.clone());
            break;
        }
    }
    let mut deleted = Vec::new();
    for object in points {
        if Some(&object.id) == newest_intact.as_ref()
            || object.created_ms >= now_ms.saturating_sub(retention_ms)
        {
            continue;
        }
        store.delete(&object.location).await?;
        deleted.push(object.id);
    }
    Ok(deleted)
}

/// Ids of every remote segment some kept restore point names: retention, deleted-topic
/// cleanup and the orphan scan must not delete them. Restore points never change, so a
/// refresh reads only the ones it has not seen; one that cannot be read pins nothing.
#[derive(Debug, Default)]
pub struct PinnedSegments {
    by_restore_point: HashMap<String, HashSet<uuid::Uuid>>,
}

impl PinnedSegments {
    /// Lists the restore points under `prefix`, reads the new ones and forgets the
    /// pruned ones.
    ///
    /// # Errors
    /// [`TieringError::ObjectStore`] when the listing or a read fails (then nothing
    /// should be deleted until a refresh succeeds).
    pub async fn refresh(
        &mut self,
        store: &dyn ObjectStore,
        prefix: &Path,
    ) -> Result<(), TieringError> {
        let objects = list_restore_points(store, prefix).await?;
        let listed: HashSet<&str> = objects.iter().map(|object| object.id.as_str()).collect();
        self.by_restore_point
            .retain(|id, _| listed.contains(id.as_str()));
        for object in &objects {
            if self.by_restore_point.contains_key(&object.id) {
                continue;
            }
            let segments = match read_restore_point(store, object).await {
                Ok(restore_point) => restore_point.segment_ids().collect(),
                Err(TieringError::CorruptRestorePoint { .. }) => HashSet::new(),
                Err(error) => return Err(error),
            };
            let _previous = self.by_restore_point.insert(object.id.clone(), segments);
        }
        Ok(())
    }

    /// Whether a kept restore point names remote segment `segment_id`.
    pub fn contains(&self, segment_id: &uuid::Uuid) -> bool {
        self.by_restore_point
            .values()
            .any(|segments| segments.contains(segment_id))
    }

    /// Every pinned segment id.
    pub fn ids(&self) -> HashSet<uuid::Uuid> {
        self.by_restore_point.values().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use silt_controller::{
        PartitionAssignment, RemoteSegmentMetadata, RemoteSegmentState, TopicId, TopicMetadata,
    };

    use super::*;

    const TOPIC: &str = "orders";

    fn topic_id() -> TopicId {
        TopicId(uuid::Uuid::from_u128(42))
    }

    fn segment(id: u128, base: i64, end: i64, state: RemoteSegmentState) -> RemoteSegmentMetadata {
        RemoteSegmentMetadata {
            topic_id: topic_id(),
            partition: 0,
            segment_id: uuid::Uuid::from_u128(id),
            base_offset: base,
            end_offset: end,
            max_timestamp_ms: 1_000,
            size_bytes: 100,
            leader_epoch: 2,
            state,
            broker_id: 1,
            event_timestamp_ms: 1_000,
            segment_leader_epochs: BTreeMap::from([(2, base)]),
            compacted: false,
        }
    }

    /// One topic of two partitions: partition 0 has segments [0, 9], [10, 19], a gap,
    /// then [30, 39], and one still being copied; partition 1 has none.
    fn metadata() -> ClusterMetadata {
        let mut metadata = ClusterMetadata {
            cluster_id: "cluster-a".to_string(),
            next_producer_id: 5_000,
            metadata_offset: 77,
            ..ClusterMetadata::default()
        };
        let assignment = |partition| PartitionAssignment {
            partition,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 2,
            partition_epoch: 0,
        };
        metadata.topics.insert(
            TOPIC.to_string(),
            TopicMetadata {
                name: TOPIC.to_string(),
                topic_id: topic_id(),
                partitions: vec![assignment(0), assignment(1)],
                configs: BTreeMap::from([("remote.storage.enable".into(), "true".into())]),
                internal: false,
                log_start_offsets: BTreeMap::new(),
            },
        );
        let segments = metadata.remote_segments.entry((topic_id(), 0)).or_default();
        for segment in [
            segment(1, 0, 9, RemoteSegmentState::CopyFinished),
            segment(2, 10, 19, RemoteSegmentState::CopyFinished),
            segment(3, 30, 39, RemoteSegmentState::CopyFinished),
            segment(4, 20, 29, RemoteSegmentState::CopyStarted),
        ] {
            segments.insert(segment.segment_id, segment);
        }
        metadata
    }

    fn group(offsets: &[(&str, i32, i64)]) -> GroupOffsets {
        GroupOffsets {
            group_id: "readers".to_string(),
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| CommittedOffset {
                    topic: (*topic).to_string(),
                    partition: *partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_cut_ends_at_the_first_gap_and_group_offsets_never_pass_it() {
        let groups = vec![group(&[(TOPIC, 0, 35), (TOPIC, 1, 3), ("gone", 0, 9)])];
        let point = RestorePoint::from_metadata(&metadata(), groups, 1_700_000_000_000);
        assert_eq!(point.cluster_id, "cluster-a");
        assert_eq!(point.next_producer_id, 5_000);
        assert!(point.id.starts_with("1700000000000-"), "{}", point.id);
        let partitions = &point.topics[0].partitions;
        assert_eq!(partitions[0].cut_offset, 20);
        assert_eq!(partitions[0].log_start_offset(), 0);
        assert_eq!(partitions[0].segments.len(), 2);
        assert_eq!(partitions[1].cut_offset, 0);
        assert_eq!(point.topics[0].replication_factor, 3);
        assert_eq!(point.size_bytes(), 200);
        let offsets: Vec<(i32, i64)> = point.groups[0]
            .offsets
            .iter()
            .map(|committed| (committed.partition, committed.offset))
            .collect();
        assert_eq!(
            offsets,
            vec![(0, 20), (1, 0)],
            "lowered to the cuts, unknown topic left out"
        );
    }

    #[test]
    fn a_damaged_or_torn_object_is_refused_naming_it() {
        let point = RestorePoint::from_metadata(&metadata(), Vec::new(), 1);
        let bytes = point.encode().expect("encodes");
        assert_eq!(RestorePoint::decode(&bytes, "x").expect("decodes"), point);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        let torn = &bytes[..bytes.len() - 10];
        for (bad, expected) in [
            (flipped.as_slice(), "checksum mismatch"),
            (torn, "torn write"),
            (&b"not a restore point"[..], "no header"),
        ] {
            let error = RestorePoint::decode(bad, "restore-points/x.rp").expect_err("refused");
            let message = error.to_string();
            assert!(message.contains("restore-points/x.rp"), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[tokio::test]
    async fn latest_falls_back_over_a_corrupt_newest_and_pruning_keeps_the_newest() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let prefix = Path::from("cluster");
        let mut ids = Vec::new();
        for created_ms in [1_000, 2_000, 3_000] {
            let point = RestorePoint::from_metadata(&metadata(), Vec::new(), created_ms);
            write_restore_point(store.as_ref(), &prefix, &point)
                .await
                .expect("written");
            ids.push(point.id);
        }
        let again = RestorePoint {
            id: ids[0].clone(),
            ..RestorePoint::from_metadata(&metadata(), Vec::new(), 1_000)
        };
        assert!(
            write_restore_point(store.as_ref(), &prefix, &again)
                .await
                .is_err(),
            "an existing restore point is never replaced"
        );
        store
            .put(
                &restore_point_object(&prefix, &ids[2]),
                PutPayload::from("garbage"),
            )
            .await
            .expect("damaged");

        let (latest, skipped) =
            select_restore_point(store.as_ref(), &prefix, &RestorePointSelector::Latest)
                .await
                .expect("a latest one");
        assert_eq!(latest.id, ids[1]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].to_string().contains(&ids[2]));
        let (before, _) = select_restore_point(
            store.as_ref(),
            &prefix,
            &RestorePointSelector::Before(1_500),
        )
        .await
        .expect("one before");
        assert_eq!(before.id, ids[0]);
        let named = select_restore_point(
            store.as_ref(),
            &prefix,
            &RestorePointSelector::Id(ids[2].clone()),
        )
        .await;
        assert!(matches!(
            named,
            Err(TieringError::CorruptRestorePoint { .. })
        ));
        let nothing =
            select_restore_point(store.as_ref(), &prefix, &RestorePointSelector::Before(10)).await;
        assert!(matches!(nothing, Err(TieringError::NoRestorePoint { .. })));

        let deleted = prune_restore_points(store.as_ref(), &prefix, 1, 10_000)
            .await
            .expect("pruned");
        assert_eq!(deleted, vec![ids[0].clone(), ids[2].clone()]);
        let left = list_restore_points(store.as_ref(), &prefix)
            .await
            .expect("listed");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, ids[1], "the newest intact one stays");
        let mut pinned = PinnedSegments::default();
        pinned.refresh(store.as_ref(), &prefix).await.expect("pins");
        assert!(pinned.contains(&uuid::Uuid::from_u128(1)));
        assert!(pinned.contains(&uuid::Uuid::from_u128(2)));
        assert!(
            !pinned.contains(&uuid::Uuid::from_u128(3)),
            "past the first gap"
        );
    }
}
