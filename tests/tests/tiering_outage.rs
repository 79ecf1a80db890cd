//! Tiered storage, object store outage: while the S3 server is down, producers
//! keep getting acknowledgements, uploads back off, the backlog is reported and
//! no local segment is deleted; once the server is back the backlog drains and
//! every acknowledged record is readable from offset 0, in order.
//!
//! Always uses S3: the test starts a private s3s-fs server through
//! `minio-dev/start` (its own port and state directory) so that it can stop and
//! restart it. The outage lasts `SILT_TIERING_OUTAGE_SECS` seconds (default 60,
//! at least 20).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use parking_lot::Mutex;
use rdkafka::producer::{FutureProducer, FutureRecord};
use silt_tests::SiltOptions;
use silt_tests::kafka::{create_topic, producer};
use silt_tests::s3::{
    Acked, Payloads, S3Server, TierStore, consume_and_verify, ends_from_zero, local_segments,
    partition_metric, scrape_metrics, segment_base_offset, upload_backlog, wait_tiered,
};

const TOPIC: &str = "outage";
const PARTITIONS: i32 = 3;
/// Records sent together, then the producer pauses for `PAUSE`: about 600 KB/s.
const BURST: u64 = 64;
const PAUSE: Duration = Duration::from_millis(100);
const PAYLOADS: Payloads = Payloads {
    min_value_bytes: 800,
    max_value_bytes: 1200,
};

/// The outage length: `SILT_TIERING_OUTAGE_SECS`, default 60, at least 20.
fn outage() -> Result<Duration> {
    let seconds: u64 = match std::env::var("SILT_TIERING_OUTAGE_SECS") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("SILT_TIERING_OUTAGE_SECS={text:?} is not a number"))?,
        Err(_) => 60,
    };
    ensure!(
        seconds >= 20,
        "SILT_TIERING_OUTAGE_SECS must be at least 20, not {seconds}"
    );
    Ok(Duration::from_secs(seconds))
}

/// What the background producer saw.
#[derive(Default)]
struct Produced {
    acked: Acked,
    failures: Vec<String>,
}

/// Produces bursts of records `0, 1, 2, ...` (record `i` to partition
/// `i % PARTITIONS`) until `stop`, recording every delivery.
async fn produce_until_stopped(
    producer: Arc<FutureProducer>,
    stop: Arc<AtomicBool>,
    produced: Arc<Mutex<Produced>>,
) {
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut deliveries = Vec::with_capacity(BURST as usize);
        for _ in 0..BURST {
            let key = Payloads::key(index);
            let value = PAYLOADS.value(index);
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(TOPIC)
                .key(key.as_str())
                .payload(value.as_slice())
                .partition((index % PARTITIONS as u64) as i32);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((index, delivery)),
                Err((error, _)) => produced
                    .lock()
                    .failures
                    .push(format!("enqueue {index}: {error}")),
            }
            index += 1;
        }
        for (index, delivery) in deliveries {
            let outcome = delivery.await;
            let mut produced = produced.lock();
            match outcome {
                Ok(Ok(delivery)) => {
                    let _ = produced
                        .acked
                        .entry(delivery.partition)
                        .or_default()
                        .insert(delivery.offset, index);
                }
                Ok(Err((error, _))) => produced.failures.push(format!("record {index}: {error}")),
                Err(_) => produced
                    .failures
                    .push(format!("record {index}: delivery cancelled")),
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

fn acked_count(produced: &Mutex<Produced>) -> usize {
    produced.lock().acked.values().map(BTreeMap::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiering_survives_object_store_outage() -> Result<()> {
    let outage = outage()?;
    let mut server = S3Server::start()?;
    let store = TierStore::s3(server.env().clone());
    eprintln!("tiering to {}", store.describe());
    let silt = store
        .apply(SiltOptions::new().flag("--remote-log-manager-task-interval-ms", 200))
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        &[
            ("remote.storage.enable", "true"),
            ("segment.bytes", "262144"),
            ("local.retention.ms", "1"),
            ("retention.ms", "-1"),
        ],
    )
    .await?;
    let producer = Arc::new(producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            // Batches must fit in a segment.
            ("batch.size", "65536"),
            ("compression.type", "none"),
            ("message.timeout.ms", "60000"),
        ],
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let produced: Arc<Mutex<Produced>> = Arc::default();
    let load = tokio::spawn(produce_until_stopped(
        Arc::clone(&producer),
        Arc::clone(&stop),
        Arc::clone(&produced),
    ));

    // Tiering works before the outage: objects appear and local copies go.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let objects = store.segment_objects(TOPIC).await?;
        let local_start = partition_metric(
            &scrape_metrics(&silt)?,
            "silt_partition_log_start_offset",
            TOPIC,
        );
        let working = (0..PARTITIONS).all(|partition| {
            let logs = objects
                .iter()
                .filter(|object| object.partition == partition && object.extension == "log")
                .count();
            logs >= 2
                && local_start
                    .get(&partition)
                    .is_some_and(|start| *start > 0.0)
        });
        if working {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "tiering did not start within 90 s: local log starts {local_start:?}, {} objects",
                objects.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs_before_outage = store
        .segment_objects(TOPIC)
        .await?
        .iter()
        .filter(|object| object.extension == "log")
        .count();

    server.stop()?;
    let outage_started = Instant::now();
    // A copy whose objects were all written before the stop may still commit
    // and free its local segment; after that nothing local may go.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked_at_start = acked_count(&produced);
    let mut first_local: BTreeMap<i32, i64> = BTreeMap::new();
    let mut count_at_start: BTreeMap<i32, usize> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let segments = local_segments(&silt, TOPIC, partition)?;
        let first = segments.first().context("no local segment")?;
        let _ = first_local.insert(partition, segment_base_offset(first)?);
        let _ = count_at_start.insert(partition, segments.len());
    }
    let mut most_backlog = 0.0f64;
    let mut count_at_end = BTreeMap::new();
    while outage_started.elapsed() < outage {
        let backlog: f64 = upload_backlog(&silt, TOPIC)?.values().sum();
        most_backlog = most_backlog.max(backlog);
        for partition in 0..PARTITIONS {
            let segments = local_segments(&silt, TOPIC, partition)?;
            let first = segment_base_offset(segments.first().context("no local segment")?)?;
            ensure!(
                first == first_local[&partition],
                "partition {partition}: local segment {} was deleted while the object store was down ({:.0?} into the outage)",
                first_local[&partition],
                outage_started.elapsed()
            );
            let _ = count_at_end.insert(partition, segments.len());
        }
        ensure!(
            produced.lock().failures.is_empty(),
            "produce failed during the outage: {:?}",
            produced.lock().failures
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let acked_during = acked_count(&produced) - acked_at_start;
    eprintln!(
        "outage of {outage:?}: local segments {count_at_start:?} -> {count_at_end:?}, largest backlog {most_backlog}, {acked_during} records acknowledged meanwhile"
    );
    ensure!(
        acked_during > 100,
        "only {acked_during} records were acknowledged during the outage"
    );
    for partition in 0..PARTITIONS {
        ensure!(
            count_at_end[&partition] >= count_at_start[&partition] + 3,
            "partition {partition}: the local tier did not grow during the outage ({} -> {} segments)",
            count_at_start[&partition],
            count_at_end[&partition]
        );
    }
    ensure!(
        most_backlog > 0.0,
        "silt_tiering_upload_backlog_segments stayed 0 during the outage"
    );

    server.start_again()?;
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    let Produced { acked, failures } = std::mem::take(&mut *produced.lock());
    ensure!(failures.is_empty(), "produce failed: {failures:?}");

    wait_tiered(
        &silt,
        &store,
        TOPIC,
        PARTITIONS,
        2,
        Duration::from_secs(240),
    )
    .await?;
    eprintln!(
        "backlog drained {:.1?} after the object store came back",
        restored.elapsed()
    );
    let objects = store.segment_objects(TOPIC).await?;
    let mut base_offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for object in objects.iter().filter(|object| object.extension == "log") {
        base_offsets
            .entry(object.partition)
            .or_default()
            .push(object.base_offset);
    }
    let logs_after = base_offsets.values().map(Vec::len).sum::<usize>();
    ensure!(
        logs_after > logs_before_outage,
        "{logs_after} .log objects after the outage, {logs_before_outage} before"
    );
    for (partition, offsets) in &mut base_offsets {
        offsets.sort_unstable();
        let before = offsets.len();
        offsets.dedup();
        ensure!(
            before == offsets.len(),
            "partition {partition}: several .log objects share a base offset"
        );
    }

    let ends = ends_from_zero(&bootstrap, TOPIC, PARTITIONS)?;
    for (partition, end) in &ends {
        let acked_count = acked.get(partition).map_or(0, BTreeMap::len) as i64;
        ensure!(
            *end == acked_count,
            "partition {partition}: high watermark {end}, {acked_count} records acknowledged"
        );
    }
    let reads =
        consume_and_verify(&bootstrap, TOPIC, &ends, PAYLOADS, Duration::from_secs(180)).await?;
    for (partition, read) in &reads {
        ensure!(
            read.indices == acked[partition],
            "partition {partition}: acknowledged records missing or at other offsets"
        );
        let in_order = read
            .indices
            .values()
            .zip(read.indices.values().skip(1))
            .all(|(a, b)| a < b);
        ensure!(
            in_order,
            "partition {partition}: records are not in the order they were sent"
        );
    }
    Ok(())
}
