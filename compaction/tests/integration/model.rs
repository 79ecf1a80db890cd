//! Model-based test: random streams of keys, values and tombstones in random batch and
//! segment sizes, codecs, offset-map budgets and cleaning points; after every pass the
//! log is checked against the history of what was appended.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{Rec, clean, compacted, encode, open, read_log};

const DELETE_RETENTION_MS: i64 = 150;
/// Each record is 10 ms younger than the one before.
const TICK_MS: i64 = 10;

/// What the test appended: every record by offset.
#[derive(Default)]
struct History {
    records: BTreeMap<i64, Rec>,
}

impl History {
    /// Offset of the latest record of `key` below `end`.
    fn latest_below(&self, key: &[u8], end: i64) -> Option<i64> {
        self.records
            .range(..end)
            .rev()
            .find(|(_, rec)| rec.key == key)
            .map(|(offset, _)| *offset)
    }
}

fn codec(rng: &mut StdRng) -> Compression {
    match rng.random_range(0..5) {
        0 => Compression::Gzip,
        1 => Compression::Snappy,
        2 => Compression::Lz4,
        3 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Checks the log after a pass that cleaned `[.., end)` starting from `first_dirty`.
fn check(
    read: &[(i64, Rec)],
    history: &History,
    end: i64,
    first_dirty: i64,
    active_base: i64,
    newest_timestamp: i64,
    seed: u64,
) {
    let present: HashMap<i64, &Rec> = read.iter().map(|(offset, rec)| (*offset, rec)).collect();
    // Offsets strictly increase and every record is the one appended at its offset.
    for pair in read.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "seed {seed}: offsets not increasing at {}",
            pair[1].0
        );
    }
    for (offset, rec) in read {
        assert_eq!(
            history.records.get(offset),
            Some(rec),
            "seed {seed}: record at {offset} changed"
        );
    }
    for (offset, rec) in &history.records {
        let latest = history.latest_below(&rec.key, end);
        if *offset >= end || *offset >= active_base {
            // Past the pass (or in the active segment): untouched.
            assert!(
                present.contains_key(offset),
                "seed {seed}: record {offset} past the cleaned section is gone"
            );
        } else if latest == Some(*offset) {
            // The latest of its key in the cleaned section stays, unless it is a
            // tombstone that was clean before the pass and is past the horizon.
            if !present.contains_key(offset) {
                assert!(
                    rec.value.is_none(),
                    "seed {seed}: latest value of key {:?} at {offset} lost",
                    rec.key
                );
                assert!(
                    *offset < first_dirty,
                    "seed {seed}: tombstone {offset} removed in the pass that mapped it"
                );
                assert!(
                    rec.timestamp <= newest_timestamp - DELETE_RETENTION_MS,
                    "seed {seed}: tombstone {offset} removed before delete.retention.ms"
                );
            }
        } else {
            // Superseded inside the cleaned section: gone.
            assert!(
                !present.contains_key(offset),
                "seed {seed}: older value of key {:?} at {offset} kept below {end}",
                rec.key
            );
        }
    }
}

/// Runs one random history; returns how many tombstones its passes removed.
fn run(seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_bytes = rng.random_range(1_000..6_000);
    let log = open(dir.path(), compacted(segment_bytes, DELETE_RETENTION_MS));
    let mut history = History::default();
    let mut clock = 1_000_000i64;
    let keys = rng.random_range(5..80);
    let mut passes = 0;
    let mut tombstones_removed = 0;
    for step in 0..250 {
        match rng.random_range(0..10) {
            0..=6 => {
                let count = rng.random_range(1..8);
                let records: Vec<Rec> = (0..count)
                    .map(|index| {
                        clock += TICK_MS;
                        let key = format!("k{}", rng.random_range(0..keys)).into_bytes();
                        let value = (!rng.random_bool(0.15))
                            .then(|| format!("s{seed}-step{step}-{index}").into_bytes());
                        // Producers' clocks disagree: some records carry an older time.
                        let late = if rng.random_bool(0.2) {
                            rng.random_range(0..1_000)
                        } else {
                            0
                        };
                        Rec {
                            key,
                            value,
                            timestamp: clock - late,
                        }
                    })
                    .collect();
                let batch = encode(&records, codec(&mut rng), None);
                let info = log
                    .lock()
                    .append_as_leader(&batch, 0, clock)
                    .expect("append");
                for (index, rec) in records.into_iter().enumerate() {
                    let _previous = history
                        .records
                        .insert(info.first_offset + index as i64, rec);
                }
            }
            7 => log.lock().roll(clock).expect("roll"),
            _ => {
                let first_dirty = log.lock().cleaning_view().first_dirty_offset;
                let budget = rng.random_range(150..3_000);
                if let Some(stats) = clean(&log, budget, clock) {
                    passes += 1;
                    tombstones_removed += stats.tombstones_removed;
                    assert_eq!(stats.first_dirty_offset, first_dirty);
                    let guard = log.lock();
                    let read = read_log(&guard);
                    check(
                        &read,
                        &history,
                        stats.end_offset,
                        first_dirty,
                        guard.active_segment_base_offset(),
                        clock,
                        seed,
                    );
                }
            }
        }
    }
    assert!(passes > 0, "seed {seed}: no pass ran");
    // Reopened after a clean shutdown and after a crash (no close), the log reads the same.
    let before = read_log(&log.lock());
    log.into_inner().close().expect("close");
    let reopened = open(dir.path(), compacted(segment_bytes, DELETE_RETENTION_MS));
    assert_eq!(
        read_log(&reopened.lock()),
        before,
        "seed {seed}: reopened log differs"
    );
    drop(reopened);
    let recovered = open(dir.path(), compacted(segment_bytes, DELETE_RETENTION_MS));
    assert_eq!(
        read_log(&recovered.lock()),
        before,
        "seed {seed}: recovered log differs"
    );
    tombstones_removed
}

#[test]
fn cleaned_logs_match_the_model() {
    let tombstones_removed: u64 = (0..12).map(run).sum();
    assert!(tombstones_removed > 0, "no pass removed a tombstone");
}
