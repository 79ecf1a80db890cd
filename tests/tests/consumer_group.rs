//! Consumer groups: rebalancing when members leave or die, resuming from
//! committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use silt_tests::kafka::{self, create_topic, producer};
use silt_tests::{SiltProcess, send_signal, wait_until};

const TOPIC: &str = "orders";
const GROUP: &str = "order-processors";
const PARTITIONS: i32 = 6;

/// A `group_member` child process and the file it reports to.
struct Member {
    name: &'static str,
    child: Option<Child>,
    output: PathBuf,
}

impl Member {
    fn spawn(name: &'static str, bootstrap: &str, dir: &Path) -> Result<Self> {
        let output = dir.join(format!("{name}.txt"));
        let child = Command::new(env!("CARGO_BIN_EXE_group_member"))
            .args([bootstrap, TOPIC, GROUP])
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join(format!("{name}.stderr")),
            )?))
            .spawn()
            .context("spawning group_member")?;
        Ok(Member {
            name,
            child: Some(child),
            output,
        })
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Records as (partition, offset, value number).
    fn records(&self) -> Result<Vec<(i32, i64, usize)>> {
        let mut records = Vec::new();
        for line in self.lines() {
            let mut fields = line.split_whitespace();
            if fields.next() != Some("record") {
                continue;
            }
            let partition = fields.next().context("partition")?.parse()?;
            let offset = fields.next().context("offset")?.parse()?;
            let value = fields.next().context("value")?;
            let number = value
                .strip_prefix("value-")
                .context("value prefix")?
                .parse()?;
            records.push((partition, offset, number));
        }
        Ok(records)
    }

    /// Partitions in the most recent `assigned` line.
    fn current_assignment(&self) -> Option<BTreeSet<i32>> {
        let line = self
            .lines()
            .into_iter()
            .rev()
            .find(|line| line.starts_with("assigned"))?;
        let list = line.strip_prefix("assigned")?.trim();
        Some(list.split(',').filter_map(|p| p.parse().ok()).collect())
    }

    fn sigterm_and_wait(&mut self) -> Result<()> {
        let mut child = self.child.take().context("member not running")?;
        send_signal(child.id(), "TERM")?;
        let status = wait_until("member exit", Duration::from_secs(30), || {
            Ok(child.try_wait()?)
        })?;
        ensure!(
            status.success(),
            "member {} exited with {status}",
            self.name
        );
        Ok(())
    }

    fn sigkill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("member not running")?;
        child.kill()?;
        let _ = child.wait()?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("--- {} ---\n{}", self.name, self.lines().join("\n"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn all_records(members: &[&Member]) -> Result<Vec<(i32, i64, usize)>> {
    let mut records = Vec::new();
    for member in members {
        records.extend(member.records()?);
    }
    Ok(records)
}

fn distinct_numbers(members: &[&Member]) -> Result<BTreeSet<usize>> {
    Ok(all_records(members)?
        .into_iter()
        .map(|(_, _, number)| number)
        .collect())
}

fn wait_consumed(members: &[&Member], expected: usize, what: &str) -> Result<()> {
    wait_until(what, Duration::from_secs(90), || {
        let seen = distinct_numbers(members)?;
        Ok((seen.len() >= expected).then_some(()))
    })
    .with_context(|| {
        members
            .iter()
            .map(|m| m.describe())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn wait_assignment(members: &[&Member], expected_counts: &[usize], what: &str) -> Result<()> {
    wait_until(what, Duration::from_secs(60), || {
        let assignments: Vec<Option<BTreeSet<i32>>> =
            members.iter().map(|m| m.current_assignment()).collect();
        let counts: Vec<usize> = assignments
            .iter()
            .map(|a| a.as_ref().map_or(0, BTreeSet::len))
            .collect();
        let union: BTreeSet<i32> = assignments.iter().flatten().flatten().copied().collect();
        Ok((counts == expected_counts && union.len() == PARTITIONS as usize).then_some(()))
    })
    .with_context(|| {
        members
            .iter()
            .map(|m| m.describe())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn group_member_count(bootstrap: &str) -> Result<usize> {
    let consumer = kafka::base_consumer(bootstrap)?;
    let groups = consumer.fetch_group_list(Some(GROUP), Duration::from_secs(10))?;
    let group = groups
        .groups()
        .iter()
        .find(|group| group.name() == GROUP)
        .context("group not listed")?;
    Ok(group.members().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_rebalances_when_members_leave_or_die_and_skips_nothing() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let producer = producer(&bootstrap, &[("acks", "all")])?;
    let _ = kafka::produce_numbered(&producer, TOPIC, 0, 600).await?;

    let dir = silt.work_dir().to_path_buf();
    let mut leaver = Member::spawn("leaver", &bootstrap, &dir)?;
    let mut victim = Member::spawn("victim", &bootstrap, &dir)?;
    let mut survivor = Member::spawn("survivor", &bootstrap, &dir)?;

    // Phase 1: three members share six partitions and read everything.
    wait_assignment(
        &[&leaver, &victim, &survivor],
        &[2, 2, 2],
        "three-way assignment",
    )?;
    wait_consumed(&[&leaver, &victim, &survivor], 600, "first 600 records")?;
    let members = wait_until("3 members listed", Duration::from_secs(20), || {
        Ok((group_member_count(&bootstrap)? == 3).then_some(3))
    })?;
    ensure!(members == 3);

    // Phase 2: one member leaves cleanly; the others take its partitions.
    leaver.sigterm_and_wait()?;
    wait_assignment(
        &[&victim, &survivor],
        &[3, 3],
        "two-way assignment after leave",
    )?;
    let _ = kafka::produce_numbered(&producer, TOPIC, 600, 300).await?;
    wait_consumed(
        &[&leaver, &victim, &survivor],
        900,
        "records after the leave",
    )?;

    // Phase 3: one member is SIGKILLed; after the session timeout the last
    // member owns everything and resumes from the committed offsets.
    victim.sigkill()?;
    let _ = kafka::produce_numbered(&producer, TOPIC, 900, 300).await?;
    wait_assignment(&[&survivor], &[6], "survivor owns all partitions")?;
    wait_consumed(
        &[&leaver, &victim, &survivor],
        1200,
        "records after the kill",
    )?;

    // Nothing skipped: every offset of every partition was read by someone.
    let records = all_records(&[&leaver, &victim, &survivor])?;
    let watermarks = kafka::watermarks(&bootstrap, TOPIC, PARTITIONS)?;
    let mut offsets_read: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for (partition, offset, _) in &records {
        let _ = offsets_read.entry(*partition).or_default().insert(*offset);
    }
    for (partition, (_, high)) in watermarks.iter().enumerate() {
        let read = offsets_read.remove(&(partition as i32)).unwrap_or_default();
        let expected: BTreeSet<i64> = (0..*high).collect();
        if read != expected {
            bail!(
                "partition {partition}: read offsets {:?} but the log has 0..{high}",
                expected.difference(&read).collect::<Vec<_>>()
            );
        }
    }
    // Redelivery is bounded: members commit after every record, so at most
    // the in-flight record of each partition of the killed member repeats.
    let duplicates = records.len() - distinct_numbers(&[&leaver, &victim, &survivor])?.len();
    ensure!(
        duplicates <= PARTITIONS as usize,
        "{duplicates} records were delivered twice; commits were not honoured"
    );

    // The group's committed offsets reach the end of every partition.
    wait_until("committed == log end", Duration::from_secs(30), || {
        let consumer = kafka::stream_consumer(&bootstrap, GROUP, &[])?;
        let mut query = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            let _ = query.add_partition(TOPIC, partition);
        }
        let committed = consumer.committed_offsets(query, Duration::from_secs(10))?;
        let all_at_end = watermarks.iter().enumerate().all(|(partition, (_, high))| {
            committed
                .find_partition(TOPIC, partition as i32)
                .is_some_and(|element| element.offset() == Offset::Offset(*high))
        });
        Ok(all_at_end.then_some(()))
    })?;
    survivor.sigterm_and_wait()?;
    Ok(())
}
