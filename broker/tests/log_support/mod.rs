//! Helpers shared by the `log_*` integration tests: real v2 batches built
//! with kafka-protocol's encoder, a log opener and a fetch-everything reader.

#![allow(dead_code)]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use silt_broker::log::PartitionLog;
use silt_broker::log_config::LogConfig;

/// What one test batch looks like.
#[derive(Debug, Clone)]
pub(crate) struct BatchSpec {
    pub(crate) records: usize,
    pub(crate) value_size: usize,
    /// Timestamp of the first record; record `i` gets `first_timestamp + i`.
    pub(crate) first_timestamp: i64,
    pub(crate) compression: Compression,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    /// Prefix of every record value, so tests can tell batches apart.
    pub(crate) tag: String,
}

impl BatchSpec {
    pub(crate) fn new(records: usize, first_timestamp: i64) -> BatchSpec {
        BatchSpec {
            records,
            value_size: 32,
            first_timestamp,
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            tag: "v".to_string(),
        }
    }

    pub(crate) fn tag(mut self, tag: &str) -> BatchSpec {
        self.tag = tag.to_string();
        self
    }

    pub(crate) fn value_size(mut self, value_size: usize) -> BatchSpec {
        self.value_size = value_size;
        self
    }

    pub(crate) fn compression(mut self, compression: Compression) -> BatchSpec {
        self.compression = compression;
        self
    }

    pub(crate) fn idempotent(
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
    pub(crate) fn value(&self, index: usize) -> Vec<u8> {
        let mut value = format!("{}-{index}-", self.tag).into_bytes();
        value.resize(self.value_size.max(value.len()), b'x');
        value
    }

    /// Encodes the batch as a producer would send it (base offset 0).
    pub(crate) fn encode(&self) -> Vec<u8> {
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
                timestamp: self.first_timestamp + index as i64,
                key: Some(Bytes::from(format!("key-{index}"))),
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
        buf.to_vec()
    }
}

/// Uncompressed batch of `records` records with timestamps from `first_timestamp`.
pub(crate) fn batch(records: usize, first_timestamp: i64) -> Vec<u8> {
    BatchSpec::new(records, first_timestamp).encode()
}

/// A config with small segments and dense indexes so tests roll often.
pub(crate) fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

pub(crate) fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, 1_000).expect("open log")
}

/// Decoded records of a read: (offset, timestamp, value).
pub(crate) fn decode(records: &Bytes) -> Vec<(i64, i64, Vec<u8>)> {
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

/// Reads the whole log from `from` to the log end, fetch by fetch.
pub(crate) fn read_all(
    log: &PartitionLog,
    from: i64,
    max_bytes: usize,
) -> Vec<(i64, i64, Vec<u8>)> {
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

/// (offset, value) of every record from the log start offset on, read `max_bytes` per fetch.
pub(crate) fn offsets_and_values(log: &PartitionLog, max_bytes: usize) -> Vec<(i64, Vec<u8>)> {
    read_all(log, log.log_start_offset(), max_bytes)
        .into_iter()
        .map(|(offset, _, value)| (offset, value))
        .collect()
}

/// (offset, value) of every record of batches `0..batches`, batch `index` built by
/// `spec(index)`, as appended in order to an empty log.
pub(crate) fn expected_values(
    batches: i64,
    spec: impl Fn(i64) -> BatchSpec,
) -> Vec<(i64, Vec<u8>)> {
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

/// Segment base offsets found on disk.
pub(crate) fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".log"))
        .collect();
    names.sort();
    names
}
