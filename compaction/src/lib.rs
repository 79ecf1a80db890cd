//! Silt's key compaction: Kafka's log cleaner for topics whose `cleanup.policy`
//! includes `compact`. The latest record of every key is kept for good, at its original
//! offset; older records of a key go, and tombstones (null values) go after
//! `delete.retention.ms`. `__consumer_offsets` is cleaned like any compacted topic.
//!
//! - [`cleaner`]: one pass over one log (plan, offset map, rewrite, swap);
//! - [`LogCleaner`]: the background threads that pick the dirtiest log;
//! - [`RemoteLogCleaner`]: the same pass over the remote tier;
//! - [`Throttler`]: the cap of `log.cleaner.io.max.bytes.per.second`.
//!
//! The log side (views of sealed segments, replacement segments and their crash-safe
//! swap, the cleaner checkpoint) is `silt_broker::cleaning`. Retention by time and size
//! stays in the broker's log manager.
//!
//! Tiered topics (`remote.storage.enable=true`) are compacted in the bucket by
//! [`RemoteLogCleaner`] ([`remote_cleaner`]); their local tier only holds what is not
//! yet copied (and `local.retention.*` worth of copies), so the local cleaner leaves it.

pub mod cleaner;
mod error;
mod log_cleaner;
mod offset_map;
pub mod remote_cleaner;
mod throttler;

pub use crate::cleaner::{Cleaner, CleanerConfig, CleanerStats, CleaningPlan};
pub use crate::error::CleanerError;
pub use crate::log_cleaner::{LogCleaner, LogCleanerConfig};
pub use crate::remote_cleaner::{RemoteCleanerStats, RemoteLogCleaner};
pub use crate::throttler::Throttler;
