//! Replication, both sides, in one suite: the leader's and the follower's replica
//! manager driven directly (`replica_manager`: acks, ISR, high watermark, epochs and
//! truncation), and followers copying leaders over the Kafka protocol with the replica
//! fetcher (`fetcher`).

mod fetcher;
mod replica_manager;
