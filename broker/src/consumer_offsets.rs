//! The `__consumer_offsets` internal topic as the group coordinator's durable store:
//! records are appended as RecordBatch v2 through the replica manager and replayed from
//! the partition log at startup.

use std::sync::Arc;

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::group_coordinator::{GroupError, OffsetsLog};
use crate::replica_manager::{ReplicaManager, now_ms};

/// Name of the internal topic holding committed offsets and group metadata.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Bytes read per step while replaying a partition.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// [`OffsetsLog`] on the replica manager's `__consumer_offsets` partitions.
#[derive(Debug, Clone)]
pub struct ConsumerOffsetsLog {
    replica_manager: Arc<ReplicaManager>,
}

/// Kafka's `offsets.commit.timeout.ms`: how long a group write waits for the ISR.
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl ConsumerOffsetsLog {
    /// Stores group state in `__consumer_offsets` on this replica manager.
    pub fn new(replica_manager: Arc<ReplicaManager>) -> Self {
        ConsumerOffsetsLog { replica_manager }
    }

    fn encode_batch(records: Vec<(Bytes, Option<Bytes>)>) -> Result<Bytes, GroupError> {
        let timestamp = now_ms();
        let records: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(index, (key, value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                // Offsets within the batch; the log assigns the real base offset.
                offset: index as i64,
                sequence: NO_SEQUENCE,
                timestamp,
                key: Some(key),
                value,
                headers: Default::default(),
            })
            .collect();
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buffer, records.iter(), &options).map_err(|error| {
            GroupError::Storage(format!("encoding a __consumer_offsets batch: {error}"))
        })?;
        Ok(buffer.freeze())
    }

    async fn replay(&self, partition: i32) -> Result<Vec<(Bytes, Option<Bytes>)>, GroupError> {
        let storage_error = |error: crate::replica_manager::PartitionError| {
            GroupError::Storage(format!(
                "reading {CONSUMER_OFFSETS_TOPIC}-{partition}: {error}"
            ))
        };
        let Some(hosted) = self
            .replica_manager
            .partition(CONSUMER_OFFSETS_TOPIC, partition)
        else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        let mut next_offset = hosted.log_start_offset();
        loop {
            // To the log end, as Kafka loads a coordinator: a new leader's high
            // watermark can still be below commits the previous leader acknowledged.
            let read = self
                .replica_manager
                .read_records_to_log_end(
                    CONSUMER_OFFSETS_TOPIC,
                    partition,
                    next_offset,
                    REPLAY_READ_BYTES,
                )
                .await
                .map_err(storage_error)?;
            if read.records.is_empty() {
                break;
            }
            let read_from = next_offset;
            let mut buffer = read.records.clone();
            while buffer.has_remaining() {
                let record_set = RecordBatchDecoder::decode(&mut buffer).map_err(|error| {
                    GroupError::Storage(format!("decoding {CONSUMER_OFFSETS_TOPIC}-{partition} at offset {next_offset}: {error}"))
                })?;
                for record in record_set.records {
                    next_offset = next_offset.max(record.offset + 1);
                    if let Some(key) = record.key {
                        records.push((key, record.value));
                    }
                }
            }
            if next_offset == read_from {
                return Err(GroupError::Storage(format!(
                    "replaying {CONSUMER_OFFSETS_TOPIC}-{partition}: no record at or after offset {read_from}"
                )));
            }
        }
        Ok(records)
    }
}

impl OffsetsLog for ConsumerOffsetsLog {
    fn append(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> BoxFuture<'_, Result<(), GroupError>> {
        Box::pin(async move {
            let batch = Self::encode_batch(records)?;
            let storage_error = |error: crate::replica_manager::PartitionError| {
                GroupError::Storage(format!(
                    "appending to {CONSUMER_OFFSETS_TOPIC}-{partition}: {error}"
                ))
            };
            let appended = self
                .replica_manager
                .append_records(CONSUMER_OFFSETS_TOPIC, partition, batch, -1)
                .await
                .map_err(storage_error)?;
            // Like acks=all: a commit is answered once the ISR has it.
            self.replica_manager
                .wait_for_high_watermark(
                    CONSUMER_OFFSETS_TOPIC,
                    partition,
                    appended.last_offset + 1,
                    appended.leader_epoch,
                    OFFSETS_COMMIT_TIMEOUT,
                )
                .await
                .map_err(storage_error)?;
            Ok(())
        })
    }

    fn read_all(
        &self,
        partition: i32,
    ) -> BoxFuture<'_, Result<Vec<(Bytes, Option<Bytes>)>, GroupError>> {
        Box::pin(self.replay(partition))
    }

    fn leads_at(&self, partition: i32, leader_epoch: i32) -> bool {
        self.replica_manager
            .partition(CONSUMER_OFFSETS_TOPIC, partition)
            .is_some_and(|hosted| hosted.is_leader() && hosted.leader_epoch() == leader_epoch)
    }
}
