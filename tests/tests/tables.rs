//! Iceberg tables of topics (`table.enable=true`), read back by readers that know
//! nothing of Silt: pyiceberg, DuckDB (Parquet files and its Iceberg extension),
//! polars (`tests/tables/read_table.py`), and the `iceberg` crate from Rust. Each test
//! checks the table against the log: every record once, nothing else, the snapshot
//! summary's offset ranges equal to the partitions' high watermarks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow_array::{Array, Int32Array, Int64Array};
use futures::TryStreamExt;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use silt_tests::kafka::{Received, create_topic, produce_numbered, producer, read_all, watermarks};
use silt_tests::s3::TierStore;
use silt_tests::{SiltOptions, SiltProcess, flights_dataset, silt_bin, wait_until};

/// Runs `tests/tables/read_table.py` on the table of `topic` and parses its output.
fn read_table(store: &TierStore, topic: &str, extra: &[&str]) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tables/read_table.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg(table_uri(store, topic))
        .args(extra);
    if let TierStore::S3 { env, .. } = store {
        command
            .args(["--s3-endpoint", &env.endpoint])
            .args(["--s3-access-key-id", &env.access_key_id])
            .args(["--s3-secret-access-key", &env.secret_access_key]);
    }
    let output = command.output().context("running read_table.py")?;
    if !output.status.success() {
        bail!(
            "read_table.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("read_table.py output")
}

/// The table's location URI, as its metadata names it.
fn table_uri(store: &TierStore, topic: &str) -> String {
    match store {
        TierStore::S3 { env, prefix } => format!("s3://{}/{prefix}/tables/{topic}", env.bucket),
        TierStore::Local { dir } => format!("file://{}/tables/{topic}", dir.display()),
    }
}

/// Waits until the broker's exporter reports every partition of `topic` exported up
/// to its high watermark, which must be `ends`.
fn wait_exported(silt: &SiltProcess, topic: &str, ends: &[i64], timeout: Duration) -> Result<()> {
    wait_until("the table to catch up with the log", timeout, || {
        let (status, body) = silt.admin_get("/tables/lag")?;
        ensure!(status == 200, "GET /tables/lag: {status} {body}");
        let lags: Vec<serde_json::Value> = serde_json::from_str(&body)?;
        let exported: BTreeMap<i64, i64> = lags
            .iter()
            .filter(|lag| lag["topic"] == topic)
            .filter_map(|lag| Some((lag["partition"].as_i64()?, lag["exported_offset"].as_i64()?)))
            .collect();
        let done = ends
            .iter()
            .enumerate()
            .all(|(partition, end)| exported.get(&(partition as i64)) == Some(end));
        Ok(done.then_some(()))
    })
}

/// Checks that each reader saw, per partition, exactly the offsets `[0, end)` minus
/// none (`rows == distinct == end`), and that the summary names the same ranges.
fn check_exact(table: &serde_json::Value, ends: &[i64], readers: &[&str]) -> Result<()> {
    for reader in readers {
        let seen = &table[*reader];
        for (partition, end) in ends.iter().enumerate() {
            let got = &seen[partition.to_string()];
            if *end == 0 {
                ensure!(
                    got.is_null(),
                    "{reader}: partition {partition} should be empty: {got}"
                );
                continue;
            }
            ensure!(
                got["rows"] == *end && got["distinct_offsets"] == *end,
                "{reader}: partition {partition} has {got}, expected {end} offsets once each"
            );
            ensure!(
                got["min"] == 0 && got["max"] == end - 1,
                "{reader}: partition {partition}: {got}"
            );
        }
    }
    let summary = &table["summary"];
    for (partition, end) in ends.iter().enumerate() {
        if *end == 0 {
            continue;
        }
        let field = |name: &str| {
            summary[format!("silt.partition.{partition}.{name}")]
                .as_str()
                .map(str::to_string)
        };
        ensure!(
            field("start").as_deref() == Some("0") && field("end") == Some(end.to_string()),
            "summary range of partition {partition}: {summary}"
        );
        ensure!(
            field("records") == Some(end.to_string()),
            "summary records of partition {partition}: {summary}"
        );
    }
    Ok(())
}

/// A number the snapshot summary holds as a string.
fn summary_number(summary: &serde_json::Value, key: &str) -> Option<i64> {
    summary[key].as_str()?.parse().ok()
}

fn hex(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        None => serde_json::Value::Null,
        Some(bytes) => {
            serde_json::Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

/// Reads the table from Rust with the `iceberg` crate: `(partition, offset)` of every row.
async fn rust_scan(store: &TierStore, topic: &str) -> Result<Vec<(i32, i64)>> {
    let tables = table_store(store)?;
    let loaded = tables.load(topic).await?.context("no table")?;
    let batches: Vec<arrow_array::RecordBatch> = loaded
        .table
        .scan()
        .select(["partition", "offset"])
        .build()?
        .to_arrow()
        .await?
        .try_collect()
        .await?;
    let mut rows = Vec::new();
    for batch in batches {
        let partitions = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .context("partition column")?;
        let offsets = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("offset column")?;
        for row in 0..batch.num_rows() {
            rows.push((partitions.value(row), offsets.value(row)));
        }
    }
    rows.sort_unstable();
    Ok(rows)
}

/// The tables of `store`, read directly (no broker involved).
fn table_store(store: &TierStore) -> Result<silt_tables::TableStore> {
    Ok(match store {
        TierStore::S3 { env, prefix } => silt_tables::TableStore::new(
            env.object_store()?,
            &object_store::path::Path::from(prefix.as_str()),
            &format!("s3://{}", env.bucket),
        ),
        TierStore::Local { dir } => silt_tables::TableStore::new(
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?),
            &object_store::path::Path::default(),
            &format!("file://{}", dir.display()),
        ),
    })
}

/// Whether the table of `topic` ends before the log in some partition.
async fn behind(store: &TierStore, bootstrap: &str, topic: &str, partitions: i32) -> Result<bool> {
    let ends = ends_of(bootstrap, topic, partitions)?;
    let Some(loaded) = table_store(store)?.load(topic).await? else {
        return Ok(true);
    };
    let covered = silt_tables::exporter::covered_ranges(&loaded);
    Ok(ends.iter().enumerate().any(|(partition, end)| {
        covered
            .get(&(partition as i32))
            .is_none_or(|range| range.end < *end)
    }))
}

/// Objects under the table's `data/` that no snapshot of the table names (files of a
/// round that never committed, left behind).
async fn orphans(store: &TierStore, topic: &str) -> Result<Vec<String>> {
    let tables = table_store(store)?;
    let loaded = tables.load(topic).await?.context("no table")?;
    let named = silt_tables::exporter::referenced_files(&loaded).await?;
    let root = tables.table_location(topic);
    Ok(store
        .list()
        .await?
        .into_iter()
        .filter(|object| object.key.starts_with(&format!("tables/{topic}/data/")))
        .map(|object| {
            format!(
                "{root}/{}",
                object.key.trim_start_matches(&format!("tables/{topic}/"))
            )
        })
        .filter(|location| !named.contains(location))
        .collect())
}

/// A broker making small commits (hundreds for a backlog of megabytes), so that faults
/// land between a file's write and its commit, and sweeping orphans 6 s after they were
/// written (a commit must start within 3 s of its files' write).
fn small_commits() -> SiltOptions {
    SiltOptions::new()
        .flag("--table-export-interval-ms", 100)
        .flag("--table-export-max-bytes", 16_384)
        .flag("--table-orphan-grace-ms", 6_000)
}

/// An idempotent producer of small batches, so that the exporter's commits are small.
fn small_batch_producer(bootstrap: &str) -> Result<rdkafka::producer::FutureProducer> {
    producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("batch.size", "8192"),
        ],
    )
}

fn ends_of(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    Ok(watermarks(bootstrap, topic, partitions)?
        .into_iter()
        .map(|(_, high)| high)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_table_holds_every_record_once_with_keys_headers_and_tombstones() -> Result<()> {
    const TOPIC: &str = "raw-events";
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 3000;
    let work = tempfile::tempdir()?;
    let store = TierStore::Local {
        dir: work.path().join("objects"),
    };
    let silt = store
        .apply(SiltOptions::new().flag("--table-export-interval-ms", 200))
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS, &[("table.enable", "true")]).await?;
    let producer = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "5")])?;
    let mut sends = Vec::with_capacity(RECORDS);
    for index in 0..RECORDS {
        let key = format!("key-{}", index % 97);
        let value = format!("value-{index}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(format!("t{index}").as_bytes()),
            })
            .insert(Header {
                key: "trace",
                value: Some("again"),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        let mut record: FutureRecord<'_, String, String> = FutureRecord::to(TOPIC)
            .partition((index % PARTITIONS as usize) as i32)
            .headers(if index % 5 == 0 {
                OwnedHeaders::new()
            } else {
                headers
            });
        // Every 7th record has no key, every 11th is a tombstone.
        if index % 7 != 0 {
            record = record.key(&key);
        }
        if index % 11 != 0 {
            record = record.payload(&value);
        }
        sends.push(producer.send_result(record).map_err(|(error, _)| error)?);
    }
    for send in sends {
        send.await?.map_err(|(error, _)| error)?;
    }
    let ends = ends_of(&bootstrap, TOPIC, PARTITIONS)?;
    ensure!(ends.iter().sum::<i64>() == RECORDS as i64, "ends {ends:?}");
    wait_exported(&silt, TOPIC, &ends, Duration::from_secs(120))?;

    let table = read_table(&store, TOPIC, &["--rows"])?;
    check_exact(
        &table,
        &ends,
        &[
            "pyiceberg",
            "duckdb_parquet",
            "duckdb_iceberg",
            "datafusion",
        ],
    )?;
    for reader in ["polars", "pyarrow"] {
        ensure!(
            table[reader] == RECORDS,
            "{reader} counted {}",
            table[reader]
        );
    }

    // Row by row, the table equals what a Kafka consumer reads.
    let mut consumed: Vec<Received> = read_all(&bootstrap, TOPIC, PARTITIONS).await?;
    consumed.sort_by_key(|record| (record.partition, record.offset));
    let rows = table["rows"].as_array().context("rows")?;
    ensure!(
        rows.len() == consumed.len(),
        "{} rows for {} records",
        rows.len(),
        consumed.len()
    );
    for (row, record) in rows.iter().zip(&consumed) {
        let headers: Vec<serde_json::Value> = record
            .headers
            .iter()
            .map(|(key, value)| serde_json::json!([key, hex(value.as_deref())]))
            .collect();
        let expected = serde_json::json!({
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp,
            "key": hex(record.key.as_deref()),
            "value": hex(record.value.as_deref()),
            "headers": headers,
        });
        for field in [
            "partition",
            "offset",
            "timestamp_ms",
            "key",
            "value",
            "headers",
        ] {
            ensure!(
                row[field] == expected[field],
                "{field} of {}-{}: table {} log {}",
                record.partition,
                record.offset,
                row[field],
                expected[field]
            );
        }
    }
    ensure!(
        consumed.iter().any(|record| record.value.is_none())
            && consumed.iter().any(|record| record.key.is_none())
            && consumed.iter().any(|record| record.headers.len() == 3),
        "the topic should hold tombstones, null keys and repeated headers"
    );

    // The iceberg crate reads the same rows.
    let scanned = rust_scan(&store, TOPIC).await?;
    let expected: Vec<(i32, i64)> = consumed
        .iter()
        .map(|record| (record.partition, record.offset))
        .collect();
    ensure!(
        scanned == expected,
        "the iceberg crate read {} rows, expected {}",
        scanned.len(),
        expected.len()
    );
    drop(silt);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_table_types_values_and_keeps_records_that_do_not_fit() -> Result<()> {
    const TOPIC: &str = "json-events";
    let work = tempfile::tempdir()?;
    // minio-dev's S3 server when the suite has one, else a local directory.
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    eprintln!("tables in {}", store.describe());
    let silt = store
        .apply(SiltOptions::new().flag("--table-export-interval-ms", 200))
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(
        &bootstrap,
        TOPIC,
        1,
        &[
            ("table.enable", "true"),
            ("table.value.format", "json"),
            (
                "table.value.schema",
                "id:long,name:string,score:double,ok:boolean,offset:long",
            ),
        ],
    )
    .await?;
    let values: Vec<Option<&str>> = vec![
        Some(r#"{"id": 1, "name": "a", "score": 1.5, "ok": true, "offset": 10, "extra": 1}"#),
        Some(r#"{"id": 2, "name": null, "score": 2}"#),
        Some(r#"{"id": "three", "name": "c"}"#),
        Some("not json at all"),
        Some("[1, 2]"),
        None,
        Some(r#"{"id": 7}"#),
    ];
    let producer = producer(&bootstrap, &[("acks", "all")])?;
    for value in &values {
        let record: FutureRecord<'_, str, str> = FutureRecord::to(TOPIC).key("k");
        let record = match value {
            Some(value) => record.payload(*value),
            None => record,
        };
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)?;
    }
    let ends = ends_of(&bootstrap, TOPIC, 1)?;
    ensure!(ends == vec![values.len() as i64], "ends {ends:?}");
    wait_exported(&silt, TOPIC, &ends, Duration::from_secs(120))?;
    let table = read_table(&store, TOPIC, &["--rows"])?;
    let readers: &[&str] = match store {
        TierStore::Local { .. } => &[
            "pyiceberg",
            "duckdb_parquet",
            "duckdb_iceberg",
            "datafusion",
        ],
        TierStore::S3 { .. } => &["pyiceberg", "pyiceberg_sql"],
    };
    check_exact(&table, &ends, readers)?;
    let rows = table["rows"].as_array().context("rows")?;
    let columns = |offset: usize| &rows[offset]["columns"];
    ensure!(
        columns(0)
            == &serde_json::json!({"id": 1, "name": "a", "score": 1.5, "ok": true, "value_offset": 10}),
        "row 0: {}",
        rows[0]
    );
    ensure!(
        columns(1)["score"] == 2.0 && columns(1)["name"].is_null() && rows[1]["error"].is_null(),
        "row 1: {}",
        rows[1]
    );
    for (offset, expected_error) in [(2, "field \"id\""), (3, "not JSON"), (4, "array")] {
        let row = &rows[offset];
        let error = row["error"].as_str().unwrap_or_default();
        ensure!(
            error.contains(expected_error),
            "row {offset}: error {error:?}"
        );
        ensure!(
            row["raw_value"] == hex(values[offset].map(str::as_bytes)),
            "row {offset} keeps its value in _raw_value: {row}"
        );
        ensure!(columns(offset)["id"].is_null(), "row {offset}: {row}");
    }
    ensure!(
        rows[5]["raw_value"].is_null() && rows[5]["error"].is_null(),
        "a tombstone is a row without value columns: {}",
        rows[5]
    );
    ensure!(columns(6)["id"] == 7, "row 6: {}", rows[6]);
    drop(silt);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_export_leaves_no_duplicate_and_no_gap() -> Result<()> {
    const TOPIC: &str = "killed-export";
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 60_000;
    const KILLS: usize = 4;
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    eprintln!("tables in {}", store.describe());
    let mut silt = store.apply(small_commits()).start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let producer = small_batch_producer(&bootstrap)?;
    // A backlog first, then the table is turned on: the exporter has hundreds of small
    // commits to make, and each kill lands just after one of them, in the next round.
    let acked = produce_numbered(&producer, TOPIC, 0, RECORDS).await?.len();
    let ends = ends_of(&bootstrap, TOPIC, PARTITIONS)?;
    ensure!(
        ends.iter().sum::<i64>() == acked as i64,
        "{acked} records acknowledged, the log ends at {ends:?}"
    );
    silt.cli_ok(&[
        "topics",
        "alter-config",
        TOPIC,
        "--set",
        "table.enable=true",
    ])?;
    let tables = table_store(&store)?;
    let mut kills_while_behind = 0;
    let mut seen_version = 0;
    for kill in 0..KILLS {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let version = tables.load(TOPIC).await?.map_or(0, |loaded| loaded.version);
            if version > seen_version {
                seen_version = version;
                break;
            }
            ensure!(Instant::now() < deadline, "no table commit within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if behind(&store, &bootstrap, TOPIC, PARTITIONS).await? {
            kills_while_behind += 1;
        }
        silt.kill9()?;
        ensure!(!silt.is_running(), "silt still runs after SIGKILL {kill}");
        silt.start_again()?;
        ensure!(
            silt.is_running(),
            "silt did not come back after SIGKILL {kill}"
        );
    }
    ensure!(
        kills_while_behind == KILLS,
        "only {kills_while_behind} of {KILLS} kills landed while the table was behind"
    );
    let started = Instant::now();
    wait_exported(&silt, TOPIC, &ends, Duration::from_secs(240))?;
    ensure!(silt.is_running(), "silt stopped while exporting");
    eprintln!("caught up {:?} after the last kill", started.elapsed());
    // The sweep runs once per leadership; one more restart makes it look again.
    silt.restart()?;
    wait_exported(&silt, TOPIC, &ends, Duration::from_secs(60))?;
    let table = read_table(&store, TOPIC, &[])?;
    // Not duckdb_parquet: files merged by maintenance stay under data/ until the
    // snapshots naming them expire.
    let readers: &[&str] = match store {
        TierStore::Local { .. } => &["pyiceberg", "duckdb_iceberg"],
        TierStore::S3 { .. } => &["pyiceberg"],
    };
    check_exact(&table, &ends, readers)?;
    // A maintenance run may be between writing merged files and committing them.
    wait_until("no orphan under data/", Duration::from_secs(120), || {
        let runtime = tokio::runtime::Handle::current();
        let left = tokio::task::block_in_place(|| runtime.block_on(orphans(&store, TOPIC)))?;
        Ok(left.is_empty().then_some(()))
    })?;
    ensure!(silt.is_running(), "silt stopped");
    Ok(())
}

#[test]
fn flights_table_answers_like_the_csv() -> Result<()> {
    let Some(csv) = flights_dataset()? else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let store = TierStore::Local {
        dir: work.path().join("objects"),
    };
    let silt = store
        .apply(SiltOptions::new().flag("--table-export-interval-ms", 1000))
        .start()?;
    let output = Command::new(silt_bin()?)
        .arg("flights")
        .arg("--bootstrap")
        .arg(silt.bootstrap())
        .arg("--csv")
        .arg(&csv)
        .args(["--topic-config", "table.enable=true"])
        .args(["--topic-config", "table.value.format=json"])
        // The flights are from 2013: the default retention (retention.ms, 7 days)
        // would expire them from the table at once.
        .args(["--topic-config", "table.retention.ms=-1"])
        .args(["--timeout-secs", "600"])
        .output()
        .context("running silt flights")?;
    ensure!(
        output.status.success(),
        "silt flights failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ends = ends_of(&silt.bootstrap(), "flights", 6)?;
    ensure!(ends.iter().sum::<i64>() == 336_776, "ends {ends:?}");
    wait_exported(&silt, "flights", &ends, Duration::from_secs(600))?;
    let csv_arg = csv.display().to_string();
    let table = read_table(
        &store,
        "flights",
        &["--carriers", "--flights-csv", &csv_arg],
    )?;
    check_exact(
        &table,
        &ends,
        &[
            "pyiceberg",
            "duckdb_parquet",
            "duckdb_iceberg",
            "datafusion",
        ],
    )?;
    let from_csv = table["carriers_csv"]
        .as_object()
        .context("carriers from the CSV")?;
    ensure!(
        from_csv.len() == 16,
        "16 carriers in the CSV, got {}",
        from_csv.len()
    );
    for reader in ["carriers_duckdb", "carriers_pyiceberg"] {
        let got = table[reader]
            .as_object()
            .with_context(|| reader.to_string())?;
        ensure!(
            got.len() == from_csv.len(),
            "{reader}: {} carriers",
            got.len()
        );
        for (carrier, expected) in from_csv {
            let row = &got[carrier];
            ensure!(
                row[0] == expected[0],
                "{reader} {carrier}: count {} != {}",
                row[0],
                expected[0]
            );
            let (a, b) = (
                row[1].as_f64().unwrap_or(f64::NAN),
                expected[1].as_f64().unwrap_or(f64::NAN),
            );
            ensure!(
                (a - b).abs() < 1e-9,
                "{reader} {carrier}: avg(dep_delay) {a} != {b}"
            );
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&table["carriers_duckdb"])?
    );
    drop(silt);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_during_export_loses_nothing_and_leaves_no_orphan() -> Result<()> {
    const TOPIC: &str = "outage-export";
    const PARTITIONS: i32 = 2;
    const RECORDS: usize = 40_000;
    // Its own S3 server, to stop and start again.
    let mut server = silt_tests::s3::S3Server::start()?;
    let store = TierStore::s3(server.env().clone());
    let mut silt = store.apply(small_commits()).start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let producer = small_batch_producer(&bootstrap)?;
    let first = produce_numbered(&producer, TOPIC, 0, RECORDS / 2)
        .await?
        .len();
    silt.cli_ok(&[
        "topics",
        "alter-config",
        TOPIC,
        "--set",
        "table.enable=true",
    ])?;
    let tables = table_store(&store)?;
    wait_until("a first table commit", Duration::from_secs(60), || {
        let runtime = tokio::runtime::Handle::current();
        let loaded = tokio::task::block_in_place(|| runtime.block_on(tables.load(TOPIC)))?;
        Ok(loaded
            .is_some_and(|loaded| loaded.version >= 3)
            .then_some(()))
    })?;
    server.stop()?;
    // Producing goes on while the bucket is away: the log does not need it.
    let second = produce_numbered(&producer, TOPIC, first, RECORDS / 2)
        .await?
        .len();
    // Each object store call retries for a few seconds before a round gives up.
    wait_until("an export round to fail", Duration::from_secs(120), || {
        let metrics = silt_tests::s3::scrape_metrics(&silt)?;
        let failures: f64 =
            silt_tests::s3::metric_samples(&metrics, "silt_table_export_failures_total")
                .iter()
                .map(|(_, value)| value)
                .sum();
        Ok((failures > 0.0).then_some(()))
    })?;
    server.start_again()?;
    let ends = ends_of(&bootstrap, TOPIC, PARTITIONS)?;
    ensure!(
        ends.iter().sum::<i64>() == (first + second) as i64,
        "{} acknowledged, log ends {ends:?}",
        first + second
    );
    wait_exported(&silt, TOPIC, &ends, Duration::from_secs(180))?;
    // A round after the outage sweeps what failed rounds left behind.
    wait_until("the orphan sweep", Duration::from_secs(60), || {
        let runtime = tokio::runtime::Handle::current();
        let orphans = tokio::task::block_in_place(|| runtime.block_on(orphans(&store, TOPIC)))?;
        Ok(orphans.is_empty().then_some(()))
    })?;
    let table = read_table(&store, TOPIC, &[])?;
    check_exact(&table, &ends, &["pyiceberg"])?;
    ensure!(silt.is_running(), "silt stopped during the outage");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_merges_small_files_applies_retention_and_expires_snapshots() -> Result<()> {
    const TOPIC: &str = "maintained";
    const PARTITIONS: i32 = 2;
    const ROUNDS: usize = 12;
    const PER_ROUND: usize = 40;
    let work = tempfile::tempdir()?;
    let store = TierStore::Local {
        dir: work.path().join("objects"),
    };
    let silt = store
        .apply(
            SiltOptions::new()
                .flag("--table-export-interval-ms", 100)
                .flag("--table-maintenance-interval-ms", 300)
                .flag("--table-compaction-min-files", 4)
                .flag("--table-snapshot-retention-ms", 1000),
        )
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        &[
            ("table.enable", "true"),
            ("table.retention.ms", "86400000"),
            ("retention.ms", "-1"),
        ],
    )
    .await?;
    let producer = producer(&bootstrap, &[("acks", "all")])?;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let tables = table_store(&store)?;
    // Small commits: one round of records at a time, each exported before the next.
    // The first half is three days old, past the table's one-day retention.
    let mut old_per_partition = vec![0i64; PARTITIONS as usize];
    for round in 0..ROUNDS {
        let old = round < ROUNDS / 2;
        for index in 0..PER_ROUND {
            let partition = (index % PARTITIONS as usize) as i32;
            let timestamp = if old { now_ms - 3 * 86_400_000 } else { now_ms };
            let value = format!("round {round} record {index}");
            producer
                .send(
                    FutureRecord::<(), String>::to(TOPIC)
                        .partition(partition)
                        .timestamp(timestamp + index as i64)
                        .payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(error, _)| error)?;
            if old {
                old_per_partition[partition as usize] += 1;
            }
        }
        let ends = ends_of(&bootstrap, TOPIC, PARTITIONS)?;
        wait_exported(&silt, TOPIC, &ends, Duration::from_secs(60))?;
    }
    let ends = ends_of(&bootstrap, TOPIC, PARTITIONS)?;
    // Retention moved every partition's start past its old records; compaction left
    // fewer than `min.files` (4) per partition of the six recent rounds' files (one
    // merge per maintenance run); expiry left few snapshots and deleted the rest.
    let settled = wait_until("maintenance to settle", Duration::from_secs(120), || {
        let runtime = tokio::runtime::Handle::current();
        let loaded = tokio::task::block_in_place(|| runtime.block_on(tables.load(TOPIC)))?
            .context("no table")?;
        let ranges = silt_tables::exporter::covered_ranges(&loaded);
        let starts_moved = (0..PARTITIONS).all(|partition| {
            ranges.get(&partition).map(|range| range.start)
                == Some(old_per_partition[partition as usize])
        });
        let files: usize = loaded
            .summary()
            .get("total-data-files")
            .and_then(|count| count.parse().ok())
            .unwrap_or(usize::MAX);
        let snapshots = loaded.table.metadata().snapshots().len();
        // Merged-away files are gone too (the directory readers below list `data/`).
        let stored = tokio::task::block_in_place(|| runtime.block_on(store.list()))?
            .into_iter()
            .filter(|object| object.key.starts_with(&format!("tables/{TOPIC}/data/")))
            .count();
        Ok(
            (starts_moved && files <= 3 * PARTITIONS as usize && snapshots <= 3 && stored == files)
                .then_some(loaded),
        )
    })?;
    eprintln!(
        "settled at v{} with {} snapshots",
        settled.version,
        settled.table.metadata().snapshots().len()
    );
    let table = read_table(&store, TOPIC, &["--rows"])?;
    for (partition, end) in ends.iter().enumerate() {
        let start = old_per_partition[partition];
        let summary = &table["summary"];
        ensure!(
            summary_number(summary, &format!("silt.partition.{partition}.start")) == Some(start)
                && summary_number(summary, &format!("silt.partition.{partition}.records"))
                    == Some(end - start),
            "summary of partition {partition}: {summary}"
        );
        for reader in [
            "pyiceberg",
            "duckdb_iceberg",
            "duckdb_parquet",
            "datafusion",
        ] {
            let got = &table[reader][partition.to_string()];
            ensure!(
                got["rows"] == end - start
                    && got["distinct_offsets"] == end - start
                    && got["min"] == start
                    && got["max"] == end - 1,
                "{reader}: partition {partition} has {got}, expected offsets {start}..{end} once each"
            );
        }
    }
    // Rows stay sorted by offset within each merged file, and nothing old is left.
    let rows = table["rows"].as_array().context("rows")?;
    ensure!(
        rows.iter()
            .all(|row| row["timestamp_ms"].as_i64().unwrap_or(0) >= now_ms),
        "an expired record is still in the table"
    );
    drop(silt);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_a_deleted_topic_is_not_appended_to_by_its_successor() -> Result<()> {
    const TOPIC: &str = "reborn";
    let work = tempfile::tempdir()?;
    let store = TierStore::Local {
        dir: work.path().join("objects"),
    };
    let silt = store
        .apply(SiltOptions::new().flag("--table-export-interval-ms", 100))
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, TOPIC, 1, &[("table.enable", "true")]).await?;
    let producer = producer(&bootstrap, &[("acks", "all")])?;
    produce_numbered(&producer, TOPIC, 0, 10).await?;
    wait_exported(&silt, TOPIC, &[10], Duration::from_secs(60))?;
    let tables = table_store(&store)?;
    let before = tables.load(TOPIC).await?.context("no table")?.version;

    silt.cli_ok(&["topics", "delete", TOPIC])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    create_topic(&bootstrap, TOPIC, 1, &[("table.enable", "true")]).await?;
    produce_numbered(&producer, TOPIC, 0, 5).await?;
    // The new topic's offsets 0..5 are not the old table's: the exporter refuses, says
    // why, and leaves the table as it was.
    wait_until(
        "the exporter to refuse the old table",
        Duration::from_secs(60),
        || {
            Ok(silt
                .log()
                .contains("belongs to an earlier topic of this name")
                .then_some(()))
        },
    )?;
    let after = tables.load(TOPIC).await?.context("no table")?;
    ensure!(
        after.version == before,
        "the old table was committed to: v{before} -> v{}",
        after.version
    );
    let covered = silt_tables::exporter::covered_ranges(&after);
    ensure!(
        covered[&0].end == 10 && covered[&0].records == 10,
        "{covered:?}"
    );
    drop(silt);
    Ok(())
}

/// The object store a cluster's nodes share, for reading its tables.
fn cluster_store(cluster: &silt_tests::cluster::SiltCluster) -> Result<TierStore> {
    let flags = cluster.store_flags();
    let url = flags
        .iter()
        .find(|(flag, _)| flag == "--object-store")
        .map(|(_, value)| value.clone())
        .context("the cluster has no --object-store")?;
    Ok(match url.strip_prefix("s3://") {
        Some(location) => TierStore::S3 {
            env: silt_tests::s3::S3Env::from_env().context("an s3 store without SILT_TEST_S3_*")?,
            prefix: location
                .split_once('/')
                .map_or("", |(_, prefix)| prefix)
                .to_string(),
        },
        None => TierStore::Local {
            dir: std::path::PathBuf::from(url),
        },
    })
}

#[test]
fn leader_failover_during_export_leaves_no_duplicate_and_no_gap() -> Result<()> {
    const TOPIC: &str = "failover-export";
    const PARTITIONS: i32 = 3;
    // Enough that the table is still behind when the second leader is killed.
    const RECORDS: usize = 150_000;
    const FAILOVERS: usize = 2;
    const SETTLE: Duration = Duration::from_secs(60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut options = silt_tests::cluster::ClusterOptions::new(3);
    for (flag, value) in [
        ("--table-export-interval-ms", "100"),
        ("--table-export-max-bytes", "8192"),
        ("--table-orphan-grace-ms", "6000"),
    ] {
        options = options.flag(flag, value);
    }
    let mut cluster = options.start()?;
    let store = cluster_store(&cluster)?;
    eprintln!("tables in {}", store.describe());
    let bootstrap = cluster.bootstrap();
    runtime.block_on(silt_tests::kafka::create_replicated_topic(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
    ))?;
    let _states = cluster.wait_for_isr(TOPIC, 3, SETTLE)?;
    let producer = small_batch_producer(&bootstrap)?;
    // In halves: the client's queue holds 100,000 records.
    let mut acked = 0;
    for half in [0, RECORDS / 2] {
        acked += runtime
            .block_on(produce_numbered(&producer, TOPIC, half, RECORDS / 2))?
            .len();
    }
    let ends = ends_of(&bootstrap, TOPIC, PARTITIONS)?;
    ensure!(
        ends.iter().sum::<i64>() == acked as i64,
        "{acked} acknowledged, log ends {ends:?}"
    );
    // Turn the table on, then kill the leader of partition 0 just after a commit, twice:
    // the new leaders go on from the table.
    cluster.node(1)?.cli_ok(&[
        "topics",
        "alter-config",
        TOPIC,
        "--set",
        "table.enable=true",
    ])?;
    let tables = table_store(&store)?;
    let mut seen_version = 0;
    let mut kills_while_behind = 0;
    for failover in 0..FAILOVERS {
        let deadline = Instant::now() + SETTLE;
        loop {
            let version = runtime
                .block_on(tables.load(TOPIC))?
                .map_or(0, |loaded| loaded.version);
            if version > seen_version {
                seen_version = version;
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no table commit within {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if runtime.block_on(behind(&store, &bootstrap, TOPIC, PARTITIONS))? {
            kills_while_behind += 1;
        }
        let leader = cluster.wait_for_leader(TOPIC, 0, None, SETTLE)?;
        cluster.node_mut(leader)?.kill9()?;
        ensure!(
            !cluster.node_mut(leader)?.is_running(),
            "node {leader} survived SIGKILL"
        );
        let next = cluster.wait_for_leader(TOPIC, 0, Some(leader), SETTLE)?;
        eprintln!("failover {failover}: node {leader} killed, node {next} leads partition 0");
        cluster.node_mut(leader)?.start_again()?;
        let _states = cluster.wait_for_isr(TOPIC, 3, SETTLE)?;
    }
    ensure!(
        kills_while_behind == FAILOVERS,
        "only {kills_while_behind} of {FAILOVERS} kills landed while the table was behind"
    );
    wait_until(
        "the table to cover the log",
        Duration::from_secs(240),
        || Ok((!runtime.block_on(behind(&store, &bootstrap, TOPIC, PARTITIONS))?).then_some(())),
    )?;
    let table = read_table(&store, TOPIC, &[])?;
    check_exact(&table, &ends, &["pyiceberg"])?;
    wait_until("no orphan under data/", Duration::from_secs(120), || {
        Ok(runtime
            .block_on(orphans(&store, TOPIC))?
            .is_empty()
            .then_some(()))
    })?;
    for node_id in cluster.node_ids() {
        ensure!(
            cluster.node_mut(node_id)?.is_running(),
            "node {node_id} stopped"
        );
    }
    Ok(())
}
