//! Per-topic log configuration under Kafka's topic-config names.

use std::collections::BTreeMap;

use crate::error::LogError;
use crate::record_batch::TimestampType;

/// `segment.bytes`
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// `segment.ms`
pub const SEGMENT_MS: &str = "segment.ms";
/// `retention.ms`
pub const RETENTION_MS: &str = "retention.ms";
/// `retention.bytes`
pub const RETENTION_BYTES: &str = "retention.bytes";
/// `flush.messages`
pub const FLUSH_MESSAGES: &str = "flush.messages";
/// `flush.ms`
pub const FLUSH_MS: &str = "flush.ms";
/// `index.interval.bytes`
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
/// `max.message.bytes`
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// `message.timestamp.type`
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
/// `cleanup.policy`
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// `min.insync.replicas`
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
/// `delete.retention.ms`
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
/// `min.cleanable.dirty.ratio`
pub const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
/// `min.compaction.lag.ms`
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
/// `max.compaction.lag.ms`
pub const MAX_COMPACTION_LAG_MS: &str = "max.compaction.lag.ms";
/// `remote.storage.enable`
pub const REMOTE_STORAGE_ENABLE: &str = "remote.storage.enable";
/// `unclean.leader.election.enable`
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";
/// `local.retention.ms`
pub const LOCAL_RETENTION_MS: &str = "local.retention.ms";
/// `local.retention.bytes`
pub const LOCAL_RETENTION_BYTES: &str = "local.retention.bytes";
/// `table.enable`
pub const TABLE_ENABLE: &str = "table.enable";
/// `table.value.format`
pub const TABLE_VALUE_FORMAT: &str = "table.value.format";
/// `table.value.schema`
pub const TABLE_VALUE_SCHEMA: &str = "table.value.schema";
/// `table.retention.ms`
pub const TABLE_RETENTION_MS: &str = "table.retention.ms";

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The log settings of one topic, resolved from broker defaults and topic
/// overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this size (bytes). Default 1 GiB.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's records span this long (ms). Default 7 days.
    pub segment_ms: i64,
    /// `retention.ms`: delete sealed segments whose largest timestamp is older (ms); -1 = forever. Default 7 days.
    pub retention_ms: i64,
    /// `retention.bytes`: delete sealed segments while the log is larger (bytes); -1 = unlimited.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many appended records; `u64::MAX` leaves it to the OS.
    pub flush_messages: u64,
    /// `flush.ms`: fsync when the last flush is older than this (ms); `i64::MAX` leaves it to the OS.
    pub flush_ms: i64,
    /// `index.interval.bytes`: bytes of log between two index entries. Default 4096.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: largest accepted batch (bytes). Default 1048588.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub message_timestamp_type: TimestampType,
    /// `cleanup.policy`: comma-separated `delete` and/or `compact`.
    pub cleanup_policy: String,
    /// `min.insync.replicas`: ISR size needed for `acks=all` produces. Default 1.
    pub min_insync_replicas: i32,
    /// `delete.retention.ms`: how long compaction keeps tombstones (ms). Default 1 day.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of a compacted log's bytes not yet cleaned
    /// (0.0-1.0) at which the cleaner takes it. Default 0.5.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this stay uncompacted (ms). Default 0.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record older than this is compacted whatever the dirty
    /// ratio (ms). Default `i64::MAX` (never forced).
    pub max_compaction_lag_ms: i64,
    /// `remote.storage.enable`: whether sealed segments are tiered.
    pub remote_storage_enable: bool,
    /// `unclean.leader.election.enable`: whether the controller may elect a replica outside
    /// the ISR when no ISR member is alive (risking acknowledged records). Default false.
    pub unclean_leader_election_enable: bool,
    /// `local.retention.ms`: local-tier retention (ms); -2 = use `retention.ms`.
    pub local_retention_ms: i64,
    /// `local.retention.bytes`: local-tier retention (bytes); -2 = use `retention.bytes`.
    pub local_retention_bytes: i64,
    /// `table.enable`: whether the topic is exported as an Iceberg table. Default false.
    pub table_enable: bool,
    /// `table.value.format`: `raw` (the value as bytes) or `json` (typed columns).
    pub table_value_format: String,
    /// `table.value.schema`: the json mode's columns (a field list or a JSON Schema;
    /// checked by the tables crate); empty = inferred from the records.
    pub table_value_schema: String,
    /// `table.retention.ms`: how long table files stay (ms); -2 = use `retention.ms`,
    /// -1 = forever.
    pub table_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            cleanup_policy: "delete".to_string(),
            min_insync_replicas: 1,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            remote_storage_enable: false,
            unclean_leader_election_enable: false,
            local_retention_ms: -2,
            local_retention_bytes: -2,
            table_enable: false,
            table_value_format: "raw".to_string(),
            table_value_schema: String::new(),
            table_retention_ms: -2,
        }
    }
}

/// Parses an integer config within `[min, max]`.
fn parse_int(key: &str, value: &str, min: i64, max: i64) -> Result<i64, LogError> {
    let parsed: i64 = value.trim().parse().map_err(|_| {
        LogError::invalid_config(
            key,
            format!("expected an integer in [{min}, {max}], got {value:?}"),
        )
    })?;
    if parsed < min || parsed > max {
        return Err(LogError::invalid_config(
            key,
            format!("expected an integer in [{min}, {max}], got {parsed}"),
        ));
    }
    Ok(parsed)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, LogError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(LogError::invalid_config(
            key,
            format!("expected true or false, got {value:?}"),
        )),
    }
}

fn parse_ratio(key: &str, value: &str) -> Result<f64, LogError> {
    match value.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(LogError::invalid_config(
            key,
            format!("expected a number in [0, 1], got {value:?}"),
        )),
    }
}

fn parse_cleanup_policy(key: &str, value: &str) -> Result<String, LogError> {
    let policies: Vec<&str> = value.split(',').map(str::trim).collect();
    if policies.is_empty()
        || policies
            .iter()
            .any(|policy| *policy != "delete" && *policy != "compact")
    {
        return Err(LogError::invalid_config(
            key,
            format!("expected a comma-separated list of delete and compact, got {value:?}"),
        ));
    }
    Ok(policies.join(","))
}

fn parse_timestamp_type(key: &str, value: &str) -> Result<TimestampType, LogError> {
    TimestampType::from_config_str(value.trim()).ok_or_else(|| {
        LogError::invalid_config(
            key,
            format!("expected CreateTime or LogAppendTime, got {value:?}"),
        )
    })
}

impl LogConfig {
    /// Resolves a config from broker defaults and topic overrides, both keyed
    /// by topic-config names (`retention.ms`, not `log.retention.ms`);
    /// overrides win. Unknown keys are ignored; an invalid value gives
    /// [`LogError::InvalidConfig`] naming the key and the expected form.
    pub fn from_configs(
        broker_defaults: &BTreeMap<String, String>,
        topic_overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig, LogError> {
        let mut config = LogConfig::default();
        for source in [broker_defaults, topic_overrides] {
            for (key, value) in source {
                config.apply(key, value)?;
            }
        }
        Ok(config)
    }

    /// Sets one field from its topic-config name; unknown keys are ignored.
    fn apply(&mut self, key: &str, value: &str) -> Result<(), LogError> {
        match key {
            SEGMENT_BYTES => {
                self.segment_bytes = parse_int(key, value, 14, i64::from(i32::MAX))? as u64
            }
            SEGMENT_MS => self.segment_ms = parse_int(key, value, 1, i64::MAX)?,
            RETENTION_MS => self.retention_ms = parse_int(key, value, -1, i64::MAX)?,
            RETENTION_BYTES => self.retention_bytes = parse_int(key, value, i64::MIN, i64::MAX)?,
            FLUSH_MESSAGES => {
                let messages = parse_int(key, value, 1, i64::MAX)?;
                self.flush_messages = if messages == i64::MAX {
                    u64::MAX
                } else {
                    messages as u64
                };
            }
            FLUSH_MS => self.flush_ms = parse_int(key, value, 0, i64::MAX)?,
            INDEX_INTERVAL_BYTES => {
                self.index_interval_bytes = parse_int(key, value, 0, i64::from(i32::MAX))? as u32;
            }
            MAX_MESSAGE_BYTES => {
                self.max_message_bytes = parse_int(key, value, 0, i64::from(i32::MAX))? as u32;
            }
            MESSAGE_TIMESTAMP_TYPE => {
                self.message_timestamp_type = parse_timestamp_type(key, value)?
            }
            CLEANUP_POLICY => self.cleanup_policy = parse_cleanup_policy(key, value)?,
            MIN_INSYNC_REPLICAS => {
                self.min_insync_replicas = parse_int(key, value, 1, i64::from(i32::MAX))? as i32;
            }
            DELETE_RETENTION_MS => self.delete_retention_ms = parse_int(key, value, 0, i64::MAX)?,
            MIN_CLEANABLE_DIRTY_RATIO => self.min_cleanable_dirty_ratio = parse_ratio(key, value)?,
            MIN_COMPACTION_LAG_MS => {
                self.min_compaction_lag_ms = parse_int(key, value, 0, i64::MAX)?
            }
            MAX_COMPACTION_LAG_MS => {
                self.max_compaction_lag_ms = parse_int(key, value, 1, i64::MAX)?
            }
            REMOTE_STORAGE_ENABLE => self.remote_storage_enable = parse_bool(key, value)?,
            UNCLEAN_LEADER_ELECTION_ENABLE => {
                self.unclean_leader_election_enable = parse_bool(key, value)?;
            }
            LOCAL_RETENTION_MS => self.local_retention_ms = parse_int(key, value, -2, i64::MAX)?,
            LOCAL_RETENTION_BYTES => {
                self.local_retention_bytes = parse_int(key, value, -2, i64::MAX)?;
            }
            TABLE_ENABLE => self.table_enable = parse_bool(key, value)?,
            TABLE_VALUE_FORMAT => {
                self.table_value_format = match value.trim() {
                    format @ ("raw" | "json") => format.to_string(),
                    _ => {
                        return Err(LogError::invalid_config(
                            key,
                            format!("expected raw or json, got {value:?}"),
                        ));
                    }
                }
            }
            TABLE_VALUE_SCHEMA => self.table_value_schema = value.to_string(),
            TABLE_RETENTION_MS => self.table_retention_ms = parse_int(key, value, -2, i64::MAX)?,
            _ => {}
        }
        Ok(())
    }

    /// Every topic config name Silt understands with its default value, as
    /// strings (for DescribeConfigs).
    pub fn defaults() -> BTreeMap<String, String> {
        LogConfig::default().to_configs()
    }

    /// This config as topic-config strings; `flush.messages` and `flush.ms`
    /// print "leave it to the OS" as Kafka does, `9223372036854775807`.
    pub fn to_configs(&self) -> BTreeMap<String, String> {
        let flush_messages = if self.flush_messages >= i64::MAX as u64 {
            i64::MAX
        } else {
            self.flush_messages as i64
        };
        [
            (SEGMENT_BYTES, self.segment_bytes.to_string()),
            (SEGMENT_MS, self.segment_ms.to_string()),
            (RETENTION_MS, self.retention_ms.to_string()),
            (RETENTION_BYTES, self.retention_bytes.to_string()),
            (FLUSH_MESSAGES, flush_messages.to_string()),
            (FLUSH_MS, self.flush_ms.to_string()),
            (INDEX_INTERVAL_BYTES, self.index_interval_bytes.to_string()),
            (MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (
                MESSAGE_TIMESTAMP_TYPE,
                self.message_timestamp_type.to_string(),
            ),
            (CLEANUP_POLICY, self.cleanup_policy.clone()),
            (MIN_INSYNC_REPLICAS, self.min_insync_replicas.to_string()),
            (DELETE_RETENTION_MS, self.delete_retention_ms.to_string()),
            (
                MIN_CLEANABLE_DIRTY_RATIO,
                self.min_cleanable_dirty_ratio.to_string(),
            ),
            (
                MIN_COMPACTION_LAG_MS,
                self.min_compaction_lag_ms.to_string(),
            ),
            (
                MAX_COMPACTION_LAG_MS,
                self.max_compaction_lag_ms.to_string(),
            ),
            (
                REMOTE_STORAGE_ENABLE,
                self.remote_storage_enable.to_string(),
            ),
            (
                UNCLEAN_LEADER_ELECTION_ENABLE,
                self.unclean_leader_election_enable.to_string(),
            ),
            (LOCAL_RETENTION_MS, self.local_retention_ms.to_string()),
            (
                LOCAL_RETENTION_BYTES,
                self.local_retention_bytes.to_string(),
            ),
            (TABLE_ENABLE, self.table_enable.to_string()),
            (TABLE_VALUE_FORMAT, self.table_value_format.clone()),
            (TABLE_VALUE_SCHEMA, self.table_value_schema.clone()),
            (TABLE_RETENTION_MS, self.table_retention_ms.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    /// Checks one topic config (CreateTopics, AlterConfigs). Unlike
    /// [`LogConfig::from_configs`], an unknown key is an error, as in Kafka.
    pub fn validate(key: &str, value: &str) -> Result<(), LogError> {
        if !LogConfig::defaults().contains_key(key) {
            return Err(LogError::invalid_config(key, "unknown topic config"));
        }
        LogConfig::default().apply(key, value)
    }

    /// Whether `cleanup.policy` includes `delete` (time and size retention).
    pub fn deletes_by_retention(&self) -> bool {
        self.cleanup_policy
            .split(',')
            .any(|policy| policy == "delete")
    }

    /// How long table files stay (ms): `table.retention.ms`, else `retention.ms`; -1
    /// is forever.
    pub fn table_retention_ms(&self) -> i64 {
        if self.table_retention_ms == -2 {
            self.retention_ms
        } else {
            self.table_retention_ms
        }
    }

    /// Whether `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy
            .split(',')
            .any(|policy| policy == "compact")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn overrides_win_over_broker_defaults_and_unknown_keys_are_ignored() {
        let config = LogConfig::from_configs(
            &map(&[
                ("retention.ms", "1000"),
                ("segment.bytes", "2048"),
                ("foo", "bar"),
            ]),
            &map(&[
                ("retention.ms", "5000"),
                ("message.timestamp.type", "LogAppendTime"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.retention_ms, 5000);
        assert_eq!(config.segment_bytes, 2048);
        assert_eq!(config.message_timestamp_type, TimestampType::LogAppendTime);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let error = LogConfig::from_configs(&map(&[("segment.bytes", "big")]), &BTreeMap::new())
            .expect_err("invalid");
        assert!(matches!(&error, LogError::InvalidConfig { key, .. } if key == "segment.bytes"));
        assert_eq!(error.kafka_error_code(), 40);
        assert!(LogConfig::validate("retention.ms", "-2").is_err());
        assert!(LogConfig::validate("cleanup.policy", "compact,delete").is_ok());
        assert!(LogConfig::validate("cleanup.policy", "keep").is_err());
        assert!(LogConfig::validate("no.such.config", "1").is_err());
    }

    #[test]
    fn defaults_round_trip() {
        let defaults = LogConfig::defaults();
        assert_eq!(
            defaults.get("flush.messages").map(String::as_str),
            Some("9223372036854775807")
        );
        let config = LogConfig::from_configs(&defaults, &BTreeMap::new()).expect("valid");
        assert_eq!(config, LogConfig::default());
    }
}
