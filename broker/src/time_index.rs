//! Kafka's sparse time index (`<baseOffset:020>.timeindex`).
//!
//! Each entry is 12 bytes, big-endian: a timestamp in ms (i64) and the offset
//! relative to the segment's base offset (u32) of the first record carrying
//! the largest timestamp seen so far in the segment. Entries are written
//! alongside offset-index entries and only when the timestamp grows, so
//! timestamps are strictly increasing.

use std::io;

use crate::index_entry::IndexFile;
use crate::record_batch::NO_TIMESTAMP;

pub(crate) use crate::index_entry::TimestampOffset;

/// The time index of one segment.
pub(crate) type TimeIndex = IndexFile<TimestampOffset>;

impl IndexFile<TimestampOffset> {
    /// Checks whole entries only, timestamps strictly increasing, offsets
    /// non-decreasing within `[base_offset, next_offset)`.
    pub(crate) fn sanity_check(&self, next_offset: i64) -> Result<(), String> {
        if self.trailing_bytes() != 0 {
            return Err(format!("{} trailing bytes", self.trailing_bytes()));
        }
        let mut previous: Option<TimestampOffset> = None;
        for entry in self.entries() {
            if entry.offset < self.base_offset() || entry.offset >= next_offset {
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

    /// The entry with the largest timestamp `<= target_ts`; None means
    /// "scan from the start of the segment".
    pub(crate) fn lookup(&self, target_ts: i64) -> Option<TimestampOffset> {
        let after = self
            .entries()
            .partition_point(|entry| entry.timestamp <= target_ts);
        after.checked_sub(1).map(|index| self.entries()[index])
    }

    /// Appends an entry if `timestamp` is larger than the last one's (and
    /// than -1, "no timestamp"); returns whether it did.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) -> io::Result<bool> {
        debug_assert!(offset >= self.base_offset());
        let last_timestamp = self
            .entries()
            .last()
            .map_or(NO_TIMESTAMP, |last| last.timestamp);
        if timestamp <= last_timestamp {
            return Ok(false);
        }
        if let Some(last) = self.entries().last() {
            debug_assert!(offset >= last.offset, "time index offsets must not go back");
        }
        let entry = TimestampOffset { timestamp, offset };
        self.push(entry)?;
        Ok(true)
    }

    /// Drops every entry whose offset is `>= offset` (log truncation).
    pub(crate) fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let keep = self
            .entries()
            .partition_point(|entry| entry.offset < offset);
        self.truncate(keep)
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
