//! Silt's data plane: the segmented partition log (Kafka's on-disk layout), idempotent
//! producer state, hosted partitions and the replica manager, and the consumer group
//! coordinator with its `__consumer_offsets` store.

pub mod background;
pub mod broker_lifecycle;
pub mod checkpoint;
pub mod consumer_offsets;
pub mod error;
pub mod group_coordinator;
pub mod isr;
pub mod leader_end_point;
mod leader_epoch_cache;
pub mod log;
pub mod log_config;
pub mod offset_index;
pub mod partition;
pub mod preallocate;
pub mod producer_state;
pub mod record_batch;
pub mod remote_log;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replication;
pub mod segment;
pub mod time_index;
pub mod writeback;
