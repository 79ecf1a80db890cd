//! DescribeConfigs and IncrementalAlterConfigs for topics (and a read-only view of the
//! broker's settings).

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use silt_broker::log_config::LogConfig;

use super::topics::validate_topic_configs;
use super::{controller_error_code, str_bytes};
use crate::config::BROKER_CONFIGS;
use crate::context::BrokerContext;

/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// ConfigResource type of a broker.
const RESOURCE_BROKER: i8 = 4;
/// Config source: a topic override.
pub(super) const CONFIG_SOURCE_DYNAMIC_TOPIC: i8 = 1;
/// Config source: the broker's file, flags or environment.
const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
/// Config source: Kafka's built-in default.
pub(super) const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations (KIP-339).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One config as DescribeConfigs answers it: (name, value, config source).
pub(super) type ConfigEntry = (String, String, i8);

/// Every topic config with its effective value and source: the override, else the
/// broker default, else the built-in default.
pub(super) fn effective_topic_configs(
    context: &BrokerContext,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    let builtin = LogConfig::defaults();
    let broker_defaults = context.replica_manager.log_defaults();
    builtin
        .into_iter()
        .map(|(name, default_value)| {
            if let Some(value) = overrides.get(&name) {
                return (name, value.clone(), CONFIG_SOURCE_DYNAMIC_TOPIC);
            }
            match broker_defaults.get(&name) {
                Some(value) if *value != default_value => {
                    (name, value.clone(), CONFIG_SOURCE_STATIC_BROKER)
                }
                _ => (name, default_value, CONFIG_SOURCE_DEFAULT),
            }
        })
        .collect()
}

/// Answers DescribeConfigs v1..=4.
pub(super) fn handle_describe_configs(
    context: &BrokerContext,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_string();
            let wanted = resource.configuration_keys.map(|keys| {
                keys.iter()
                    .map(|key| key.as_str().to_string())
                    .collect::<Vec<_>>()
            });
            let entries: Result<Vec<ConfigEntry>, (i16, String)> = match resource.resource_type {
                RESOURCE_TOPIC => match context.controller.metadata().topic(&name) {
                    Some(topic) => Ok(effective_topic_configs(context, &topic.configs)),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition.code(),
                        format!("unknown topic '{name}'"),
                    )),
                },
                RESOURCE_BROKER if name.is_empty() || name == context.node_id().to_string() => {
                    Ok(broker_configs(context))
                }
                RESOURCE_BROKER => Err((
                    ResponseError::InvalidRequest.code(),
                    format!("broker '{name}' is not this broker"),
                )),
                other => Err((
                    ResponseError::InvalidRequest.code(),
                    format!("config resource type {other} is not supported"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(str_bytes(name));
            match entries {
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .filter(|(config_name, _, _)| {
                            wanted
                                .as_ref()
                                .is_none_or(|keys| keys.contains(config_name))
                        })
                        .map(|(config_name, value, source)| {
                            describe_entry(config_name, value, source, version)
                        })
                        .collect(),
                ),
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_entry(
    name: String,
    value: String,
    source: i8,
    version: i16,
) -> DescribeConfigsResourceResult {
    let entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source);
    // config_type 2 = STRING: Silt keeps every value as Kafka's string form.
    if version >= 3 {
        entry.with_config_type(2)
    } else {
        entry
    }
}

fn broker_configs(context: &BrokerContext) -> Vec<ConfigEntry> {
    context
        .config
        .raw
        .iter()
        .map(|(name, value)| {
            let is_default = BROKER_CONFIGS
                .iter()
                .any(|config| config.name == name && config.default == Some(value.as_str()));
            let source = if is_default {
                CONFIG_SOURCE_DEFAULT
            } else {
                CONFIG_SOURCE_STATIC_BROKER
            };
            (name.clone(), value.clone(), source)
        })
        .collect()
}

/// Answers IncrementalAlterConfigs v0..=1 for topics; broker settings are static.
pub(super) async fn handle_incremental_alter_configs(
    context: &BrokerContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_string();
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                alter_topic(context, &name, resource.configs, request.validate_only).await
            }
            RESOURCE_BROKER => Err((
                ResponseError::InvalidRequest.code(),
                "broker settings are static: change them in the config file or flags and restart"
                    .to_string(),
            )),
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("config resource type {other} is not supported"),
            )),
        };
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(str_bytes(name));
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, message)) => response
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter_topic(
    context: &BrokerContext,
    name: &str,
    configs: Vec<kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let Some(topic) = context.controller.metadata().topic(name).cloned() else {
        return Err((
            ResponseError::UnknownTopicOrPartition.code(),
            format!("unknown topic '{name}'"),
        ));
    };
    let defaults = LogConfig::defaults();
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for config in configs {
        let config_name = config.name.as_str().to_string();
        if !defaults.contains_key(&config_name) {
            return Err((
                ResponseError::InvalidConfig.code(),
                format!("unknown topic config '{config_name}'"),
            ));
        }
        let value = config.value.map(|value| value.as_str().to_string());
        let current = topic
            .configs
            .get(&config_name)
            .or_else(|| defaults.get(&config_name))
            .cloned()
            .unwrap_or_default();
        match config.config_operation {
            OP_SET => {
                let _ = set.insert(config_name, value.unwrap_or_default());
            }
            OP_DELETE => delete.push(config_name),
            OP_APPEND | OP_SUBTRACT => {
                let mut items: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(String::from)
                    .collect();
                let change: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(|item| item.trim().to_string())
                    .collect();
                if config.config_operation == OP_APPEND {
                    items.extend(change.into_iter().filter(|item| !item.is_empty()));
                    items.dedup();
                } else {
                    items.retain(|item| !change.contains(item));
                }
                let _ = set.insert(config_name, items.join(","));
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    format!("unknown config operation {other}"),
                ));
            }
        }
    }
    let _validated = validate_topic_configs(
        set.iter()
            .map(|(key, value)| (key.clone(), Some(value.clone()))),
    )?;
    if validate_only {
        return Ok(());
    }
    context
        .controller
        .alter_topic_configs(name, set, delete)
        .await
        .map_err(|error| (controller_error_code(&error), error.to_string()))?;
    context.sync_replicas().await;
    tracing::info!(topic = %name, "altered topic configs");
    Ok(())
}
