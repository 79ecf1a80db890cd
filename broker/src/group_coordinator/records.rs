//! Record layouts of `__consumer_offsets`, byte for byte as Apache Kafka writes them, so
//! Kafka tooling can read Silt's offsets topic and the other way round.
//!
//! A key starts with an int16 version: 0 and 1 are `OffsetCommitKey` (group, topic,
//! partition), 2 is `GroupMetadataKey` (group). Values start with their own int16 version.
//! Strings are int16-length prefixed, bytes int32-length prefixed, all big-endian; flexible
//! versions (compact strings, tagged fields) are decoded but never written.

use bytes::{BufMut, Bytes, BytesMut};

use super::GroupError;

/// Key version Kafka writes for committed offsets.
const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata records.
const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Offset value version carrying an explicit expire timestamp.
const OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY: i16 = 1;
/// Offset value version carrying the leader epoch.
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Group metadata value version with static members (`group_instance_id`).
const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordKey {
    /// A committed offset of one partition for one group.
    Offset {
        group_id: String,
        topic: String,
        partition: i32,
    },
    /// The metadata of one group.
    GroupMetadata { group_id: String },
    /// A key version this coordinator does not know (for example the records of the
    /// KIP-848 consumer groups); such records are skipped on load.
    Unknown { version: i16 },
}

/// A committed offset as stored in an `OffsetCommitValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetCommitValue {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: Option<i32>,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp_ms: i64,
    pub(crate) expire_timestamp_ms: Option<i64>,
}

/// Who a group member is and its timeouts: what a live member and its stored
/// `GroupMetadataValue` entry share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberInfo {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
}

/// One member inside a `GroupMetadataValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberMetadataValue {
    pub(crate) identity: MemberInfo,
    pub(crate) subscription: Bytes,
    pub(crate) assignment: Bytes,
}

/// The state of a group after its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMetadataValue {
    pub(crate) protocol_type: String,
    pub(crate) generation_id: i32,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader_id: Option<String>,
    pub(crate) current_state_timestamp_ms: Option<i64>,
    pub(crate) members: Vec<MemberMetadataValue>,
}

/// Encodes the key of a committed offset (`OffsetCommitKey` v1).
pub(crate) fn encode_offset_key(
    group_id: &str,
    topic: &str,
    partition: i32,
) -> Result<Bytes, GroupError> {
    let mut buffer = BytesMut::with_capacity(2 + 2 + group_id.len() + 2 + topic.len() + 4);
    buffer.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut buffer, group_id)?;
    put_string(&mut buffer, topic)?;
    buffer.put_i32(partition);
    Ok(buffer.freeze())
}

/// Encodes the key of a group's metadata (`GroupMetadataKey` v2).
pub(crate) fn encode_group_key(group_id: &str) -> Result<Bytes, GroupError> {
    let mut buffer = BytesMut::with_capacity(2 + 2 + group_id.len());
    buffer.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut buffer, group_id)?;
    Ok(buffer.freeze())
}

/// Encodes a committed offset: v1 when it carries an explicit expire timestamp (OffsetCommit
/// v2..=v4 with a retention time), v3 otherwise, as Kafka does.
pub(crate) fn encode_offset_value(value: &OffsetCommitValue) -> Result<Bytes, GroupError> {
    let mut buffer = BytesMut::with_capacity(2 + 8 + 4 + 2 + value.metadata.len() + 8 + 8);
    match value.expire_timestamp_ms {
        Some(expire_timestamp_ms) => {
            buffer.put_i16(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY);
            buffer.put_i64(value.offset);
            put_string(&mut buffer, &value.metadata)?;
            buffer.put_i64(value.commit_timestamp_ms);
            buffer.put_i64(expire_timestamp_ms);
        }
        None => {
            buffer.put_i16(OFFSET_COMMIT_VALUE_VERSION);
            buffer.put_i64(value.offset);
            buffer.put_i32(value.leader_epoch.unwrap_or(-1));
            put_string(&mut buffer, &value.metadata)?;
            buffer.put_i64(value.commit_timestamp_ms);
        }
    }
    Ok(buffer.freeze())
}

/// Encodes a group's metadata as `GroupMetadataValue` v3.
pub(crate) fn encode_group_value(value: &GroupMetadataValue) -> Result<Bytes, GroupError> {
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_string(&mut buffer, &value.protocol_type)?;
    buffer.put_i32(value.generation_id);
    put_nullable_string(&mut buffer, value.protocol_name.as_deref())?;
    put_nullable_string(&mut buffer, value.leader_id.as_deref())?;
    buffer.put_i64(value.current_state_timestamp_ms.unwrap_or(-1));
    let member_count = i32::try_from(value.members.len())
        .map_err(|_| GroupError::InvalidRecord("too many members to encode".to_string()))?;
    buffer.put_i32(member_count);
    for member in &value.members {
        put_string(&mut buffer, &member.identity.member_id)?;
        put_nullable_string(&mut buffer, member.identity.group_instance_id.as_deref())?;
        put_string(&mut buffer, &member.identity.client_id)?;
        put_string(&mut buffer, &member.identity.client_host)?;
        buffer.put_i32(member.identity.rebalance_timeout_ms);
        buffer.put_i32(member.identity.session_timeout_ms);
        put_bytes(&mut buffer, &member.subscription)?;
        put_bytes(&mut buffer, &member.assignment)?;
    }
    Ok(buffer.freeze())
}

/// Decodes a record key.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<RecordKey, GroupError> {
    let mut reader = Reader::new(bytes, "key");
    let version = reader.i16()?;
    match version {
        0 | 1 => {
            let group_id = reader.string()?;
            let topic = reader.string()?;
            let partition = reader.i32()?;
            Ok(RecordKey::Offset {
                group_id,
                topic,
                partition,
            })
        }
        2 => Ok(RecordKey::GroupMetadata {
            group_id: reader.string()?,
        }),
        _ => Ok(RecordKey::Unknown { version }),
    }
}

/// Decodes an `OffsetCommitValue` of any version Kafka has written (0..=4).
pub(crate) fn decode_offset_value(bytes: &[u8]) -> Result<OffsetCommitValue, GroupError> {
    let mut reader = Reader::new(bytes, "offset commit value");
    let version = reader.i16()?;
    let value = match version {
        0..=2 => {
            let offset = reader.i64()?;
            let metadata = reader.string()?;
            let commit_timestamp_ms = reader.i64()?;
            let expire_timestamp_ms = if version == 1 {
                optional_timestamp(reader.i64()?)
            } else {
                None
            };
            OffsetCommitValue {
                offset,
                leader_epoch: None,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms,
            }
        }
        3 => {
            let offset = reader.i64()?;
            let leader_epoch = optional_epoch(reader.i32()?);
            let metadata = reader.string()?;
            let commit_timestamp_ms = reader.i64()?;
            OffsetCommitValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms: None,
            }
        }
        4 => {
            let offset = reader.i64()?;
            let leader_epoch = optional_epoch(reader.i32()?);
            let metadata = reader.compact_string()?;
            let commit_timestamp_ms = reader.i64()?;
            reader.skip_tagged_fields()?;
            OffsetCommitValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms: None,
            }
        }
        _ => return Err(reader.invalid(format!("unsupported version {version}"))),
    };
    Ok(value)
}

/// Decodes a `GroupMetadataValue` of versions 0..=3.
pub(crate) fn decode_group_value(bytes: &[u8]) -> Result<GroupMetadataValue, GroupError> {
    let mut reader = Reader::new(bytes, "group metadata value");
    let version = reader.i16()?;
    if !(0..=GROUP_METADATA_VALUE_VERSION).contains(&version) {
        return Err(reader.invalid(format!("unsupported version {version}")));
    }
    let protocol_type = reader.string()?;
    let generation_id = reader.i32()?;
    let protocol_name = reader.nullable_string()?;
    let leader_id = reader.nullable_string()?;
    let current_state_timestamp_ms = if version >= 2 {
        optional_timestamp(reader.i64()?)
    } else {
        None
    };
    let member_count = reader.array_length()?;
    let mut members = Vec::new();
    for _ in 0..member_count {
        let member_id = reader.string()?;
        let group_instance_id = if version >= 3 {
            reader.nullable_string()?
        } else {
            None
        };
        let client_id = reader.string()?;
        let client_host = reader.string()?;
        let session_timeout_before_rebalance = version == 0;
        let (rebalance_timeout_ms, session_timeout_ms) = if session_timeout_before_rebalance {
            let session_timeout_ms = reader.i32()?;
            (session_timeout_ms, session_timeout_ms)
        } else {
            let rebalance_timeout_ms = reader.i32()?;
            (rebalance_timeout_ms, reader.i32()?)
        };
        let subscription = reader.bytes()?;
        let assignment = reader.bytes()?;
        members.push(MemberMetadataValue {
            identity: MemberInfo {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
            },
            subscription,
            assignment,
        });
    }
    Ok(GroupMetadataValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        current_state_timestamp_ms,
        members,
    })
}

/// Topics named in a consumer protocol subscription (`ConsumerProtocolSubscription`, any
/// version: the topic list comes first in all of them).
pub(crate) fn decode_subscription_topics(bytes: &[u8]) -> Result<Vec<String>, GroupError> {
    let mut reader = Reader::new(bytes, "consumer subscription");
    let _version = reader.i16()?;
    let topic_count = reader.array_length()?;
    let mut topics = Vec::new();
    for _ in 0..topic_count {
        topics.push(reader.string()?);
    }
    Ok(topics)
}

fn optional_timestamp(timestamp_ms: i64) -> Option<i64> {
    (timestamp_ms != -1).then_some(timestamp_ms)
}

fn optional_epoch(leader_epoch: i32) -> Option<i32> {
    (leader_epoch >= 0).then_some(leader_epoch)
}

fn put_string(buffer: &mut BytesMut, value: &str) -> Result<(), GroupError> {
    let length = i16::try_from(value.len()).map_err(|_| {
        GroupError::InvalidRecord(format!(
            "string of {} bytes is too long to encode",
            value.len()
        ))
    })?;
    buffer.put_i16(length);
    buffer.put_slice(value.as_bytes());
    Ok(())
}

fn put_nullable_string(buffer: &mut BytesMut, value: Option<&str>) -> Result<(), GroupError> {
    match value {
        Some(value) => put_string(buffer, value),
        None => {
            buffer.put_i16(-1);
            Ok(())
        }
    }
}

fn put_bytes(buffer: &mut BytesMut, value: &[u8]) -> Result<(), GroupError> {
    let length = i32::try_from(value.len()).map_err(|_| {
        GroupError::InvalidRecord(format!("{} bytes are too long to encode", value.len()))
    })?;
    buffer.put_i32(length);
    buffer.put_slice(value);
    Ok(())
}

/// Bounds-checked big-endian reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader {
            bytes,
            position: 0,
            what,
        }
    }

    fn invalid(&self, reason: String) -> GroupError {
        GroupError::InvalidRecord(format!("{} at byte {}: {reason}", self.what, self.position))
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], GroupError> {
        let remaining = self.bytes.len() - self.position;
        if length > remaining {
            return Err(self.invalid(format!("needs {length} bytes, {remaining} left")));
        }
        let slice = &self.bytes[self.position..self.position + length];
        self.position += length;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GroupError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn i16(&mut self) -> Result<i16, GroupError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, GroupError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, GroupError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn unsigned_varint(&mut self) -> Result<u32, GroupError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let [byte] = self.array::<1>()?;
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.invalid("unsigned varint longer than 5 bytes".to_string()))
    }

    fn utf8(&mut self, length: usize) -> Result<String, GroupError> {
        let raw = self.take(length)?;
        match std::str::from_utf8(raw) {
            Ok(text) => Ok(text.to_string()),
            Err(_) => Err(self.invalid("string is not valid utf-8".to_string())),
        }
    }

    fn nullable_string(&mut self) -> Result<Option<String>, GroupError> {
        let length = self.i16()?;
        if length == -1 {
            return Ok(None);
        }
        let length =
            usize::try_from(length).map_err(|_| self.invalid(format!("string length {length}")))?;
        self.utf8(length).map(Some)
    }

    fn string(&mut self) -> Result<String, GroupError> {
        self.nullable_string()?
            .ok_or_else(|| self.invalid("null in a non-nullable string".to_string()))
    }

    fn compact_string(&mut self) -> Result<String, GroupError> {
        let length_plus_one = self.unsigned_varint()?;
        let Some(length) = length_plus_one.checked_sub(1) else {
            return Err(self.invalid("null in a non-nullable compact string".to_string()));
        };
        self.utf8(length as usize)
    }

    fn bytes(&mut self) -> Result<Bytes, GroupError> {
        let length = self.i32()?;
        if length == -1 {
            return Ok(Bytes::new());
        }
        let length =
            usize::try_from(length).map_err(|_| self.invalid(format!("bytes length {length}")))?;
        Ok(Bytes::copy_from_slice(self.take(length)?))
    }

    /// An array length, checked against the bytes left (every element takes at least one
    /// byte) so a corrupt count cannot drive a huge loop.
    fn array_length(&mut self) -> Result<usize, GroupError> {
        let length = self.i32()?;
        let length =
            usize::try_from(length).map_err(|_| self.invalid(format!("array length {length}")))?;
        let remaining = self.bytes.len() - self.position;
        if length > remaining {
            return Err(self.invalid(format!("array of {length} elements in {remaining} bytes")));
        }
        Ok(length)
    }

    fn skip_tagged_fields(&mut self) -> Result<(), GroupError> {
        let field_count = self.unsigned_varint()?;
        for _ in 0..field_count {
            let _tag = self.unsigned_varint()?;
            let size = self.unsigned_varint()?;
            let _ = self.take(size as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".to_string(),
            generation_id: 7,
            protocol_name: Some("range".to_string()),
            leader_id: Some("client-1-abc".to_string()),
            current_state_timestamp_ms: Some(1_700_000_000_000),
            members: vec![MemberMetadataValue {
                identity: MemberInfo {
                    member_id: "client-1-abc".to_string(),
                    group_instance_id: Some("instance-1".to_string()),
                    client_id: "client-1".to_string(),
                    client_host: "/127.0.0.1".to_string(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                },
                subscription: Bytes::from_static(b"\x00\x01subscription"),
                assignment: Bytes::from_static(b"\x00\x01assignment"),
            }],
        }
    }

    #[test]
    fn offset_key_matches_kafka_layout() {
        let key = encode_offset_key("g", "t", 3).expect("encodes");
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let decoded = decode_key(&key).expect("decodes");
        assert_eq!(
            decoded,
            RecordKey::Offset {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 3
            }
        );
    }

    #[test]
    fn group_key_matches_kafka_layout() {
        let key = encode_group_key("grp").expect("encodes");
        assert_eq!(&key[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(
            decode_key(&key).expect("decodes"),
            RecordKey::GroupMetadata {
                group_id: "grp".into()
            }
        );
    }

    #[test]
    fn offset_value_v3_round_trips_with_leader_epoch() {
        let value = OffsetCommitValue {
            offset: 42,
            leader_epoch: Some(5),
            metadata: "meta data ✓".to_string(),
            commit_timestamp_ms: 1234,
            expire_timestamp_ms: None,
        };
        let bytes = encode_offset_value(&value).expect("encodes");
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_offset_value(&bytes).expect("decodes"), value);
    }

    #[test]
    fn offset_value_v1_round_trips_with_expire_timestamp() {
        let value = OffsetCommitValue {
            offset: 9,
            leader_epoch: None,
            metadata: String::new(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: Some(5000),
        };
        let bytes = encode_offset_value(&value).expect("encodes");
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(decode_offset_value(&bytes).expect("decodes"), value);
    }

    #[test]
    fn offset_value_v4_flexible_decodes() {
        let mut bytes = vec![0, 4];
        bytes.extend_from_slice(&77i64.to_be_bytes());
        bytes.extend_from_slice(&2i32.to_be_bytes());
        bytes.extend_from_slice(&[3, b'h', b'i']);
        bytes.extend_from_slice(&99i64.to_be_bytes());
        bytes.extend_from_slice(&[1, 0, 2, 0xaa, 0xbb]);
        let value = decode_offset_value(&bytes).expect("decodes");
        assert_eq!(value.offset, 77);
        assert_eq!(value.leader_epoch, Some(2));
        assert_eq!(value.metadata, "hi");
        assert_eq!(value.commit_timestamp_ms, 99);
    }

    #[test]
    fn group_value_v3_round_trips() {
        let value = sample_group();
        let bytes = encode_group_value(&value).expect("encodes");
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_group_value(&bytes).expect("decodes"), value);
    }

    #[test]
    fn empty_group_value_round_trips_with_null_protocol_and_leader() {
        let value = GroupMetadataValue {
            protocol_type: "consumer".to_string(),
            generation_id: 3,
            protocol_name: None,
            leader_id: None,
            current_state_timestamp_ms: None,
            members: Vec::new(),
        };
        let bytes = encode_group_value(&value).expect("encodes");
        assert_eq!(decode_group_value(&bytes).expect("decodes"), value);
    }

    #[test]
    fn every_truncation_of_valid_records_is_an_error_not_a_panic() {
        let group = encode_group_value(&sample_group()).expect("encodes");
        for length in 0..group.len() {
            assert!(
                decode_group_value(&group[..length]).is_err(),
                "length {length}"
            );
        }
        let offset = encode_offset_value(&OffsetCommitValue {
            offset: 1,
            leader_epoch: Some(1),
            metadata: "m".to_string(),
            commit_timestamp_ms: 1,
            expire_timestamp_ms: None,
        })
        .expect("encodes");
        for length in 0..offset.len() {
            assert!(
                decode_offset_value(&offset[..length]).is_err(),
                "length {length}"
            );
        }
        let key = encode_offset_key("group", "topic", 1).expect("encodes");
        for length in 0..key.len() {
            assert!(decode_key(&key[..length]).is_err(), "length {length}");
        }
    }

    #[test]
    fn hostile_lengths_are_rejected() {
        let mut huge_member_count = vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        huge_member_count.extend_from_slice(&(-1i64).to_be_bytes());
        huge_member_count.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_group_value(&huge_member_count).is_err());
        assert!(
            decode_offset_value(&[
                0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
        assert!(decode_key(&[0, 1, 0x80, 0x00]).is_err());
        assert!(decode_offset_value(&[0, 9]).is_err());
        assert!(decode_subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert!(decode_key(&[0, 2, 0, 2, 0xc3, 0x28]).is_err());
    }
}
