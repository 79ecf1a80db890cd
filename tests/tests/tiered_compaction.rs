//! Key compaction of a tiered topic (`remote.storage.enable=true`,
//! `cleanup.policy=compact`): the changelog moves to the object store and is compacted
//! there, so the bucket and the local disk both shrink to about the live keys, and a
//! consumer from offset 0 reads exactly the latest value of every live key. SIGKILL in
//! the middle of remote passes loses nothing and brings back nothing, and an object
//! store outage in the middle of one leaves no hole and no orphan.
//!
//! Runs against the S3 server named by `SILT_TEST_S3_*` when set (as exported by
//! `eval "$(minio-dev/start)"`), else against a local-directory store. The changelog's
//! size is `SILT_TIERED_COMPACTION_TEST_BYTES` (default 64 MiB; CI moves 1 GiB).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use silt_tests::kafka::{Received, create_topic, producer, read_to_end};
use silt_tests::s3::{
    Payloads, S3Server, TierStore, local_segments, partition_dir, remote_log_bytes, upload_backlog,
};
use silt_tests::{SiltOptions, SiltProcess};

const MIB: u64 = 1024 * 1024;

/// Which record index writes which key, and which writes are tombstones: `keys` keys
/// are written round-robin for `rounds` rounds; the first `tombstoned_keys` keys get a
/// tombstone in the middle round and are never written again.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    keys: u64,
    tombstoned_keys: u64,
    rounds: u64,
    payloads: Payloads,
}

impl Schedule {
    /// About `bytes` of values of `value_bytes` each over `keys` keys.
    fn sized(bytes: u64, keys: u64, value_bytes: usize) -> Schedule {
        Schedule {
            keys,
            tombstoned_keys: keys / 20,
            rounds: (bytes / (keys * value_bytes as u64)).max(4),
            payloads: Payloads {
                min_value_bytes: value_bytes,
                max_value_bytes: value_bytes,
            },
        }
    }

    fn key_of(&self, index: u64) -> u64 {
        index % self.keys
    }

    fn round_of(&self, index: u64) -> u64 {
        index / self.keys
    }

    fn tombstone_round(&self) -> u64 {
        self.rounds / 2
    }

    fn is_tombstone(&self, index: u64) -> bool {
        self.key_of(index) < self.tombstoned_keys && self.round_of(index) == self.tombstone_round()
    }

    /// Whether record `index` is written at all.
    fn is_written(&self, index: u64) -> bool {
        self.key_of(index) >= self.tombstoned_keys || self.round_of(index) <= self.tombstone_round()
    }

    fn key(&self, index: u64) -> String {
        format!("key-{:06}", self.key_of(index))
    }

    fn value(&self, index: u64) -> Option<Vec<u8>> {
        (!self.is_tombstone(index)).then(|| self.payloads.value(index))
    }

    /// Record indices of rounds `rounds`.
    fn indices(&self, rounds: std::ops::Range<u64>) -> impl Iterator<Item = u64> + '_ {
        (rounds.start * self.keys..rounds.end * self.keys).filter(|index| self.is_written(*index))
    }

    /// Bytes of the live keys' latest keys and values.
    fn live_bytes(&self) -> u64 {
        (self.keys - self.tombstoned_keys) * (self.payloads.max_value_bytes as u64 + 10)
    }

    /// Bucket bytes a compacted changelog may keep: about the live set, plus a
    /// segment's worth of what arrived after the last pass.
    fn compacted_goal(&self) -> u64 {
        self.live_bytes() * 3 / 2 + MIB
    }

    /// The fault tests' changelog: round 2 deletes 25 of the 500 keys; every later
    /// round rewrites the others.
    fn small() -> Schedule {
        Schedule {
            rounds: 4,
            ..Schedule::sized(8 * MIB, 500, 4_096)
        }
    }
}

/// Offset → record index of every acknowledged record.
type Acked = BTreeMap<i64, u64>;

type Delivery = std::result::Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

/// Records one delivery in `acked`.
fn settle(acked: &mut Acked, index: u64, delivery: Delivery) -> Result<()> {
    let delivered = delivery
        .map_err(|_| anyhow!("delivery of record {index} cancelled"))?
        .map_err(|(error, _)| anyhow!("record {index} failed: {error}"))?;
    ensure!(
        delivered.partition == 0,
        "record {index} went to partition {}",
        delivered.partition
    );
    let previous = acked.insert(delivered.offset, index);
    ensure!(
        previous.is_none(),
        "offset {} acknowledged twice",
        delivered.offset
    );
    Ok(())
}

/// Produces `indices` to partition 0 with at most 2,000 deliveries outstanding.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    schedule: &Schedule,
    indices: impl Iterator<Item = u64>,
    acked: &mut Acked,
) -> Result<()> {
    let mut pending = VecDeque::new();
    for index in indices {
        let key = schedule.key(index);
        let value = schedule.value(index);
        loop {
            let record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(topic).key(key.as_str()).partition(0);
            let record = match &value {
                Some(value) => record.payload(value.as_slice()),
                None => record,
            };
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back((index, delivery));
                    break;
                }
                Err((error, _)) => {
                    let Some((oldest, delivery)) = pending.pop_front() else {
                        bail!("enqueueing record {index} failed: {error}");
                    };
                    settle(acked, oldest, delivery.await)?;
                }
            }
        }
        while pending.len() >= 2_000 {
            let (oldest, delivery) = pending.pop_front().context("empty window")?;
            settle(acked, oldest, delivery.await)?;
        }
    }
    for (index, delivery) in pending {
        settle(acked, index, delivery.await)?;
    }
    Ok(())
}

/// What a read from offset 0 held.
#[derive(Debug, Default)]
struct ReadSummary {
    records: usize,
    live_keys: usize,
    tombstones: usize,
}

/// Checks a read of the whole partition against what was acknowledged (every offset
/// below the end is acknowledged): each record is the one acknowledged at its offset,
/// offsets increase, and every key ends with its latest acknowledged write; a key whose
/// latest write is a tombstone ends with it or is gone, never with an older value.
fn check_read(read: &[Received], acked: &Acked, schedule: &Schedule) -> Result<ReadSummary> {
    let mut last_read: BTreeMap<u64, i64> = BTreeMap::new();
    let mut previous = -1;
    let mut summary = ReadSummary::default();
    for record in read {
        ensure!(
            record.offset > previous,
            "offset {} read after {previous}",
            record.offset
        );
        previous = record.offset;
        let index = *acked
            .get(&record.offset)
            .with_context(|| format!("offset {} was never acknowledged", record.offset))?;
        ensure!(
            record.key.as_deref() == Some(schedule.key(index).as_bytes()),
            "offset {}: key {:?}, record {index} has key {}",
            record.offset,
            record.key_str(),
            schedule.key(index)
        );
        ensure!(
            record.value == schedule.value(index),
            "offset {}: the value is not record {index}'s",
            record.offset
        );
        let _previous = last_read.insert(schedule.key_of(index), record.offset);
        summary.records += 1;
    }
    let mut latest: BTreeMap<u64, (i64, u64)> = BTreeMap::new();
    for (offset, index) in acked {
        let _previous = latest.insert(schedule.key_of(*index), (*offset, *index));
    }
    for (key, (offset, index)) in latest {
        let seen = last_read.get(&key).copied();
        if schedule.is_tombstone(index) {
            ensure!(
                seen.is_none() || seen == Some(offset),
                "key {key}: deleted by the tombstone at {offset}, but a read ends with offset {seen:?}"
            );
            summary.tombstones += usize::from(seen.is_some());
        } else {
            ensure!(
                seen == Some(offset),
                "key {key}: latest value at {offset}, but a read ends with offset {seen:?}"
            );
            summary.live_keys += 1;
        }
    }
    Ok(summary)
}

/// Reads partition 0 from offset 0 and checks it against what was acknowledged
/// ([`check_read`]), its end included.
fn read_and_check(bootstrap: &str, acked: &Acked, schedule: &Schedule) -> Result<ReadSummary> {
    let (read, high) = read_to_end(bootstrap, "changelog", 0)?;
    let acked_end = acked.keys().next_back().map_or(0, |last| last + 1);
    ensure!(
        high == acked_end,
        "high watermark {high}, but {} records acknowledged up to offset {acked_end}",
        acked.len()
    );
    check_read(&read, acked, schedule)
}

/// After the faults: waits until the bucket holds about the live keys and exactly the
/// segments served, then reads from offset 0: every live key's latest value is there.
/// Returns the bucket's `.log` bytes and what the read held.
async fn wait_and_check_live_keys(
    silt: &mut SiltProcess,
    store: &TierStore,
    acked: &Acked,
    schedule: &Schedule,
) -> Result<(u64, ReadSummary)> {
    let goal = schedule.compacted_goal();
    let remote = wait_compacted(silt, store, "changelog", goal, Duration::from_secs(180)).await?;
    let summary = read_and_check(&silt.bootstrap(), acked, schedule)?;
    ensure!(
        summary.live_keys == (schedule.keys - schedule.tombstoned_keys) as usize,
        "{summary:?}: not every live key was read"
    );
    ensure!(silt.is_running(), "silt exited:\n{}", silt.log_tail());
    Ok((remote, summary))
}

fn volume() -> Result<u64> {
    match std::env::var("SILT_TIERED_COMPACTION_TEST_BYTES") {
        Ok(text) => text.trim().parse().with_context(|| {
            format!("SILT_TIERED_COMPACTION_TEST_BYTES={text:?} is not a byte count")
        }),
        Err(_) => Ok(64 * MIB),
    }
}

/// A broker whose remote log manager and cleaners look often, with restore points that
/// do not pin replaced segments for long.
fn tiered_silt(store: &TierStore) -> SiltOptions {
    store.apply(
        SiltOptions::new()
            .flag("--remote-log-manager-task-interval-ms", 200)
            .override_config("log.cleaner.backoff.ms", 500)
            .override_config("restore.point.interval.ms", 2_000)
            .override_config("restore.point.retention.ms", 1_000)
            .override_config("remote.log.compacted.segment.delete.delay.ms", 1_000),
    )
}

fn topic_configs(segment_bytes: u64) -> Vec<(&'static str, String)> {
    vec![
        ("remote.storage.enable", "true".into()),
        ("cleanup.policy", "compact".into()),
        ("segment.bytes", segment_bytes.to_string()),
        ("segment.ms", "2000".into()),
        ("local.retention.ms", "1".into()),
        ("min.cleanable.dirty.ratio", "0.01".into()),
        ("delete.retention.ms", "1000".into()),
    ]
}

async fn create(bootstrap: &str, topic: &str, configs: &[(&'static str, String)]) -> Result<()> {
    let configs: Vec<(&str, &str)> = configs
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    create_topic(bootstrap, topic, 1, &configs).await
}

fn changelog_producer(bootstrap: &str) -> Result<FutureProducer> {
    producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("batch.size", "524288"),
            ("compression.type", "none"),
            ("message.timeout.ms", "120000"),
        ],
    )
}

/// Local `.log` bytes of partition 0.
fn local_log_bytes(silt: &SiltProcess, topic: &str) -> Result<u64> {
    let mut bytes = 0;
    for path in local_segments(silt, topic, 0)? {
        bytes += std::fs::metadata(&path)?.len();
    }
    Ok(bytes)
}

/// Waits until the partition is fully tiered and compacted: no upload backlog, the
/// bucket's `.log` objects are exactly the segments the broker serves (no replaced or
/// orphan object left) and add up to at most `most_remote_bytes`.
async fn wait_compacted(
    silt: &mut SiltProcess,
    store: &TierStore,
    topic: &str,
    most_remote_bytes: u64,
    timeout: Duration,
) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let backlog = upload_backlog(silt, topic)?;
        let (listed, gauge) = remote_log_bytes(silt, store, topic).await?;
        let listed = listed.get(&0).copied().unwrap_or(0);
        let gauge = gauge.get(&0).copied().unwrap_or(-1.0);
        let done = backlog.get(&0) == Some(&0.0)
            && listed > 0
            && listed as f64 == gauge
            && listed <= most_remote_bytes;
        if done {
            return Ok(listed);
        }
        ensure!(silt.is_running(), "silt exited:\n{}", silt.log_tail());
        if Instant::now() > deadline {
            bail!(
                "{topic} not compacted in the bucket within {timeout:?}: backlog {backlog:?}, \
                 .log objects {listed} bytes, remote bytes gauge {gauge}, goal at most \
                 {most_remote_bytes} bytes"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_changelog_shrinks_to_its_live_keys_in_the_bucket_and_on_disk() -> Result<()> {
    let volume = volume()?;
    let schedule = Schedule::sized(volume, 2_000, 4_096);
    let segment_bytes = 4 * MIB;
    let local_objects = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&local_objects.path().join("objects"));
    eprintln!(
        "changelog of {} MiB ({} keys x {} rounds) to {}",
        volume / MIB,
        schedule.keys,
        schedule.rounds,
        store.describe()
    );
    let mut silt = tiered_silt(&store).start()?;
    let bootstrap = silt.bootstrap();
    create(&bootstrap, "changelog", &topic_configs(segment_bytes)).await?;
    let producer = changelog_producer(&bootstrap)?;
    let mut acked = Acked::new();
    let started = Instant::now();
    produce(
        &producer,
        "changelog",
        &schedule,
        schedule.indices(0..schedule.rounds),
        &mut acked,
    )
    .await?;
    let produced_bytes = acked.len() as u64 * schedule.payloads.max_value_bytes as u64;
    eprintln!(
        "produced {} records ({} MiB) in {:.1?}",
        acked.len(),
        produced_bytes / MIB,
        started.elapsed()
    );

    // Everything moves to the bucket (idle segments roll after segment.ms) and is
    // compacted there to about the live keys.
    let live = schedule.live_bytes();
    let goal = schedule.compacted_goal();
    let timeout = Duration::from_secs(180 + volume / (2 * MIB));
    let started = Instant::now();
    let remote = wait_compacted(&mut silt, &store, "changelog", goal, timeout).await?;
    eprintln!(
        "bucket compacted to {} KiB ({} KiB live) {:.1?} after producing",
        remote / 1024,
        live / 1024,
        started.elapsed()
    );
    let local = local_log_bytes(&silt, "changelog")?;
    ensure!(
        local <= 2 * segment_bytes,
        "{local} bytes of local segments left; the local tier should hold at most the active segment"
    );

    // A later pass removes the tombstones too: they are older than delete.retention.ms
    // than the newest clean record once more updates arrive.
    let last_round = schedule.rounds;
    schedule_more(&producer, &schedule, last_round, &mut acked).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let summary = loop {
        let summary = read_and_check(&bootstrap, &acked, &schedule)?;
        if summary.tombstones == 0 && summary.records == summary.live_keys {
            break summary;
        }
        if Instant::now() > deadline {
            bail!("after 120 s the read from offset 0 still holds {summary:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let remote = wait_compacted(&mut silt, &store, "changelog", goal, timeout).await?;
    ensure!(silt.is_running(), "silt exited:\n{}", silt.log_tail());
    let log = silt.log();
    let passes = log.matches("cleaned remote log").count();
    ensure!(passes >= 2, "only {passes} remote cleaning passes");
    println!(
        "{} records ({} MiB) produced; a read from offset 0 holds exactly the {} live keys; \
         bucket {} KiB, local {} KiB, live {} KiB; {passes} remote passes",
        acked.len(),
        produced_bytes / MIB,
        summary.live_keys,
        remote / 1024,
        local_log_bytes(&silt, "changelog")? / 1024,
        live / 1024
    );
    Ok(())
}

/// One more round of updates of the live keys (round `round`).
async fn schedule_more(
    producer: &FutureProducer,
    schedule: &Schedule,
    round: u64,
    acked: &mut Acked,
) -> Result<()> {
    let more = Schedule {
        rounds: round + 1,
        ..*schedule
    };
    // Round `round` is past the tombstone round, so it writes only live keys.
    produce(
        producer,
        "changelog",
        &more,
        more.indices(round..round + 1),
        acked,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_remote_cleaning_loses_nothing_and_resurrects_nothing() -> Result<()> {
    let schedule = Schedule::small();
    let segment_bytes = MIB;
    let local_objects = tempfile::tempdir()?;
    let store = TierStore::from_env_or_local(&local_objects.path().join("objects"));
    // A slow cleaner, so kills land in the middle of remote passes.
    let mut silt = tiered_silt(&store)
        .override_config("log.cleaner.io.max.bytes.per.second", 3_000_000)
        .start()?;
    let bootstrap = silt.bootstrap();
    create(&bootstrap, "changelog", &topic_configs(segment_bytes)).await?;
    let scratch = partition_dir(&silt, "changelog", 0).join("cleaner-scratch");
    let mut acked = Acked::new();
    let rounds_per_kill = 2;
    let (mut kills, mut during_pass) = (0u64, 0u64);
    let mut round = 0;
    while during_pass < 3 {
        ensure!(
            kills < 15,
            "{kills} kills, {during_pass} of them during a remote pass"
        );
        let producer = changelog_producer(&bootstrap)?;
        let rounds = round..round + rounds_per_kill;
        produce(
            &producer,
            "changelog",
            &schedule,
            schedule.indices(rounds.clone()),
            &mut acked,
        )
        .await?;
        round = rounds.end;
        drop(producer);
        // Wait for a remote pass to download or write in the scratch directory, then
        // kill after a random delay so kills land in every phase (download, rewrite,
        // upload, swap, deletion of the replaced objects).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut in_pass = false;
        while Instant::now() < deadline {
            in_pass = std::fs::read_dir(&scratch).is_ok_and(|mut entries| entries.next().is_some());
            if in_pass {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = rand::rng().random_range(0..2_500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        silt.kill9()?;
        kills += 1;
        during_pass += u64::from(in_pass);
        ensure!(!silt.is_running(), "silt still running after SIGKILL");
        silt.start_again()?;
        ensure!(
            silt.is_running(),
            "silt did not restart:\n{}",
            silt.log_tail()
        );
        read_and_check(&bootstrap, &acked, &schedule)
            .with_context(|| format!("after kill {kills}"))?;
    }
    // After the last restart the cleaner finishes: nothing but the live keys and no
    // object beyond the segments served.
    let (remote, summary) = wait_and_check_live_keys(&mut silt, &store, &acked, &schedule).await?;
    let log = silt.log();
    println!(
        "{kills} kills, {during_pass} during a remote pass; {} abandoned uploads cleaned up \
         after restarts; {} swaps; finally {summary:?} in {} KiB of .log objects",
        log.matches("cleaning up an abandoned remote segment")
            .count(),
        log.matches("swapped in a compacted remote segment").count(),
        remote / 1024
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_during_remote_cleaning_leaves_no_hole() -> Result<()> {
    let schedule = Schedule::small();
    // A private S3 server, so the test can stop it in the middle of a pass.
    let mut server = S3Server::start()?;
    let store = TierStore::s3(server.env().clone());
    let mut silt = tiered_silt(&store)
        .override_config("log.cleaner.io.max.bytes.per.second", 3_000_000)
        .start()?;
    let bootstrap = silt.bootstrap();
    create(&bootstrap, "changelog", &topic_configs(MIB)).await?;
    let scratch = partition_dir(&silt, "changelog", 0).join("cleaner-scratch");
    let mut acked = Acked::new();
    let producer = changelog_producer(&bootstrap)?;
    let mut round = 0;
    let mut outages = 0;
    // Until an outage cut a remote pass short (a pass fails, its work is dropped).
    while silt.log().matches("remote cleaning pass failed").count() == 0 {
        ensure!(outages < 5, "{outages} outages, none during a remote pass");
        produce(
            &producer,
            "changelog",
            &schedule,
            schedule.indices(round..round + 2),
            &mut acked,
        )
        .await?;
        round += 2;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !std::fs::read_dir(&scratch).is_ok_and(|mut entries| entries.next().is_some())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.stop()?;
        outages += 1;
        // Producers keep getting acknowledgements while the bucket is gone.
        produce(
            &producer,
            "changelog",
            &schedule,
            schedule.indices(round..round + 1),
            &mut acked,
        )
        .await?;
        round += 1;
        tokio::time::sleep(Duration::from_secs(6)).await;
        ensure!(
            silt.is_running(),
            "silt exited during the outage:\n{}",
            silt.log_tail()
        );
        server.start_again()?;
    }
    // Once the bucket is back the cleaner finishes; what a failed pass uploaded is
    // cleaned up, so the bucket holds exactly the segments served.
    let (remote, summary) = wait_and_check_live_keys(&mut silt, &store, &acked, &schedule).await?;
    println!(
        "{outages} outages; {} failed remote passes; finally {summary:?} in {} KiB of .log objects",
        silt.log().matches("remote cleaning pass failed").count(),
        remote / 1024
    );
    Ok(())
}
