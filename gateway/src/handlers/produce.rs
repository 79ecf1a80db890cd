//! Produce: each partition's batches are validated and appended by its leader log.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{error_code, str_bytes};
use crate::context::BrokerContext;

/// Answers Produce v3..=11; `None` for acks=0, which gets no response.
pub(super) async fn handle_produce(context: &BrokerContext, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let topic_name = topic.name.0.as_str().to_string();
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let response = PartitionProduceResponse::default().with_index(partition.index).with_base_offset(-1).with_log_append_time_ms(-1);
            let outcome = match partition.records {
                _ if transactional => Err((error_code::INVALID_REQUEST, "transactional produce is not supported".to_string())),
                _ if !(-1..=1).contains(&acks) => Err((error_code::INVALID_REQUEST, format!("acks must be -1, 0 or 1, got {acks}"))),
                None => Err((error_code::CORRUPT_MESSAGE, "no records".to_string())),
                Some(records) if records.is_empty() => Err((error_code::CORRUPT_MESSAGE, "no records".to_string())),
                Some(records) => context
                    .replica_manager
                    .append_records(&topic_name, partition.index, records, acks)
                    .await
                    .map_err(|error| (error.kafka_error_code(), error.to_string())),
            };
            partition_responses.push(match outcome {
                Ok(info) => {
                    let response = response.with_base_offset(info.first_offset).with_log_append_time_ms(info.log_append_time_ms);
                    if version >= 5 { response.with_log_start_offset(info.log_start_offset) } else { response }
                }
                Err((code, message)) => {
                    tracing::debug!(topic = %topic_name, partition = partition.index, error_code = code, %message, "produce refused");
                    let response = response.with_error_code(code);
                    if version >= 8 { response.with_error_message(Some(str_bytes(message))) } else { response }
                }
            });
        }
        responses.push(TopicProduceResponse::default().with_name(topic.name).with_partition_responses(partition_responses));
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
