//! Crashes: SIGKILL under load, torn and corrupt segment tails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use parking_lot::Mutex;
use rdkafka::producer::{FutureRecord, Producer};
use silt_tests::kafka::{self, create_topic, producer, read_all};
use silt_tests::{SiltProcess, segment_files};

/// Finds `<data>/<topic>-<partition>` (searching one level of nesting too).
fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> Result<PathBuf> {
    let name = format!("{topic}-{partition}");
    let direct = data_dir.join(&name);
    if direct.is_dir() {
        return Ok(direct);
    }
    for entry in std::fs::read_dir(data_dir)? {
        let nested = entry?.path().join(&name);
        if nested.is_dir() {
            return Ok(nested);
        }
    }
    bail!("no directory {name} under {}", data_dir.display())
}

/// Byte ranges of the record batches in a segment file, as (start, end).
fn batch_boundaries(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position + 12 <= segment.len() {
        let length_bytes: [u8; 4] = segment[position + 8..position + 12]
            .try_into()
            .unwrap_or_default();
        let batch_length = i32::from_be_bytes(length_bytes);
        if batch_length <= 0 {
            break;
        }
        let end = position + 12 + batch_length as usize;
        if end > segment.len() {
            break;
        }
        batches.push((position, end));
        position = end;
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_under_load() -> Result<()> {
    let mut silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "crash", 3, &[]).await?;
    let producer = Arc::new(producer(
        &bootstrap,
        &[
            ("acks", "1"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "5000"),
            ("retries", "0"),
        ],
    )?);

    let acked: Arc<Mutex<BTreeMap<(i32, i64), usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let producer = producer.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut index = 0usize;
            let mut pending = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let value = format!("value-{index}");
                let key = format!("key-{}", index % 100);
                let record = FutureRecord::to("crash").key(&key).payload(&value);
                match producer.send_result(record) {
                    Ok(future) => pending.push((index, future)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                index += 1;
                if pending.len() >= 200 {
                    for (number, future) in pending.drain(..) {
                        if let Ok(Ok(delivery)) = future.await {
                            let _ = acked
                                .lock()
                                .insert((delivery.partition, delivery.offset), number);
                        }
                    }
                }
            }
            for (number, future) in pending.drain(..) {
                if let Ok(Ok(delivery)) = future.await {
                    let _ = acked
                        .lock()
                        .insert((delivery.partition, delivery.offset), number);
                }
            }
        })
    };

    silt_tests::wait_until(
        "acknowledged records under load",
        Duration::from_secs(60),
        || Ok((acked.lock().len() >= 3000).then_some(())),
    )?;
    silt.kill9()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    drop(producer);

    silt.start_again()?;
    let acknowledged = acked.lock().clone();
    let stored = read_all(&bootstrap, "crash", 3).await?;
    let mut stored_at: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for record in &stored {
        let _ = stored_at.insert((record.partition, record.offset), record.value_str());
    }
    let mut lost = Vec::new();
    for ((partition, offset), number) in &acknowledged {
        match stored_at.get(&(*partition, *offset)) {
            Some(value) if *value == format!("value-{number}") => {}
            Some(value) => bail!("{partition}/{offset} acked as value-{number}, stored {value}"),
            None => lost.push((*partition, *offset, *number)),
        }
    }
    ensure!(
        lost.is_empty(),
        "{} of {} acknowledged records lost after SIGKILL, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
    // The log keeps accepting writes after recovery.
    let producer = kafka::producer(&bootstrap, &[("acks", "all")])?;
    let _ = kafka::produce_numbered(&producer, "crash", 1_000_000, 10).await?;
    Ok(())
}

/// Produces `count` single-record batches to partition 0 of `topic`.
async fn produce_one_batch_each(bootstrap: &str, topic: &str, count: usize) -> Result<()> {
    let producer = producer(bootstrap, &[("acks", "all"), ("linger.ms", "0")])?;
    for index in 0..count {
        let value = format!("value-{index}");
        let record: FutureRecord<'_, str, str> =
            FutureRecord::to(topic).payload(value.as_str()).partition(0);
        let _ = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| anyhow!("produce {index} failed: {error}"))?;
    }
    Ok(())
}

/// The active (last) segment of partition 0 and its bytes.
fn last_segment(silt: &SiltProcess, topic: &str) -> Result<(PathBuf, Vec<u8>)> {
    let dir = partition_dir(silt.data_dir(), topic, 0)?;
    let segment = segment_files(&dir)?
        .pop()
        .with_context(|| format!("no .log segment in {}", dir.display()))?;
    let bytes = std::fs::read(&segment)?;
    Ok((segment, bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_batch_is_truncated_on_restart() -> Result<()> {
    let mut silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "torn", 1, &[]).await?;
    produce_one_batch_each(&bootstrap, "torn", 100).await?;
    silt.kill9()?;

    let (segment, bytes) = last_segment(&silt, "torn")?;
    let batches = batch_boundaries(&bytes);
    ensure!(
        batches.len() == 100,
        "expected 100 batches in {}, found {}",
        segment.display(),
        batches.len()
    );
    let (last_start, last_end) = batches[99];
    ensure!(
        last_end == bytes.len(),
        "segment has {} bytes after its last batch",
        bytes.len() - last_end
    );
    // Tear the last batch: keep only its first half.
    let torn_length = last_start + (last_end - last_start) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(torn_length as u64)?;

    silt.start_again()?;
    let after_restart = silt_tests::file_len(&segment)?;
    ensure!(
        after_restart == last_start as u64,
        "segment is {after_restart} bytes after recovery, expected truncation to {last_start}"
    );
    let (low, high) = kafka::watermarks(&bootstrap, "torn", 1)?[0];
    ensure!(
        (low, high) == (0, 99),
        "watermarks after recovery ({low}, {high}), expected (0, 99)"
    );
    let records = read_all(&bootstrap, "torn", 1).await?;
    ensure!(kafka::numbered_values(&records)? == (0..99).collect::<Vec<_>>());

    // New writes continue right after the surviving records.
    let producer = kafka::producer(&bootstrap, &[("acks", "all")])?;
    let positions = kafka::produce_numbered(&producer, "torn", 100, 5).await?;
    let offsets: Vec<i64> = positions.iter().map(|(_, offset)| *offset).collect();
    ensure!(
        offsets == vec![99, 100, 101, 102, 103],
        "offsets after recovery {offsets:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_tail_batch_and_trailing_garbage_are_truncated_on_restart() -> Result<()> {
    let mut silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "corrupt", 1, &[]).await?;
    produce_one_batch_each(&bootstrap, "corrupt", 50).await?;
    silt.kill9()?;

    // Flip a byte inside the last batch's records (covered by its CRC), then
    // append bytes that look like the start of another batch.
    let (segment, mut bytes) = last_segment(&silt, "corrupt")?;
    let batches = batch_boundaries(&bytes);
    ensure!(
        batches.len() == 50,
        "expected 50 batches, found {}",
        batches.len()
    );
    let (last_start, last_end) = batches[49];
    bytes[last_end - 2] ^= 0xff;
    std::fs::write(&segment, &bytes)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment)?;
    file.write_all(&50i64.to_be_bytes())?;
    file.write_all(&4000i32.to_be_bytes())?;
    file.write_all(&[0xab; 37])?;
    drop(file);

    silt.start_again()?;
    let after_restart = silt_tests::file_len(&segment)?;
    ensure!(
        after_restart == last_start as u64,
        "segment is {after_restart} bytes after recovery, expected truncation to {last_start}"
    );
    let records = read_all(&bootstrap, "corrupt", 1).await?;
    ensure!(kafka::numbered_values(&records)? == (0..49).collect::<Vec<_>>());
    let producer = kafka::producer(&bootstrap, &[("acks", "all")])?;
    let positions = kafka::produce_numbered(&producer, "corrupt", 49, 1).await?;
    ensure!(
        positions == vec![(0, 49)],
        "next append landed at {positions:?}"
    );
    Ok(())
}
