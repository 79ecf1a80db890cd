//! A consistency checker for fault tests: produce uniquely numbered records with
//! `acks=all` and idempotence, remember every acknowledgment, then read everything back
//! and report what went wrong.
//!
//! Anomalies reported (each must be zero after any fault a test injects):
//! - lost: an acknowledged record is not in the log;
//! - moved: an acknowledged record is in the log, but not at the acknowledged offset
//!   (an acknowledgment without an offset, which librdkafka gives for a record it
//!   knows was written, only needs the record in its partition);
//! - duplicates: one record at two or more offsets;
//! - inconsistent offsets: two reads of one offset returned different records;
//! - non-monotonic polls: a read returned offsets that did not strictly increase;
//! - unknown records: a record the checker never sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka;

/// One acknowledged record: its number and where the broker said it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The record's number (its value is `<run>-<number>`).
    pub number: u64,
    /// Partition it was sent to.
    pub partition: i32,
    /// Offset in the acknowledgment.
    pub offset: i64,
    /// When it was acknowledged, since the producer started.
    pub at: Duration,
}

/// Produces numbered records and records acknowledgments; shareable across tasks.
#[derive(Debug)]
pub struct Checker {
    topic: String,
    partitions: i32,
    run: String,
    next_number: AtomicU64,
    acks: Mutex<Vec<Ack>>,
    failed_sends: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

impl Checker {
    /// A checker for `topic` with `partitions` partitions; record `n` goes to partition
    /// `n % partitions`.
    pub fn new(topic: &str, partitions: i32) -> Arc<Checker> {
        Arc::new(Checker {
            topic: topic.to_string(),
            partitions,
            run: format!("run{}", std::process::id()),
            next_number: AtomicU64::new(0),
            acks: Mutex::new(Vec::new()),
            failed_sends: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// The producer settings the checker uses: acks=all, idempotence, retries.
    pub fn producer(bootstrap: &str) -> Result<FutureProducer> {
        kafka::producer(
            bootstrap,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "20000"),
                ("request.timeout.ms", "5000"),
                ("retry.backoff.ms", "100"),
                ("linger.ms", "2"),
            ],
        )
    }

    /// Produces until [`Checker::stop`] is called, with up to `in_flight` records
    /// outstanding. A producer that hits a fatal error is replaced.
    pub async fn produce_until_stopped(
        self: Arc<Self>,
        bootstrap: String,
        in_flight: usize,
    ) -> Result<()> {
        let mut producer = Checker::producer(&bootstrap)?;
        let mut pending = FuturesUnordered::new();
        while !self.stop.load(Ordering::Acquire) || !pending.is_empty() {
            while !self.stop.load(Ordering::Acquire) && pending.len() < in_flight {
                let number = self.next_number.fetch_add(1, Ordering::AcqRel);
                let partition = i32::try_from(number % u64::try_from(self.partitions)?)?;
                let value = self.value_of(number);
                let send = producer.send_result(
                    FutureRecord::<(), String>::to(&self.topic)
                        .partition(partition)
                        .payload(&value),
                );
                match send {
                    Ok(delivery) => {
                        pending.push(async move { (number, partition, delivery.await) })
                    }
                    Err((error, _)) => {
                        self.failed_sends.fetch_add(1, Ordering::AcqRel);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = error;
                        break;
                    }
                }
            }
            let Some((number, partition, outcome)) = pending.next().await else {
                continue;
            };
            match outcome {
                Ok(Ok(delivery)) => {
                    debug_assert_eq!(delivery.partition, partition);
                    self.acks.lock().push(Ack {
                        number,
                        partition,
                        offset: delivery.offset,
                        at: self.started.elapsed(),
                    });
                }
                Ok(Err(_)) | Err(_) => {
                    self.failed_sends.fetch_add(1, Ordering::AcqRel);
                    if producer.client().fatal_error().is_some() {
                        // In-flight records of the dead producer fail; count them and restart.
                        while let Some(_rest) = pending.next().await {
                            self.failed_sends.fetch_add(1, Ordering::AcqRel);
                        }
                        producer = Checker::producer(&bootstrap)?;
                    }
                }
            }
        }
        let _ = producer.flush(Duration::from_secs(10));
        Ok(())
    }

    /// Sends one numbered record to `partition` and waits for its acknowledgment (kept
    /// like every other); for probes such as "first write after a failover".
    pub async fn send_one(&self, producer: &FutureProducer, partition: i32) -> Result<Ack> {
        let number = self.next_number.fetch_add(1, Ordering::AcqRel);
        let value = self.value_of(number);
        let record = FutureRecord::<(), String>::to(&self.topic)
            .partition(partition)
            .payload(&value);
        match producer.send(record, Duration::from_secs(0)).await {
            Ok(delivery) => {
                let ack = Ack {
                    number,
                    partition,
                    offset: delivery.offset,
                    at: self.started.elapsed(),
                };
                self.acks.lock().push(ack);
                Ok(ack)
            }
            Err((error, _)) => {
                self.failed_sends.fetch_add(1, Ordering::AcqRel);
                Err(anyhow::anyhow!(
                    "record {number} to partition {partition} failed: {error}"
                ))
            }
        }
    }

    /// Asks [`Checker::produce_until_stopped`] to finish its outstanding records and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Acknowledgments so far.
    pub fn ack_count(&self) -> usize {
        self.acks.lock().len()
    }

    /// Sends that failed (not acknowledged; they may or may not be in the log).
    pub fn failed_count(&self) -> u64 {
        self.failed_sends.load(Ordering::Acquire)
    }

    /// Every acknowledgment so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().clone()
    }

    fn value_of(&self, number: u64) -> String {
        format!("{}-{number}", self.run)
    }

    fn number_of(&self, value: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(value).ok()?;
        let (run, number) = text.rsplit_once('-')?;
        if run != self.run {
            return None;
        }
        number.parse().ok()
    }

    /// Reads every partition from its first offset to its high watermark twice (two
    /// consumers) and compares with the acknowledgments.
    pub fn verify(&self, bootstrap: &str) -> Result<Report> {
        self.wait_for_high_watermarks(bootstrap)?;
        let first = self.read_all(bootstrap)?;
        let second = self.read_all(bootstrap)?;
        let acks = self.acks();
        let mut report = Report {
            acknowledged: acks.len(),
            failed_sends: self.failed_count(),
            ..Report::default()
        };
        for read in [&first, &second] {
            report.non_monotonic_polls += read.non_monotonic;
        }
        // One offset, two records across the reads (only offsets both reads saw).
        for (partition, records) in &first.records {
            let Some(other) = second.records.get(partition) else {
                continue;
            };
            for (offset, value) in records {
                if let Some(other_value) = other.get(offset)
                    && other_value != value
                {
                    report.inconsistent_offsets.push((*partition, *offset));
                }
            }
        }
        let mut locations: BTreeMap<u64, Vec<(i32, i64)>> = BTreeMap::new();
        for (partition, records) in &first.records {
            report.records_read += records.len();
            for (offset, value) in records {
                match value {
                    Some(number) => locations
                        .entry(*number)
                        .or_default()
                        .push((*partition, *offset)),
                    None => report.unknown_records += 1,
                }
            }
        }
        for (number, places) in &locations {
            if places.len() > 1 {
                let producers = self.producers_of(bootstrap, places);
                if epoch_bumped_between(&producers) {
                    report.duplicates_by_epoch_bump.push(*number);
                } else {
                    report.duplicates.push(*number);
                }
                report.details.push(format!(
                    "record {number} at {places:?} by (producer id, epoch, sequence) {producers:?}"
                ));
            }
        }
        for ack in &acks {
            match locations.get(&ack.number) {
                None => report.lost.push(ack.number),
                // librdkafka reports a record it knows was written, without its offset
                // (a later record of the same idempotent producer was acknowledged),
                // as delivered at -1001: it must be in its partition, anywhere.
                Some(places)
                    if ack.offset < 0
                        && places
                            .iter()
                            .any(|(partition, _)| *partition == ack.partition) =>
                {
                    report.acknowledged_without_offset += 1;
                }
                Some(places) if !places.contains(&(ack.partition, ack.offset)) => {
                    report.moved.push(ack.number);
                    report.details.push(format!(
                        "record {} acknowledged at {}-{} after {:?}, found at {places:?}",
                        ack.number, ack.partition, ack.offset, ack.at
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(report)
    }

    /// A leader elected just before the check starts at its follower-era high watermark
    /// and advances it as its followers fetch (as in Kafka): wait up to 30 s for every
    /// partition's high watermark to pass its last acknowledged offset. An acknowledged
    /// record still beyond it afterwards is reported lost.
    fn wait_for_high_watermarks(&self, bootstrap: &str) -> Result<()> {
        let mut needed: BTreeMap<i32, i64> = BTreeMap::new();
        for ack in self.acks() {
            let entry = needed.entry(ack.partition).or_insert(0);
            *entry = (*entry).max(ack.offset + 1);
        }
        let consumer = kafka::base_consumer(bootstrap)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for (partition, offset) in needed {
            loop {
                // A metadata hiccup right after faults is retried like a low watermark.
                let high = consumer
                    .fetch_watermarks(&self.topic, partition, kafka::CLIENT_TIMEOUT)
                    .map(|(_, high)| high)
                    .unwrap_or(-1);
                if high >= offset || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// The (producer id, epoch, sequence) of the record at each place, read from the
    /// partition leaders; an entry is `None` where the lookup failed.
    fn producers_of(&self, bootstrap: &str, places: &[(i32, i64)]) -> Vec<Option<(i64, i16, i32)>> {
        places
            .iter()
            .map(|(partition, offset)| {
                let addr = leader_addr(bootstrap, &self.topic, *partition).ok()?;
                let mut client = crate::wire::WireClient::connect(addr).ok()?;
                client
                    .producer_of_record(&self.topic, *partition, *offset)
                    .ok()
            })
            .collect()
    }

    /// Low and high watermark of a partition, retried for up to 30 s: right after a
    /// fault the client may still be reconnecting.
    fn watermarks(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer,
        partition: i32,
    ) -> Result<(i64, i64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.fetch_watermarks(&self.topic, partition, kafka::CLIENT_TIMEOUT) {
                Ok(watermarks) => return Ok(watermarks),
                Err(error) if Instant::now() > deadline => {
                    return Err(error)
                        .with_context(|| format!("watermarks of {}-{partition}", self.topic));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn read_all(&self, bootstrap: &str) -> Result<ReadBack> {
        let consumer = kafka::base_consumer(bootstrap)?;
        let mut read = ReadBack::default();
        for partition in 0..self.partitions {
            let (low, high) = self.watermarks(&consumer, partition)?;
            let records = read.records.entry(partition).or_default();
            if high <= low {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(&self.topic, partition, Offset::Offset(low))?;
            consumer.assign(&assignment)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut last_offset = low - 1;
            while last_offset + 1 < high {
                if Instant::now() > deadline {
                    bail!(
                        "reading {}-{partition} stalled at offset {} of {high}",
                        self.topic,
                        last_offset + 1
                    );
                }
                let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                    continue;
                };
                // Transport errors right after faults are retried until the deadline.
                let Ok(message) = message else { continue };
                if message.partition() != partition {
                    continue;
                }
                let offset = message.offset();
                if offset <= last_offset {
                    read.non_monotonic += 1;
                }
                last_offset = last_offset.max(offset);
                if offset >= high {
                    break;
                }
                let number = message.payload().and_then(|value| self.number_of(value));
                let _ = records.insert(offset, number);
            }
        }
        Ok(read)
    }
}

/// Whether two copies of one record were written by one producer id under different
/// epochs: librdkafka bumps its idempotent producer's epoch after certain errors on any
/// partition and then resends batches that may already be persisted with sequences
/// restarted, which no broker can deduplicate (librdkafka issue 4953; only
/// transactions avoid it). Such a duplicate is the client's, not the broker's.
fn epoch_bumped_between(producers: &[Option<(i64, i16, i32)>]) -> bool {
    let known: Vec<(i64, i16, i32)> = producers.iter().flatten().copied().collect();
    known.len() == producers.len()
        && known.len() > 1
        && known.iter().all(|(id, _, _)| *id == known[0].0)
        && known.windows(2).all(|pair| pair[1].1 > pair[0].1)
}

/// The address of the leader of `topic`-`partition`, from the metadata.
fn leader_addr(bootstrap: &str, topic: &str, partition: i32) -> Result<std::net::SocketAddr> {
    let consumer = kafka::base_consumer(bootstrap)?;
    let metadata = consumer.fetch_metadata(Some(topic), kafka::CLIENT_TIMEOUT)?;
    let leader = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic)
        .and_then(|found| found.partitions().iter().find(|p| p.id() == partition))
        .map(|found| found.leader())
        .context("partition missing from the metadata")?;
    let broker = metadata
        .brokers()
        .iter()
        .find(|broker| broker.id() == leader)
        .with_context(|| format!("leader {leader} missing from the metadata"))?;
    format!("{}:{}", broker.host(), broker.port())
        .parse()
        .context("leader address")
}

#[derive(Debug, Default)]
struct ReadBack {
    /// partition -> offset -> record number (`None` for a record the checker did not write).
    records: BTreeMap<i32, BTreeMap<i64, Option<u64>>>,
    non_monotonic: usize,
}

/// What [`Checker::verify`] found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Acknowledged records.
    pub acknowledged: usize,
    /// Sends that failed; they may or may not be in the log, either is fine.
    pub failed_sends: u64,
    /// Records read back (first read).
    pub records_read: usize,
    /// Acknowledged records not found.
    pub lost: Vec<u64>,
    /// Acknowledged records found, but not at the acknowledged offset.
    pub moved: Vec<u64>,
    /// Records found at more than one offset, the copies not explained by a client
    /// epoch bump.
    pub duplicates: Vec<u64>,
    /// Records found twice, written by one producer id under a lower and then a higher
    /// producer epoch: librdkafka's resend after an epoch bump (see
    /// `epoch_bumped_between`); counted, not an anomaly of the broker.
    pub duplicates_by_epoch_bump: Vec<u64>,
    /// (partition, offset) pairs that two reads answered differently.
    pub inconsistent_offsets: Vec<(i32, i64)>,
    /// Polls that returned an offset not above the previous one.
    pub non_monotonic_polls: usize,
    /// Records the checker did not send.
    pub unknown_records: usize,
    /// Acknowledged records whose acknowledgment carried no offset (found in their
    /// partition; not an anomaly).
    pub acknowledged_without_offset: usize,
    /// Where moved and duplicated records were acknowledged and found (partition,
    /// offset), for finding their cause in the broker logs.
    pub details: Vec<String>,
}

impl Report {
    /// Total number of anomalies (0 = the run is clean).
    pub fn anomalies(&self) -> usize {
        self.lost.len()
            + self.moved.len()
            + self.duplicates.len()
            + self.inconsistent_offsets.len()
            + self.non_monotonic_polls
            + self.unknown_records
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sample = |items: &[u64]| {
            items
                .iter()
                .take(10)
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "acknowledged {} ({} without an offset), failed sends {}, read {}; lost {} [{}], moved {} [{}], duplicates {} [{}] (and {} by a client epoch bump), inconsistent offsets {} {:?}, non-monotonic polls {}, unknown records {}",
            self.acknowledged,
            self.acknowledged_without_offset,
            self.failed_sends,
            self.records_read,
            self.lost.len(),
            sample(&self.lost),
            self.moved.len(),
            sample(&self.moved),
            self.duplicates.len(),
            sample(&self.duplicates),
            self.duplicates_by_epoch_bump.len(),
            self.inconsistent_offsets.len(),
            self.inconsistent_offsets
                .iter()
                .take(10)
                .collect::<BTreeSet<_>>(),
            self.non_monotonic_polls,
            self.unknown_records
        )?;
        for detail in self.details.iter().take(20) {
            write!(f, "\n  {detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::epoch_bumped_between;

    #[test]
    fn only_a_higher_epoch_of_the_same_producer_explains_a_copy() {
        assert!(epoch_bumped_between(&[Some((7, 0, 12)), Some((7, 1, 0))]));
        // Same epoch: the broker should have deduplicated it.
        assert!(!epoch_bumped_between(&[Some((7, 0, 12)), Some((7, 0, 12))]));
        // Another producer id, an unknown copy, or a single copy: not explained.
        assert!(!epoch_bumped_between(&[Some((7, 0, 12)), Some((8, 1, 0))]));
        assert!(!epoch_bumped_between(&[Some((7, 0, 12)), None]));
        assert!(!epoch_bumped_between(&[Some((7, 0, 12))]));
    }
}
