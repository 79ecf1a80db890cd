//! Silt's data plane: the segmented partition log (Kafka's on-disk layout), idempotent
//! producer state, hosted partitions and the replica manager, and the consumer group
//! coordinator with its `__consumer_offsets` store.

pub mod group_coordinator;
pub mod error;
pub mod record_batch;
pub mod offset_index;
pub mod time_index;
pub mod segment;
pub mod background;
pub mod preallocate;
pub mod writeback;
pub mod log_config;
pub mod producer_state;
pub mod log;
pub mod partition;
pub mod replica_manager;
pub mod consumer_offsets;
pub mod remote_log;
pub mod replication;
pub mod isr;
