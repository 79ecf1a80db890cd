//! The broker's [`LeaderEndPoint`] over a Kafka connection: followers fetch from their
//! leaders with the same protocol and listener that clients use.

use async_trait::async_trait;
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::protocol::Request;
use silt_broker::leader_end_point::{LeaderConnector, LeaderEndPoint, LeaderEndPointError};
use silt_controller::BrokerId;

use crate::kafka_connection::{ConnectionError, KafkaConnection};

/// Fetch version followers speak (topic names, `current_leader_epoch`).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version followers speak (with `replica_id`).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Largest response frame accepted from a leader (bytes).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Client id followers send in request headers.
const CLIENT_ID: &str = "silt-replica-fetcher";

/// Connects followers to leaders over TCP with the Kafka protocol.
#[derive(Debug, Default)]
pub struct KafkaLeaderConnector;

#[async_trait]
impl LeaderConnector for KafkaLeaderConnector {
    async fn connect(
        &self,
        _leader_id: BrokerId,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn LeaderEndPoint>, LeaderEndPointError> {
        let connection =
            KafkaConnection::connect((host, port), CLIENT_ID, MAX_RESPONSE_BYTES).await?;
        Ok(Box::new(KafkaLeaderEndPoint { connection }))
    }
}

/// One follower connection to a leader.
#[derive(Debug)]
struct KafkaLeaderEndPoint {
    connection: KafkaConnection,
}

impl KafkaLeaderEndPoint {
    async fn call<Req: Request>(
        &mut self,
        request: &Req,
        version: i16,
    ) -> Result<Req::Response, LeaderEndPointError> {
        self.connection
            .call(request, version)
            .await
            .map_err(|error| match error {
                ConnectionError::Io(error) => LeaderEndPointError::Io(error),
                ConnectionError::Protocol(message) => LeaderEndPointError::Protocol(message),
            })
    }
}

#[async_trait]
impl LeaderEndPoint for KafkaLeaderEndPoint {
    async fn fetch_epoch_end_offsets(
        &mut self,
        request: OffsetForLeaderEpochRequest,
    ) -> Result<OffsetForLeaderEpochResponse, LeaderEndPointError> {
        self.call(&request, OFFSET_FOR_LEADER_EPOCH_VERSION).await
    }

    async fn fetch(&mut self, request: FetchRequest) -> Result<FetchResponse, LeaderEndPointError> {
        self.call(&request, FETCH_VERSION).await
    }
}
