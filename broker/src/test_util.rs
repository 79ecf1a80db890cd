//! The broker's test kit (feature `test-util`): record batches built the way producers
//! build them (kafka-protocol's encoder, RecordBatch v2), and helpers that open and
//! read a [`PartitionLog`]. Shared by the tests of every crate, so there is one batch
//! builder to keep right.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::log::PartitionLog;
use crate::log_config::LogConfig;

/// What one test batch looks like. Record `i` has key `key-<i>`, the value
/// [`BatchSpec::value`] and the timestamp `first_timestamp + i` unless given.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// Number of records.
    pub records: usize,
    /// Bytes of each generated value (values are padded with `x` up to it).
    pub value_size: usize,
    /// Timestamp of the first record (ms); record `i` gets `first_timestamp + i`.
    pub first_timestamp: i64,
    /// Per-record timestamps (ms), overriding `first_timestamp`.
    pub timestamps: Option<Vec<i64>>,
    /// Per-record values, overriding the generated ones.
    pub values: Option<Vec<Bytes>>,
    /// Codec of the batch.
    pub compression: Compression,
    /// Producer id, -1 for a non-idempotent producer.
    pub producer_id: i64,
    /// Producer epoch, -1 for a non-idempotent producer.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 for a non-idempotent producer.
    pub base_sequence: i32,
    /// Prefix of every generated value, so tests can tell batches apart.
    pub tag: String,
    /// Records carry keys (`key-<i>`); false for records without a key.
    pub keyed: bool,
}

impl BatchSpec {
    /// `records` uncompressed, non-idempotent records with 32-byte values, the first at
    /// `first_timestamp` (ms).
    pub fn new(records: usize, first_timestamp: i64) -> BatchSpec {
        BatchSpec {
            records,
            value_size: 32,
            first_timestamp,
            timestamps: None,
            values: None,
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            tag: "v".to_string(),
            keyed: true,
        }
    }

    /// One record per value, holding exactly that value.
    pub fn with_values(values: &[&str], first_timestamp: i64) -> BatchSpec {
        BatchSpec {
            values: Some(
                values
                    .iter()
                    .map(|value| Bytes::from(value.to_string()))
                    .collect(),
            ),
            ..BatchSpec::new(values.len(), first_timestamp)
        }
    }

    /// One record per timestamp (ms), in that order.
    pub fn with_timestamps(timestamps: Vec<i64>) -> BatchSpec {
        let spec = BatchSpec::new(timestamps.len(), timestamps.first().copied().unwrap_or(0));
        BatchSpec {
            timestamps: Some(timestamps),
            ..spec
        }
    }

    /// Sets the prefix of generated values.
    pub fn tag(mut self, tag: &str) -> BatchSpec {
        self.tag = tag.to_string();
        self
    }

    /// Sets the size of generated values (bytes).
    pub fn value_size(mut self, value_size: usize) -> BatchSpec {
        self.value_size = value_size;
        self
    }

    /// Sets the codec.
    pub fn compression(mut self, compression: Compression) -> BatchSpec {
        self.compression = compression;
        self
    }

    /// Records without a key.
    pub fn without_keys(mut self) -> BatchSpec {
        self.keyed = false;
        self
    }

    /// Makes the batch an idempotent producer's.
    pub fn idempotent(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> BatchSpec {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// The value of record `index`.
    pub fn value(&self, index: usize) -> Vec<u8> {
        if let Some(value) = self.values.as_ref().and_then(|values| values.get(index)) {
            return value.to_vec();
        }
        let mut value = format!("{}-{index}-", self.tag).into_bytes();
        value.resize(self.value_size.max(value.len()), b'x');
        value
    }

    /// The timestamp of record `index` (ms).
    pub fn timestamp(&self, index: usize) -> i64 {
        self.timestamps
            .as_ref()
            .and_then(|timestamps| timestamps.get(index).copied())
            .unwrap_or(self.first_timestamp + index as i64)
    }

    /// Encodes the batch as a producer sends it (base offset 0, no leader epoch).
    ///
    /// # Panics
    /// When kafka-protocol cannot encode it (a codec it was built without).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_bytes().to_vec()
    }

    /// [`Self::encode`] as `Bytes`.
    ///
    /// # Panics
    /// As [`Self::encode`].
    pub fn encode_bytes(&self) -> Bytes {
        let idempotent = self.producer_id >= 0;
        let records: Vec<Record> = (0..self.records)
            .map(|index| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                // The encoder keeps records in one batch while offset - sequence is constant.
                sequence: if idempotent {
                    self.base_sequence.wrapping_add(index as i32)
                } else {
                    index as i32 - 1
                },
                timestamp: self.timestamp(index),
                key: self.keyed.then(|| Bytes::from(format!("key-{index}"))),
                value: Some(Bytes::from(self.value(index))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: self.compression,
            },
        )
        .expect("encode batch");
        buf.freeze()
    }
}

/// Uncompressed batch of `records` records with timestamps from `first_timestamp` (ms).
pub fn batch(records: usize, first_timestamp: i64) -> Vec<u8> {
    BatchSpec::new(records, first_timestamp).encode()
}

/// A config with small segments and dense indexes so tests roll often.
pub fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Opens (or creates) the log in `dir` at time 1,000 ms.
///
/// # Panics
/// When the log cannot be opened.
pub fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, 1_000).expect("open log")
}

/// Decoded records of a read: (offset, timestamp, value).
///
/// # Panics
/// When `records` are not whole, decodable batches.
pub fn decode(records: &Bytes) -> Vec<(i64, i64, Vec<u8>)> {
    let mut buf = records.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("decode batches")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|record| {
            (
                record.offset,
                record.timestamp,
                record.value.map(|value| value.to_vec()).unwrap_or_default(),
            )
        })
        .collect()
}

/// Reads the whole log from `from` to the log end, fetch by fetch of `max_bytes`.
///
/// # Panics
/// When a read fails or makes no progress.
pub fn read_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<(i64, i64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let read = log.read(next, max_bytes, i64::MAX, true).expect("read");
        assert!(!read.records.is_empty(), "no progress at offset {next}");
        let records = decode(&read.records);
        let last = records.last().expect("at least one record").0;
        all.extend(records.into_iter().filter(|(offset, _, _)| *offset >= next));
        next = last + 1;
    }
    all
}

/// (offset, value) of every record from the log start offset on, read `max_bytes` per
/// fetch.
pub fn offsets_and_values(log: &PartitionLog, max_bytes: usize) -> Vec<(i64, Vec<u8>)> {
    read_all(log, log.log_start_offset(), max_bytes)
        .into_iter()
        .map(|(offset, _, value)| (offset, value))
        .collect()
}

/// (offset, value) of every record of batches `0..batches`, batch `index` built by
/// `spec(index)`, as appended in order to an empty log.
pub fn expected_values(batches: i64, spec: impl Fn(i64) -> BatchSpec) -> Vec<(i64, Vec<u8>)> {
    let mut next_offset = 0;
    let mut expected = Vec::new();
    for index in 0..batches {
        let spec = spec(index);
        for record in 0..spec.records {
            expected.push((next_offset, spec.value(record)));
            next_offset += 1;
        }
    }
    expected
}

/// Every file name in `dir`, sorted.
///
/// # Panics
/// When `dir` cannot be read.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The `.log` file names in `dir`, sorted (so by base offset).
///
/// # Panics
/// When `dir` cannot be read.
pub fn log_files(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|name| name.ends_with(".log"))
        .collect()
}
