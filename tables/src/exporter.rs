//! The exporter: one task per broker that, for every partition the broker leads of a
//! topic with `table.enable=true`, turns the records between the table's watermark for
//! the partition and the high watermark into Parquet files and commits them.
//!
//! A round of one partition:
//!
//! 1. loads the table's newest version; the partition's `end` in its current
//!    snapshot's summary is where the export goes on (the log start offset for a
//!    partition the table does not cover yet, or when retention removed offsets not
//!    exported yet: those are counted absent);
//! 2. reads up to `table.export.max.bytes` of batches through the consumers' read path
//!    (local segments, or remote ones below the local log start offset);
//! 3. writes one Parquet file per day of record timestamps under
//!    `data/partition=<p>/timestamp_day=<day>/`;
//! 4. commits them as one append whose summary carries every partition's range; a
//!    commit that finds a newer version retries on it if the partition's `end` is
//!    still what the round started from, and else deletes its files.
//!
//! Up to `table.export.threads` partitions have a round at once. Where a round goes
//! on always comes from the table, never from memory, so a restart, a SIGKILL or a
//! new leader goes on from exactly where the table ends; the only thing kept between
//! rounds is which partitions were caught up, to skip them without reading the table
//! until their high watermark moves or their leadership changes. Files written by a round that never
//! committed (a crash, an outage that left the commit's outcome unknown) are deleted
//! once they are older than `table.orphan.grace.ms` and no snapshot names them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use iceberg::TableCreation;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataContentType, DataFile, Literal, Struct};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use object_store::ObjectStoreExt;
use parking_lot::Mutex;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use silt_broker::ReplicaManager;
use silt_broker::log_config::LogConfig;
use silt_broker::partition::Partition;
use silt_broker::replica_manager::{FetchPartition, now_ms};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::TableError;
use crate::catalog::{LoadedTable, TableStore};
use crate::convert::{ExportRecord, day_of, decode_batches, new_json_fields, to_record_batch};
use crate::maintenance::{MaintenanceConfig, MaintenanceStats, maintain};
use crate::schema::{
    ValueFormat, ValueType, parse_value_schema, partition_spec, sort_order, table_schema,
    value_columns, value_field,
};
use crate::summary::{PartitionRange, commit_summary, partition_range};
use silt_broker::background::run_at_nice;

/// `partition`'s log config, read off the runtime (the log's lock is held across disk
/// I/O).
async fn log_config(partition: &Partition) -> Result<LogConfig, TableError> {
    let log = partition.log();
    tokio::task::spawn_blocking(move || log.lock().config().clone())
        .await
        .map_err(|error| TableError::Schema(format!("config read task: {error}")))
}

/// Name of the threads the exporter's decoding and encoding (and maintenance's
/// merges) run on.
pub(crate) const EXPORT_THREAD: &str = "table-exporter";

/// Nice value of those threads: the lowest priority. A table may fall behind while
/// the broker is busy serving clients, and catches up when the CPUs are idle; the
/// goal is that exporting costs the produce path little (docs/benchmarks.md).
pub(crate) const EXPORT_NICE: i32 = 19;

/// Runs `work` on an export thread (see [`EXPORT_NICE`]) without blocking the runtime.
///
/// # Errors
/// The thread could not be created, or `work` panicked.
pub(crate) async fn run_export<T, F>(work: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_at_nice(EXPORT_THREAD, EXPORT_NICE, work).await
}

/// Exporter settings (broker configs).
#[derive(Debug, Clone)]
pub struct TableExporterConfig {
    /// `table.export.interval.ms`: time between the starts of two passes over the
    /// partitions when every table is caught up.
    pub interval: Duration,
    /// `table.export.max.bytes`: log bytes turned into one commit at most.
    pub max_bytes: usize,
    /// `table.export.threads`: partitions exported at once (at least 1).
    pub threads: usize,
    /// `table.orphan.grace.ms`: an uncommitted data file younger than this is left
    /// alone (a commit may still name it).
    pub orphan_grace: Duration,
    /// Retention, compaction and snapshot expiry of the tables.
    pub maintenance: MaintenanceConfig,
}

impl Default for TableExporterConfig {
    fn default() -> TableExporterConfig {
        TableExporterConfig {
            interval: Duration::from_secs(10),
            max_bytes: 64 * 1024 * 1024,
            threads: 2,
            orphan_grace: Duration::from_secs(15 * 60),
            maintenance: MaintenanceConfig::default(),
        }
    }
}

/// How far one partition's table is behind its high watermark.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The table's watermark for the partition (exclusive).
    pub exported_offset: i64,
    /// The partition's high watermark when last looked at.
    pub high_watermark: i64,
    /// `high_watermark - exported_offset`.
    pub lag_offsets: i64,
    /// Time since the table last covered the whole partition (ms); 0 when it does.
    pub lag_ms: i64,
}

/// What one round of a partition did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Records written.
    pub records: usize,
    /// Log bytes read.
    pub bytes: u64,
    /// Data files committed.
    pub files: usize,
    /// The offsets the commit covered (`start..end`), None when nothing was committed.
    pub committed: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Copy)]
struct SweepState {
    /// The leader epoch of the last sweep.
    leader_epoch: i32,
    /// When a round failed since.
    failed_at: Option<Instant>,
}

impl SweepState {
    /// Whether a sweep is due under `leader_epoch` after `last` (None: never swept):
    /// once per leadership, and again `grace` after a failure or young files.
    fn due(last: Option<&SweepState>, leader_epoch: i32, grace: Duration) -> bool {
        match last {
            Some(state) if state.leader_epoch == leader_epoch => state
                .failed_at
                .is_some_and(|failed_at| failed_at.elapsed() >= grace),
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LagState {
    exported: i64,
    high_watermark: i64,
    caught_up_at_ms: i64,
}

/// The table exporter of one broker. Start it with [`TableExporter::run`].
pub struct TableExporter {
    replica_manager: Arc<ReplicaManager>,
    tables: TableStore,
    config: TableExporterConfig,
    lags: Mutex<BTreeMap<(String, i32), LagState>>,
    /// When each partition's orphans are to be looked for next.
    sweeps: Mutex<HashMap<(String, i32), SweepState>>,
    /// When each topic's table was last maintained here.
    maintained: Mutex<HashMap<String, Instant>>,
    /// Partitions the table covered up to their high watermark at their last round.
    caught_up: Mutex<HashMap<(String, i32), CaughtUp>>,
    /// Per topic, the maintenance owner's sweeps of every partition's orphans.
    table_sweeps: Mutex<HashMap<String, SweepState>>,
}

/// A partition whose table covered its log up to `end` (exclusive) when its topic
/// had `topic_id` and its leader `leader_epoch`. Until its high watermark passes `end`,
/// its leadership changes or an orphan sweep is due, rounds skip it without reading
/// the table (a broker with many caught-up tables would otherwise parse each table's
/// metadata once per partition per round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CaughtUp {
    topic_id: uuid::Uuid,
    leader_epoch: i32,
    end: i64,
}

impl std::fmt::Debug for TableExporter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TableExporter")
            .field("broker_id", &self.replica_manager.broker_id())
            .finish()
    }
}

impl TableExporter {
    /// An exporter of `replica_manager`'s led partitions into `tables`.
    pub fn new(
        replica_manager: Arc<ReplicaManager>,
        tables: TableStore,
        config: TableExporterConfig,
    ) -> Arc<TableExporter> {
        Arc::new(TableExporter {
            replica_manager,
            tables,
            config,
            lags: Mutex::new(BTreeMap::new()),
            sweeps: Mutex::new(HashMap::new()),
            maintained: Mutex::new(HashMap::new()),
            caught_up: Mutex::new(HashMap::new()),
            table_sweeps: Mutex::new(HashMap::new()),
        })
    }

    /// The tables this exporter writes.
    pub fn tables(&self) -> &TableStore {
        &self.tables
    }

    /// The export lag of every partition this broker led and exported, by topic and
    /// partition, against each partition's current high watermark.
    pub fn lags(&self) -> Vec<ExportLag> {
        let now = now_ms();
        let states: Vec<((String, i32), LagState)> = self
            .lags
            .lock()
            .iter()
            .map(|(key, state)| (key.clone(), *state))
            .collect();
        states
            .into_iter()
            .map(|((topic, partition), mut state)| {
                // Against the high watermark now, not the one the last round saw.
                if let Some(hosted) = self.replica_manager.partition(&topic, partition) {
                    state.high_watermark = state.high_watermark.max(hosted.high_watermark());
                }
                lag_of(&topic, partition, &state, now)
            })
            .collect()
    }

    /// Exports until `shutdown` turns true: passes over the partitions follow each
    /// other at once while a table is behind, else start every
    /// `table.export.interval.ms`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        info!(
            broker_id = self.replica_manager.broker_id(),
            "table exporter started"
        );
        // Maintenance runs apart: a long merge must not hold up the export.
        let maintenance = tokio::spawn(Arc::clone(&self).run_maintenance(shutdown.clone()));
        loop {
            let pass_started = Instant::now();
            // One round per partition at a time; up to `threads` partitions at once
            // (rounds of one table that race retry their commit on the newer version).
            let exporter = &*self;
            let rounds = futures::stream::iter(self.replica_manager.all_partitions())
                .map(|partition| {
                    let shutdown = shutdown.clone();
                    async move {
                        if *shutdown.borrow() {
                            return false;
                        }
                        exporter.export_round(&partition).await
                    }
                })
                .buffer_unordered(self.config.threads.max(1))
                .collect::<Vec<bool>>()
                .await;
            let behind = rounds.contains(&true);
            // Passes start every interval (at once while a table is behind): a pass's
            // own duration is not added to the table's lag.
            let pause = if behind {
                Duration::ZERO
            } else {
                self.config.interval.saturating_sub(pass_started.elapsed())
            };
            tokio::select! {
                _changed = shutdown.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let _stopped = maintenance.await;
        debug!("table exporter stopped");
    }

    /// Maintains the tables this broker is responsible for (see
    /// [`TableExporter::maintain_if_due`]) until `shutdown` turns true.
    async fn run_maintenance(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = self.config.maintenance.interval.min(Duration::from_secs(1));
        loop {
            for partition in self.replica_manager.all_partitions() {
                if *shutdown.borrow() {
                    return;
                }
                if let Err(error) = self.maintain_if_due(&partition).await {
                    match error {
                        TableError::Conflict(reason) => {
                            debug!(topic = %partition.topic, reason, "table maintenance lost to another rewrite; retried next run");
                        }
                        error => {
                            metrics::counter!("silt_table_maintenance_failures_total").increment(1);
                            warn!(topic = %partition.topic, %error, "table maintenance failed; retried next run");
                        }
                    }
                }
            }
            tokio::select! {
                _changed = shutdown.changed() => {}
                () = tokio::time::sleep(tick) => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// [`TableExporter::export_partition`] with its outcome logged and counted; true
    /// when the partition is still behind (the round took a full share of
    /// `table.export.max.bytes`).
    async fn export_round(&self, partition: &Arc<Partition>) -> bool {
        let started = Instant::now();
        match self.export_partition(partition).await {
            Ok(stats) => {
                if stats.committed.is_some() {
                    debug!(topic = %partition.topic, partition = partition.partition, records = stats.records, files = stats.files, ms = started.elapsed().as_millis(), "table commit");
                    return stats.bytes as usize >= self.config.max_bytes / 2;
                }
            }
            Err(TableError::Conflict(reason)) => {
                metrics::counter!("silt_table_commit_conflicts_total").increment(1);
                debug!(topic = %partition.topic, partition = partition.partition, reason, "table commit lost to another; the next round goes on from the table");
            }
            Err(error) => {
                self.sweep_later(partition);
                metrics::counter!("silt_table_export_failures_total").increment(1);
                warn!(topic = %partition.topic, partition = partition.partition, %error, "table export round failed; the next round goes on from the table");
            }
        }
        false
    }

    /// One export round of `partition` if this broker leads it and its topic has
    /// `table.enable=true`. Rounds of different partitions may run at once; two
    /// rounds of one partition must not (the run loop never starts them).
    ///
    /// # Errors
    /// [`TableError::Conflict`] when another commit covered the same offsets first (its
    /// files are deleted), others for failed reads, writes and commits (files already
    /// written are left to the orphan sweep).
    pub async fn export_partition(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<RoundStats, TableError> {
        if partition.leader() != self.replica_manager.broker_id() {
            return Ok(RoundStats::default());
        }
        let config = log_config(partition).await?;
        if !config.table_enable {
            return Ok(RoundStats::default());
        }
        let topic = partition.topic.to_string();
        let index = partition.partition;
        if self.still_caught_up(partition) {
            return Ok(RoundStats::default());
        }
        let loaded = self.tables.load(&topic).await?;
        if let Some(loaded) = &loaded {
            check_topic_id(loaded, &partition.topic_id.to_string())?;
            self.sweep_orphans_if_due(partition, loaded).await;
        }
        let covered = loaded
            .as_ref()
            .and_then(|loaded| partition_range(&loaded.summary(), index));
        let log_start_offset = self.replica_manager.log_start_offset(partition);
        let high_watermark = partition.high_watermark();
        let from = covered.map_or(log_start_offset, |range| range.end);
        self.record_lag(&topic, index, from, high_watermark);
        if from >= high_watermark {
            self.mark_caught_up(partition, from);
            return Ok(RoundStats::default());
        }
        // A table keeps the format it was created with, whatever the config says now.
        let format = match loaded
            .as_ref()
            .and_then(|loaded| loaded.table.metadata().properties().get(FORMAT_PROPERTY))
        {
            Some(created_with) => ValueFormat::parse(created_with)?,
            None => ValueFormat::parse(&config.table_value_format)?,
        };
        // Offsets retention removed before they were exported are absent.
        let read_from = from.max(log_start_offset);
        let json = format == ValueFormat::Json;
        let (records, next_offset, bytes) = self
            .read(&topic, index, read_from, high_watermark, json)
            .await?;
        let records = Arc::new(records);
        if next_offset <= from {
            return Ok(RoundStats::default());
        }
        let mut loaded = match loaded {
            Some(loaded) => loaded,
            None => {
                let topic_id = partition.topic_id.to_string();
                self.create_table(&topic, &topic_id, format, &config, &records)
                    .await?
            }
        };
        if format == ValueFormat::Json {
            loaded = self.add_new_fields(loaded, &records).await?;
        }
        let record_count = records.len();
        let added = PartitionRange {
            start: from,
            end: next_offset,
            records: record_count as i64,
        };
        // Arrow and Parquet encoding is CPU work: off the runtime, at a lower priority.
        // The records are dropped there too (freeing a round's values is not free).
        let handle = tokio::runtime::Handle::current();
        let written_at = Instant::now();
        let to_write = loaded.clone();
        let files =
            run_export(move || handle.block_on(write_files(&to_write, index, &records))).await??;
        let file_count = files.len();
        let committed = self
            .commit(
                &topic,
                index,
                loaded,
                covered,
                added,
                Written {
                    files,
                    at: written_at,
                },
            )
            .await?;
        self.record_lag(&topic, index, committed.end, high_watermark);
        if committed.end >= high_watermark {
            self.mark_caught_up(partition, committed.end);
        }
        metrics::counter!("silt_table_exported_records_total").increment(record_count as u64);
        metrics::counter!("silt_table_exported_bytes_total").increment(bytes);
        Ok(RoundStats {
            records: record_count,
            bytes,
            files: file_count,
            committed: Some((from, committed.end)),
        })
    }

    /// Maintains the table of `partition`'s topic if this broker leads the topic's
    /// partition 0 (one broker per table) and `table.maintenance.interval.ms` passed
    /// since the last run here.
    ///
    /// # Errors
    /// As [`maintain`].
    pub async fn maintain_if_due(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<Option<MaintenanceStats>, TableError> {
        if partition.partition != 0 || partition.leader() != self.replica_manager.broker_id() {
            return Ok(None);
        }
        let topic = partition.topic.to_string();
        let due = self
            .maintained
            .lock()
            .get(&topic)
            .is_none_or(|last| last.elapsed() >= self.config.maintenance.interval);
        if !due {
            return Ok(None);
        }
        let config = log_config(partition).await?;
        if !config.table_enable {
            return Ok(None);
        }
        let _ = self.maintained.lock().insert(topic.clone(), Instant::now());
        let Some(loaded) = self.tables.load(&topic).await? else {
            return Ok(None);
        };
        self.sweep_table_if_due(partition, &loaded).await;
        let stats = maintain(
            &self.tables,
            loaded,
            config.table_retention_ms(),
            now_ms(),
            &self.config.maintenance,
            self.config.orphan_grace,
        )
        .await?;
        Ok(Some(stats))
    }

    /// Reads `[from, high_watermark)` up to `max_bytes` of batches: the records, the
    /// offset after the last batch, and the bytes read.
    async fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        high_watermark: i64,
        json: bool,
    ) -> Result<(Vec<ExportRecord>, i64, u64), TableError> {
        let mut records = Vec::new();
        let mut next = from;
        let mut bytes = 0u64;
        while next < high_watermark && (bytes as usize) < self.config.max_bytes {
            let read = self
                .replica_manager
                .read_records(
                    topic,
                    partition,
                    FetchPartition {
                        fetch_offset: next,
                        current_leader_epoch: -1,
                        max_bytes: (self.config.max_bytes - bytes as usize).min(8 * 1024 * 1024),
                        min_one_batch: true,
                    },
                )
                .await?;
            let buf = read.records;
            let decoded = run_export(move || decode_batches(partition, next, &buf, json)).await??;
            if decoded.next_offset <= next {
                break;
            }
            records.extend(
                decoded
                    .records
                    .into_iter()
                    .filter(|record| record.offset < high_watermark),
            );
            bytes += decoded.bytes;
            next = decoded.next_offset.min(high_watermark);
        }
        Ok((records, next, bytes))
    }

    async fn create_table(
        &self,
        topic: &str,
        topic_id: &str,
        format: ValueFormat,
        config: &LogConfig,
        records: &Arc<Vec<ExportRecord>>,
    ) -> Result<LoadedTable, TableError> {
        let fields = match format {
            ValueFormat::Raw => Vec::new(),
            ValueFormat::Json => match parse_value_schema(&config.table_value_schema)? {
                Some(fields) => fields,
                None => {
                    let records = Arc::clone(records);
                    run_export(move || new_json_fields(&records, &[])).await?
                }
            },
        };
        let creation = TableCreation::builder()
            .name(topic.to_string())
            .schema(table_schema(format, &fields)?)
            .partition_spec(partition_spec()?)
            .sort_order(sort_order()?)
            .properties([
                ("write.format.default".to_string(), "parquet".to_string()),
                (
                    "write.parquet.compression-codec".to_string(),
                    "zstd".to_string(),
                ),
                ("silt.topic".to_string(), topic.to_string()),
                (TOPIC_ID_PROPERTY.to_string(), topic_id.to_string()),
                (
                    FORMAT_PROPERTY.to_string(),
                    config.table_value_format.clone(),
                ),
                (
                    SCHEMA_PROPERTY.to_string(),
                    config.table_value_schema.clone(),
                ),
            ])
            .build();
        let loaded = self.tables.create(topic, creation).await?;
        info!(topic, location = %self.tables.table_location(topic), "table created");
        Ok(loaded)
    }

    /// Adds a column for each JSON field the records have that the table does not
    /// (only for inferred schemas: a given `table.value.schema` is the table's), as
    /// its own commit so the files are written in the new schema.
    async fn add_new_fields(
        &self,
        loaded: LoadedTable,
        records: &Arc<Vec<ExportRecord>>,
    ) -> Result<LoadedTable, TableError> {
        let metadata = loaded.table.metadata();
        let declared = metadata
            .properties()
            .get(SCHEMA_PROPERTY)
            .is_some_and(|schema| !schema.trim().is_empty());
        if declared {
            return Ok(loaded);
        }
        let known = value_columns(metadata.current_schema());
        let records = Arc::clone(records);
        let new_fields = run_export(move || new_json_fields(&records, &known)).await?;
        if new_fields.is_empty() {
            return Ok(loaded);
        }
        let mut update = Transaction::new(&loaded.table).update_schema();
        for (name, value_type) in &new_fields {
            // The action assigns the field ids.
            let field = value_field(0, name, *value_type);
            let field_type = (*field.field_type).clone();
            update = update.add_column(match field.doc {
                Some(doc) => AddColumn::builder()
                    .name(field.name)
                    .field_type(field_type)
                    .doc(doc)
                    .build(),
                None => AddColumn::optional(field.name, field_type),
            });
        }
        let transaction = update.apply(Transaction::new(&loaded.table))?;
        let names: Vec<&str> = new_fields.iter().map(|(name, _)| name.as_str()).collect();
        let updated = self.tables.commit(&loaded, transaction).await?;
        info!(topic = loaded.table.identifier().name(), fields = ?names, "table columns added");
        Ok(updated)
    }

    /// Commits `files` (covering `added`) on `loaded`; on a newer version retries on it
    /// while the partition's range there still ends at `added.start`.
    async fn commit(
        &self,
        topic: &str,
        partition: i32,
        mut loaded: LoadedTable,
        mut covered: Option<PartitionRange>,
        added: PartitionRange,
        written: Written,
    ) -> Result<PartitionRange, TableError> {
        const ATTEMPTS: usize = 5;
        let Written {
            files,
            at: written_at,
        } = written;
        for attempt in 1..=ATTEMPTS {
            if let Err(error) = within_grace(written_at, self.config.orphan_grace) {
                self.delete_files(&files).await;
                return Err(error);
            }
            let range = PartitionRange {
                start: covered.map_or(added.start, |range| range.start),
                end: added.end,
                records: covered.map_or(0, |range| range.records) + added.records,
            };
            let summary = commit_summary(&loaded.summary(), topic, partition, range, added);
            let transaction = Transaction::new(&loaded.table);
            let append = transaction
                .fast_append()
                .with_check_duplicate(false)
                .add_data_files(files.clone())
                .set_snapshot_properties(summary);
            let transaction = append.apply(transaction)?;
            match self.tables.commit(&loaded, transaction).await {
                Ok(_) => return Ok(range),
                Err(TableError::Conflict(reason)) if attempt < ATTEMPTS => {
                    let Some(newer) = self.tables.load(topic).await? else {
                        return Err(TableError::Conflict(reason));
                    };
                    let now_covered = partition_range(&newer.summary(), partition);
                    if now_covered.map_or(added.start, |range| range.end) != added.start {
                        self.delete_files(&files).await;
                        return Err(TableError::Conflict(format!(
                            "{topic}-{partition}: offsets from {} were committed by another exporter",
                            added.start
                        )));
                    }
                    loaded = newer;
                    covered = now_covered;
                }
                Err(TableError::Conflict(reason)) => {
                    self.delete_files(&files).await;
                    return Err(TableError::Conflict(reason));
                }
                Err(error) => return Err(error),
            }
        }
        Err(TableError::Conflict(format!(
            "{topic}-{partition}: no attempt left"
        )))
    }

    async fn delete_files(&self, files: &[DataFile]) {
        for file in files {
            let deleted = match self.tables.storage().path(file.file_path()) {
                Ok(path) => self
                    .tables
                    .store()
                    .delete(&path)
                    .await
                    .map_err(TableError::from),
                Err(error) => Err(error.into()),
            };
            if let Err(error) = deleted {
                debug!(file = file.file_path(), %error, "an uncommitted data file stays for the orphan sweep");
            }
        }
    }

    /// Looks for `partition`'s orphans when this broker became its leader, and again
    /// the grace period after a failed round (whose files may not have been committed).
    /// Whether `partition`'s files not named by the table are to be looked for: once
    /// per leadership, and again the grace period after a failed round.
    fn sweep_due(&self, partition: &Partition) -> bool {
        let key = (partition.topic.to_string(), partition.partition);
        SweepState::due(
            self.sweeps.lock().get(&key),
            partition.leader_epoch(),
            self.config.orphan_grace,
        )
    }

    /// The maintenance owner sweeps every partition's files no snapshot names once
    /// per leadership of partition 0, and again the grace period after finding files
    /// too young to judge: a merge written by the previous owner, which died before
    /// committing it, lies in a partition whose own leader swept before it was written.
    async fn sweep_table_if_due(&self, partition: &Partition, loaded: &LoadedTable) {
        let topic = partition.topic.to_string();
        let leader_epoch = partition.leader_epoch();
        let due = SweepState::due(
            self.table_sweeps.lock().get(&topic),
            leader_epoch,
            self.config.orphan_grace,
        );
        if !due {
            return;
        }
        let mut young_total = 0;
        for table_partition in covered_ranges(loaded).into_keys() {
            match self.sweep_orphans(table_partition, loaded).await {
                Ok((deleted, young)) => {
                    young_total += young;
                    if deleted > 0 {
                        info!(
                            topic,
                            partition = table_partition,
                            deleted,
                            "deleted table data files no snapshot names"
                        );
                    }
                }
                Err(error) => {
                    warn!(topic, partition = table_partition, %error, "looking for uncommitted table files failed; retried next run");
                    return;
                }
            }
        }
        let _ = self.table_sweeps.lock().insert(
            topic,
            SweepState {
                leader_epoch,
                failed_at: (young_total > 0).then(Instant::now),
            },
        );
    }

    fn still_caught_up(&self, partition: &Partition) -> bool {
        let key = (partition.topic.to_string(), partition.partition);
        let caught_up = self.caught_up.lock().get(&key).is_some_and(|caught_up| {
            caught_up.topic_id == partition.topic_id.0
                && caught_up.leader_epoch == partition.leader_epoch()
                && partition.high_watermark() <= caught_up.end
        });
        caught_up && !self.sweep_due(partition)
    }

    fn mark_caught_up(&self, partition: &Partition, end: i64) {
        let _ = self.caught_up.lock().insert(
            (partition.topic.to_string(), partition.partition),
            CaughtUp {
                topic_id: partition.topic_id.0,
                leader_epoch: partition.leader_epoch(),
                end,
            },
        );
    }

    async fn sweep_orphans_if_due(&self, partition: &Arc<Partition>, loaded: &LoadedTable) {
        let key = (partition.topic.to_string(), partition.partition);
        let leader_epoch = partition.leader_epoch();
        if !self.sweep_due(partition) {
            return;
        }
        match self.sweep_orphans(partition.partition, loaded).await {
            Ok((deleted, young)) => {
                if deleted > 0 {
                    info!(topic = %partition.topic, partition = partition.partition, deleted, "deleted table data files no snapshot names");
                }
                // Unnamed files younger than the grace period are looked at again once
                // it has passed: a commit may still name them, or they are orphans.
                let _ = self.sweeps.lock().insert(
                    key,
                    SweepState {
                        leader_epoch,
                        failed_at: (young > 0).then(Instant::now),
                    },
                );
            }
            Err(error) => {
                warn!(topic = %partition.topic, partition = partition.partition, %error, "looking for uncommitted table files failed; retried next round");
            }
        }
    }

    /// Marks `partition` for a sweep the grace period from now.
    fn sweep_later(&self, partition: &Partition) {
        let key = (partition.topic.to_string(), partition.partition);
        if let Some(state) = self.sweeps.lock().get_mut(&key) {
            state.failed_at.get_or_insert_with(Instant::now);
        }
    }

    /// Deletes `partition`'s data files that no snapshot of the table's newest version
    /// names and that were written a grace period before that version was read;
    /// returns how many, and how many unnamed files were too young. (`loaded` names the
    /// table; the version is read afresh: a commit after it names only files written
    /// within half the grace period before it, so no file a later commit names is
    /// old enough to go, however long the sweep takes.)
    ///
    /// # Errors
    /// Object store and manifest read failures.
    pub async fn sweep_orphans(
        &self,
        partition: i32,
        loaded: &LoadedTable,
    ) -> Result<(usize, usize), TableError> {
        let topic = loaded.table.identifier().name();
        let horizon = std::time::SystemTime::now() - self.config.orphan_grace;
        let Some(newest) = self.tables.load(topic).await? else {
            return Ok((0, 0));
        };
        let referenced = referenced_files(&newest).await?;
        let prefix = self
            .tables
            .table_path(topic)
            .join("data")
            .join(format!("partition={partition}"));
        let listed: Vec<object_store::ObjectMeta> = self
            .tables
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await?;
        let (mut deleted, mut young) = (0, 0);
        for object in listed {
            let location = self.tables.storage().location(&object.location);
            if referenced.contains(&location) {
                continue;
            }
            if std::time::SystemTime::from(object.last_modified) >= horizon {
                young += 1;
                continue;
            }
            match self.tables.store().delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(error) => return Err(error.into()),
            }
        }
        Ok((deleted, young))
    }

    fn record_lag(&self, topic: &str, partition: i32, exported: i64, high_watermark: i64) {
        let now = now_ms();
        let mut lags = self.lags.lock();
        let state = lags
            .entry((topic.to_string(), partition))
            .or_insert(LagState {
                exported,
                high_watermark,
                caught_up_at_ms: now,
            });
        state.exported = exported;
        state.high_watermark = high_watermark;
        if exported >= high_watermark {
            state.caught_up_at_ms = now;
        }
        let lag = lag_of(topic, partition, state, now);
        let labels = [
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        metrics::gauge!("silt_table_export_lag_offsets", &labels).set(lag.lag_offsets as f64);
        metrics::gauge!("silt_table_export_lag_ms", &labels).set(lag.lag_ms as f64);
    }
}

/// How table files are written: zstd at level 1 (the cheapest level: the exporter's
/// CPU competes with the hot path; Parquet's encodings do most of the shrinking).
/// Offsets are all distinct, so no dictionary is tried for them; raw values get no
/// min/max statistics (no reader prunes on an opaque payload's bounds, and comparing
/// every value for them costs as much as writing it).
pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
        .set_column_statistics_enabled(ColumnPath::from("value"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("_raw_value"), EnabledStatistics::None)
        .build()
}

/// Data files of one round and when their writing started.
struct Written {
    files: Vec<DataFile>,
    at: Instant,
}

/// Refuses a commit whose files were written half the orphan grace period ago or
/// earlier: past the grace period any partition's leader may delete them as orphans
/// (the other half is the margin for the commit itself and clock skew).
///
/// # Errors
/// [`TableError::Conflict`] when the files are too old to commit safely.
pub(crate) fn within_grace(written_at: Instant, grace: Duration) -> Result<(), TableError> {
    if written_at.elapsed() >= grace / 2 {
        return Err(TableError::Conflict(format!(
            "files written {:?} ago are too old to commit: half of table.orphan.grace.ms \
             ({grace:?}) has passed, and an orphan sweep may delete them",
            written_at.elapsed()
        )));
    }
    Ok(())
}

/// The table property naming the value format a table was created with.
const FORMAT_PROPERTY: &str = "silt.value.format";

/// The table property holding the `table.value.schema` a table was created with.
const SCHEMA_PROPERTY: &str = "silt.value.schema";

/// The table property naming the topic id a table was created for.
const TOPIC_ID_PROPERTY: &str = "silt.topic-id";

/// Refuses a table created for an earlier topic of the same name (deleted and created
/// again): its offsets are another log's.
fn check_topic_id(loaded: &LoadedTable, topic_id: &str) -> Result<(), TableError> {
    match loaded.table.metadata().properties().get(TOPIC_ID_PROPERTY) {
        Some(owner) if owner != topic_id => Err(TableError::InvalidSetting(format!(
            "the table at {} belongs to an earlier topic of this name (topic id {owner}, now \
             {topic_id}); move or delete it to export this topic",
            loaded.table.metadata().location()
        ))),
        _ => Ok(()),
    }
}

fn lag_of(topic: &str, partition: i32, state: &LagState, now: i64) -> ExportLag {
    let lag_offsets = (state.high_watermark - state.exported).max(0);
    ExportLag {
        topic: topic.to_string(),
        partition,
        exported_offset: state.exported,
        high_watermark: state.high_watermark,
        lag_offsets,
        lag_ms: if lag_offsets == 0 {
            0
        } else {
            (now - state.caught_up_at_ms).max(0)
        },
    }
}

/// The locations of every data file any snapshot of `loaded` names (in any entry, so a
/// sweep never deletes what a manifest mentions), with the manifests and manifest lists.
///
/// # Errors
/// Manifest list and manifest read failures.
pub async fn referenced_files(loaded: &LoadedTable) -> Result<HashSet<String>, TableError> {
    let all: HashSet<i64> = loaded
        .table
        .metadata()
        .snapshots()
        .map(|snapshot| snapshot.snapshot_id())
        .collect();
    loaded.named_by(&all, false).await
}

/// Every partition's range in the current snapshot of `loaded`.
pub fn covered_ranges(loaded: &LoadedTable) -> BTreeMap<i32, PartitionRange> {
    crate::summary::partition_ranges(&loaded.summary())
}

/// One Parquet file per day of `records` (sorted by offset), under
/// `data/partition=<p>/timestamp_day=<day>/`.
async fn write_files(
    loaded: &LoadedTable,
    partition: i32,
    records: &[ExportRecord],
) -> Result<Vec<DataFile>, TableError> {
    let metadata = loaded.table.metadata();
    let schema = Arc::clone(metadata.current_schema());
    let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
    let value_types: BTreeMap<String, ValueType> = value_columns(&schema).into_iter().collect();
    let spec = metadata.default_partition_spec();
    let mut by_day: BTreeMap<i32, Vec<&ExportRecord>> = BTreeMap::new();
    for record in records {
        by_day
            .entry(day_of(record.timestamp_ms))
            .or_default()
            .push(record);
    }
    let properties = writer_properties();
    let file_io = loaded.table.file_io().clone();
    let mut files = Vec::with_capacity(by_day.len());
    for (day, day_records) in by_day {
        let batch = to_record_batch(&arrow_schema, &value_types, &day_records)?;
        let partition_value =
            Struct::from_iter([Some(Literal::int(partition)), Some(Literal::date(day))]);
        let directory = spec.partition_to_path(&partition_value, Arc::clone(&schema));
        let first = day_records.first().map_or(0, |record| record.offset);
        let last = day_records.last().map_or(0, |record| record.offset);
        let location = format!(
            "{}/data/{directory}/{first:020}-{last:020}-{}.parquet",
            metadata.location(),
            uuid::Uuid::new_v4()
        );
        let mut writer = ParquetWriterBuilder::new(properties.clone(), Arc::clone(&schema))
            .build(file_io.new_output(&location)?)
            .await?;
        writer.write(&batch).await?;
        for builder in writer.close().await? {
            let mut builder = builder;
            files.push(
                builder
                    .content(DataContentType::Data)
                    .partition(partition_value.clone())
                    .partition_spec_id(spec.spec_id())
                    .build()
                    .map_err(|error| TableError::Schema(format!("data file entry: {error}")))?,
            );
        }
    }
    Ok(files)
}
