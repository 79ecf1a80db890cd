//! Kafka's leader-epoch cache (`LeaderEpochFileCache`): for each leader epoch of a
//! partition, the first offset written in it, persisted in the
//! `leader-epoch-checkpoint` file. Followers truncate by it (KIP-101, KIP-279) and
//! OffsetForLeaderEpoch answers from it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{CHECKPOINT_VERSION, LEADER_EPOCH_CHECKPOINT_FILE, write_file_atomically};

/// One entry of the leader-epoch cache: `epoch` began at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// Leader epoch.
    pub epoch: i32,
    /// First offset written in that epoch.
    pub start_offset: i64,
}

/// Kafka's leader-epoch cache (`LeaderEpochFileCache`), persisted in
/// `leader-epoch-checkpoint` as `0\n<count>\n<epoch> <startOffset>\n...`.
#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint; None if missing or unreadable.
    pub(crate) fn load(dir: &Path) -> Option<LeaderEpochCache> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let content = fs::read_to_string(&path).ok()?;
        let mut lines = content.lines();
        let version: i64 = lines.next()?.trim().parse().ok()?;
        let count: usize = lines.next()?.trim().parse().ok()?;
        if version != CHECKPOINT_VERSION {
            return None;
        }
        let mut entries = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let mut fields = lines.next()?.split_whitespace();
            let epoch = fields.next()?.parse().ok()?;
            let start_offset = fields.next()?.parse().ok()?;
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        let ordered = entries.windows(2).all(|pair| {
            pair[0].epoch < pair[1].epoch && pair[0].start_offset <= pair[1].start_offset
        });
        ordered.then_some(LeaderEpochCache { path, entries })
    }

    pub(crate) fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            path: dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
            entries: Vec::new(),
        }
    }

    /// Every entry, oldest epoch first.
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the
    /// latest known epoch; returns whether the cache changed.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(latest) = self.entries.last()
            && (epoch <= latest.epoch || start_offset < latest.start_offset)
        {
            return false;
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops entries starting at or after `end_offset` (log truncated there).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|entry| entry.start_offset < end_offset);
        let changed = keep != self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Drops entries wholly below `start_offset`, moving the start of the
    /// epoch covering it up to `start_offset`.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .partition_point(|entry| entry.start_offset < start_offset);
        if below == 0 {
            return false;
        }
        let covering_epoch = self.entries[below - 1].epoch;
        self.entries.drain(..below);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: covering_epoch,
                start_offset,
            },
        );
        true
    }

    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's `endOffsetFor`: the largest epoch `<= requested` and the
    /// offset where the next epoch starts (or `log_end_offset` for the latest).
    pub(crate) fn end_offset_for(
        &self,
        requested_epoch: i32,
        log_end_offset: i64,
    ) -> Option<(i32, i64)> {
        if requested_epoch < 0 {
            return None;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return Some((requested_epoch, log_end_offset));
        }
        let higher = self
            .entries
            .iter()
            .find(|entry| entry.epoch > requested_epoch)?;
        let floor = self
            .entries
            .iter()
            .rev()
            .find(|entry| entry.epoch <= requested_epoch);
        Some((
            floor.map_or(requested_epoch, |entry| entry.epoch),
            higher.start_offset,
        ))
    }

    pub(crate) fn write(&self) -> io::Result<()> {
        let mut content = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            content.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        write_file_atomically(&self.path, content.as_bytes())
    }
}
