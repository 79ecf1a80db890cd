//! Tiered storage, ListOffsets by timestamp: with most segments in object
//! storage, `offsets_for_times` answers with the first offset whose timestamp
//! is at or after the query, whether that record is remote, in the local tail,
//! or nowhere (past the end).
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set, else against
//! a local-directory store.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::SiltOptions;
use silt_tests::kafka::{base_consumer, create_topic, producer, receive, stream_consumer};
use silt_tests::s3::{
    Payloads, TierStore, ends_from_zero, partition_metric, produce_payloads, scrape_metrics,
    wait_tiered,
};

const TOPIC: &str = "times";
const PARTITIONS: i32 = 2;
const RECORDS: u64 = 3_000;
/// Milliseconds between consecutive records of a partition.
const STEP_MS: i64 = 1_000;

/// Timestamp of record `index`: records of a partition are `STEP_MS` apart,
/// starting at `base`.
fn timestamp_of(base: i64, index: u64) -> i64 {
    base + (index / PARTITIONS as u64) as i64 * STEP_MS
}

/// The first offset at or after `query` in `produced` (offset order, timestamps
/// increasing), as Kafka's ListOffsets defines it.
fn expected_offset(produced: &[(i64, i64)], query: i64) -> Option<i64> {
    produced
        .iter()
        .find(|(_, timestamp)| *timestamp >= query)
        .map(|(offset, _)| *offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiering_list_offsets_by_timestamp_lands_in_remote_segments() -> Result<()> {
    let local_objects = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&local_objects.path().join("objects"));
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
            ("segment.bytes", "131072"),
            ("local.retention.ms", "1"),
            ("retention.ms", "-1"),
        ],
    )
    .await?;
    // Timestamps in the recent past (whole seconds), so that local retention by
    // time applies at once and remote retention never does.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let base = (now_ms - 3 * 3_600_000) / 1_000 * 1_000;
    let payloads = Payloads {
        min_value_bytes: 500,
        max_value_bytes: 1500,
    };
    let producer = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "10"),
            // Batches must fit in a segment.
            ("batch.size", "32768"),
            ("compression.type", "none"),
        ],
    )?;
    let acked = produce_payloads(
        &producer,
        TOPIC,
        PARTITIONS,
        0..RECORDS,
        payloads,
        |index| Some(timestamp_of(base, index)),
        1000,
    )
    .await?;
    wait_tiered(
        &silt,
        &store,
        TOPIC,
        PARTITIONS,
        2,
        Duration::from_secs(120),
    )
    .await?;
    let ends = ends_from_zero(&bootstrap, TOPIC, PARTITIONS)?;
    let local_start = partition_metric(
        &scrape_metrics(&silt)?,
        "silt_partition_log_start_offset",
        TOPIC,
    );

    // Per partition: (offset, timestamp) of every record, in offset order.
    let produced: BTreeMap<i32, Vec<(i64, i64)>> = acked
        .iter()
        .map(|(partition, offsets)| {
            let records = offsets
                .iter()
                .map(|(offset, index)| (*offset, timestamp_of(base, *index)))
                .collect();
            (*partition, records)
        })
        .collect();
    for (partition, records) in &produced {
        ensure!(
            records
                .iter()
                .enumerate()
                .all(|(position, (offset, _))| *offset == position as i64),
            "partition {partition}: acknowledged offsets are not contiguous from 0"
        );
        ensure!(
            records.windows(2).all(|pair| pair[0].1 < pair[1].1),
            "partition {partition}: timestamps do not increase with offsets"
        );
        ensure!(
            ends[partition] == records.len() as i64,
            "partition {partition}: high watermark {}, {} records acknowledged",
            ends[partition],
            records.len()
        );
        let local_start = local_start.get(partition).copied().unwrap_or(0.0) as i64;
        ensure!(
            local_start > records.len() as i64 / 2,
            "partition {partition}: the local log starts at {local_start} of {}; most of it should be remote",
            records.len()
        );
    }

    // Queries: before the first record, every 23rd timestamp exactly and just
    // after it, around the local log start, the last record and past the end.
    let first = timestamp_of(base, 0);
    let last = timestamp_of(base, RECORDS - 1);
    let mut queries = vec![first - 60_000, first, last, last + 1, last + 3_600_000];
    for step in (0..RECORDS / PARTITIONS as u64).step_by(23) {
        let timestamp = base + step as i64 * STEP_MS;
        queries.extend([timestamp, timestamp + 1, timestamp - 1]);
    }
    for partition in 0..PARTITIONS {
        let local_start = local_start.get(&partition).copied().unwrap_or(0.0) as usize;
        let records = &produced[&partition];
        for offset in [local_start.saturating_sub(1), local_start, local_start + 1] {
            if let Some((_, timestamp)) = records.get(offset) {
                queries.extend([*timestamp, timestamp - 1]);
            }
        }
    }
    queries.sort_unstable();
    queries.dedup();

    let consumer = base_consumer(&bootstrap)?;
    let (mut remote_answers, mut local_answers, mut past_end) = (0usize, 0usize, 0usize);
    for query in &queries {
        let mut request = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            request.add_partition_offset(TOPIC, partition, Offset::Offset(*query))?;
        }
        let answer = consumer
            .offsets_for_times(request, Duration::from_secs(15))
            .with_context(|| format!("offsets_for_times({query})"))?;
        for element in answer.elements() {
            let partition = element.partition();
            element
                .error()
                .with_context(|| format!("offsets_for_times({query}) partition {partition}"))?;
            let expected = expected_offset(&produced[&partition], *query);
            let got = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                Offset::End => None,
                other => bail!("offsets_for_times({query}) partition {partition}: {other:?}"),
            };
            ensure!(
                got == expected,
                "offsets_for_times({query}) partition {partition}: got {got:?}, expected {expected:?} (local log starts at {:?})",
                local_start.get(&partition)
            );
            match expected {
                Some(offset) if (offset as f64) < local_start[&partition] => remote_answers += 1,
                Some(_) => local_answers += 1,
                None => past_end += 1,
            }
        }
    }
    eprintln!(
        "{} queries: {remote_answers} answers in remote segments, {local_answers} local, {past_end} past the end",
        queries.len()
    );
    ensure!(
        remote_answers > 0 && local_answers > 0 && past_end > 0,
        "queries did not cover remote segments, the local tail and the end"
    );

    // Seeking to an offset found by time reads that record from remote storage.
    let reader = stream_consumer(&bootstrap, "times-seek", &[])?;
    for partition in 0..PARTITIONS {
        let records = &produced[&partition];
        let local_start = local_start[&partition] as usize;
        for position in [0, 1, local_start / 3, local_start / 2, local_start - 1] {
            let (offset, timestamp) = records[position];
            let mut request = TopicPartitionList::new();
            request.add_partition_offset(TOPIC, partition, Offset::Offset(timestamp))?;
            let answer = consumer.offsets_for_times(request, Duration::from_secs(15))?;
            let found = answer
                .find_partition(TOPIC, partition)
                .context("answer lacks the partition")?
                .offset();
            ensure!(
                found == Offset::Offset(offset),
                "partition {partition}: time {timestamp} found {found:?}, expected {offset}"
            );
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(TOPIC, partition, found)?;
            reader.assign(&assignment)?;
            let read = receive(&reader, 1, Duration::from_secs(30)).await?;
            ensure!(
                read[0].offset == offset && read[0].timestamp == Some(timestamp),
                "partition {partition}: read offset {} at time {:?} after seeking to {offset} (time {timestamp})",
                read[0].offset,
                read[0].timestamp
            );
        }
    }
    // Free the shared S3 server's disk (kept when the test fails, to look at).
    let _deleted = store.remove_all().await?;
    Ok(())
}
