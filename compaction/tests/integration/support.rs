//! Keyed record batches with tombstones, and a reader of cleaned logs.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::Mutex;
use silt_broker::PartitionLog;
use silt_broker::log_config::LogConfig;
use silt_broker::record_batch::{batch_size_from_prefix, parse_header};
use silt_compaction::{Cleaner, CleanerConfig, CleanerStats, Throttler};

/// One record as the tests know it: key, value (None for a tombstone), timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
}

/// A producer's identity and next sequence, for idempotent batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Producer {
    pub id: i64,
    pub epoch: i16,
    pub sequence: i32,
}

/// Encodes `records` as one batch as a producer sends it.
pub(crate) fn encode(
    records: &[Rec],
    compression: Compression,
    producer: Option<Producer>,
) -> Vec<u8> {
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, rec)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |producer| producer.id),
            producer_epoch: producer.map_or(-1, |producer| producer.epoch),
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: producer.map_or(index as i32 - 1, |producer| {
                producer.sequence + index as i32
            }),
            timestamp: rec.timestamp,
            key: Some(Bytes::from(rec.key.clone())),
            value: rec.value.clone().map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        encoded.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.to_vec()
}

/// A compacted config with `segment_bytes` segments and dense indexes.
pub(crate) fn compacted(segment_bytes: u64, delete_retention_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        cleanup_policy: "compact".to_string(),
        delete_retention_ms,
        ..LogConfig::default()
    }
}

/// Opens the log in `dir` for the cleaner (which takes it behind a mutex).
pub(crate) fn open(dir: &Path, config: LogConfig) -> Mutex<PartitionLog> {
    Mutex::new(PartitionLog::open(dir, config, 1_000).expect("open log"))
}

/// One forced pass with an offset map of `budget` bytes.
pub(crate) fn clean(log: &Mutex<PartitionLog>, budget: usize, now_ms: i64) -> Option<CleanerStats> {
    let cleaner = Cleaner::new(
        CleanerConfig {
            dedupe_buffer_bytes: budget,
        },
        std::sync::Arc::new(Throttler::new(f64::MAX)),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    cleaner.clean(log, now_ms, true).expect("clean")
}

/// Every record from the log start to the log end, read 300 bytes at a time (so reads
/// start inside gaps and between batches), with offsets: a fetch at an offset
/// compaction removed must answer with the next batch, never an error.
pub(crate) fn read_log(log: &PartitionLog) -> Vec<(i64, Rec)> {
    let mut all = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let read = log.read(next, 300, i64::MAX, true).expect("read");
        if read.records.is_empty() {
            // Only a gap at the very end of the sealed segments, before an empty
            // active segment, answers empty.
            assert_eq!(
                log.active_segment_base_offset(),
                log.log_end_offset(),
                "empty read at {next} below the log end {}",
                log.log_end_offset()
            );
            break;
        }
        let mut position = 0;
        let bytes = read.records.clone();
        while position < bytes.len() {
            let size = batch_size_from_prefix(&bytes[position..]).expect("frame");
            let header = parse_header(&bytes[position..]).expect("header");
            assert!(
                header.last_offset() >= next,
                "read at {next} returned an older batch"
            );
            let mut batch = bytes.slice(position..position + size);
            let set = RecordBatchDecoder::decode(&mut batch).expect("decode");
            for record in set.records {
                if record.offset >= next {
                    all.push((
                        record.offset,
                        Rec {
                            key: record.key.map(|key| key.to_vec()).unwrap_or_default(),
                            value: record.value.map(|value| value.to_vec()),
                            timestamp: record.timestamp,
                        },
                    ));
                }
            }
            next = next.max(header.next_offset());
            position += size;
        }
    }
    all
}
