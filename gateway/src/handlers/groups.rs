//! FindCoordinator: on a single broker every group and producer finds this broker.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{error_code, str_bytes};
use crate::context::BrokerContext;

/// FindCoordinator key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// Answers FindCoordinator v0..=4 (v4 batches keys, KIP-699).
pub(super) fn handle_find_coordinator(context: &BrokerContext, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let host = str_bytes(context.advertised_host.clone());
    let port = i32::from(context.advertised_port);
    let node_id = BrokerId(context.node_id());
    let refusal = (request.key_type != KEY_TYPE_GROUP)
        .then(|| (error_code::COORDINATOR_NOT_AVAILABLE, "only consumer group coordinators are served; transactions are not supported"));
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let coordinator = Coordinator::default().with_key(key);
                match refusal {
                    Some((code, message)) => coordinator.with_error_code(code).with_error_message(Some(str_bytes(message))).with_node_id(BrokerId(-1)),
                    None => coordinator.with_node_id(node_id).with_host(host.clone()).with_port(port),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match refusal {
        Some((code, message)) => {
            let response = FindCoordinatorResponse::default().with_error_code(code).with_node_id(BrokerId(-1)).with_port(-1);
            if version >= 1 { response.with_error_message(Some(str_bytes(message))) } else { response }
        }
        None => FindCoordinatorResponse::default().with_node_id(node_id).with_host(host).with_port(port),
    }
}
