//! Fault tests of a 3-node (and one 5-node) cluster of real `silt` processes: SIGKILL of
//! partition leaders and of the active controller, SIGSTOP past the session timeout, a
//! broker cut off by a network partition, and two replicas down under
//! `min.insync.replicas=2`. A checker produces numbered records with acks=all and
//! idempotence throughout; afterwards every acknowledged record must be in the log at
//! its offset, exactly once, with consistent reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::checker::{Checker, Report};
use silt_tests::cluster::{ClusterOptions, SiltCluster};
use silt_tests::kafka;

const PARTITIONS: i32 = 3;
const SETTLE: Duration = Duration::from_secs(60);

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// Creates `topic` with RF=3 and min.insync.replicas=2 and waits for full ISRs.
fn create_topic(
    runtime: &tokio::runtime::Runtime,
    cluster: &mut SiltCluster,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    runtime.block_on(kafka::create_replicated_topic(
        &cluster.bootstrap(),
        topic,
        partitions,
        3,
        &[("min.insync.replicas", "2")],
    ))?;
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    Ok(())
}

/// Background load of numbered acks=all records.
struct Load {
    checker: Arc<Checker>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Load {
    fn start(
        runtime: &tokio::runtime::Runtime,
        cluster: &SiltCluster,
        topic: &str,
        partitions: i32,
    ) -> Load {
        let checker = Checker::new(topic, partitions);
        let task =
            runtime.spawn(Arc::clone(&checker).produce_until_stopped(cluster.bootstrap(), 64));
        Load { checker, task }
    }

    /// Waits until at least `count` more records are acknowledged.
    fn wait_for_acks(&self, count: usize, timeout: Duration) -> Result<()> {
        let target = self.checker.ack_count() + count;
        silt_tests::wait_until(&format!("{count} more acknowledgments"), timeout, || {
            Ok((self.checker.ack_count() >= target).then_some(()))
        })
    }

    fn finish(
        self,
        runtime: &tokio::runtime::Runtime,
        cluster: &mut SiltCluster,
    ) -> Result<Report> {
        self.checker.stop();
        runtime.block_on(self.task).context("load task")??;
        let report = self.checker.verify(&cluster.bootstrap())?;
        println!("checker: {report}");
        Ok(report)
    }
}

fn assert_clean(report: &Report, minimum_acks: usize) -> Result<()> {
    if report.anomalies() != 0 {
        bail!("the checker found anomalies: {report}");
    }
    if report.acknowledged < minimum_acks {
        bail!("too few acknowledged records to mean anything: {report}");
    }
    Ok(())
}

/// Kills the leader of one partition after another, 21 times, restarting each victim;
/// prints the time from SIGKILL to the first acknowledged write on the new leader.
#[test]
fn repeated_leader_kills_lose_nothing() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3).start()?;
    let topic = "leader-kills";
    create_topic(&runtime, &mut cluster, topic, PARTITIONS)?;
    let load = Load::start(&runtime, &cluster, topic, PARTITIONS);
    load.wait_for_acks(200, SETTLE)?;
    let probe = Checker::producer(&cluster.bootstrap())?;
    let mut failovers = Vec::new();
    for round in 0..21 {
        let partition = round % PARTITIONS;
        let leader = cluster.wait_for_leader(topic, partition, None, SETTLE)?;
        cluster.node_mut(leader)?.kill9()?;
        let killed_at = Instant::now();
        let ack = runtime
            .block_on(load.checker.send_one(&probe, partition))
            .with_context(|| format!("round {round}: first write after killing {leader}"))?;
        let failover = killed_at.elapsed();
        failovers.push(failover);
        let new_leader = cluster.wait_for_leader(topic, partition, Some(leader), SETTLE)?;
        println!(
            "round {round}: killed leader {leader} of partition {partition}; node {new_leader} took over, first write at offset {} after {failover:?}",
            ack.offset
        );
        cluster.node_mut(leader)?.start_again()?;
        let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
        load.wait_for_acks(50, SETTLE)?;
    }
    let report = load.finish(&runtime, &mut cluster)?;
    failovers.sort();
    println!(
        "leader SIGKILL -> first acknowledged write on the new leader: min {:?}, median {:?}, max {:?} over {} failovers",
        failovers[0],
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1],
        failovers.len()
    );
    assert_clean(&report, 1000)?;
    // Preferred-leader election hands every partition back to its first replica.
    silt_tests::wait_until("preferred leaders restored", SETTLE, || {
        let states = cluster.partition_states(topic)?;
        Ok(states
            .iter()
            .all(|state| state.replicas.first() == Some(&state.leader))
            .then_some(()))
    })?;
    Ok(())
}

/// Kills the active controller under load: a new one takes over, metadata stays writable
/// and nothing acknowledged is lost.
#[test]
fn active_controller_kill_loses_nothing() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3).start()?;
    let topic = "controller-kill";
    create_topic(&runtime, &mut cluster, topic, PARTITIONS)?;
    let load = Load::start(&runtime, &cluster, topic, PARTITIONS);
    load.wait_for_acks(200, SETTLE)?;
    for round in 0..3 {
        let controller = cluster.active_controller()?;
        cluster.node_mut(controller)?.kill9()?;
        let successor = silt_tests::wait_until("a new active controller", SETTLE, || {
            let active = cluster.active_controller()?;
            Ok((active != controller).then_some(active))
        })?;
        println!(
            "round {round}: killed active controller {controller}, node {successor} took over"
        );
        // Metadata writes work through the new controller.
        let extra = format!("{topic}-extra-{round}");
        runtime.block_on(kafka::create_replicated_topic(
            &cluster.running_bootstrap(),
            &extra,
            1,
            2,
            &[],
        ))?;
        load.wait_for_acks(100, SETTLE)?;
        cluster.node_mut(controller)?.start_again()?;
        let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    }
    let report = load.finish(&runtime, &mut cluster)?;
    assert_clean(&report, 500)
}

/// SIGSTOPs a partition leader for twice the session timeout, then SIGCONTs it: the
/// cluster moves on without it, and the paused leader must not acknowledge writes it
/// cannot commit once it resumes.
#[test]
fn paused_leader_does_not_acknowledge_uncommitted_writes() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3).start()?;
    let topic = "paused-leader";
    create_topic(&runtime, &mut cluster, topic, PARTITIONS)?;
    let load = Load::start(&runtime, &cluster, topic, PARTITIONS);
    load.wait_for_acks(200, SETTLE)?;
    for round in 0..2 {
        let leader = cluster.wait_for_leader(topic, 0, None, SETTLE)?;
        // A producer that only knows the leader keeps writing to it across the pause.
        let direct = Checker::producer(&cluster.node(leader)?.bootstrap())?;
        cluster.node(leader)?.signal("STOP")?;
        let resumed = {
            let new_leader = cluster.wait_for_leader(topic, 0, Some(leader), SETTLE)?;
            println!(
                "round {round}: paused leader {leader}; node {new_leader} took over partition 0"
            );
            std::thread::sleep(Duration::from_secs(3));
            cluster.node(leader)?.signal("CONT")?;
            Instant::now()
        };
        let outcome = runtime.block_on(load.checker.send_one(&direct, 0));
        println!(
            "round {round}: write through the resumed node {leader} after {:?}: {outcome:?}",
            resumed.elapsed()
        );
        let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
        load.wait_for_acks(100, SETTLE)?;
    }
    let report = load.finish(&runtime, &mut cluster)?;
    assert_clean(&report, 500)
}

/// Cuts the leader of partition 0 off the network (its own namespace's link goes down)
/// for several session timeouts, then reconnects it.
#[test]
fn network_partition_of_a_leader_loses_nothing() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3).in_network_namespaces().start()?;
    let topic = "partitioned-leader";
    create_topic(&runtime, &mut cluster, topic, PARTITIONS)?;
    let load = Load::start(&runtime, &cluster, topic, PARTITIONS);
    load.wait_for_acks(200, SETTLE)?;
    let leader = cluster.wait_for_leader(topic, 0, None, SETTLE)?;
    cluster.isolate(leader)?;
    let new_leader = cluster.wait_for_leader(topic, 0, Some(leader), SETTLE)?;
    println!("isolated node {leader}; node {new_leader} leads partition 0");
    load.wait_for_acks(300, SETTLE)?;
    std::thread::sleep(Duration::from_secs(5));
    cluster.reconnect(leader)?;
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    load.wait_for_acks(100, SETTLE)?;
    let report = load.finish(&runtime, &mut cluster)?;
    assert_clean(&report, 500)
}

/// RF=3 and min.insync.replicas=2 on a 5-node cluster (so the controller quorum survives):
/// with two of the partition's replicas down, acks=all writes fail with
/// NOT_ENOUGH_REPLICAS and none is acknowledged; when they return, writes resume and every
/// earlier acknowledgment is still there.
#[test]
fn two_replicas_down_refuse_acks_all_cleanly() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(5).start()?;
    let topic = "min-isr";
    create_topic(&runtime, &mut cluster, topic, 1)?;
    let checker = Checker::new(topic, 1);
    let producer = Checker::producer(&cluster.bootstrap())?;
    for _ in 0..100 {
        let _ack = runtime.block_on(checker.send_one(&producer, 0))?;
    }
    let state = cluster.partition_states(topic)?.remove(0);
    let victims: Vec<i32> = vec![
        state.leader,
        *state
            .replicas
            .iter()
            .find(|replica| **replica != state.leader)
            .context("a follower")?,
    ];
    let survivor = *state
        .replicas
        .iter()
        .find(|replica| !victims.contains(replica))
        .context("a third replica")?;
    for victim in &victims {
        cluster.node_mut(*victim)?.kill9()?;
    }
    // The second victim may lead for a moment if the controller fences the first one
    // before noticing the second is gone too; the survivor must end up leading.
    let leader = silt_tests::wait_until("the only live ISR member to lead", SETTLE, || {
        let Ok(states) = cluster.partition_states(topic) else {
            return Ok(None);
        };
        Ok(states
            .first()
            .map(|state| state.leader)
            .filter(|leader| *leader == survivor))
    })?;
    assert_eq!(leader, survivor, "the only live ISR member must lead");
    // No retries: the client reports the broker's error code itself.
    let strict = kafka::producer(
        &cluster.running_bootstrap(),
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "10000"),
        ],
    )?;
    let refused = silt_tests::wait_until("NOT_ENOUGH_REPLICAS", SETTLE, || {
        let record = FutureRecord::<(), str>::to(topic)
            .partition(0)
            .payload("must-not-be-acknowledged");
        match runtime.block_on(strict.send(record, Duration::from_secs(0))) {
            Ok(delivery) => {
                bail!("acks=all write acknowledged with one live replica: {delivery:?}")
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas), _)) => {
                Ok(Some(()))
            }
            Err((other, _)) => {
                println!("write refused with {other} while the ISR shrinks");
                Ok(None)
            }
        }
    });
    refused?;
    for victim in &victims {
        cluster.node_mut(*victim)?.start_again()?;
    }
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    let producer = Checker::producer(&cluster.bootstrap())?;
    for _ in 0..100 {
        let _ack = runtime.block_on(checker.send_one(&producer, 0))?;
    }
    let report = checker.verify(&cluster.bootstrap())?;
    println!("checker: {report}");
    // The refused record may or may not be in the log; it was never acknowledged.
    if report.lost.len()
        + report.moved.len()
        + report.duplicates.len()
        + report.inconsistent_offsets.len()
        + report.non_monotonic_polls
        != 0
    {
        bail!("anomalies after min.insync.replicas refusals: {report}");
    }
    assert_eq!(report.acknowledged, 200);
    Ok(())
}

/// `__consumer_offsets` has 3 replicas by default on a 3-node cluster: with any one node
/// SIGKILLed, every group's committed offsets are still there (groups spread over
/// coordinators on every node), and the group can commit again.
#[test]
fn any_one_node_down_keeps_every_committed_offset() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(3).start()?;
    let topic = "committed";
    create_topic(&runtime, &mut cluster, topic, PARTITIONS)?;
    let offsets_states = cluster.wait_for_isr("__consumer_offsets", 3, SETTLE)?;
    ensure!(
        !offsets_states.is_empty() && offsets_states.iter().all(|state| state.replicas.len() == 3),
        "__consumer_offsets does not have 3 replicas by default: {offsets_states:?}"
    );
    // Twelve groups: their coordinators land on every node.
    let groups: Vec<String> = (0..12).map(|index| format!("ledger-{index}")).collect();
    let expected =
        |group_index: usize, partition: i32| (group_index * 10) as i64 + i64::from(partition) + 1;
    for (group_index, group) in groups.iter().enumerate() {
        let consumer = kafka::base_consumer_in_group(&cluster.bootstrap(), group)?;
        let mut offsets = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            offsets.add_partition_offset(
                topic,
                partition,
                Offset::Offset(expected(group_index, partition)),
            )?;
        }
        consumer.commit(&offsets, CommitMode::Sync)?;
    }
    let read_all = |bootstrap: &str| -> Result<()> {
        for (group_index, group) in groups.iter().enumerate() {
            let consumer = kafka::base_consumer_in_group(bootstrap, group)?;
            let mut query = TopicPartitionList::new();
            for partition in 0..PARTITIONS {
                let _ = query.add_partition(topic, partition);
            }
            let answer = silt_tests::wait_until(&format!("offsets of {group}"), SETTLE, || {
                Ok(consumer
                    .committed_offsets(query.clone(), Duration::from_secs(5))
                    .ok()
                    .filter(|answer| answer.elements().iter().all(|e| e.error().is_ok())))
            })?;
            for partition in 0..PARTITIONS {
                let found = answer
                    .find_partition(topic, partition)
                    .map(|element| element.offset());
                ensure!(
                    found == Some(Offset::Offset(expected(group_index, partition))),
                    "{group} {topic}-{partition}: committed {found:?}, expected {}",
                    expected(group_index, partition)
                );
            }
        }
        Ok(())
    };
    for victim in cluster.node_ids() {
        cluster.node_mut(victim)?.kill9()?;
        read_all(&cluster.running_bootstrap())
            .with_context(|| format!("with node {victim} down"))?;
        println!("node {victim} down: every group's committed offsets are there");
        // The group can commit again through whichever node now coordinates it.
        let consumer = kafka::base_consumer_in_group(&cluster.running_bootstrap(), &groups[0])?;
        let mut same = TopicPartitionList::new();
        same.add_partition_offset(topic, 0, Offset::Offset(expected(0, 0)))?;
        consumer.commit(&same, CommitMode::Sync)?;
        cluster.node_mut(victim)?.start_again()?;
        let _states = cluster.wait_for_isr("__consumer_offsets", 3, SETTLE)?;
    }
    Ok(())
}

/// Sum of an unlabelled counter over the `/metrics` of the running nodes but `paused`.
fn counter_over_nodes(cluster: &mut SiltCluster, name: &str, paused: i32) -> Result<f64> {
    let mut total = 0.0;
    for node_id in cluster.node_ids() {
        let node = cluster.node_mut(node_id)?;
        if node_id == paused || !node.is_running() {
            continue;
        }
        total += metric_sum(&node.admin_get("/metrics")?.1, name);
    }
    Ok(total)
}

/// The sum of a metric's samples in a `/metrics` body.
fn metric_sum(body: &str, name: &str) -> f64 {
    silt_tests::s3::metric_samples(body, name)
        .iter()
        .map(|(_, value)| value)
        .sum()
}

/// `unclean.leader.election.enable=true` on a 5-node cluster: with both followers down
/// the leader alone acknowledges 100 more records (`min.insync.replicas=1`) and is then
/// paused past its session (a kill would take the third of five controller voters
/// down). A returning out-of-sync follower is elected uncleanly, so the partition is
/// writable again, at the cost of exactly those 100 records: the election is counted
/// and logged on the controller, and the old leader, when it resumes, truncates them
/// and counts them.
#[test]
fn unclean_leader_election_trades_the_missing_records_for_availability() -> Result<()> {
    let runtime = runtime()?;
    let mut cluster = ClusterOptions::new(5).start()?;
    let topic = "unclean";
    runtime.block_on(kafka::create_replicated_topic(
        &cluster.bootstrap(),
        topic,
        1,
        3,
        &[
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "true"),
        ],
    ))?;
    let state = cluster.wait_for_isr(topic, 3, SETTLE)?.remove(0);
    let leader = state.leader;
    let followers: Vec<i32> = state
        .replicas
        .iter()
        .copied()
        .filter(|replica| *replica != leader)
        .collect();
    let checker = Checker::new(topic, 1);
    let producer = Checker::producer(&cluster.bootstrap())?;
    for _ in 0..100 {
        let _ack = runtime.block_on(checker.send_one(&producer, 0))?;
    }
    for follower in &followers {
        cluster.node_mut(*follower)?.kill9()?;
    }
    let _alone = cluster.wait_for_isr(topic, 1, SETTLE)?;
    let mut lost_numbers = Vec::new();
    for _ in 0..100 {
        lost_numbers.push(runtime.block_on(checker.send_one(&producer, 0))?.number);
    }
    drop(producer);
    cluster.node(leader)?.signal("STOP")?;
    cluster.node_mut(followers[0])?.start_again()?;
    let new_leader = cluster.wait_for_leader(topic, 0, Some(leader), SETTLE)?;
    ensure!(
        new_leader == followers[0],
        "the returning follower {} must lead, not {new_leader}",
        followers[0]
    );
    let elections = counter_over_nodes(
        &mut cluster,
        "silt_controller_unclean_leader_elections_total",
        leader,
    )?;
    ensure!(elections >= 1.0, "the unclean election is not counted");
    // Writable again, through the uncleanly elected leader.
    let producer = Checker::producer(&cluster.running_bootstrap())?;
    for _ in 0..50 {
        let _ack = runtime.block_on(checker.send_one(&producer, 0))?;
    }
    cluster.node(leader)?.signal("CONT")?;
    cluster.node_mut(followers[1])?.start_again()?;
    let _states = cluster.wait_for_isr(topic, 3, SETTLE)?;
    let truncated = metric_sum(
        &cluster.node(leader)?.admin_get("/metrics")?.1,
        "silt_truncated_committed_records_total",
    );
    // Counted against the old leader's high watermark, which may lag its last append.
    ensure!(
        (1.0..=100.0).contains(&truncated),
        "the old leader counted {truncated} truncated committed records, expected 1 to 100"
    );
    println!("the old leader truncated {truncated} committed records");
    let report = checker.verify(&cluster.bootstrap())?;
    println!("checker: {report}");
    let mut lost = report.lost.clone();
    lost.sort_unstable();
    ensure!(
        lost == lost_numbers,
        "exactly the 100 records only the old leader had must be lost: {report}"
    );
    ensure!(
        report.moved.is_empty()
            && report.duplicates.is_empty()
            && report.inconsistent_offsets.is_empty()
            && report.non_monotonic_polls == 0
            && report.unknown_records == 0,
        "anomalies besides the lost records: {report}"
    );
    assert_eq!(report.acknowledged, 250);
    Ok(())
}
