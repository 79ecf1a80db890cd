//! Kafka's sparse offset index (`<baseOffset:020>.index`).
//!
//! Each entry is 8 bytes, big-endian: the offset relative to the segment's
//! base offset (u32) and the byte position in the `.log` file (u32) of the
//! batch whose *last* offset that is. One entry is written every
//! `index.interval.bytes` of appended log. Entries are appended to the file
//! (no preallocation) and mirrored in memory for lookups.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::remove_if_exists;

/// Size of one entry on disk, in bytes.
pub const OFFSET_INDEX_ENTRY_SIZE: usize = 8;

/// One index entry with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Absolute offset (last offset of the indexed batch).
    pub offset: i64,
    /// Byte position of that batch in the segment's `.log` file.
    pub position: u32,
}

/// The offset index of one segment.
#[derive(Debug)]
pub struct OffsetIndex {
    path: PathBuf,
    file: File,
    base_offset: i64,
    entries: Vec<OffsetPosition>,
    /// Bytes at the end of the file that do not form a whole entry.
    trailing_bytes: u64,
}

impl OffsetIndex {
    /// Opens (creating if missing) the index at `path` and loads its entries.
    /// Content is not checked here; see [`OffsetIndex::sanity_check`].
    pub fn open(path: &Path, base_offset: i64) -> io::Result<OffsetIndex> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let length = file.metadata()?.len();
        let whole_entries = length / OFFSET_INDEX_ENTRY_SIZE as u64;
        let mut raw = vec![0u8; (whole_entries as usize) * OFFSET_INDEX_ENTRY_SIZE];
        file.read_exact_at(&mut raw, 0)?;
        let entries = raw
            .chunks_exact(OFFSET_INDEX_ENTRY_SIZE)
            .map(|chunk| {
                let relative = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
                OffsetPosition {
                    offset: base_offset + i64::from(relative),
                    position,
                }
            })
            .collect();
        Ok(OffsetIndex {
            path: path.to_path_buf(),
            file,
            base_offset,
            entries,
            trailing_bytes: length % OFFSET_INDEX_ENTRY_SIZE as u64,
        })
    }

    /// Checks the loaded entries against the segment: whole entries only,
    /// offsets strictly increasing and not below the base offset, positions
    /// increasing and inside a log file of `log_size` bytes. Returns what is
    /// wrong, for the caller to rebuild the index.
    pub fn sanity_check(&self, log_size: u64) -> Result<(), String> {
        if self.trailing_bytes != 0 {
            return Err(format!("{} trailing bytes", self.trailing_bytes));
        }
        let mut previous: Option<OffsetPosition> = None;
        for entry in &self.entries {
            if entry.offset < self.base_offset || u64::from(entry.position) >= log_size {
                return Err(format!("entry {entry:?} outside the segment"));
            }
            if let Some(previous) = previous
                && (entry.offset <= previous.offset || entry.position <= previous.position)
            {
                return Err(format!("entry {entry:?} not after {previous:?}"));
            }
            previous = Some(*entry);
        }
        Ok(())
    }

    /// Path of the `.index` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries, in offset order.
    pub fn entries(&self) -> &[OffsetPosition] {
        &self.entries
    }

    /// The last entry, if any.
    pub fn last_entry(&self) -> Option<OffsetPosition> {
        self.entries.last().copied()
    }

    /// The entry with the largest offset `<= target_offset`; None means
    /// "scan from position 0".
    pub fn lookup(&self, target_offset: i64) -> Option<OffsetPosition> {
        let after = self
            .entries
            .partition_point(|entry| entry.offset <= target_offset);
        after.checked_sub(1).map(|index| self.entries[index])
    }

    /// Appends an entry: `offset` is absolute and must be above the last
    /// entry's, `position` must be after the last entry's.
    pub fn append(&mut self, offset: i64, position: u32) -> io::Result<()> {
        debug_assert!(offset >= self.base_offset);
        debug_assert!(offset - self.base_offset <= i64::from(u32::MAX));
        if let Some(last) = self.entries.last() {
            debug_assert!(offset > last.offset, "offset index must grow");
            debug_assert!(position > last.position, "index positions must grow");
        }
        let entry = OffsetPosition { offset, position };
        let at = (self.entries.len() * OFFSET_INDEX_ENTRY_SIZE) as u64;
        self.file.write_all_at(&self.encode(entry), at)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Replaces the whole index with `entries` (used after a rebuild).
    pub fn rewrite(&mut self, entries: Vec<OffsetPosition>) -> io::Result<()> {
        let mut raw = Vec::with_capacity(entries.len() * OFFSET_INDEX_ENTRY_SIZE);
        for entry in &entries {
            raw.extend_from_slice(&self.encode(*entry));
        }
        self.file.set_len(0)?;
        self.file.write_all_at(&raw, 0)?;
        self.entries = entries;
        self.trailing_bytes = 0;
        Ok(())
    }

    /// Drops every entry pointing at `position` or beyond (log truncation).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|entry| u64::from(entry.position) < position);
        self.entries.truncate(keep);
        self.file.set_len((keep * OFFSET_INDEX_ENTRY_SIZE) as u64)?;
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

    fn encode(&self, entry: OffsetPosition) -> [u8; OFFSET_INDEX_ENTRY_SIZE] {
        let relative = (entry.offset - self.base_offset) as u32;
        let mut raw = [0u8; OFFSET_INDEX_ENTRY_SIZE];
        raw[..4].copy_from_slice(&relative.to_be_bytes());
        raw[4..].copy_from_slice(&entry.position.to_be_bytes());
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_largest_entry_not_above_target_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000100.index");
        let mut index = OffsetIndex::open(&path, 100).expect("open");
        index.append(110, 4096).expect("append");
        index.append(120, 8192).expect("append");
        assert_eq!(index.lookup(105), None);
        assert_eq!(index.lookup(110).map(|entry| entry.position), Some(4096));
        assert_eq!(index.lookup(119).map(|entry| entry.position), Some(4096));
        assert_eq!(index.lookup(1000).map(|entry| entry.position), Some(8192));
        drop(index);

        let reopened = OffsetIndex::open(&path, 100).expect("reopen");
        assert_eq!(reopened.entries().len(), 2);
        assert!(reopened.sanity_check(10_000).is_ok());
        assert!(reopened.sanity_check(8192).is_err());
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 16);
    }

    #[test]
    fn truncation_drops_entries_at_or_after_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        let mut index = OffsetIndex::open(&path, 0).expect("open");
        index.append(10, 100).expect("append");
        index.append(20, 200).expect("append");
        index.truncate_to_position(200).expect("truncate");
        assert_eq!(
            index.entries(),
            &[OffsetPosition {
                offset: 10,
                position: 100
            }]
        );
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 8);
    }

    #[test]
    fn partial_entry_fails_sanity_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        std::fs::write(&path, [0u8; 11]).expect("write");
        let index = OffsetIndex::open(&path, 0).expect("open");
        assert!(index.sanity_check(1000).is_err());
    }
}
