//! Tiered storage, crash safety of the copy path: SIGKILL while segments are
//! being uploaded, several times over, must leave neither metadata pointing at
//! missing objects (reads would fail) nor objects the metadata does not know
//! (orphans, duplicates), and every record stays readable exactly once.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set, else against
//! a local-directory store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use silt_tests::SiltOptions;
use silt_tests::kafka::{create_topic, producer};
use silt_tests::s3::{
    Payloads, SegmentObject, TierStore, consume_and_verify, ends_from_zero, expected_checksums,
    produce_payloads, wait_tiered,
};

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 3;
const SEGMENT_BYTES: &str = "262144";
const RECORDS: u64 = 12_000;
/// How many times the broker is killed while it uploads.
const KILLS: usize = 3;

/// Writes the broker's config file with the remote log manager's period.
fn write_config(path: &Path, task_interval_ms: u64) -> Result<()> {
    std::fs::write(
        path,
        format!("\"remote.log.manager.task.interval.ms\" = {task_interval_ms}\n"),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// The `.log` objects of the topic.
async fn log_objects(store: &TierStore) -> Result<Vec<SegmentObject>> {
    let mut objects = store.segment_objects(TOPIC).await?;
    objects.retain(|object| object.extension == "log");
    Ok(objects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiering_kill9_during_uploads_leaves_no_metadata_without_data() -> Result<()> {
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    eprintln!("tiering to {}", store.describe());
    // The upload period comes from a config file (flags beat it, so none is
    // given): first an hour, so that the whole topic is written before any
    // upload starts, then 200 ms.
    let config = work.path().join("silt.toml");
    write_config(&config, 3_600_000)?;
    let mut silt = store
        .apply(SiltOptions::new().flag("--config", config.display()))
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        &[
            ("remote.storage.enable", "true"),
            ("segment.bytes", SEGMENT_BYTES),
            ("local.retention.ms", "1"),
            ("retention.ms", "-1"),
        ],
    )
    .await?;
    let payloads = Payloads {
        min_value_bytes: 1024,
        max_value_bytes: 3072,
    };
    let producer = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "10"),
            // Batches must fit in a segment.
            ("batch.size", "65536"),
            ("compression.type", "none"),
        ],
    )?;
    let acked = tokio::time::timeout(
        Duration::from_secs(120),
        produce_payloads(
            &producer,
            TOPIC,
            PARTITIONS,
            0..RECORDS,
            payloads,
            |_| None,
            2000,
        ),
    )
    .await
    .context("producing timed out")??;
    drop(producer);
    let expected = expected_checksums(&acked, payloads);
    ensure!(
        log_objects(&store).await?.is_empty(),
        "segments were uploaded before the upload period was shortened"
    );

    write_config(&config, 200)?;
    silt.restart()?;
    let mut uploaded_before_kill = Vec::new();
    for kill in 0..KILLS {
        // Kill as soon as new objects show up: the manager is then in the middle
        // of a backlog of dozens of segments per partition.
        let seen = uploaded_before_kill.last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let count = loop {
            let count = log_objects(&store).await?.len();
            if count > seen {
                break count;
            }
            if Instant::now() > deadline {
                bail!("kill {kill}: no new .log object within 60 s ({seen} before)");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        silt.kill9()?;
        uploaded_before_kill.push(count);
        silt.start_again()?;
    }
    let total_segments = log_objects(&store).await?.len();
    eprintln!(
        ".log objects seen when killing: {uploaded_before_kill:?}; {total_segments} after the last restart"
    );

    wait_tiered(
        &silt,
        &store,
        TOPIC,
        PARTITIONS,
        2,
        Duration::from_secs(180),
    )
    .await?;
    eprintln!(
        "{} .log objects once the backlog drained",
        log_objects(&store).await?.len()
    );
    let abandoned = silt
        .log()
        .matches("cleaning up an abandoned remote segment")
        .count();
    eprintln!("abandoned uploads cleaned up after the kills: {abandoned}");

    // Every remote segment is whole: each upload id has its .log, .index,
    // .timeindex and leader-epoch checkpoint, and no base offset was stored twice.
    let objects = store.segment_objects(TOPIC).await?;
    let mut uploads: BTreeMap<(i32, String), (i64, BTreeSet<String>)> = BTreeMap::new();
    for object in &objects {
        let entry = uploads
            .entry((object.partition, object.segment_id.clone()))
            .or_insert_with(|| (object.base_offset, BTreeSet::new()));
        ensure!(
            entry.0 == object.base_offset,
            "upload {} has objects at base offsets {} and {}",
            object.segment_id,
            entry.0,
            object.base_offset
        );
        let _ = entry.1.insert(object.extension.clone());
    }
    let mut base_offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for ((partition, segment_id), (base_offset, extensions)) in &uploads {
        for needed in ["log", "index", "timeindex", "leader-epoch-checkpoint"] {
            ensure!(
                extensions.contains(needed),
                "partition {partition}: upload {segment_id} at {base_offset} has no .{needed} object (has {extensions:?})"
            );
        }
        base_offsets
            .entry(*partition)
            .or_default()
            .push(*base_offset);
    }
    for partition in 0..PARTITIONS {
        let mut offsets = base_offsets.remove(&partition).unwrap_or_default();
        offsets.sort_unstable();
        let distinct = offsets.iter().collect::<BTreeSet<_>>().len();
        ensure!(
            distinct == offsets.len(),
            "partition {partition}: several uploads of one base offset remain: {offsets:?}"
        );
        ensure!(
            offsets.first() == Some(&0),
            "partition {partition}: the first remote segment starts at {:?}, not 0",
            offsets.first()
        );
    }

    // Every record is served once, at the offset it was acknowledged at.
    let ends = ends_from_zero(&bootstrap, TOPIC, PARTITIONS)?;
    for (partition, end) in &ends {
        ensure!(
            *end == acked[partition].len() as i64,
            "partition {partition}: high watermark {end} after the kills, {} records acknowledged",
            acked[partition].len()
        );
    }
    let reads =
        consume_and_verify(&bootstrap, TOPIC, &ends, payloads, Duration::from_secs(120)).await?;
    for (partition, read) in &reads {
        ensure!(
            read.indices == acked[partition],
            "partition {partition}: records sit at other offsets than acknowledged"
        );
        ensure!(
            read.checksum == expected[partition],
            "partition {partition}: read {:?}, produced {:?}",
            read.checksum,
            expected[partition]
        );
    }
    // Free the shared S3 server's disk (kept when the test fails, to look at).
    let _deleted = store.remove_all().await?;
    Ok(())
}
