//! Metadata: brokers, topics and partition leadership, with topic auto-creation as
//! Kafka's `auto.create.topics.enable`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use silt_broker::error::error_code;
use silt_controller::{ClusterMetadata, CommandError, TopicMetadata};
use std::collections::BTreeMap;

use super::{controller_error_code, str_bytes};
use crate::context::BrokerContext;

/// Answers Metadata v0..=12.
pub(super) async fn handle_metadata(
    context: &BrokerContext,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 has no null topic list: an empty list means every topic.
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .map(|topic| {
                    (
                        topic.name.map(|name| name.0.as_str().to_string()),
                        topic.topic_id,
                    )
                })
                .collect(),
        ),
    };
    let allow_auto_create = (version < 4 || request.allow_auto_topic_creation)
        && context.config.auto_create_topics_enable;
    let mut topics = Vec::new();
    match requested {
        None => {
            let metadata = context.controller.metadata();
            topics.extend(
                metadata
                    .topics
                    .values()
                    .map(|topic| describe_topic(&metadata, topic, version)),
            );
        }
        Some(wanted) => {
            for (name, topic_id) in wanted {
                topics
                    .push(resolve_topic(context, name, topic_id, allow_auto_create, version).await);
            }
        }
    }
    let metadata = context.controller.metadata();
    MetadataResponse::default()
        .with_brokers(brokers(context, &metadata))
        .with_cluster_id(if version >= 2 {
            Some(str_bytes(metadata.cluster_id.clone()))
        } else {
            None
        })
        .with_controller_id(BrokerId(if version >= 1 {
            metadata.controller_id
        } else {
            -1
        }))
        .with_topics(topics)
}

async fn resolve_topic(
    context: &BrokerContext,
    name: Option<String>,
    topic_id: uuid::Uuid,
    allow_auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let metadata = context.controller.metadata();
    let Some(name) = name else {
        return match metadata.topic_by_id(silt_controller::TopicId(topic_id)) {
            Some(topic) => describe_topic(&metadata, topic, version),
            None => MetadataResponseTopic::default()
                .with_topic_id(topic_id)
                .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
        };
    };
    if let Some(topic) = metadata.topic(&name) {
        return describe_topic(&metadata, topic, version);
    }
    let unknown = || {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name.clone()))))
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
    };
    if !allow_auto_create || name.starts_with("__") {
        return unknown();
    }
    let created = context
        .controller
        .create_topic(
            &name,
            context.config.num_partitions,
            context.config.default_replication_factor,
            BTreeMap::new(),
            false,
        )
        .await;
    context.sync_replicas().await;
    match created {
        Ok(topic) => {
            tracing::info!(topic = %name, partitions = topic.partitions.len(), "auto-created topic");
            describe_topic(&context.controller.metadata(), &topic, version)
        }
        // Another client's request created it first.
        Err(silt_controller::ControllerError::Rejected(CommandError::TopicAlreadyExists(_))) => {
            match context.controller.metadata().topic(&name) {
                Some(topic) => describe_topic(&context.controller.metadata(), topic, version),
                None => unknown().with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        }
        Err(error) => unknown().with_error_code(controller_error_code(&error)),
    }
}

/// The Metadata entry of one topic; replicas on fenced or unregistered brokers are listed
/// as offline (v5+).
pub(crate) fn describe_topic(
    metadata: &ClusterMetadata,
    topic: &TopicMetadata,
    version: i16,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|assignment| {
            let leader_error = if assignment.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                error_code(None)
            };
            MetadataResponsePartition::default()
                .with_error_code(leader_error)
                .with_partition_index(assignment.partition)
                .with_leader_id(BrokerId(assignment.leader))
                .with_leader_epoch(assignment.leader_epoch)
                .with_replica_nodes(assignment.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(assignment.isr.iter().copied().map(BrokerId).collect())
                .with_offline_replicas(if version >= 5 {
                    assignment
                        .replicas
                        .iter()
                        .copied()
                        .filter(|replica| {
                            metadata.broker(*replica).is_none_or(|broker| broker.fenced)
                        })
                        .map(BrokerId)
                        .collect()
                } else {
                    Vec::new()
                })
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(if version >= 10 {
            topic.topic_id.0
        } else {
            uuid::Uuid::nil()
        })
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
}

fn brokers(context: &BrokerContext, metadata: &ClusterMetadata) -> Vec<MetadataResponseBroker> {
    let mut brokers: Vec<MetadataResponseBroker> = metadata
        .brokers
        .values()
        .filter(|broker| !broker.fenced)
        .map(|broker| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.broker_id))
                .with_host(str_bytes(broker.host.clone()))
                .with_port(i32::from(broker.port))
                .with_rack(broker.rack.clone().map(str_bytes))
        })
        .collect();
    if !brokers
        .iter()
        .any(|broker| broker.node_id.0 == context.node_id())
    {
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(context.node_id()))
                .with_host(str_bytes(context.advertised_host.clone()))
                .with_port(i32::from(context.advertised_port)),
        );
    }
    brokers
}
