//! Produce: each partition's batches are validated and appended by its leader log;
//! acks=all answers once the high watermark covers them (or the request times out).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use bytes::Bytes;

use super::{Handled, str_bytes};
use crate::context::BrokerContext;

/// Answers Produce v3..=11: appends now; acks=0 gets no response, acks=1 an answer after
/// the append, acks=all an answer that waits (without holding up the connection) until
/// the high watermark covers the batches or `timeout_ms` passes.
pub(super) async fn handle_produce(
    context: &Arc<BrokerContext>,
    request: ProduceRequest,
    version: i16,
) -> Handled {
    let acks = request.acks;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    let transactional = request.transactional_id.is_some();
    let read_only = context.config.remote_read_only;
    // Validate per partition, then append every valid partition in one storage trip.
    let mut pending: Vec<(usize, usize, String, i32, Bytes)> = Vec::new();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let topic_name = topic.name.0.as_str().to_string();
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for (partition_slot, partition) in topic.partition_data.into_iter().enumerate() {
            let response = PartitionProduceResponse::default()
                .with_index(partition.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1);
            let refusal = match &partition.records {
                _ if read_only => Some((
                    ResponseError::PolicyViolation.code(),
                    format!(
                        "this broker is a read-only replica of the bucket {}: produce to the \
                         cluster that writes it",
                        context.config.object_store.url
                    ),
                )),
                _ if transactional => Some((
                    ResponseError::InvalidRequest.code(),
                    "transactional produce is not supported".to_string(),
                )),
                _ if !(-1..=1).contains(&acks) => Some((
                    ResponseError::InvalidRequest.code(),
                    format!("acks must be -1, 0 or 1, got {acks}"),
                )),
                None => Some((
                    ResponseError::CorruptMessage.code(),
                    "no records".to_string(),
                )),
                Some(records) if records.is_empty() => Some((
                    ResponseError::CorruptMessage.code(),
                    "no records".to_string(),
                )),
                Some(_) => None,
            };
            match (refusal, partition.records) {
                (None, Some(records)) => pending.push((
                    topic_index,
                    partition_slot,
                    topic_name.clone(),
                    partition.index,
                    records,
                )),
                (refusal, _) => {
                    let (code, message) = refusal.unwrap_or((
                        ResponseError::CorruptMessage.code(),
                        "no records".to_string(),
                    ));
                    partition_responses.push(refused(response, code, message, version));
                    continue;
                }
            }
            partition_responses.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }
    let appends = pending
        .iter()
        .map(|(_, _, topic, partition, records)| (topic.clone(), *partition, records.clone()))
        .collect();
    let outcomes = context
        .replica_manager
        .append_to_partitions(appends, acks)
        .await;
    let mut replication_waits: Vec<(usize, usize, String, i32, i64, i32)> = Vec::new();
    for ((topic_index, partition_slot, topic_name, partition_index, _), outcome) in
        pending.into_iter().zip(outcomes)
    {
        let slot = &mut responses[topic_index].partition_responses[partition_slot];
        let response = std::mem::take(slot);
        *slot = match outcome {
            Ok(info) => {
                if acks == -1 {
                    replication_waits.push((
                        topic_index,
                        partition_slot,
                        topic_name.clone(),
                        partition_index,
                        info.last_offset + 1,
                        info.leader_epoch,
                    ));
                }
                let response = response
                    .with_base_offset(info.first_offset)
                    .with_log_append_time_ms(info.log_append_time_ms);
                if version >= 5 {
                    response.with_log_start_offset(info.log_start_offset)
                } else {
                    response
                }
            }
            Err(error) => {
                tracing::debug!(topic = %topic_name, partition = partition_index, %error, "produce refused");
                refused(
                    response,
                    error.kafka_error_code(),
                    error.to_string(),
                    version,
                )
            }
        };
    }
    if acks == 0 {
        return Handled::Now(None);
    }
    if replication_waits.is_empty() {
        return Handled::Now(Some(ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        )));
    }
    let context = Arc::clone(context);
    Handled::Later(Box::pin(async move {
        let replica_manager = &context.replica_manager;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let waited = futures::future::join_all(replication_waits.iter().map(
            |(_, _, topic_name, partition_index, required_offset, leader_epoch)| {
                replica_manager.wait_for_high_watermark(
                    topic_name,
                    *partition_index,
                    *required_offset,
                    *leader_epoch,
                    remaining,
                )
            },
        ))
        .await;
        for ((topic_index, partition_slot, topic_name, partition_index, _, _), outcome) in
            replication_waits.into_iter().zip(waited)
        {
            if let Err(error) = outcome {
                tracing::debug!(topic = %topic_name, partition = partition_index, %error, "acks=all produce not committed");
                let response = PartitionProduceResponse::default()
                    .with_index(partition_index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1);
                responses[topic_index].partition_responses[partition_slot] = refused(
                    response,
                    error.kafka_error_code(),
                    error.to_string(),
                    version,
                );
            }
        }
        ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
    }))
}

fn refused(
    response: PartitionProduceResponse,
    code: i16,
    message: String,
    version: i16,
) -> PartitionProduceResponse {
    let response = response.with_error_code(code);
    if version >= 8 {
        response.with_error_message(Some(str_bytes(message)))
    } else {
        response
    }
}
