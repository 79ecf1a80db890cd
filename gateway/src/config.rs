//! Broker configuration under Kafka's broker config names.
//!
//! Every setting is defined once in [`BROKER_CONFIGS`]; from that table come the
//! `silt serve` flags (kebab case: `log.dirs` → `--log-dirs`), the environment variables
//! (`SILT_LOG_DIRS`), the TOML file keys (the Kafka name itself) and the defaults.
//! Precedence, lowest first: default, TOML file, environment, flag, `--override`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches, parser::ValueSource};
use silt_broker::group_coordinator::GroupConfig;
use silt_tiering::chunk_cache::ChunkCacheConfig;
use silt_tiering::{ObjectStoreConfig, TieringConfig};

/// One broker setting: Kafka name, default value (`None` = unset), help text.
pub struct ConfigDef {
    /// Kafka broker config name, e.g. `log.retention.ms`.
    pub name: &'static str,
    /// Default as Kafka would print it; `None` when unset by default.
    pub default: Option<&'static str>,
    /// One line for `--help`.
    pub doc: &'static str,
}

const fn def(name: &'static str, default: Option<&'static str>, doc: &'static str) -> ConfigDef {
    ConfigDef { name, default, doc }
}

/// Every broker setting Silt understands.
pub const BROKER_CONFIGS: &[ConfigDef] = &[
    def(
        "node.id",
        Some("1"),
        "this node's id, unique in the cluster",
    ),
    def(
        "process.roles",
        Some("broker,controller"),
        "roles of this process: broker, controller or both",
    ),
    def(
        "listeners",
        Some("PLAINTEXT://127.0.0.1:9092"),
        "listeners as NAME://HOST:PORT, comma separated; a controller also needs CONTROLLER://HOST:PORT",
    ),
    def(
        "controller.quorum.voters",
        None,
        "controller voters as ID@HOST:PORT, comma separated; unset = this node alone",
    ),
    def(
        "controller.listener.names",
        Some("CONTROLLER"),
        "name of the listener that serves the controller quorum",
    ),
    def(
        "broker.rack",
        None,
        "rack of this broker, for rack-aware replica placement",
    ),
    def(
        "broker.session.timeout.ms",
        Some("9000"),
        "a broker without a heartbeat for this long is fenced",
    ),
    def(
        "broker.heartbeat.interval.ms",
        Some("2000"),
        "how often a broker heartbeats to the active controller",
    ),
    def(
        "replica.lag.time.max.ms",
        Some("30000"),
        "a follower not caught up for this long leaves the ISR",
    ),
    def(
        "unclean.leader.election.enable",
        Some("false"),
        "elect an out-of-sync replica when no ISR member is alive (topic config unclean.leader.election.enable)",
    ),
    def(
        "auto.leader.rebalance.enable",
        Some("true"),
        "move leadership back to preferred replicas",
    ),
    def(
        "leader.imbalance.check.interval.seconds",
        Some("300"),
        "how often preferred leaders are restored",
    ),
    def(
        "advertised.listeners",
        None,
        "listeners given to clients in Metadata; defaults to listeners",
    ),
    def(
        "log.dirs",
        Some("./silt-data"),
        "directories holding partition logs and controller state, comma separated",
    ),
    def(
        "admin.listener",
        Some("127.0.0.1:9644"),
        "HOST:PORT of the admin HTTP server (/healthz, /metrics)",
    ),
    def(
        "cluster.id",
        None,
        "cluster id; generated on first start when unset",
    ),
    def(
        "num.partitions",
        Some("1"),
        "partitions of auto-created topics and of CreateTopics with -1",
    ),
    def(
        "default.replication.factor",
        Some("1"),
        "replication factor of auto-created topics and of CreateTopics with -1",
    ),
    def(
        "auto.create.topics.enable",
        Some("true"),
        "create unknown topics on Metadata requests that allow it",
    ),
    def("delete.topic.enable", Some("true"), "allow DeleteTopics"),
    def(
        "log.segment.bytes",
        Some("1073741824"),
        "roll a segment at this size in bytes (topic config segment.bytes)",
    ),
    def(
        "log.roll.ms",
        Some("604800000"),
        "roll a segment after this many ms (topic config segment.ms)",
    ),
    def(
        "log.retention.ms",
        Some("604800000"),
        "delete segments older than this, -1 = forever (topic config retention.ms)",
    ),
    def(
        "log.retention.bytes",
        Some("-1"),
        "delete old segments beyond this partition size, -1 = no limit (topic config retention.bytes)",
    ),
    def(
        "log.retention.check.interval.ms",
        Some("300000"),
        "how often retention runs",
    ),
    def(
        "log.flush.interval.messages",
        Some("9223372036854775807"),
        "fsync after this many messages (topic config flush.messages)",
    ),
    def(
        "log.flush.interval.ms",
        None,
        "fsync after this many ms (topic config flush.ms)",
    ),
    def(
        "log.segment.preallocate.bytes",
        Some("1073741824"),
        "disk blocks a fast-written partition allocates ahead of its appends in one step (at most the rest of the segment; the next segment is allocated ahead too), 0 = off",
    ),
    def(
        "log.writeback.interval.bytes",
        Some("4194304"),
        "start writing a segment's appended data to disk every this many bytes (no fsync), so the kernel never writes back in bursts; 0 = leave it to the kernel",
    ),
    def(
        "log.writeback.drop.behind.bytes",
        Some("268435456"),
        "appended bytes per partition kept in the page cache behind the end of its log, across rolls; older pages are dropped once written back, so the cache stays a fixed size (needs log.writeback.interval.bytes > 0); 0 = keep every page",
    ),
    def(
        "log.index.interval.bytes",
        Some("4096"),
        "bytes between offset index entries (topic config index.interval.bytes)",
    ),
    def(
        "log.message.timestamp.type",
        Some("CreateTime"),
        "CreateTime or LogAppendTime (topic config message.timestamp.type)",
    ),
    def(
        "log.cleanup.policy",
        Some("delete"),
        "delete or compact (topic config cleanup.policy)",
    ),
    def(
        "log.cleaner.enable",
        Some("true"),
        "run the log cleaner, which compacts topics whose cleanup.policy includes compact (and __consumer_offsets)",
    ),
    def(
        "log.cleaner.threads",
        Some("1"),
        "log cleaner threads; each cleans one partition at a time",
    ),
    def(
        "log.cleaner.dedupe.buffer.size",
        Some("134217728"),
        "bytes of memory for the cleaners' key maps, shared by all threads; a pass over more keys covers part of the dirty section and the next pass goes on",
    ),
    def(
        "log.cleaner.io.max.bytes.per.second",
        Some("1.7976931348623157E308"),
        "cap on the bytes per second the cleaners read and write together",
    ),
    def(
        "log.cleaner.backoff.ms",
        Some("15000"),
        "how long a cleaner thread sleeps when no log is due for cleaning",
    ),
    def(
        "log.cleaner.min.cleanable.ratio",
        Some("0.5"),
        "share of a compacted log not yet cleaned at which it is cleaned (topic config min.cleanable.dirty.ratio)",
    ),
    def(
        "log.cleaner.delete.retention.ms",
        Some("86400000"),
        "how long tombstones stay after compaction (topic config delete.retention.ms)",
    ),
    def(
        "log.cleaner.min.compaction.lag.ms",
        Some("0"),
        "records younger than this are not compacted (topic config min.compaction.lag.ms)",
    ),
    def(
        "log.cleaner.max.compaction.lag.ms",
        Some("9223372036854775807"),
        "records older than this are compacted whatever the dirty ratio (topic config max.compaction.lag.ms)",
    ),
    def(
        "message.max.bytes",
        Some("1048588"),
        "largest record batch accepted, bytes (topic config max.message.bytes)",
    ),
    def(
        "min.insync.replicas",
        Some("1"),
        "in-sync replicas needed for acks=all (topic config min.insync.replicas)",
    ),
    def(
        "offsets.topic.num.partitions",
        Some("50"),
        "partitions of __consumer_offsets",
    ),
    def(
        "offsets.topic.segment.bytes",
        Some("104857600"),
        "segment.bytes of __consumer_offsets, set when the topic is created: the log cleaner compacts sealed segments only",
    ),
    def(
        "offsets.topic.replication.factor",
        Some("3"),
        "replication factor of __consumer_offsets, capped at the cluster's size (voters or registered brokers) when it is created",
    ),
    def(
        "offsets.retention.minutes",
        Some("10080"),
        "committed offsets of empty groups expire after this",
    ),
    def(
        "group.initial.rebalance.delay.ms",
        Some("3000"),
        "delay of a new group's first rebalance",
    ),
    def(
        "group.min.session.timeout.ms",
        Some("6000"),
        "smallest session timeout a consumer may ask for",
    ),
    def(
        "group.max.session.timeout.ms",
        Some("1800000"),
        "largest session timeout a consumer may ask for",
    ),
    def(
        "socket.request.max.bytes",
        Some("104857600"),
        "requests larger than this close the connection before being read",
    ),
    def(
        "remote.log.storage.system.enable",
        Some("true"),
        "run tiered storage: upload sealed segments of topics with remote.storage.enable",
    ),
    def(
        "object.store",
        None,
        "object store for tiered segments: a directory, file:///dir or s3://bucket/prefix; default <first log dir>/objects",
    ),
    def(
        "s3.endpoint",
        None,
        "S3 endpoint URL for MinIO and other S3-compatible stores, e.g. http://127.0.0.1:9000",
    ),
    def(
        "s3.region",
        None,
        "S3 region; default from the AWS environment, else us-east-1",
    ),
    def(
        "s3.access.key.id",
        None,
        "static S3 access key id; default: the AWS credential chain (env, profile, web identity, IMDS)",
    ),
    def("s3.secret.access.key", None, "static S3 secret access key"),
    def(
        "log.remote.storage.enable",
        Some("false"),
        "tier new topics by default (topic config remote.storage.enable)",
    ),
    def(
        "log.table.enable",
        Some("false"),
        "export new topics as Iceberg tables by default (topic config table.enable)",
    ),
    def(
        "log.local.retention.ms",
        Some("-2"),
        "keep tiered data locally this long, -2 = retention.ms (topic config local.retention.ms)",
    ),
    def(
        "log.local.retention.bytes",
        Some("-2"),
        "keep this many bytes of tiered data locally, -2 = retention.bytes (topic config local.retention.bytes)",
    ),
    def(
        "remote.log.manager.task.interval.ms",
        Some("30000"),
        "how often sealed segments are uploaded and remote retention runs",
    ),
    def(
        "remote.log.compacted.segment.delete.delay.ms",
        Some("60000"),
        "how long the objects of remote segments replaced by compaction stay after the swap, for readers and restore points that still name them",
    ),
    def(
        "remote.read.only",
        Some("false"),
        "serve consumers read-only from another cluster's bucket (object.store), following its restore points; produce is refused",
    ),
    def(
        "table.export.interval.ms",
        Some("10000"),
        "time between the starts of two table export passes over the partitions when every table is caught up (topic config table.enable)",
    ),
    def(
        "table.export.max.bytes",
        Some("67108864"),
        "log bytes turned into Parquet by one table commit at most",
    ),
    def(
        "table.export.threads",
        Some("2"),
        "partitions whose tables are exported at once, each round's decoding and Parquet encoding on its own low-priority thread",
    ),
    def(
        "table.orphan.grace.ms",
        Some("900000"),
        "an uncommitted table data file younger than this is never deleted (a commit may still name it)",
    ),
    def(
        "table.maintenance.interval.ms",
        Some("60000"),
        "time between two runs of a table's retention, compaction and snapshot expiry",
    ),
    def(
        "table.compaction.target.file.bytes",
        Some("134217728"),
        "table files smaller than this are merged into files of up to this size",
    ),
    def(
        "table.compaction.min.files",
        Some("10"),
        "merge a table partition's day once it has this many small files",
    ),
    def(
        "table.snapshot.retention.ms",
        Some("3600000"),
        "table snapshots older than this are expired (the current one always stays)",
    ),
    def(
        "table.snapshot.retention.count",
        Some("500"),
        "a table keeps at most this many snapshots, the newest, whatever their age (each commit rewrites the metadata file that lists them all)",
    ),
    def(
        "restore.point.interval.ms",
        Some("30000"),
        "how often the active controller writes a restore point to the object store, 0 = only with `silt restore-points create`",
    ),
    def(
        "restore.point.retention.ms",
        Some("86400000"),
        "how long restore points are kept (the newest is always kept; remote retention keeps the segments they name)",
    ),
    def(
        "remote.log.cache.chunk.bytes",
        Some("4194304"),
        "size of the byte ranges cached from remote segments",
    ),
    def(
        "remote.log.cache.memory.bytes",
        Some("268435456"),
        "memory for cached remote byte ranges",
    ),
    def(
        "remote.log.cache.disk.bytes",
        Some("2147483648"),
        "local disk for cached remote byte ranges, 0 = memory only",
    ),
    def(
        "remote.log.cache.dir",
        None,
        "directory of the remote read cache; default <first log dir>/remote-cache",
    ),
    def(
        "metadata.log.dir",
        None,
        "directory of the controller's raft log and snapshots (under __controller); default the first of log.dirs. Kafka's setting: a disk of its own keeps a full data disk from stopping the controller",
    ),
];

/// Broker config name → topic config name for the settings that are topic defaults.
pub const TOPIC_DEFAULT_NAMES: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.cleanup.policy", "cleanup.policy"),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("message.max.bytes", "max.message.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
    ("log.remote.storage.enable", "remote.storage.enable"),
    ("log.local.retention.ms", "local.retention.ms"),
    ("log.local.retention.bytes", "local.retention.bytes"),
    ("log.table.enable", "table.enable"),
];

/// Errors in the configuration; each names the setting and what it should look like.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The TOML file is not valid TOML or not a table of settings.
    #[error("config file {path} is not valid: {message}")]
    ParseFile {
        /// File path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A setting has a value of the wrong form.
    #[error("invalid value {value:?} for {name}: expected {expected}")]
    InvalidValue {
        /// Kafka config name.
        name: String,
        /// Offending value.
        value: String,
        /// What is expected.
        expected: &'static str,
    },
    /// A setting name is not known.
    #[error("unknown setting {0:?}; `silt serve --help` lists every setting")]
    UnknownSetting(String),
}

/// Flag name of a Kafka config name: `log.dirs` → `log-dirs`.
fn flag_name(name: &str) -> String {
    name.replace('.', "-")
}

/// Environment variable of a Kafka config name: `log.dirs` → `SILT_LOG_DIRS`.
fn env_name(name: &str) -> String {
    format!("SILT_{}", name.replace('.', "_").to_ascii_uppercase())
}

/// The `silt serve` arguments: settings given on the command line or in the
/// environment, plus the config file and `--override`s.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML file of Kafka-named settings.
    pub config_file: Option<PathBuf>,
    /// Settings from flags or environment, by Kafka name.
    pub settings: BTreeMap<String, String>,
    /// `--override name=value` pairs, applied last.
    pub overrides: Vec<String>,
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(path) = matches.get_one::<String>("config") {
            self.config_file = Some(PathBuf::from(path));
        }
        for config in BROKER_CONFIGS {
            let from_user = matches!(
                matches.value_source(config.name),
                Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
            );
            if let (true, Some(value)) = (from_user, matches.get_one::<String>(config.name)) {
                let _ = self.settings.insert(config.name.to_string(), value.clone());
            }
        }
        if let Some(values) = matches.get_many::<String>("override") {
            self.overrides.extend(values.cloned());
        }
        Ok(())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let mut command = command
            .arg(
                Arg::new("config")
                    .long("config")
                    .env("SILT_CONFIG")
                    .value_name("FILE")
                    .help("TOML file of settings under their Kafka names, e.g. \"log.dirs\" = \"/var/lib/silt\""),
            )
            .arg(
                Arg::new("override")
                    .long("override")
                    .value_name("NAME=VALUE")
                    .action(ArgAction::Append)
                    .help("set any setting by its Kafka name; applied last"),
            );
        for config in BROKER_CONFIGS {
            let help = match config.default {
                Some(default) => format!("{} [{}; default {default}]", config.doc, config.name),
                None => format!("{} [{}]", config.doc, config.name),
            };
            command = command.arg(
                Arg::new(config.name)
                    .long(flag_name(config.name))
                    .env(env_name(config.name))
                    .value_name("VALUE")
                    .help(help),
            );
        }
        command
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// The broker configuration after every source has been merged and parsed.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Every setting by Kafka name, as merged (for DescribeConfigs on the broker).
    pub raw: BTreeMap<String, String>,
    /// `node.id`.
    pub node_id: i32,
    /// `process.roles`: `broker`, `controller` or both.
    pub process_roles: Vec<String>,
    /// Address of the PLAINTEXT listener.
    pub listener: SocketAddr,
    /// Address of the controller listener (the one named by `controller.listener.names`),
    /// present when this node is a voter of a multi-voter quorum.
    pub controller_listener: Option<SocketAddr>,
    /// `controller.quorum.voters`: voter node id -> `host:port` of its controller listener;
    /// empty when this node is a quorum of one.
    pub quorum_voters: BTreeMap<i32, String>,
    /// `broker.rack`.
    pub broker_rack: Option<String>,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
    /// Host and port given to clients; port 0 means "the bound port".
    pub advertised_host: String,
    /// Advertised port, 0 = the listener's bound port.
    pub advertised_port: u16,
    /// `log.dirs`.
    pub log_dirs: Vec<PathBuf>,
    /// `metadata.log.dir`: where the controller keeps its raft log (under
    /// `__controller`); the first of `log.dirs` unless set.
    pub metadata_log_dir: PathBuf,
    /// `admin.listener`.
    pub admin_listener: SocketAddr,
    /// `cluster.id`.
    pub cluster_id: Option<String>,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `delete.topic.enable`.
    pub delete_topic_enable: bool,
    /// Topic config defaults keyed by topic config name.
    pub log_defaults: BTreeMap<String, String>,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `log.segment.preallocate.bytes` (bytes; 0 = off).
    pub segment_preallocate_bytes: u64,
    /// `log.writeback.interval.bytes` and `log.writeback.drop.behind.bytes` (bytes; 0 = off).
    pub writeback: silt_broker::writeback::WritebackConfig,
    /// `log.flush.interval.ms`, when set.
    pub flush_interval_ms: Option<u64>,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.segment.bytes` (bytes).
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i16,
    /// Group coordinator settings.
    pub group: GroupConfig,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: usize,
    /// `remote.log.storage.system.enable`.
    pub remote_storage_system_enable: bool,
    /// Where tiered segments go (`object.store`, `s3.*`).
    pub object_store: ObjectStoreConfig,
    /// Upload, cleanup and retention cadence of tiered storage.
    pub tiering: TieringConfig,
    /// The remote read cache (`remote.log.cache.*`).
    pub remote_cache: ChunkCacheConfig,
    /// `remote.read.only`: a read-only replica of the bucket at `object.store`, which
    /// another cluster writes.
    pub remote_read_only: bool,
    /// `restore.point.interval.ms`: 0 = restore points only on demand.
    pub restore_point_interval_ms: u64,
    /// `restore.point.retention.ms`.
    pub restore_point_retention_ms: i64,
    /// `log.cleaner.*`: the key compaction threads.
    pub log_cleaner: silt_compaction::LogCleanerConfig,
    /// `table.export.*`, `table.orphan.grace.ms`: the Iceberg table exporter.
    pub table_export: silt_tables::TableExporterConfig,
}

impl BrokerConfig {
    /// Merges defaults, the TOML file, flags/environment and overrides, then parses.
    ///
    /// # Errors
    /// An unreadable file, an unknown setting name, or a value of the wrong form.
    pub fn load(args: &ServeArgs) -> Result<BrokerConfig, ConfigError> {
        let mut raw: BTreeMap<String, String> = BROKER_CONFIGS
            .iter()
            .filter_map(|config| {
                config
                    .default
                    .map(|default| (config.name.to_string(), default.to_string()))
            })
            .collect();
        if let Some(path) = &args.config_file {
            for (name, value) in read_toml_settings(path)? {
                let _ = raw.insert(name, value);
            }
        }
        for (name, value) in &args.settings {
            let _ = raw.insert(name.clone(), value.clone());
        }
        for pair in &args.overrides {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(ConfigError::InvalidValue {
                    name: "--override".to_string(),
                    value: pair.clone(),
                    expected: "NAME=VALUE",
                });
            };
            let name = name.trim();
            if !BROKER_CONFIGS.iter().any(|config| config.name == name) {
                return Err(ConfigError::UnknownSetting(name.to_string()));
            }
            let _ = raw.insert(name.to_string(), value.trim().to_string());
        }
        Self::from_raw(raw)
    }

    /// Parses merged settings.
    ///
    /// # Errors
    /// A value of the wrong form, naming the setting.
    pub fn from_raw(raw: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        let get = |name: &str| raw.get(name).map(String::as_str).unwrap_or("");
        let listener_text = get("listeners").to_string();
        let listener = parse_plaintext_listener("listeners", &listener_text)?;
        let advertised = match raw.get("advertised.listeners") {
            Some(text) if !text.trim().is_empty() => {
                parse_plaintext_host_port("advertised.listeners", text)?
            }
            _ => (listener.ip().to_string(), listener.port()),
        };
        let log_dirs: Vec<PathBuf> = get("log.dirs")
            .split(',')
            .map(str::trim)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(invalid(
                "log.dirs",
                get("log.dirs"),
                "one or more directories, comma separated",
            ));
        }
        let admin_listener = get("admin.listener").parse::<SocketAddr>().map_err(|_| {
            invalid(
                "admin.listener",
                get("admin.listener"),
                "HOST:PORT, e.g. 127.0.0.1:9644",
            )
        })?;
        let mut log_defaults = BTreeMap::new();
        for (broker_name, topic_name) in TOPIC_DEFAULT_NAMES {
            if let Some(value) = raw.get(*broker_name) {
                let _ = log_defaults.insert((*topic_name).to_string(), value.clone());
            }
        }
        silt_broker::log_config::LogConfig::from_configs(&log_defaults, &BTreeMap::new()).map_err(
            |error| ConfigError::InvalidValue {
                name: "log.*".to_string(),
                value: error.to_string(),
                expected: "valid topic defaults",
            },
        )?;
        let offsets_retention_minutes: i64 = parse_number(&raw, "offsets.retention.minutes")?;
        let group = GroupConfig {
            offsets_topic_num_partitions: parse_number(&raw, "offsets.topic.num.partitions")?,
            group_initial_rebalance_delay_ms: parse_number(
                &raw,
                "group.initial.rebalance.delay.ms",
            )?,
            group_min_session_timeout_ms: parse_number(&raw, "group.min.session.timeout.ms")?,
            group_max_session_timeout_ms: parse_number(&raw, "group.max.session.timeout.ms")?,
            offsets_retention_ms: offsets_retention_minutes.saturating_mul(60_000),
        };
        let flush_interval_ms = match raw.get("log.flush.interval.ms") {
            Some(text) if !text.trim().is_empty() => {
                Some(parse_number(&raw, "log.flush.interval.ms")?)
            }
            _ => None,
        };
        let num_partitions: i32 = parse_number(&raw, "num.partitions")?;
        if num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                get("num.partitions"),
                "a positive integer",
            ));
        }
        let first_log_dir = absolute(&log_dirs[0]);
        let object_store_url = match raw.get("object.store") {
            Some(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => first_log_dir.join("objects").display().to_string(),
        };
        let s3_endpoint = raw
            .get("s3.endpoint")
            .filter(|e| !e.trim().is_empty())
            .cloned();
        let object_store = ObjectStoreConfig {
            url: object_store_url,
            s3_allow_http: s3_endpoint
                .as_deref()
                .is_some_and(|endpoint| endpoint.starts_with("http://")),
            s3_endpoint,
            s3_region: raw
                .get("s3.region")
                .filter(|v| !v.trim().is_empty())
                .cloned(),
            s3_access_key_id: raw
                .get("s3.access.key.id")
                .filter(|v| !v.trim().is_empty())
                .cloned(),
            s3_secret_access_key: raw
                .get("s3.secret.access.key")
                .filter(|v| !v.trim().is_empty())
                .cloned(),
        };
        let tiering = TieringConfig {
            task_interval_ms: parse_number(&raw, "remote.log.manager.task.interval.ms")?,
            replaced_segment_delete_delay_ms: parse_number(
                &raw,
                "remote.log.compacted.segment.delete.delay.ms",
            )?,
            ..TieringConfig::default()
        };
        let cache_disk_bytes: usize = parse_number(&raw, "remote.log.cache.disk.bytes")?;
        let metadata_log_dir = match raw.get("metadata.log.dir") {
            Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir.trim()),
            _ => first_log_dir.clone(),
        };
        let cache_dir = match raw.get("remote.log.cache.dir") {
            Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir.trim()),
            _ => first_log_dir.join("remote-cache"),
        };
        let remote_cache = ChunkCacheConfig {
            chunk_bytes: parse_number(&raw, "remote.log.cache.chunk.bytes")?,
            memory_bytes: parse_number(&raw, "remote.log.cache.memory.bytes")?,
            disk_bytes: cache_disk_bytes,
            disk_dir: (cache_disk_bytes > 0).then_some(cache_dir),
            ..ChunkCacheConfig::default()
        };
        if remote_cache.chunk_bytes == 0 || remote_cache.memory_bytes == 0 {
            return Err(invalid(
                "remote.log.cache.memory.bytes",
                get("remote.log.cache.memory.bytes"),
                "positive sizes for the remote cache",
            ));
        }
        let process_roles: Vec<String> = get("process.roles")
            .split(',')
            .map(|role| role.trim().to_ascii_lowercase())
            .filter(|r| !r.is_empty())
            .collect();
        if process_roles.is_empty()
            || process_roles
                .iter()
                .any(|role| role != "broker" && role != "controller")
        {
            return Err(invalid(
                "process.roles",
                get("process.roles"),
                "broker, controller or broker,controller",
            ));
        }
        let node_id: i32 = parse_number(&raw, "node.id")?;
        if node_id < 0 {
            return Err(invalid("node.id", get("node.id"), "a non-negative integer"));
        }
        let quorum_voters = parse_quorum_voters(get("controller.quorum.voters"))?;
        let is_controller = process_roles.iter().any(|role| role == "controller");
        let controller_listener = match quorum_voters.is_empty() {
            true => None,
            false => parse_named_listener(&listener_text, get("controller.listener.names").trim())?,
        };
        if !is_controller && quorum_voters.is_empty() {
            return Err(invalid(
                "controller.quorum.voters",
                "",
                "the controller voters (ID@HOST:PORT,...) when process.roles has no controller",
            ));
        }
        if !process_roles.iter().any(|role| role == "broker") {
            return Err(invalid(
                "process.roles",
                get("process.roles"),
                "a role list that includes broker (controller-only nodes are not supported yet)",
            ));
        }
        if is_controller && !quorum_voters.is_empty() {
            if !quorum_voters.contains_key(&node_id) {
                return Err(invalid(
                    "controller.quorum.voters",
                    get("controller.quorum.voters"),
                    "a voter list that includes this node.id when process.roles has controller",
                ));
            }
            if controller_listener.is_none() {
                return Err(invalid(
                    "listeners",
                    &listener_text,
                    "a CONTROLLER://HOST:PORT listener when this node is a controller voter",
                ));
            }
        }
        let leader_imbalance_check_interval_s: u64 =
            parse_number(&raw, "leader.imbalance.check.interval.seconds")?;
        let writeback = silt_broker::writeback::WritebackConfig {
            interval_bytes: parse_number(&raw, "log.writeback.interval.bytes")?,
            drop_behind_bytes: parse_number(&raw, "log.writeback.drop.behind.bytes")?,
        };
        // Pages closer to the end than two intervals may still be dirty or under writeback.
        if writeback.drop_behind_bytes != 0
            && writeback.drop_behind_bytes < writeback.interval_bytes.saturating_mul(2)
        {
            return Err(invalid(
                "log.writeback.drop.behind.bytes",
                get("log.writeback.drop.behind.bytes"),
                "0, or at least twice log.writeback.interval.bytes",
            ));
        }
        Ok(BrokerConfig {
            controller_listener: if is_controller {
                controller_listener
            } else {
                None
            },
            quorum_voters,
            broker_rack: raw
                .get("broker.rack")
                .map(|rack| rack.trim().to_string())
                .filter(|rack| !rack.is_empty()),
            broker_session_timeout_ms: parse_number(&raw, "broker.session.timeout.ms")?,
            broker_heartbeat_interval_ms: parse_number(&raw, "broker.heartbeat.interval.ms")?,
            replica_lag_time_max_ms: parse_number(&raw, "replica.lag.time.max.ms")?,
            auto_leader_rebalance_enable: parse_bool(&raw, "auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_ms: leader_imbalance_check_interval_s
                .saturating_mul(1000),
            remote_storage_system_enable: parse_bool(&raw, "remote.log.storage.system.enable")?,
            remote_read_only: parse_bool(&raw, "remote.read.only")?,
            table_export: silt_tables::TableExporterConfig {
                interval: std::time::Duration::from_millis(
                    parse_number::<u64>(&raw, "table.export.interval.ms")?.max(10),
                ),
                max_bytes: parse_number::<usize>(&raw, "table.export.max.bytes")?.max(1),
                threads: parse_number::<usize>(&raw, "table.export.threads")?.max(1),
                orphan_grace: std::time::Duration::from_millis(parse_number(
                    &raw,
                    "table.orphan.grace.ms",
                )?),
                maintenance: silt_tables::maintenance::MaintenanceConfig {
                    interval: std::time::Duration::from_millis(
                        parse_number::<u64>(&raw, "table.maintenance.interval.ms")?.max(10),
                    ),
                    target_file_bytes: parse_number(&raw, "table.compaction.target.file.bytes")?,
                    min_files: parse_number::<usize>(&raw, "table.compaction.min.files")?.max(2),
                    snapshot_retention: std::time::Duration::from_millis(parse_number(
                        &raw,
                        "table.snapshot.retention.ms",
                    )?),
                    snapshot_max_count: parse_number::<usize>(
                        &raw,
                        "table.snapshot.retention.count",
                    )?
                    .max(1),
                },
            },
            restore_point_interval_ms: parse_number(&raw, "restore.point.interval.ms")?,
            restore_point_retention_ms: parse_number(&raw, "restore.point.retention.ms")?,
            object_store,
            tiering,
            remote_cache,
            node_id,
            process_roles,
            listener,
            advertised_host: advertised.0,
            advertised_port: advertised.1,
            log_dirs,
            metadata_log_dir,
            admin_listener,
            cluster_id: raw
                .get("cluster.id")
                .filter(|id| !id.trim().is_empty())
                .cloned(),
            num_partitions,
            default_replication_factor: parse_number(&raw, "default.replication.factor")?,
            // A read-only replica has only the topics of the bucket it follows.
            auto_create_topics_enable: parse_bool(&raw, "auto.create.topics.enable")?
                && !parse_bool(&raw, "remote.read.only")?,
            delete_topic_enable: parse_bool(&raw, "delete.topic.enable")?,
            log_defaults,
            retention_check_interval_ms: parse_number(&raw, "log.retention.check.interval.ms")?,
            segment_preallocate_bytes: parse_number(&raw, "log.segment.preallocate.bytes")?,
            writeback,
            flush_interval_ms,
            offsets_topic_num_partitions: group.offsets_topic_num_partitions,
            offsets_topic_segment_bytes: parse_number(&raw, "offsets.topic.segment.bytes")?,
            offsets_topic_replication_factor: parse_number(
                &raw,
                "offsets.topic.replication.factor",
            )?,
            group,
            socket_request_max_bytes: parse_number(&raw, "socket.request.max.bytes")?,
            log_cleaner: silt_compaction::LogCleanerConfig {
                enable: parse_bool(&raw, "log.cleaner.enable")?,
                threads: parse_number::<usize>(&raw, "log.cleaner.threads")?.max(1),
                dedupe_buffer_bytes: parse_number(&raw, "log.cleaner.dedupe.buffer.size")?,
                io_max_bytes_per_second: parse_number(&raw, "log.cleaner.io.max.bytes.per.second")?,
                backoff: std::time::Duration::from_millis(parse_number(
                    &raw,
                    "log.cleaner.backoff.ms",
                )?),
            },
            raw,
        })
    }
}

/// `path` made absolute against the working directory, so stores and caches do not move
/// if the process changes directory.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn invalid(name: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::InvalidValue {
        name: name.to_string(),
        value: value.to_string(),
        expected,
    }
}

fn parse_number<T: std::str::FromStr>(
    raw: &BTreeMap<String, String>,
    name: &str,
) -> Result<T, ConfigError> {
    let value = raw.get(name).map(String::as_str).unwrap_or("");
    value
        .trim()
        .parse::<T>()
        .map_err(|_| invalid(name, value, "a number in range"))
}

fn parse_bool(raw: &BTreeMap<String, String>, name: &str) -> Result<bool, ConfigError> {
    let value = raw.get(name).map(String::as_str).unwrap_or("");
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, value, "true or false")),
    }
}

/// The `PLAINTEXT` entry (or the first entry that is not `CONTROLLER`) of a listener list
/// as host and port.
fn parse_plaintext_host_port(name: &str, text: &str) -> Result<(String, u16), ConfigError> {
    let expected = "NAME://HOST:PORT[,NAME://HOST:PORT], e.g. PLAINTEXT://127.0.0.1:9092";
    let entries: Vec<(&str, &str)> = text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .split_once("://")
                .ok_or_else(|| invalid(name, text, expected))
        })
        .collect::<Result<_, _>>()?;
    let chosen = entries
        .iter()
        .find(|(listener_name, _)| listener_name.eq_ignore_ascii_case("PLAINTEXT"))
        .or_else(|| {
            entries
                .iter()
                .find(|(listener_name, _)| !listener_name.eq_ignore_ascii_case("CONTROLLER"))
        })
        .ok_or_else(|| invalid(name, text, expected))?;
    let (host, port) = chosen
        .1
        .rsplit_once(':')
        .ok_or_else(|| invalid(name, text, expected))?;
    let port: u16 = port.parse().map_err(|_| invalid(name, text, expected))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok((host.to_string(), port))
}

/// `controller.quorum.voters`: `ID@HOST:PORT[,ID@HOST:PORT]` (KIP-595) as id -> `host:port`.
fn parse_quorum_voters(text: &str) -> Result<BTreeMap<i32, String>, ConfigError> {
    let expected = "ID@HOST:PORT[,ID@HOST:PORT], e.g. 1@127.0.0.1:19093,2@127.0.0.1:19193";
    let mut voters = BTreeMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, address) = entry
            .split_once('@')
            .ok_or_else(|| invalid("controller.quorum.voters", text, expected))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| invalid("controller.quorum.voters", text, expected))?;
        let (host, port) = address
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| invalid("controller.quorum.voters", text, expected))?;
        if id < 0 || host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid("controller.quorum.voters", text, expected));
        }
        if voters.insert(id, address.trim().to_string()).is_some() {
            return Err(invalid(
                "controller.quorum.voters",
                text,
                "each voter id once",
            ));
        }
    }
    Ok(voters)
}

/// The socket address of the listener called `name` (e.g. `CONTROLLER`) in a listener
/// list, if the list has one.
fn parse_named_listener(text: &str, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let expected = "NAME://HOST:PORT[,NAME://HOST:PORT], e.g. CONTROLLER://127.0.0.1:9093";
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (listener_name, address) = entry
            .split_once("://")
            .ok_or_else(|| invalid("listeners", text, expected))?;
        if !listener_name.eq_ignore_ascii_case(name) {
            continue;
        }
        let address = address.replace("localhost", "127.0.0.1");
        let parsed = address.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listeners",
                text,
                "an IP address and port, e.g. CONTROLLER://127.0.0.1:9093",
            )
        })?;
        return Ok(Some(parsed));
    }
    Ok(None)
}

fn parse_plaintext_listener(name: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = parse_plaintext_host_port(name, text)?;
    let resolved = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    format!("{resolved}:{port}")
        .parse::<SocketAddr>()
        .or_else(|_| format!("[{resolved}]:{port}").parse::<SocketAddr>())
        .map_err(|_| {
            invalid(
                name,
                text,
                "an IP address and port, e.g. PLAINTEXT://127.0.0.1:9092",
            )
        })
}

fn read_toml_settings(path: &PathBuf) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|error: toml::de::Error| ConfigError::ParseFile {
                path: path.clone(),
                message: error.to_string(),
            })?;
    let mut settings = BTreeMap::new();
    flatten_toml("", &table, &mut settings, path)?;
    for name in settings.keys() {
        if !BROKER_CONFIGS.iter().any(|config| config.name == name) {
            return Err(ConfigError::UnknownSetting(name.clone()));
        }
    }
    Ok(settings)
}

/// Accepts both `"log.dirs" = ".."` and nested tables (`[log] dirs = ..`).
fn flatten_toml(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
    path: &PathBuf,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Table(nested) => {
                flatten_toml(&name, nested, out, path)?;
                continue;
            }
            toml::Value::Datetime(_) => {
                return Err(ConfigError::ParseFile {
                    path: path.clone(),
                    message: format!("{name}: dates are not settings"),
                });
            }
        };
        let _ = out.insert(name, text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_to_a_single_node_on_9092() {
        let config = BrokerConfig::load(&ServeArgs::default()).expect("defaults are valid");
        assert_eq!(config.listener, "127.0.0.1:9092".parse().expect("addr"));
        assert_eq!(config.log_dirs, vec![PathBuf::from("./silt-data")]);
        assert_eq!(
            config.log_defaults.get("retention.ms").map(String::as_str),
            Some("604800000")
        );
        assert!(config.auto_create_topics_enable);
        assert_eq!(
            config.segment_preallocate_bytes,
            silt_broker::preallocate::DEFAULT_PREALLOCATE_MAX_BYTES
        );
        assert_eq!(
            config.writeback,
            silt_broker::writeback::WritebackConfig::default()
        );
    }

    #[test]
    fn flags_and_overrides_beat_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("silt.toml");
        std::fs::write(
            &file,
            "\"num.partitions\" = 3\n[log.retention]\nms = 1000\n",
        )
        .expect("write");
        let args = ServeArgs {
            config_file: Some(file),
            settings: BTreeMap::from([("num.partitions".to_string(), "4".to_string())]),
            overrides: vec!["log.retention.bytes=77".to_string()],
        };
        let config = BrokerConfig::load(&args).expect("valid");
        assert_eq!(config.num_partitions, 4);
        assert_eq!(
            config.log_defaults.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            config
                .log_defaults
                .get("retention.bytes")
                .map(String::as_str),
            Some("77")
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let args = ServeArgs {
            overrides: vec!["num.partitions=many".to_string()],
            ..ServeArgs::default()
        };
        let error = BrokerConfig::load(&args).expect_err("invalid");
        assert!(error.to_string().contains("num.partitions"), "{error}");
        let unknown = ServeArgs {
            overrides: vec!["no.such.thing=1".to_string()],
            ..ServeArgs::default()
        };
        assert!(matches!(
            BrokerConfig::load(&unknown),
            Err(ConfigError::UnknownSetting(_))
        ));
        let too_close = ServeArgs {
            overrides: vec!["log.writeback.drop.behind.bytes=4194304".to_string()],
            ..ServeArgs::default()
        };
        let error = BrokerConfig::load(&too_close).expect_err("a window inside writeback's reach");
        assert!(
            error
                .to_string()
                .contains("log.writeback.drop.behind.bytes"),
            "{error}"
        );
        let off = ServeArgs {
            overrides: vec!["log.writeback.drop.behind.bytes=0".to_string()],
            ..ServeArgs::default()
        };
        assert_eq!(
            BrokerConfig::load(&off)
                .expect("0 turns dropping off")
                .writeback
                .drop_behind_bytes,
            0
        );
    }

    #[test]
    fn cluster_settings_parse_and_are_checked() {
        let voters = "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293";
        let args = ServeArgs {
            settings: BTreeMap::from([
                ("node.id".to_string(), "2".to_string()),
                (
                    "listeners".to_string(),
                    "PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193".to_string(),
                ),
                ("controller.quorum.voters".to_string(), voters.to_string()),
            ]),
            ..ServeArgs::default()
        };
        let config = BrokerConfig::load(&args).expect("valid");
        assert_eq!(config.quorum_voters.len(), 3);
        assert_eq!(
            config.quorum_voters.get(&3).map(String::as_str),
            Some("127.0.0.1:19293")
        );
        assert_eq!(
            config.controller_listener,
            Some("127.0.0.1:19193".parse().expect("addr"))
        );
        assert_eq!(config.listener, "127.0.0.1:19192".parse().expect("addr"));

        let mut missing_listener = args.clone();
        let _ = missing_listener.settings.insert(
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:19192".to_string(),
        );
        assert!(
            BrokerConfig::load(&missing_listener)
                .expect_err("no controller listener")
                .to_string()
                .contains("CONTROLLER")
        );
        let mut not_a_voter = args.clone();
        let _ = not_a_voter
            .settings
            .insert("node.id".to_string(), "4".to_string());
        assert!(BrokerConfig::load(&not_a_voter).is_err());
        let mut broker_only = not_a_voter.clone();
        let _ = broker_only
            .settings
            .insert("process.roles".to_string(), "broker".to_string());
        assert_eq!(
            BrokerConfig::load(&broker_only)
                .expect("broker-only node")
                .controller_listener,
            None
        );
        let mut bad_voters = args;
        let _ = bad_voters.settings.insert(
            "controller.quorum.voters".to_string(),
            "1@nowhere".to_string(),
        );
        assert!(
            BrokerConfig::load(&bad_voters)
                .expect_err("bad voters")
                .to_string()
                .contains("controller.quorum.voters")
        );
    }

    #[test]
    fn listener_lists_pick_plaintext() {
        let (host, port) = parse_plaintext_host_port(
            "listeners",
            "CONTROLLER://127.0.0.1:9093,PLAINTEXT://127.0.0.2:9092",
        )
        .expect("valid");
        assert_eq!((host.as_str(), port), ("127.0.0.2", 9092));
    }
}
