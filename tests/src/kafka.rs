//! Kafka client helpers on the `rdkafka` crate, shared by the tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Per-request timeout used by the helpers.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A client config pointing at `bootstrap` with test-friendly timeouts.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    let _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "2000");
    config
}

/// A producer with the given extra settings.
pub fn producer(bootstrap: &str, settings: &[(&str, &str)]) -> Result<FutureProducer> {
    let mut config = client_config(bootstrap);
    let _ = config
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    for (key, value) in settings {
        let _ = config.set(*key, *value);
    }
    config.create().context("creating producer")
}

/// A consumer in `group` reading from the earliest offset, without auto-commit.
pub fn stream_consumer(
    bootstrap: &str,
    group: &str,
    settings: &[(&str, &str)],
) -> Result<StreamConsumer> {
    let mut config = client_config(bootstrap);
    let _ = config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (key, value) in settings {
        let _ = config.set(*key, *value);
    }
    config.create().context("creating consumer")
}

/// A consumer without a group, used for assign()-style reads and metadata.
pub fn base_consumer(bootstrap: &str) -> Result<BaseConsumer> {
    base_consumer_in_group(bootstrap, "silt-tests-metadata")
}

/// A consumer of `group` that never joins it by itself (no subscription, no
/// auto-commit): for committing and fetching the group's offsets directly.
pub fn base_consumer_in_group(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    let mut config = client_config(bootstrap);
    let _ = config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    config.create().context("creating base consumer")
}

/// An admin client.
pub fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    client_config(bootstrap)
        .create()
        .context("creating admin client")
}

/// Creates a topic with one replica per partition and waits until its metadata shows
/// every partition with a leader.
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    create_replicated_topic(bootstrap, topic, partitions, 1, configs).await
}

/// Configs of a tiered topic with small segments (16 KiB, so a few thousand records
/// make several), kept forever: what the restore and replica tests archive.
pub const ARCHIVED_TOPIC_CONFIGS: [(&str, &str); 3] = [
    ("remote.storage.enable", "true"),
    ("segment.bytes", "16384"),
    ("retention.ms", "-1"),
];

/// An idempotent acks=all producer whose batches fit [`ARCHIVED_TOPIC_CONFIGS`]'
/// segments.
pub fn archiving_producer(bootstrap: &str) -> Result<FutureProducer> {
    producer(
        bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("batch.size", "8192"),
        ],
    )
}

/// Creates a topic with `replication_factor` replicas per partition and waits until its
/// metadata shows every partition with a leader.
pub async fn create_replicated_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin(bootstrap)?;
    let mut new_topic = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    // A request that timed out in the client (a cluster just started on a loaded
    // machine) is sent again; the topic it may have created then already exists.
    let mut attempt = 1;
    let results = loop {
        match admin.create_topics([&new_topic], &options).await {
            Err(KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut)) if attempt < 3 => {
                attempt += 1;
            }
            other => break other.context("create_topics request")?,
        }
    };
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempt > 1 => {}
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                bail!("topic {name} already exists")
            }
            Err((name, code)) => bail!("creating topic {name} failed: {code:?}"),
        }
    }
    wait_for_partitions(bootstrap, topic, partitions)
}

/// Waits until metadata lists `topic` with `partitions` partitions, each with a leader.
pub fn wait_for_partitions(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let consumer = base_consumer(bootstrap)?;
    crate::wait_until("topic metadata", CLIENT_TIMEOUT, || {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let Some(topic_metadata) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        let ready = topic_metadata.error().is_none()
            && topic_metadata.partitions().len() == partitions as usize
            && topic_metadata.partitions().iter().all(|p| p.leader() >= 0);
        Ok(ready.then_some(()))
    })
}

/// Low and high watermark of every partition of `topic`.
pub fn watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>> {
    let consumer = base_consumer(bootstrap)?;
    (0..partitions)
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, partition, CLIENT_TIMEOUT)
                .with_context(|| format!("watermarks of {topic}-{partition}"))
        })
        .collect()
}

/// Sum of high watermarks over the partitions of `topic`.
pub fn total_high_watermark(bootstrap: &str, topic: &str, partitions: i32) -> Result<i64> {
    Ok(watermarks(bootstrap, topic, partitions)?
        .iter()
        .map(|(_, high)| high)
        .sum())
}

/// One consumed record, detached from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Value bytes, if any.
    pub value: Option<Vec<u8>>,
    /// Timestamp in milliseconds, if any.
    pub timestamp: Option<i64>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Received {
    /// Copies what a test needs out of a consumed message.
    pub fn from_message(message: &impl Message) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Received {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp().to_millis(),
            headers,
        }
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    /// The key as UTF-8 text.
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }
}

/// Reads `count` records from `consumer` within `timeout`.
pub async fn receive(
    consumer: &StreamConsumer,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Received>> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            bail!(
                "received {} of {count} records within {timeout:?}",
                received.len()
            );
        }
        match tokio::time::timeout(remaining, consumer.recv()).await {
            Ok(Ok(message)) => received.push(Received::from_message(&message)),
            Ok(Err(error)) => bail!("consumer error: {error}"),
            Err(_) => {}
        }
    }
    Ok(received)
}

/// Reads every record of `topic` (all partitions, from offset 0 up to the
/// current high watermarks) with a fresh, group-less assignment.
pub async fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<Received>> {
    let ends = watermarks(bootstrap, topic, partitions)?;
    let expected: i64 = ends.iter().map(|(low, high)| high - low).sum();
    let consumer = stream_consumer(
        bootstrap,
        &format!("read-all-{}", rand::random::<u64>()),
        &[],
    )?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let records = receive(&consumer, expected as usize, Duration::from_secs(60)).await?;
    Ok(records)
}

/// Reads one partition from its log start up to the high watermark taken at the start,
/// however many records compaction left: the read ends at the partition's end
/// (`enable.partition.eof`), not at a record count. Returns the records (possibly some
/// past the high watermark) and that high watermark. Any consumer error fails it.
pub fn read_to_end(bootstrap: &str, topic: &str, partition: i32) -> Result<(Vec<Received>, i64)> {
    let (_, high) = base_consumer(bootstrap)?
        .fetch_watermarks(topic, partition, CLIENT_TIMEOUT)
        .with_context(|| format!("watermarks of {topic}-{partition}"))?;
    if high == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut config = client_config(bootstrap);
    let _ = config
        .set("group.id", format!("read-to-end-{}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config.create().context("creating consumer")?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => records.push(Received::from_message(&message)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                let position = consumer
                    .position()?
                    .find_partition(topic, partition)
                    .and_then(|element| element.offset().to_raw())
                    .unwrap_or(-1);
                if position >= high {
                    return Ok((records, high));
                }
            }
            Some(Err(error)) => bail!("consumer error reading {topic}-{partition}: {error}"),
            None => {}
        }
    }
    bail!(
        "read {} records of {topic}-{partition} but not its end {high} within 60 s",
        records.len()
    )
}

/// Produces `count` records `key-i`/`value-i` (0-based, starting at `first`)
/// and returns (partition, offset) per record.
pub async fn produce_numbered(
    producer: &FutureProducer,
    topic: &str,
    first: usize,
    count: usize,
) -> Result<Vec<(i32, i64)>> {
    let mut futures = Vec::with_capacity(count);
    for index in first..first + count {
        let key = format!("key-{index}");
        let value = format!("value-{index}");
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        let future = producer
            .send_result(record)
            .map_err(|(error, _)| anyhow!("enqueue failed: {error}"))?;
        futures.push(future);
    }
    let mut positions = Vec::with_capacity(count);
    for future in futures {
        let delivery = future
            .await
            .context("delivery future cancelled")?
            .map_err(|(error, _)| anyhow!("delivery failed: {error}"))?;
        positions.push((delivery.partition, delivery.offset));
    }
    Ok(positions)
}

/// Parses `value-<n>` payloads into their numbers.
pub fn numbered_values(records: &[Received]) -> Result<Vec<usize>> {
    records
        .iter()
        .map(|record| {
            let text = record.value_str();
            text.strip_prefix("value-")
                .and_then(|number| number.parse().ok())
                .ok_or_else(|| anyhow!("unexpected value {text:?}"))
        })
        .collect()
}

/// Groups records by partition, keeping consumption order.
pub fn by_partition(records: &[Received]) -> BTreeMap<i32, Vec<Received>> {
    let mut map: BTreeMap<i32, Vec<Received>> = BTreeMap::new();
    for record in records {
        map.entry(record.partition)
            .or_default()
            .push(record.clone());
    }
    map
}
