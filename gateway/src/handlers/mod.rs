//! One module per area of the Kafka API; `handle` routes a decoded request to it.

mod cluster;
mod configs;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod topics;

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::api_versions;
use crate::context::BrokerContext;
use crate::server::Request;

/// What a handler produced: an answer now, or one that comes once the ISR has the data.
// It lives for one request, moved once; boxing the large variant would allocate for
// every response on the request path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Handled {
    /// The response, or `None` for Produce with acks=0, which gets no response.
    Now(Option<ResponseKind>),
    /// Produce with acks=all: appended, waiting for the high watermark. The connection
    /// goes on with later requests meanwhile; responses still leave in request order.
    Later(BoxFuture<'static, ResponseKind>),
}

/// Runs the handler of `request`.
pub(crate) async fn handle(context: &Arc<BrokerContext>, request: Request) -> Handled {
    if let RequestKind::Produce(body) = request.body {
        return produce::handle_produce(context, body, request.header.request_api_version).await;
    }
    Handled::Now(handle_now(context, request).await)
}

/// Every request but Produce: answered when the handler returns.
async fn handle_now(context: &BrokerContext, request: Request) -> Option<ResponseKind> {
    let version = request.version();
    let client_id = request.client_id().to_string();
    let client_host = request.peer.ip().to_string();
    let coordinator = &context.group_coordinator;
    let response = match request.body {
        RequestKind::ApiVersions(_) => {
            ResponseKind::ApiVersions(api_versions::api_versions_response())
        }
        RequestKind::Metadata(body) => {
            ResponseKind::Metadata(metadata::handle_metadata(context, body, version).await)
        }
        RequestKind::CreateTopics(body) => {
            ResponseKind::CreateTopics(topics::handle_create_topics(context, body, version).await)
        }
        RequestKind::DeleteTopics(body) => {
            ResponseKind::DeleteTopics(topics::handle_delete_topics(context, body, version).await)
        }
        RequestKind::CreatePartitions(body) => {
            ResponseKind::CreatePartitions(topics::handle_create_partitions(context, body).await)
        }
        RequestKind::Fetch(body) => {
            ResponseKind::Fetch(fetch::handle_fetch(context, body, version).await)
        }
        RequestKind::ListOffsets(body) => {
            ResponseKind::ListOffsets(offsets::handle_list_offsets(context, body, version).await)
        }
        RequestKind::DeleteRecords(body) => {
            ResponseKind::DeleteRecords(offsets::handle_delete_records(context, body).await)
        }
        RequestKind::OffsetForLeaderEpoch(body) => ResponseKind::OffsetForLeaderEpoch(
            offsets::handle_offset_for_leader_epoch(context, body).await,
        ),
        RequestKind::FindCoordinator(body) => {
            ResponseKind::FindCoordinator(groups::handle_find_coordinator(context, body, version))
        }
        RequestKind::JoinGroup(body) => ResponseKind::JoinGroup(
            coordinator
                .join_group(body, version, &client_id, &client_host)
                .await,
        ),
        RequestKind::SyncGroup(body) => {
            ResponseKind::SyncGroup(coordinator.sync_group(body, version).await)
        }
        RequestKind::Heartbeat(body) => {
            ResponseKind::Heartbeat(coordinator.heartbeat(body, version).await)
        }
        RequestKind::LeaveGroup(body) => {
            ResponseKind::LeaveGroup(coordinator.leave_group(body, version).await)
        }
        RequestKind::OffsetCommit(body) => {
            ResponseKind::OffsetCommit(coordinator.offset_commit(body, version).await)
        }
        RequestKind::OffsetFetch(body) => {
            ResponseKind::OffsetFetch(coordinator.offset_fetch(body, version).await)
        }
        RequestKind::ListGroups(body) => {
            ResponseKind::ListGroups(coordinator.list_groups(body, version).await)
        }
        RequestKind::DescribeGroups(body) => {
            ResponseKind::DescribeGroups(coordinator.describe_groups(body, version).await)
        }
        RequestKind::DeleteGroups(body) => {
            ResponseKind::DeleteGroups(coordinator.delete_groups(body, version).await)
        }
        RequestKind::DescribeConfigs(body) => {
            ResponseKind::DescribeConfigs(configs::handle_describe_configs(context, body, version))
        }
        RequestKind::IncrementalAlterConfigs(body) => ResponseKind::IncrementalAlterConfigs(
            configs::handle_incremental_alter_configs(context, body).await,
        ),
        RequestKind::DescribeCluster(body) => {
            ResponseKind::DescribeCluster(cluster::handle_describe_cluster(context, body))
        }
        RequestKind::InitProducerId(body) => {
            ResponseKind::InitProducerId(cluster::handle_init_producer_id(context, body).await)
        }
        other => {
            // The frame decoder only lets through the APIs of SUPPORTED_APIS.
            tracing::error!(request = ?std::mem::discriminant(&other), "request reached the router without a handler");
            return None;
        }
    };
    Some(response)
}

/// A protocol string from a Rust string.
pub(crate) fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Maps controller errors to Kafka error codes.
pub(crate) fn controller_error_code(error: &silt_controller::ControllerError) -> i16 {
    use silt_controller::{CommandError, ControllerError};
    let error = match error {
        ControllerError::Rejected(rejected) => match rejected {
            CommandError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            CommandError::UnknownTopic(_) | CommandError::UnknownTopicOrPartition(_) => {
                ResponseError::UnknownTopicOrPartition
            }
            CommandError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            CommandError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            CommandError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            CommandError::InvalidConfig(_) => ResponseError::InvalidConfig,
            CommandError::NotLeaderOrFollower(_) => ResponseError::NotLeaderOrFollower,
            CommandError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
            CommandError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
            CommandError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
            CommandError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
            CommandError::InvalidRequest(_) => ResponseError::InvalidRequest,
            _ => ResponseError::UnknownServerError,
        },
        ControllerError::NotController { .. } => ResponseError::NotController,
        _ => ResponseError::UnknownServerError,
    };
    error.code()
}
