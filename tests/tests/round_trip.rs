//! Produce/consume round trips through a real broker.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::SiltProcess;
use silt_tests::kafka::{
    self, Received, base_consumer, create_topic, producer, read_all, stream_consumer,
};

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// What a test produced for one record, to compare with what comes back.
#[derive(Debug, Clone)]
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn sample_record(index: usize) -> Sent {
    // Every 10th record has no key, every 15th no value (a tombstone shape).
    let key = (!index.is_multiple_of(10)).then(|| format!("key-{}", index % 37).into_bytes());
    let value = (!index.is_multiple_of(15))
        .then(|| format!("value-{index}-{}", "x".repeat(index % 50)).into_bytes());
    let headers = vec![
        ("index".to_string(), Some(index.to_string().into_bytes())),
        ("nullable".to_string(), None),
        ("utf8-é".to_string(), Some("ü".as_bytes().to_vec())),
    ];
    Sent {
        key,
        value,
        timestamp: BASE_TIMESTAMP + index as i64 * 7,
        headers,
    }
}

async fn produce_samples(
    bootstrap: &str,
    topic: &str,
    count: usize,
    compression: &str,
) -> Result<()> {
    let producer = producer(
        bootstrap,
        &[("compression.type", compression), ("acks", "all")],
    )?;
    let mut deliveries = Vec::new();
    for index in 0..count {
        let sent = sample_record(index);
        let mut headers = OwnedHeaders::new();
        for (key, value) in &sent.headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: value.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .timestamp(sent.timestamp)
            .headers(headers)
            .partition((index % 3) as i32);
        if let Some(key) = &sent.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &sent.value {
            record = record.payload(value.as_slice());
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| anyhow!("enqueue failed: {error}"))?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        let _ = delivery
            .await?
            .map_err(|(error, _)| anyhow!("delivery failed: {error}"))?;
    }
    Ok(())
}

fn check_samples(received: &[Received], count: usize) -> Result<()> {
    ensure!(
        received.len() == count,
        "read {} records, produced {count}",
        received.len()
    );
    let mut by_index = BTreeMap::new();
    for record in received {
        let index: usize = record
            .headers
            .iter()
            .find(|(key, _)| key == "index")
            .and_then(|(_, value)| value.as_ref())
            .and_then(|value| String::from_utf8_lossy(value).parse().ok())
            .with_context(|| format!("record without index header: {record:?}"))?;
        ensure!(
            by_index.insert(index, record.clone()).is_none(),
            "record {index} read twice"
        );
    }
    for index in 0..count {
        let expected = sample_record(index);
        let got = by_index
            .get(&index)
            .with_context(|| format!("record {index} missing"))?;
        ensure!(
            got.partition == (index % 3) as i32,
            "record {index} on partition {}",
            got.partition
        );
        ensure!(
            got.key == expected.key,
            "record {index} key {:?} != {:?}",
            got.key,
            expected.key
        );
        ensure!(got.value == expected.value, "record {index} value differs");
        ensure!(
            got.timestamp == Some(expected.timestamp),
            "record {index} timestamp {:?} != {}",
            got.timestamp,
            expected.timestamp
        );
        ensure!(
            got.headers == expected.headers,
            "record {index} headers {:?} != {:?}",
            got.headers,
            expected.headers
        );
    }
    // Offsets are dense per partition and in production order.
    for (partition, records) in kafka::by_partition(received) {
        for (position, record) in records.iter().enumerate() {
            ensure!(
                record.offset == position as i64,
                "partition {partition}: record at position {position} has offset {}",
                record.offset
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_with_keys_headers_and_timestamps() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "round-trip", 3, &[]).await?;
    produce_samples(&bootstrap, "round-trip", 600, "none").await?;
    let received = read_all(&bootstrap, "round-trip", 3).await?;
    check_samples(&received, 600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_round_trip_for_every_codec() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compressed-{codec}");
        create_topic(&bootstrap, &topic, 3, &[]).await?;
        produce_samples(&bootstrap, &topic, 300, codec).await?;
        let received = read_all(&bootstrap, &topic, 3)
            .await
            .with_context(|| format!("reading {codec} topic"))?;
        check_samples(&received, 300).with_context(|| format!("codec {codec}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reads_from_the_middle_after_seek() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "seek", 1, &[]).await?;
    let producer = producer(&bootstrap, &[])?;
    let _ = kafka::produce_numbered(&producer, "seek", 0, 200).await?;
    let consumer = stream_consumer(&bootstrap, "seek-reader", &[])?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("seek", 0, Offset::Offset(150))?;
    consumer.assign(&assignment)?;
    let records = kafka::receive(&consumer, 50, Duration::from_secs(30)).await?;
    let numbers = kafka::numbered_values(&records)?;
    ensure!(
        numbers == (150..200).collect::<Vec<_>>(),
        "read {numbers:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_finds_first_record_at_or_after_timestamp() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "by-time", 1, &[]).await?;
    let producer = producer(&bootstrap, &[("linger.ms", "0")])?;
    // One record per second of (fake) time; several batches.
    for index in 0..100i64 {
        let value = format!("value-{index}");
        let record: FutureRecord<'_, str, str> = FutureRecord::to("by-time")
            .payload(value.as_str())
            .timestamp(BASE_TIMESTAMP + index * 1000);
        let _ = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| anyhow!("produce failed: {error}"))?;
    }
    let consumer = base_consumer(&bootstrap)?;
    let lookup = |timestamp: i64| -> Result<Offset> {
        let mut query = TopicPartitionList::new();
        query.add_partition_offset("by-time", 0, Offset::Offset(timestamp))?;
        let answer = consumer.offsets_for_times(query, Duration::from_secs(15))?;
        let element = answer
            .find_partition("by-time", 0)
            .context("partition missing from ListOffsets answer")?;
        element.error()?;
        Ok(element.offset())
    };
    let cases = [
        (BASE_TIMESTAMP - 5_000, Offset::Offset(0)),
        (BASE_TIMESTAMP, Offset::Offset(0)),
        (BASE_TIMESTAMP + 1, Offset::Offset(1)),
        (BASE_TIMESTAMP + 50_500, Offset::Offset(51)),
        (BASE_TIMESTAMP + 99_000, Offset::Offset(99)),
        (BASE_TIMESTAMP + 99_001, Offset::End),
    ];
    for (timestamp, expected) in cases {
        let got = lookup(timestamp)?;
        ensure!(
            got == expected,
            "ListOffsets(timestamp={timestamp}) returned {got:?}, expected {expected:?}"
        );
    }
    let (low, high) = consumer.fetch_watermarks("by-time", 0, Duration::from_secs(15))?;
    ensure!(
        (low, high) == (0, 100),
        "watermarks ({low}, {high}) != (0, 100)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_for_all_topics_lists_created_topics() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "listed-a", 2, &[]).await?;
    create_topic(&bootstrap, "listed-b", 1, &[]).await?;
    let consumer = base_consumer(&bootstrap)?;
    // A Metadata request with a null topic list (what `kcat -L` sends).
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(15))?;
    let topics: BTreeMap<&str, usize> = metadata
        .topics()
        .iter()
        .map(|topic| (topic.name(), topic.partitions().len()))
        .collect();
    ensure!(
        topics.get("listed-a") == Some(&2),
        "all-topics metadata: {topics:?}"
    );
    ensure!(
        topics.get("listed-b") == Some(&1),
        "all-topics metadata: {topics:?}"
    );
    ensure!(metadata.brokers().len() == 1, "expected one broker");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_created_topic_gets_num_partitions() -> Result<()> {
    let silt = silt_tests::SiltOptions::new()
        .flag("--num-partitions", 3)
        .start()?;
    let bootstrap = silt.bootstrap();
    let producer = producer(&bootstrap, &[])?;
    let positions = kafka::produce_numbered(&producer, "auto-created", 0, 30).await?;
    ensure!(positions.len() == 30);
    kafka::wait_for_partitions(&bootstrap, "auto-created", 3)?;
    let total = kafka::total_high_watermark(&bootstrap, "auto-created", 3)?;
    ensure!(total == 30, "high watermarks sum to {total}, expected 30");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_and_metrics() -> Result<()> {
    let silt = SiltProcess::start()?;
    let (status, body) = silt.admin_get("/healthz")?;
    ensure!(status == 200, "/healthz returned {status}");
    ensure!(body.trim() == "ok", "/healthz body {body:?}");
    let producer = producer(&silt.bootstrap(), &[])?;
    let _ = kafka::produce_numbered(&producer, "metered", 0, 10).await?;
    let (status, body) = silt.admin_get("/metrics")?;
    ensure!(status == 200, "/metrics returned {status}");
    ensure!(!body.trim().is_empty(), "/metrics is empty after traffic");
    let (status, _) = silt.admin_get("/no-such-page")?;
    ensure!(status == 404, "unknown admin path returned {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_data_survives() -> Result<()> {
    let mut silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "durable", 2, &[]).await?;
    let producer = producer(&bootstrap, &[("acks", "all")])?;
    let _ = kafka::produce_numbered(&producer, "durable", 0, 500).await?;
    drop(producer);
    let status = silt.sigterm()?;
    ensure!(status.success(), "silt exited with {status} after SIGTERM");
    silt.start_again()?;
    let received = read_all(&bootstrap, "durable", 2).await?;
    let mut numbers = kafka::numbered_values(&received)?;
    numbers.sort_unstable();
    ensure!(
        numbers == (0..500).collect::<Vec<_>>(),
        "records after restart differ"
    );
    Ok(())
}
