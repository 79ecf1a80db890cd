//! `silt bench`: load generators for any Kafka-compatible broker.
//!
//! `produce` measures producer throughput and delivery latency (enqueue to
//! acknowledgement), `consume` reads a topic from the beginning, `e2e`
//! measures the time from producing a record to consuming it, `latency` finds
//! the maximum produce rate and then measures delivery latency at a fraction of
//! it, and `disk` measures the machine's sequential write bandwidth so broker
//! figures can be put next to what the disk can do. Everything goes through the `rdkafka`
//! crate (librdkafka), so the same numbers can be taken against Silt, Apache
//! Kafka, Redpanda or Tansu.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::{Statistics, Window};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::steal;

/// Arguments of `silt bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The `silt bench` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce records and report throughput and delivery latency.
    Produce(ProduceArgs),
    /// Read a topic from the beginning and report throughput.
    Consume(ConsumeArgs),
    /// Produce and consume at the same time and report end-to-end latency.
    E2e(ProduceArgs),
    /// Find the maximum produce rate, then measure delivery latency at a fraction of it.
    Latency(LatencyArgs),
    /// Measure sequential write bandwidth (write, then one fsync) of a directory.
    Disk(DiskArgs),
}

/// Where to connect and which topic to use.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(long, alias = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use.
    #[arg(long, default_value = "silt-bench")]
    pub topic: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of the topic when it has to be created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bench produce` and `bench e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Broker, topic and output format.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to produce.
    #[arg(long, default_value_t = 500_000)]
    pub count: u64,
    /// Producer acks: 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// Compression codec.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Producer batch.size in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: u64,
    /// Records per second to offer (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Keys: record `i` gets the key `key-<i mod N>` (8 digits), so a compacted topic
    /// keeps N live keys; 0 sends records without a key.
    #[arg(long, default_value_t = 0)]
    pub key_space: u64,
    /// Values are JSON objects of `--record-size` bytes (`{"n": <record number>,
    /// "x": 1.5, "ok": true, "s": "<padding>"}`), as a table topic in json mode takes
    /// them; not with `bench e2e`.
    #[arg(long)]
    pub json_values: bool,
    /// Extra producer settings, `key=value` (repeatable).
    #[arg(long = "producer-config", value_name = "KEY=VALUE")]
    pub producer_config: Vec<String>,
    /// Records produced and flushed before measuring, so connection setup and
    /// metadata lookups are not counted (as in Kafka's ProducerPerformance
    /// warm-up). Not counted in any figure.
    #[arg(long, default_value_t = 10_000)]
    pub warmup_records: u64,
    /// librdkafka `statistics.interval.ms` (0 = off). When set, each slowest
    /// window also names the longest broker round trip (`rtt`) and the longest
    /// wait in the client's queues (`int_latency`) librdkafka saw around it, so a
    /// stall can be put on the broker or on the client.
    #[arg(long, default_value_t = 0)]
    pub client_stats_ms: u64,
}

/// Options of `bench consume`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Broker, topic and output format.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Records to read (default: everything up to the log end at start).
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up after this many seconds without a record.
    #[arg(long, default_value_t = 15)]
    pub idle_timeout_secs: u64,
}

/// Options of `bench latency`.
#[derive(clap::Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Settings of the paced runs. `--count` is records per run; `--rate` must be
    /// left at 0, the rate is found by the full-speed runs.
    #[command(flatten)]
    pub produce: ProduceArgs,
    /// Full-speed runs that find the maximum rate. They write to the topic
    /// `<topic>-max`, which is deleted before the paced runs.
    #[arg(long, default_value_t = 3)]
    pub max_runs: u32,
    /// Records per full-speed run (default: `--count`).
    #[arg(long)]
    pub max_count: Option<u64>,
    /// Producer linger.ms of the full-speed runs (the paced runs use `--linger-ms`).
    #[arg(long, default_value_t = 5)]
    pub max_linger_ms: u64,
    /// Fraction of the highest full-speed rate offered in the paced runs.
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
    /// Paced runs, one after another on the same topic.
    #[arg(long, default_value_t = 6)]
    pub runs: u32,
    /// p99 delivery latency target in ms; the summary counts the runs under it.
    #[arg(long, default_value_t = 5.0)]
    pub p99_target_ms: f64,
    /// Seconds to wait after deleting the full-speed topic, so that its file
    /// deletions do not land in the first paced run.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
    /// Measure the sequential write bandwidth of this directory first (1 GiB, as
    /// `bench disk`), so that the rates can be put next to it.
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
}

/// Options of `bench disk`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiskArgs {
    /// Directory to write the scratch file in (removed afterwards).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Megabytes (MiB) to write.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// Size of each write call, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub block_kb: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `silt bench` subcommand.
pub async fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Produce(produce) => {
            ensure_topic(&produce.target).await?;
            let report = produce_off_runtime(produce).await?;
            report.print();
            report.fail_on_failed_deliveries()
        }
        BenchCommand::E2e(produce) => {
            ensure_topic(&produce.target).await?;
            let report = tokio::task::spawn_blocking(move || run_e2e(&produce))
                .await
                .context("e2e thread panicked")??;
            report.print();
            report.fail_on_failed_deliveries()
        }
        BenchCommand::Consume(consume) => {
            let report = tokio::task::spawn_blocking(move || run_consume(&consume))
                .await
                .context("consumer thread panicked")??;
            report.print();
            Ok(())
        }
        BenchCommand::Latency(latency) => {
            let report = run_latency(latency).await?;
            report.print();
            Ok(())
        }
        BenchCommand::Disk(disk) => {
            let report = tokio::task::spawn_blocking(move || run_disk(&disk))
                .await
                .context("disk thread panicked")??;
            report.print();
            Ok(())
        }
    }
}

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    let _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    config
}

fn admin_client(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    base_config(bootstrap)
        .create()
        .context("creating admin client")
}

/// Creates the topic unless it exists, then waits until every partition has a leader.
async fn ensure_topic(target: &TargetArgs) -> Result<()> {
    let admin = admin_client(&target.bootstrap)?;
    let topic = NewTopic::new(
        &target.topic,
        target.partitions,
        TopicReplication::Fixed(target.replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .context("create_topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("creating topic {name} failed: {code}"),
        }
    }
    let consumer: BaseConsumer = base_config(&target.bootstrap).create()?;
    let topic_name = target.topic.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    tokio::task::spawn_blocking(move || -> Result<()> {
        loop {
            if let Ok(metadata) = consumer.fetch_metadata(Some(&topic_name), Duration::from_secs(5))
                && let Some(topic) = metadata.topics().iter().find(|t| t.name() == topic_name)
                && topic.error().is_none()
                && !topic.partitions().is_empty()
                && topic.partitions().iter().all(|p| p.leader() >= 0)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("topic {topic_name} has no leaders after 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await??;
    Ok(())
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Microseconds since the Unix epoch.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// Shortest sleep of a paced producer that is ahead of its rate: the records due
/// meanwhile go out together when it wakes (Kafka's ProducerPerformance throttles
/// the same way, with 2 ms).
const PACING_MIN_SLEEP: Duration = Duration::from_micros(100);
/// Records an unpaced producer enqueues per clock reading.
const UNPACED_BURST: u64 = 64;

/// Width of a stall window: the report names the windows (by enqueue time) whose
/// records waited longest.
const STALL_WINDOW_US: u64 = 100_000;
/// Stall windows listed in a report.
const STALL_WINDOWS_REPORTED: usize = 3;

/// Delivery latencies of the measured records.
struct LatencyRecord {
    histogram: Histogram<u64>,
    /// Longest delivery latency (µs) of the records enqueued in each
    /// `STALL_WINDOW_US` window since the measurement started.
    window_max_us: Vec<u64>,
}

impl LatencyRecord {
    fn new() -> LatencyRecord {
        LatencyRecord {
            histogram: new_histogram(),
            window_max_us: Vec::new(),
        }
    }

    fn record(&mut self, enqueued_us: u64, latency_us: u64) {
        let _ = self.histogram.record(latency_us);
        let window = (enqueued_us / STALL_WINDOW_US) as usize;
        if self.window_max_us.len() <= window {
            self.window_max_us.resize(window + 1, 0);
        }
        self.window_max_us[window] = self.window_max_us[window].max(latency_us);
    }

    /// The windows with the longest latencies, worst first.
    fn worst_windows(&self) -> Vec<StallWindow> {
        let mut windows: Vec<(usize, u64)> = self
            .window_max_us
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, max)| *max > 0)
            .collect();
        windows.sort_by_key(|window| std::cmp::Reverse(window.1));
        windows
            .into_iter()
            .take(STALL_WINDOWS_REPORTED)
            .map(|(window, max)| StallWindow {
                start_ms: window as u64 * STALL_WINDOW_US / 1000,
                max_latency_ms: max as f64 / 1000.0,
                client_stats: None,
                host_steal_ms: None,
            })
            .collect()
    }
}

/// A window of enqueue time and the longest delivery latency of its records.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StallWindow {
    /// Start of the window, ms after the measurement started.
    pub start_ms: u64,
    /// Longest delivery latency of records enqueued in the window, ms.
    pub max_latency_ms: f64,
    /// With `--client-stats-ms`: where the window's records waited.
    pub client_stats: Option<ClientStatsMax>,
    /// CPU time the hypervisor took from this machine (all CPUs, ms) from the
    /// window's start until its slowest record was acknowledged, read at 50 ms steps
    /// so at most that much more; None where `/proc/stat` counts no steal ([`steal`]).
    pub host_steal_ms: Option<u64>,
}

impl std::fmt::Display for StallWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ms at {} ms", self.max_latency_ms, self.start_ms)?;
        if let Some(stats) = &self.client_stats {
            write!(
                f,
                " (broker rtt max {:.2} ms, client queue max {:.2} ms)",
                stats.rtt_max_ms, stats.queue_max_ms
            )?;
        }
        if let Some(steal) = self.host_steal_ms.filter(|steal| *steal > 0) {
            write!(f, " [host steal {steal} ms]")?;
        }
        Ok(())
    }
}

/// Longest waits librdkafka's statistics report over some span of a run, ms,
/// taken over every broker connection.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ClientStatsMax {
    /// Produce request round trip, request written to response read (`rtt`).
    pub rtt_max_ms: f64,
    /// Enqueue to the record's batch being ready to send, linger included
    /// (`int_latency`).
    pub queue_max_ms: f64,
    /// A ready request waiting for the connection (`outbuf_latency`).
    pub outbuf_max_ms: f64,
}

/// One librdkafka statistics callback: the maxima of the window it closes.
#[derive(Debug, Clone, Copy)]
struct ClientStatsSample {
    /// µs since `DeliveryStats::started` when the window closed.
    at_us: u64,
    max: ClientStatsMax,
}

/// The maxima over the statistics windows that overlap `[from_us, to_us]` (µs
/// since `DeliveryStats::started`); `interval_us` is each window's length.
fn client_stats_between(
    samples: &[ClientStatsSample],
    interval_us: u64,
    from_us: u64,
    to_us: u64,
) -> Option<ClientStatsMax> {
    let overlapping = samples.iter().filter(|sample| {
        sample.at_us >= from_us && sample.at_us.saturating_sub(interval_us) <= to_us
    });
    let mut result: Option<ClientStatsMax> = None;
    for sample in overlapping {
        let max = result.get_or_insert_with(ClientStatsMax::default);
        max.rtt_max_ms = max.rtt_max_ms.max(sample.max.rtt_max_ms);
        max.queue_max_ms = max.queue_max_ms.max(sample.max.queue_max_ms);
        max.outbuf_max_ms = max.outbuf_max_ms.max(sample.max.outbuf_max_ms);
    }
    result
}

/// Delivery bookkeeping shared with librdkafka's callback thread. Enqueue times
/// are µs since `started`; records with an enqueue time before `measure_from_us`
/// are warm-up and not counted.
struct DeliveryStats {
    started: Instant,
    measure_from_us: AtomicU64,
    latency: Mutex<LatencyRecord>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    client_stats: Mutex<Vec<ClientStatsSample>>,
}

struct BenchProducerContext {
    stats: Arc<DeliveryStats>,
}

impl ClientContext for BenchProducerContext {
    fn stats(&self, statistics: Statistics) {
        let at_us = self.stats.started.elapsed().as_micros() as u64;
        let window_max_ms =
            |window: &Option<Window>| window.as_ref().map_or(0.0, |w| w.max as f64 / 1000.0);
        let mut max = ClientStatsMax::default();
        // Bootstrap entries (node id -1) carry only metadata requests.
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            max.rtt_max_ms = max.rtt_max_ms.max(window_max_ms(&broker.rtt));
            max.queue_max_ms = max.queue_max_ms.max(window_max_ms(&broker.int_latency));
            max.outbuf_max_ms = max.outbuf_max_ms.max(window_max_ms(&broker.outbuf_latency));
        }
        self.stats
            .client_stats
            .lock()
            .push(ClientStatsSample { at_us, max });
    }
}

impl ProducerContext for BenchProducerContext {
    /// Microseconds since `stats.started` at enqueue time.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, enqueued_us: usize) {
        match result {
            Ok(_) => {
                let measure_from = self.stats.measure_from_us.load(Ordering::Relaxed);
                let enqueued_us = enqueued_us as u64;
                if enqueued_us < measure_from {
                    return;
                }
                let now_us = self.stats.started.elapsed().as_micros() as u64;
                let latency = now_us.saturating_sub(enqueued_us).max(1);
                self.stats
                    .latency
                    .lock()
                    .record(enqueued_us - measure_from, latency);
                let _ = self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let _ = self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.stats.first_error.lock();
                if first.is_none() {
                    *first = Some(error.to_string());
                }
            }
        }
    }
}

/// A printable value payload; for e2e runs the first 8 bytes are overwritten
/// with the send time.
fn make_payload(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..size.max(8))
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

/// Where the record number sits in a [`make_json_payload`] value: ten digits after
/// `{"n":`.
const JSON_NUMBER_AT: std::ops::Range<usize> = 5..15;

/// A JSON object value of `size` bytes (at least 48) whose `n` is rewritten per record
/// by [`set_json_number`].
fn make_json_payload(size: usize) -> Vec<u8> {
    let head = "{\"n\":1000000000,\"x\":1.5,\"ok\":true,\"s\":\"";
    let padding = size.saturating_sub(head.len() + 2).max(1);
    let mut payload = head.as_bytes().to_vec();
    payload.extend(std::iter::repeat_n(b'a', padding));
    payload.extend_from_slice(b"\"}");
    payload
}

/// Writes record number `index` as `n` of a [`make_json_payload`] value.
fn set_json_number(payload: &mut [u8], index: u64) {
    let number = 1_000_000_000 + index % 1_000_000_000;
    payload[JSON_NUMBER_AT].copy_from_slice(number.to_string().as_bytes());
}

/// Results of a produce run.
#[derive(Debug, serde::Serialize)]
pub struct ProduceReport {
    /// `produce` or `e2e`.
    pub mode: &'static str,
    /// Records acknowledged.
    pub records: u64,
    /// Records that failed.
    pub failed: u64,
    /// Value size in bytes.
    pub record_size: usize,
    /// acks setting.
    pub acks: String,
    /// Compression codec.
    pub compression: String,
    /// Offered rate (0 = unlimited).
    pub target_rate: u64,
    /// Wall-clock time of the first measured send, ms since the Unix epoch: the
    /// stall windows' `start_ms` count from here, to line them up with broker logs.
    pub started_unix_ms: u64,
    /// Seconds from first send to last acknowledgement.
    pub seconds: f64,
    /// Acknowledged records per second.
    pub records_per_sec: f64,
    /// Acknowledged value bytes per second, in MiB.
    pub mib_per_sec: f64,
    /// Delivery latency percentiles in milliseconds.
    pub produce_latency_ms: Percentiles,
    /// End-to-end latency percentiles in milliseconds (e2e only).
    pub e2e_latency_ms: Option<Percentiles>,
    /// Warm-up records produced before measuring (not counted).
    pub warmup_records: u64,
    /// The 100 ms windows of enqueue time with the longest delivery latency.
    pub worst_windows: Vec<StallWindow>,
    /// With `--client-stats-ms`: librdkafka's longest waits over the whole run.
    pub client_stats: Option<ClientStatsMax>,
    /// CPU time the hypervisor took from this machine during the measured span,
    /// ms summed over all CPUs; None where `/proc/stat` counts no steal.
    pub host_steal_ms: Option<u64>,
    /// CPUs the steal is summed over.
    pub cpus: usize,
    /// First delivery error, if any.
    pub first_error: Option<String>,
    #[serde(skip)]
    json: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    fn from_micros(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50, self.p99, self.p999, self.max
        )
    }
}

impl ProduceReport {
    fn print(&self) {
        if self.json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        let rate = if self.target_rate == 0 {
            "max".to_string()
        } else {
            format!("{} records/s", self.target_rate)
        };
        println!(
            "{}: {} records of {} bytes, acks={}, compression={}, offered rate {rate}",
            self.mode, self.records, self.record_size, self.acks, self.compression
        );
        println!(
            "  throughput: {:.0} records/s, {:.2} MiB/s ({:.2} s)",
            self.records_per_sec, self.mib_per_sec, self.seconds
        );
        println!(
            "  produce latency (send -> ack): {}",
            self.produce_latency_ms
        );
        if let Some(e2e) = &self.e2e_latency_ms {
            println!("  end-to-end latency (send -> consumed): {e2e}");
        }
        let windows: Vec<String> = self.worst_windows.iter().map(ToString::to_string).collect();
        println!(
            "  slowest 100 ms windows (max latency at enqueue time): {}",
            windows.join(", ")
        );
        if let Some(steal) = self.host_steal_ms {
            println!(
                "  host steal (CPU time the hypervisor took, {} CPUs): {steal} ms",
                self.cpus
            );
        }
        if let Some(stats) = &self.client_stats {
            println!(
                "  librdkafka maxima: broker rtt {:.2} ms, client queue {:.2} ms, output buffer {:.2} ms",
                stats.rtt_max_ms, stats.queue_max_ms, stats.outbuf_max_ms
            );
        }
        if self.failed > 0 {
            println!(
                "  FAILED deliveries: {} (first: {})",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
    }
}

impl ProduceReport {
    /// A run with failed deliveries is an error (after its report), so scripts stop.
    fn fail_on_failed_deliveries(&self) -> Result<()> {
        if self.failed > 0 {
            anyhow::bail!(
                "{} deliveries failed (first: {})",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }
}

/// [`run_produce`] without a stamp, on a blocking thread (librdkafka's calls block).
async fn produce_off_runtime(args: ProduceArgs) -> Result<ProduceReport> {
    tokio::task::spawn_blocking(move || run_produce(&args, None))
        .await
        .context("producer thread panicked")?
}

/// Produces `args.count` records; when `stamp` is set the first 8 bytes of
/// each value carry the send time in Unix microseconds.
fn run_produce(args: &ProduceArgs, stop: Option<&AtomicBool>) -> Result<ProduceReport> {
    let stamp = stop.is_some();
    let stats = Arc::new(DeliveryStats {
        started: Instant::now(),
        measure_from_us: AtomicU64::new(u64::MAX),
        latency: Mutex::new(LatencyRecord::new()),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
        client_stats: Mutex::new(Vec::new()),
    });
    let mut config = base_config(&args.target.bootstrap);
    let acks = if args.acks == "all" {
        "-1"
    } else {
        args.acks.as_str()
    };
    let _ = config
        .set("acks", acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000");
    if args.client_stats_ms > 0 {
        let _ = config.set("statistics.interval.ms", args.client_stats_ms.to_string());
    }
    for pair in &args.producer_config {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--producer-config {pair:?} is not key=value"))?;
        let _ = config.set(key, value);
    }
    let producer: ThreadedProducer<BenchProducerContext> = config
        .create_with_context(BenchProducerContext {
            stats: stats.clone(),
        })
        .context("creating producer")?;
    let steal_sampler = steal::StealSampler::start(stats.started);

    if args.json_values && stamp {
        bail!("--json-values is for bench produce, not e2e (e2e stamps the value)");
    }
    let mut payload = if args.json_values {
        make_json_payload(args.record_size)
    } else {
        make_payload(args.record_size)
    };
    if args.warmup_records > 0 {
        if stamp {
            // An e2e consumer skips values stamped 0.
            payload[..8].copy_from_slice(&0u64.to_be_bytes());
        }
        for index in 0..args.warmup_records {
            let key = record_key(args.key_space, index);
            let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&args.target.topic, 0)
                .payload(payload.as_slice());
            if let Some(key) = &key {
                record = record.key(key.as_bytes());
            }
            send_record(&producer, record, index)?;
        }
        producer
            .flush(Duration::from_secs(60))
            .context("flushing the warm-up records")?;
    }
    let send_start = Instant::now();
    let started_unix_ms = unix_micros() / 1000;
    stats.measure_from_us.store(
        stats.started.elapsed().as_micros() as u64,
        Ordering::Relaxed,
    );
    let mut index = 0u64;
    while index < args.count {
        // Everything due by now goes out in one burst under one clock reading (and one
        // of the wall clock for the timestamps); reading the clock and sleeping per
        // record cost the client more CPU than the broker spent on the records.
        let now = Instant::now();
        let burst_end = if args.rate > 0 {
            let due = ((now - send_start).as_secs_f64() * args.rate as f64) as u64 + 1;
            if due <= index {
                let next = send_start + Duration::from_secs_f64(index as f64 / args.rate as f64);
                std::thread::sleep(next.saturating_duration_since(now).max(PACING_MIN_SLEEP));
                continue;
            }
            due.min(args.count)
        } else {
            (index + UNPACED_BURST).min(args.count)
        };
        let wall_us = unix_micros();
        if stamp {
            payload[..8].copy_from_slice(&wall_us.to_be_bytes());
        }
        let mut enqueued_us = (now - stats.started).as_micros() as usize;
        while index < burst_end {
            let key = record_key(args.key_space, index);
            if args.json_values {
                set_json_number(&mut payload, index);
            }
            let mut record =
                BaseRecord::<[u8], [u8], usize>::with_opaque_to(&args.target.topic, enqueued_us)
                    .payload(payload.as_slice())
                    .timestamp((wall_us / 1000) as i64);
            if let Some(key) = &key {
                record = record.key(key.as_bytes());
            }
            if send_record(&producer, record, index)? {
                // It waited for queue space: later records of the burst are enqueued now.
                enqueued_us = stats.started.elapsed().as_micros() as usize;
            }
            index += 1;
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    let seconds = send_start.elapsed().as_secs_f64();
    let until_us = stats.started.elapsed().as_micros() as u64;
    let steal = steal_sampler.finish();
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let (histogram, mut worst_windows) = {
        let latency = stats.latency.lock();
        (latency.histogram.clone(), latency.worst_windows())
    };
    let measure_from_us = stats.measure_from_us.load(Ordering::Relaxed);
    let client_samples = stats.client_stats.lock().clone();
    let interval_us = args.client_stats_ms * 1000;
    for window in &mut worst_windows {
        // From the window's start until its slowest record was acknowledged.
        let from_us = measure_from_us + window.start_ms * 1000;
        let to_us = from_us + STALL_WINDOW_US + (window.max_latency_ms * 1000.0) as u64;
        if args.client_stats_ms > 0 {
            window.client_stats =
                client_stats_between(&client_samples, interval_us, from_us, to_us);
        }
        window.host_steal_ms = steal.between(from_us, to_us.min(until_us));
    }
    let client_stats = (args.client_stats_ms > 0)
        .then(|| client_stats_between(&client_samples, interval_us, measure_from_us, until_us))
        .flatten();
    let host_steal_ms = steal.between(measure_from_us, until_us);
    let first_error = stats.first_error.lock().clone();
    Ok(ProduceReport {
        mode: if stamp { "e2e" } else { "produce" },
        records: delivered,
        failed,
        record_size: args.record_size,
        acks: args.acks.clone(),
        compression: args.compression.clone(),
        target_rate: args.rate,
        started_unix_ms,
        seconds,
        records_per_sec: delivered as f64 / seconds,
        mib_per_sec: (delivered as f64 * args.record_size as f64) / seconds / (1024.0 * 1024.0),
        produce_latency_ms: Percentiles::from_micros(&histogram),
        e2e_latency_ms: None,
        warmup_records: args.warmup_records,
        worst_windows,
        client_stats,
        host_steal_ms,
        cpus: steal.cpus,
        first_error,
        json: args.target.json,
    })
}

/// The key of record `index` with `--key-space key_space`.
fn record_key(key_space: u64, index: u64) -> Option<String> {
    (key_space > 0).then(|| format!("key-{:08}", index % key_space))
}

/// Enqueues `record`, waiting while the producer's queue is full; true when it
/// had to wait.
fn send_record<'a>(
    producer: &ThreadedProducer<BenchProducerContext>,
    mut record: BaseRecord<'a, [u8], [u8], usize>,
    index: u64,
) -> Result<bool> {
    let mut waited = false;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(waited),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                waited = true;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => bail!("enqueueing record {index} failed: {error}"),
        }
    }
}

/// Assigns every partition of `topic` to `consumer` at the given start offsets.
fn assign_all(consumer: &BaseConsumer, topic: &str, starts: &[Offset]) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    for (partition, start) in starts.iter().enumerate() {
        assignment.add_partition_offset(topic, partition as i32, *start)?;
    }
    consumer.assign(&assignment).context("assigning partitions")
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<usize> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("fetching metadata")?;
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} not in metadata"))?;
    if let Some(error) = topic_metadata.error() {
        bail!("topic {topic}: {error:?}");
    }
    Ok(topic_metadata.partitions().len())
}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    let _ = config
        .set("group.id", "silt-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "5")
        .set("auto.offset.reset", "earliest");
    config
}

fn run_e2e(args: &ProduceArgs) -> Result<ProduceReport> {
    let consumer: BaseConsumer = consumer_config(&args.target.bootstrap)
        .create()
        .context("creating consumer")?;
    let topic = args.target.topic.clone();
    let partitions = partition_count(&consumer, &topic)?;
    // Start right after what is in the topic already.
    let mut starts = Vec::with_capacity(partitions);
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition as i32, Duration::from_secs(10))
            .context("fetching watermarks")?;
        starts.push(Offset::Offset(high));
    }
    assign_all(&consumer, &topic, &starts)?;

    let stop = Arc::new(AtomicBool::new(false));
    let expected = args.count;
    let consumer_stop = stop.clone();
    let consumer_thread = std::thread::spawn(move || -> Result<(Histogram<u64>, u64)> {
        let mut histogram = new_histogram();
        let mut received = 0u64;
        let mut idle_since = Instant::now();
        while received < expected {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    idle_since = Instant::now();
                    let now = unix_micros();
                    let sent = message
                        .payload()
                        .and_then(|payload| payload.get(..8))
                        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                        .map_or(0, u64::from_be_bytes);
                    if sent == 0 {
                        // A warm-up record.
                        continue;
                    }
                    let _ = histogram.record(now.saturating_sub(sent).max(1));
                    received += 1;
                }
                Some(Err(error)) => bail!("consumer error: {error}"),
                None => {
                    let idle = idle_since.elapsed() > Duration::from_secs(30);
                    if idle && consumer_stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
        Ok((histogram, received))
    });
    let produced = run_produce(args, Some(&stop));
    stop.store(true, Ordering::Relaxed);
    let consumed = consumer_thread
        .join()
        .map_err(|_| anyhow!("consumer thread panicked"))?;
    let mut report = produced?;
    let (histogram, received) = consumed?;
    if received < report.records {
        bail!(
            "e2e: consumed {received} of {} acknowledged records",
            report.records
        );
    }
    report.e2e_latency_ms = Some(Percentiles::from_micros(&histogram));
    Ok(report)
}

/// Results of a consume run.
#[derive(Debug, serde::Serialize)]
pub struct ConsumeReport {
    /// Records read.
    pub records: u64,
    /// Value and key bytes read.
    pub bytes: u64,
    /// Seconds from assignment to the last record.
    pub seconds: f64,
    /// Records per second.
    pub records_per_sec: f64,
    /// MiB per second.
    pub mib_per_sec: f64,
    #[serde(skip)]
    json: bool,
}

impl ConsumeReport {
    fn print(&self) {
        if self.json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        println!("consume: {} records, {} bytes", self.records, self.bytes);
        println!(
            "  throughput: {:.0} records/s, {:.2} MiB/s ({:.2} s)",
            self.records_per_sec, self.mib_per_sec, self.seconds
        );
    }
}

fn run_consume(args: &ConsumeArgs) -> Result<ConsumeReport> {
    let consumer: BaseConsumer = consumer_config(&args.target.bootstrap)
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .context("creating consumer")?;
    let topic = &args.target.topic;
    let partitions = partition_count(&consumer, topic)?;
    let mut available = 0u64;
    let mut ends = Vec::with_capacity(partitions);
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition as i32, Duration::from_secs(10))
            .context("fetching watermarks")?;
        available += (high - low).max(0) as u64;
        ends.push(high);
    }
    let target = args.count.unwrap_or(available);
    if target == 0 {
        bail!("topic {topic} is empty: run `silt bench produce` first");
    }
    assign_all(&consumer, topic, &vec![Offset::Beginning; partitions])?;
    let started = Instant::now();
    let mut last_record = started;
    let mut records = 0u64;
    let mut bytes = 0u64;
    while records < target {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += (message.payload_len() + message.key().map_or(0, <[u8]>::len)) as u64;
                last_record = Instant::now();
            }
            Some(Err(error)) => bail!("consumer error: {error}"),
            None => {
                if last_record.elapsed() > Duration::from_secs(args.idle_timeout_secs) {
                    bail!(
                        "no record for {} s after reading {records} of {target}",
                        args.idle_timeout_secs
                    );
                }
            }
        }
    }
    let seconds = last_record.duration_since(started).as_secs_f64().max(1e-6);
    Ok(ConsumeReport {
        records,
        bytes,
        seconds,
        records_per_sec: records as f64 / seconds,
        mib_per_sec: bytes as f64 / seconds / (1024.0 * 1024.0),
        json: args.target.json,
    })
}

/// Results of `bench latency`.
#[derive(Debug, serde::Serialize)]
pub struct LatencyReport {
    /// Sequential write bandwidth of `--disk-dir`, MiB/s, when measured.
    pub disk_mib_per_sec: Option<f64>,
    /// Acknowledged records/s of each full-speed run.
    pub max_rates: Vec<f64>,
    /// The highest of `max_rates`, records/s.
    pub max_rate: f64,
    /// Records/s offered in the paced runs (`fraction` of `max_rate`).
    pub offered_rate: u64,
    /// Fraction of the maximum rate offered.
    pub fraction: f64,
    /// The paced runs, in order.
    pub runs: Vec<ProduceReport>,
    /// p99 target in ms.
    pub p99_target_ms: f64,
    /// Paced runs whose p99 is under the target and that lost no record.
    pub runs_under_target: usize,
    /// The same count over the runs with little host steal; None where steal is
    /// not counted.
    pub calm_runs: Option<CalmRuns>,
    #[serde(skip)]
    json: bool,
}

/// Paced runs during which the hypervisor took little CPU time from this machine.
/// A run's p99 stands for the broker only if the machine ran it: a vCPU stolen for
/// 20 ms stops broker and load generator alike, and at half the maximum rate the
/// backlog of one such stall can hold 1% of a 5 s run's records.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CalmRuns {
    /// Steal allowed per CPU over a run, ms ([`CALM_RUN_MAX_STEAL_MS_PER_CPU`]).
    pub max_steal_ms_per_cpu: u64,
    /// Runs within that steal.
    pub runs: usize,
    /// Of those, runs under the p99 target that lost no record.
    pub under_target: usize,
}

/// Steal per CPU over a paced run up to which the run counts as calm: one
/// `/proc/stat` tick (10 ms), the counter's own resolution.
pub const CALM_RUN_MAX_STEAL_MS_PER_CPU: u64 = 10;

impl LatencyReport {
    fn print(&self) {
        if self.json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        let rates: Vec<String> = self
            .max_rates
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect();
        println!(
            "maximum rate: {} records/s in {} full-speed runs; highest {:.0} records/s",
            rates.join(", "),
            self.max_rates.len(),
            self.max_rate
        );
        if let Some(disk) = self.disk_mib_per_sec {
            println!("sequential write bandwidth: {disk:.2} MiB/s");
        }
        println!(
            "paced runs at {} records/s ({:.2} of the maximum):",
            self.offered_rate, self.fraction
        );
        println!(
            "  {:>3} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9}  slowest 100 ms window",
            "run", "records/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "steal ms"
        );
        for (index, run) in self.runs.iter().enumerate() {
            let latency = &run.produce_latency_ms;
            let window = run
                .worst_windows
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let failed = if run.failed > 0 {
                format!("  FAILED deliveries: {}", run.failed)
            } else {
                String::new()
            };
            let steal = run
                .host_steal_ms
                .map_or_else(|| "-".to_string(), |steal| steal.to_string());
            println!(
                "  {:>3} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {steal:>9}  {window}{failed}",
                index + 1,
                run.records_per_sec,
                latency.p50,
                latency.p99,
                latency.p999,
                latency.max
            );
        }
        let mut p99s: Vec<f64> = self
            .runs
            .iter()
            .map(|run| run.produce_latency_ms.p99)
            .collect();
        p99s.sort_by(f64::total_cmp);
        let median = p99s.get(p99s.len() / 2).copied().unwrap_or(0.0);
        println!(
            "p99 under {:.2} ms in {} of {} runs (median p99 {median:.2} ms)",
            self.p99_target_ms,
            self.runs_under_target,
            self.runs.len()
        );
        if let Some(calm) = &self.calm_runs {
            println!(
                "  of the {} runs in which the hypervisor took at most {} ms per CPU (steal ms: all CPUs together): {} under",
                calm.runs, calm.max_steal_ms_per_cpu, calm.under_target
            );
        }
    }
}

/// Finds the maximum produce rate with full-speed runs on `<topic>-max`, deletes
/// that topic, then offers `fraction` of the highest rate in paced runs on
/// `topic`. Fails when `--rate` is set, when `fraction` is not in (0, 1], or when
/// a full-speed run acknowledges nothing.
async fn run_latency(args: LatencyArgs) -> Result<LatencyReport> {
    if args.produce.rate != 0 {
        bail!("bench latency finds the rate itself: leave out --rate (use --fraction)");
    }
    if !(args.fraction > 0.0 && args.fraction <= 1.0) {
        bail!("--fraction must be in (0, 1], got {}", args.fraction);
    }
    let disk_mib_per_sec = match &args.disk_dir {
        Some(dir) => {
            let disk = DiskArgs {
                dir: dir.clone(),
                size_mb: 1024,
                block_kb: 1024,
                json: false,
            };
            let report = tokio::task::spawn_blocking(move || run_disk(&disk))
                .await
                .context("disk thread panicked")??;
            Some(report.mib_per_sec)
        }
        None => None,
    };

    let mut full_speed = args.produce.clone();
    full_speed.target.topic = format!("{}-max", args.produce.target.topic);
    full_speed.linger_ms = args.max_linger_ms;
    full_speed.count = args.max_count.unwrap_or(args.produce.count);
    ensure_topic(&full_speed.target).await?;
    let mut max_rates = Vec::new();
    for run in 1..=args.max_runs.max(1) {
        let report = produce_off_runtime(full_speed.clone()).await?;
        if report.failed > 0 {
            bail!(
                "full-speed run {run} lost {} records (first error: {})",
                report.failed,
                report.first_error.as_deref().unwrap_or("?")
            );
        }
        if !args.produce.target.json {
            println!(
                "full-speed run {run}: {:.0} records/s",
                report.records_per_sec
            );
        }
        max_rates.push(report.records_per_sec);
    }
    delete_topic(&full_speed.target).await?;
    let max_rate = max_rates.iter().copied().fold(0.0, f64::max);
    let offered_rate = (max_rate * args.fraction).round() as u64;
    if offered_rate == 0 {
        bail!("the full-speed runs acknowledged no records");
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;

    let mut paced = args.produce.clone();
    paced.rate = offered_rate;
    ensure_topic(&paced.target).await?;
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        let report = produce_off_runtime(paced.clone()).await?;
        runs.push(report);
    }
    let under_target =
        |run: &&ProduceReport| run.failed == 0 && run.produce_latency_ms.p99 < args.p99_target_ms;
    let runs_under_target = runs.iter().filter(under_target).count();
    let calm_runs = runs.iter().all(|run| run.host_steal_ms.is_some()).then(|| {
        let calm: Vec<&ProduceReport> = runs
            .iter()
            .filter(|run| {
                run.host_steal_ms.unwrap_or(u64::MAX)
                    <= CALM_RUN_MAX_STEAL_MS_PER_CPU * run.cpus.max(1) as u64
            })
            .collect();
        CalmRuns {
            max_steal_ms_per_cpu: CALM_RUN_MAX_STEAL_MS_PER_CPU,
            runs: calm.len(),
            under_target: calm.into_iter().filter(|run| under_target(run)).count(),
        }
    });
    Ok(LatencyReport {
        disk_mib_per_sec,
        max_rates,
        max_rate,
        offered_rate,
        fraction: args.fraction,
        runs,
        p99_target_ms: args.p99_target_ms,
        runs_under_target,
        calm_runs,
        json: args.produce.target.json,
    })
}

/// Deletes the topic (a missing topic is not an error).
async fn delete_topic(target: &TargetArgs) -> Result<()> {
    let admin = admin_client(&target.bootstrap)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(&[target.topic.as_str()], &options)
        .await
        .context("delete_topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => bail!("deleting topic {name} failed: {code}"),
        }
    }
    Ok(())
}

/// Results of a disk run.
#[derive(Debug, serde::Serialize)]
pub struct DiskReport {
    /// Bytes written.
    pub bytes: u64,
    /// Seconds for the writes alone.
    pub write_seconds: f64,
    /// Seconds for writes plus the final fsync.
    pub total_seconds: f64,
    /// MiB/s including the fsync.
    pub mib_per_sec: f64,
    #[serde(skip)]
    json: bool,
}

impl DiskReport {
    fn print(&self) {
        if self.json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        println!(
            "disk: wrote {} MiB sequentially in {:.2} s + fsync = {:.2} s",
            self.bytes / (1024 * 1024),
            self.write_seconds,
            self.total_seconds
        );
        println!(
            "  sequential write bandwidth: {:.2} MiB/s",
            self.mib_per_sec
        );
    }
}

fn run_disk(args: &DiskArgs) -> Result<DiskReport> {
    let block_size = args.block_kb.max(4) * 1024;
    let total = args.size_mb.max(1) * 1024 * 1024;
    let path = args
        .dir
        .join(format!(".silt-bench-disk-{}", std::process::id()));
    let result = write_and_sync(&path, total, block_size);
    let _ = std::fs::remove_file(&path);
    let (write_seconds, total_seconds) = result?;
    Ok(DiskReport {
        bytes: total,
        write_seconds,
        total_seconds,
        mib_per_sec: total as f64 / total_seconds / (1024.0 * 1024.0),
        json: args.json,
    })
}

/// Writes `total` bytes to a new file at `path`, then fsyncs it; returns the
/// seconds taken by the writes and by writes plus fsync.
fn write_and_sync(path: &std::path::Path, total: u64, block_size: usize) -> Result<(f64, f64)> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating scratch file {}", path.display()))?;
    let mut block = vec![0u8; block_size];
    rand::rng().fill(&mut block[..]);
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let chunk = (total - written).min(block_size as u64) as usize;
        file.write_all(&block[..chunk])
            .context("writing scratch file")?;
        written += chunk as u64;
    }
    let write_seconds = started.elapsed().as_secs_f64();
    file.sync_all().context("fsync")?;
    Ok((write_seconds, started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_parse_with_their_record_number() {
        let mut payload = make_json_payload(100);
        assert_eq!(payload.len(), 100);
        set_json_number(&mut payload, 42);
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["n"], 1_000_000_042u64);
        assert_eq!(value["ok"], true);
    }
}
