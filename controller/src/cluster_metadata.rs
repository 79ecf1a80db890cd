//! Identifiers and metadata records held in the replicated cluster metadata.
//!
//! Every type here is part of the durable raft log and snapshot format (serde_json), so
//! renaming a field is a format change.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// A broker (and controller) node id, as in Kafka's `node.id`. Valid ids are `>= 0`;
/// `-1` means "none" where a field can be empty (e.g. a partition without a leader).
pub type BrokerId = i32;

/// Marker for "no broker", used by [`PartitionAssignment::leader`] and
/// [`ClusterMetadata::controller_id`].
pub const NO_BROKER: BrokerId = -1;

/// A Kafka topic id (KIP-516): a random 128-bit uuid, never the nil uuid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicId(pub uuid::Uuid);

impl TopicId {
    /// A fresh random topic id, following Kafka's `Uuid.randomUuid()`: never the nil uuid,
    /// never the reserved metadata topic id (`...0001`) and never an id whose base64 form
    /// starts with `-` (which would read as a command line flag).
    pub fn random() -> TopicId {
        loop {
            let candidate = uuid::Uuid::new_v4();
            let reserved_metadata_id = uuid::Uuid::from_u128(1);
            if candidate.is_nil() || candidate == reserved_metadata_id {
                continue;
            }
            if base64url_no_pad(candidate.as_bytes()).starts_with('-') {
                continue;
            }
            return TopicId(candidate);
        }
    }

    /// True for the nil uuid, which Kafka uses on the wire to mean "no topic id".
    pub fn is_nil(&self) -> bool {
        self.0.is_nil()
    }
}

/// Formats the id as Kafka does: 22 characters of unpadded base64url.
impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64url_no_pad(self.0.as_bytes()))
    }
}

/// Generates a Kafka-style cluster id: a random uuid as 22 characters of unpadded base64url.
pub fn generate_cluster_id() -> String {
    TopicId::random().to_string()
}

/// Unpadded base64url (RFC 4648 §5) of 16 bytes, the form Kafka prints uuids in.
fn base64url_no_pad(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let group = (b0 << 16) | (b1 << 8) | b2;
        let symbols = chunk.len() + 1;
        for position in 0..symbols {
            let shift = 18 - 6 * position;
            let index = ((group >> shift) & 0x3f) as usize;
            out.push(char::from(ALPHABET[index]));
        }
    }
    out
}

/// Replica assignment and leadership of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Partition id, equal to its index in [`TopicMetadata::partitions`].
    pub partition: i32,
    /// All replicas in preference order; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas, a subset of `replicas`.
    pub isr: Vec<BrokerId>,
    /// Current leader, or [`NO_BROKER`] (`-1`) when the partition has none.
    pub leader: BrokerId,
    /// Bumped on every leader change; followers truncate by it.
    pub leader_epoch: i32,
    /// Bumped on every change of this record (leader, ISR, replicas); AlterPartition
    /// requests carry it to detect stale updates.
    pub partition_epoch: i32,
}

/// One topic: its id, partitions and topic-level config overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Topic name, valid per Kafka's rules (`[a-zA-Z0-9._-]`, 1..=249 chars, not `.`/`..`).
    pub name: String,
    /// Topic id, fixed for the life of the topic; a recreated topic gets a new one.
    pub topic_id: TopicId,
    /// Partitions; the index in this vector is the partition id.
    pub partitions: Vec<PartitionAssignment>,
    /// Topic-level overrides only, under Kafka's names (e.g. `retention.ms`); broker
    /// defaults apply to absent keys. Values are stored as given.
    pub configs: BTreeMap<String, String>,
    /// Internal topics (e.g. `__consumer_offsets`) are hidden from some client listings.
    pub internal: bool,
    /// Log start offsets moved by DeleteRecords on tiered partitions, by partition: no
    /// record below is served, and remote segments wholly below are deleted (Kafka keeps
    /// this `logStartOffset` in each replica's checkpoint; here it also governs the remote
    /// log, which the controller tracks). Absent for partitions never moved; absent in
    /// snapshots written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_start_offsets: BTreeMap<i32, i64>,
}

impl TopicMetadata {
    /// The assignment of `partition`, if it exists.
    pub fn partition(&self, partition: i32) -> Option<&PartitionAssignment> {
        let index = usize::try_from(partition).ok()?;
        self.partitions.get(index)
    }

    /// The log start offset DeleteRecords set for `partition`, or `0`.
    pub fn records_deleted_before(&self, partition: i32) -> i64 {
        self.log_start_offsets.get(&partition).copied().unwrap_or(0)
    }
}

/// A broker as registered with the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// The broker's `node.id`, `>= 0`.
    pub broker_id: BrokerId,
    /// Random id chosen by the broker process at start; a new value means a restart.
    pub incarnation_id: uuid::Uuid,
    /// Advertised host of the Kafka listener.
    pub host: String,
    /// Advertised port of the Kafka listener.
    pub port: u16,
    /// Rack (`broker.rack`), used for rack-aware replica placement when every broker has one.
    pub rack: Option<String>,
    /// Fenced brokers receive no new replicas or leaderships.
    pub fenced: bool,
}

/// An ISR change requested by a partition leader (Kafka AlterPartition, KIP-497).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    /// The requesting broker; must be the partition's current leader.
    pub broker_id: BrokerId,
    /// Topic of the partition.
    pub topic_id: TopicId,
    /// Partition id, `>= 0`.
    pub partition: i32,
    /// The leader epoch the requester leads in; must equal the current one.
    pub leader_epoch: i32,
    /// The partition epoch the requester last saw; must equal the current one.
    pub partition_epoch: i32,
    /// The proposed ISR: non-empty, containing the leader, a subset of the replicas without
    /// duplicates; members not in the current ISR must be unfenced.
    pub new_isr: Vec<BrokerId>,
}

/// The active controller's answer to a broker heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// True while the broker is fenced: it must not lead or join ISRs yet.
    pub fenced: bool,
}

/// Metadata of one segment copied to remote storage (KIP-405 `RemoteLogSegmentMetadata`),
/// stored in [`ClusterMetadata::remote_segments`].
///
/// A segment is identified by (`topic_id`, `partition`, `segment_id`); every upload of a
/// segment, including a repeated upload of the same offsets, gets a fresh `segment_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegmentMetadata {
    /// Topic the segment belongs to.
    pub topic_id: TopicId,
    /// Partition the segment belongs to, `>= 0`.
    pub partition: i32,
    /// Unique id of this copy of the segment (part of the object key); never the nil uuid.
    pub segment_id: uuid::Uuid,
    /// Offset of the first record in the segment, `>= 0`.
    pub base_offset: i64,
    /// Offset of the last record in the segment, inclusive: `base_offset <= end_offset`.
    pub end_offset: i64,
    /// Largest record timestamp in the segment, in milliseconds since the Unix epoch
    /// (`-1` when no record carries a timestamp).
    pub max_timestamp_ms: i64,
    /// Size of the segment's log file in bytes.
    pub size_bytes: u64,
    /// Leader epoch of the leader that copied the segment, `>= 0`.
    pub leader_epoch: i32,
    /// Lifecycle state of the remote copy.
    pub state: RemoteSegmentState,
    /// The broker that uploads (uploaded) the segment, `>= 0`.
    pub broker_id: BrokerId,
    /// When the latest state change was requested, in milliseconds since the Unix epoch:
    /// set by the uploader for [`RemoteSegmentState::CopyStarted`], by the controller for
    /// later states.
    pub event_timestamp_ms: i64,
    /// The leader epochs whose records the segment holds: epoch -> offset of the first
    /// record of that epoch in this segment. Start offsets lie in
    /// `[base_offset, end_offset]` and increase with the epoch; empty when unknown.
    pub segment_leader_epochs: BTreeMap<i32, i64>,
    /// Written by the remote log cleaner: the segment holds a compacted copy of the
    /// records of `[base_offset, end_offset]` (with gaps where records were removed).
    /// Compacted segments form a prefix of the partition's remote log; the first offset
    /// after them is where the next remote cleaning pass's dirty section starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compacted: bool,
}

impl RemoteSegmentMetadata {
    /// The offset after the last record of the segment (`end_offset + 1`), exclusive.
    pub fn next_offset(&self) -> i64 {
        self.end_offset.saturating_add(1)
    }

    /// True if `offset` lies in `[base_offset, end_offset]`.
    pub fn contains_offset(&self, offset: i64) -> bool {
        self.base_offset <= offset && offset <= self.end_offset
    }

    /// True if the inclusive offset ranges of `self` and `other` share an offset.
    pub fn overlaps(&self, other: &RemoteSegmentMetadata) -> bool {
        self.base_offset <= other.end_offset && other.base_offset <= self.end_offset
    }
}

/// Lifecycle of a remote segment (KIP-405 `RemoteLogSegmentState`). Transitions only go
/// forward: `CopyStarted -> CopyFinished -> DeleteStarted -> DeleteFinished`, plus
/// `CopyStarted -> DeleteStarted` for abandoned uploads. Only `CopyFinished` segments are
/// readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RemoteSegmentState {
    /// Upload started; readers must not use the segment yet.
    CopyStarted,
    /// Upload complete; the segment is readable.
    CopyFinished,
    /// Deletion started; readers must stop using the segment.
    DeleteStarted,
    /// The remote objects are gone. Never stored: finishing a delete removes the entry
    /// from [`ClusterMetadata::remote_segments`].
    DeleteFinished,
}

/// One topic as a restore point holds it and a restore brings it back (see
/// `docs/disaster-recovery.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredTopic {
    /// Topic name.
    pub name: String,
    /// Topic id, kept by the restore (the remote objects' keys hold it).
    pub topic_id: TopicId,
    /// Topic-level config overrides, under Kafka's names.
    pub configs: BTreeMap<String, String>,
    /// Internal topic (`__consumer_offsets`).
    pub internal: bool,
    /// Replicas per partition in the cluster the restore point was taken of; a restore
    /// onto fewer brokers uses as many as it has.
    pub replication_factor: i16,
    /// Every partition, in partition order.
    pub partitions: Vec<RestoredPartition>,
}

/// One partition of a [`RestoredTopic`]: its cut and the remote segments below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredPartition {
    /// Partition id, `>= 0`.
    pub partition: i32,
    /// The partition's leader epoch when the restore point was taken; the restored
    /// partition's leader epoch is above it, so no restored record carries a later epoch.
    pub leader_epoch: i32,
    /// The cut, exclusive: every record below it is in `segments`, none at or above it is
    /// restored. Equal to the end of the last segment, or `0` without segments.
    pub cut_offset: i64,
    /// The `CopyFinished` remote segments, contiguous, in offset order, all below
    /// `cut_offset`.
    pub segments: Vec<RemoteSegmentMetadata>,
    /// The log start offset DeleteRecords had set ([`TopicMetadata::log_start_offsets`]),
    /// `0` when never moved: records below it are not restored even where a segment holds
    /// them. Absent in restore points written before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records_deleted_before: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

impl RestoredPartition {
    /// The first restored offset: the remote log start, raised to
    /// `records_deleted_before`, never above `cut_offset`.
    pub fn log_start_offset(&self) -> i64 {
        self.segments
            .first()
            .map_or(self.cut_offset, |segment| segment.base_offset)
            .max(self.records_deleted_before)
            .min(self.cut_offset)
    }

    /// Restored bytes: the size of every segment.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }
}

/// Remote segments of every partition: (topic id, partition) -> segment id -> segment.
/// Partitions without segments have no entry.
pub type RemoteSegments = BTreeMap<(TopicId, i32), BTreeMap<uuid::Uuid, RemoteSegmentMetadata>>;

/// The whole replicated cluster metadata, as of one raft log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Kafka cluster id (22 characters of base64url); empty until the first start completes.
    pub cluster_id: String,
    /// Node id of the raft leader that wrote the latest applied entry, or [`NO_BROKER`].
    pub controller_id: BrokerId,
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMetadata>,
    /// The next producer id to hand out; ids below it are allocated.
    pub next_producer_id: i64,
    /// Raft log index of the last applied entry; strictly increases with every change.
    pub metadata_offset: u64,
    /// KIP-405 remote log segments in every state but `DeleteFinished`, by partition and
    /// segment id. Entries of deleted topics stay until tiering removes their objects
    /// (find them with `topic_by_id(id).is_none()`). Serialized as a flat list of
    /// [`RemoteSegmentMetadata`] (JSON maps cannot have tuple keys); absent in snapshots
    /// written before remote segments existed.
    #[serde(default, with = "remote_segments_serde")]
    pub remote_segments: RemoteSegments,
    /// Broker epoch of each registered broker (Kafka KRaft's meaning): the
    /// `metadata_offset` of the registration that created its current incarnation. A
    /// fenced broker is unfenced once it reports having applied metadata up to it. Absent
    /// in snapshots written before broker liveness existed.
    #[serde(default)]
    pub broker_epochs: BTreeMap<BrokerId, u64>,
    /// The restore point this cluster was restored from, once the restore is applied
    /// (absent for a cluster that was never restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

impl Default for ClusterMetadata {
    fn default() -> Self {
        ClusterMetadata {
            cluster_id: String::new(),
            controller_id: NO_BROKER,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            next_producer_id: 0,
            metadata_offset: 0,
            remote_segments: BTreeMap::new(),
            broker_epochs: BTreeMap::new(),
            restored_from: None,
        }
    }
}

impl ClusterMetadata {
    /// The topic named `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
    }

    /// The topic with id `id`, if it exists (a linear scan over topics).
    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicMetadata> {
        self.topics.values().find(|topic| topic.topic_id == id)
    }

    /// The registration of broker `broker_id`, if it registered.
    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// Registered brokers that are not fenced, in id order.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// The remote segment `segment_id` of a partition in any state, if it exists.
    pub fn remote_segment(
        &self,
        topic_id: TopicId,
        partition: i32,
        segment_id: uuid::Uuid,
    ) -> Option<&RemoteSegmentMetadata> {
        self.remote_segments
            .get(&(topic_id, partition))?
            .get(&segment_id)
    }

    /// Every remote segment of a partition in any state, ordered by `base_offset` (then
    /// segment id). Segments that are not `CopyFinished` may overlap others.
    pub fn remote_segments(
        &self,
        topic_id: TopicId,
        partition: i32,
    ) -> impl Iterator<Item = &RemoteSegmentMetadata> {
        self.sorted_remote_segments(topic_id, partition, |_| true)
            .into_iter()
    }

    /// The readable (`CopyFinished`) remote segments of a partition, ordered by
    /// `base_offset`. Each reaches past the end of the ones before it; ranges may overlap
    /// where leaders rolled segments at different offsets (the records are the same).
    pub fn copied_remote_segments(
        &self,
        topic_id: TopicId,
        partition: i32,
    ) -> impl Iterator<Item = &RemoteSegmentMetadata> {
        self.sorted_remote_segments(topic_id, partition, |segment| {
            segment.state == RemoteSegmentState::CopyFinished
        })
        .into_iter()
    }

    /// The readable (`CopyFinished`) remote segment of a partition that holds `offset`, if
    /// any.
    pub fn remote_segment_for_offset(
        &self,
        topic_id: TopicId,
        partition: i32,
        offset: i64,
    ) -> Option<&RemoteSegmentMetadata> {
        self.partition_remote_segments(topic_id, partition)
            .find(|segment| {
                segment.state == RemoteSegmentState::CopyFinished && segment.contains_offset(offset)
            })
    }

    /// The first offset readable from remote storage: the smallest `base_offset` of the
    /// partition's `CopyFinished` segments, or `None` if it has none.
    pub fn remote_log_start_offset(&self, topic_id: TopicId, partition: i32) -> Option<i64> {
        self.partition_remote_segments(topic_id, partition)
            .filter(|segment| segment.state == RemoteSegmentState::CopyFinished)
            .map(|segment| segment.base_offset)
            .min()
    }

    /// The offset after the last one readable from remote storage (exclusive): the largest
    /// `end_offset + 1` of the partition's `CopyFinished` segments, or `None` if it has none.
    pub fn remote_log_end_offset(&self, topic_id: TopicId, partition: i32) -> Option<i64> {
        self.partition_remote_segments(topic_id, partition)
            .filter(|segment| segment.state == RemoteSegmentState::CopyFinished)
            .map(RemoteSegmentMetadata::next_offset)
            .max()
    }

    /// The partitions that have remote segments in any state, in (topic id, partition)
    /// order, including partitions of deleted topics.
    pub fn remote_partitions(&self) -> impl Iterator<Item = (TopicId, i32)> {
        self.remote_segments
            .iter()
            .filter(|(_, segments)| !segments.is_empty())
            .map(|(key, _)| *key)
    }

    /// The partition's remote segments in segment id order.
    fn partition_remote_segments(
        &self,
        topic_id: TopicId,
        partition: i32,
    ) -> impl Iterator<Item = &RemoteSegmentMetadata> {
        self.remote_segments
            .get(&(topic_id, partition))
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    fn sorted_remote_segments(
        &self,
        topic_id: TopicId,
        partition: i32,
        keep: impl Fn(&RemoteSegmentMetadata) -> bool,
    ) -> Vec<&RemoteSegmentMetadata> {
        let mut segments: Vec<&RemoteSegmentMetadata> = self
            .partition_remote_segments(topic_id, partition)
            .filter(|segment| keep(segment))
            .collect();
        segments.sort_by_key(|segment| (segment.base_offset, segment.segment_id));
        segments
    }
}

/// Serde form of [`ClusterMetadata::remote_segments`]: a flat sequence of segments in key
/// order; decoding rebuilds the map from each segment's own ids and rejects duplicates.
mod remote_segments_serde {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serializer;
    use serde::de::Error as _;

    use super::RemoteSegmentMetadata;
    use super::RemoteSegments;

    pub(super) fn serialize<S: Serializer>(
        segments: &RemoteSegments,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(segments.values().flat_map(BTreeMap::values))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<RemoteSegments, D::Error> {
        let list = Vec::<RemoteSegmentMetadata>::deserialize(deserializer)?;
        let mut segments = RemoteSegments::new();
        for segment in list {
            let key = (segment.topic_id, segment.partition);
            let segment_id = segment.segment_id;
            if let Some(_duplicate) = segments.entry(key).or_default().insert(segment_id, segment) {
                return Err(D::Error::custom(format!(
                    "remote segment {segment_id} of topic {} partition {} is listed twice",
                    key.0, key.1
                )));
            }
        }
        Ok(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_kafka_encoding() {
        let id = uuid::Uuid::from_u128(0);
        assert_eq!(base64url_no_pad(id.as_bytes()), "AAAAAAAAAAAAAAAAAAAAAA");
        let id = uuid::Uuid::from_u128(u128::MAX);
        assert_eq!(base64url_no_pad(id.as_bytes()), "_____________________w");
        let id = uuid::Uuid::parse_str("f1e2d3c4-b5a6-9788-6950-41322314f5e6").unwrap();
        assert_eq!(base64url_no_pad(id.as_bytes()), "8eLTxLWml4hpUEEyIxT15g");
    }

    #[test]
    fn random_topic_ids_are_never_nil_and_print_as_22_chars() {
        for _ in 0..1000 {
            let id = TopicId::random();
            assert!(!id.is_nil());
            let printed = id.to_string();
            assert_eq!(printed.len(), 22);
            assert!(!printed.starts_with('-'));
        }
        assert_eq!(generate_cluster_id().len(), 22);
    }
}
