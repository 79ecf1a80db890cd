//! Fetch responses encoded without copying record bytes.
//!
//! A Fetch response is mostly record batches read from segments (or the remote chunk
//! cache) as [`Bytes`]. Encoding it into one buffer would copy every fetched byte once
//! more, for consumers and for every follower. Instead the frame is a list of parts:
//! small encoded pieces (header, fields, length prefixes) and the record [`Bytes`]
//! themselves, written to the socket in order.
//!
//! The byte layout is Kafka's Fetch response (protocol guide, FetchResponse v4..=12):
//! the outer structure (top-level fields, topics, arrays) is written here, and each
//! partition's fields come from kafka-protocol's own encoder, split at its `records`
//! field. Tests check that the parts concatenate to exactly what kafka-protocol encodes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// Record sets shorter than this are copied into the frame: a separate part costs more
/// than the copy.
const SPLICE_MIN_BYTES: usize = 4096;

/// Lowest and highest Fetch version this encoder writes (Silt serves v4..=12).
const MIN_VERSION: i16 = 4;
const MAX_VERSION: i16 = 12;
/// First flexible (compact, tagged-field) Fetch version.
const FIRST_FLEXIBLE_VERSION: i16 = 12;

/// One response frame (without its 4-byte size prefix) as parts to write in order.
#[derive(Debug, Clone, Default)]
pub struct ResponseFrame {
    parts: Vec<Bytes>,
    len: usize,
}

impl ResponseFrame {
    /// A frame of one contiguous buffer.
    pub fn single(bytes: Bytes) -> ResponseFrame {
        let len = bytes.len();
        ResponseFrame {
            parts: vec![bytes],
            len,
        }
    }

    /// Total size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in wire order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }
}

/// Encodes `header` (at `header_version`) and `response` (at `version`) as a frame whose
/// record bytes are shared with `response`, not copied. `None` when the response uses
/// something this encoder leaves to kafka-protocol (a version outside v4..=12, unknown
/// tagged fields on the response or a topic): the caller encodes it whole instead.
///
/// # Errors
/// kafka-protocol's encoding errors (a field set that the version cannot carry).
pub fn encode_fetch_response(
    header: &ResponseHeader,
    header_version: i16,
    response: &FetchResponse,
    version: i16,
) -> anyhow::Result<Option<ResponseFrame>> {
    if !(MIN_VERSION..=MAX_VERSION).contains(&version)
        || !response.unknown_tagged_fields.is_empty()
        || response
            .responses
            .iter()
            .any(|topic| !topic.unknown_tagged_fields.is_empty())
    {
        return Ok(None);
    }
    let flexible = version >= FIRST_FLEXIBLE_VERSION;
    let mut frame = ResponseFrame::default();
    let mut head = BytesMut::new();
    header.encode(&mut head, header_version)?;
    head.put_i32(response.throttle_time_ms);
    if version >= 7 {
        head.put_i16(response.error_code);
        head.put_i32(response.session_id);
    } else if response.session_id != 0 {
        anyhow::bail!("Fetch v{version} cannot carry a session id");
    }
    put_array_len(&mut head, response.responses.len(), flexible)?;
    for topic in &response.responses {
        put_string(&mut head, topic.topic.0.as_bytes(), flexible)?;
        put_array_len(&mut head, topic.partitions.len(), flexible)?;
        for partition in &topic.partitions {
            put_partition(&mut frame, &mut head, partition, version)?;
        }
        if flexible {
            // No tagged fields on the topic.
            put_unsigned_varint(&mut head, 0);
        }
    }
    if flexible {
        put_unsigned_varint(&mut head, 0);
    }
    frame.push(head.freeze());
    Ok(Some(frame))
}

/// An array length: `UNSIGNED_VARINT(n + 1)` when flexible, `INT32(n)` before.
fn put_array_len(head: &mut BytesMut, len: usize, flexible: bool) -> anyhow::Result<()> {
    if flexible {
        put_unsigned_varint(head, u32::try_from(len + 1)?);
    } else {
        head.put_i32(i32::try_from(len)?);
    }
    Ok(())
}

/// A non-null string: `COMPACT_STRING` when flexible, `STRING` (INT16 length) before.
fn put_string(head: &mut BytesMut, value: &[u8], flexible: bool) -> anyhow::Result<()> {
    if flexible {
        put_unsigned_varint(head, u32::try_from(value.len() + 1)?);
    } else {
        head.put_i16(i16::try_from(value.len())?);
    }
    head.extend_from_slice(value);
    Ok(())
}

/// The protocol's UNSIGNED_VARINT: 7 bits a byte, low bits first.
fn put_unsigned_varint(head: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        head.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    head.put_u8(value as u8);
}

/// Appends one partition: its fields through kafka-protocol, with a large record set
/// spliced in as its own part.
fn put_partition(
    frame: &mut ResponseFrame,
    head: &mut BytesMut,
    partition: &PartitionData,
    version: i16,
) -> anyhow::Result<()> {
    let records = match &partition.records {
        Some(records) if records.len() >= SPLICE_MIN_BYTES => records.clone(),
        _ => {
            partition.encode(head, version)?;
            return Ok(());
        }
    };
    // Encoded with an empty and with a one-byte record set, the partition differs only
    // in its records field: the first differing byte locates it.
    let mut stripped = partition.clone();
    stripped.records = Some(Bytes::new());
    let mut empty = BytesMut::new();
    stripped.encode(&mut empty, version)?;
    stripped.records = Some(Bytes::from_static(b"x"));
    let mut one = BytesMut::new();
    stripped.encode(&mut one, version)?;
    let Some(first_difference) = empty.iter().zip(one.iter()).position(|(a, b)| a != b) else {
        anyhow::bail!("Fetch v{version} partition encoding has no records field");
    };
    let flexible = version >= FIRST_FLEXIBLE_VERSION;
    // An empty record set is `varint(1)` in flexible versions, `int32(0)` before.
    let (field_start, empty_prefix_len) = if flexible {
        (first_difference, 1)
    } else {
        (first_difference.saturating_sub(3), 4)
    };
    let Some(tail) = empty.get(field_start + empty_prefix_len..) else {
        anyhow::bail!("Fetch v{version} partition encoding is shorter than its records field");
    };
    head.extend_from_slice(&empty[..field_start]);
    if flexible {
        put_unsigned_varint(head, u32::try_from(records.len() + 1)?);
    } else {
        head.put_i32(i32::try_from(records.len())?);
    }
    frame.push(head.split().freeze());
    frame.push(records);
    head.extend_from_slice(tail);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect::<Vec<u8>>(),
        )
    }

    fn partition(index: i32, records: Option<Bytes>) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(1_000 + i64::from(index))
            .with_last_stable_offset(900)
            .with_log_start_offset(7)
            .with_records(records)
    }

    fn sample(version: i16) -> FetchResponse {
        let mut with_extras = partition(3, Some(records(70_000, 3)));
        with_extras.aborted_transactions = Some(vec![
            AbortedTransaction::default()
                .with_producer_id(ProducerId(5))
                .with_first_offset(11),
        ]);
        if version >= 11 {
            with_extras.preferred_read_replica = BrokerId(2);
        }
        if version >= 12 {
            with_extras.diverging_epoch =
                EpochEndOffset::default().with_epoch(4).with_end_offset(99);
            with_extras.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(1))
                .with_leader_epoch(6);
        }
        let topics = vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![
                    partition(0, Some(records(1_048_576, 0))),
                    partition(1, Some(records(100, 1))),
                    partition(2, None),
                    with_extras,
                    partition(4, Some(Bytes::new())).with_error_code(1),
                ]),
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str(
                    "a-topic-with-a-longer-name",
                )))
                .with_partitions(vec![partition(0, Some(records(SPLICE_MIN_BYTES, 9)))]),
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("empty"))),
        ];
        let response = FetchResponse::default()
            .with_throttle_time_ms(12)
            .with_responses(topics);
        if version >= 7 {
            response.with_error_code(0).with_session_id(42)
        } else {
            response
        }
    }

    fn reference(
        header: &ResponseHeader,
        header_version: i16,
        response: &FetchResponse,
        version: i16,
    ) -> Vec<u8> {
        let mut buffer = BytesMut::new();
        header
            .encode(&mut buffer, header_version)
            .expect("header encodes");
        response
            .encode(&mut buffer, version)
            .expect("response encodes");
        buffer.to_vec()
    }

    #[test]
    fn parts_concatenate_to_the_kafka_protocol_encoding() {
        for version in MIN_VERSION..=MAX_VERSION {
            let header_version = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::default().with_correlation_id(77);
            let response = sample(version);
            let frame = encode_fetch_response(&header, header_version, &response, version)
                .expect("encodes")
                .expect("handled without fallback");
            let joined: Vec<u8> = frame
                .parts()
                .iter()
                .flat_map(|part| part.iter().copied())
                .collect();
            assert_eq!(joined.len(), frame.len(), "v{version}");
            assert_eq!(
                joined,
                reference(&header, header_version, &response, version),
                "v{version}"
            );
        }
    }

    #[test]
    fn large_record_sets_are_shared_not_copied() {
        let response = sample(12);
        let frame = encode_fetch_response(&ResponseHeader::default(), 1, &response, 12)
            .expect("encodes")
            .expect("handled");
        let big = response.responses[0].partitions[0]
            .records
            .as_ref()
            .expect("records");
        assert!(
            frame
                .parts()
                .iter()
                .any(|part| part.as_ptr() == big.as_ptr() && part.len() == big.len()),
            "the 1 MiB record set should be a part of its own"
        );
        let small = response.responses[0].partitions[1]
            .records
            .as_ref()
            .expect("records");
        assert!(
            !frame
                .parts()
                .iter()
                .any(|part| part.as_ptr() == small.as_ptr()),
            "a 100-byte record set is copied"
        );
    }

    #[test]
    fn unknown_tagged_fields_fall_back_to_the_whole_encoding() {
        let mut response = sample(12);
        let _ = response
            .unknown_tagged_fields
            .insert(9, Bytes::from_static(b"z"));
        assert!(
            encode_fetch_response(&ResponseHeader::default(), 1, &response, 12)
                .expect("no error")
                .is_none()
        );
        assert!(
            encode_fetch_response(&ResponseHeader::default(), 0, &sample(4), 13)
                .expect("no error")
                .is_none()
        );
    }

    #[test]
    fn a_session_id_on_an_old_version_is_refused() {
        let response = sample(6).with_session_id(5);
        assert!(encode_fetch_response(&ResponseHeader::default(), 0, &response, 6).is_err());
    }
}
