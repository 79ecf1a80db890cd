//! Idempotent-producer state of one partition (KIP-98): per producer id the
//! current epoch and the metadata of its last five batches, used to drop
//! retried duplicates and reject sequence gaps. Persisted as
//! `<offset:020>.snapshot` files, where `offset` is the log end offset the
//! snapshot covers (exclusive).

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{SNAPSHOT_FILE_SUFFIX, write_file_atomically, write_file_replacing};
use crate::error::LogError;
use crate::record_batch::{BatchHeader, NO_SEQUENCE, increment_sequence};
use crate::segment::offset_file_path;

/// Batches remembered per producer for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`).
pub(crate) const BATCHES_TO_RETAIN: usize = 5;
const SNAPSHOT_VERSION: u32 = 1;

/// What the log remembers of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Max timestamp of the batch as appended (ms).
    pub timestamp: i64,
}

/// State of one producer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current producer epoch.
    pub epoch: i16,
    /// The last appended batches of the current epoch, oldest first.
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the last appended batch (ms), for expiration.
    pub last_timestamp: i64,
}

impl ProducerEntry {
    fn last_sequence(&self) -> i32 {
        self.batches
            .back()
            .map_or(NO_SEQUENCE, |batch| batch.last_seq)
    }

    fn find_duplicate(&self, header: &BatchHeader) -> Option<BatchMetadata> {
        if header.producer_epoch != self.epoch {
            return None;
        }
        let last_seq = header.last_sequence();
        self.batches
            .iter()
            .find(|batch| batch.first_seq == header.base_sequence && batch.last_seq == last_seq)
            .copied()
    }
}

/// Outcome of checking a batch against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already appended: these are its original offsets and timestamp.
    Duplicate(BatchMetadata),
}

/// Whether `next` directly follows `last`, wrapping from `i32::MAX` to 0.
fn in_sequence(last: i32, next: i32) -> bool {
    next == increment_sequence(last, 1)
}

/// Producer state of one partition log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    version: u32,
    offset: i64,
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    /// An empty state.
    pub fn new() -> ProducerStateManager {
        ProducerStateManager::default()
    }

    /// The state of `producer_id`, if known.
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// For every producer with a batch in its current epoch, the last offset of its last
    /// batch.
    pub fn last_offsets(&self) -> std::collections::HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(producer_id, entry)| {
                entry
                    .batches
                    .back()
                    .map(|batch| (*producer_id, batch.last_offset))
            })
            .collect()
    }

    /// Checks the batches of one produce request in order, as if each earlier
    /// one had been appended, without changing the state. Batches without a
    /// producer id are always accepted.
    pub fn check_batches(&self, headers: &[BatchHeader]) -> Result<Vec<SequenceCheck>, LogError> {
        let mut pending: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        let mut checks = Vec::with_capacity(headers.len());
        for header in headers {
            if !header.has_producer_id() {
                checks.push(SequenceCheck::Accept);
                continue;
            }
            let current = pending
                .get(&header.producer_id)
                .or_else(|| self.producers.get(&header.producer_id));
            let check = check_batch(current, header)?;
            if check == SequenceCheck::Accept {
                let mut entry = current.cloned();
                // Offsets are unknown until append; only sequences matter here.
                apply_batch(&mut entry, header, 0);
                if let Some(entry) = entry {
                    let _previous = pending.insert(header.producer_id, entry);
                }
            }
            checks.push(check);
        }
        Ok(checks)
    }

    /// Records an appended batch (offsets assigned). Control batches only
    /// move the epoch forward. No checks: used after [`Self::check_batches`],
    /// for replicated batches and when rebuilding from the log.
    pub fn update(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        let mut entry = self.producers.remove(&header.producer_id);
        apply_batch(&mut entry, header, header.base_offset);
        if let Some(entry) = entry {
            let _previous = self.producers.insert(header.producer_id, entry);
        }
    }

    /// Forgets producers whose last batch is older than `now_ms - max_idle_ms`
    /// (Kafka's `producer.id.expiration.ms`); returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, entry| now_ms.saturating_sub(entry.last_timestamp) <= max_idle_ms);
        before - self.producers.len()
    }

    /// Forgets everything (log truncated fully).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Writes `<offset:020>.snapshot` in `dir` atomically (temp file, fsync,
    /// rename) and returns its path. The file is a CRC-32C in hex on the
    /// first line followed by the JSON body it covers.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> Result<PathBuf, LogError> {
        let (path, content) = self.snapshot_file(dir, offset)?;
        write_file_atomically(&path, &content)?;
        Ok(path)
    }

    /// [`Self::write_snapshot`] without the fsyncs, for a caller that fsyncs the file
    /// and its directory later (a segment roll does it off the append path). Readers
    /// see the old or the new file; after a crash before the fsync the snapshot may be
    /// missing or fail its checksum, and producer state is rebuilt from the log.
    pub fn write_snapshot_unsynced(&self, dir: &Path, offset: i64) -> Result<PathBuf, LogError> {
        let (path, content) = self.snapshot_file(dir, offset)?;
        write_file_replacing(&path, &content)?;
        Ok(path)
    }

    /// Path and content of the snapshot at `offset`: a CRC-32C in hex, a newline, and
    /// the JSON body it covers.
    fn snapshot_file(&self, dir: &Path, offset: i64) -> Result<(PathBuf, Vec<u8>), LogError> {
        let body = SnapshotBody {
            version: SNAPSHOT_VERSION,
            offset,
            producers: self.producers.clone(),
        };
        let json = serde_json::to_vec(&body)
            .map_err(|error| LogError::Corrupt(format!("encoding producer snapshot: {error}")))?;
        let mut content = format!("{:08x}\n", crc32c::crc32c(&json)).into_bytes();
        content.extend_from_slice(&json);
        Ok((offset_file_path(dir, offset, SNAPSHOT_FILE_SUFFIX), content))
    }

    /// Reads a snapshot written by [`Self::write_snapshot`]; returns the
    /// offset it covers and the state. A bad checksum or body is
    /// [`LogError::Corrupt`].
    pub fn read_snapshot(path: &Path) -> Result<(i64, ProducerStateManager), LogError> {
        let content = fs::read(path)?;
        Self::parse_snapshot(&content, &path.display().to_string())
    }

    /// [`Self::read_snapshot`] of a snapshot's bytes (for example one copied to remote
    /// storage); `source` names them in errors.
    pub fn parse_snapshot(
        content: &[u8],
        source: &str,
    ) -> Result<(i64, ProducerStateManager), LogError> {
        let corrupt = |what: &str| LogError::Corrupt(format!("{source}: {what}"));
        let newline = content
            .iter()
            .position(|byte| *byte == b'\n')
            .ok_or_else(|| corrupt("missing checksum line"))?;
        let stored = std::str::from_utf8(&content[..newline])
            .ok()
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| corrupt("unreadable checksum"))?;
        let json = &content[newline + 1..];
        if crc32c::crc32c(json) != stored {
            return Err(corrupt("checksum mismatch"));
        }
        let body: SnapshotBody =
            serde_json::from_slice(json).map_err(|error| corrupt(&error.to_string()))?;
        if body.version != SNAPSHOT_VERSION {
            return Err(corrupt(&format!("unknown version {}", body.version)));
        }
        Ok((
            body.offset,
            ProducerStateManager {
                producers: body.producers,
            },
        ))
    }
}

/// Kafka's checks for one batch of an idempotent producer.
fn check_batch(
    current: Option<&ProducerEntry>,
    header: &BatchHeader,
) -> Result<SequenceCheck, LogError> {
    let Some(entry) = current else {
        return Ok(SequenceCheck::Accept);
    };
    if header.producer_epoch < entry.epoch {
        return Err(LogError::InvalidProducerEpoch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            current_epoch: entry.epoch,
        });
    }
    if header.producer_epoch > entry.epoch {
        if header.base_sequence != 0 {
            return Err(LogError::OutOfOrderSequence {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                first_sequence: header.base_sequence,
                expected_sequence: 0,
            });
        }
        return Ok(SequenceCheck::Accept);
    }
    if let Some(duplicate) = entry.find_duplicate(header) {
        return Ok(SequenceCheck::Duplicate(duplicate));
    }
    let last_seq = entry.last_sequence();
    let expected_sequence = if last_seq == NO_SEQUENCE {
        0
    } else {
        increment_sequence(last_seq, 1)
    };
    let follows = if last_seq == NO_SEQUENCE {
        header.base_sequence == 0
    } else {
        in_sequence(last_seq, header.base_sequence)
    };
    if !follows {
        return Err(LogError::OutOfOrderSequence {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            expected_sequence,
        });
    }
    Ok(SequenceCheck::Accept)
}

/// Folds one batch (first offset `first_offset`) into a producer's entry.
fn apply_batch(entry: &mut Option<ProducerEntry>, header: &BatchHeader, first_offset: i64) {
    let current = entry.get_or_insert_with(|| ProducerEntry {
        epoch: header.producer_epoch,
        batches: VecDeque::new(),
        last_timestamp: header.max_timestamp,
    });
    if header.producer_epoch > current.epoch {
        current.epoch = header.producer_epoch;
        current.batches.clear();
    }
    current.last_timestamp = current.last_timestamp.max(header.max_timestamp);
    if header.is_control() || header.base_sequence == NO_SEQUENCE {
        return;
    }
    if current.batches.len() == BATCHES_TO_RETAIN {
        let _oldest = current.batches.pop_front();
    }
    current.batches.push_back(BatchMetadata {
        first_seq: header.base_sequence,
        last_seq: header.last_sequence(),
        first_offset,
        last_offset: first_offset + i64::from(header.last_offset_delta),
        timestamp: header.max_timestamp,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::list_snapshots;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 10,
            max_timestamp: 10,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: count,
        }
    }

    fn appended(mut header: BatchHeader, base_offset: i64) -> BatchHeader {
        header.base_offset = base_offset;
        header
    }

    #[test]
    fn duplicate_returns_original_offsets_and_gap_is_rejected() {
        let mut state = ProducerStateManager::new();
        state.update(&appended(header(7, 0, 0, 3), 100));
        state.update(&appended(header(7, 0, 3, 2), 103));
        let checks = state.check_batches(&[header(7, 0, 0, 3)]).expect("dup");
        assert!(matches!(
            checks[0],
            SequenceCheck::Duplicate(BatchMetadata {
                first_offset: 100,
                last_offset: 102,
                ..
            })
        ));
        assert!(matches!(
            state.check_batches(&[header(7, 0, 6, 1)]),
            Err(LogError::OutOfOrderSequence {
                expected_sequence: 5,
                ..
            })
        ));
        assert_eq!(
            state.check_batches(&[header(7, 0, 5, 1)]).expect("next")[0],
            SequenceCheck::Accept
        );
    }

    #[test]
    fn epochs_are_fenced_and_new_epoch_restarts_at_zero() {
        let mut state = ProducerStateManager::new();
        state.update(&appended(header(1, 3, 0, 1), 0));
        assert!(matches!(
            state.check_batches(&[header(1, 2, 1, 1)]),
            Err(LogError::InvalidProducerEpoch {
                current_epoch: 3,
                ..
            })
        ));
        assert!(state.check_batches(&[header(1, 4, 5, 1)]).is_err());
        assert!(state.check_batches(&[header(1, 4, 0, 1)]).is_ok());
        assert!(state.check_batches(&[header(99, 0, 42, 1)]).is_ok());
    }

    #[test]
    fn batches_of_one_request_are_checked_in_order() {
        let state = ProducerStateManager::new();
        assert!(
            state
                .check_batches(&[header(1, 0, 0, 2), header(1, 0, 2, 2)])
                .is_ok()
        );
        assert!(
            state
                .check_batches(&[header(1, 0, 0, 2), header(1, 0, 3, 2)])
                .is_err()
        );
    }

    #[test]
    fn sequence_wraps_to_zero() {
        let mut state = ProducerStateManager::new();
        state.update(&appended(header(1, 0, i32::MAX - 1, 2), 0));
        assert!(state.check_batches(&[header(1, 0, 0, 1)]).is_ok());
        assert!(state.check_batches(&[header(1, 0, 1, 1)]).is_err());
    }

    #[test]
    fn only_five_batches_are_retained() {
        let mut state = ProducerStateManager::new();
        for index in 0..6 {
            state.update(&appended(header(1, 0, index, 1), i64::from(index)));
        }
        assert_eq!(state.entry(1).map(|entry| entry.batches.len()), Some(5));
        assert!(state.check_batches(&[header(1, 0, 0, 1)]).is_err());
    }

    #[test]
    fn snapshot_round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = ProducerStateManager::new();
        state.update(&appended(header(5, 1, 0, 4), 40));
        let path = state.write_snapshot(dir.path(), 44).expect("write");
        assert_eq!(list_snapshots(dir.path()).expect("list"), vec![44]);
        let (offset, loaded) = ProducerStateManager::read_snapshot(&path).expect("read");
        assert_eq!(offset, 44);
        assert_eq!(loaded, state);

        let mut content = fs::read(&path).expect("read");
        let last = content.len() - 2;
        content[last] ^= 0x01;
        fs::write(&path, content).expect("write");
        assert!(matches!(
            ProducerStateManager::read_snapshot(&path),
            Err(LogError::Corrupt(_))
        ));
    }
}
