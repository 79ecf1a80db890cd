//! A read-only replica (`--remote-read-only true`) serves consumers straight from a
//! bucket another cluster writes: the topics of that cluster's newest restore point,
//! every record below its cuts identical to what the writer acknowledged, following
//! new restore points as they appear. Produce and topic creation are refused with
//! POLICY_VIOLATION, its consumer groups are its own, and it writes nothing under the
//! bucket's prefix.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set, else against a
//! local-directory store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::kafka::{
    ARCHIVED_TOPIC_CONFIGS, admin, archiving_producer, base_consumer_in_group, create_topic,
    produce_numbered, producer, read_all, watermarks,
};
use silt_tests::s3::TierStore;
use silt_tests::{SiltOptions, SiltProcess};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 2;

fn options(store: &TierStore) -> SiltOptions {
    store.apply(
        SiltOptions::new()
            .override_config("remote.log.manager.task.interval.ms", 300)
            .override_config("restore.point.interval.ms", 500),
    )
}

/// The replica's high watermarks once they sum to at least `at_least`.
fn wait_for_cuts(replica: &SiltProcess, at_least: i64) -> Result<Vec<(i64, i64)>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(ends) = watermarks(&replica.bootstrap(), TOPIC, PARTITIONS)
            && ends.iter().map(|(_, high)| high).sum::<i64>() >= at_least
        {
            return Ok(ends);
        }
        ensure!(
            Instant::now() < deadline,
            "the replica did not reach {at_least} records within 90 s:\n{}",
            replica.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_serves_and_follows_another_clusters_bucket() -> Result<()> {
    let work = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&work.path().join("objects"));
    let mut writer = SiltProcess::start_with(options(&store))?;
    create_topic(
        &writer.bootstrap(),
        TOPIC,
        PARTITIONS,
        &ARCHIVED_TOPIC_CONFIGS,
    )
    .await?;
    let to_writer = archiving_producer(&writer.bootstrap())?;
    let mut acknowledged: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (index, position) in produce_numbered(&to_writer, TOPIC, 0, 3_000)
        .await?
        .into_iter()
        .enumerate()
    {
        acknowledged.insert(position, index);
    }

    let replica = SiltProcess::start_with(options(&store).flag("--remote-read-only", "true"))?;
    let first_cuts = wait_for_cuts(&replica, 1)?;

    // More records on the writer: the replica follows its newer restore points.
    for (index, position) in produce_numbered(&to_writer, TOPIC, 3_000, 3_000)
        .await?
        .into_iter()
        .enumerate()
    {
        acknowledged.insert(position, 3_000 + index);
    }
    let first_total: i64 = first_cuts.iter().map(|(_, high)| high).sum();
    let cuts = wait_for_cuts(&replica, first_total + 1_000)?;
    let writer_ends = watermarks(&writer.bootstrap(), TOPIC, PARTITIONS)?;
    for (partition, (low, high)) in cuts.iter().enumerate() {
        ensure!(
            *low == 0,
            "{TOPIC}-{partition} starts at {low} on the replica"
        );
        ensure!(
            *high <= writer_ends[partition].1,
            "{TOPIC}-{partition}: the replica's end {high} is past the writer's {}",
            writer_ends[partition].1
        );
    }
    // Every record below the cuts, as the writer acknowledged it, once. The replica may
    // follow a newer restore point while it is read: each partition is read from 0 to a
    // cut between the ones seen before and after the read, without a gap.
    let records = read_all(&replica.bootstrap(), TOPIC, PARTITIONS).await?;
    let cuts_after = watermarks(&replica.bootstrap(), TOPIC, PARTITIONS)?;
    for partition in 0..PARTITIONS {
        let offsets: Vec<i64> = records
            .iter()
            .filter(|record| record.partition == partition)
            .map(|record| record.offset)
            .collect();
        let read = offsets.len() as i64;
        let (before, after) = (cuts[partition as usize].1, cuts_after[partition as usize].1);
        ensure!(
            offsets.iter().copied().eq(0..read) && (before..=after).contains(&read),
            "{TOPIC}-{partition}: {read} records read from the replica (offsets {:?}..{:?}), its cut was {before} before the read and {after} after",
            offsets.first(),
            offsets.last()
        );
    }
    for record in &records {
        let index = acknowledged
            .get(&(record.partition, record.offset))
            .with_context(|| {
                format!("{}-{} never acknowledged", record.partition, record.offset)
            })?;
        ensure!(
            record.value_str() == format!("value-{index}"),
            "{}-{} holds {:?}, the writer acknowledged value-{index}",
            record.partition,
            record.offset,
            record.value_str()
        );
    }

    // Produce and topic creation are refused with a clear error.
    let to_replica = producer(&replica.bootstrap(), &[("acks", "all"), ("retries", "0")])?;
    let refused = to_replica
        .send(
            FutureRecord::to(TOPIC).key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await;
    ensure!(
        matches!(
            &refused,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::PolicyViolation),
                _
            ))
        ),
        "produce to the replica: {refused:?}"
    );
    let created = admin(&replica.bootstrap())?
        .create_topics(
            [&NewTopic::new("mine", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    ensure!(
        matches!(
            created.first(),
            Some(Err((_, RDKafkaErrorCode::PolicyViolation)))
        ),
        "topic creation on the replica: {created:?}"
    );

    // Its groups are its own.
    let readers = base_consumer_in_group(&replica.bootstrap(), "analysts")?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(TOPIC, 0, Offset::Offset(7))?;
    readers.commit(&offsets, CommitMode::Sync)?;
    let mut query = TopicPartitionList::new();
    let _ = query.add_partition(TOPIC, 0);
    let on_replica = readers.committed_offsets(query.clone(), Duration::from_secs(10))?;
    ensure!(
        on_replica.find_partition(TOPIC, 0).map(|e| e.offset()) == Some(Offset::Offset(7)),
        "the replica keeps its group's offsets: {on_replica:?}"
    );
    let on_writer = base_consumer_in_group(&writer.bootstrap(), "analysts")?
        .committed_offsets(query, Duration::from_secs(10))?;
    ensure!(
        on_writer.find_partition(TOPIC, 0).map(|e| e.offset()) == Some(Offset::Invalid),
        "the writer knows nothing of the replica's group: {on_writer:?}"
    );

    // It writes nothing under the prefix: with the writer stopped, nothing changes.
    drop(to_writer);
    ensure!(writer.sigterm()?.success(), "the writer stops cleanly");
    let before = store.list().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = store.list().await?;
    ensure!(
        before == after,
        "the replica changed the bucket: {} objects before, {} after",
        before.len(),
        after.len()
    );
    let mut replica = replica;
    ensure!(
        replica.is_running(),
        "the replica runs:\n{}",
        replica.log_tail()
    );
    let _removed = store.remove_all().await?;
    Ok(())
}
