//! Fetch: long poll over the requested partitions up to the high watermark, with
//! `max_wait_ms`/`min_bytes`, `max_bytes`/`partition_max_bytes` (KIP-74) and
//! incremental fetch sessions (KIP-227). A fetch with `replica_id >= 0` comes from a
//! follower: it reads up to the log end offset and reports the follower's position to
//! the leader's replication state.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;

use super::str_bytes;
use crate::context::BrokerContext;
use crate::fetch_session::{SessionKey, SessionPartition, SessionResolution};
use silt_broker::replica_manager::FetchPartition;

/// Upper bound on `max_wait_ms`, so a client cannot park a connection for hours.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// One partition of the answer, with what the session needs to remember.
struct PartitionAnswer {
    key: SessionKey,
    data: PartitionData,
    changed: bool,
}

/// Answers Fetch v4..=12.
pub(super) async fn handle_fetch(
    context: &BrokerContext,
    request: FetchRequest,
    version: i16,
) -> FetchResponse {
    let requested = request_partitions(&request, version);
    let replica_id = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let (session_id, partitions, incremental) = if version >= 7 {
        let forgotten: Vec<SessionKey> = request
            .forgotten_topics_data
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(move |partition| (topic.topic.0.as_str().to_string(), *partition))
            })
            .collect();
        match context.fetch_sessions.resolve(
            request.session_id,
            request.session_epoch,
            requested.clone(),
            forgotten,
        ) {
            SessionResolution::Sessionless => (0, requested, false),
            SessionResolution::Opened { session_id } => (session_id, requested, false),
            SessionResolution::Incremental {
                session_id,
                partitions,
            } => (session_id, partitions, true),
            SessionResolution::Error(code) => {
                return FetchResponse::default().with_error_code(code.code());
            }
        }
    } else {
        (0, requested, false)
    };

    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let answers = loop {
        let appended = context.replica_manager.data_appended().notified();
        tokio::pin!(appended);
        let _ = appended.as_mut().enable();
        let (answers, total_bytes, any_error) =
            read_partitions(context, &partitions, max_bytes, replica_id).await;
        if total_bytes >= min_bytes.max(1) || any_error || Instant::now() >= deadline {
            break answers;
        }
        tokio::select! {
            _ = &mut appended => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };

    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for answer in answers {
        if incremental && !answer.changed {
            continue;
        }
        if session_id != 0 {
            context.fetch_sessions.record_sent(
                session_id,
                &answer.key,
                answer.data.high_watermark,
                answer.data.log_start_offset,
            );
        }
        let (topic_name, _) = answer.key;
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic_name => last.partitions.push(answer.data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(topic_name)))
                    .with_partitions(vec![answer.data]),
            ),
        }
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
}

/// The partitions of a full fetch, in request order.
fn request_partitions(request: &FetchRequest, version: i16) -> Vec<(SessionKey, SessionPartition)> {
    request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |partition| {
                (
                    (topic.topic.0.as_str().to_string(), partition.partition),
                    SessionPartition {
                        fetch_offset: partition.fetch_offset,
                        partition_max_bytes: partition.partition_max_bytes,
                        current_leader_epoch: if version >= 9 {
                            partition.current_leader_epoch
                        } else {
                            -1
                        },
                        last_high_watermark: -1,
                        last_log_start_offset: -1,
                    },
                )
            })
        })
        .collect()
}

/// Reads every partition once, for a consumer or for follower `replica_id`; returns the
/// answers, the record bytes gathered and whether any partition failed.
async fn read_partitions(
    context: &BrokerContext,
    partitions: &[(SessionKey, SessionPartition)],
    max_bytes: usize,
    replica_id: Option<i32>,
) -> (Vec<PartitionAnswer>, usize, bool) {
    let mut answers = Vec::with_capacity(partitions.len());
    let mut total_bytes = 0usize;
    let mut any_error = false;
    for ((topic_name, partition_index), position) in partitions {
        let remaining = max_bytes.saturating_sub(total_bytes);
        let partition_limit = usize::try_from(position.partition_max_bytes)
            .unwrap_or(0)
            .min(remaining);
        let data = PartitionData::default().with_partition_index(*partition_index);
        let read = if partition_limit == 0 && total_bytes > 0 {
            None
        } else {
            let replica_manager = &context.replica_manager;
            let fetch = FetchPartition {
                fetch_offset: position.fetch_offset,
                current_leader_epoch: position.current_leader_epoch,
                max_bytes: partition_limit,
                min_one_batch: total_bytes == 0,
            };
            Some(match replica_id {
                Some(replica_id) => {
                    replica_manager
                        .read_records_for_replica(topic_name, *partition_index, replica_id, fetch)
                        .await
                }
                None => {
                    replica_manager
                        .read_records(topic_name, *partition_index, fetch)
                        .await
                }
            })
        };
        let (data, changed) = match read {
            None => {
                let hosted = context
                    .replica_manager
                    .partition(topic_name, *partition_index);
                let high_watermark = hosted.as_ref().map(|p| p.high_watermark()).unwrap_or(-1);
                let log_start_offset = hosted
                    .as_ref()
                    .map(|p| context.replica_manager.log_start_offset(p))
                    .unwrap_or(-1);
                let changed = high_watermark != position.last_high_watermark
                    || log_start_offset != position.last_log_start_offset;
                (
                    data.with_high_watermark(high_watermark)
                        .with_last_stable_offset(high_watermark)
                        .with_log_start_offset(log_start_offset),
                    changed,
                )
            }
            Some(Ok(read)) => {
                total_bytes += read.records.len();
                let changed = !read.records.is_empty()
                    || read.high_watermark != position.last_high_watermark
                    || read.log_start_offset != position.last_log_start_offset;
                (
                    data.with_high_watermark(read.high_watermark)
                        .with_last_stable_offset(read.high_watermark)
                        .with_log_start_offset(read.log_start_offset)
                        .with_records(Some(read.records)),
                    changed,
                )
            }
            Some(Err(error)) => {
                any_error = true;
                tracing::debug!(topic = %topic_name, partition = partition_index, %error, "fetch refused");
                let code = error.kafka_error_code();
                let data = data.with_error_code(code).with_high_watermark(-1);
                // A follower out of range restarts at the leader's local log start offset.
                let hosted = context
                    .replica_manager
                    .partition(topic_name, *partition_index);
                let data = match (replica_id, hosted) {
                    (Some(_), Some(hosted)) if code == ResponseError::OffsetOutOfRange.code() => {
                        data.with_high_watermark(hosted.high_watermark())
                            .with_log_start_offset(hosted.log_start_offset())
                    }
                    _ => data,
                };
                (data, true)
            }
        };
        answers.push(PartitionAnswer {
            key: (topic_name.clone(), *partition_index),
            data,
            changed,
        });
    }
    metrics::counter!("silt_fetched_bytes_total").increment(total_bytes as u64);
    (answers, total_bytes, any_error)
}
