//! The follower's view of a partition leader (Kafka's `LeaderEndPoint`): the two
//! requests a replica fetcher sends, OffsetForLeaderEpoch (KIP-101, KIP-279) and Fetch
//! with a replica id. The broker crate drives them; the front end implements them
//! over its Kafka connection, so replication speaks the same protocol as clients.

use std::fmt::Debug;

use async_trait::async_trait;
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use silt_controller::BrokerId;

/// Why a request to the leader got no response; every variant drops the connection.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum LeaderEndPointError {
    /// The connection failed or was closed.
    #[error("connection to the leader failed: {0}")]
    Io(#[from] std::io::Error),
    /// A request could not be encoded or a response decoded.
    #[error("cannot encode or decode a message: {0}")]
    Protocol(String),
}

/// One connection to a partition leader. Calls are made one at a time; the caller
/// bounds each with its own timeout and drops the endpoint after any error.
#[async_trait]
pub trait LeaderEndPoint: Send + Debug {
    /// Sends OffsetForLeaderEpoch: for each partition, the end offset of the given
    /// leader epoch (or of the largest epoch below it) in the leader's log.
    async fn fetch_epoch_end_offsets(
        &mut self,
        request: OffsetForLeaderEpochRequest,
    ) -> Result<OffsetForLeaderEpochResponse, LeaderEndPointError>;

    /// Sends a replica Fetch (`replica_id` set to this broker, read-uncommitted).
    async fn fetch(&mut self, request: FetchRequest) -> Result<FetchResponse, LeaderEndPointError>;
}

/// Opens [`LeaderEndPoint`]s to brokers by their advertised address.
#[async_trait]
pub trait LeaderConnector: Send + Sync + Debug {
    /// Connects to broker `leader_id` at `host:port`.
    ///
    /// # Errors
    /// [`LeaderEndPointError::Io`] when the connection cannot be made.
    async fn connect(
        &self,
        leader_id: BrokerId,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn LeaderEndPoint>, LeaderEndPointError>;
}
