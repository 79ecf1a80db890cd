//! The offsets a table covers, in its snapshots' summary properties: per Kafka
//! partition `p`,
//!
//! - `silt.partition.<p>.start`: first offset the table covers (inclusive),
//! - `silt.partition.<p>.end`: the table's watermark (exclusive): every offset in
//!   `[start, end)` holding a record when it was exported is in exactly one data file,
//! - `silt.partition.<p>.records`: rows of partition `p` in the table; `end - start -
//!   records` offsets were absent from the log when exported (removed by compaction or
//!   retention),
//!
//! and for the commit that made the snapshot, `silt.added.partition`,
//! `silt.added.start`, `silt.added.end` and `silt.added.records`.

use std::collections::{BTreeMap, HashMap};

/// What a table covers of one Kafka partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionRange {
    /// First offset covered (inclusive).
    pub start: i64,
    /// Watermark (exclusive).
    pub end: i64,
    /// Rows of the partition in the table.
    pub records: i64,
}

impl PartitionRange {
    /// Offsets in the range without a row.
    pub fn absent(&self) -> i64 {
        self.end - self.start - self.records
    }
}

fn key(partition: i32, field: &str) -> String {
    format!("silt.partition.{partition}.{field}")
}

/// The range of `partition` in `summary`, None if the table has none.
pub fn partition_range(
    summary: &HashMap<String, String>,
    partition: i32,
) -> Option<PartitionRange> {
    let field = |name: &str| summary.get(&key(partition, name))?.parse::<i64>().ok();
    Some(PartitionRange {
        start: field("start")?,
        end: field("end")?,
        records: field("records")?,
    })
}

/// Every partition's range in `summary`, by partition.
pub fn partition_ranges(summary: &HashMap<String, String>) -> BTreeMap<i32, PartitionRange> {
    summary
        .keys()
        .filter_map(|name| name.strip_prefix("silt.partition.")?.strip_suffix(".end"))
        .filter_map(|partition| partition.parse::<i32>().ok())
        .filter_map(|partition| Some((partition, partition_range(summary, partition)?)))
        .collect()
}

/// The summary properties of a commit adding `added` to `partition` on top of
/// `previous` (the base snapshot's summary): the other partitions' ranges are carried
/// over.
pub fn commit_summary(
    previous: &HashMap<String, String>,
    topic: &str,
    partition: i32,
    covered: PartitionRange,
    added: PartitionRange,
) -> HashMap<String, String> {
    let mut properties: HashMap<String, String> = partition_ranges(previous)
        .into_iter()
        .filter(|(other, _)| *other != partition)
        .flat_map(|(other, range)| range_properties(other, range))
        .collect();
    properties.extend(range_properties(partition, covered));
    properties.insert("silt.topic".to_string(), topic.to_string());
    properties.insert("silt.added.partition".to_string(), partition.to_string());
    properties.insert("silt.added.start".to_string(), added.start.to_string());
    properties.insert("silt.added.end".to_string(), added.end.to_string());
    properties.insert("silt.added.records".to_string(), added.records.to_string());
    properties
}

fn range_properties(partition: i32, range: PartitionRange) -> [(String, String); 3] {
    [
        (key(partition, "start"), range.start.to_string()),
        (key(partition, "end"), range.end.to_string()),
        (key(partition, "records"), range.records.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_carries_the_other_partitions_over() {
        let first = commit_summary(
            &HashMap::new(),
            "t",
            0,
            PartitionRange {
                start: 0,
                end: 10,
                records: 9,
            },
            PartitionRange {
                start: 0,
                end: 10,
                records: 9,
            },
        );
        let second = commit_summary(
            &first,
            "t",
            1,
            PartitionRange {
                start: 5,
                end: 7,
                records: 2,
            },
            PartitionRange {
                start: 5,
                end: 7,
                records: 2,
            },
        );
        let ranges = partition_ranges(&second);
        assert_eq!(ranges.len(), 2);
        assert_eq!(
            ranges[&0],
            PartitionRange {
                start: 0,
                end: 10,
                records: 9
            }
        );
        assert_eq!(ranges[&0].absent(), 1);
        assert_eq!(ranges[&1].end, 7);
        assert_eq!(second["silt.added.partition"], "1");
        assert_eq!(partition_range(&second, 2), None);
    }
}
