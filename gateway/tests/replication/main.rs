//! Replication, both sides, in one suite: the leader's and the follower's replica
//! manager driven directly (`replica_manager`: acks, ISR, high watermark, epochs and
//! truncation), and followers copying leaders over the Kafka protocol with the replica
//! fetcher (`fetcher`).

mod fetcher;
mod replica_manager;

use silt_broker::replica_manager::FetchPartition;

/// A fetch of at most `max_bytes` from `fetch_offset` at `current_leader_epoch`, the
/// first batch always.
fn fetch_from(fetch_offset: i64, current_leader_epoch: i32, max_bytes: usize) -> FetchPartition {
    FetchPartition {
        fetch_offset,
        current_leader_epoch,
        max_bytes,
        min_one_batch: true,
    }
}
