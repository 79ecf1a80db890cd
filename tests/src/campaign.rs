//! A randomized fault campaign against a 3-node cluster of real `silt` processes.
//!
//! Each node runs in a network namespace of its own with its data directory on a tmpfs;
//! tiered topics reach the test's S3 server through a relay that can be switched off.
//! Under a steady idempotent acks=all load on several topics and a consumer group
//! committing offsets, faults drawn from a printed seed are injected one at a time:
//! SIGKILL and restart, SIGSTOP/SIGCONT past the session timeout, a network partition,
//! a full log dir, an S3 outage. After each fault every node must still be running (one
//! that exited is restarted, and one that cannot start again is a failure), the cluster
//! must heal (every ISR full again) and no committed group offset may have gone back.
//! At the end every topic is read back and checked for lost, moved, duplicated or
//! unknown records and inconsistent or non-monotonic reads ([`crate::checker`]).
//!
//! Availability: a sampler asks a node that is not under a fault for the metadata every
//! 250 ms; a partition is unavailable while it has no leader or its leader is the node
//! under the fault. The report gives seconds per (fault, partition).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::checker::{Checker, Report};
use crate::cluster::{ClusterOptions, SiltCluster};
use crate::kafka;

/// Records each producer keeps outstanding.
const IN_FLIGHT: usize = 16;
/// How long the cluster has to heal after a fault: every node up, every ISR full.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// The consumer group's id.
const GROUP: &str = "campaign-group";
/// The offsets topic, whose ISRs must heal too before the next fault.
const CONSUMER_OFFSETS: &str = "__consumer_offsets";
/// Availability sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    /// Seed of every random choice; the same seed replays the same fault sequence.
    pub seed: u64,
    /// Faults to inject, one after another.
    pub faults: usize,
    /// Topics under load (RF 3, `min.insync.replicas=2`); the last one is tiered.
    pub topics: usize,
    /// Partitions per topic.
    pub partitions: i32,
    /// The kinds of fault to draw from (an S3 outage only with an S3 server).
    pub kinds: Vec<FaultKind>,
}

impl CampaignOptions {
    /// `faults` faults with a seed from `SILT_CAMPAIGN_SEED`, else a random one.
    pub fn from_env(faults: usize) -> Result<CampaignOptions> {
        let seed = match std::env::var("SILT_CAMPAIGN_SEED") {
            Ok(text) => text
                .trim()
                .parse()
                .context("SILT_CAMPAIGN_SEED is not a u64")?,
            Err(_) => rand::random(),
        };
        let faults = match std::env::var("SILT_CAMPAIGN_FAULTS") {
            Ok(text) => text
                .trim()
                .parse()
                .context("SILT_CAMPAIGN_FAULTS is not a count")?,
            Err(_) => faults,
        };
        let kinds = match std::env::var("SILT_CAMPAIGN_KINDS") {
            Ok(text) => text
                .split(',')
                .map(|name| FaultKind::parse(name.trim()))
                .collect::<Result<Vec<_>>>()?,
            Err(_) => FaultKind::ALL.to_vec(),
        };
        Ok(CampaignOptions {
            seed,
            faults,
            topics: 3,
            partitions: 3,
            kinds,
        })
    }
}

/// The kinds of fault a campaign draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL, then start the node again.
    KillRestart,
    /// SIGSTOP for longer than the broker session timeout, then SIGCONT.
    Pause,
    /// The node's link goes down (a network partition of one node), then up.
    Partition,
    /// The node's log dir (tmpfs) is filled to ENOSPC, then emptied again.
    DiskFull,
    /// Every node loses the object store (S3 connections cut and refused).
    ObjectStoreOutage,
}

impl FaultKind {
    /// Every kind, in the order of their names in `SILT_CAMPAIGN_KINDS`.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::KillRestart,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::DiskFull,
        FaultKind::ObjectStoreOutage,
    ];

    /// The kind named `kill`, `pause`, `partition`, `disk-full` or `s3-outage`.
    pub fn parse(name: &str) -> Result<FaultKind> {
        Ok(match name {
            "kill" => FaultKind::KillRestart,
            "pause" => FaultKind::Pause,
            "partition" => FaultKind::Partition,
            "disk-full" => FaultKind::DiskFull,
            "s3-outage" => FaultKind::ObjectStoreOutage,
            other => bail!(
                "unknown fault kind {other:?}: expected kill, pause, partition, disk-full or s3-outage"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::KillRestart => "sigkill+restart",
            FaultKind::Pause => "sigstop/sigcont",
            FaultKind::Partition => "network partition",
            FaultKind::DiskFull => "full log dir",
            FaultKind::ObjectStoreOutage => "s3 outage",
        }
    }
}

/// One fault as injected.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// 1-based position in the campaign.
    pub index: usize,
    /// What was done.
    pub kind: FaultKind,
    /// The node it hit (none for an S3 outage).
    pub node: Option<i32>,
    /// Why that node: `any`, `partition leader` or `controller leader`.
    pub role: &'static str,
    /// When it was injected, since the campaign's load started (as the checker's
    /// acknowledgment times).
    pub started_at: Duration,
    /// How long the fault lasted.
    pub held: Duration,
    /// From healing the fault until every node was up and every ISR full.
    pub recovered_in: Duration,
    /// Nodes that had exited by themselves when checked after the fault.
    pub exited: Vec<i32>,
    /// Start attempts that failed (exited during start-up or never became healthy).
    pub failed_starts: usize,
    /// Seconds each campaign partition was without a usable leader during this fault.
    pub unavailable_s: Vec<f64>,
}

/// What a whole campaign found.
#[derive(Debug, Default)]
pub struct CampaignReport {
    /// The seed to replay it.
    pub seed: u64,
    /// Every fault, in order.
    pub faults: Vec<FaultRecord>,
    /// The checker's report per topic.
    pub topic_reports: Vec<(String, Report)>,
    /// Committed group offsets found below an offset whose commit was acknowledged.
    pub group_offsets_backwards: Vec<String>,
    /// Faults after which the cluster did not heal within the recovery timeout.
    pub unrecovered: Vec<usize>,
    /// Wall-clock time of the whole campaign.
    pub elapsed: Duration,
}

impl CampaignReport {
    /// Anomalies of every kind: records (lost, moved, duplicated, inconsistent or
    /// non-monotonic reads, unknown records) and group offsets that went backwards.
    pub fn anomalies(&self) -> usize {
        self.topic_reports
            .iter()
            .map(|(_, report)| report.anomalies())
            .sum::<usize>()
            + self.group_offsets_backwards.len()
    }

    /// Start attempts that failed over the whole campaign.
    pub fn failed_starts(&self) -> usize {
        self.faults.iter().map(|fault| fault.failed_starts).sum()
    }

    /// Acknowledged records over every topic.
    pub fn acknowledged(&self) -> usize {
        self.topic_reports
            .iter()
            .map(|(_, report)| report.acknowledged)
            .sum()
    }

    /// The summary table: one row per fault kind, then a total.
    pub fn summary(&self) -> String {
        let mut kinds: BTreeMap<FaultKind, Vec<&FaultRecord>> = BTreeMap::new();
        for fault in &self.faults {
            kinds.entry(fault.kind).or_default().push(fault);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| fault | count | nodes exited | failed starts | recovery median s | unavailable s per partition: median | p99 | max |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        let mut row = |name: &str, faults: &[&FaultRecord]| {
            let mut recovery: Vec<f64> = faults
                .iter()
                .map(|fault| fault.recovered_in.as_secs_f64())
                .collect();
            let mut unavailable: Vec<f64> = faults
                .iter()
                .flat_map(|fault| fault.unavailable_s.iter().copied())
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                faults.len(),
                faults.iter().map(|fault| fault.exited.len()).sum::<usize>(),
                faults
                    .iter()
                    .map(|fault| fault.failed_starts)
                    .sum::<usize>(),
                quantile(&mut recovery, 0.5),
                quantile(&mut unavailable, 0.5),
                quantile(&mut unavailable, 0.99),
                quantile(&mut unavailable, 1.0),
            );
        };
        for (kind, faults) in &kinds {
            row(kind.name(), faults);
        }
        let all: Vec<&FaultRecord> = self.faults.iter().collect();
        row("all", &all);
        let _ = writeln!(
            out,
            "seed {}, {} faults in {:.0} s; {} records acknowledged; anomalies {} (group offsets backwards {}); unrecovered faults {:?}; failed starts {}",
            self.seed,
            self.faults.len(),
            self.elapsed.as_secs_f64(),
            self.acknowledged(),
            self.anomalies(),
            self.group_offsets_backwards.len(),
            self.unrecovered,
            self.failed_starts(),
        );
        for (topic, report) in &self.topic_reports {
            let _ = writeln!(out, "{topic}: {report}");
        }
        out
    }
}

/// The `q` quantile (0..=1) of `values`, nearest rank; 0 for none.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64) * q).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Which nodes are under a fault now, and which fault window samples belong to.
#[derive(Debug, Default)]
struct FaultState {
    /// Nodes down, paused or cut off (all of them during an S3 outage: none).
    faulted: BTreeSet<i32>,
    /// 1-based index of the current fault window; 0 before the first fault.
    window: usize,
    /// (window, topic, partition) -> time without a usable leader.
    unavailable: BTreeMap<(usize, String, i32), Duration>,
}

/// Runs a campaign and returns what it found; prints one line per fault and the summary.
///
/// Errors: the cluster could not be started or the final read-back failed. Anomalies,
/// failed starts and unrecovered faults are in the report, not errors.
pub fn run(options: &CampaignOptions) -> Result<CampaignReport> {
    println!(
        "fault campaign: seed {} ({} faults); replay with SILT_CAMPAIGN_SEED={}",
        options.seed, options.faults, options.seed
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut cluster = ClusterOptions::new(3)
        .in_network_namespaces()
        .object_store_relay()
        .data_dir_limit_mib(1024)
        .flag("--min-insync-replicas", 2)
        .flag("--remote-log-manager-task-interval-ms", 500)
        .start()?;
    let topics: Vec<String> = (0..options.topics)
        .map(|index| match index + 1 == options.topics {
            true => "campaign-tiered".to_string(),
            false => format!("campaign-{index}"),
        })
        .collect();
    for topic in &topics {
        let mut configs = vec![("min.insync.replicas", "2"), ("segment.bytes", "4194304")];
        if topic.ends_with("tiered") {
            configs.extend([
                ("remote.storage.enable", "true"),
                ("segment.bytes", "262144"),
                ("local.retention.bytes", "1048576"),
                ("retention.ms", "-1"),
            ]);
        }
        runtime.block_on(kafka::create_replicated_topic(
            &cluster.bootstrap(),
            topic,
            options.partitions,
            3,
            &configs,
        ))?;
    }
    wait_healed(&mut cluster, &topics)?;

    let bootstrap = cluster.bootstrap();
    let checkers: Vec<Arc<Checker>> = topics
        .iter()
        .map(|topic| Checker::new(topic, options.partitions))
        .collect();
    let load_started = Instant::now();
    println!(
        "fault campaign: load started at unix {} ms (fault and acknowledgment times count from here)",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis())
    );
    let loads: Vec<_> = checkers
        .iter()
        .map(|checker| {
            runtime.spawn(Arc::clone(checker).produce_until_stopped(bootstrap.clone(), IN_FLIGHT))
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(CommitLedger::default()));
    let group = spawn_group_member(
        &bootstrap,
        &topics,
        Arc::clone(&committed),
        Arc::clone(&stop),
    )?;
    let state = Arc::new(Mutex::new(FaultState::default()));
    let node_addrs: BTreeMap<i32, String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| Ok((id, cluster.node(id)?.bootstrap())))
        .collect::<Result<_>>()?;
    let sampler = spawn_availability_sampler(
        node_addrs,
        topics.clone(),
        Arc::clone(&state),
        Arc::clone(&stop),
    )?;
    std::thread::sleep(Duration::from_secs(3));

    let mut report = CampaignReport {
        seed: options.seed,
        ..CampaignReport::default()
    };
    let mut kinds = options.kinds.clone();
    if !cluster.has_object_store_relay() && kinds.contains(&FaultKind::ObjectStoreOutage) {
        kinds.retain(|kind| *kind != FaultKind::ObjectStoreOutage);
        println!("fault campaign: no S3 server (SILT_TEST_S3_ENDPOINT): no S3 outages");
    }
    if kinds.is_empty() {
        bail!("no fault kind to draw from");
    }
    for index in 1..=options.faults {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let (node, role) = match kind {
            FaultKind::ObjectStoreOutage => (None, "all nodes"),
            _ => {
                let (node, role) = pick_target(&mut rng, &mut cluster, &topics)?;
                (Some(node), role)
            }
        };
        let hold = Duration::from_millis(match kind {
            FaultKind::KillRestart => rng.random_range(0..3000),
            FaultKind::Pause => rng.random_range(4000..8000),
            FaultKind::Partition => rng.random_range(5000..10_000),
            FaultKind::DiskFull => rng.random_range(3000..7000),
            FaultKind::ObjectStoreOutage => rng.random_range(5000..15_000),
        });
        {
            let mut state = state.lock();
            state.window = index;
            state.faulted = node.into_iter().collect();
        }
        let mut failed_starts = 0;
        let started_at = load_started.elapsed();
        inject(&mut cluster, kind, node, hold, &mut failed_starts)
            .with_context(|| format!("fault {index}: {}", kind.name()))?;
        let healed_at = Instant::now();
        state.lock().faulted.clear();
        // A node can exit while the cluster heals (a raft write that failed on a full
        // disk halts it a moment later): restart it and wait again.
        let mut exited = Vec::new();
        let mut recovered = Ok(());
        for _ in 0..3 {
            exited.extend(restart_exited(&mut cluster, &mut failed_starts)?);
            recovered = wait_healed(&mut cluster, &topics);
            if recovered.is_ok() || !any_exited(&mut cluster)? {
                break;
            }
        }
        let recovered_in = healed_at.elapsed();
        if let Err(error) = &recovered {
            println!("fault {index}: the cluster did not heal: {error:#}");
            report.unrecovered.push(index);
        }
        let backwards = check_group_offsets(&bootstrap, &committed)?;
        for problem in &backwards {
            println!("fault {index}: {problem}");
        }
        report.group_offsets_backwards.extend(backwards);
        let unavailable_s = {
            let state = state.lock();
            topics
                .iter()
                .flat_map(|topic| (0..options.partitions).map(move |p| (topic.clone(), p)))
                .map(|(topic, partition)| {
                    state
                        .unavailable
                        .get(&(index, topic, partition))
                        .map_or(0.0, Duration::as_secs_f64)
                })
                .collect::<Vec<f64>>()
        };
        let record = FaultRecord {
            index,
            kind,
            node,
            role,
            started_at,
            held: hold,
            recovered_in,
            exited,
            failed_starts,
            unavailable_s,
        };
        print_fault(&record, &checkers);
        report.faults.push(record);
    }
    // The last window ends here: samples after it belong to no fault.
    state.lock().window = usize::MAX;

    stop.store(true, Ordering::Release);
    for checker in &checkers {
        checker.stop();
    }
    for load in loads {
        runtime.block_on(load).context("load task")??;
    }
    let _ = group.join();
    let _ = sampler.join();
    let bootstrap = cluster.running_bootstrap();
    for (topic, checker) in topics.iter().zip(&checkers) {
        report
            .topic_reports
            .push((topic.clone(), checker.verify(&bootstrap)?));
    }
    report
        .group_offsets_backwards
        .extend(check_group_offsets(&bootstrap, &committed)?);
    report.elapsed = started.elapsed();
    println!("{}", report.summary());
    Ok(report)
}

fn print_fault(record: &FaultRecord, checkers: &[Arc<Checker>]) {
    let mut unavailable = record.unavailable_s.clone();
    println!(
        "fault {:>3} at {:>6.1} s: {:<17} node {:<4} ({:<17}) held {:>5.1} s, healed in {:>5.1} s, unavailable per partition max {:>5.1} s; exited {:?}, failed starts {}; acks {}",
        record.index,
        record.started_at.as_secs_f64(),
        record.kind.name(),
        record
            .node
            .map_or_else(|| "-".to_string(), |node| node.to_string()),
        record.role,
        record.held.as_secs_f64(),
        record.recovered_in.as_secs_f64(),
        quantile(&mut unavailable, 1.0),
        record.exited,
        record.failed_starts,
        checkers
            .iter()
            .map(|checker| checker.ack_count())
            .sum::<usize>(),
    );
    let _ = std::io::stdout().flush();
}

/// Picks the node a fault hits: any node, the leader of a random partition, or the active
/// controller, a third of the time each.
fn pick_target(
    rng: &mut StdRng,
    cluster: &mut SiltCluster,
    topics: &[String],
) -> Result<(i32, &'static str)> {
    let ids = cluster.node_ids();
    match rng.random_range(0..3) {
        0 => Ok((ids[rng.random_range(0..ids.len())], "any")),
        1 => {
            let topic = &topics[rng.random_range(0..topics.len())];
            let states = cluster.partition_states(topic)?;
            let state = &states[rng.random_range(0..states.len())];
            Ok((state.leader, "partition leader"))
        }
        _ => Ok((cluster.active_controller()?, "controller leader")),
    }
}

/// Injects one fault, holds it for `hold`, and heals it (a killed node is started again).
fn inject(
    cluster: &mut SiltCluster,
    kind: FaultKind,
    node: Option<i32>,
    hold: Duration,
    failed_starts: &mut usize,
) -> Result<()> {
    match (kind, node) {
        (FaultKind::ObjectStoreOutage, _) => {
            cluster.set_object_store_down(true)?;
            std::thread::sleep(hold);
            cluster.set_object_store_down(false)?;
        }
        (FaultKind::KillRestart, Some(node)) => {
            cluster.node_mut(node)?.kill9()?;
            std::thread::sleep(hold);
            start_node(cluster, node, failed_starts)?;
        }
        (FaultKind::Pause, Some(node)) => {
            cluster.node(node)?.signal("STOP")?;
            std::thread::sleep(hold);
            cluster.node(node)?.signal("CONT")?;
        }
        (FaultKind::Partition, Some(node)) => {
            cluster.isolate(node)?;
            std::thread::sleep(hold);
            cluster.reconnect(node)?;
        }
        (FaultKind::DiskFull, Some(node)) => {
            let filler = cluster.node(node)?.data_dir().join("campaign-filler");
            fill_to_enospc(&filler)?;
            std::thread::sleep(hold);
            std::fs::remove_file(&filler)
                .with_context(|| format!("removing {}", filler.display()))?;
        }
        (_, None) => bail!("{} needs a node", kind.name()),
    }
    Ok(())
}

/// Writes zeros to `path` until the file system is full.
fn fill_to_enospc(path: &std::path::Path) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0_u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(28) => return Ok(()),
            Err(error) => return Err(error).context("filling the log dir"),
        }
    }
}

/// Starts a stopped node, retrying up to three times; every failed attempt is counted.
fn start_node(cluster: &mut SiltCluster, node: i32, failed_starts: &mut usize) -> Result<()> {
    for attempt in 1..=3 {
        let process = cluster.node_mut(node)?;
        // Reaps an exited process, or stops one that never became healthy.
        let _ = process.kill9();
        match process.start_again() {
            Ok(()) => return Ok(()),
            Err(error) => {
                *failed_starts += 1;
                println!("node {node} failed to start (attempt {attempt}): {error:#}");
            }
        }
    }
    bail!("node {node} did not start in three attempts")
}

/// Restarts every node that exited by itself; returns their ids.
fn restart_exited(cluster: &mut SiltCluster, failed_starts: &mut usize) -> Result<Vec<i32>> {
    let mut exited = Vec::new();
    for node in cluster.node_ids() {
        if cluster.node_mut(node)?.is_running() {
            continue;
        }
        let tail = cluster.node(node)?.log_tail();
        let last = tail
            .lines()
            .rev()
            .find(|line| line.starts_with("Error:") || line.contains(" ERROR "))
            .unwrap_or("(no error logged)");
        println!("node {node} had exited by itself; last log line: {last}");
        exited.push(node);
        start_node(cluster, node, failed_starts)?;
    }
    Ok(exited)
}

/// Whether a node has exited.
fn any_exited(cluster: &mut SiltCluster) -> Result<bool> {
    for node in cluster.node_ids() {
        if !cluster.node_mut(node)?.is_running() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Waits until every node is healthy and every partition of `topics` and of
/// `__consumer_offsets` has a leader and a full ISR, as every node reports it.
fn wait_healed(cluster: &mut SiltCluster, topics: &[String]) -> Result<()> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    for node in cluster.node_ids() {
        let process = cluster.node_mut(node)?;
        if !process.is_running() {
            bail!("node {node} is not running");
        }
        process.wait_healthy()?;
    }
    for topic in topics.iter().map(String::as_str).chain([CONSUMER_OFFSETS]) {
        let left = deadline.saturating_duration_since(Instant::now());
        let _states = cluster.wait_for_isr(topic, 3, left.max(Duration::from_secs(1)))?;
    }
    Ok(())
}

/// A consumer group member on its own thread: reads every topic and commits its
/// position every second (synchronously); each acknowledged commit is recorded in
/// `committed` as the floor the group's committed offset must never go below, and each
/// failed one as in doubt.
fn spawn_group_member(
    bootstrap: &str,
    topics: &[String],
    committed: Arc<Mutex<CommitLedger>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut config = kafka::client_config(bootstrap);
    let _ = config
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000");
    let consumer: BaseConsumer = config.create().context("group consumer")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(std::thread::Builder::new()
        .name("campaign-group".to_string())
        .spawn(move || {
            let mut last_commit = Instant::now();
            while !stop.load(Ordering::Acquire) {
                let _ = consumer.poll(Duration::from_millis(200));
                if last_commit.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                last_commit = Instant::now();
                let Ok(position) = consumer.position() else {
                    continue;
                };
                let mut offsets = TopicPartitionList::new();
                let mut positions = Vec::new();
                for element in position.elements() {
                    if let Offset::Offset(offset) = element.offset() {
                        let _ = offsets.add_partition_offset(
                            element.topic(),
                            element.partition(),
                            Offset::Offset(offset),
                        );
                        positions.push((element.topic().to_string(), element.partition(), offset));
                    }
                }
                if positions.is_empty() {
                    continue;
                }
                {
                    // Recorded before it is sent: a copy of the request may land late.
                    let mut committed = committed.lock();
                    for (topic, partition, offset) in &positions {
                        committed
                            .sent
                            .entry((topic.clone(), *partition))
                            .or_default()
                            .push((*offset, Instant::now()));
                    }
                }
                if consumer.commit(&offsets, CommitMode::Sync).is_err() {
                    continue;
                }
                let mut committed = committed.lock();
                for (topic, partition, offset) in positions {
                    let floor = committed.floors.entry((topic, partition)).or_insert(offset);
                    *floor = (*floor).max(offset);
                }
            }
        })?)
}

/// What the group member's commits left, per partition: the floor (the highest
/// acknowledged commit) and every offset it sent. A copy of an earlier OffsetCommit
/// request (one the client timed out on and retried elsewhere, its bytes retransmitted
/// by TCP once a network partition heals) may reach a coordinator after a later
/// acknowledged commit and take effect, on Kafka as here: the classic OffsetCommit
/// carries nothing that orders it against later ones. A committed offset below the
/// floor is an anomaly unless it is such a value, sent within [`LATE_COMMIT_WINDOW`]
/// (a fault and its healing); those are printed as late commits.
#[derive(Debug, Clone, Default)]
struct CommitLedger {
    floors: BTreeMap<(String, i32), i64>,
    sent: BTreeMap<(String, i32), Vec<(i64, Instant)>>,
}

/// How old a sent commit may be and still arrive late: longer than a fault is held
/// plus its healing, far shorter than the campaign.
const LATE_COMMIT_WINDOW: Duration = Duration::from_secs(60);

/// Fetches the group's committed offsets (retrying for 60 s while the coordinator
/// moves) and returns every partition whose committed offset is below an
/// acknowledged commit.
fn check_group_offsets(bootstrap: &str, committed: &Mutex<CommitLedger>) -> Result<Vec<String>> {
    let ledger = committed.lock().clone();
    let floors = ledger.floors;
    if floors.is_empty() {
        return Ok(Vec::new());
    }
    let consumer = kafka::base_consumer_in_group(bootstrap, GROUP)?;
    let mut query = TopicPartitionList::new();
    for (topic, partition) in floors.keys() {
        let _ = query.add_partition(topic, *partition);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        match consumer.committed_offsets(query.clone(), Duration::from_secs(10)) {
            Ok(answer)
                if answer
                    .elements()
                    .iter()
                    .all(|element| element.error().is_ok()) =>
            {
                break answer;
            }
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(answer) => bail!("fetching the group's offsets: {answer:?}"),
            Err(error) => return Err(error).context("fetching the group's offsets"),
        }
    };
    let mut backwards = Vec::new();
    for ((topic, partition), floor) in &floors {
        let found = answer
            .find_partition(topic, *partition)
            .map(|element| element.offset());
        let ok = matches!(found, Some(Offset::Offset(offset)) if offset >= *floor);
        let sent = matches!(found, Some(Offset::Offset(offset))
        if ledger.sent.get(&(topic.clone(), *partition)).is_some_and(|values| {
            values.iter().any(|(value, at)| *value == offset && at.elapsed() < LATE_COMMIT_WINDOW)
        }));
        if !ok && sent {
            println!(
                "late commit: group offset of {topic}-{partition} is {found:?}, below the acknowledged commit {floor}, and a value the member sent earlier (a copy of an earlier OffsetCommit that reached a coordinator late, as Kafka allows)"
            );
        } else if !ok {
            backwards.push(format!(
                "group offset of {topic}-{partition} is {found:?}, below the acknowledged commit {floor}"
            ));
        }
    }
    Ok(backwards)
}

/// Samples leadership every [`SAMPLE_EVERY`] from a node not under a fault and adds the
/// time each partition spent without a usable leader to the current fault window.
fn spawn_availability_sampler(
    nodes: BTreeMap<i32, String>,
    topics: Vec<String>,
    state: Arc<Mutex<FaultState>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("campaign-availability".to_string())
        .spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(SAMPLE_EVERY);
                let (window, faulted) = {
                    let state = state.lock();
                    (state.window, state.faulted.clone())
                };
                let elapsed = last.elapsed();
                last = Instant::now();
                if window == 0 || window == usize::MAX {
                    continue;
                }
                let Some(observer) = nodes
                    .iter()
                    .find(|(id, _)| !faulted.contains(id))
                    .map(|(_, addr)| addr.clone())
                else {
                    continue;
                };
                let leaders = match leaders_from(&observer, &topics) {
                    Ok(leaders) => leaders,
                    // The observer itself is restarting: no sample.
                    Err(_) => continue,
                };
                let mut state = state.lock();
                if state.window != window {
                    continue;
                }
                for ((topic, partition), leader) in leaders {
                    if leader < 0 || faulted.contains(&leader) {
                        *state
                            .unavailable
                            .entry((window, topic, partition))
                            .or_default() += elapsed;
                    }
                }
            }
        })?)
}

/// The leader of every partition of `topics` as the node at `addr` reports it.
fn leaders_from(addr: &str, topics: &[String]) -> Result<BTreeMap<(String, i32), i32>> {
    let consumer = kafka::base_consumer(addr)?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(2))?;
    let mut leaders = BTreeMap::new();
    for topic in metadata.topics() {
        if !topics.iter().any(|name| name == topic.name()) {
            continue;
        }
        for partition in topic.partitions() {
            let _ = leaders.insert(
                (topic.name().to_string(), partition.id()),
                partition.leader(),
            );
        }
    }
    Ok(leaders)
}
