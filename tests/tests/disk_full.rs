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

/// A batch as written: (producer epoch, base sequence, record values).
type WrittenBatch = (i16, i32, Vec<Vec<u8>>);

/// Every batch in the partition's segment files, in offset order, read from disk.
fn batches_on_disk(partition_dir: &std::path::Path) -> Result<Vec<WrittenBatch>> {
    use bytes::Buf;
    let mut batches = Vec::new();
    for segment in silt_tests::segment_files(partition_dir)? {
        let mut bytes = bytes::Bytes::from(std::fs::read(&segment)?);
        // Stop at the end of the written batches (a preallocated tail reads as zeros).
        while bytes.remaining() >= 61 && i32::from_be_bytes(bytes[8..12].try_into()?) > 0 {
            let batch = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .with_context(|| format!("decoding {}", segment.display()))?;
            let Some(first) = batch.records.first() else {
                continue;
            };
            batches.push((
                first.producer_epoch,
                first.sequence,
                batch
                    .records
                    .iter()
                    .map(|record| record.value.as_deref().unwrap_or_default().to_vec())
                    .collect(),
            ));
        }
    }
    Ok(batches)
}

/// An idempotent producer writing through a log dir that fills up and empties again
/// loses nothing, duplicates nothing and keeps its order and its producer epoch: every
/// record is delivered and on disk exactly once, in one run of sequences. The
/// controller's raft log is on another disk (`metadata.log.dir`), so the full data disk
/// does not stop the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_keeps_its_epoch_and_order_through_a_full_log_dir() -> Result<()> {
    let metadata_dir = tempfile::tempdir()?;
    let silt = SiltOptions::new()
        .data_dir_limit_mib(64)
        .flag("--metadata-log-dir", metadata_dir.path().display())
        .start()?;
    let bootstrap = silt.bootstrap();
    kafka::create_topic(&bootstrap, "ledger", 1, &[]).await?;
    let producer = kafka::producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "0"),
            ("message.timeout.ms", "120000"),
            ("retry.backoff.ms", "50"),
        ],
    )?;
    const RECORDS: usize = 1_500;
    // The disk fills after the first records were acknowledged, while the producer
    // still has 1,200 records (19 MiB) to send: it cannot finish before the disk is full.
    const BEFORE_FULL: usize = 300;
    let (acknowledged_some, before_full) = tokio::sync::oneshot::channel::<()>();
    let (filled_tx, filled_rx) = tokio::sync::oneshot::channel::<()>();
    let sending = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut acknowledged_some = Some(acknowledged_some);
            let mut filled_rx = Some(filled_rx);
            let mut deliveries = Vec::new();
            for index in 0..RECORDS {
                if index == BEFORE_FULL {
                    if let Some(last) = deliveries.pop() {
                        let delivered = last.await;
                        ensure!(
                            matches!(delivered, Ok(Ok(_))),
                            "before the disk filled: {delivered:?}"
                        );
                    }
                    if let (Some(signal), Some(filled)) =
                        (acknowledged_some.take(), filled_rx.take())
                    {
                        let _ = signal.send(());
                        filled.await.context("the disk was not filled")?;
                    }
                }
                let payload = value("ledger", index);
                loop {
                    match producer
                        .send_result(FutureRecord::<(), [u8]>::to("ledger").payload(&payload))
                    {
                        Ok(delivery) => {
                            deliveries.push(delivery);
                            break;
                        }
                        // The client's queue is full while the broker refuses appends.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                if index % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut failed = 0;
            for delivery in deliveries {
                if !matches!(delivery.await, Ok(Ok(_))) {
                    failed += 1;
                }
            }
            anyhow::Ok(failed)
        })
    };
    before_full
        .await
        .context("the producer stopped before the disk filled")?;
    let filler = silt.data_dir().join("filler");
    let filled = {
        let filler = filler.clone();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            use std::io::Write;
            let mut file = std::fs::File::create(&filler)?;
            let chunk = vec![0_u8; 1 << 16];
            let mut written = 0;
            loop {
                match file.write_all(&chunk) {
                    Ok(()) => written += chunk.len() as u64,
                    Err(error) if error.raw_os_error() == Some(28) => return Ok(written),
                    Err(error) => return Err(error.into()),
                }
            }
        })
        .await??
    };
    let _ = filled_tx.send(());
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(&filler)?;
    let failed = tokio::time::timeout(Duration::from_secs(150), sending)
        .await
        .context("the producer did not finish")???;
    ensure!(failed == 0, "{failed} records not delivered");
    ensure!(
        silt.log().contains("append failed in the log directory"),
        "the log dir never filled ({filled} filler bytes): the test proved nothing\n{}",
        silt.log_tail()
    );
    let batches = batches_on_disk(&silt.data_dir().join("ledger-0"))?;
    let mut expected_sequence = 0;
    let mut values = Vec::new();
    for (epoch, sequence, batch_values) in &batches {
        ensure!(
            *epoch == 0 && *sequence == expected_sequence,
            "a batch of producer epoch {epoch} at sequence {sequence} where epoch 0, sequence {expected_sequence} was next: the client bumped its epoch"
        );
        expected_sequence += i32::try_from(batch_values.len())?;
        values.extend(batch_values.iter().cloned());
    }
    let expected: Vec<Vec<u8>> = (0..RECORDS).map(|index| value("ledger", index)).collect();
    ensure!(
        values == expected,
        "{} records on disk for {RECORDS} sent, not each once in order",
        values.len()
    );
    Ok(())
}
