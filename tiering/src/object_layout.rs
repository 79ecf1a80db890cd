//! Names of remote objects (DESIGN.md "Tiering", docs: object layout):
//!
//! `<prefix>/topics/<topic>-<topicId>/<partition>/<baseOffset:020>-<segmentId>.<ext>`
//!
//! with one object per [`ObjectKind`]. The topic id (KIP-516, 22 characters of base64url)
//! keeps a re-created topic from ever seeing the objects of an older one; the segment id
//! (a random uuid per upload, KIP-405 `RemoteLogSegmentId`) keeps two uploads of the same
//! offsets apart.

use object_store::path::Path;
use silt_controller::TopicId;
use uuid::Uuid;

/// Folder under the store prefix holding every topic.
pub const TOPICS_DIR: &str = "topics";

/// The objects making up one remote segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// The segment's `.log` file, byte for byte.
    Log,
    /// The sparse offset index (`.index`).
    OffsetIndex,
    /// The sparse time index (`.timeindex`).
    TimeIndex,
    /// The producer-state snapshot at the segment's end (`.snapshot`).
    ProducerSnapshot,
    /// The leader-epoch checkpoint up to the segment's end (`.leader-epoch-checkpoint`).
    LeaderEpochCheckpoint,
}

impl ObjectKind {
    /// Every kind, `.log` first.
    pub const ALL: [ObjectKind; 5] = [
        ObjectKind::Log,
        ObjectKind::OffsetIndex,
        ObjectKind::TimeIndex,
        ObjectKind::ProducerSnapshot,
        ObjectKind::LeaderEpochCheckpoint,
    ];

    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            ObjectKind::Log => "log",
            ObjectKind::OffsetIndex => "index",
            ObjectKind::TimeIndex => "timeindex",
            ObjectKind::ProducerSnapshot => "snapshot",
            ObjectKind::LeaderEpochCheckpoint => "leader-epoch-checkpoint",
        }
    }

    /// The kind with file extension `extension`, if any.
    pub fn from_extension(extension: &str) -> Option<ObjectKind> {
        ObjectKind::ALL
            .into_iter()
            .find(|kind| kind.extension() == extension)
    }
}

/// `<topic>-<topicId>`: the folder of one topic.
pub fn topic_dir_name(topic: &str, topic_id: TopicId) -> String {
    format!("{topic}-{topic_id}")
}

/// `<prefix>/topics`: the folder holding every topic.
pub fn topics_root(prefix: &Path) -> Path {
    prefix.clone().join(TOPICS_DIR)
}

/// `<prefix>/topics/<topic>-<topicId>/<partition>`: the folder of one partition's objects
/// (listing it lists exactly that partition).
pub fn segment_object_prefix(
    prefix: &Path,
    topic: &str,
    topic_id: TopicId,
    partition: i32,
) -> Path {
    topics_root(prefix)
        .join(topic_dir_name(topic, topic_id).as_str())
        .join(partition.to_string().as_str())
}

/// `<prefix>/topics/<topic>-<topicId>/<partition>/<baseOffset:020>-<segmentId>.<ext>`.
pub fn segment_object(
    prefix: &Path,
    topic: &str,
    topic_id: TopicId,
    partition: i32,
    base_offset: i64,
    segment_id: Uuid,
    kind: ObjectKind,
) -> Path {
    segment_object_prefix(prefix, topic, topic_id, partition)
        .join(segment_file_name(base_offset, segment_id, kind).as_str())
}

/// `<baseOffset:020>-<segmentId>.<ext>`.
pub fn segment_file_name(base_offset: i64, segment_id: Uuid, kind: ObjectKind) -> String {
    format!(
        "{base_offset:020}-{}.{}",
        segment_id.as_hyphenated(),
        kind.extension()
    )
}

/// Base offset, segment id and kind of a segment object, from the last part of its path;
/// `None` for any other name.
pub fn parse_segment_object(path: &Path) -> Option<(i64, Uuid, ObjectKind)> {
    let file_name = path.filename()?;
    let (stem, extension) = file_name.split_once('.')?;
    let kind = ObjectKind::from_extension(extension)?;
    let (offset_text, segment_text) = stem.split_once('-')?;
    if offset_text.len() != 20 || !offset_text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let base_offset: i64 = offset_text.parse().ok()?;
    let segment_id = Uuid::try_parse(segment_text).ok()?;
    Some((base_offset, segment_id, kind))
}

/// Where a segment object sits, parsed from its full path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentObjectLocation {
    /// The `<topic>-<topicId>` folder name.
    pub topic_dir: String,
    /// Partition index.
    pub partition: i32,
    /// Segment base offset.
    pub base_offset: i64,
    /// Segment id (one upload).
    pub segment_id: Uuid,
    /// Which file of the segment.
    pub kind: ObjectKind,
}

/// Parses `<prefix>/topics/<topic>-<topicId>/<partition>/<file>`; `None` for any path not
/// laid out that way.
pub fn parse_segment_object_location(prefix: &Path, path: &Path) -> Option<SegmentObjectLocation> {
    let mut parts = path.prefix_match(&topics_root(prefix))?;
    let topic_dir = parts.next()?.as_ref().to_string();
    let partition: i32 = parts.next()?.as_ref().parse().ok()?;
    let _file = parts.next()?;
    if parts.next().is_some() || partition < 0 {
        return None;
    }
    let (base_offset, segment_id, kind) = parse_segment_object(path)?;
    Some(SegmentObjectLocation {
        topic_dir,
        partition,
        base_offset,
        segment_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_round_trip() {
        let prefix = Path::from("cluster-a");
        let topic_id = TopicId(Uuid::from_u128(7));
        let segment_id = Uuid::from_u128(0xabc);
        for kind in ObjectKind::ALL {
            let path = segment_object(&prefix, "orders.v1", topic_id, 3, 42, segment_id, kind);
            assert!(
                path.as_ref()
                    .starts_with(&format!("cluster-a/topics/orders.v1-{topic_id}/3/")),
                "{path}"
            );
            assert_eq!(parse_segment_object(&path), Some((42, segment_id, kind)));
            let location = parse_segment_object_location(&prefix, &path).expect("location");
            assert_eq!(location.topic_dir, topic_dir_name("orders.v1", topic_id));
            assert_eq!(location.partition, 3);
        }
        let log = segment_object(&prefix, "t", topic_id, 0, 5, segment_id, ObjectKind::Log);
        assert_eq!(
            log.filename(),
            Some("00000000000000000005-00000000-0000-0000-0000-000000000abc.log")
        );
    }

    #[test]
    fn foreign_names_do_not_parse() {
        assert_eq!(parse_segment_object(&Path::from("a/b/readme.txt")), None);
        assert_eq!(
            parse_segment_object(&Path::from("a/5-not-a-uuid.log")),
            None
        );
        let prefix = Path::default();
        assert_eq!(
            parse_segment_object_location(&prefix, &Path::from("exports/t/x.log")),
            None
        );
    }

    #[test]
    fn empty_prefix_puts_topics_at_the_root() {
        let path = segment_object_prefix(&Path::default(), "t", TopicId(Uuid::from_u128(1)), 0);
        assert!(path.as_ref().starts_with("topics/t-"), "{path}");
    }
}
