//! The broker's integration tests, in one binary (one link instead of one per file):
//! the partition log (append and read, recovery, retention, idempotence, follower
//! appends, preallocation, write-back) and the group coordinator. Replication tests
//! live with the replica fetcher's, in `gateway/tests/replication`.

mod group_coordinator;
mod log_append_read;
mod log_cleaning_swap;
mod log_follower;
mod log_idempotence;
mod log_preallocate;
mod log_recovery;
mod log_retention;
mod log_tiered_retention;
mod log_writeback;
