//! CreateTopics, DeleteTopics and CreatePartitions, through the controller.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use silt_broker::log_config::LogConfig;

use super::configs::{CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_DYNAMIC_TOPIC, effective_topic_configs};
use super::{controller_error_code, str_bytes};
use crate::context::BrokerContext;

/// A refused topic: Kafka error code and a message for the client.
type Refusal = (i16, String);

/// The refusal of a topic change on a read-only replica (`remote.read.only`), whose
/// topics are those of the bucket it follows.
fn read_only_refusal(context: &BrokerContext) -> Refusal {
    (
        ResponseError::PolicyViolation.code(),
        format!(
            "this broker is a read-only replica of the bucket {}: change topics on the \
             cluster that writes it",
            context.config.object_store.url
        ),
    )
}

/// Answers CreateTopics v2..=7.
pub(super) async fn handle_create_topics(
    context: &BrokerContext,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let result = CreatableTopicResult::default().with_name(TopicName(str_bytes(name.clone())));
        let result = match create_one(context, &name, topic, request.validate_only).await {
            Ok((topic_id, partitions, replication_factor, overrides)) => {
                let result = result
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor);
                let result = if version >= 7 {
                    result.with_topic_id(topic_id)
                } else {
                    result
                };
                if version >= 5 {
                    result.with_configs(Some(describe_created_configs(context, &overrides)))
                } else {
                    result
                }
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        };
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create_one(
    context: &BrokerContext,
    name: &str,
    topic: CreatableTopic,
    validate_only: bool,
) -> Result<(uuid::Uuid, i32, i16, BTreeMap<String, String>), Refusal> {
    if context.config.remote_read_only {
        return Err(read_only_refusal(context));
    }
    let overrides = validate_topic_configs(topic.configs.iter().map(|config| {
        (
            config.name.as_str().to_string(),
            config.value.as_ref().map(|v| v.as_str().to_string()),
        )
    }))?;
    let (partitions, replication_factor) = if topic.assignments.is_empty() {
        let partitions = if topic.num_partitions == -1 {
            context.config.num_partitions
        } else {
            topic.num_partitions
        };
        let replication_factor = if topic.replication_factor == -1 {
            context.config.default_replication_factor
        } else {
            topic.replication_factor
        };
        (partitions, replication_factor)
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest.code(),
                "both replica assignments and num_partitions/replication_factor were given; send one of them".to_string(),
            ));
        }
        let replication_factor = topic.assignments[0].broker_ids.len();
        let brokers = context
            .controller
            .metadata()
            .brokers
            .keys()
            .copied()
            .collect::<Vec<_>>();
        for assignment in &topic.assignments {
            if assignment.broker_ids.len() != replication_factor
                || assignment
                    .broker_ids
                    .iter()
                    .any(|broker| !brokers.contains(&broker.0))
            {
                return Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    format!(
                        "partition {} names unknown brokers or a different replica count",
                        assignment.partition_index
                    ),
                ));
            }
        }
        (topic.assignments.len() as i32, replication_factor as i16)
    };
    if partitions < 1 {
        return Err((
            ResponseError::InvalidPartitions.code(),
            format!("number of partitions must be at least 1, got {partitions}"),
        ));
    }
    if replication_factor < 1 {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            format!("replication factor must be at least 1, got {replication_factor}"),
        ));
    }
    if validate_only {
        if context.controller.metadata().topic(name).is_some() {
            return Err((
                ResponseError::TopicAlreadyExists.code(),
                format!("topic '{name}' already exists"),
            ));
        }
        return Ok((uuid::Uuid::nil(), partitions, replication_factor, overrides));
    }
    let internal = name.starts_with("__");
    let created = context
        .controller
        .create_topic(
            name,
            partitions,
            replication_factor,
            overrides.clone(),
            internal,
        )
        .await;
    context.sync_replicas().await;
    match created {
        Ok(created) => {
            tracing::info!(topic = %name, partitions, replication_factor, "created topic");
            Ok((
                created.topic_id.0,
                partitions,
                replication_factor,
                overrides,
            ))
        }
        Err(error) => Err((controller_error_code(&error), error.to_string())),
    }
}

/// Validates topic config overrides by name and value; `None` values are dropped.
///
/// # Errors
/// INVALID_CONFIG naming the first bad setting.
pub(super) fn validate_topic_configs(
    configs: impl Iterator<Item = (String, Option<String>)>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let known = LogConfig::defaults();
    let mut overrides = BTreeMap::new();
    for (name, value) in configs {
        let Some(value) = value else { continue };
        if !known.contains_key(&name) {
            return Err((
                ResponseError::InvalidConfig.code(),
                format!("unknown topic config '{name}'"),
            ));
        }
        LogConfig::validate(&name, &value)
            .map_err(|error| (ResponseError::InvalidConfig.code(), error.to_string()))?;
        silt_tables::validate_topic_config(&name, &value)
            .map_err(|error| (ResponseError::InvalidConfig.code(), error.to_string()))?;
        let _ = overrides.insert(name, value);
    }
    Ok(overrides)
}

fn describe_created_configs(
    context: &BrokerContext,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    effective_topic_configs(context, overrides)
        .into_iter()
        .map(|(name, value, source)| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(if source == CONFIG_SOURCE_DYNAMIC_TOPIC {
                    source
                } else {
                    CONFIG_SOURCE_DEFAULT
                })
        })
        .collect()
}

/// Answers DeleteTopics v1..=6 (v6 may name topics by id).
pub(super) async fn handle_delete_topics(
    context: &BrokerContext,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|topic| {
                (
                    topic.name.map(|name| name.0.as_str().to_string()),
                    topic.topic_id,
                )
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| (Some(name.0.as_str().to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, topic_id) in targets {
        let metadata = context.controller.metadata();
        let resolved = match &name {
            Some(name) => metadata
                .topic(name)
                .map(|topic| (topic.name.clone(), topic.topic_id.0)),
            None => metadata
                .topic_by_id(silt_controller::TopicId(topic_id))
                .map(|topic| (topic.name.clone(), topic.topic_id.0)),
        };
        let result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(str_bytes(n))));
        let result = if version >= 6 {
            result.with_topic_id(topic_id)
        } else {
            result
        };
        let outcome = match resolved {
            _ if context.config.remote_read_only => Err(read_only_refusal(context)),
            None => Err((
                ResponseError::UnknownTopicOrPartition.code(),
                "unknown topic".to_string(),
            )),
            Some(_) if !context.config.delete_topic_enable => Err((
                ResponseError::TopicDeletionDisabled.code(),
                "delete.topic.enable is false on this broker".to_string(),
            )),
            Some((resolved_name, _)) if resolved_name.starts_with("__") => Err((
                ResponseError::InvalidTopicException.code(),
                format!("internal topic '{resolved_name}' cannot be deleted"),
            )),
            Some((resolved_name, resolved_id)) => {
                match context.controller.delete_topic(&resolved_name).await {
                    Ok(_) => {
                        context.sync_replicas().await;
                        context
                            .group_coordinator
                            .on_topic_deleted(&resolved_name)
                            .await;
                        tracing::info!(topic = %resolved_name, "deleted topic");
                        Ok((resolved_name, resolved_id))
                    }
                    Err(error) => Err((controller_error_code(&error), error.to_string())),
                }
            }
        };
        responses.push(match outcome {
            Ok((resolved_name, resolved_id)) => {
                let result = result.with_name(Some(TopicName(str_bytes(resolved_name))));
                if version >= 6 {
                    result.with_topic_id(resolved_id)
                } else {
                    result
                }
            }
            Err((code, message)) => {
                let result = result.with_error_code(code);
                if version >= 5 {
                    result.with_error_message(Some(str_bytes(message)))
                } else {
                    result
                }
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Answers CreatePartitions v0..=3.
pub(super) async fn handle_create_partitions(
    context: &BrokerContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let outcome = match context
            .controller
            .metadata()
            .topic(&name)
            .map(|existing| existing.partitions.len() as i32)
        {
            _ if context.config.remote_read_only => Err(read_only_refusal(context)),
            None => Err((
                ResponseError::UnknownTopicOrPartition.code(),
                format!("unknown topic '{name}'"),
            )),
            Some(current) if topic.count <= current => Err((
                ResponseError::InvalidPartitions.code(),
                format!(
                    "topic '{name}' has {current} partitions; the new count must be larger, got {}",
                    topic.count
                ),
            )),
            Some(_) if request.validate_only => Ok(()),
            Some(_) => match context
                .controller
                .create_partitions(&name, topic.count)
                .await
            {
                Ok(_) => {
                    context.sync_replicas().await;
                    Ok(())
                }
                Err(error) => Err((controller_error_code(&error), error.to_string())),
            },
        };
        let result = CreatePartitionsTopicResult::default().with_name(TopicName(str_bytes(name)));
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
