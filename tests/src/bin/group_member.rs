//! One consumer-group member, run as its own process so tests can SIGKILL it.
//!
//! Usage: `group_member BOOTSTRAP TOPIC GROUP OUTPUT_FILE`
//!
//! Appends `assigned <partitions>` after every rebalance and
//! `record <partition> <offset> <value>` for every record to OUTPUT_FILE
//! (flushed per line), committing each record's offset synchronously right
//! after writing it. On SIGTERM it closes the consumer (leaving the group) and
//! exits 0.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use rdkafka::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use silt_tests::kafka::client_config;

type SharedLog = Arc<Mutex<std::fs::File>>;

struct MemberContext {
    log: SharedLog,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        let line = match rebalance {
            Rebalance::Assign(list) => format!("assigned {}", partitions(list)),
            Rebalance::Revoke(list) => format!("revoked {}", partitions(list)),
            Rebalance::Error(error) => format!("rebalance-error {error}"),
        };
        write_line(&self.log, &line);
    }
}

fn partitions(list: &TopicPartitionList) -> String {
    let numbers: Vec<String> = list
        .elements()
        .iter()
        .map(|element| element.partition().to_string())
        .collect();
    numbers.join(",")
}

fn write_line(log: &SharedLog, line: &str) {
    if let Ok(mut file) = log.lock() {
        let _ = writeln!(file, "{line}");
        let _ = file.flush();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bootstrap, topic, group, output] = args.as_slice() else {
        bail!("usage: group_member BOOTSTRAP TOPIC GROUP OUTPUT_FILE");
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .with_context(|| format!("opening {output}"))?;
    let log: SharedLog = Arc::new(Mutex::new(file));
    let mut config = client_config(bootstrap);
    let _ = config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", "range");
    let consumer: StreamConsumer<MemberContext> = config
        .create_with_context(MemberContext { log: log.clone() })
        .context("creating consumer")?;
    consumer.subscribe(&[topic.as_str()])?;
    write_line(&log, "started");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            message = consumer.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        write_line(&log, &format!("error {error}"));
                        continue;
                    }
                };
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                write_line(
                    &log,
                    &format!("record {} {} {}", message.partition(), message.offset(), value),
                );
                if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
                    write_line(&log, &format!("commit-error {error}"));
                }
            }
        }
    }
    // Dropping the consumer closes it, which leaves the group.
    drop(consumer);
    write_line(&log, "closed");
    Ok(())
}
