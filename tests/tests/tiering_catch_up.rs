//! Tiered storage, read path: once most of a topic has moved to object storage
//! and its local copies are gone, a new consumer group starting at offset 0
//! reads every record back, byte for byte and in offset order.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set (as exported
//! by `eval "$(minio-dev/start)"`), else against a local-directory store.
//!
//! The volume is `SILT_TIERING_TEST_BYTES` bytes of keys and values (default
//! 256 MiB in debug builds, 1 GiB in release builds); 1 GiB on a debug build
//! takes about 2 minutes on two cores:
//!
//! ```sh
//! SILT_TIERING_TEST_BYTES=1073741824 cargo nextest run -p silt-tests --test tiering_catch_up
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use silt_tests::SiltOptions;
use silt_tests::kafka::{create_topic, producer};
use silt_tests::s3::{
    Payloads, TierStore, consume_and_verify, ends_from_zero, expected_checksums, metric_samples,
    partition_metric, produce_payloads, scrape_metrics, wait_tiered,
};

const TOPIC: &str = "catchup";
const PARTITIONS: i32 = 3;
const SEGMENT_BYTES: u64 = 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Bytes of keys and values to produce: `SILT_TIERING_TEST_BYTES`, else 256 MiB
/// (debug builds) or 1 GiB (release builds).
fn test_bytes() -> Result<u64> {
    match std::env::var("SILT_TIERING_TEST_BYTES") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("SILT_TIERING_TEST_BYTES={text:?} is not a byte count")),
        Err(_) if cfg!(debug_assertions) => Ok(256 * MIB),
        Err(_) => Ok(1024 * MIB),
    }
}

/// A time limit for moving `bytes`: `base` plus one second per `mib_per_sec` MiB.
fn scaled(base: Duration, bytes: u64, mib_per_sec: u64) -> Duration {
    base + Duration::from_secs(bytes / (mib_per_sec * MIB))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiering_catch_up_reads_every_record_from_offset_zero() -> Result<()> {
    let volume = test_bytes()?;
    let local_objects = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&local_objects.path().join("objects"));
    eprintln!("tiering {} MiB to {}", volume / MIB, store.describe());
    let silt = store
        .apply(SiltOptions::new().flag("--remote-log-manager-task-interval-ms", 200))
        .start()?;
    let bootstrap = silt.bootstrap();
    let segment_bytes = SEGMENT_BYTES.to_string();
    create_topic(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        &[
            ("remote.storage.enable", "true"),
            ("segment.bytes", &segment_bytes),
            ("local.retention.ms", "1"),
            ("retention.ms", "-1"),
        ],
    )
    .await?;

    let payloads = Payloads {
        min_value_bytes: 2048,
        max_value_bytes: 6144,
    };
    let mut count = 0u64;
    let mut planned = 0u64;
    while planned < volume {
        planned += payloads.record_bytes(count);
        count += 1;
    }
    let producer = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("batch.size", "524288"),
            ("compression.type", "none"),
            ("message.timeout.ms", "120000"),
        ],
    )?;
    let started = Instant::now();
    let acked = tokio::time::timeout(
        scaled(Duration::from_secs(60), volume, 1),
        produce_payloads(
            &producer,
            TOPIC,
            PARTITIONS,
            0..count,
            payloads,
            |_| None,
            4000,
        ),
    )
    .await
    .context("producing timed out")??;
    eprintln!(
        "produced {count} records ({} MiB) in {:.1?}",
        planned / MIB,
        started.elapsed()
    );
    let mut acked_records = 0u64;
    for partition in 0..PARTITIONS {
        let offsets = acked.get(&partition).cloned().unwrap_or_default();
        let contiguous = offsets.keys().copied().eq(0..offsets.len() as i64);
        ensure!(
            contiguous,
            "partition {partition}: acknowledged offsets are not 0..{}",
            offsets.len()
        );
        acked_records += offsets.len() as u64;
    }
    ensure!(
        acked_records == count,
        "{acked_records} of {count} records acknowledged"
    );
    let expected = expected_checksums(&acked, payloads);

    // The local tier shrinks to the active segment (plus one just sealed) once
    // every sealed segment is uploaded.
    let started = Instant::now();
    wait_tiered(
        &silt,
        &store,
        TOPIC,
        PARTITIONS,
        2,
        scaled(Duration::from_secs(120), volume, 4),
    )
    .await?;
    eprintln!(
        "upload backlog drained {:.1?} after producing",
        started.elapsed()
    );
    let local_start = partition_metric(
        &scrape_metrics(&silt)?,
        "silt_partition_log_start_offset",
        TOPIC,
    );
    let ends = ends_from_zero(&bootstrap, TOPIC, PARTITIONS)?;
    let mut remote_records = 0i64;
    for (partition, end) in &ends {
        let acked_count = acked[partition].len() as i64;
        ensure!(
            *end == acked_count,
            "partition {partition}: high watermark {end}, {acked_count} records acknowledged"
        );
        let local_start = local_start.get(partition).copied().unwrap_or(0.0) as i64;
        // At most two segments' worth of records can still be local.
        let most_local_records = 2 * SEGMENT_BYTES as i64 / payloads.min_value_bytes as i64;
        ensure!(
            local_start > 0 && end - local_start <= most_local_records,
            "partition {partition}: local log starts at {local_start} of {end}; expected only the tail to be local"
        );
        remote_records += local_start;
    }

    let started = Instant::now();
    let reads = consume_and_verify(
        &bootstrap,
        TOPIC,
        &ends,
        payloads,
        scaled(Duration::from_secs(120), volume, 2),
    )
    .await?;
    eprintln!(
        "consumed {count} records from offset 0 in {:.1?}",
        started.elapsed()
    );
    for (partition, read) in &reads {
        ensure!(
            read.checksum == expected[partition],
            "partition {partition}: read {:?}, produced {:?}",
            read.checksum,
            expected[partition]
        );
        ensure!(
            read.indices == acked[partition],
            "partition {partition}: records sit at other offsets than acknowledged"
        );
    }
    // The records below the local log start offsets came from object storage.
    let fetched: f64 = metric_samples(&scrape_metrics(&silt)?, "silt_remote_fetched_bytes_total")
        .iter()
        .map(|(_, value)| value)
        .sum();
    let least_remote_bytes = remote_records as f64 * payloads.min_value_bytes as f64;
    ensure!(
        fetched >= least_remote_bytes,
        "silt_remote_fetched_bytes_total is {fetched}; the {remote_records} records below the local log start hold at least {least_remote_bytes} bytes"
    );
    // Free the shared S3 server's disk (kept when the test fails, to look at).
    let _deleted = store.remove_all().await?;
    Ok(())
}
