//! What `silt tables describe`, `silt topics describe` and the admin listener's
//! `/tables/<topic>` show of a table: read from its metadata alone.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::LoadedTable;
use crate::summary::{PartitionRange, partition_ranges};

/// One snapshot of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotDescription {
    /// Snapshot id.
    pub id: i64,
    /// Commit time (ms since the epoch).
    pub timestamp_ms: i64,
    /// `append`, `replace` (compaction) or `delete` (retention).
    pub operation: String,
    /// Rows the snapshot added.
    pub added_records: u64,
    /// The Kafka partition and offsets `[start, end)` an export commit added.
    pub added: Option<(i32, i64, i64)>,
}

/// A table as its current metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDescription {
    /// Topic.
    pub topic: String,
    /// The table's location URI.
    pub location: String,
    /// N of the current `v<N>.metadata.json`.
    pub version: u64,
    /// Iceberg format version (2).
    pub format_version: u8,
    /// The current snapshot's id, none before the first commit.
    pub current_snapshot_id: Option<i64>,
    /// The current snapshot's commit time (ms since the epoch).
    pub last_commit_ms: Option<i64>,
    /// Data files of the current snapshot.
    pub data_files: u64,
    /// Rows of the current snapshot.
    pub records: u64,
    /// Bytes of the current snapshot's data files.
    pub bytes: u64,
    /// Columns and their Iceberg types, in schema order.
    pub columns: Vec<(String, String)>,
    /// Per Kafka partition, the offsets the table covers.
    pub partitions: BTreeMap<i32, PartitionRange>,
    /// The snapshots kept, oldest first.
    pub snapshots: Vec<SnapshotDescription>,
}

/// Describes `loaded`.
pub fn describe(loaded: &LoadedTable) -> TableDescription {
    let metadata = loaded.table.metadata();
    let summary = loaded.summary();
    let total = |key: &str| {
        summary
            .get(key)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut snapshots: Vec<SnapshotDescription> = metadata
        .snapshots()
        .map(|snapshot| {
            let properties = &snapshot.summary().additional_properties;
            let number = |key: &str| {
                properties
                    .get(key)
                    .and_then(|value| value.parse::<i64>().ok())
            };
            let added = match (
                number("silt.added.partition"),
                number("silt.added.start"),
                number("silt.added.end"),
            ) {
                (Some(partition), Some(start), Some(end)) => {
                    Some((i32::try_from(partition).unwrap_or(-1), start, end))
                }
                _ => None,
            };
            SnapshotDescription {
                id: snapshot.snapshot_id(),
                timestamp_ms: snapshot.timestamp_ms(),
                operation: snapshot.summary().operation.as_str().to_string(),
                added_records: number("added-records").map_or(0, |n| n.max(0) as u64),
                added,
            }
        })
        .collect();
    snapshots.sort_by_key(|snapshot| (snapshot.timestamp_ms, snapshot.id));
    let current = metadata.current_snapshot();
    TableDescription {
        topic: loaded.table.identifier().name().to_string(),
        location: metadata.location().to_string(),
        version: loaded.version,
        format_version: match metadata.format_version() {
            iceberg::spec::FormatVersion::V1 => 1,
            iceberg::spec::FormatVersion::V2 => 2,
            iceberg::spec::FormatVersion::V3 => 3,
        },
        current_snapshot_id: current.map(|snapshot| snapshot.snapshot_id()),
        last_commit_ms: current.map(|snapshot| snapshot.timestamp_ms()),
        data_files: total("total-data-files"),
        records: total("total-records"),
        bytes: total("total-files-size"),
        columns: metadata
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|field| (field.name.clone(), field.field_type.to_string()))
            .collect(),
        partitions: partition_ranges(&summary),
        snapshots,
    }
}
