//! A full log directory: produce requests get KAFKA_STORAGE_ERROR, nothing
//! acknowledged is lost, and appends go on once there is room again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rdkafka::admin::AdminOptions;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::SiltOptions;
use silt_tests::kafka::{self, read_all};

/// Value size: a few hundred fill the directory.
const VALUE_BYTES: usize = 16 * 1024;

fn value(topic: &str, index: usize) -> Vec<u8> {
    let mut value = format!("{topic}-{index}-").into_bytes();
    value.resize(VALUE_BYTES, b'x');
    value
}

/// Produces `topic`'s records from `first` on, 16 in flight, until `count` are
/// acknowledged or a delivery fails. Returns the acknowledged (index, offset) pairs
/// and the first failure.
async fn produce_until_failure(
    producer: &FutureProducer,
    topic: &str,
    first: usize,
    count: usize,
) -> Result<(Vec<(usize, i64)>, Option<KafkaError>)> {
    let mut acked = Vec::new();
    let mut index = first;
    while index < first + count {
        let chunk: Vec<usize> = (index..(index + 16).min(first + count)).collect();
        let mut futures = Vec::new();
        for &record_index in &chunk {
            let payload = value(topic, record_index);
            let record = FutureRecord::<(), [u8]>::to(topic).payload(&payload);
            futures.push(
                producer
                    .send_result(record)
                    .map_err(|(error, _)| anyhow!("enqueue failed: {error}"))?,
            );
        }
        let mut failure = None;
        for (record_index, future) in chunk.iter().zip(futures) {
            match future.await.context("delivery future cancelled")? {
                Ok(delivery) => acked.push((*record_index, delivery.offset)),
                Err((error, _)) => failure = failure.or(Some(error)),
            }
        }
        if failure.is_some() {
            return Ok((acked, failure));
        }
        index += chunk.len();
    }
    Ok((acked, None))
}

/// Reads `topic` back and checks it holds exactly the acknowledged records, at
/// their offsets, in order.
async fn check_holds_exactly(bootstrap: &str, topic: &str, acked: &[(usize, i64)]) -> Result<()> {
    let records = read_all(bootstrap, topic, 1).await?;
    ensure!(
        records.len() == acked.len(),
        "{topic}: {} records read, {} acknowledged",
        records.len(),
        acked.len()
    );
    for (record, (index, offset)) in records.iter().zip(acked) {
        ensure!(
            record.offset == *offset
                && record.value.as_deref() == Some(value(topic, *index).as_slice()),
            "{topic}: offset {} holds the wrong record (expected record {index} at offset {offset})",
            record.offset
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_dir_refuses_appends_with_a_storage_error_and_keeps_what_was_acknowledged()
-> Result<()> {
    let silt = SiltOptions::new().data_dir_limit_mib(64).start()?;
    let bootstrap = silt.bootstrap();
    kafka::create_topic(&bootstrap, "events", 1, &[]).await?;
    // Small segments, so that DeleteRecords can free most of it again.
    kafka::create_topic(&bootstrap, "filler", 1, &[("segment.bytes", "1048576")]).await?;
    // No retries: each failed delivery reports the broker's error code.
    let producer = kafka::producer(
        &bootstrap,
        &[("acks", "1"), ("retries", "0"), ("linger.ms", "0")],
    )?;

    let (mut events, failure) = produce_until_failure(&producer, "events", 0, 200).await?;
    ensure!(
        failure.is_none(),
        "events before the disk filled: {failure:?}"
    );

    // 64 MiB hold at most 4,096 records of 16 KiB.
    let (filler, failure) = produce_until_failure(&producer, "filler", 0, 5_000).await?;
    match failure {
        Some(KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)) => {}
        other => bail!(
            "the full directory answered {other:?} after {} records, not KAFKA_STORAGE_ERROR",
            filler.len()
        ),
    }
    ensure!(
        filler.len() > 1_000,
        "full after only {} records",
        filler.len()
    );
    check_holds_exactly(&bootstrap, "filler", &filler).await?;
    check_holds_exactly(&bootstrap, "events", &events).await?;
    ensure!(
        silt.log().contains("append failed in the log directory"),
        "the broker did not log the storage error:\n{}",
        silt.log_tail()
    );

    // Room again, freed without a controller write (DeleteRecords deletes the sealed
    // segments at once): appends to the other topic go on where they stopped.
    let admin = kafka::admin(&bootstrap)?;
    let mut everything = TopicPartitionList::new();
    everything.add_partition_offset("filler", 0, Offset::End)?;
    let deleted = admin
        .delete_records(&everything, &AdminOptions::new())
        .await
        .context("delete_records")?;
    for element in deleted.elements() {
        ensure!(
            element.error().is_ok(),
            "deleting filler's records: {element:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let first = events.len();
        let (acked, failure) = produce_until_failure(&producer, "events", first, 1).await?;
        events.extend(acked);
        match failure {
            None => break,
            Some(KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(error) => bail!("appending after the topic deletion: {error}"),
        }
    }
    let first = events.len();
    let (acked, failure) = produce_until_failure(&producer, "events", first, 200).await?;
    ensure!(failure.is_none(), "events after room was made: {failure:?}");
    events.extend(acked);
    check_holds_exactly(&bootstrap, "events", &events).await?;
    Ok(())
}
