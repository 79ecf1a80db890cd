//! `silt tables list|describe`: the Iceberg tables of topics, read from the object
//! store alone (no node needs to run).

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use silt_gateway::config::{BrokerConfig, ServeArgs};
use silt_tables::{TableStore, describe, root_uri};
use silt_tiering::open_object_store;

async fn open(settings: &ServeArgs) -> anyhow::Result<TableStore> {
    let config = BrokerConfig::load(settings)?;
    let (store, prefix) = open_object_store(&config.object_store).await?;
    Ok(TableStore::new(
        store,
        &prefix,
        &root_uri(&config.object_store.url),
    ))
}

fn rfc3339(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// `silt tables list`: every table with its version, files, rows and last commit.
pub(crate) async fn list(settings: &ServeArgs) -> anyhow::Result<()> {
    let tables = open(settings).await?;
    let topics = tables.list().await.context("listing the tables")?;
    out!(
        "{:<32} {:>8} {:>8} {:>12} {:>14}  {:<24}",
        "TOPIC",
        "VERSION",
        "FILES",
        "ROWS",
        "BYTES",
        "LAST COMMIT"
    );
    for topic in &topics {
        match tables.load(topic).await {
            Ok(Some(loaded)) => {
                let table = describe(&loaded);
                out!(
                    "{:<32} {:>8} {:>8} {:>12} {:>14}  {:<24}",
                    table.topic,
                    table.version,
                    table.data_files,
                    table.records,
                    table.bytes,
                    table.last_commit_ms.map_or("-".to_string(), rfc3339)
                );
            }
            Ok(None) => out!("{topic:<32} (no metadata)"),
            Err(error) => out!("{topic:<32} unreadable: {error}"),
        }
    }
    if topics.is_empty() {
        eprintln!("no tables: no topic has table.enable=true, or none exported yet");
    }
    Ok(())
}

/// `silt tables describe TOPIC`: location, columns, per-partition offset ranges and the
/// snapshots kept; `json` prints the same as JSON.
pub(crate) async fn show(settings: &ServeArgs, topic: &str, json: bool) -> anyhow::Result<()> {
    let tables = open(settings).await?;
    let loaded = tables
        .load(topic)
        .await
        .with_context(|| format!("reading the table of {topic}"))?
        .with_context(|| format!("topic {topic} has no table (table.enable=true exports one)"))?;
    let table = describe(&loaded);
    if json {
        out!("{}", serde_json::to_string_pretty(&table)?);
        return Ok(());
    }
    out!("Table: {}", table.topic);
    out!("Location: {}", table.location);
    out!(
        "Metadata: {}/metadata/v{}.metadata.json (Iceberg format v{})",
        table.location,
        table.version,
        table.format_version
    );
    out!(
        "Current snapshot: {} ({} files, {} rows, {} bytes, committed {})",
        table
            .current_snapshot_id
            .map_or("none".to_string(), |id| id.to_string()),
        table.data_files,
        table.records,
        table.bytes,
        table.last_commit_ms.map_or("-".to_string(), rfc3339)
    );
    out!("Columns:");
    for (name, column_type) in &table.columns {
        out!("  {name:<24} {column_type}");
    }
    out!("Offsets per partition ([start, end): every offset with a record is one row):");
    out!(
        "  {:>9} {:>14} {:>14} {:>12} {:>10}",
        "PARTITION",
        "START",
        "END",
        "ROWS",
        "ABSENT"
    );
    for (partition, range) in &table.partitions {
        out!(
            "  {:>9} {:>14} {:>14} {:>12} {:>10}",
            partition,
            range.start,
            range.end,
            range.records,
            range.absent()
        );
    }
    out!("Snapshots (oldest first):");
    for snapshot in &table.snapshots {
        let added = snapshot
            .added
            .map_or(String::new(), |(partition, start, end)| {
                format!("  partition {partition} offsets [{start}, {end})")
            });
        out!(
            "  {:<20} {}  {:<8} {:>10} rows{added}",
            snapshot.id,
            rfc3339(snapshot.timestamp_ms),
            snapshot.operation,
            snapshot.added_records
        );
    }
    Ok(())
}
