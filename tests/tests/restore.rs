//! The bucket is the archive: a single-node cluster writes restore points while an
//! idempotent producer and a committing group work; a restore is refused while that
//! cluster runs; after SIGKILL and the loss of its log dir, `silt restore` into a fresh
//! log dir (falling back over a corrupted newest restore point) and `silt serve` bring
//! back the topic with its id and configs, every acknowledged record below the cut byte
//! for byte and nothing else, the group's offsets (never above the cut), and producing
//! and consuming go on.
//!
//! Runs twice: against a local-directory store, and against the S3 server named by
//! `SILT_TEST_S3_*` (skipped without one, except under `CI`).

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kafka_protocol::ResponseError;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use silt_broker::test_util::BatchSpec;
use silt_tests::kafka::{
    ARCHIVED_TOPIC_CONFIGS, archiving_producer, base_consumer_in_group, create_topic,
    produce_numbered, producer, read_all, receive, stream_consumer, watermarks,
};
use silt_tests::s3::{S3Env, TierStore};
use silt_tests::wire::WireClient;
use silt_tests::{SiltOptions, SiltProcess};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 2;
const RECORDS: usize = 6_000;
const GROUP: &str = "readers";

fn options(store: &TierStore) -> SiltOptions {
    store.apply(
        SiltOptions::new()
            .override_config("remote.log.manager.task.interval.ms", 300)
            .override_config("restore.point.interval.ms", 1_000)
            .override_config("log.retention.check.interval.ms", 300),
    )
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `silt restore-points list` rows: (id, groups) of the usable ones, newest first.
fn listed_restore_points(silt: &SiltProcess) -> Result<Vec<(String, u64, usize)>> {
    let output = silt.run_with_settings(&["restore-points", "list"])?;
    ensure!(
        output.status.success(),
        "restore-points list failed: {}",
        stderr_of(&output)
    );
    Ok(stdout_of(&output)
        .lines()
        .skip(1)
        .filter(|line| !line.contains("unusable"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bytes = fields.get(4)?.parse().ok()?;
            let groups = fields.get(5)?.parse().ok()?;
            Some((fields[0].to_string(), bytes, groups))
        })
        .collect())
}

fn topic_id_of(silt: &SiltProcess) -> Result<String> {
    let described = silt.cli_ok(&["topics", "describe", TOPIC])?;
    described
        .split("TopicId: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .context("topics describe prints the topic id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_comes_back_from_its_restore_points_in_a_local_directory() -> Result<()> {
    let work = tempfile::tempdir()?;
    comes_back_from_its_restore_points_alone(TierStore::Local {
        dir: work.path().join("objects"),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_comes_back_from_its_restore_points_in_s3() -> Result<()> {
    let Some(env) = S3Env::required_in_ci()? else {
        return Ok(());
    };
    comes_back_from_its_restore_points_alone(TierStore::s3(env)).await
}

async fn comes_back_from_its_restore_points_alone(store: TierStore) -> Result<()> {
    eprintln!("archive in {}", store.describe());

    let mut old = SiltProcess::start_with(options(&store))?;
    create_topic(&old.bootstrap(), TOPIC, PARTITIONS, &ARCHIVED_TOPIC_CONFIGS).await?;
    let topic_id = topic_id_of(&old)?;
    let idempotent = archiving_producer(&old.bootstrap())?;
    let positions = produce_numbered(&idempotent, TOPIC, 0, RECORDS).await?;
    drop(idempotent);
    // Acknowledged value of every (partition, offset).
    let acknowledged: BTreeMap<(i32, i64), usize> = positions
        .iter()
        .enumerate()
        .map(|(index, position)| (*position, index))
        .collect();
    let ends = watermarks(&old.bootstrap(), TOPIC, PARTITIONS)?;
    // The group committed far into partition 0 (past what will be tiered: the restore
    // lowers it to the cut) and a little into partition 1.
    let committed = [ends[0].1, 40_i64];
    let committer = base_consumer_in_group(&old.bootstrap(), GROUP)?;
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in committed.iter().enumerate() {
        offsets.add_partition_offset(TOPIC, partition as i32, Offset::Offset(*offset))?;
    }
    committer.commit(&offsets, CommitMode::Sync)?;
    drop(committer);

    // Restore points carry the group and the tiered segments: wait until the newest one
    // has stopped growing for 2 s (every sealed segment of every partition uploaded),
    // so the one the restore falls back to below holds data of every partition.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut steady_since: Option<(u64, Instant)> = None;
    loop {
        let listed = listed_restore_points(&old)?;
        let newest = listed
            .first()
            .filter(|(_, bytes, groups)| *bytes > 40_000 && *groups == 1)
            .map(|(_, bytes, _)| *bytes);
        match (newest, steady_since) {
            (Some(bytes), Some((seen, since))) if bytes == seen => {
                if since.elapsed() >= Duration::from_secs(2) {
                    break;
                }
            }
            (Some(bytes), _) => steady_since = Some((bytes, Instant::now())),
            (None, _) => steady_since = None,
        }
        ensure!(
            Instant::now() < deadline,
            "no restore point with the group and tiered data within 90 s: {listed:?}\n{}",
            old.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let on_demand = std::process::Command::new(silt_tests::silt_bin()?)
        .args(["restore-points", "create", "--admin"])
        .arg(old.admin_addr().to_string())
        .output()?;
    ensure!(
        on_demand.status.success() && stdout_of(&on_demand).starts_with("restore point "),
        "restore-points create: {}{}",
        stdout_of(&on_demand),
        stderr_of(&on_demand)
    );

    // A restore while the cluster still writes restore points is refused.
    let mut new = SiltProcess::prepare(options(&store))?;
    let refused = new.run_with_settings(&["restore"])?;
    ensure!(
        !refused.status.success() && stderr_of(&refused).contains("still running"),
        "a restore next to the running cluster must be refused: {}{}",
        stdout_of(&refused),
        stderr_of(&refused)
    );

    // Disaster: the node dies and its disk is gone.
    old.kill9()?;
    ensure!(!old.is_running(), "the old node is dead");
    std::fs::remove_dir_all(old.data_dir())?;
    let listed = listed_restore_points(&new)?;
    ensure!(listed.len() >= 2, "several restore points: {listed:?}");
    // The newest restore point is damaged: the restore falls back to the one before.
    let (newest, _, _) = listed[0].clone();
    store
        .put(&format!("restore-points/{newest}.rp"), b"torn".to_vec())
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restored = new.run_with_settings(&["restore"])?;
    ensure!(
        restored.status.success(),
        "silt restore failed: {}{}",
        stdout_of(&restored),
        stderr_of(&restored)
    );
    ensure!(
        stderr_of(&restored).contains(&newest) && stderr_of(&restored).contains("unusable"),
        "the damaged restore point is named: {}",
        stderr_of(&restored)
    );
    ensure!(
        !stdout_of(&restored).contains(&newest),
        "the damaged restore point is not used: {}",
        stdout_of(&restored)
    );
    new.start_again()?;

    // The topic, with its id.
    ensure!(
        topic_id_of(&new)? == topic_id,
        "the restored topic keeps its id"
    );
    let described = new.cli_ok(&["topics", "describe", TOPIC])?;
    ensure!(
        described.contains("remote.storage.enable=true")
            && described.contains("segment.bytes=16384"),
        "the restored topic keeps its configs: {described}"
    );
    // Every acknowledged record below each partition's cut, byte for byte, nothing else.
    let restored_ends = watermarks(&new.bootstrap(), TOPIC, PARTITIONS)?;
    for (partition, (low, high)) in restored_ends.iter().enumerate() {
        ensure!(
            *low == 0,
            "partition {partition} restored from 0, not {low}"
        );
        ensure!(
            *high > 0 && *high <= ends[partition].1,
            "partition {partition}: cut {high} within (0, {}]",
            ends[partition].1
        );
    }
    let records = read_all(&new.bootstrap(), TOPIC, PARTITIONS).await?;
    let mut seen = BTreeMap::new();
    for record in &records {
        let index = acknowledged
            .get(&(record.partition, record.offset))
            .with_context(|| {
                format!(
                    "record at {}-{} was never acknowledged",
                    record.partition, record.offset
                )
            })?;
        ensure!(
            record.value_str() == format!("value-{index}")
                && record.key_str() == format!("key-{index}"),
            "{}-{} holds {:?}, acknowledged value-{index}",
            record.partition,
            record.offset,
            record.value_str()
        );
        ensure!(
            seen.insert((record.partition, record.offset), ()).is_none(),
            "offset {}-{} read twice",
            record.partition,
            record.offset
        );
    }
    let expected: i64 = restored_ends.iter().map(|(low, high)| high - low).sum();
    ensure!(
        seen.len() as i64 == expected,
        "{} records read, the cuts hold {expected}",
        seen.len()
    );

    // The group's offsets, lowered to the cut where they were above it.
    let fetcher = base_consumer_in_group(&new.bootstrap(), GROUP)?;
    let mut query = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let _ = query.add_partition(TOPIC, partition);
    }
    let answer = fetcher.committed_offsets(query, Duration::from_secs(10))?;
    for partition in 0..PARTITIONS {
        let want = committed[partition as usize].min(restored_ends[partition as usize].1);
        let found = answer
            .find_partition(TOPIC, partition)
            .map(|element| element.offset());
        ensure!(
            found == Some(Offset::Offset(want)),
            "group offset of {TOPIC}-{partition}: {found:?}, expected {want}"
        );
    }
    drop(fetcher);

    // The idempotent producers' state came back with the cut: a retry of the last batch
    // below it is answered as a duplicate, not written again, and a sequence gap is
    // refused.
    let cut = restored_ends[0].1;
    let mut wire = WireClient::connect(new.kafka_addr())?;
    let version = wire.negotiated_version(0, 9)?;
    let last_batch = wire.batch_holding(TOPIC, 0, cut - 1)?;
    let (Some(first), Some(last)) = (last_batch.first(), last_batch.last()) else {
        anyhow::bail!("an empty batch below the cut");
    };
    ensure!(
        first.producer_id >= 0 && last.offset == cut - 1,
        "the batch below the cut is an idempotent producer's and ends there: {first:?}"
    );
    let retry = BatchSpec::new(last_batch.len(), first.timestamp)
        .idempotent(first.producer_id, first.producer_epoch, first.sequence)
        .encode_bytes();
    let answer = wire.produce_batch(version, TOPIC, 0, retry)?;
    let answered = answer
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .context("produce response without the partition")?;
    ensure!(
        answered.error_code == 0 && answered.base_offset == first.offset,
        "a retry of the batch at {} after the restore: error {}, base offset {}",
        first.offset,
        answered.error_code,
        answered.base_offset
    );
    let gap = BatchSpec::new(1, last.timestamp)
        .idempotent(first.producer_id, first.producer_epoch, last.sequence + 5)
        .encode_bytes();
    let answer = wire.produce_batch(version, TOPIC, 0, gap)?;
    let code = answer
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .map(|partition| partition.error_code);
    ensure!(
        code == Some(ResponseError::OutOfOrderSequenceNumber.code()),
        "a sequence gap after the restore: error {code:?}"
    );
    ensure!(
        watermarks(&new.bootstrap(), TOPIC, PARTITIONS)?[0].1 == cut,
        "nothing was appended to {TOPIC}-0 by the retry or the gap"
    );
    drop(wire);

    // Producing goes on from the cut, with a new idempotent producer.
    let again = producer(
        &new.bootstrap(),
        &[("enable.idempotence", "true"), ("acks", "all")],
    )?;
    let more = produce_numbered(&again, TOPIC, RECORDS, 100).await?;
    for (partition, offset) in &more {
        ensure!(
            *offset >= restored_ends[*partition as usize].1,
            "new record at {partition}-{offset} below the cut"
        );
    }
    let firsts: BTreeMap<i32, i64> = more.iter().fold(BTreeMap::new(), |mut firsts, (p, o)| {
        let entry = firsts.entry(*p).or_insert(*o);
        *entry = (*entry).min(*o);
        firsts
    });
    for (partition, first) in &firsts {
        ensure!(
            *first == restored_ends[*partition as usize].1,
            "offsets of {TOPIC}-{partition} continue at the cut, not {first}"
        );
    }
    // The group resumes at its committed offsets with an unmodified client.
    let consumer = stream_consumer(&new.bootstrap(), GROUP, &[])?;
    consumer.subscribe(&[TOPIC])?;
    let resumed = receive(&consumer, 20, Duration::from_secs(60)).await?;
    for partition in 0..PARTITIONS {
        let want = committed[partition as usize].min(restored_ends[partition as usize].1);
        if let Some(first) = resumed.iter().find(|record| record.partition == partition) {
            ensure!(
                first.offset == want,
                "the group resumed {TOPIC}-{partition} at {}, committed {want}",
                first.offset
            );
        }
    }
    ensure!(new.is_running(), "the restored node still runs");
    ensure!(
        !new.data_dir().join("restore-point.pending").exists(),
        "the pending restore is gone once applied"
    );
    let _removed = store.remove_all().await?;
    Ok(())
}
