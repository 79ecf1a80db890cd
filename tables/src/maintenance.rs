//! Table maintenance, run for each table by the leader of the topic's partition 0:
//!
//! - **retention**: per Kafka partition, the files whose newest record is older than
//!   `table.retention.ms` (else `retention.ms`) are removed, as a prefix in offset
//!   order (as Kafka deletes whole segments from the log start), and the partition's
//!   `start` in the summary moves past them;
//! - **compaction**: the small files of one Kafka partition and day (a slow topic
//!   commits one per round) are merged into files of up to
//!   `table.compaction.target.file.bytes`, sorted by offset, once there are
//!   `table.compaction.min.files` of them;
//!
//! both as one snapshot written here (Iceberg's `delete` or `replace` operation; the
//! `iceberg` crate has no action for either) whose single manifest lists every live
//! file, which also merges the manifests the appends left one per commit;
//!
//! - **snapshot expiry**: snapshots older than `table.snapshot.retention.ms` go (the
//!   current one always stays), then the manifest lists, manifests and data files only
//!   they named are deleted, and metadata files older than the last 100 versions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use iceberg::scan::FileScanTask;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, Datum, Literal, ManifestEntry, ManifestListWriter,
    ManifestWriterBuilder, Operation, PrimitiveLiteral, Snapshot, SnapshotReference,
    SnapshotRetention, Struct, Summary,
};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use iceberg::{TableRequirement, TableUpdate};
use object_store::ObjectStoreExt;
use tracing::info;

use crate::TableError;
use crate::catalog::{LoadedTable, TableStore};
use crate::exporter::{run_export, within_grace, writer_properties};
use crate::summary::{PartitionRange, partition_ranges};
use silt_broker::replica_manager::now_ms;

/// Maintenance settings (broker configs).
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// `table.maintenance.interval.ms`: time between two maintenance runs of a table.
    pub interval: Duration,
    /// `table.compaction.target.file.bytes`: merged files grow up to this size, and
    /// only smaller files are merged.
    pub target_file_bytes: u64,
    /// `table.compaction.min.files`: merge a partition's day once it has this many
    /// small files.
    pub min_files: usize,
    /// `table.snapshot.retention.ms`: snapshots older than this are expired.
    pub snapshot_retention: Duration,
    /// `table.snapshot.retention.count`: snapshots beyond this many (the newest,
    /// the current one included) are expired whatever their age. Every commit
    /// rewrites the metadata file, which lists every snapshot: with frequent commits
    /// an age limit alone lets it grow until each commit costs more than the export.
    pub snapshot_max_count: usize,
}

impl Default for MaintenanceConfig {
    fn default() -> MaintenanceConfig {
        MaintenanceConfig {
            interval: Duration::from_secs(60),
            target_file_bytes: 128 * 1024 * 1024,
            min_files: 10,
            snapshot_retention: Duration::from_secs(3600),
            snapshot_max_count: 500,
        }
    }
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Files removed by retention.
    pub expired_files: usize,
    /// Small files merged.
    pub merged_files: usize,
    /// Files the merges wrote.
    pub written_files: usize,
    /// Snapshots expired.
    pub expired_snapshots: usize,
    /// Objects deleted (data files, manifests, manifest lists, metadata files).
    pub deleted_objects: usize,
}

/// A live data file of the current snapshot, with what its manifest entry says.
#[derive(Debug, Clone)]
struct LiveFile {
    entry: ManifestEntry,
    partition: i32,
    day: i32,
    first_offset: i64,
    last_offset: i64,
    /// Newest record timestamp (µs).
    max_timestamp_us: i64,
}

fn datum_i64(datum: &Datum) -> Option<i64> {
    match datum.literal() {
        PrimitiveLiteral::Long(value) => Some(*value),
        PrimitiveLiteral::Int(value) => Some(i64::from(*value)),
        _ => None,
    }
}

fn literal_i32(literal: Option<&Literal>) -> Option<i32> {
    match literal? {
        Literal::Primitive(PrimitiveLiteral::Int(value)) => Some(*value),
        _ => None,
    }
}

/// The live data files of `loaded`'s current snapshot.
async fn live_files(loaded: &LoadedTable) -> Result<Vec<LiveFile>, TableError> {
    let metadata = loaded.table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    let schema = metadata.current_schema();
    let field_id = |name: &str| {
        schema
            .field_by_name(name)
            .map(|field| field.id)
            .ok_or_else(|| TableError::Schema(format!("the table has no {name} column")))
    };
    let (offset_id, timestamp_id) = (field_id("offset")?, field_id("timestamp")?);
    let file_io = loaded.table.file_io();
    let list = loaded.manifest_list(snapshot).await?;
    let mut files = Vec::new();
    for manifest_file in list.entries() {
        let manifest = manifest_file.load_manifest(file_io).await?;
        for entry in manifest.entries() {
            if !entry.is_alive() || entry.content_type() != DataContentType::Data {
                continue;
            }
            let data_file = entry.data_file();
            let fields = data_file.partition().fields();
            let bound = |bounds: &HashMap<i32, Datum>, id: i32| bounds.get(&id).and_then(datum_i64);
            let (Some(partition), Some(day), Some(first), Some(last), Some(max_timestamp)) = (
                literal_i32(fields.first().and_then(Option::as_ref)),
                literal_i32(fields.get(1).and_then(Option::as_ref)),
                bound(data_file.lower_bounds(), offset_id),
                bound(data_file.upper_bounds(), offset_id),
                bound(data_file.upper_bounds(), timestamp_id),
            ) else {
                return Err(TableError::Schema(format!(
                    "data file {} lacks its partition or offset and timestamp bounds",
                    data_file.file_path()
                )));
            };
            files.push(LiveFile {
                entry: entry.as_ref().clone(),
                partition,
                day,
                first_offset: first,
                last_offset: last,
                max_timestamp_us: max_timestamp,
            });
        }
    }
    files.sort_by_key(|file| (file.partition, file.first_offset));
    Ok(files)
}

/// The files retention removes: per partition, the longest prefix in offset order of
/// files older than the cutoff whose offsets all come before every kept file's.
fn expired(files: &[LiveFile], cutoff_ms_by_partition: &BTreeMap<i32, i64>) -> HashSet<String> {
    let mut removed = HashSet::new();
    let mut by_partition: BTreeMap<i32, Vec<&LiveFile>> = BTreeMap::new();
    for file in files {
        by_partition.entry(file.partition).or_default().push(file);
    }
    for (partition, files) in by_partition {
        let Some(cutoff_ms) = cutoff_ms_by_partition.get(&partition) else {
            continue;
        };
        let mut prefix = files
            .iter()
            .take_while(|file| file.max_timestamp_us < cutoff_ms.saturating_mul(1000))
            .count();
        // Day files of one commit interleave in offsets: shrink the prefix until the
        // kept files start after every removed one.
        loop {
            let first_kept = files[prefix..].iter().map(|file| file.first_offset).min();
            let fits = |file: &&&LiveFile| first_kept.is_none_or(|first| file.last_offset < first);
            let fitting = files[..prefix].iter().take_while(|file| fits(file)).count();
            if fitting == prefix {
                break;
            }
            prefix = fitting;
        }
        removed.extend(
            files[..prefix]
                .iter()
                .map(|file| file.entry.file_path().to_string()),
        );
    }
    removed
}

/// Rows of a merged file at most: Parquet's default row group size. Files of very
/// compressible records reach it long before the target size, and a merge's CPU
/// goes with its rows, not its bytes.
const MAX_MERGED_RECORDS: u64 = 1 << 20;

/// Groups of small files to merge: per partition and day, in offset order, bins of
/// files smaller than the target (in bytes and in [`MAX_MERGED_RECORDS`]) whose sizes
/// and rows add up to at most that.
fn merge_bins<'a>(
    files: &'a [LiveFile],
    removed: &HashSet<String>,
    config: &MaintenanceConfig,
) -> Vec<Vec<&'a LiveFile>> {
    let mut groups: BTreeMap<(i32, i32), Vec<&LiveFile>> = BTreeMap::new();
    for file in files {
        if !removed.contains(file.entry.file_path())
            && file.entry.file_size_in_bytes() < config.target_file_bytes
            && file.entry.record_count() < MAX_MERGED_RECORDS
        {
            groups
                .entry((file.partition, file.day))
                .or_default()
                .push(file);
        }
    }
    let mut bins = Vec::new();
    for (_, group) in groups {
        if group.len() < config.min_files {
            continue;
        }
        let mut bin: Vec<&LiveFile> = Vec::new();
        let (mut bytes, mut records) = (0, 0);
        for file in group {
            let (size, rows) = (file.entry.file_size_in_bytes(), file.entry.record_count());
            if !bin.is_empty()
                && (bytes + size > config.target_file_bytes || records + rows > MAX_MERGED_RECORDS)
            {
                bins.push(std::mem::take(&mut bin));
                (bytes, records) = (0, 0);
            }
            bin.push(file);
            bytes += size;
            records += rows;
        }
        bins.push(bin);
    }
    bins.retain(|bin| bin.len() > 1);
    // One merge per run: a run's CPU is taken from the export next to it, and the
    // other bins are merged by the next runs.
    bins.truncate(1);
    bins
}

/// Runs retention and compaction on `loaded` as one snapshot, then expires old
/// snapshots. `retention_ms` is the table's retention (-1 keeps everything).
///
/// # Errors
/// [`TableError::Conflict`] when another commit came first (nothing of this run's
/// rewrite is in the table; its files are deleted), others for failed reads and writes.
pub async fn maintain(
    tables: &TableStore,
    loaded: LoadedTable,
    retention_ms: i64,
    now_ms: i64,
    config: &MaintenanceConfig,
    orphan_grace: Duration,
) -> Result<MaintenanceStats, TableError> {
    let mut stats = MaintenanceStats::default();
    let files = live_files(&loaded).await?;
    let ranges = partition_ranges(&loaded.summary());
    let cutoffs: BTreeMap<i32, i64> = if retention_ms < 0 {
        BTreeMap::new()
    } else {
        ranges
            .keys()
            .map(|partition| (*partition, now_ms.saturating_sub(retention_ms)))
            .collect()
    };
    let removed = expired(&files, &cutoffs);
    let bins = merge_bins(&files, &removed, config);
    let loaded = if removed.is_empty() && bins.is_empty() {
        loaded
    } else {
        stats.expired_files = removed.len();
        stats.merged_files = bins.iter().map(Vec::len).sum();
        stats.written_files = bins.len();
        rewrite(tables, &loaded, &files, &removed, &bins, orphan_grace).await?
    };
    // Expiry decides again on the newest version when an export commit came first.
    let topic = loaded.table.identifier().name().to_string();
    let mut loaded = loaded;
    let mut attempts = 0;
    let (expired_snapshots, deleted) = loop {
        match expire_snapshots(tables, loaded, now_ms, config).await {
            Err(TableError::Conflict(_)) if attempts < 10 => {
                attempts += 1;
                loaded = tables
                    .load(&topic)
                    .await?
                    .ok_or_else(|| TableError::Conflict("the table is gone".to_string()))?;
            }
            other => break other?,
        }
    };
    stats.expired_snapshots = expired_snapshots;
    stats.deleted_objects = deleted;
    Ok(stats)
}

/// Writes the merged files and commits the snapshot that drops `removed` and the
/// merged files and adds the merges.
async fn rewrite(
    tables: &TableStore,
    loaded: &LoadedTable,
    files: &[LiveFile],
    removed: &HashSet<String>,
    bins: &[Vec<&LiveFile>],
    orphan_grace: Duration,
) -> Result<LoadedTable, TableError> {
    let written_at = std::time::Instant::now();
    let mut written: Vec<(DataFile, Vec<&LiveFile>)> = Vec::new();
    for bin in bins {
        // Reading, sorting and encoding is CPU work: off the runtime, at a lower priority.
        let handle = tokio::runtime::Handle::current();
        let (table, files): (LoadedTable, Vec<LiveFile>) = (
            loaded.clone(),
            bin.iter().map(|file| (*file).clone()).collect(),
        );
        let merged = run_export(move || handle.block_on(merge(&table, &files)))
            .await
            .map_err(TableError::from)
            .and_then(|merged| merged);
        match merged {
            Ok(file) => written.push((file, bin.clone())),
            Err(error) => {
                delete_data_files(tables, written.iter().map(|(file, _)| file)).await;
                return Err(error);
            }
        }
    }
    let result = commit_rebasing(
        tables,
        loaded,
        files,
        removed,
        &written,
        written_at,
        orphan_grace,
    )
    .await;
    if result.is_err() {
        delete_data_files(tables, written.iter().map(|(file, _)| file)).await;
    }
    result
}

/// Commits a rewrite on `loaded`, or, when commits came in between (the exporter
/// appends while maintenance merges), on the newest version as long as every file
/// the rewrite drops is still live there: appends are kept, and a rewrite is only
/// lost to another rewrite.
///
/// # Errors
/// [`TableError::Conflict`] when a file the rewrite drops is gone, the commits keep
/// racing, or half of `orphan_grace` passed since the files were written; others as
/// [`commit_rewrite`].
async fn commit_rebasing(
    tables: &TableStore,
    loaded: &LoadedTable,
    files: &[LiveFile],
    removed: &HashSet<String>,
    written: &[(DataFile, Vec<&LiveFile>)],
    written_at: std::time::Instant,
    orphan_grace: Duration,
) -> Result<LoadedTable, TableError> {
    const ATTEMPTS: usize = 10;
    let topic = loaded.table.identifier().name().to_string();
    let dropped: Vec<&str> = removed
        .iter()
        .map(String::as_str)
        .chain(
            written
                .iter()
                .flat_map(|(_, bin)| bin.iter().map(|file| file.entry.file_path())),
        )
        .collect();
    let mut rebased: Option<(LoadedTable, Vec<LiveFile>)> = None;
    for attempt in 1..=ATTEMPTS {
        within_grace(written_at, orphan_grace)?;
        let (base, live) = match &rebased {
            Some((base, live)) => (base, live.as_slice()),
            None => (loaded, files),
        };
        let current = base
            .table
            .metadata()
            .current_snapshot()
            .ok_or_else(|| TableError::Conflict("the table has no snapshot".to_string()))?;
        let reason = match commit_rewrite(tables, base, current, live, removed, written).await {
            Err(TableError::Conflict(reason)) if attempt < ATTEMPTS => reason,
            other => return other,
        };
        let newest = tables
            .load(&topic)
            .await?
            .ok_or_else(|| TableError::Conflict(format!("the table is gone ({reason})")))?;
        let newest_files = live_files(&newest).await?;
        let live_now: HashSet<&str> = newest_files
            .iter()
            .map(|file| file.entry.file_path())
            .collect();
        if let Some(gone) = dropped.iter().find(|path| !live_now.contains(**path)) {
            return Err(TableError::Conflict(format!(
                "{gone} was dropped by another commit"
            )));
        }
        rebased = Some((newest, newest_files));
    }
    Err(TableError::Conflict(
        "commits kept coming in between".to_string(),
    ))
}

async fn delete_data_files<'a>(tables: &TableStore, files: impl Iterator<Item = &'a DataFile>) {
    for file in files {
        if let Ok(path) = tables.storage().path(file.file_path()) {
            let _ = tables.store().delete(&path).await;
        }
    }
}

/// Reads `bin` (files of one partition and day) in the current schema and writes it
/// back as one file sorted by offset.
async fn merge(loaded: &LoadedTable, bin: &[LiveFile]) -> Result<DataFile, TableError> {
    let metadata = loaded.table.metadata();
    let schema = Arc::clone(metadata.current_schema());
    let spec = Arc::clone(metadata.default_partition_spec());
    let field_ids: Vec<i32> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|field| field.id)
        .collect();
    let tasks: Vec<iceberg::Result<FileScanTask>> = bin
        .iter()
        .map(|file| {
            let data_file = file.entry.data_file();
            Ok(FileScanTask {
                file_size_in_bytes: data_file.file_size_in_bytes(),
                start: 0,
                length: data_file.file_size_in_bytes(),
                record_count: Some(data_file.record_count()),
                data_file_path: data_file.file_path().to_string(),
                data_file_format: DataFileFormat::Parquet,
                schema: Arc::clone(&schema),
                project_field_ids: field_ids.clone(),
                predicate: None,
                deletes: Vec::new(),
                // Without them the reader takes every column from the file (with them,
                // identity partition columns come back run-end encoded).
                partition: None,
                partition_spec: None,
                name_mapping: None,
                case_sensitive: true,
            })
        })
        .collect();
    let batches: Vec<RecordBatch> = loaded
        .table
        .reader_builder()
        .build()
        .read(Box::pin(futures::stream::iter(tasks)))?
        .stream()
        .try_collect()
        .await?;
    let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
    let batches: Vec<RecordBatch> = batches
        .into_iter()
        .map(|batch| batch.with_schema(Arc::clone(&arrow_schema)))
        .collect::<Result<_, _>>()?;
    let merged = arrow_select::concat::concat_batches(&arrow_schema, &batches)?;
    let offsets = merged
        .column_by_name("offset")
        .ok_or_else(|| TableError::Schema("merged rows lack offsets".to_string()))?;
    let order = arrow_ord::sort::sort_to_indices(offsets, None, None)?;
    let sorted = arrow_select::take::take_record_batch(&merged, &order)?;
    let first = bin.first().map_or(0, |file| file.first_offset);
    let last = bin
        .iter()
        .map(|file| file.last_offset)
        .max()
        .unwrap_or(first);
    let partition_value = bin
        .first()
        .map(|file| file.entry.data_file().partition().clone())
        .unwrap_or_else(Struct::empty);
    let directory = spec.partition_to_path(&partition_value, Arc::clone(&schema));
    let location = format!(
        "{}/data/{directory}/{first:020}-{last:020}-{}.parquet",
        metadata.location(),
        uuid::Uuid::new_v4()
    );
    let properties = writer_properties();
    let mut writer = ParquetWriterBuilder::new(properties, Arc::clone(&schema))
        .build(loaded.table.file_io().new_output(&location)?)
        .await?;
    writer.write(&sorted).await?;
    let mut builders = writer.close().await?;
    let mut builder = builders
        .pop()
        .ok_or_else(|| TableError::Schema("a merge wrote no file".to_string()))?;
    builder
        .content(DataContentType::Data)
        .partition(partition_value)
        .partition_spec_id(spec.spec_id())
        .build()
        .map_err(|error| TableError::Schema(format!("merged data file entry: {error}")))
}

async fn commit_rewrite(
    tables: &TableStore,
    loaded: &LoadedTable,
    current: &Snapshot,
    files: &[LiveFile],
    removed: &HashSet<String>,
    written: &[(DataFile, Vec<&LiveFile>)],
) -> Result<LoadedTable, TableError> {
    let metadata = loaded.table.metadata();
    let schema = Arc::clone(metadata.current_schema());
    let spec = metadata.default_partition_spec().as_ref().clone();
    let snapshot_id = loop {
        let candidate = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
        if metadata.snapshot_by_id(candidate).is_none() {
            break candidate;
        }
    };
    let sequence_number = metadata.next_sequence_number();
    let merged: HashSet<&str> = written
        .iter()
        .flat_map(|(_, bin)| bin.iter().map(|file| file.entry.file_path()))
        .collect();
    let file_io = loaded.table.file_io();
    let commit_id = uuid::Uuid::new_v4();
    let manifest_location = format!("{}/metadata/{commit_id}-m0.avro", metadata.location());
    let mut manifest = ManifestWriterBuilder::new(
        file_io.new_output(&manifest_location)?,
        Some(snapshot_id),
        Arc::clone(&schema),
        spec,
    )
    .build_v2_data();
    let mut removed_rows: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut deleted_files, mut deleted_records) = (0u64, 0u64);
    for file in files {
        let entry = &file.entry;
        let data_sequence = entry.sequence_number.unwrap_or(0);
        let path = entry.file_path();
        if removed.contains(path) || merged.contains(path) {
            manifest.add_delete_file(
                entry.data_file().clone(),
                data_sequence,
                entry.file_sequence_number,
            )?;
            deleted_files += 1;
            deleted_records += entry.record_count();
            if removed.contains(path) {
                *removed_rows.entry(file.partition).or_default() += entry.record_count() as i64;
            }
        } else {
            manifest.add_existing_file(
                entry.data_file().clone(),
                entry.snapshot_id.unwrap_or(current.snapshot_id()),
                data_sequence,
                entry.file_sequence_number,
            )?;
        }
    }
    let mut added_records = 0;
    for (file, _) in written {
        added_records += file.record_count();
        manifest.add_file(file.clone(), sequence_number)?;
    }
    let manifest_file = manifest.write_manifest_file().await?;
    let list_location = format!(
        "{}/metadata/snap-{snapshot_id}-0-{commit_id}.avro",
        metadata.location()
    );
    let mut list = ManifestListWriter::v2(
        file_io.new_output(&list_location)?.writer().await?,
        snapshot_id,
        Some(current.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(std::iter::once(manifest_file))?;
    list.close().await?;

    // Retention moves a partition's start past the removed files; merging changes no range.
    let previous = loaded.summary();
    let mut properties: HashMap<String, String> = previous
        .iter()
        .filter(|(key, _)| key.starts_with("silt.") && !key.starts_with("silt.added."))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    for (partition, range) in partition_ranges(&previous) {
        let Some(rows) = removed_rows.get(&partition) else {
            continue;
        };
        let start = files
            .iter()
            .filter(|file| file.partition == partition && !removed.contains(file.entry.file_path()))
            .map(|file| file.first_offset)
            .min()
            .unwrap_or(range.end);
        let kept = PartitionRange {
            start,
            end: range.end,
            records: range.records - rows,
        };
        properties.insert(
            format!("silt.partition.{partition}.start"),
            kept.start.to_string(),
        );
        properties.insert(
            format!("silt.partition.{partition}.records"),
            kept.records.to_string(),
        );
    }
    let total = |key: &str| {
        previous
            .get(key)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total_files = total("total-data-files") + written.len() as u64 - deleted_files;
    let total_records = total("total-records") + added_records - deleted_records;
    properties.extend([
        ("added-data-files".to_string(), written.len().to_string()),
        ("deleted-data-files".to_string(), deleted_files.to_string()),
        ("added-records".to_string(), added_records.to_string()),
        ("deleted-records".to_string(), deleted_records.to_string()),
        ("total-data-files".to_string(), total_files.to_string()),
        ("total-records".to_string(), total_records.to_string()),
        ("total-delete-files".to_string(), "0".to_string()),
        ("total-position-deletes".to_string(), "0".to_string()),
        ("total-equality-deletes".to_string(), "0".to_string()),
    ]);
    let operation = if removed.is_empty() {
        Operation::Replace
    } else {
        Operation::Delete
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(current.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms())
        .with_manifest_list(list_location)
        .with_summary(Summary {
            operation,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: "main".to_string(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ];
    let requirements = vec![TableRequirement::RefSnapshotIdMatch {
        r#ref: "main".to_string(),
        snapshot_id: Some(current.snapshot_id()),
    }];
    let committed = tables.commit_updates(loaded, requirements, updates).await?;
    info!(
        topic = loaded.table.identifier().name(),
        merged = merged.len(),
        written = written.len(),
        expired = removed.len(),
        "table files rewritten"
    );
    Ok(committed)
}

/// The snapshots (id, timestamp ms) to expire: those older than `cutoff_ms`, and all
/// but the `max_count` newest; never `current`.
fn snapshots_to_expire(
    snapshots: &[(i64, i64)],
    current: Option<i64>,
    cutoff_ms: i64,
    max_count: usize,
) -> HashSet<i64> {
    let mut others: Vec<(i64, i64)> = snapshots
        .iter()
        .copied()
        .filter(|(id, _)| Some(*id) != current)
        .collect();
    // Newest first; the current snapshot takes one of the `max_count` places.
    others.sort_by_key(|(id, timestamp_ms)| std::cmp::Reverse((*timestamp_ms, *id)));
    let kept_others = max_count.max(1) - 1;
    others
        .iter()
        .enumerate()
        .filter(|(index, (_, timestamp_ms))| *timestamp_ms < cutoff_ms || *index >= kept_others)
        .map(|(_, (id, _))| *id)
        .collect()
}

/// Expires snapshots by age and count (see [`snapshots_to_expire`]) and deletes what
/// only they named, and metadata files more than 100 versions old. Returns the
/// snapshots expired and the objects deleted.
async fn expire_snapshots(
    tables: &TableStore,
    loaded: LoadedTable,
    now_ms: i64,
    config: &MaintenanceConfig,
) -> Result<(usize, usize), TableError> {
    const METADATA_VERSIONS_KEPT: u64 = 100;
    let metadata = loaded.table.metadata();
    let current = metadata.current_snapshot_id();
    let retention_ms = i64::try_from(config.snapshot_retention.as_millis()).unwrap_or(i64::MAX);
    let snapshots: Vec<(i64, i64)> = metadata
        .snapshots()
        .map(|snapshot| (snapshot.snapshot_id(), snapshot.timestamp_ms()))
        .collect();
    let expiring = snapshots_to_expire(
        &snapshots,
        current,
        now_ms.saturating_sub(retention_ms),
        config.snapshot_max_count,
    );
    let mut deleted = 0;
    let topic = loaded.table.identifier().name().to_string();
    if !expiring.is_empty() {
        let kept: HashSet<i64> = metadata
            .snapshots()
            .map(|snapshot| snapshot.snapshot_id())
            .filter(|id| !expiring.contains(id))
            .collect();
        let still_named = loaded.named_by(&kept, true).await?;
        let only_expired: Vec<String> = loaded
            .named_by(&expiring, true)
            .await?
            .into_iter()
            .filter(|location| !still_named.contains(location))
            .collect();
        let requirements = vec![TableRequirement::RefSnapshotIdMatch {
            r#ref: "main".to_string(),
            snapshot_id: current,
        }];
        let updates = vec![TableUpdate::RemoveSnapshots {
            snapshot_ids: expiring.iter().copied().collect(),
        }];
        let _committed = tables
            .commit_updates(&loaded, requirements, updates)
            .await?;
        // Only once the snapshots are gone from the table may what they named go.
        for location in only_expired {
            let path = tables.storage().path(&location)?;
            match tables.store().delete(&path).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        info!(
            topic,
            snapshots = expiring.len(),
            deleted,
            "table snapshots expired"
        );
    }
    deleted += tables
        .delete_metadata_before(
            &topic,
            loaded.version.saturating_sub(METADATA_VERSIONS_KEPT),
        )
        .await?;
    Ok((expiring.len(), deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(partition: i32, first: i64, last: i64, max_timestamp_ms: i64) -> LiveFile {
        sized_file(partition, first, last, max_timestamp_ms, 100)
    }

    fn sized_file(
        partition: i32,
        first: i64,
        last: i64,
        max_timestamp_ms: i64,
        bytes: u64,
    ) -> LiveFile {
        let data_file = iceberg::spec::DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!("f-{partition}-{first}"))
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .record_count(u64::try_from(last - first + 1).unwrap())
            .file_size_in_bytes(bytes)
            .build()
            .unwrap();
        LiveFile {
            entry: ManifestEntry::builder()
                .status(iceberg::spec::ManifestStatus::Added)
                .snapshot_id(1)
                .sequence_number(1)
                .file_sequence_number(1)
                .data_file(data_file)
                .build(),
            partition,
            day: 0,
            first_offset: first,
            last_offset: last,
            max_timestamp_us: max_timestamp_ms * 1000,
        }
    }

    #[test]
    fn retention_removes_an_offset_prefix_only() {
        let files = vec![
            file(0, 0, 9, 100),
            file(0, 10, 19, 100),
            file(0, 20, 29, 900),
            file(0, 30, 39, 100),
            file(1, 0, 9, 900),
        ];
        let cutoffs = BTreeMap::from([(0, 500), (1, 500)]);
        let removed = expired(&files, &cutoffs);
        assert_eq!(
            removed,
            HashSet::from(["f-0-0".to_string(), "f-0-10".to_string()])
        );
        // Interleaved day files: the old file's offsets reach past a kept file's start.
        let files = vec![file(0, 0, 25, 100), file(0, 5, 9, 900)];
        assert!(expired(&files, &cutoffs).is_empty());
    }

    #[test]
    fn one_merge_per_run_of_small_files_bounded_in_bytes_and_rows() {
        let config = MaintenanceConfig {
            target_file_bytes: 1000,
            min_files: 3,
            ..MaintenanceConfig::default()
        };
        let none = HashSet::new();
        // Partition 0: four small files (the first bin takes three by size); partition
        // 1: two small files, under min_files; a file at the target is not small.
        let files = vec![
            sized_file(0, 0, 9, 0, 300),
            sized_file(0, 10, 19, 0, 300),
            sized_file(0, 20, 29, 0, 300),
            sized_file(0, 30, 39, 0, 300),
            sized_file(0, 40, 49, 0, 1000),
            sized_file(1, 0, 9, 0, 10),
            sized_file(1, 10, 19, 0, 10),
        ];
        let bins = merge_bins(&files, &none, &config);
        let paths: Vec<Vec<&str>> = bins
            .iter()
            .map(|bin| bin.iter().map(|file| file.entry.file_path()).collect())
            .collect();
        assert_eq!(paths, vec![vec!["f-0-0", "f-0-10", "f-0-20"]]);
        // Rows bound a bin too: tiny files of many rows each.
        let half = i64::try_from(MAX_MERGED_RECORDS / 2).unwrap();
        let files = vec![
            sized_file(0, 0, half - 2, 0, 10),
            sized_file(0, half, 2 * half - 2, 0, 10),
            sized_file(0, 2 * half, 3 * half - 2, 0, 10),
        ];
        let bins = merge_bins(&files, &none, &config);
        assert_eq!(bins.len(), 1);
        assert_eq!(bins[0].len(), 2);
    }

    #[test]
    fn snapshots_expire_by_age_and_beyond_the_count_never_the_current_one() {
        let snapshots = [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)];
        // By age: older than 250, but the current one (2) stays.
        assert_eq!(
            snapshots_to_expire(&snapshots, Some(2), 250, 100),
            HashSet::from([1])
        );
        // By count: the current one and the two newest others stay.
        assert_eq!(
            snapshots_to_expire(&snapshots, Some(1), 0, 3),
            HashSet::from([2, 3])
        );
        assert_eq!(
            snapshots_to_expire(&snapshots, Some(5), 0, 1),
            HashSet::from([1, 2, 3, 4])
        );
        assert!(snapshots_to_expire(&snapshots, Some(5), 0, 5).is_empty());
    }
}
