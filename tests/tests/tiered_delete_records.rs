//! DeleteRecords reaches the remote tier: on a tiered topic whose older records live
//! only in the bucket, DeleteRecords to an offset inside the remote range moves the log
//! start offset there at once (ListOffsets earliest, a Fetch below it gets
//! OFFSET_OUT_OF_RANGE, a consumer from the beginning starts there), tiering deletes the
//! remote segments wholly below it, and all of it holds after a SIGKILL and restart.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set, else against a
//! local-directory store.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kafka_protocol::ResponseError;
use rdkafka::admin::AdminOptions;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::kafka::{
    ARCHIVED_TOPIC_CONFIGS, admin, archiving_producer, create_topic, produce_numbered, read_all,
    watermarks,
};
use silt_tests::s3::TierStore;
use silt_tests::wire::WireClient;
use silt_tests::{SiltOptions, SiltProcess};

const TOPIC: &str = "events";
const RECORDS: usize = 6_000;
/// Where DeleteRecords moves the log start offset: inside the remote range.
const DELETE_BEFORE: i64 = 2_500;

fn options(store: &TierStore) -> SiltOptions {
    store.apply(
        SiltOptions::new()
            .override_config("remote.log.manager.task.interval.ms", 300)
            .override_config("log.retention.check.interval.ms", 300)
            // No restore points: none pins the segments DeleteRecords frees.
            .override_config("restore.point.interval.ms", 0),
    )
}

/// Base offsets of the topic's `.log` objects in the store, ascending.
async fn remote_log_bases(store: &TierStore) -> Result<Vec<i64>> {
    let mut bases: Vec<i64> = store
        .segment_objects(TOPIC)
        .await?
        .into_iter()
        .filter(|object| object.extension == "log")
        .map(|object| object.base_offset)
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// The error code of a consumer Fetch of partition 0 at `offset`.
fn fetch_error_at(silt: &SiltProcess, offset: i64) -> Result<i16> {
    let mut wire = WireClient::connect(silt.kafka_addr())?;
    Ok(wire.fetch_from(TOPIC, 0, offset)?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_start_into_the_remote_tier_and_frees_its_segments() -> Result<()>
{
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    eprintln!("objects in {}", store.describe());
    let mut silt = SiltProcess::start_with(options(&store))?;
    let mut configs = ARCHIVED_TOPIC_CONFIGS.to_vec();
    // The local log keeps about two segments: older records are only in the bucket.
    configs.push(("local.retention.bytes", "32768"));
    create_topic(&silt.bootstrap(), TOPIC, 1, &configs).await?;
    let producer = archiving_producer(&silt.bootstrap())?;
    let positions = produce_numbered(&producer, TOPIC, 0, RECORDS).await?;
    drop(producer);
    ensure!(
        positions.iter().all(|(partition, _)| *partition == 0),
        "one partition"
    );

    // Wait until the records around DELETE_BEFORE are remote only.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bases = remote_log_bases(&store).await?;
        let local_start = fetch_local_start(&silt)?;
        if bases.len() > 4 && bases.first() == Some(&0) && local_start > DELETE_BEFORE + 500 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the remote tier never held offset {DELETE_BEFORE} alone: remote bases {bases:?}, local start {local_start}\n{}",
            silt.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ensure!(
        fetch_error_at(&silt, 100)? == 0,
        "offset 100 is served from the bucket before the deletion"
    );

    let mut request = TopicPartitionList::new();
    request.add_partition_offset(TOPIC, 0, Offset::Offset(DELETE_BEFORE))?;
    let deleted = admin(&silt.bootstrap())?
        .delete_records(&request, &AdminOptions::new())
        .await
        .context("delete_records")?;
    let element = deleted
        .elements()
        .into_iter()
        .next()
        .context("a result for the partition")?;
    ensure!(
        element.error().is_ok() && element.offset() == Offset::Offset(DELETE_BEFORE),
        "DeleteRecords answered {element:?}, expected low watermark {DELETE_BEFORE}"
    );

    let check_start = |silt: &SiltProcess| -> Result<()> {
        let (low, high) = watermarks(&silt.bootstrap(), TOPIC, 1)?[0];
        ensure!(
            low == DELETE_BEFORE && high == RECORDS as i64,
            "watermarks ({low}, {high}), expected ({DELETE_BEFORE}, {RECORDS})"
        );
        for offset in [0, 100, DELETE_BEFORE - 1] {
            let code = fetch_error_at(silt, offset)?;
            ensure!(
                code == ResponseError::OffsetOutOfRange.code(),
                "a fetch at {offset}, below the log start offset, answered error {code}"
            );
        }
        Ok(())
    };
    check_start(&silt)?;
    let check_records = |records: Vec<silt_tests::kafka::Received>| -> Result<()> {
        let offsets: Vec<i64> = records.iter().map(|record| record.offset).collect();
        ensure!(
            offsets.iter().copied().eq(DELETE_BEFORE..RECORDS as i64),
            "a consumer from the beginning read offsets {:?}..{:?} ({} records), expected {DELETE_BEFORE}..{RECORDS}",
            offsets.first(),
            offsets.last(),
            offsets.len()
        );
        for record in &records {
            ensure!(
                record.value_str() == format!("value-{}", record.offset),
                "offset {} holds {:?}",
                record.offset,
                record.value_str()
            );
        }
        Ok(())
    };
    check_records(read_all(&silt.bootstrap(), TOPIC, 1).await?)?;

    // Tiering deletes the remote segments wholly below the new start: only the one
    // holding it (or none, if it starts a segment) begins below it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bases = remote_log_bases(&store).await?;
        let below = bases.iter().filter(|base| **base < DELETE_BEFORE).count();
        if below <= 1 {
            ensure!(
                bases.iter().any(|base| *base > DELETE_BEFORE),
                "the later segments stay: {bases:?}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "remote segments below {DELETE_BEFORE} were not deleted: {bases:?}\n{}",
            silt.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // It holds after a crash.
    silt.kill9()?;
    silt.start_again()?;
    check_start(&silt)?;
    check_records(read_all(&silt.bootstrap(), TOPIC, 1).await?)?;
    ensure!(silt.is_running(), "silt still runs\n{}", silt.log_tail());
    let _removed = store.remove_all().await?;
    Ok(())
}

/// The first offset of the local log (ListOffsets EARLIEST_LOCAL, KIP-405).
fn fetch_local_start(silt: &SiltProcess) -> Result<i64> {
    let mut wire = WireClient::connect(silt.kafka_addr())?;
    wire.earliest_local_offset(TOPIC, 0)
}
