//! The broker's view of tiered storage (KIP-405): offsets below the local log start
//! offset are read through [`RemoteLog`], which the tiering crate implements on object
//! storage. The trait lives here, with its caller.

use bytes::Bytes;
use futures::future::BoxFuture;
use silt_controller::TopicId;

/// Errors of remote reads.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum RemoteLogError {
    /// No remote segment holds the offset (it was deleted by retention, or never copied).
    #[error("offset {offset} is not in remote storage of {topic}-{partition}")]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// Offset asked for.
        offset: i64,
    },
    /// The object store failed or returned data that is not a valid segment.
    #[error("remote storage error: {0}")]
    Storage(String),
}

impl RemoteLogError {
    /// The Kafka error: OFFSET_OUT_OF_RANGE or KAFKA_STORAGE_ERROR.
    pub fn kafka_error(&self) -> kafka_protocol::ResponseError {
        match self {
            RemoteLogError::OffsetOutOfRange { .. } => {
                kafka_protocol::ResponseError::OffsetOutOfRange
            }
            RemoteLogError::Storage(_) => kafka_protocol::ResponseError::KafkaStorageError,
        }
    }
}

/// A partition as remote storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePartition {
    /// Topic id (remote objects are keyed by it, so a re-created topic never sees old data).
    pub topic_id: TopicId,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

/// Whole record batches read from remote segments.
#[derive(Debug, Clone)]
pub struct RemoteRead {
    /// Zero or more complete batches, starting with the batch containing the offset asked
    /// for; never beyond the end of the remote segment holding it.
    pub records: Bytes,
}

/// Read access to a partition's remote (tiered) segments.
///
/// Implementations must only serve segments whose copy was committed through the
/// controller (state COPY_FINISHED), so a half-uploaded segment is never read.
pub trait RemoteLog: Send + Sync + std::fmt::Debug + 'static {
    /// The first offset held remotely (the whole log's start offset when tiering is on),
    /// or `None` when nothing was copied.
    fn log_start_offset(&self, partition: &RemotePartition) -> Option<i64>;

    /// The offset after the last remotely committed record (exclusive), or `None`.
    fn log_end_offset(&self, partition: &RemotePartition) -> Option<i64>;

    /// The log start offset DeleteRecords set for the partition through the controller
    /// (`0` when never moved): no record below it is served, whichever tier holds it.
    fn records_deleted_before(&self, partition: &RemotePartition) -> i64;

    /// Reads whole batches from `offset`, at most `max_bytes` (always the first batch).
    ///
    /// # Errors
    /// `OffsetOutOfRange` when no committed remote segment holds `offset`; `Storage`
    /// when the object store fails.
    fn read<'a>(
        &'a self,
        partition: &'a RemotePartition,
        offset: i64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<RemoteRead, RemoteLogError>>;

    /// The first offset whose timestamp is >= `timestamp_ms` in remote segments, with that
    /// timestamp; `None` when every remote record is older.
    ///
    /// # Errors
    /// `Storage` when the object store fails.
    fn offset_for_timestamp<'a>(
        &'a self,
        partition: &'a RemotePartition,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, RemoteLogError>>;

    /// The producer snapshot copied with the remote segment that ends just below
    /// `end_offset` (exclusive): the idempotent producers' state at that offset, in the
    /// `.snapshot` file format of [`crate::producer_state`]. `None` when no copied
    /// segment ends there or it was copied without a snapshot. Kafka fetches the same
    /// object to rebuild a replica's state from the remote log (KIP-405).
    ///
    /// # Errors
    /// `Storage` when the object store fails.
    fn producer_snapshot<'a>(
        &'a self,
        partition: &'a RemotePartition,
        end_offset: i64,
    ) -> BoxFuture<'a, Result<Option<Bytes>, RemoteLogError>>;
}
