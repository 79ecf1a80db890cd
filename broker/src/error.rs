//! Errors of the partition log and the Kafka error codes they answer with.

use crate::record_batch::BatchError;

/// Kafka error codes the log surfaces (protocol guide "Error Codes").
pub mod kafka_code {
    /// UNKNOWN_SERVER_ERROR.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// OFFSET_OUT_OF_RANGE.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// CORRUPT_MESSAGE.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// MESSAGE_TOO_LARGE.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// RECORD_LIST_TOO_LARGE.
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    /// INVALID_CONFIG.
    pub const INVALID_CONFIG: i16 = 40;
    /// UNSUPPORTED_FOR_MESSAGE_FORMAT.
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// DUPLICATE_SEQUENCE_NUMBER.
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// KAFKA_STORAGE_ERROR.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
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
}

impl LogError {
    /// The Kafka error code to answer a request with.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::Batch(BatchError::UnsupportedMagic(_)) => {
                kafka_code::UNSUPPORTED_FOR_MESSAGE_FORMAT
            }
            LogError::Batch(_) => kafka_code::CORRUPT_MESSAGE,
            LogError::OffsetOutOfRange { .. } => kafka_code::OFFSET_OUT_OF_RANGE,
            LogError::MessageTooLarge { .. } => kafka_code::MESSAGE_TOO_LARGE,
            LogError::RecordListTooLarge { .. } => kafka_code::RECORD_LIST_TOO_LARGE,
            LogError::InvalidProducerEpoch { .. } => kafka_code::INVALID_PRODUCER_EPOCH,
            LogError::OutOfOrderSequence { .. } => kafka_code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            LogError::DuplicateSequence { .. } => kafka_code::DUPLICATE_SEQUENCE_NUMBER,
            LogError::InvalidConfig { .. } => kafka_code::INVALID_CONFIG,
            LogError::InvalidOffset(_) => kafka_code::UNKNOWN_SERVER_ERROR,
            LogError::Io(_) | LogError::Corrupt(_) => kafka_code::KAFKA_STORAGE_ERROR,
        }
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
