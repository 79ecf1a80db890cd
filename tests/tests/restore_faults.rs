//! Restore points and restores under faults: no restore point is written while the
//! object store is down (and none that is damaged once it is back), and a restore
//! killed at any step (a torn pending file, SIGKILL while `silt serve` applies it)
//! finishes on the next run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::kafka::{
    ARCHIVED_TOPIC_CONFIGS, archiving_producer, base_consumer_in_group, create_topic,
    produce_numbered, read_all, watermarks,
};
use silt_tests::s3::{S3Server, TierStore};
use silt_tests::{SiltOptions, SiltProcess, silt_bin};

const TOPIC: &str = "ledger";
const PARTITIONS: i32 = 2;
const GROUP: &str = "auditors";

fn options(store: &TierStore) -> SiltOptions {
    store.apply(
        SiltOptions::new()
            .override_config("remote.log.manager.task.interval.ms", 300)
            .override_config("restore.point.interval.ms", 500)
            .override_config("log.retention.check.interval.ms", 300),
    )
}

/// (id, usable) of every restore point `silt restore-points list` prints.
fn restore_points(node: &SiltProcess) -> Result<Vec<(String, bool)>> {
    let output = node.run_with_settings(&["restore-points", "list"])?;
    ensure!(
        output.status.success(),
        "restore-points list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let id = line.split_whitespace().next()?;
            Some((id.to_string(), !line.contains("unusable")))
        })
        .collect())
}

/// A tiered topic with records in the bucket and a group that committed offsets.
async fn fill(silt: &SiltProcess) -> Result<Vec<i64>> {
    create_topic(
        &silt.bootstrap(),
        TOPIC,
        PARTITIONS,
        &ARCHIVED_TOPIC_CONFIGS,
    )
    .await?;
    let producer = archiving_producer(&silt.bootstrap())?;
    let _positions = produce_numbered(&producer, TOPIC, 0, 4_000).await?;
    let committed = vec![25_i64, 30];
    let committer = base_consumer_in_group(&silt.bootstrap(), GROUP)?;
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in committed.iter().enumerate() {
        offsets.add_partition_offset(TOPIC, partition as i32, Offset::Offset(*offset))?;
    }
    committer.commit(&offsets, CommitMode::Sync)?;
    Ok(committed)
}

fn scraped_counter(silt: &SiltProcess, name: &str) -> Result<f64> {
    let (status, body) = silt.admin_get("/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(body
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_restore_point_is_written_while_the_object_store_is_down() -> Result<()> {
    let mut server = S3Server::start()?;
    let store = TierStore::s3(server.env().clone());
    let mut silt = SiltProcess::start_with(options(&store))?;
    let _committed = fill(&silt).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while restore_points(&silt)?.len() < 2 {
        ensure!(Instant::now() < deadline, "no restore points within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    server.stop()?;
    let failures_before = scraped_counter(&silt, "silt_restore_point_failures_total")?;
    let on_demand = std::process::Command::new(silt_bin()?)
        .args(["restore-points", "create", "--admin"])
        .arg(silt.admin_addr().to_string())
        .output()?;
    ensure!(
        !on_demand.status.success()
            && String::from_utf8_lossy(&on_demand.stderr).contains("no restore point"),
        "a restore point on demand during the outage fails with a reason: {}{}",
        String::from_utf8_lossy(&on_demand.stdout),
        String::from_utf8_lossy(&on_demand.stderr)
    );
    // Scheduled ones fail too (counted), and the node keeps running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scraped_counter(&silt, "silt_restore_point_failures_total")? <= failures_before {
        ensure!(
            Instant::now() < deadline,
            "no failed scheduled restore point counted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(silt.is_running(), "silt runs through the outage");

    server.start_again()?;
    let before = restore_points(&silt)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let after = restore_points(&silt)?;
        ensure!(
            after.iter().all(|(_, usable)| *usable),
            "a damaged restore point after the outage: {after:?}"
        );
        if after.len() > before.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no restore point after the outage within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ensure!(silt.is_running(), "silt still runs");
    Ok(())
}

/// Waits until `silt`'s log holds `line` (fails if it exits first).
fn wait_for_log(silt: &mut SiltProcess, line: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !silt.log().contains(line) {
        ensure!(silt.is_running(), "silt exited:\n{}", silt.log_tail());
        ensure!(Instant::now() < deadline, "no '{line}' within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_at_any_step_finishes_on_the_next_run() -> Result<()> {
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    let mut old = SiltProcess::start_with(options(&store))?;
    let committed = fill(&old).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = old.run_with_settings(&["restore-points", "list"])?;
        let listing = String::from_utf8_lossy(&output.stdout).into_owned();
        let newest_groups = listing
            .lines()
            .nth(1)
            .and_then(|line| line.split_whitespace().nth(5))
            .and_then(|groups| groups.parse::<usize>().ok());
        let newest_bytes = listing
            .lines()
            .nth(1)
            .and_then(|line| line.split_whitespace().nth(4))
            .and_then(|bytes| bytes.parse::<u64>().ok());
        if newest_groups == Some(1) && newest_bytes.is_some_and(|bytes| bytes > 60_000) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no restore point with the group:\n{listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    old.kill9()?;
    std::fs::remove_dir_all(old.data_dir())?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut new = SiltProcess::prepare(options(&store))?;
    // `silt restore` killed while writing its file leaves a torn temp file: a rerun
    // replaces it.
    std::fs::write(
        new.data_dir().join("restore-point.pending.tmp"),
        b"silt-restore-point 1 crc32c=0",
    )?;
    let restored = new.run_with_settings(&["restore"])?;
    ensure!(
        restored.status.success(),
        "silt restore over a torn file: {}",
        String::from_utf8_lossy(&restored.stderr)
    );

    // `silt serve` killed as the restore starts, then after the topics are back.
    for step in [
        "starting from a pending restore",
        "restored the cluster's topics from the restore point",
    ] {
        new.launch_again()?;
        wait_for_log(&mut new, step)?;
        new.kill9()?;
        ensure!(!new.is_running(), "killed at '{step}'");
    }
    new.start_again()?;
    ensure!(
        !new.data_dir().join("restore-point.pending").exists(),
        "the restore completed"
    );
    let ends = watermarks(&new.bootstrap(), TOPIC, PARTITIONS)?;
    let cut_total: i64 = ends.iter().map(|(low, high)| high - low).sum();
    ensure!(
        ends.iter().all(|(low, _)| *low == 0) && cut_total > 0,
        "every partition restored from 0: {ends:?}"
    );
    let records = read_all(&new.bootstrap(), TOPIC, PARTITIONS).await?;
    ensure!(
        records.len() as i64 == cut_total,
        "{} records read, the cuts hold {cut_total}",
        records.len()
    );
    let fetcher = base_consumer_in_group(&new.bootstrap(), GROUP)?;
    let mut query = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let _ = query.add_partition(TOPIC, partition);
    }
    let answer = fetcher
        .committed_offsets(query, Duration::from_secs(10))
        .context("committed offsets")?;
    for partition in 0..PARTITIONS {
        let want = committed[partition as usize].min(ends[partition as usize].1);
        let found = answer
            .find_partition(TOPIC, partition)
            .map(|element| element.offset());
        ensure!(
            found == Some(Offset::Offset(want)),
            "group offset of {TOPIC}-{partition}: {found:?}, expected {want}"
        );
    }
    ensure!(new.is_running(), "the restored node runs");
    let _removed = store.remove_all().await?;
    Ok(())
}
