//! Tiering and observability in a 3-node cluster: only leaders upload, followers trim
//! their local logs once the remote copy is committed, a new leader resumes uploading
//! where the old one stopped, and every acknowledged record stays readable from offset 0.
//! Also: a broker-only node, and the replication metrics and `silt topics describe`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use silt_tests::checker::Checker;
use silt_tests::cluster::{ClusterOptions, SiltCluster};
use silt_tests::kafka;
use silt_tests::s3::{metric_samples, partition_metric, scrape_metrics};

const SETTLE: Duration = Duration::from_secs(60);

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// Local log start offset of `topic`-`partition` on every running node.
fn local_log_starts(
    cluster: &mut SiltCluster,
    topic: &str,
    partition: i32,
) -> Result<Vec<(i32, i64)>> {
    let mut starts = Vec::new();
    for node_id in cluster.node_ids() {
        let node = cluster.node_mut(node_id)?;
        if !node.is_running() {
            continue;
        }
        let metrics = scrape_metrics(node)?;
        let start = partition_metric(&metrics, "silt_partition_log_start_offset", topic)
            .get(&partition)
            .copied()
            .unwrap_or(0.0);
        starts.push((node_id, start as i64));
    }
    Ok(starts)
}

#[test]
fn tiered_topic_survives_leader_failover() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3)
        .flag("--remote-log-manager-task-interval-ms", 200)
        .start()?;
    let topic = "tiered-failover";
    runtime.block_on(kafka::create_replicated_topic(
        &cluster.bootstrap(),
        topic,
        1,
        3,
        &[
            ("min.insync.replicas", "2"),
            ("remote.storage.enable", "true"),
            ("segment.bytes", "65536"),
            ("local.retention.ms", "1"),
            ("retention.ms", "-1"),
        ],
    ))?;
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    let checker = Checker::new(topic, 1);
    let load = runtime.spawn(Arc::clone(&checker).produce_until_stopped(cluster.bootstrap(), 32));

    // The first leader tiers some segments and every replica trims its local log.
    let first_leader = cluster.wait_for_leader(topic, 0, None, SETTLE)?;
    let first_trim = silt_tests::wait_until(
        "every replica trimmed after the first uploads",
        Duration::from_secs(120),
        || {
            let starts = local_log_starts(&mut cluster, topic, 0)?;
            Ok((starts.len() == 3 && starts.iter().all(|(_, start)| *start > 0)).then_some(starts))
        },
    )?;
    println!("local log starts after the first leader's uploads: {first_trim:?}");

    // A new leader resumes uploading from where the old one stopped.
    cluster.node_mut(first_leader)?.kill9()?;
    let second_leader = cluster.wait_for_leader(topic, 0, Some(first_leader), SETTLE)?;
    let mark = first_trim
        .iter()
        .map(|(_, start)| *start)
        .max()
        .unwrap_or(0);
    let resumed = silt_tests::wait_until(
        "uploads by the new leader",
        Duration::from_secs(120),
        || {
            let starts = local_log_starts(&mut cluster, topic, 0)?;
            Ok(
                (starts.len() == 2 && starts.iter().all(|(_, start)| *start > mark))
                    .then_some(starts),
            )
        },
    )?;
    println!(
        "node {second_leader} leads after {first_leader} was killed; local log starts: {resumed:?}"
    );
    cluster.node_mut(first_leader)?.start_again()?;
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    std::thread::sleep(Duration::from_secs(2));
    checker.stop();
    runtime.block_on(load).context("load task")??;

    // Every acknowledged record, most of them now remote, reads back from offset 0.
    let report = checker.verify(&cluster.bootstrap())?;
    println!("checker: {report}");
    ensure!(
        report.anomalies() == 0,
        "anomalies after tiering across a failover: {report}"
    );
    ensure!(
        report.acknowledged > 2000,
        "too few records to span several segments: {report}"
    );
    let (low, _high) = kafka::watermarks(&cluster.bootstrap(), topic, 1)?[0];
    ensure!(
        low == 0,
        "the log start offset moved to {low}: remote data was lost"
    );
    let fetched: f64 = cluster
        .node_ids()
        .into_iter()
        .filter_map(|node_id| {
            cluster
                .node(node_id)
                .ok()
                .and_then(|node| scrape_metrics(node).ok())
        })
        .flat_map(|metrics| {
            metric_samples(&metrics, "silt_remote_fetched_bytes_total")
                .into_iter()
                .map(|(_, value)| value)
                .collect::<Vec<_>>()
        })
        .sum();
    ensure!(
        fetched > 0.0,
        "the read from offset 0 did not touch remote storage"
    );
    Ok(())
}

/// A node with `process.roles=broker` joins through the voters, hosts replicas and
/// serves clients; `/metrics` and `silt topics describe` show replication state.
#[test]
fn broker_only_node_and_replication_metrics() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3).broker_only_nodes(1).start()?;
    ensure!(
        cluster.node_ids() == vec![1, 2, 3, 4],
        "nodes {:?}",
        cluster.node_ids()
    );
    let topic = "four-brokers";
    runtime.block_on(kafka::create_replicated_topic(
        &cluster.bootstrap(),
        topic,
        4,
        3,
        &[("min.insync.replicas", "2")],
    ))?;
    let states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    ensure!(
        states.iter().any(|state| state.replicas.contains(&4)),
        "no replica on the broker-only node: {states:?}"
    );
    let led_by_4 = states.iter().filter(|state| state.leader == 4).count();
    ensure!(
        led_by_4 == 1,
        "4 partitions over 4 brokers: the broker-only node should lead one, leads {led_by_4}: {states:?}"
    );

    // Produce through the broker-only node only.
    let checker = Checker::new(topic, 4);
    let producer = Checker::producer(&cluster.node(4)?.bootstrap())?;
    for partition in 0..4 {
        for _ in 0..50 {
            let _ack = runtime.block_on(checker.send_one(&producer, partition))?;
        }
    }

    let describe = cluster.node(4)?.cli_ok(&["topics", "describe", topic])?;
    ensure!(
        describe.contains("LEADER") && describe.contains("REPLICAS") && describe.contains("ISR"),
        "{describe}"
    );

    // Kill a broker: its partitions are under-replicated on their leaders, then recover.
    let victim = states
        .iter()
        .find(|state| state.leader != 4)
        .map(|state| state.leader)
        .context("a leader")?;
    cluster.node_mut(victim)?.kill9()?;
    let under_replicated =
        silt_tests::wait_until("under-replicated partitions reported", SETTLE, || {
            let mut total = 0.0;
            for node_id in [1, 2, 3, 4] {
                if node_id == victim {
                    continue;
                }
                let metrics = scrape_metrics(cluster.node(node_id)?)?;
                total += metric_samples(&metrics, "silt_under_replicated_partitions")
                    .iter()
                    .map(|(_, value)| value)
                    .sum::<f64>();
            }
            Ok((total > 0.0).then_some(total))
        })?;
    println!("under-replicated partitions with node {victim} down: {under_replicated}");
    for _ in 0..50 {
        let _ack = runtime.block_on(checker.send_one(&producer, 0))?;
    }
    cluster.node_mut(victim)?.start_again()?;
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    let mut seen = Vec::new();
    for node_id in [1, 2, 3, 4] {
        let metrics = scrape_metrics(cluster.node(node_id)?)?;
        for name in [
            "silt_isr_shrinks_total",
            "silt_isr_expands_total",
            "silt_controller_leader_elections_total",
            "silt_controller_active",
            "silt_offline_partitions",
            "silt_replica_lag_messages",
        ] {
            if !metric_samples(&metrics, name).is_empty() {
                seen.push(name);
            }
        }
    }
    for name in [
        "silt_isr_shrinks_total",
        "silt_isr_expands_total",
        "silt_controller_leader_elections_total",
        "silt_controller_active",
        "silt_offline_partitions",
        "silt_replica_lag_messages",
    ] {
        if !seen.contains(&name) {
            bail!("no node reports {name}");
        }
    }
    let report = checker.verify(&cluster.bootstrap())?;
    println!("checker: {report}");
    ensure!(
        report.anomalies() == 0 && report.acknowledged == 250,
        "{report}"
    );
    Ok(())
}
