//! What request handlers share: configuration, the controller, the replica manager,
//! the group coordinator, fetch sessions and the producer id block.

use std::sync::Arc;

use silt_broker::group_coordinator::GroupCoordinator;
use silt_broker::replica_manager::ReplicaManager;
use silt_controller::{Controller, ControllerError};

use crate::config::BrokerConfig;
use crate::fetch_session::FetchSessionCache;
use crate::restore_point_writer::RestorePointWriter;

/// Producer ids fetched from the controller per request for a block (KIP-730 style).
const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A block of producer ids reserved through the controller: `next..end` (end exclusive).
#[derive(Debug, Default)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

/// State shared by every connection of one broker.
#[derive(Debug)]
pub struct BrokerContext {
    /// Merged configuration.
    pub config: BrokerConfig,
    /// Handle to the metadata quorum.
    pub controller: Controller,
    /// Hosted partitions.
    pub replica_manager: Arc<ReplicaManager>,
    /// Consumer groups.
    pub group_coordinator: Arc<GroupCoordinator>,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: FetchSessionCache,
    /// Host clients connect to.
    pub advertised_host: String,
    /// Port clients connect to.
    pub advertised_port: u16,
    /// Writes restore points when tiered storage runs (for `silt restore-points create`).
    pub restore_points: Option<Arc<RestorePointWriter>>,
    /// The Iceberg table exporter (none on a read-only replica).
    pub table_exporter: Option<Arc<silt_tables::TableExporter>>,
    producer_ids: tokio::sync::Mutex<ProducerIdBlock>,
}

impl BrokerContext {
    /// Bundles the running components.
    pub fn new(
        config: BrokerConfig,
        controller: Controller,
        replica_manager: Arc<ReplicaManager>,
        group_coordinator: Arc<GroupCoordinator>,
        advertised_host: String,
        advertised_port: u16,
    ) -> Self {
        BrokerContext {
            config,
            controller,
            replica_manager,
            group_coordinator,
            fetch_sessions: FetchSessionCache::new(1000),
            advertised_host,
            advertised_port,
            restore_points: None,
            table_exporter: None,
            producer_ids: tokio::sync::Mutex::new(ProducerIdBlock::default()),
        }
    }

    /// This broker's id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// A fresh producer id, from the current block or a new one reserved durably
    /// through the controller (so ids are never reused across restarts).
    ///
    /// # Errors
    /// The controller could not commit a new block.
    pub async fn next_producer_id(&self) -> Result<i64, ControllerError> {
        let mut block = self.producer_ids.lock().await;
        if block.next >= block.end {
            let first = self
                .controller
                .allocate_producer_ids(PRODUCER_ID_BLOCK_SIZE)
                .await?;
            *block = ProducerIdBlock {
                next: first,
                end: first + PRODUCER_ID_BLOCK_SIZE,
            };
        }
        let producer_id = block.next;
        block.next += 1;
        Ok(producer_id)
    }

    /// Applies the controller's latest metadata to the replica manager now: after a
    /// topic is created, so a Produce right after CreateTopics finds the partitions.
    pub async fn sync_replicas(&self) {
        let metadata = self.controller.metadata();
        if let Err(error) = self.replica_manager.apply_metadata(&metadata).await {
            tracing::error!(%error, "applying metadata to hosted partitions failed");
        }
    }
}
