//! Topics as Apache Iceberg tables of Parquet files in the object store.
//!
//! A topic with `table.enable=true` is exported by the leader of each of its
//! partitions ([`TableExporter`]) to `<prefix>/tables/<topic>/`, in the layout of
//! Iceberg's file-system catalog ([`catalog`]). Every snapshot's summary names, per
//! Kafka partition, the offsets the table covers ([`PartitionRange`]); the table's
//! files hold every record of those ranges exactly once, which the exporter keeps
//! true across crashes, leader changes and object store outages by deriving where to
//! go on from the table itself and committing through Iceberg's optimistic
//! concurrency. See `docs/tables.md`.

pub mod catalog;
pub mod convert;
pub mod describe;
pub mod exporter;
pub mod maintenance;
pub mod schema;
pub mod storage;
pub mod summary;

pub use catalog::{LoadedTable, TableStore, root_uri};
pub use describe::{TableDescription, describe};
pub use exporter::{ExportLag, TableExporter, TableExporterConfig};
pub use summary::PartitionRange;

/// Errors of table export and reads.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TableError {
    /// The iceberg crate failed (metadata, manifests, Parquet writes).
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Building Arrow arrays failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A record batch read from the log does not decode.
    #[error("record batch: {0}")]
    Batch(#[from] silt_broker::record_batch::BatchError),
    /// Reading the log failed (not the leader any more, offset out of range, I/O).
    #[error("reading the log: {0}")]
    Log(#[from] silt_broker::replica_manager::PartitionError),
    /// Another commit came first; nothing of this one is in the table.
    #[error("commit conflict: {0}")]
    Conflict(String),
    /// The table's schema has a column the exporter cannot fill.
    #[error("table schema: {0}")]
    Schema(String),
    /// A background thread could not start or panicked.
    #[error("background thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A `table.*` setting is invalid; the message says what to give instead.
    #[error("{0}")]
    InvalidSetting(String),
}

/// Checks a `table.*` topic config beyond its form (`table.value.schema` parses).
///
/// # Errors
/// [`TableError::InvalidSetting`] saying what is wrong.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), TableError> {
    match key {
        silt_broker::log_config::TABLE_VALUE_SCHEMA => {
            schema::parse_value_schema(value).map(|_| ())
        }
        _ => Ok(()),
    }
}
