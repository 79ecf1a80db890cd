//! Kafka's sparse time index (`<baseOffset:020>.timeindex`).
//!
//! Each entry is 12 bytes, big-endian: a timestamp in ms (i64) and the offset
//! relative to the segment's base offset (u32) of the first record carrying
//! the largest timestamp seen so far in the segment. Entries are written
//! alongside offset-index entries and only when the timestamp grows, so
//! timestamps are strictly increasing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::remove_if_exists;
use crate::record_batch::NO_TIMESTAMP;

/// Size of one entry on disk, in bytes.
pub const TIME_INDEX_ENTRY_SIZE: usize = 12;

/// One time-index entry with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Timestamp in ms.
    pub timestamp: i64,
    /// Absolute offset of the first record with that timestamp.
    pub offset: i64,
}

/// The time index of one segment.
#[derive(Debug)]
pub struct TimeIndex {
    path: PathBuf,
    file: File,
    base_offset: i64,
    entries: Vec<TimestampOffset>,
    trailing_bytes: u64,
}

impl TimeIndex {
    /// Opens (creating if missing) the index at `path` and loads its entries.
    /// Content is not checked here; see [`TimeIndex::sanity_check`].
    pub fn open(path: &Path, base_offset: i64) -> io::Result<TimeIndex> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let length = file.metadata()?.len();
        let whole_entries = length / TIME_INDEX_ENTRY_SIZE as u64;
        let mut raw = vec![0u8; (whole_entries as usize) * TIME_INDEX_ENTRY_SIZE];
        file.read_exact_at(&mut raw, 0)?;
        let entries = raw
            .chunks_exact(TIME_INDEX_ENTRY_SIZE)
            .map(|chunk| {
                let mut timestamp = [0u8; 8];
                timestamp.copy_from_slice(&chunk[..8]);
                let relative = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
                TimestampOffset {
                    timestamp: i64::from_be_bytes(timestamp),
                    offset: base_offset + i64::from(relative),
                }
            })
            .collect();
        Ok(TimeIndex {
            path: path.to_path_buf(),
            file,
            base_offset,
            entries,
            trailing_bytes: length % TIME_INDEX_ENTRY_SIZE as u64,
        })
    }

    /// Checks whole entries only, timestamps strictly increasing, offsets
    /// non-decreasing within `[base_offset, next_offset)`.
    pub fn sanity_check(&self, next_offset: i64) -> Result<(), String> {
        if self.trailing_bytes != 0 {
            return Err(format!("{} trailing bytes", self.trailing_bytes));
        }
        let mut previous: Option<TimestampOffset> = None;
        for entry in &self.entries {
            if entry.offset < self.base_offset || entry.offset >= next_offset {
                return Err(format!("entry {entry:?} outside the segment"));
            }
            if let Some(previous) = previous
                && (entry.timestamp <= previous.timestamp || entry.offset < previous.offset)
            {
                return Err(format!("entry {entry:?} not after {previous:?}"));
            }
            previous = Some(*entry);
        }
        Ok(())
    }

    /// Path of the `.timeindex` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries, in timestamp order.
    pub fn entries(&self) -> &[TimestampOffset] {
        &self.entries
    }

    /// The last entry, if any: the largest timestamp indexed.
    pub fn last_entry(&self) -> Option<TimestampOffset> {
        self.entries.last().copied()
    }

    /// The entry with the largest timestamp `<= target_ts`; None means
    /// "scan from the start of the segment".
    pub fn lookup(&self, target_ts: i64) -> Option<TimestampOffset> {
        let after = self
            .entries
            .partition_point(|entry| entry.timestamp <= target_ts);
        after.checked_sub(1).map(|index| self.entries[index])
    }

    /// Appends an entry if `timestamp` is larger than the last one's (and
    /// than -1, "no timestamp"); returns whether it did.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> io::Result<bool> {
        debug_assert!(offset >= self.base_offset);
        let last_timestamp = self
            .entries
            .last()
            .map_or(NO_TIMESTAMP, |last| last.timestamp);
        if timestamp <= last_timestamp {
            return Ok(false);
        }
        if let Some(last) = self.entries.last() {
            debug_assert!(offset >= last.offset, "time index offsets must not go back");
        }
        let entry = TimestampOffset { timestamp, offset };
        let at = (self.entries.len() * TIME_INDEX_ENTRY_SIZE) as u64;
        self.file.write_all_at(&self.encode(entry), at)?;
        self.entries.push(entry);
        Ok(true)
    }

    /// Replaces the whole index with `entries` (used after a rebuild).
    pub fn rewrite(&mut self, entries: Vec<TimestampOffset>) -> io::Result<()> {
        let mut raw = Vec::with_capacity(entries.len() * TIME_INDEX_ENTRY_SIZE);
        for entry in &entries {
            raw.extend_from_slice(&self.encode(*entry));
        }
        self.file.set_len(0)?;
        self.file.write_all_at(&raw, 0)?;
        self.entries = entries;
        self.trailing_bytes = 0;
        Ok(())
    }

    /// Drops every entry whose offset is `>= offset` (log truncation).
    pub fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let keep = self.entries.partition_point(|entry| entry.offset < offset);
        self.entries.truncate(keep);
        self.file.set_len((keep * TIME_INDEX_ENTRY_SIZE) as u64)?;
        self.trailing_bytes = 0;
        Ok(())
    }

    /// fsyncs the index file.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the index file, to fsync it off the append path.
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Removes the index file.
    pub fn delete(self) -> io::Result<()> {
        remove_if_exists(&self.path)
    }

    fn encode(&self, entry: TimestampOffset) -> [u8; TIME_INDEX_ENTRY_SIZE] {
        let relative = (entry.offset - self.base_offset) as u32;
        let mut raw = [0u8; TIME_INDEX_ENTRY_SIZE];
        raw[..8].copy_from_slice(&entry.timestamp.to_be_bytes());
        raw[8..].copy_from_slice(&relative.to_be_bytes());
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_growing_timestamps_are_indexed_and_lookup_floors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000050.timeindex");
        let mut index = TimeIndex::open(&path, 50).expect("open");
        assert!(index.maybe_append(1_000, 55).expect("append"));
        assert!(!index.maybe_append(1_000, 60).expect("append"));
        assert!(index.maybe_append(2_000, 70).expect("append"));
        assert_eq!(index.lookup(999), None);
        assert_eq!(index.lookup(1_500).map(|entry| entry.offset), Some(55));
        assert_eq!(index.lookup(2_000).map(|entry| entry.offset), Some(70));
        drop(index);

        let mut reopened = TimeIndex::open(&path, 50).expect("reopen");
        assert_eq!(reopened.entries().len(), 2);
        assert!(reopened.sanity_check(71).is_ok());
        assert!(reopened.sanity_check(70).is_err());
        reopened.truncate_to_offset(70).expect("truncate");
        assert_eq!(
            reopened.last_entry().map(|entry| entry.timestamp),
            Some(1_000)
        );
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 12);
    }
}
