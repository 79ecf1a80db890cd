//! DescribeCluster and InitProducerId.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};

use super::str_bytes;
use crate::context::BrokerContext;

/// DescribeCluster endpoint type for brokers (KIP-919).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

/// Answers DescribeCluster v0..=1.
pub(super) fn handle_describe_cluster(
    context: &BrokerContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let metadata = context.controller.metadata();
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(
                "only the brokers endpoint type (1) is served",
            )))
            .with_endpoint_type(request.endpoint_type);
    }
    let brokers = metadata
        .brokers
        .values()
        .filter(|broker| !broker.fenced || request.include_fenced_brokers)
        .map(|broker| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.broker_id))
                .with_host(str_bytes(broker.host.clone()))
                .with_port(i32::from(broker.port))
                .with_rack(broker.rack.clone().map(str_bytes))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(metadata.cluster_id.clone()))
        .with_controller_id(BrokerId(metadata.controller_id))
        .with_endpoint_type(request.endpoint_type)
        .with_brokers(brokers)
}

/// Answers InitProducerId v0..=4 for idempotent producers (KIP-98, epoch bump of
/// KIP-360). Transactions are not offered: a transactional id is refused.
pub(super) async fn handle_init_producer_id(
    context: &BrokerContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        tracing::warn!(
            "refused InitProducerId with a transactional id: transactions are not supported"
        );
        return refused(ResponseError::InvalidRequest.code());
    }
    // An idempotent producer asking to bump its epoch keeps its id until the epoch runs out.
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return InitProducerIdResponse::default()
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match context.next_producer_id().await {
        Ok(producer_id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "allocating a producer id failed");
            refused(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
