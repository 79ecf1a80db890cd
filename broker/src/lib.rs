//! Silt's broker: the segmented partition log (Kafka's on-disk layout) with its
//! indexes, checkpoints and leader-epoch cache, idempotent producer state, the
//! [`LogManager`]'s retention and flush loops, hosted partitions and the
//! [`ReplicaManager`], both sides of replication (ISR rules, the
//! [`ReplicaFetcherManager`] behind a [`leader_end_point::LeaderEndPoint`]), the
//! broker's life cycle with the controller ([`BrokerLifecycleManager`]), and the
//! [`GroupCoordinator`] with its `__consumer_offsets` store. `test_util` (feature
//! `test-util`) is the test kit every crate's tests build record batches with.

pub mod background;
pub mod broker_lifecycle;
pub mod checkpoint;
pub mod cleaning;
pub mod consumer_offsets;
pub mod error;
pub mod group_coordinator;
pub mod index_entry;
pub mod isr;
pub mod leader_end_point;
mod leader_epoch_cache;
pub mod log;
pub mod log_config;
pub mod log_manager;
mod offset_index;
pub mod partition;
pub mod preallocate;
mod producer_state;
pub mod record_batch;
pub mod remote_log;
pub mod replica_fetcher;
pub mod replica_manager;
mod replication;
pub mod segment;
#[cfg(feature = "test-util")]
pub mod test_util;
mod time_index;
pub mod writeback;

pub use crate::broker_lifecycle::BrokerLifecycleManager;
pub use crate::group_coordinator::GroupCoordinator;
pub use crate::log::PartitionLog;
pub use crate::log_manager::{LogManager, LogManagerConfig};
pub use crate::replica_fetcher::{ReplicaFetcherConfig, ReplicaFetcherManager};
pub use crate::replica_manager::{ReplicaManager, ReplicaManagerConfig};
