//! Settings of the remote log manager, after Kafka's `remote.log.manager.*` broker configs.

use std::time::Duration;

/// Settings of [`RemoteLogManager`](crate::RemoteLogManager); [`Default`] suits production.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TieringConfig {
    /// Period of the copy, cleanup and retention task in milliseconds (Kafka
    /// `remote.log.manager.task.interval.ms`). Default 30 000.
    pub task_interval_ms: u64,
    /// Age in milliseconds after which an object without metadata, or a `CopyStarted`
    /// entry written by another broker, counts as abandoned and is deleted. Default 300 000.
    pub orphan_grace_ms: u64,
    /// How often in milliseconds the whole `<prefix>/topics/` tree is listed to find objects
    /// without metadata (the other cleanups run every round). Default 300 000.
    pub orphan_scan_interval_ms: u64,
    /// `.log` files at least this large (bytes) are uploaded with a multipart upload,
    /// smaller ones with a single put. Default 8 MiB.
    pub multipart_threshold_bytes: usize,
    /// Part size of multipart uploads in bytes (S3 needs at least 5 MiB except for the
    /// last part). Default 8 MiB.
    pub multipart_part_bytes: usize,
    /// Parts of one multipart upload in flight at once. Default 4.
    pub multipart_concurrency: usize,
    /// First delay in milliseconds before a partition whose copy failed is retried; it
    /// doubles with every further failure. Default 1 000.
    pub retry_backoff_initial_ms: u64,
    /// Cap of the retry delay in milliseconds. Default 30 000.
    pub retry_backoff_max_ms: u64,
    /// How long (ms) the objects of remote segments a compaction replaced stay after
    /// the swap (`remote.log.compacted.segment.delete.delay.ms`): a reader that resolved
    /// an offset to them just before, a broker whose metadata lags, and a restore point
    /// being written from metadata taken before the swap still find them. Default 60 000.
    pub replaced_segment_delete_delay_ms: u64,
}

impl Default for TieringConfig {
    fn default() -> Self {
        TieringConfig {
            task_interval_ms: 30_000,
            orphan_grace_ms: 300_000,
            orphan_scan_interval_ms: 300_000,
            multipart_threshold_bytes: 8 * 1024 * 1024,
            multipart_part_bytes: 8 * 1024 * 1024,
            multipart_concurrency: 4,
            retry_backoff_initial_ms: 1_000,
            retry_backoff_max_ms: 30_000,
            replaced_segment_delete_delay_ms: 60_000,
        }
    }
}

impl TieringConfig {
    /// The retry delay after `consecutive_failures` failures in a row (`>= 1`):
    /// `retry_backoff_initial_ms * 2^(failures - 1)`, capped at `retry_backoff_max_ms`.
    pub fn retry_backoff(&self, consecutive_failures: u32) -> Duration {
        let exponent = consecutive_failures.saturating_sub(1).min(32);
        let delay_ms = self
            .retry_backoff_initial_ms
            .saturating_mul(1u64 << exponent)
            .min(self.retry_backoff_max_ms);
        Duration::from_millis(delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let config = TieringConfig::default();
        assert_eq!(config.retry_backoff(1), Duration::from_secs(1));
        assert_eq!(config.retry_backoff(2), Duration::from_secs(2));
        assert_eq!(config.retry_backoff(5), Duration::from_secs(16));
        assert_eq!(config.retry_backoff(6), Duration::from_secs(30));
        assert_eq!(config.retry_backoff(u32::MAX), Duration::from_secs(30));
    }
}
