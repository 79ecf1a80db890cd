//! ListOffsets, DeleteRecords and OffsetForLeaderEpoch.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use silt_broker::replica_manager::{PartitionError, ReplicaManager};

use crate::context::BrokerContext;

/// ListOffsets special timestamps (KIP-734, KIP-405).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

/// Answers ListOffsets v1..=8.
pub(super) async fn handle_list_offsets(
    context: &BrokerContext,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let replica_manager = &context.replica_manager;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let topic_name = topic.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let outcome = list_offset(
                replica_manager,
                &topic_name,
                partition.partition_index,
                request.replica_id.0,
                partition.current_leader_epoch,
                partition.timestamp,
            )
            .await;
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index);
            partitions.push(match outcome {
                Ok((offset, timestamp, leader_epoch)) => {
                    let response = response.with_offset(offset).with_timestamp(timestamp);
                    if version >= 4 {
                        response.with_leader_epoch(leader_epoch)
                    } else {
                        response
                    }
                }
                Err(error) => response
                    .with_error_code(error.kafka_error_code())
                    .with_offset(-1)
                    .with_timestamp(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp, leader epoch) for one ListOffsets query; offset -1 when no
/// record has a timestamp at or after the one asked for.
async fn list_offset(
    replica_manager: &ReplicaManager,
    topic: &str,
    partition: i32,
    replica_id: i32,
    current_leader_epoch: i32,
    timestamp: i64,
) -> Result<(i64, i64, i32), PartitionError> {
    let hosted = replica_manager.list_offsets_partition(
        topic,
        partition,
        replica_id,
        current_leader_epoch,
    )?;
    let leader_epoch = hosted.leader_epoch();
    match timestamp {
        LATEST_TIMESTAMP => Ok((hosted.high_watermark(), -1, leader_epoch)),
        EARLIEST_TIMESTAMP => Ok((replica_manager.log_start_offset(&hosted), -1, leader_epoch)),
        EARLIEST_LOCAL_TIMESTAMP => Ok((hosted.log_start_offset(), -1, leader_epoch)),
        MAX_TIMESTAMP => Ok(
            match replica_manager
                .max_timestamp_offset(topic, partition)
                .await?
            {
                Some((offset, max_timestamp)) => (offset, max_timestamp, leader_epoch),
                None => (-1, -1, -1),
            },
        ),
        by_time => Ok(
            match replica_manager
                .offset_for_timestamp(topic, partition, by_time)
                .await?
            {
                Some((offset, found_timestamp)) => (offset, found_timestamp, leader_epoch),
                None => (-1, -1, -1),
            },
        ),
    }
}

/// Answers DeleteRecords v0..=2.
pub(super) async fn handle_delete_records(
    context: &BrokerContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let topic_name = topic.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index);
            partitions.push(
                match delete_partition_records(
                    context,
                    &topic_name,
                    partition.partition_index,
                    partition.offset,
                )
                .await
                {
                    Ok(low_watermark) => result.with_low_watermark(low_watermark),
                    Err(code) => result.with_error_code(code).with_low_watermark(-1),
                },
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// DeleteRecords of one partition; returns the low watermark or the Kafka error code.
/// A tiered partition's new log start offset is committed through the controller first:
/// it then binds the remote log (tiering deletes the segments wholly below it) and every
/// replica. Other partitions move only the leader's log, without a controller write,
/// so a full disk can be freed this way.
async fn delete_partition_records(
    context: &BrokerContext,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<i64, i16> {
    let replica_manager = &context.replica_manager;
    let target = replica_manager
        .delete_records_target(topic, partition, offset)
        .await
        .map_err(|error| error.kafka_error_code())?;
    if target.tiered {
        let _start = context
            .controller
            .delete_records(target.topic_id, partition, target.offset)
            .await
            .map_err(|error| super::controller_error_code(&error))?;
    }
    let low_watermark = replica_manager
        .delete_records(topic, partition, target.offset)
        .await
        .map_err(|error| error.kafka_error_code())?;
    Ok(low_watermark.max(target.offset))
}

/// Answers OffsetForLeaderEpoch v2..=4 (KIP-101, KIP-320) from the leader's epoch
/// cache; followers and non-replicas answer NOT_LEADER_OR_FOLLOWER.
pub(super) async fn handle_offset_for_leader_epoch(
    context: &BrokerContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let topic_name = topic.topic.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = EpochEndOffset::default().with_partition(partition.partition);
            let outcome = context
                .replica_manager
                .end_offset_for_epoch(
                    &topic_name,
                    partition.partition,
                    partition.current_leader_epoch,
                    partition.leader_epoch,
                )
                .await;
            partitions.push(match outcome {
                Ok((leader_epoch, end_offset)) => result
                    .with_leader_epoch(leader_epoch)
                    .with_end_offset(end_offset),
                Err(error) => result
                    .with_error_code(error.kafka_error_code())
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
