//! Errors of the partition log and the Kafka error codes they answer with.

use kafka_protocol::ResponseError;

use crate::record_batch::BatchError;

/// The Kafka error code for `error`, 0 (no error) for `None`: the one place codes
/// become numbers, so that every module names errors by `ResponseError` (protocol
/// guide, "Error Codes").
pub fn error_code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |error| error.code())
}

/// Everything that can go wrong in the partition log.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum LogError {
    /// A produced or replicated batch is malformed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset still in the log.
        log_start_offset: i64,
        /// Offset the next appended record will get.
        log_end_offset: i64,
    },
    /// One batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge {
        /// Size of the batch in bytes.
        size: usize,
        /// The configured limit in bytes.
        max: usize,
    },
    /// The whole record set is larger than `segment.bytes`.
    #[error("record set of {size} bytes exceeds segment.bytes {max}")]
    RecordListTooLarge {
        /// Size of the record set in bytes.
        size: usize,
        /// The configured segment size in bytes.
        max: u64,
    },
    /// The batch's producer epoch is older than the one the log knows.
    #[error("producer {producer_id} epoch {epoch} is older than current epoch {current_epoch}")]
    InvalidProducerEpoch {
        /// Producer id of the batch.
        producer_id: i64,
        /// Epoch of the batch.
        epoch: i16,
        /// Epoch the log has for this producer.
        current_epoch: i16,
    },
    /// The batch's first sequence does not follow the producer's last one.
    #[error(
        "out of order sequence for producer {producer_id} epoch {epoch}: got {first_sequence}, expected {expected_sequence}"
    )]
    OutOfOrderSequence {
        /// Producer id of the batch.
        producer_id: i64,
        /// Epoch of the batch.
        epoch: i16,
        /// First sequence of the batch.
        first_sequence: i32,
        /// The sequence the log expected.
        expected_sequence: i32,
    },
    /// One request mixes already-appended batches with new ones.
    #[error(
        "producer {producer_id} sent duplicate sequence {first_sequence} together with new batches"
    )]
    DuplicateSequence {
        /// Producer id of the batch.
        producer_id: i64,
        /// First sequence of the duplicate batch.
        first_sequence: i32,
    },
    /// A topic config value is not valid.
    #[error("invalid value for config {key}: {message}")]
    InvalidConfig {
        /// The config name.
        key: String,
        /// What is wrong and the expected form.
        message: String,
    },
    /// Offsets of replicated batches or a truncation target that break the log's order.
    #[error("invalid offset: {0}")]
    InvalidOffset(String),
    /// A file operation failed.
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// On-disk state that cannot be repaired automatically.
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// A record without a key produced to a compacted topic (`cleanup.policy` with
    /// `compact`), which keeps the latest record of each key and so needs one. Kafka's
    /// LogValidator refuses it the same way.
    #[error(
        "compacted topic {topic} cannot accept a record without a key (partition {partition}): give every record a key, or produce to a topic whose cleanup.policy is delete"
    )]
    RecordWithoutKey {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
    /// A batch out of sequence while the log's last append failed on the disk: it
    /// waits behind the failed batches, which the producer retries first.
    #[error("an earlier append failed in the log directory; retry once it has room")]
    AppendsFailing,
    /// A cleaning pass found the log changed under it (a truncation, retention deleting
    /// a segment it read) and installed nothing; a later pass starts over.
    #[error("cleaning aborted: {0}")]
    CleaningAborted(String),
}

impl LogError {
    /// The Kafka error to answer a request with.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            LogError::Batch(BatchError::UnsupportedMagic(_)) => {
                ResponseError::UnsupportedForMessageFormat
            }
            LogError::Batch(_) => ResponseError::CorruptMessage,
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            LogError::RecordListTooLarge { .. } => ResponseError::RecordListTooLarge,
            LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            LogError::DuplicateSequence { .. } => ResponseError::DuplicateSequenceNumber,
            LogError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            LogError::RecordWithoutKey { .. } => ResponseError::InvalidRecord,
            LogError::InvalidOffset(_) | LogError::CleaningAborted(_) => {
                ResponseError::UnknownServerError
            }
            LogError::Io(_) | LogError::Corrupt(_) | LogError::AppendsFailing => {
                ResponseError::KafkaStorageError
            }
        }
    }

    /// [`Self::kafka_error`] as the number on the wire.
    pub fn kafka_error_code(&self) -> i16 {
        self.kafka_error().code()
    }

    pub(crate) fn invalid_config(key: &str, message: impl Into<String>) -> LogError {
        LogError::InvalidConfig {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_follow_kafka() {
        assert_eq!(
            LogError::from(BatchError::UnsupportedMagic(1)).kafka_error_code(),
            43
        );
        assert_eq!(
            LogError::from(BatchError::CorruptCrc {
                expected: 1,
                actual: 2
            })
            .kafka_error_code(),
            2
        );
        let io = std::io::Error::other("disk");
        assert_eq!(LogError::from(io).kafka_error_code(), 56);
        assert_eq!(
            LogError::MessageTooLarge { size: 2, max: 1 }.kafka_error_code(),
            10
        );
    }
}
