//! Kafka RecordBatch v2 ("magic 2") framing: header parsing, produce-time
//! validation and the in-place patches the leader applies before appending.
//!
//! Layout of a batch (all integers big-endian, offsets in bytes):
//!
//! | at | field | type |
//! |---|---|---|
//! | 0 | baseOffset | i64 |
//! | 8 | batchLength (bytes after this field) | i32 |
//! | 12 | partitionLeaderEpoch | i32 |
//! | 16 | magic | i8 |
//! | 17 | crc (CRC-32C of bytes 21..end) | u32 |
//! | 21 | attributes | i16 |
//! | 23 | lastOffsetDelta | i32 |
//! | 27 | baseTimestamp | i64 |
//! | 35 | maxTimestamp | i64 |
//! | 43 | producerId | i64 |
//! | 51 | producerEpoch | i16 |
//! | 53 | baseSequence | i32 |
//! | 57 | recordsCount | i32 |
//! | 61 | records | bytes |

use std::fmt;

use bytes::Bytes;

/// Bytes before `partitionLeaderEpoch`: `baseOffset` and `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, i.e. of a batch with no records.
pub const BATCH_HEADER_SIZE: usize = 61;
/// The only batch format version Silt accepts.
pub const MAGIC_V2: i8 = 2;
/// `producerId` of batches written by non-idempotent producers.
pub const NO_PRODUCER_ID: i64 = -1;
/// `baseSequence` of batches without sequence numbers.
pub const NO_SEQUENCE: i32 = -1;
/// Timestamp meaning "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// A batch that cannot be accepted. Every variant is Kafka `CORRUPT_MESSAGE`
/// except [`BatchError::UnsupportedMagic`] (`UNSUPPORTED_FOR_MESSAGE_FORMAT`).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the framing announces.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the framing requires.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// `batchLength` smaller than a header or larger than `i32::MAX`.
    #[error("invalid record batch length {0}")]
    InvalidLength(i64),
    /// A record set with no batch at all.
    #[error("empty record set")]
    Empty,
    /// `magic` other than 2 (message sets v0/v1 are not supported).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// CRC-32C in the header does not match the content.
    #[error("corrupt record batch: crc {expected:#010x} stored, {actual:#010x} computed")]
    CorruptCrc {
        /// The CRC stored in the batch header.
        expected: u32,
        /// The CRC computed over attributes..end.
        actual: u32,
    },
    /// `recordsCount` negative, zero on produce, or inconsistent with `lastOffsetDelta`.
    #[error("invalid record count {records_count} for last offset delta {last_offset_delta}")]
    InvalidRecordCount {
        /// `recordsCount` from the header.
        records_count: i32,
        /// `lastOffsetDelta` from the header.
        last_offset_delta: i32,
    },
    /// Compression codec id outside 0..=4.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// Producers may not write control batches.
    #[error("control batches may not be produced by clients")]
    ControlBatchFromClient,
    /// A batch with a producer id must carry a non-negative base sequence.
    #[error("invalid base sequence {base_sequence} for producer id {producer_id}")]
    InvalidSequence {
        /// `producerId` from the header.
        producer_id: i64,
        /// `baseSequence` from the header.
        base_sequence: i32,
    },
    /// Batches of a replicated record set must have increasing offsets.
    #[error(
        "non-monotonic batch offsets: base offset {base_offset} after last offset {previous_last_offset}"
    )]
    NonMonotonicOffsets {
        /// Base offset of the offending batch.
        base_offset: i64,
        /// Last offset of the batch before it.
        previous_last_offset: i64,
    },
    /// The records inside a batch whose header is valid cannot be decoded (a corrupt
    /// compressed payload, a record running past the batch).
    #[error("records of the batch cannot be decoded: {0}")]
    Undecodable(String),
}

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Codec 0.
    None,
    /// Codec 1.
    Gzip,
    /// Codec 2.
    Snappy,
    /// Codec 3.
    Lz4,
    /// Codec 4.
    Zstd,
    /// Codecs 5-7, never valid.
    Unknown(u8),
}

impl Compression {
    fn from_attributes(attributes: i16) -> Compression {
        match (attributes & COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }
}

/// Meaning of batch and record timestamps (attributes bit 3), also the
/// `message.timestamp.type` topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Timestamps set by the producer (`CreateTime`).
    #[default]
    CreateTime,
    /// Timestamps set by the broker when appending (`LogAppendTime`).
    LogAppendTime,
}

impl TimestampType {
    /// The topic-config spelling: `CreateTime` or `LogAppendTime`.
    pub fn as_config_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }

    /// Parses the topic-config spelling.
    pub fn from_config_str(value: &str) -> Option<TimestampType> {
        match value {
            "CreateTime" => Some(TimestampType::CreateTime),
            "LogAppendTime" => Some(TimestampType::LogAppendTime),
            _ => None,
        }
    }
}

impl fmt::Display for TimestampType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_config_str())
    }
}

/// The fixed 61-byte header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the leader).
    pub base_offset: i64,
    /// Bytes after the `batchLength` field; the batch occupies `12 + batch_length` bytes.
    pub batch_length: i32,
    /// Leader epoch stamped by the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Format version, 2.
    pub magic: i8,
    /// CRC-32C of bytes 21..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// `last_offset - base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (ms).
    pub base_timestamp: i64,
    /// Largest record timestamp, or the log append time for `LogAppendTime` batches (ms).
    pub max_timestamp: i64,
    /// Producer id, -1 for non-idempotent producers.
    pub producer_id: i64,
    /// Producer epoch, -1 when unused.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when unused.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Offset of the last record (inclusive).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset just after the batch (exclusive end).
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Total size of the batch on the wire and on disk, in bytes.
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Attributes bit 4.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Attributes bit 5: a batch of transaction markers.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Attributes bits 0-2.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes)
    }

    /// Attributes bit 3.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch comes from an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record, wrapping past `i32::MAX` to 0 as
    /// Kafka does; -1 when the batch carries no sequence.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + increment`, wrapping from `i32::MAX` to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

/// Reads `batchLength` from the first 12 bytes of a batch and returns the
/// whole batch size (`12 + batchLength`). Checks only that the length is
/// large enough for a v2 header.
pub fn batch_size_from_prefix(prefix: &[u8]) -> Result<usize, BatchError> {
    if prefix.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD,
            available: prefix.len(),
        });
    }
    let batch_length = read_i32(prefix, BATCH_LENGTH_AT);
    if (batch_length as i64) < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i64 {
        return Err(BatchError::InvalidLength(i64::from(batch_length)));
    }
    Ok(LOG_OVERHEAD + batch_length as usize)
}

/// Decodes the header at the start of `buf`, which must hold at least 61
/// bytes. Rejects any magic other than 2 (the magic byte sits at byte 16 in
/// every message format, so old formats are recognised).
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() > MAGIC_AT {
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
    }
    if buf.len() < BATCH_HEADER_SIZE {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_SIZE,
            available: buf.len(),
        });
    }
    Ok(BatchHeader {
        base_offset: read_i64(buf, BASE_OFFSET_AT),
        batch_length: read_i32(buf, BATCH_LENGTH_AT),
        partition_leader_epoch: read_i32(buf, LEADER_EPOCH_AT),
        magic: buf[MAGIC_AT] as i8,
        crc: read_u32(buf, CRC_AT),
        attributes: read_i16(buf, ATTRIBUTES_AT),
        last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_AT),
        base_timestamp: read_i64(buf, BASE_TIMESTAMP_AT),
        max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
        producer_id: read_i64(buf, PRODUCER_ID_AT),
        producer_epoch: read_i16(buf, PRODUCER_EPOCH_AT),
        base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
        records_count: read_i32(buf, RECORDS_COUNT_AT),
    })
}

/// CRC-32C over attributes..end of one complete batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Checks one complete batch (`batch.len()` must equal its framed size):
/// magic, CRC, codec and the structural fields every stored batch must
/// satisfy (`recordsCount >= 0`, `lastOffsetDelta >= 0`). Used by recovery
/// and the replication path; produce adds [`validate_batches`]' extra rules.
pub fn validate_stored_batch(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(batch)?;
    debug_assert_eq!(header.size_bytes(), batch.len());
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(BatchError::CorruptCrc {
            expected: header.crc,
            actual,
        });
    }
    if let Compression::Unknown(codec) = header.compression() {
        return Err(BatchError::UnknownCompression(codec));
    }
    if header.records_count < 0 || header.last_offset_delta < 0 {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Splits `buf` into complete batches, calling `check` on each. Framing must
/// be exact: no partial batch and no trailing bytes.
fn for_each_batch(
    buf: &[u8],
    mut check: impl FnMut(&[u8]) -> Result<BatchHeader, BatchError>,
) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut headers = Vec::new();
    let mut position = 0usize;
    while position < buf.len() {
        let remaining = &buf[position..];
        if remaining.len() > MAGIC_AT {
            let magic = remaining[MAGIC_AT] as i8;
            if magic != MAGIC_V2 {
                return Err(BatchError::UnsupportedMagic(magic));
            }
        }
        let size = batch_size_from_prefix(remaining)?;
        if remaining.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                available: remaining.len(),
            });
        }
        headers.push(check(&remaining[..size])?);
        position += size;
    }
    Ok(headers)
}

/// Validates a buffer holding one or more complete batches as sent by a
/// producer and returns their headers in order. Checks what Kafka checks on
/// produce at batch level: exact framing, magic 2, CRC-32C, a known codec,
/// `recordsCount > 0` and equal to `lastOffsetDelta + 1`, no control batches,
/// and a non-negative base sequence when a producer id is set. Records inside
/// compressed batches are not inspected.
pub fn validate_batches(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    for_each_batch(buf, |batch| {
        let header = validate_stored_batch(batch)?;
        if header.records_count <= 0
            || i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
        {
            return Err(BatchError::InvalidRecordCount {
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if header.is_control() {
            return Err(BatchError::ControlBatchFromClient);
        }
        if header.has_producer_id() && header.base_sequence < 0 {
            return Err(BatchError::InvalidSequence {
                producer_id: header.producer_id,
                base_sequence: header.base_sequence,
            });
        }
        Ok(header)
    })
}

/// Validates batches that already carry offsets (replication, recovery of a
/// copied segment): framing, magic, CRC, codec, and strictly increasing
/// offsets. Offset gaps (compacted batches) are allowed.
pub fn validate_replicated_batches(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    let mut previous_last_offset: Option<i64> = None;
    for_each_batch(buf, |batch| {
        let header = validate_stored_batch(batch)?;
        if let Some(previous) = previous_last_offset
            && header.base_offset <= previous
        {
            return Err(BatchError::NonMonotonicOffsets {
                base_offset: header.base_offset,
                previous_last_offset: previous,
            });
        }
        previous_last_offset = Some(header.last_offset());
        Ok(header)
    })
}

/// Length of a batch's offset prefix: `baseOffset`, `batchLength` and
/// `partitionLeaderEpoch`, the fields before `magic`.
pub const OFFSET_PREFIX_SIZE: usize = 16;

/// The first [`OFFSET_PREFIX_SIZE`] bytes of the batch `header` describes, as
/// stored: a leader writes these from the assigned header and the rest of the
/// batch as received, instead of copying the batch to patch it (none of these
/// fields is covered by the CRC).
pub fn encode_offset_prefix(header: &BatchHeader) -> [u8; OFFSET_PREFIX_SIZE] {
    let mut prefix = [0u8; OFFSET_PREFIX_SIZE];
    prefix[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&header.base_offset.to_be_bytes());
    prefix[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
        .copy_from_slice(&header.batch_length.to_be_bytes());
    prefix[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4]
        .copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
    prefix
}

/// Patches `baseOffset` (bytes 0..8) and `partitionLeaderEpoch` (12..16) of
/// the batch at the start of `buf`. Neither field is covered by the CRC, so
/// the batch stays valid without re-encoding. `buf` must hold at least a
/// batch header.
pub fn patch_base_offset_and_epoch(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    debug_assert!(buf.len() >= BATCH_HEADER_SIZE);
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    buf[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// For `LogAppendTime` topics: sets the timestamp-type bit and `maxTimestamp`
/// to `ts` (ms) and recomputes the CRC, as Kafka does. `buf` must hold exactly
/// one complete batch.
pub fn set_log_append_time(buf: &mut [u8], ts: i64) {
    debug_assert!(buf.len() >= BATCH_HEADER_SIZE);
    let attributes = read_i16(buf, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&ts.to_be_bytes());
    let crc = compute_crc(buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Result of looking for a record by timestamp inside one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLookup {
    /// The first matching record: its offset and timestamp (ms).
    Found {
        /// Offset of the record.
        offset: i64,
        /// Timestamp of the record (ms).
        timestamp: i64,
    },
    /// No record of the batch matches.
    NotFound,
    /// The records are compressed and were not inspected.
    Compressed,
}

/// Finds the first record of `batch` (one complete batch) with offset
/// `>= min_offset` and timestamp `>= target_ts`. `LogAppendTime` batches are
/// answered from the header; uncompressed `CreateTime` batches by walking the
/// records; compressed `CreateTime` batches give [`RecordLookup::Compressed`].
/// Malformed records end the walk with `NotFound`.
pub fn find_record_by_timestamp(
    batch: &[u8],
    header: &BatchHeader,
    target_ts: i64,
    min_offset: i64,
) -> RecordLookup {
    if header.last_offset() < min_offset || header.max_timestamp < target_ts {
        return RecordLookup::NotFound;
    }
    if header.timestamp_type() == TimestampType::LogAppendTime {
        return RecordLookup::Found {
            offset: header.base_offset.max(min_offset),
            timestamp: header.max_timestamp,
        };
    }
    if header.compression() != Compression::None {
        return RecordLookup::Compressed;
    }
    let section = batch.get(BATCH_HEADER_SIZE..).unwrap_or_default();
    for entry in RecordWalk::new(header, section) {
        let Ok(entry) = entry else {
            return RecordLookup::NotFound;
        };
        if entry.offset >= min_offset && entry.timestamp >= target_ts {
            return RecordLookup::Found {
                offset: entry.offset,
                timestamp: entry.timestamp,
            };
        }
    }
    RecordLookup::NotFound
}

/// One record of a batch, located in the batch's decompressed records section
/// ([`decompressed_records`]); ranges are byte positions in that section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    /// Offset of the record (base offset + offset delta).
    pub offset: i64,
    /// Timestamp of the record (ms): base timestamp + delta, or the batch's max
    /// timestamp for `LogAppendTime` batches.
    pub timestamp: i64,
    /// The key's bytes; None for a null key.
    pub key: Option<std::ops::Range<usize>>,
    /// The value's bytes; None for a null value (a tombstone).
    pub value: Option<std::ops::Range<usize>>,
    /// The record's headers section: the header count, then each header's key and
    /// value ([`record_headers`] reads it).
    pub headers: std::ops::Range<usize>,
    /// The whole record, its length prefix included.
    pub bytes: std::ops::Range<usize>,
}

fn undecodable(what: impl fmt::Display) -> BatchError {
    BatchError::Undecodable(what.to_string())
}

/// The records section of one complete `batch` (the bytes after its 61-byte
/// header), decompressed with the codec `header` names.
///
/// # Errors
/// [`BatchError::UnknownCompression`] for codecs 5-7, [`BatchError::Undecodable`] when
/// the payload does not decompress.
pub fn decompressed_records(batch: &[u8], header: &BatchHeader) -> Result<Bytes, BatchError> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let mut payload = Bytes::copy_from_slice(batch.get(BATCH_HEADER_SIZE..).unwrap_or_default());
    let take = |buf: &mut Bytes| Ok(buf.split_off(0));
    let decompressed = match header.compression() {
        Compression::None => return Ok(payload),
        Compression::Gzip => <Gzip as Decompressor<Bytes>>::decompress(&mut payload, take),
        Compression::Snappy => <Snappy as Decompressor<Bytes>>::decompress(&mut payload, take),
        Compression::Lz4 => <Lz4 as Decompressor<Bytes>>::decompress(&mut payload, take),
        Compression::Zstd => <Zstd as Decompressor<Bytes>>::decompress(&mut payload, take),
        Compression::Unknown(codec) => return Err(BatchError::UnknownCompression(codec)),
    };
    decompressed.map_err(undecodable)
}

/// Walks the `header.records_count` records of a decompressed records `section`
/// (Kafka's v2 record format: length, attributes, timestamp delta, offset delta, key,
/// value, headers).
///
/// # Errors
/// [`BatchError::Undecodable`] when a record is truncated or malformed, or the
/// section holds bytes after the last record.
pub fn record_entries(
    header: &BatchHeader,
    section: &[u8],
) -> Result<Vec<RecordEntry>, BatchError> {
    let mut walk = RecordWalk::new(header, section);
    let entries = walk.by_ref().collect::<Result<Vec<_>, _>>()?;
    if walk.cursor != section.len() {
        return Err(undecodable(format!(
            "{} bytes after the last record",
            section.len() - walk.cursor
        )));
    }
    Ok(entries)
}

/// The records of a decompressed records section, one [`RecordEntry`] at a time; the
/// first malformed record ends the walk with its error.
struct RecordWalk<'a> {
    header: &'a BatchHeader,
    section: &'a [u8],
    /// Start of the next record in `section`.
    cursor: usize,
    /// Records still to read.
    remaining: i32,
}

impl<'a> RecordWalk<'a> {
    fn new(header: &'a BatchHeader, section: &'a [u8]) -> RecordWalk<'a> {
        RecordWalk {
            header,
            section,
            cursor: 0,
            remaining: header.records_count.max(0),
        }
    }

    fn read(&self) -> Result<RecordEntry, BatchError> {
        let (header, section, cursor) = (self.header, self.section, self.cursor);
        let truncated = || undecodable("record truncated");
        let (length, body) = read_varint(section, cursor).ok_or_else(truncated)?;
        let length = usize::try_from(length).map_err(undecodable)?;
        let end = body.checked_add(length).filter(|end| *end <= section.len());
        let end = end.ok_or_else(truncated)?;
        let record = &section[..end];
        // attributes (1 byte), then the varints.
        let (timestamp_delta, at) = read_varint(record, body + 1).ok_or_else(truncated)?;
        let (offset_delta, at) = read_varint(record, at).ok_or_else(truncated)?;
        let (key_length, at) = read_varint(record, at).ok_or_else(truncated)?;
        let (key, at) = if key_length < 0 {
            (None, at)
        } else {
            let key_end = at + usize::try_from(key_length).map_err(undecodable)?;
            if key_end > end {
                return Err(truncated());
            }
            (Some(at..key_end), key_end)
        };
        let (value_length, at) = read_varint(record, at).ok_or_else(truncated)?;
        let (value, at) = if value_length < 0 {
            (None, at)
        } else {
            let value_end = at + usize::try_from(value_length).map_err(undecodable)?;
            if value_end > end {
                return Err(truncated());
            }
            (Some(at..value_end), value_end)
        };
        Ok(RecordEntry {
            offset: header.base_offset.saturating_add(offset_delta),
            timestamp: if header.timestamp_type() == TimestampType::LogAppendTime {
                header.max_timestamp
            } else {
                header.base_timestamp.saturating_add(timestamp_delta)
            },
            key,
            value,
            headers: at..end,
            bytes: cursor..end,
        })
    }
}

impl Iterator for RecordWalk<'_> {
    type Item = Result<RecordEntry, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let entry = self.read();
        match &entry {
            Ok(entry) => {
                self.cursor = entry.bytes.end;
                self.remaining -= 1;
            }
            Err(_) => self.remaining = 0,
        }
        Some(entry)
    }
}

/// One record header: its key's and value's byte ranges in the records section (a
/// null value is None).
pub type HeaderEntry = (std::ops::Range<usize>, Option<std::ops::Range<usize>>);

/// The headers of `entry`, a record of the decompressed records `section`, in their
/// order (Kafka allows a key more than once).
///
/// # Errors
/// [`BatchError::Undecodable`] when the headers section is truncated or malformed.
pub fn record_headers(section: &[u8], entry: &RecordEntry) -> Result<Vec<HeaderEntry>, BatchError> {
    let truncated = || undecodable("record header truncated");
    let record = section.get(..entry.headers.end).ok_or_else(truncated)?;
    let (count, mut at) = read_varint(record, entry.headers.start).ok_or_else(truncated)?;
    let count = usize::try_from(count).map_err(undecodable)?;
    let mut headers = Vec::with_capacity(count.min(64));
    let field = |at: usize| -> Result<(Option<std::ops::Range<usize>>, usize), BatchError> {
        let (length, at) = read_varint(record, at).ok_or_else(truncated)?;
        if length < 0 {
            return Ok((None, at));
        }
        let end = at + usize::try_from(length).map_err(undecodable)?;
        if end > record.len() {
            return Err(truncated());
        }
        Ok((Some(at..end), end))
    };
    for _ in 0..count {
        let (key, next) = field(at)?;
        let key = key.ok_or_else(|| undecodable("record header with a null key"))?;
        let (value, next) = field(next)?;
        headers.push((key, value));
        at = next;
    }
    Ok(headers)
}

/// A batch like the one `header` describes holding only `records` (the raw,
/// uncompressed records kept from its section, `records_count` of them), compressed
/// with the same codec. Base offset, last offset delta, leader epoch, attributes, base
/// timestamp, producer id, epoch and base sequence stay, so every kept record keeps its
/// offset, timestamp and sequence and the batch still ends at the original last offset
/// (what producer state needs); `max_timestamp` is the caller's; the CRC is recomputed.
/// `records_count` 0 gives an empty batch, which Kafka's cleaner also keeps for a
/// producer's last batch.
///
/// # Errors
/// [`BatchError::UnknownCompression`], or [`BatchError::Undecodable`] when the codec
/// fails.
pub fn rebuild_batch(
    header: &BatchHeader,
    records: &[u8],
    records_count: i32,
    max_timestamp: i64,
) -> Result<Vec<u8>, BatchError> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let fill = |buf: &mut bytes::BytesMut| {
        buf.extend_from_slice(records);
        Ok(())
    };
    let mut payload = bytes::BytesMut::new();
    let compressed = match header.compression() {
        Compression::None => {
            payload.extend_from_slice(records);
            Ok(())
        }
        Compression::Gzip => <Gzip as Compressor<bytes::BytesMut>>::compress(&mut payload, fill),
        Compression::Snappy => {
            <Snappy as Compressor<bytes::BytesMut>>::compress(&mut payload, fill)
        }
        Compression::Lz4 => <Lz4 as Compressor<bytes::BytesMut>>::compress(&mut payload, fill),
        Compression::Zstd => <Zstd as Compressor<bytes::BytesMut>>::compress(&mut payload, fill),
        Compression::Unknown(codec) => return Err(BatchError::UnknownCompression(codec)),
    };
    compressed.map_err(undecodable)?;
    let batch_length = i32::try_from(BATCH_HEADER_SIZE - LOG_OVERHEAD + payload.len())
        .map_err(|_| BatchError::InvalidLength(payload.len() as i64))?;
    let mut batch = Vec::with_capacity(BATCH_HEADER_SIZE + payload.len());
    batch.extend_from_slice(&header.base_offset.to_be_bytes());
    batch.extend_from_slice(&batch_length.to_be_bytes());
    batch.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    batch.push(header.magic as u8);
    batch.extend_from_slice(&0u32.to_be_bytes());
    batch.extend_from_slice(&header.attributes.to_be_bytes());
    batch.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    batch.extend_from_slice(&header.base_timestamp.to_be_bytes());
    batch.extend_from_slice(&max_timestamp.to_be_bytes());
    batch.extend_from_slice(&header.producer_id.to_be_bytes());
    batch.extend_from_slice(&header.producer_epoch.to_be_bytes());
    batch.extend_from_slice(&header.base_sequence.to_be_bytes());
    batch.extend_from_slice(&records_count.to_be_bytes());
    batch.extend_from_slice(&payload);
    let crc = compute_crc(&batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(batch)
}

/// Reads a zig-zag varint (up to 64 bits) at `at`; returns the value and the
/// position after it, or None if truncated or over-long.
fn read_varint(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    let mut shift = 0u32;
    let mut position = at;
    loop {
        let byte = *buf.get(position)?;
        position += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
    Some((value, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built uncompressed batch with `count` empty records.
    fn batch(count: i32, producer_id: i64, base_sequence: i32) -> Vec<u8> {
        let mut records = Vec::new();
        for index in 0..count {
            // attributes, timestampDelta=index, offsetDelta=index, key -1, value -1, headers 0
            let body = [0u8, (index as u8) << 1, (index as u8) << 1, 1, 1, 0];
            records.push((body.len() as u8) << 1);
            records.extend_from_slice(&body);
        }
        let mut buf = Vec::new();
        buf.extend_from_slice(&0i64.to_be_bytes());
        buf.extend_from_slice(
            &((BATCH_HEADER_SIZE - LOG_OVERHEAD + records.len()) as i32).to_be_bytes(),
        );
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.push(2);
        buf.extend_from_slice(&0u32.to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&(count - 1).to_be_bytes());
        buf.extend_from_slice(&1000i64.to_be_bytes());
        buf.extend_from_slice(&(1000i64 + i64::from(count) - 1).to_be_bytes());
        buf.extend_from_slice(&producer_id.to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&base_sequence.to_be_bytes());
        buf.extend_from_slice(&count.to_be_bytes());
        buf.extend_from_slice(&records);
        let crc = compute_crc(&buf);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        buf
    }

    #[test]
    fn valid_batch_parses_and_validates() {
        let buf = batch(3, -1, -1);
        let headers = validate_batches(&buf).expect("valid");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].records_count, 3);
        assert_eq!(headers[0].last_offset(), 2);
        assert_eq!(headers[0].size_bytes(), buf.len());
    }

    #[test]
    fn trailing_bytes_and_truncation_are_rejected() {
        let mut buf = batch(2, -1, -1);
        buf.push(0);
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::Truncated { .. })
        ));
        let buf = batch(2, -1, -1);
        assert!(matches!(
            validate_batches(&buf[..buf.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert_eq!(validate_batches(&[]), Err(BatchError::Empty));
    }

    #[test]
    fn flipped_bit_fails_crc_and_old_magic_is_unsupported() {
        let mut buf = batch(2, -1, -1);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::CorruptCrc { .. })
        ));
        let mut buf = batch(2, -1, -1);
        buf[MAGIC_AT] = 1;
        assert_eq!(validate_batches(&buf), Err(BatchError::UnsupportedMagic(1)));
    }

    #[test]
    fn inconsistent_count_is_rejected() {
        let mut buf = batch(2, -1, -1);
        buf[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&buf);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::InvalidRecordCount { .. })
        ));
    }

    #[test]
    fn patch_keeps_crc_valid_and_log_append_time_recomputes_it() {
        let mut buf = batch(2, -1, -1);
        patch_base_offset_and_epoch(&mut buf, 42, 7);
        let header = validate_batches(&buf).expect("still valid")[0];
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        set_log_append_time(&mut buf, 99);
        let header = validate_batches(&buf).expect("still valid")[0];
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 99);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut buf = batch(3, 1, i32::MAX - 1);
        let header = parse_header(&buf).expect("header");
        assert_eq!(header.last_sequence(), 0);
        buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&NO_SEQUENCE.to_be_bytes());
        assert_eq!(
            parse_header(&buf).expect("header").last_sequence(),
            NO_SEQUENCE
        );
    }

    #[test]
    fn record_walk_finds_first_record_at_timestamp() {
        let buf = batch(4, -1, -1);
        let header = parse_header(&buf).expect("header");
        assert_eq!(
            find_record_by_timestamp(&buf, &header, 1002, 0),
            RecordLookup::Found {
                offset: 2,
                timestamp: 1002
            }
        );
        assert_eq!(
            find_record_by_timestamp(&buf, &header, 0, 3),
            RecordLookup::Found {
                offset: 3,
                timestamp: 1003
            }
        );
        assert_eq!(
            find_record_by_timestamp(&buf, &header, 5000, 0),
            RecordLookup::NotFound
        );
    }
}
