//! Two clusters never share an object-store prefix: the first cluster that tiers to a
//! prefix claims it (`cluster.json`), a second cluster started on it exits non-zero
//! naming both cluster ids and writes nothing there, and the owner starts again.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set, else against a
//! local-directory store.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use silt_tests::kafka::{create_topic, produce_numbered, producer};
use silt_tests::s3::TierStore;
use silt_tests::{SiltOptions, SiltProcess};

/// The cluster id a broker logged when it claimed or checked its prefix.
fn claimed_cluster_id(silt: &SiltProcess) -> Result<String> {
    let log = silt.log();
    let line = log
        .lines()
        .find(|line| line.contains("claimed the object store prefix"))
        .context("the first cluster logs its claim of the prefix")?;
    let id = line
        .split("cluster_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("the claim line names the cluster id")?;
    Ok(id.trim_matches('"').to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cluster_on_a_claimed_prefix_refuses_to_start() -> Result<()> {
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    eprintln!("tiering to {}", store.describe());

    let mut owner = SiltProcess::start_with(
        store.apply(SiltOptions::new().override_config("remote.log.manager.task.interval.ms", 500)),
    )?;
    let owner_id = claimed_cluster_id(&owner)?;
    let marker = store
        .list()
        .await?
        .into_iter()
        .find(|object| object.key == "cluster.json");
    ensure!(marker.is_some(), "cluster.json is written under the prefix");
    // Some data of the owner's in the archive.
    create_topic(
        &owner.bootstrap(),
        "archived",
        1,
        &[
            ("remote.storage.enable", "true"),
            ("segment.bytes", "16384"),
        ],
    )
    .await?;
    // Batches must fit in a segment.
    let first = producer(
        &owner.bootstrap(),
        &[("acks", "all"), ("batch.size", "8192")],
    )?;
    let _positions = produce_numbered(&first, "archived", 0, 5_000).await?;
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.segment_objects("archived").await?.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "no segment was tiered within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(owner.sigterm()?.success(), "the owner stops cleanly");
    // Listed once the owner stopped: its last round may still have uploaded.
    let before = store.list().await?;

    // Another cluster (a data dir of its own, so a new cluster id) on the same prefix.
    let mut intruder = SiltProcess::launch(store.apply(SiltOptions::new()))?;
    let status = intruder.wait_for_exit(Duration::from_secs(60))?;
    ensure!(
        !status.success(),
        "a second cluster must not start: {status}"
    );
    let log = intruder.log();
    ensure!(
        log.contains(&format!("belongs to cluster {owner_id}"))
            && log.contains("not to this cluster ("),
        "the error names the owner {owner_id} and this cluster:\n{}",
        intruder.log_tail()
    );
    let after = store.list().await?;
    ensure!(
        after == before,
        "the refused cluster wrote or deleted objects: {} before, {} after",
        before.len(),
        after.len()
    );

    // The owner starts again on its prefix and takes writes.
    owner.start_again()?;
    let again = producer(&owner.bootstrap(), &[("acks", "all")])?;
    let _positions = produce_numbered(&again, "archived", 2_000, 10).await?;
    let _removed = store.remove_all().await?;
    Ok(())
}
