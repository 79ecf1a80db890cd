//! The cleaner's dedupe map: for every key met in the dirty section, the offset of its
//! latest record. Kafka's `SkimpyOffsetMap` keeps a 16-byte hash per key; this map keeps
//! the keys themselves, so two keys can never be taken for one, and charges each entry
//! its bytes against `log.cleaner.dedupe.buffer.size`.

use std::collections::HashMap;

/// Bytes charged per entry on top of the key: the offset, the hash table's slot and the
/// key's allocation header.
const ENTRY_OVERHEAD_BYTES: usize = 48;

/// Key → offset of its latest record, within a byte budget.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    offsets: HashMap<Vec<u8>, i64>,
    used_bytes: usize,
    budget_bytes: usize,
}

impl OffsetMap {
    /// An empty map holding at most about `budget_bytes` (bytes).
    pub(crate) fn new(budget_bytes: usize) -> OffsetMap {
        OffsetMap {
            offsets: HashMap::new(),
            used_bytes: 0,
            budget_bytes,
        }
    }

    /// Records `offset` as `key`'s latest (offsets arrive in increasing order).
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) {
        if let Some(latest) = self.offsets.get_mut(key) {
            *latest = offset;
            return;
        }
        self.used_bytes += key.len() + ENTRY_OVERHEAD_BYTES;
        let _previous = self.offsets.insert(key.to_vec(), offset);
    }

    /// The offset of `key`'s latest record, if the map holds the key.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        self.offsets.get(key).copied()
    }

    /// Whether the budget is spent: the cleaner stops adding batches.
    pub(crate) fn is_full(&self) -> bool {
        self.used_bytes >= self.budget_bytes
    }

    /// Number of keys held.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_charges_each_key_once() {
        let mut map = OffsetMap::new(2 * (3 + ENTRY_OVERHEAD_BYTES));
        map.put(b"abc", 1);
        map.put(b"abc", 7);
        assert_eq!(map.get(b"abc"), Some(7));
        assert!(!map.is_full());
        map.put(b"xyz", 9);
        assert!(map.is_full());
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(b"nope"), None);
    }
}
