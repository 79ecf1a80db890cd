//! Committed consumer-group offsets are durable across broker restarts.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::SiltProcess;
use silt_tests::kafka::{self, create_topic, producer, stream_consumer};

const TOPIC: &str = "ledger";

async fn consume_and_commit(bootstrap: &str, group: &str, count: usize) -> Result<Vec<usize>> {
    let consumer = stream_consumer(bootstrap, group, &[])?;
    consumer.subscribe(&[TOPIC])?;
    let records = kafka::receive(&consumer, count, Duration::from_secs(60)).await?;
    let last = records.last().context("no records")?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(TOPIC, 0, Offset::Offset(last.offset + 1))?;
    consumer.commit(&offsets, CommitMode::Sync)?;
    kafka::numbered_values(&records)
}

fn committed(bootstrap: &str, group: &str) -> Result<Offset> {
    let consumer = stream_consumer(bootstrap, group, &[])?;
    let mut query = TopicPartitionList::new();
    let _ = query.add_partition(TOPIC, 0);
    let answer = consumer.committed_offsets(query, Duration::from_secs(15))?;
    let element = answer
        .find_partition(TOPIC, 0)
        .context("partition missing")?;
    Ok(element.offset())
}

async fn check_restart(kill: bool) -> Result<()> {
    let mut silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, TOPIC, 1, &[]).await?;
    let producer = producer(&bootstrap, &[("acks", "all")])?;
    let _ = kafka::produce_numbered(&producer, TOPIC, 0, 100).await?;
    drop(producer);

    let first = consume_and_commit(&bootstrap, "auditors", 60).await?;
    ensure!(first == (0..60).collect::<Vec<_>>(), "first read {first:?}");
    ensure!(committed(&bootstrap, "auditors")? == Offset::Offset(60));

    if kill {
        silt.kill9()?;
        silt.start_again()?;
    } else {
        silt.restart()?;
    }

    let after = committed(&bootstrap, "auditors")?;
    ensure!(
        after == Offset::Offset(60),
        "committed offset after restart is {after:?}, expected 60"
    );
    let rest = consume_and_commit(&bootstrap, "auditors", 40).await?;
    ensure!(
        rest == (60..100).collect::<Vec<_>>(),
        "group resumed with {rest:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_clean_restart() -> Result<()> {
    check_restart(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_sigkill() -> Result<()> {
    check_restart(true).await
}
