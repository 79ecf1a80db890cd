//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition, as in Kafka.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use silt_broker::consumer_offsets::CONSUMER_OFFSETS_TOPIC;

use super::str_bytes;
use crate::context::BrokerContext;

/// FindCoordinator key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// Where a coordinator lives, or why there is none right now.
type Located = Result<(BrokerId, StrBytes, i32), (i16, String)>;

/// The leader of the group's `__consumer_offsets` partition, with its advertised address.
fn locate_group_coordinator(context: &BrokerContext, group_id: &str) -> Located {
    let metadata = context.controller.metadata();
    let partition = context.group_coordinator.partition_for(group_id);
    let not_available = |why: &str| {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            format!("{why}; retry shortly"),
        )
    };
    let topic = metadata
        .topic(CONSUMER_OFFSETS_TOPIC)
        .ok_or_else(|| not_available("the __consumer_offsets topic does not exist yet"))?;
    let leader = topic
        .partition(partition)
        .map_or(-1, |assignment| assignment.leader);
    let broker = metadata
        .broker(leader)
        .filter(|broker| !broker.fenced)
        .ok_or_else(|| not_available(&format!("__consumer_offsets-{partition} has no leader")))?;
    Ok((
        BrokerId(broker.broker_id),
        str_bytes(broker.host.clone()),
        i32::from(broker.port),
    ))
}

/// Answers FindCoordinator v0..=4 (v4 batches keys, KIP-699).
pub(super) fn handle_find_coordinator(
    context: &BrokerContext,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let locate = |key: &str| -> Located {
        if request.key_type != KEY_TYPE_GROUP {
            return Err((
                ResponseError::CoordinatorNotAvailable.code(),
                "only consumer group coordinators are served; transactions are not supported"
                    .to_string(),
            ));
        }
        locate_group_coordinator(context, key)
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let coordinator = Coordinator::default().with_key(key.clone());
                match locate(key.as_str()) {
                    Ok((node_id, host, port)) => coordinator
                        .with_node_id(node_id)
                        .with_host(host)
                        .with_port(port),
                    Err((code, message)) => coordinator
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(message)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(request.key.as_str()) {
        Ok((node_id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(node_id)
            .with_host(host)
            .with_port(port),
        Err((code, message)) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(message)))
            } else {
                response
            }
        }
    }
}
