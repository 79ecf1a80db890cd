//! Kafka's sparse offset index (`<baseOffset:020>.index`).
//!
//! Each entry is 8 bytes, big-endian: the offset relative to the segment's
//! base offset (u32) and the byte position in the `.log` file (u32) of the
//! batch whose *last* offset that is. One entry is written every
//! `index.interval.bytes` of appended log. Entries are appended to the file
//! (no preallocation) and mirrored in memory for lookups.

use std::io;

use crate::index_entry::IndexFile;

pub(crate) use crate::index_entry::OffsetPosition;

/// The offset index of one segment.
pub(crate) type OffsetIndex = IndexFile<OffsetPosition>;

impl IndexFile<OffsetPosition> {
    /// Checks the loaded entries against the segment: whole entries only,
    /// offsets strictly increasing and not below the base offset, positions
    /// increasing and inside a log file of `log_size` bytes. Returns what is
    /// wrong, for the caller to rebuild the index.
    pub(crate) fn sanity_check(&self, log_size: u64) -> Result<(), String> {
        if self.trailing_bytes() != 0 {
            return Err(format!("{} trailing bytes", self.trailing_bytes()));
        }
        let mut previous: Option<OffsetPosition> = None;
        for entry in self.entries() {
            if entry.offset < self.base_offset() || u64::from(entry.position) >= log_size {
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

    /// The entry with the largest offset `<= target_offset`; None means
    /// "scan from position 0".
    pub(crate) fn lookup(&self, target_offset: i64) -> Option<OffsetPosition> {
        let after = self
            .entries()
            .partition_point(|entry| entry.offset <= target_offset);
        after.checked_sub(1).map(|index| self.entries()[index])
    }

    /// Appends an entry: `offset` is absolute and must be above the last
    /// entry's, `position` must be after the last entry's.
    pub(crate) fn append(&mut self, offset: i64, position: u32) -> io::Result<()> {
        debug_assert!(offset >= self.base_offset());
        debug_assert!(offset - self.base_offset() <= i64::from(u32::MAX));
        if let Some(last) = self.entries().last() {
            debug_assert!(offset > last.offset, "offset index must grow");
            debug_assert!(position > last.position, "index positions must grow");
        }
        let entry = OffsetPosition { offset, position };
        self.push(entry)?;
        Ok(())
    }

    /// Drops every entry pointing at `position` or beyond (log truncation).
    pub(crate) fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .entries()
            .partition_point(|entry| u64::from(entry.position) < position);
        self.truncate(keep)
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
