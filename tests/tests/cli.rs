//! The `silt` command line: topic and group commands, config file and env.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{CommitMode, Consumer};
use silt_tests::kafka::{self, admin, base_consumer, producer, stream_consumer};
use silt_tests::{SiltOptions, SiltProcess, wait_until};

async fn topic_config(bootstrap: &str, topic: &str, key: &str) -> Result<Option<String>> {
    let admin = admin(bootstrap)?;
    let results = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(15))),
        )
        .await?;
    let resource = results
        .into_iter()
        .next()
        .context("no describe_configs result")?
        .map_err(|code| anyhow::anyhow!("describe_configs failed: {code:?}"))?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

fn partition_count(bootstrap: &str, topic: &str) -> Result<Option<usize>> {
    let consumer = base_consumer(bootstrap)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len()))
}

fn listed_topics(silt: &SiltProcess) -> Result<Vec<String>> {
    Ok(silt
        .cli_ok(&["topics", "list"])?
        .lines()
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_commands_round_trip() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();

    let _ = silt.cli_ok(&[
        "topics",
        "create",
        "clicks",
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=3600000",
        "--config",
        "segment.bytes=1048576",
    ])?;
    kafka::wait_for_partitions(&bootstrap, "clicks", 3)?;
    ensure!(
        topic_config(&bootstrap, "clicks", "retention.ms")
            .await?
            .as_deref()
            == Some("3600000"),
        "retention.ms not set by topics create"
    );
    ensure!(
        topic_config(&bootstrap, "clicks", "segment.bytes")
            .await?
            .as_deref()
            == Some("1048576"),
        "segment.bytes not set by topics create"
    );

    // Creating it again fails.
    let again = silt.cli(&["topics", "create", "clicks", "--partitions", "3"])?;
    ensure!(
        !again.status.success(),
        "creating an existing topic succeeded"
    );

    let topics = listed_topics(&silt)?;
    ensure!(
        topics
            .iter()
            .any(|line| line.split_whitespace().next() == Some("clicks")),
        "topics list does not show clicks: {topics:?}"
    );
    let description = silt.cli_ok(&["topics", "describe", "clicks"])?;
    ensure!(
        description.contains("clicks"),
        "describe output lacks the name:\n{description}"
    );
    ensure!(
        description.contains("retention.ms"),
        "describe output lacks configs:\n{description}"
    );

    let _ = silt.cli_ok(&[
        "topics",
        "alter-config",
        "clicks",
        "--set",
        "retention.ms=7200000",
    ])?;
    ensure!(
        topic_config(&bootstrap, "clicks", "retention.ms")
            .await?
            .as_deref()
            == Some("7200000"),
        "alter-config --set did not change retention.ms"
    );
    let _ = silt.cli_ok(&[
        "topics",
        "alter-config",
        "clicks",
        "--delete",
        "retention.ms",
    ])?;
    let reverted = topic_config(&bootstrap, "clicks", "retention.ms").await?;
    ensure!(
        reverted.as_deref() != Some("7200000"),
        "alter-config --delete left retention.ms at {reverted:?}"
    );

    let _ = silt.cli_ok(&["topics", "delete", "clicks"])?;
    wait_until("topic deleted", Duration::from_secs(20), || {
        Ok(partition_count(&bootstrap, "clicks")?
            .is_none()
            .then_some(()))
    })?;
    let topics = listed_topics(&silt)?;
    ensure!(
        !topics
            .iter()
            .any(|line| line.split_whitespace().next() == Some("clicks")),
        "deleted topic still listed: {topics:?}"
    );

    // Deleting a missing topic is an error.
    let missing = silt.cli(&["topics", "delete", "clicks"])?;
    ensure!(
        !missing.status.success(),
        "deleting a missing topic succeeded"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_commands_show_a_group_with_committed_offsets() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    kafka::create_topic(&bootstrap, "views", 2, &[]).await?;
    let producer = producer(&bootstrap, &[])?;
    let _ = kafka::produce_numbered(&producer, "views", 0, 20).await?;
    let consumer = stream_consumer(&bootstrap, "view-counters", &[])?;
    consumer.subscribe(&["views"])?;
    let _ = kafka::receive(&consumer, 20, Duration::from_secs(60)).await?;
    consumer.commit_consumer_state(CommitMode::Sync)?;

    let list = silt.cli_ok(&["groups", "list"])?;
    ensure!(
        list.contains("view-counters"),
        "groups list lacks the group:\n{list}"
    );
    let description = silt.cli_ok(&["groups", "describe", "view-counters"])?;
    ensure!(
        description.contains("views"),
        "groups describe lacks the topic:\n{description}"
    );
    drop(consumer);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_env_and_override_set_broker_configs() -> Result<()> {
    // A TOML file with Kafka names sets num.partitions.
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("silt.toml");
    std::fs::write(&config_path, "\"num.partitions\" = 5\n")?;
    let silt = SiltOptions::new()
        .flag("--config", config_path.display())
        .start()?;
    let producer = kafka::producer(&silt.bootstrap(), &[])?;
    let _ = kafka::produce_numbered(&producer, "from-file", 0, 5).await?;
    kafka::wait_for_partitions(&silt.bootstrap(), "from-file", 5)?;
    drop(producer);
    drop(silt);

    // SILT_NUM_PARTITIONS does the same from the environment.
    let silt = SiltOptions::new().env("SILT_NUM_PARTITIONS", 4).start()?;
    let producer = kafka::producer(&silt.bootstrap(), &[])?;
    let _ = kafka::produce_numbered(&producer, "from-env", 0, 5).await?;
    kafka::wait_for_partitions(&silt.bootstrap(), "from-env", 4)?;
    drop(producer);
    drop(silt);

    // --override takes any broker config name.
    let silt = SiltOptions::new()
        .override_config("num.partitions", 2)
        .start()?;
    let producer = kafka::producer(&silt.bootstrap(), &[])?;
    let _ = kafka::produce_numbered(&producer, "from-override", 0, 5).await?;
    kafka::wait_for_partitions(&silt.bootstrap(), "from-override", 2)?;
    Ok(())
}

#[test]
fn serve_help_lists_kafka_named_flags() -> Result<()> {
    let output = std::process::Command::new(silt_tests::silt_bin()?)
        .args(["serve", "--help"])
        .output()?;
    if !output.status.success() {
        bail!(
            "silt serve --help failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--log-dirs",
        "--listeners",
        "--advertised-listeners",
        "--num-partitions",
        "--auto-create-topics-enable",
        "--log-segment-bytes",
        "--log-retention-ms",
        "--socket-request-max-bytes",
        "--override",
        "--config",
    ] {
        ensure!(
            help.contains(flag),
            "silt serve --help does not mention {flag}"
        );
    }
    Ok(())
}

/// `silt topics list | head -1` ends quietly when the pipe closes instead of panicking.
#[test]
fn cli_output_into_a_closed_pipe_exits_cleanly() -> Result<()> {
    let silt = SiltProcess::start()?;
    // Enough rows (about 150 KiB) that the table outgrows the pipe buffer head leaves unread.
    let _ = silt.cli_ok(&["topics", "create", "pipe", "--partitions", "2000"])?;
    let script = format!(
        "set -o pipefail; '{}' topics describe pipe --bootstrap-server {} | head -1",
        silt_tests::silt_bin()?.display(),
        silt.bootstrap()
    );
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !stderr.contains("panicked"),
        "silt panicked on a closed pipe: {stderr}"
    );
    ensure!(
        output.status.success(),
        "silt exited with {} on a closed pipe: {stderr}",
        output.status
    );
    ensure!(
        String::from_utf8_lossy(&output.stdout).lines().count() == 1,
        "head printed one line"
    );
    Ok(())
}
