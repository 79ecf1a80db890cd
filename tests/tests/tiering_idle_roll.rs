//! A tiered partition that stops receiving records still reaches the object store:
//! its active segment is rolled after `segment.ms` of wall-clock time (Kafka rolls only
//! on the next append, so an idle partition's last records never tier) and uploaded.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set, else against a
//! local-directory store.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use silt_tests::kafka::{create_topic, produce_numbered, producer};
use silt_tests::s3::{TierStore, local_segments, segment_base_offset};
use silt_tests::{SiltOptions, SiltProcess};

const TOPIC: &str = "idle";
const RECORDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tiered_segment_is_rolled_and_uploaded_after_segment_ms() -> Result<()> {
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    let silt = SiltProcess::start_with(store.apply(
        // The default log.retention.check.interval.ms (5 minutes): idle rolls have
        // a loop of their own.
        SiltOptions::new().override_config("remote.log.manager.task.interval.ms", 200),
    ))?;
    create_topic(
        &silt.bootstrap(),
        TOPIC,
        1,
        &[("remote.storage.enable", "true"), ("segment.ms", "2000")],
    )
    .await?;
    let producer = producer(&silt.bootstrap(), &[("acks", "all")])?;
    let positions = produce_numbered(&producer, TOPIC, 0, RECORDS).await?;
    ensure!(positions.len() == RECORDS);
    let produced_at = Instant::now();

    // No more records: only the idle roll can seal the segment holding them.
    let deadline = produced_at + Duration::from_secs(60);
    loop {
        let uploaded: Vec<i64> = store
            .segment_objects(TOPIC)
            .await?
            .into_iter()
            .filter(|object| object.extension == "log")
            .map(|object| object.base_offset)
            .collect();
        if uploaded.contains(&0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the idle segment was not uploaded within 60 s; objects: {uploaded:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = produced_at.elapsed();
    ensure!(
        waited >= Duration::from_millis(1_500),
        "rolled after {waited:?}, before segment.ms (2 s) could pass"
    );
    let local: Vec<i64> = local_segments(&silt, TOPIC, 0)?
        .iter()
        .map(|path| segment_base_offset(path))
        .collect::<Result<_>>()?;
    ensure!(
        local.contains(&(RECORDS as i64)),
        "the new active segment starts after the last record: {local:?}"
    );
    eprintln!("idle segment uploaded {waited:?} after the last record");
    let _removed = store.remove_all().await?;
    Ok(())
}
