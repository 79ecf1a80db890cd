//! The entries of a segment's two sparse indexes as they are on disk (Kafka's
//! `OffsetIndex` and `TimeIndex` formats), the one decoder of them (shared by the local
//! indexes and tiering's remote reader), and [`IndexFile`], the file both local
//! indexes keep their entries in. Offsets are stored relative to the segment's base
//! offset, big-endian.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::remove_if_exists;

/// One offset-index entry with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Absolute offset (last offset of the indexed batch).
    pub offset: i64,
    /// Byte position of that batch in the segment's `.log` file.
    pub position: u32,
}

/// One time-index entry with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Timestamp in ms.
    pub timestamp: i64,
    /// Absolute offset of the first record with that timestamp.
    pub offset: i64,
}

/// An index entry's on-disk form.
pub trait IndexEntry: Copy {
    /// Size of one entry on disk, in bytes.
    const SIZE: usize;

    /// Decodes one entry of exactly [`Self::SIZE`] bytes of a segment at `base_offset`.
    fn decode(raw: &[u8], base_offset: i64) -> Self;

    /// Appends the entry's [`Self::SIZE`] bytes for a segment at `base_offset` (the
    /// offset must be within `u32` of it).
    fn encode_into(&self, base_offset: i64, out: &mut Vec<u8>);
}

impl IndexEntry for OffsetPosition {
    /// 4 bytes relative offset, 4 bytes position.
    const SIZE: usize = 8;

    fn decode(raw: &[u8], base_offset: i64) -> Self {
        OffsetPosition {
            offset: base_offset + i64::from(be_u32(&raw[..4])),
            position: be_u32(&raw[4..8]),
        }
    }

    fn encode_into(&self, base_offset: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(&relative(self.offset, base_offset).to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
}

impl IndexEntry for TimestampOffset {
    /// 8 bytes timestamp, 4 bytes relative offset.
    const SIZE: usize = 12;

    fn decode(raw: &[u8], base_offset: i64) -> Self {
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&raw[..8]);
        TimestampOffset {
            timestamp: i64::from_be_bytes(timestamp),
            offset: base_offset + i64::from(be_u32(&raw[8..12])),
        }
    }

    fn encode_into(&self, base_offset: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&relative(self.offset, base_offset).to_be_bytes());
    }
}

/// The whole entries of `raw` (trailing bytes that do not make an entry are ignored;
/// callers that must refuse them check `raw.len() % E::SIZE`).
pub fn decode_entries<E: IndexEntry>(raw: &[u8], base_offset: i64) -> impl Iterator<Item = E> + '_ {
    raw.chunks_exact(E::SIZE)
        .map(move |chunk| E::decode(chunk, base_offset))
}

/// An index file of one segment, with its entries mirrored in memory. Entries are
/// appended to the file (no preallocation).
#[derive(Debug)]
pub(crate) struct IndexFile<E> {
    path: PathBuf,
    file: File,
    base_offset: i64,
    entries: Vec<E>,
    /// Bytes at the end of the file that do not form a whole entry.
    trailing_bytes: u64,
}

impl<E: IndexEntry> IndexFile<E> {
    /// Opens (creating if missing) the index at `path` and loads its whole entries.
    /// Content is not checked here; each index type has its `sanity_check`.
    pub(crate) fn open(path: &Path, base_offset: i64) -> io::Result<IndexFile<E>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let length = file.metadata()?.len();
        let whole_entries = length / E::SIZE as u64;
        let mut raw = vec![0u8; (whole_entries as usize) * E::SIZE];
        file.read_exact_at(&mut raw, 0)?;
        let entries = decode_entries(&raw, base_offset).collect();
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            base_offset,
            entries,
            trailing_bytes: length % E::SIZE as u64,
        })
    }

    /// Path of the index file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Base offset of the segment the index belongs to.
    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Every entry, in file order.
    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    /// The last entry, if any.
    pub(crate) fn last_entry(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Bytes after the last whole entry, as found at open (a torn write).
    pub(crate) fn trailing_bytes(&self) -> u64 {
        self.trailing_bytes
    }

    /// Writes `entry` after the last one.
    pub(crate) fn push(&mut self, entry: E) -> io::Result<()> {
        let at = (self.entries.len() * E::SIZE) as u64;
        self.file.write_all_at(&self.encode(&[entry]), at)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Replaces the whole index with `entries` (used after a rebuild).
    pub(crate) fn rewrite(&mut self, entries: Vec<E>) -> io::Result<()> {
        let raw = self.encode(&entries);
        self.file.set_len(0)?;
        self.file.write_all_at(&raw, 0)?;
        self.entries = entries;
        self.trailing_bytes = 0;
        Ok(())
    }

    /// Keeps the first `keep` entries.
    pub(crate) fn truncate(&mut self, keep: usize) -> io::Result<()> {
        self.entries.truncate(keep);
        self.file.set_len((self.entries.len() * E::SIZE) as u64)?;
        self.trailing_bytes = 0;
        Ok(())
    }

    /// fsyncs the index file.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the index file, to fsync it off the append path.
    pub(crate) fn try_clone_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Removes the index file.
    pub(crate) fn delete(self) -> io::Result<()> {
        remove_if_exists(&self.path)
    }

    fn encode(&self, entries: &[E]) -> Vec<u8> {
        let mut raw = Vec::with_capacity(entries.len() * E::SIZE);
        for entry in entries {
            entry.encode_into(self.base_offset, &mut raw);
        }
        raw
    }
}

fn be_u32(raw: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(raw);
    u32::from_be_bytes(bytes)
}

fn relative(offset: i64, base_offset: i64) -> u32 {
    (offset - base_offset) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_relative_to_the_base_offset() {
        let mut raw = Vec::new();
        let offsets = [
            OffsetPosition {
                offset: 1_000,
                position: 0,
            },
            OffsetPosition {
                offset: 1_007,
                position: 4_096,
            },
        ];
        for entry in &offsets {
            entry.encode_into(1_000, &mut raw);
        }
        assert_eq!(raw.len(), 2 * OffsetPosition::SIZE);
        assert_eq!(&raw[8..12], &7u32.to_be_bytes());
        raw.push(0xff);
        let decoded: Vec<OffsetPosition> = decode_entries(&raw, 1_000).collect();
        assert_eq!(decoded, offsets, "a trailing partial entry is ignored");

        let mut raw = Vec::new();
        let times = [TimestampOffset {
            timestamp: -5,
            offset: 1_003,
        }];
        times[0].encode_into(1_000, &mut raw);
        assert_eq!(raw.len(), TimestampOffset::SIZE);
        let decoded: Vec<TimestampOffset> = decode_entries(&raw, 1_000).collect();
        assert_eq!(decoded, times);
    }
}
