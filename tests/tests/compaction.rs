//! Key compaction end to end, with rdkafka against real `silt` processes: readers from
//! the beginning while the cleaner runs, SIGKILL during cleaning, and
//! `__consumer_offsets` load bounded by the live groups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use parking_lot::Mutex;
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use silt_tests::kafka::{Received, create_topic, producer, read_to_end};
use silt_tests::{SiltOptions, SiltProcess};

/// Key → (offset, value) of every acknowledged record, by offset.
type Acked = BTreeMap<i64, (String, Option<String>)>;

/// Topic configs that make the cleaner take a log as soon as a segment is sealed.
const COMPACTED: [(&str, &str); 3] = [
    ("cleanup.policy", "compact"),
    ("segment.bytes", "32768"),
    ("min.cleanable.dirty.ratio", "0.01"),
];

fn fast_cleaner() -> SiltOptions {
    SiltOptions::new().override_config("log.cleaner.backoff.ms", 100)
}

/// Produces `count` records over `keys` keys `<prefix>-<n>` (one in ten a tombstone)
/// and records the acknowledged ones.
async fn produce_updates(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    keys: usize,
    count: usize,
    round: usize,
    acked: &Mutex<Acked>,
) -> Result<()> {
    let mut pending = Vec::with_capacity(count);
    for index in 0..count {
        let key = format!("{prefix}-{}", rand::rng().random_range(0..keys));
        let value = (index % 10 != 9).then(|| format!("{key}-round{round}-{index}"));
        let record = FutureRecord::to(topic).key(&key).partition(0);
        let record = match &value {
            Some(value) => record.payload(value),
            None => record,
        };
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| anyhow::anyhow!("enqueue: {error}"))?;
        pending.push((key, value, delivery));
    }
    for (key, value, delivery) in pending {
        let delivered = delivery
            .await
            .context("delivery dropped")?
            .map_err(|(error, _)| anyhow::anyhow!("produce failed: {error}"))?;
        let offset = delivered.offset;
        let _previous = acked.lock().insert(offset, (key, value));
    }
    Ok(())
}

/// Checks a read from the beginning up to `high` (exclusive) against the acknowledged
/// records, which must hold every offset below `high`: every record read is the one
/// acknowledged at its offset and offsets increase. A key not written again at or after
/// `high` must end with its latest acknowledged record below `high`; a key written
/// again may legitimately end earlier (the cleaner removed what the reader had not
/// reached yet because of the newer record).
fn check_read(read: &[Received], acked: &Acked, high: i64) -> Result<()> {
    let mut last_by_key: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    let mut previous = -1;
    for record in read.iter().filter(|record| record.offset < high) {
        ensure!(
            record.offset > previous,
            "offset {} after {previous}",
            record.offset
        );
        previous = record.offset;
        let value = record.value.as_ref().map(|_| record.value_str());
        let expected = acked.get(&record.offset);
        ensure!(
            expected == Some(&(record.key_str(), value.clone())),
            "record at {} is {:?}/{value:?}, acknowledged {expected:?}",
            record.offset,
            record.key_str()
        );
        let _previous = last_by_key.insert(record.key_str(), (record.offset, value));
    }
    let mut latest: BTreeMap<&str, (i64, &Option<String>)> = BTreeMap::new();
    for (offset, (key, value)) in acked.range(..high) {
        let _previous = latest.insert(key, (*offset, value));
    }
    let written_again: std::collections::BTreeSet<&str> = acked
        .range(high..)
        .map(|(_, (key, _))| key.as_str())
        .collect();
    let mut exact = 0;
    for (key, (offset, value)) in latest {
        if written_again.contains(key) {
            continue;
        }
        exact += 1;
        let seen = last_by_key.get(key);
        ensure!(
            seen == Some(&(offset, value.clone())),
            "key {key}: latest acknowledged {value:?} at {offset}, read ends with {seen:?} ({} records read)",
            read.len()
        );
    }
    ensure!(
        exact > 0 || high == 0,
        "no key to check exactly below {high}"
    );
    Ok(())
}

/// The offset after the last acknowledged record, once every offset below `high` is
/// acknowledged (deliveries are recorded a little after the broker answers).
fn acked_through(acked: &Mutex<Acked>, high: i64) -> Result<Acked> {
    let started = Instant::now();
    loop {
        {
            let acked = acked.lock();
            if acked
                .keys()
                .next_back()
                .is_some_and(|last| *last + 1 >= high)
                || high == 0
            {
                return Ok(acked.clone());
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "offsets below {high} not acknowledged within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_from_the_beginning_see_every_latest_value_while_the_cleaner_runs() -> Result<()> {
    let mut silt = fast_cleaner().start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "changelog", 1, &COMPACTED).await?;
    let producer = producer(
        &bootstrap,
        &[("acks", "all"), ("linger.ms", "5"), ("batch.size", "16384")],
    )?;
    let acked = Arc::new(Mutex::new(Acked::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (bootstrap, acked, stop) = (bootstrap.clone(), Arc::clone(&acked), Arc::clone(&stop));
        tokio::task::spawn_blocking(move || -> Result<usize> {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                let (read, high) = read_to_end(&bootstrap, "changelog", 0)?;
                let snapshot = acked_through(&acked, high)?;
                check_read(&read, &snapshot, high)
                    .with_context(|| format!("reader round {rounds}"))?;
                rounds += 1;
            }
            Ok(rounds)
        })
    };
    // Cold keys, written once at the start: while hot keys are rewritten and the cleaner
    // rewrites the segments around them, every reader must end with their latest values.
    produce_updates(&producer, "changelog", "cold", 300, 1_500, 0, &acked).await?;
    for round in 1..30 {
        produce_updates(&producer, "changelog", "hot", 200, 1_000, round, &acked).await?;
        // Paced, so readers overlap production and cleaning passes many times.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The cleaner catches up: what is left is about the live keys plus the active segment.
    let produced = acked.lock().len();
    let started = Instant::now();
    let remaining = loop {
        let (read, _) = read_to_end(&bootstrap, "changelog", 0)?;
        if read.len() < produced / 4 || started.elapsed() > Duration::from_secs(60) {
            break read.len();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let rounds = reader.await??;
    ensure!(rounds >= 2, "the reader completed only {rounds} rounds");
    let passes = silt.log().matches("cleaned log topic=changelog").count();
    ensure!(
        passes >= 3,
        "only {passes} cleaning passes while readers read"
    );
    ensure!(
        remaining < produced / 4,
        "{remaining} of {produced} records left after 60 s of cleaning"
    );
    let (read, high) = read_to_end(&bootstrap, "changelog", 0)?;
    check_read(&read, &acked.lock(), high)?;
    ensure!(silt.is_running(), "silt exited:\n{}", silt.log_tail());
    ensure!(
        silt.log().contains("cleaned log"),
        "no cleaning pass in the log:\n{}",
        silt.log_tail()
    );
    println!(
        "{produced} records produced, {remaining} left after cleaning; {rounds} reader rounds, {passes} cleaning passes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_cleaning_loses_nothing_and_resurrects_nothing() -> Result<()> {
    // A slow cleaner, so kills land in the middle of passes.
    let mut silt = fast_cleaner()
        .override_config("log.cleaner.io.max.bytes.per.second", 50_000)
        .start()?;
    let bootstrap = silt.bootstrap();
    // Records wait 3 s before they are cleanable, so a pass starts after each
    // round of production with the whole round dirty, and takes seconds.
    let mut configs = COMPACTED.to_vec();
    configs.push(("min.compaction.lag.ms", "3000"));
    create_topic(&bootstrap, "kill-clean", 1, &configs).await?;
    let acked = Mutex::new(Acked::new());
    const PASS_IN_PROGRESS: &str = "removing an unfinished cleaner replacement";
    let mut kills = 0;
    // Until two kills landed while a replacement was being written (at most 16).
    while silt.log().matches(PASS_IN_PROGRESS).count() < 2 {
        ensure!(
            kills < 16,
            "{kills} kills, fewer than two during a cleaning pass"
        );
        let producer = producer(
            &bootstrap,
            &[("acks", "all"), ("linger.ms", "5"), ("batch.size", "16384")],
        )?;
        produce_updates(&producer, "kill-clean", "key", 300, 3_000, kills, &acked).await?;
        drop(producer);
        // Kill while a replacement segment is being written (watched in the partition
        // directory), or, every third kill, after a random wait.
        let scratch = silt.data_dir().join("kill-clean-0").join("cleaner-scratch");
        // Watched kills wait up to 15 s for a pass to start (records become cleanable
        // few seconds after they are written; later on a loaded host).
        let wait_ms = if kills % 3 == 2 {
            rand::rng().random_range(200..5_000)
        } else {
            15_000
        };
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while Instant::now() < deadline {
            let writing = std::fs::read_dir(&scratch).is_ok_and(|entries| {
                entries.flatten().any(|entry| {
                    entry
                        .path()
                        .extension()
                        .is_some_and(|extension| extension == "log")
                        && entry.metadata().is_ok_and(|metadata| metadata.len() > 0)
                })
            });
            if writing && kills % 2 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        silt.kill9()?;
        kills += 1;
        ensure!(!silt.is_running(), "silt still running after SIGKILL");
        silt.start_again()?;
        ensure!(
            silt.is_running(),
            "silt did not restart:\n{}",
            silt.log_tail()
        );
        let high = acked.lock().keys().next_back().map_or(0, |last| last + 1);
        let (read, read_high) = read_to_end(&bootstrap, "kill-clean", 0)?;
        ensure!(
            read_high == high,
            "high watermark {read_high} after the restart, {high} acknowledged"
        );
        check_read(&read, &acked.lock(), high).with_context(|| format!("after kill {kills}"))?;
    }
    // After the last restart the cleaner finishes the job.
    let produced = acked.lock().len();
    let started = Instant::now();
    loop {
        let (read, _) = read_to_end(&bootstrap, "kill-clean", 0)?;
        if read.len() < produced / 4 {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!("{} of {produced} records left after 90 s", read.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (read, high) = read_to_end(&bootstrap, "kill-clean", 0)?;
    check_read(&read, &acked.lock(), high)?;
    ensure!(silt.is_running(), "silt exited:\n{}", silt.log_tail());
    let log = silt.log();
    println!(
        "5 kills: {} restarts found a pass in progress, {} finished a committed swap",
        log.matches("removing an unfinished cleaner replacement")
            .count(),
        log.matches("finishing a segment replacement a crash interrupted")
            .count()
    );
    Ok(())
}

const REPLAY_LINE: &str = "replayed a __consumer_offsets partition";

/// Restarts `silt` (SIGTERM, start) and returns `records=` and `elapsed_ms=` of the
/// `__consumer_offsets` replay of the new run.
async fn restart_and_measure_load(silt: &mut SiltProcess) -> Result<(u64, f64)> {
    let before = silt.log().matches(REPLAY_LINE).count();
    silt.restart()?;
    let started = Instant::now();
    while silt.log().matches(REPLAY_LINE).count() <= before {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no __consumer_offsets replay after the restart:\n{}",
            silt.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last_offsets_replay(&silt.log())
}

/// `records=` and `elapsed_ms=` of the last `__consumer_offsets` replay in `log`.
fn last_offsets_replay(log: &str) -> Result<(u64, f64)> {
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains(REPLAY_LINE))
        .context("no __consumer_offsets replay in the log")?;
    let field = |name: &str| -> Result<&str> {
        let start = line
            .find(&format!("{name}="))
            .with_context(|| format!("no {name} in {line:?}"))?
            + name.len()
            + 1;
        let rest = &line[start..];
        Ok(rest.split_whitespace().next().unwrap_or_default())
    };
    Ok((field("records")?.parse()?, field("elapsed_ms")?.parse()?))
}

/// Bytes of the `.log` files of `__consumer_offsets-0`.
fn offsets_log_bytes(silt: &SiltProcess) -> Result<u64> {
    let dir = silt.data_dir().join("__consumer_offsets-0");
    let mut bytes = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "log") {
            bytes += path.metadata()?.len();
        }
    }
    Ok(bytes)
}

/// Commits `rounds` offsets for each of `partitions` partitions of `topic` in each of
/// `groups` groups `<prefix>-<n>` (one OffsetCommit per round), the groups in parallel.
fn commit_rounds(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    groups: usize,
    partitions: i32,
    rounds: usize,
) -> Result<()> {
    use rdkafka::consumer::{CommitMode, Consumer};
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..groups)
            .map(|group| {
                scope.spawn(move || -> Result<()> {
                    let consumer = silt_tests::kafka::base_consumer_in_group(
                        bootstrap,
                        &format!("{prefix}-{group}"),
                    )?;
                    for round in 0..rounds {
                        let mut offsets = rdkafka::TopicPartitionList::new();
                        for partition in 0..partitions {
                            offsets.add_partition_offset(
                                topic,
                                partition,
                                rdkafka::Offset::Offset(round as i64 + 1),
                            )?;
                        }
                        consumer.commit(&offsets, CommitMode::Sync)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("committer panicked"))?
        })
    })
}

fn offsets_topic_options() -> SiltOptions {
    fast_cleaner()
        .override_config("offsets.topic.num.partitions", 1)
        .override_config("offsets.topic.segment.bytes", 65_536)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_load_is_bounded_by_live_groups_not_history() -> Result<()> {
    const GROUPS: usize = 10;
    const PARTITIONS: i32 = 10;
    // 10 groups x 10 partitions x 1,000 rounds = 100,000 offset commits.
    let mut busy = offsets_topic_options().start()?;
    create_topic(&busy.bootstrap(), "source", PARTITIONS, &[]).await?;
    let bootstrap = busy.bootstrap();
    tokio::task::spawn_blocking(move || {
        commit_rounds(&bootstrap, "source", "group", GROUPS, PARTITIONS, 1_000)
    })
    .await??;
    // Every commit is a record of __consumer_offsets-0: its high watermark is the history.
    let (_, history) = silt_tests::kafka::watermarks(&busy.bootstrap(), "__consumer_offsets", 1)?
        .first()
        .copied()
        .context("no watermarks")?;
    ensure!(
        history >= 100_000,
        "__consumer_offsets-0 holds {history} records"
    );
    // The cleaner leaves the live offsets and the active segment (64 KiB).
    let started = Instant::now();
    while offsets_log_bytes(&busy)? > 256 * 1024 {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "__consumer_offsets still holds {} bytes after 60 s",
            offsets_log_bytes(&busy)?
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (busy_records, busy_ms) = restart_and_measure_load(&mut busy).await?;

    let mut fresh = offsets_topic_options().start()?;
    create_topic(&fresh.bootstrap(), "source", PARTITIONS, &[]).await?;
    let bootstrap = fresh.bootstrap();
    tokio::task::spawn_blocking(move || {
        commit_rounds(&bootstrap, "source", "group", GROUPS, PARTITIONS, 1)
    })
    .await??;
    let (fresh_records, fresh_ms) = restart_and_measure_load(&mut fresh).await?;

    println!(
        "__consumer_offsets after {history} commits: {} bytes after cleaning; load replayed {busy_records} records in {busy_ms:.1} ms; a fresh group's load {fresh_records} records in {fresh_ms:.1} ms; ratios {:.1}x records, {:.1}x time",
        offsets_log_bytes(&busy)?,
        busy_records as f64 / fresh_records.max(1) as f64,
        busy_ms / fresh_ms.max(0.001),
    );
    ensure!(
        busy_records <= 10 * fresh_records.max(1),
        "the load replayed {busy_records} records, a fresh group's {fresh_records}"
    );
    ensure!(
        busy_ms <= 20.0 * fresh_ms.max(5.0),
        "the load took {busy_ms:.1} ms, a fresh group's {fresh_ms:.1} ms"
    );
    // The committed offsets are all there after the restart.
    let consumer = silt_tests::kafka::base_consumer_in_group(&busy.bootstrap(), "group-3")?;
    let mut wanted = rdkafka::TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        wanted.add_partition("source", partition);
    }
    let committed = tokio::task::spawn_blocking(move || {
        rdkafka::consumer::Consumer::committed_offsets(&consumer, wanted, Duration::from_secs(10))
    })
    .await??;
    for element in committed.elements() {
        ensure!(
            element.offset() == rdkafka::Offset::Offset(1_000),
            "group-3 {}: committed {:?}",
            element.partition(),
            element.offset()
        );
    }
    ensure!(busy.is_running() && fresh.is_running(), "a broker exited");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_groups_tombstones_leave_consumer_offsets_after_delete_retention_ms() -> Result<()>
{
    let silt = offsets_topic_options()
        .override_config("log.cleaner.delete.retention.ms", 1_000)
        .start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "source", 2, &[]).await?;
    let committer = bootstrap.clone();
    tokio::task::spawn_blocking(move || commit_rounds(&committer, "source", "gone", 1, 2, 3))
        .await??;
    // DeleteGroups writes tombstones for the group's offsets and metadata.
    let admin = silt_tests::kafka::admin(&bootstrap)?;
    let deleted = admin
        .delete_groups(&["gone-0"], &rdkafka::admin::AdminOptions::new())
        .await?;
    ensure!(
        deleted.iter().all(Result::is_ok),
        "DeleteGroups failed: {deleted:?}"
    );
    let mentions = |records: &[Received]| {
        records
            .iter()
            .filter(|record| {
                record
                    .key
                    .as_deref()
                    .is_some_and(|key| key.windows(6).any(|window| window == b"gone-0"))
            })
            .count()
    };
    let (before, _) = read_to_end(&bootstrap, "__consumer_offsets", 0)?;
    ensure!(
        mentions(&before) > 0,
        "no record of gone-0 in __consumer_offsets before cleaning"
    );
    // Other groups go on committing: segments roll, the cleaner maps the tombstones,
    // and once the clean section is delete.retention.ms newer, they go.
    let started = Instant::now();
    let mut round = 0;
    loop {
        let committer = bootstrap.clone();
        tokio::task::spawn_blocking(move || commit_rounds(&committer, "source", "live", 3, 2, 200))
            .await??;
        round += 1;
        let (records, _) = read_to_end(&bootstrap, "__consumer_offsets", 0)?;
        if mentions(&records) == 0 {
            // The live groups' offsets are all still there.
            let group_2 = records
                .iter()
                .filter(|record| {
                    record.value.is_some()
                        && record
                            .key
                            .as_deref()
                            .is_some_and(|key| key.windows(6).any(|window| window == b"live-2"))
                })
                .count();
            ensure!(group_2 >= 2, "live-2 has {group_2} live offset records");
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "gone-0's records still in __consumer_offsets after {round} rounds: {}",
            mentions(&records)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("gone-0's tombstones gone after {round} rounds of other groups' commits");
    Ok(())
}
