//! Silt's key compaction: Kafka's log cleaner for topics whose `cleanup.policy`
//! includes `compact`. The latest record of every key is kept for good, at its original
//! offset; older records of a key go, and tombstones (null values) go after
//! `delete.retention.ms`. `__consumer_offsets` is cleaned like any compacted topic.
//!
//! - [`cleaner`]: one pass over one log (plan, offset map, rewrite, swap);
//! - [`LogCleaner`]: the background threads that pick the dirtiest log;
//! - [`Throttler`]: the cap of `log.cleaner.io.max.bytes.per.second`.
//!
//! The log side (views of sealed segments, replacement segments and their crash-safe
//! swap, the cleaner checkpoint) is `silt_broker::cleaning`. Retention by time and size
//! stays in the broker's log manager. Compaction of tiered topics' remote copies is not
//! built yet: the cleaner skips topics with `remote.storage.enable=true`.

pub mod cleaner;
mod error;
mod log_cleaner;
mod offset_map;
mod throttler;

pub use crate::cleaner::{Cleaner, CleanerConfig, CleanerStats, CleaningPlan};
pub use crate::error::CleanerError;
pub use crate::log_cleaner::{LogCleaner, LogCleanerConfig};
pub use crate::throttler::Throttler;
