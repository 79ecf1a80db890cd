//! The durable raft log: an append-only file of checksummed records, plus the vote and the
//! committed log id in small side files.
//!
//! Record layout: `len: u32 LE | crc32c(len bytes ++ payload): u32 LE | payload`, where the
//! payload is a serde_json [`LogRecord`]. Appends are fsynced before openraft is told they
//! are flushed. Truncation cuts the file at the first removed entry; purging rewrites the file
//! as a `Purged` marker followed by the remaining entries and renames it into place.
//!
//! On open, the file is scanned from the start and cut at the first incomplete or
//! checksum-failing record: a write torn by a crash was never acknowledged, so dropping it is
//! safe. A record with a valid checksum that does not decode is an error, not a torn write.
//!
//! All entries stay in memory: the log holds metadata commands only and is purged after
//! every snapshot.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Read;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::AnyError;
use openraft::Entry;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogId;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::Vote;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use parking_lot::Mutex;
use serde::Deserialize;
use serde::Serialize;

use crate::command::NodeId;
use crate::command::TypeConfig;
use crate::durable_file::blocking;
use crate::durable_file::read_if_exists;
use crate::durable_file::sync_parent_dir;
use crate::durable_file::write_atomically;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const RECORD_HEADER_LEN: usize = 8;
/// Larger length fields can only come from a torn or corrupt header.
const MAX_RECORD_LEN: usize = 64 << 20;

type RaftEntry = Entry<TypeConfig>;

/// One record of the log file.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    /// A raft log entry.
    Entry(RaftEntry),
    /// Every entry up to this id (inclusive) was purged; written first by a purge rewrite.
    Purged(LogId<NodeId>),
}

struct IndexedEntry {
    entry: RaftEntry,
    /// Byte offset of the entry's record in the log file.
    offset: u64,
}

/// The in-memory view of the log, shared with [`LogReader`]s.
#[derive(Default)]
struct LogIndex {
    entries: BTreeMap<u64, IndexedEntry>,
    last_purged: Option<LogId<NodeId>>,
}

impl LogIndex {
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        match self.entries.last_key_value() {
            Some((_, indexed)) => Some(indexed.entry.log_id),
            None => self.last_purged,
        }
    }

    /// The index the next appended entry must have: entries are consecutive, but the first
    /// one after a purge is not tied to the purge point.
    fn next_index(&self) -> Option<u64> {
        self.entries.last_key_value().map(|(index, _)| index + 1)
    }

    fn purge_upto(&mut self, log_id: LogId<NodeId>) {
        if self.last_purged.is_none_or(|purged| purged < log_id) {
            self.last_purged = Some(log_id);
        }
        self.entries = self.entries.split_off(&(log_id.index + 1));
    }

    fn range(&self, range: impl RangeBounds<u64>) -> Vec<RaftEntry> {
        self.entries
            .range(range)
            .map(|(_, indexed)| indexed.entry.clone())
            .collect()
    }
}

/// The raft log storage of one controller node.
pub(crate) struct LogStore {
    dir: PathBuf,
    /// Opened in append mode: every write lands at the current end of the file.
    file: Arc<File>,
    file_len: u64,
    index: Arc<Mutex<LogIndex>>,
}

/// Read access to the log for openraft's replication tasks.
#[derive(Clone)]
pub(crate) struct LogReader {
    index: Arc<Mutex<LogIndex>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, dropping a torn tail.
    pub(crate) async fn open(dir: &Path) -> io::Result<LogStore> {
        let path = dir.join(LOG_FILE);
        let (file, file_len, index) = blocking(move || open_log_file(&path)).await?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            file_len,
            index: Arc::new(Mutex::new(index)),
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    async fn append_entries(&mut self, entries: Vec<RaftEntry>) -> io::Result<()> {
        let mut buffer = Vec::new();
        let mut indexed = Vec::with_capacity(entries.len());
        for entry in entries {
            let offset = self.file_len + buffer.len() as u64;
            encode_record(&LogRecord::Entry(entry.clone()), &mut buffer)?;
            indexed.push(IndexedEntry { entry, offset });
        }
        {
            let mut index = self.index.lock();
            for indexed_entry in indexed {
                debug_assert!(
                    index
                        .next_index()
                        .is_none_or(|next| next == indexed_entry.entry.log_id.index),
                    "raft log entries must be consecutive"
                );
                let _replaced = index
                    .entries
                    .insert(indexed_entry.entry.log_id.index, indexed_entry);
            }
        }
        self.file_len += buffer.len() as u64;
        let file = Arc::clone(&self.file);
        blocking(move || {
            (&*file).write_all(&buffer)?;
            file.sync_data()
        })
        .await
    }

    async fn truncate_since(&mut self, log_id: LogId<NodeId>) -> io::Result<()> {
        let cut_offset = {
            let mut index = self.index.lock();
            let Some(first_removed) = index.entries.range(log_id.index..).next() else {
                return Ok(());
            };
            let first_removed_offset = first_removed.1.offset;
            let _removed = index.entries.split_off(&log_id.index);
            first_removed_offset
        };
        self.file_len = cut_offset;
        let file = Arc::clone(&self.file);
        blocking(move || {
            file.set_len(cut_offset)?;
            file.sync_all()
        })
        .await
    }

    async fn purge_upto(&mut self, log_id: LogId<NodeId>) -> io::Result<()> {
        let contents = {
            let mut index = self.index.lock();
            index.purge_upto(log_id);
            let mut contents = Vec::new();
            let marker = index.last_purged.unwrap_or(log_id);
            encode_record(&LogRecord::Purged(marker), &mut contents)?;
            for indexed in index.entries.values_mut() {
                indexed.offset = contents.len() as u64;
                encode_record(&LogRecord::Entry(indexed.entry.clone()), &mut contents)?;
            }
            contents
        };
        let new_len = contents.len() as u64;
        let path = self.log_path();
        let file = blocking(move || {
            write_atomically(&path, &contents, true)?;
            OpenOptions::new().read(true).append(true).open(&path)
        })
        .await?;
        self.file = Arc::new(file);
        self.file_len = new_len;
        Ok(())
    }
}

fn open_log_file(path: &Path) -> io::Result<(File, u64, LogIndex)> {
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    if !existed {
        sync_parent_dir(path)?;
    }
    let mut bytes = Vec::new();
    let _read = file.read_to_end(&mut bytes)?;
    let (index, valid_len) = scan_records(&bytes)?;
    let file_len = bytes.len() as u64;
    if valid_len < file_len {
        tracing::warn!(
            path = %path.display(),
            valid_bytes = valid_len,
            dropped_bytes = file_len - valid_len,
            "dropping torn tail of the raft log"
        );
        file.set_len(valid_len)?;
        file.sync_all()?;
    }
    Ok((file, valid_len, index))
}

/// Decodes records up to the first torn one; returns the index and the valid byte length.
fn scan_records(bytes: &[u8]) -> io::Result<(LogIndex, u64)> {
    let mut index = LogIndex::default();
    let mut position = 0usize;
    while let Some((payload, record_len)) = next_record(&bytes[position..]) {
        let record: LogRecord = serde_json::from_slice(payload).map_err(|error| {
            invalid_data(format!(
                "raft log record at byte {position} does not decode: {error}"
            ))
        })?;
        match record {
            LogRecord::Purged(log_id) => index.purge_upto(log_id),
            LogRecord::Entry(entry) => {
                let entry_index = entry.log_id.index;
                if let Some(expected) = index.next_index()
                    && entry_index != expected
                {
                    return Err(invalid_data(format!(
                        "raft log entry at byte {position} has index {entry_index}, expected {expected}"
                    )));
                }
                let offset = position as u64;
                let _replaced = index
                    .entries
                    .insert(entry_index, IndexedEntry { entry, offset });
            }
        }
        position += record_len;
    }
    Ok((index, position as u64))
}

/// The payload and total length of the record at the start of `bytes`, or `None` when the
/// record is incomplete or fails its checksum.
fn next_record(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let len_bytes: [u8; 4] = bytes.get(0..4)?.try_into().ok()?;
    let crc_bytes: [u8; 4] = bytes.get(4..RECORD_HEADER_LEN)?.try_into().ok()?;
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).ok()?;
    if len == 0 || len > MAX_RECORD_LEN {
        return None;
    }
    let payload = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)?;
    let expected_crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
    if u32::from_le_bytes(crc_bytes) != expected_crc {
        return None;
    }
    Some((payload, RECORD_HEADER_LEN + len))
}

fn encode_record(record: &LogRecord, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(record)?;
    if payload.is_empty() || payload.len() > MAX_RECORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raft log record of {} bytes is out of range", payload.len()),
        ));
    }
    let len = u32::try_from(payload.len())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &payload);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: io::Error,
) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, error)
}

/// Replaces the small file at `path` with `bytes` on the blocking pool (fsynced with
/// `durable`).
async fn write_file(
    path: PathBuf,
    bytes: Vec<u8>,
    durable: bool,
    subject: ErrorSubject<NodeId>,
) -> Result<(), StorageError<NodeId>> {
    blocking(move || write_atomically(&path, &bytes, durable))
        .await
        .map_err(|error| storage_error(subject, ErrorVerb::Write, error))
}

/// The small file at `path`, `None` when it does not exist, read on the blocking pool.
async fn read_file(
    path: PathBuf,
    subject: ErrorSubject<NodeId>,
) -> Result<Option<Vec<u8>>, StorageError<NodeId>> {
    blocking(move || read_if_exists(&path))
        .await
        .map_err(|error| storage_error(subject, ErrorVerb::Read, error))
}

/// openraft reads entries through the store and through separate readers; both read
/// the one in-memory index.
macro_rules! read_from_index {
    ($($reader:ty),+) => {$(
        impl RaftLogReader<TypeConfig> for $reader {
            async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
                &mut self,
                range: RB,
            ) -> Result<Vec<RaftEntry>, StorageError<NodeId>> {
                Ok(self.index.lock().range(range))
            }
        }
    )+};
}

read_from_index!(LogStore, LogReader);

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let index = self.index.lock();
        Ok(LogState {
            last_purged_log_id: index.last_purged,
            last_log_id: index.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            index: Arc::clone(&self.index),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|error| StorageIOError::write_vote(AnyError::new(&error)))?;
        write_file(self.dir.join(VOTE_FILE), bytes, true, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let Some(bytes) = read_file(self.dir.join(VOTE_FILE), ErrorSubject::Vote).await? else {
            return Ok(None);
        };
        // The vote file is replaced atomically and fsynced, so a bad one is real corruption;
        // guessing a vote could let this node vote twice in one term.
        let vote = serde_json::from_slice(&bytes)
            .map_err(|error| StorageIOError::read_vote(AnyError::new(&error)))?;
        Ok(Some(vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&committed)
            .map_err(|error| StorageIOError::write_logs(AnyError::new(&error)))?;
        // Not fsynced: the committed id only saves replay work at start, and a stale or
        // missing one is recovered by the next commit.
        write_file(
            self.dir.join(COMMITTED_FILE),
            bytes,
            false,
            ErrorSubject::Logs,
        )
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let Some(bytes) = read_file(self.dir.join(COMMITTED_FILE), ErrorSubject::Logs).await?
        else {
            return Ok(None);
        };
        let committed: Option<LogId<NodeId>> = match serde_json::from_slice(&bytes) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable committed log id");
                None
            }
        };
        // A dropped torn tail can end the log before the recorded commit point.
        let last_log_id = self.index.lock().last_log_id();
        let clamped = match (committed, last_log_id) {
            (Some(committed), Some(last)) if committed.index > last.index => Some(last),
            (Some(_), None) => None,
            (committed, _) => committed,
        };
        Ok(clamped)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        match self.append_entries(entries).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(io::Error::new(error.kind(), error.to_string())));
                Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(index = log_id.index, "truncating raft log");
        self.truncate_since(log_id)
            .await
            .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, error))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(index = log_id.index, "purging raft log");
        self.purge_upto(log_id)
            .await
            .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, error))
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;

    use super::*;
    use crate::command::Command;

    fn entry(term: u64, index: u64) -> RaftEntry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Command::AllocateProducerIds {
                count: index as i64 + 1,
            }),
        }
    }

    async fn entries_of(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|entry| entry.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).await.unwrap();
        store
            .blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        drop(store);

        let mut reopened = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(entries_of(&mut reopened).await, (0..10).collect::<Vec<_>>());
        let entries = reopened.try_get_log_entries(3..4).await.unwrap();
        assert_eq!(entries[0].payload, entry(1, 3).payload);
    }

    #[tokio::test]
    async fn truncate_and_purge_rewrite_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).await.unwrap();
        store
            .blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        store.truncate(log_id(1, 1, 7)).await.unwrap();
        store
            .blocking_append((7..9).map(|i| entry(2, i)))
            .await
            .unwrap();
        store.purge(log_id(1, 1, 3)).await.unwrap();
        store.blocking_append([entry(2, 9)]).await.unwrap();
        drop(store);

        let mut reopened = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(entries_of(&mut reopened).await, (4..10).collect::<Vec<_>>());
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 9)));
        let terms: Vec<u64> = reopened
            .try_get_log_entries(6..9)
            .await
            .unwrap()
            .iter()
            .map(|entry| entry.log_id.leader_id.term)
            .collect();
        assert_eq!(terms, vec![1, 2, 2]);

        // Purging past the end leaves only the marker; appends continue after it.
        reopened.purge(log_id(2, 1, 9)).await.unwrap();
        reopened.blocking_append([entry(3, 10)]).await.unwrap();
        drop(reopened);
        let mut again = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(entries_of(&mut again).await, vec![10]);
        assert_eq!(
            again.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(2, 1, 9))
        );
    }

    #[tokio::test]
    async fn torn_tail_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).await.unwrap();
        store
            .blocking_append((0..5).map(|i| entry(1, i)))
            .await
            .unwrap();
        drop(store);

        let path = dir.path().join(LOG_FILE);
        let full_len = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full_len - 5).unwrap();
        drop(file);

        let mut after_cut = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(entries_of(&mut after_cut).await, vec![0, 1, 2, 3]);
        after_cut.blocking_append([entry(2, 4)]).await.unwrap();
        drop(after_cut);

        // Garbage after the last record (a header whose payload never made it).
        let mut garbage = OpenOptions::new().append(true).open(&path).unwrap();
        garbage
            .write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{'])
            .unwrap();
        drop(garbage);
        let mut after_garbage = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(entries_of(&mut after_garbage).await, vec![0, 1, 2, 3, 4]);
        drop(after_garbage);

        // Zero-filled tail, as left by a crash after the file grew.
        let mut zeros = OpenOptions::new().append(true).open(&path).unwrap();
        zeros.write_all(&[0u8; 64]).unwrap();
        drop(zeros);
        let mut after_zeros = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(entries_of(&mut after_zeros).await, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn vote_and_committed_are_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), None);
        let vote = Vote::new_committed(3, 1);
        store.save_vote(&vote).await.unwrap();
        store
            .blocking_append((0..3).map(|i| entry(3, i)))
            .await
            .unwrap();
        store.save_committed(Some(log_id(3, 1, 2))).await.unwrap();
        drop(store);

        let mut reopened = LogStore::open(dir.path()).await.unwrap();
        assert_eq!(reopened.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            reopened.read_committed().await.unwrap(),
            Some(log_id(3, 1, 2))
        );
        reopened.truncate(log_id(3, 1, 1)).await.unwrap();
        assert_eq!(
            reopened.read_committed().await.unwrap(),
            Some(log_id(3, 1, 0))
        );
    }
}
