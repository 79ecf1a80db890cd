//! `silt topics ...` and `silt groups ...`: admin commands over the Kafka protocol,
//! printing readable tables.

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin_client::{AdminClient, AdminError};

/// Failures of an admin command.
#[derive(thiserror::Error, Debug)]
pub(crate) enum CliError {
    /// Talking to the broker failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The broker answered with a Kafka error.
    #[error("{what} failed: {name} (error code {code}){message}")]
    Kafka {
        /// What was attempted.
        what: String,
        /// Kafka's error name.
        name: String,
        /// Kafka error code.
        code: i16,
        /// The broker's message, with a leading separator, or "".
        message: String,
    },
    /// An argument has the wrong form.
    #[error("{0}")]
    Usage(String),
}

/// Topic administration.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TopicsCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (-1 = the broker's num.partitions).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        partitions: i32,
        /// Replication factor (-1 = the broker's default.replication.factor).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        replication_factor: i16,
        /// Topic config override NAME=VALUE, e.g. retention.ms=3600000; repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show partitions (leader, replicas, ISR, offsets) and config overrides; for a
    /// topic with `table.enable=true`, its table's end and export lag per partition.
    Describe {
        /// Topic name; every topic when absent.
        name: Option<String>,
        /// A node's admin listener, HOST:PORT, asked for the tables' state.
        #[arg(long, env = "SILT_ADMIN_LISTENER", default_value = "127.0.0.1:9644")]
        admin: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Change topic config overrides.
    AlterConfig {
        /// Topic name.
        name: String,
        /// Set NAME=VALUE; repeatable.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Remove the override NAME (back to the broker default); repeatable.
        #[arg(long = "delete", value_name = "NAME")]
        delete: Vec<String>,
    },
}

/// Consumer group administration.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum GroupsCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members and per-partition lag.
    Describe {
        /// Group id.
        group: String,
    },
}

fn kafka_check(what: &str, code: i16, message: Option<&StrBytes>) -> Result<(), CliError> {
    if code == 0 {
        return Ok(());
    }
    let name = kafka_protocol::ResponseError::try_from_code(code)
        .map(|error| format!("{error:?}"))
        .unwrap_or_else(|| "UNKNOWN".to_string());
    let message = message
        .map(|m| format!(": {}", m.as_str()))
        .unwrap_or_default();
    Err(CliError::Kafka {
        what: what.to_string(),
        name,
        code,
        message,
    })
}

fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .ok_or_else(|| CliError::Usage(format!("expected NAME=VALUE, got '{pair}'")))
        })
        .collect()
}

/// Prints rows under headers, columns padded to their widest cell.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(index, cell)| format!("{cell:<width$}", width = widths[index]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    out!("{}", line(headers.to_vec()).trim_end());
    for row in rows {
        out!(
            "{}",
            line(row.iter().map(String::as_str).collect()).trim_end()
        );
    }
}

fn join_ids(ids: &[BrokerId]) -> String {
    ids.iter()
        .map(|id| id.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn metadata(
    client: &mut AdminClient,
    topic: Option<&str>,
) -> Result<MetadataResponse, CliError> {
    let topics = topic.map(|name| {
        vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.to_string())))),
        ]
    });
    Ok(client
        .call(
            MetadataRequest::default()
                .with_topics(topics)
                .with_allow_auto_topic_creation(false),
            12,
        )
        .await?)
}

/// Runs a `silt topics` command against `bootstrap` (HOST:PORT).
///
/// # Errors
/// Connection failures, Kafka errors (with their name and message), bad arguments.
pub(crate) async fn run_topics(bootstrap: &str, command: TopicsCommand) -> Result<(), CliError> {
    let mut client = AdminClient::connect(bootstrap).await?;
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs = parse_pairs(&configs)?
                .into_iter()
                .map(|(key, value)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(key))
                        .with_value(Some(StrBytes::from_string(value)))
                })
                .collect();
            let topic = CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(configs);
            let response = client
                .call(
                    CreateTopicsRequest::default()
                        .with_topics(vec![topic])
                        .with_timeout_ms(30_000),
                    7,
                )
                .await?;
            for result in &response.topics {
                kafka_check(
                    &format!("creating topic '{name}'"),
                    result.error_code,
                    result.error_message.as_ref(),
                )?;
                out!(
                    "created topic {name} with {} partitions, replication factor {}",
                    result.num_partitions,
                    result.replication_factor
                );
            }
        }
        TopicsCommand::List => {
            let response = metadata(&mut client, None).await?;
            let mut rows: Vec<Vec<String>> = response
                .topics
                .iter()
                .map(|topic| {
                    let replication = topic
                        .partitions
                        .first()
                        .map(|p| p.replica_nodes.len())
                        .unwrap_or(0);
                    vec![
                        topic
                            .name
                            .as_ref()
                            .map(|n| n.0.to_string())
                            .unwrap_or_default(),
                        topic.partitions.len().to_string(),
                        replication.to_string(),
                        if topic.is_internal {
                            "yes".to_string()
                        } else {
                            "no".to_string()
                        },
                        topic.topic_id.to_string(),
                    ]
                })
                .collect();
            rows.sort();
            print_table(
                &["TOPIC", "PARTITIONS", "REPLICATION", "INTERNAL", "TOPIC ID"],
                &rows,
            );
        }
        TopicsCommand::Describe { name, admin } => {
            describe_topics(&mut client, name.as_deref(), &admin).await?
        }
        TopicsCommand::Delete { name } => {
            let state = DeleteTopicState::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            let response = client
                .call(
                    DeleteTopicsRequest::default()
                        .with_topics(vec![state])
                        .with_timeout_ms(30_000),
                    6,
                )
                .await?;
            for result in &response.responses {
                kafka_check(
                    &format!("deleting topic '{name}'"),
                    result.error_code,
                    result.error_message.as_ref(),
                )?;
            }
            out!("deleted topic {name}");
        }
        TopicsCommand::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::Usage(
                    "give at least one --set NAME=VALUE or --delete NAME".to_string(),
                ));
            }
            let mut configs: Vec<AlterableConfig> = parse_pairs(&set)?
                .into_iter()
                .map(|(key, value)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(key))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(value)))
                })
                .collect();
            configs.extend(delete.into_iter().map(|key| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key))
                    .with_config_operation(1)
            }));
            let resource = AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configs(configs);
            let response = client
                .call(
                    IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
                    1,
                )
                .await?;
            for result in &response.responses {
                kafka_check(
                    &format!("altering configs of '{name}'"),
                    result.error_code,
                    result.error_message.as_ref(),
                )?;
            }
            out!("altered configs of topic {name}");
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

async fn list_offsets(
    client: &mut AdminClient,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, CliError> {
    // The debugging replica id (-2) lets the one broker the CLI talks to answer for
    // partitions it follows too, from its own copy, as a follower-era view is
    // enough for a table.
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-2))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                ),
        ]);
    let response = client.call(request, 7).await?;
    Ok(response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.offset)))
        .collect())
}

/// The table of `topic` as the node at `admin` reads it from the object store.
async fn table_state(admin: &str, topic: &str) -> Result<serde_json::Value, String> {
    let url = format!("http://{admin}/tables/{topic}");
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|error| {
            format!("no admin listener answered at {admin} ({error}); give --admin")
        })?;
    let status = response.status();
    let body = response.text().await.map_err(|error| error.to_string())?;
    if !status.is_success() {
        return Err(format!("{body} (HTTP {status})"));
    }
    serde_json::from_str(&body).map_err(|error| format!("unexpected answer {body}: {error}"))
}

async fn describe_topics(
    client: &mut AdminClient,
    name: Option<&str>,
    admin: &str,
) -> Result<(), CliError> {
    let response = metadata(client, name).await?;
    for topic in &response.topics {
        let topic_name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        kafka_check(
            &format!("describing topic '{topic_name}'"),
            topic.error_code,
            None,
        )?;
        let partition_ids: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
        let earliest = list_offsets(client, &topic_name, &partition_ids, -2).await?;
        let latest = list_offsets(client, &topic_name, &partition_ids, -1).await?;
        out!(
            "Topic: {topic_name}  TopicId: {}  Partitions: {}  Internal: {}",
            topic.topic_id,
            topic.partitions.len(),
            topic.is_internal
        );
        let resource = DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic_name.clone()))
            .with_configuration_keys(None);
        let configs = client
            .call(
                DescribeConfigsRequest::default().with_resources(vec![resource]),
                4,
            )
            .await?;
        let overrides: Vec<String> = configs
            .results
            .iter()
            .flat_map(|result| result.configs.iter())
            .filter(|entry| entry.config_source == 1)
            .map(|entry| {
                format!(
                    "{}={}",
                    entry.name.as_str(),
                    entry.value.as_ref().map(|v| v.as_str()).unwrap_or("")
                )
            })
            .collect();
        out!(
            "Configs: {}",
            if overrides.is_empty() {
                "(broker defaults)".to_string()
            } else {
                overrides.join(", ")
            }
        );
        let table_enabled = configs
            .results
            .iter()
            .flat_map(|result| result.configs.iter())
            .any(|entry| {
                entry.name.as_str() == "table.enable"
                    && entry
                        .value
                        .as_ref()
                        .is_some_and(|value| value.as_str() == "true")
            });
        let table = if table_enabled {
            Some(table_state(admin, &topic_name).await)
        } else {
            None
        };
        // Per partition: the table's end (exclusive) and how far the log is ahead of it.
        let table_end = |partition: i32| -> Option<i64> {
            match &table {
                Some(Ok(state)) => state["partitions"][partition.to_string()]["end"].as_i64(),
                _ => None,
            }
        };
        match &table {
            None => {}
            Some(Err(reason)) => out!("Table: state unknown: {reason}"),
            Some(Ok(state)) => {
                let behind = topic.partitions.iter().any(|partition| {
                    let high = latest.get(&partition.partition_index).copied().unwrap_or(0);
                    table_end(partition.partition_index).unwrap_or(0) < high
                });
                let last_commit = state["last_commit_ms"].as_i64();
                let lag_ms = match last_commit {
                    Some(last) if behind => (now_ms() - last).max(0),
                    None if behind => -1,
                    _ => 0,
                };
                out!(
                    "Table: {} (v{}, {} files, {} rows), export lag {}",
                    state["location"].as_str().unwrap_or("?"),
                    state["version"],
                    state["data_files"],
                    state["records"],
                    match lag_ms {
                        -1 => "(no commit yet)".to_string(),
                        0 => "0 ms".to_string(),
                        ms => format!("{ms} ms since the last commit"),
                    }
                );
            }
        }
        let rows: Vec<Vec<String>> = topic
            .partitions
            .iter()
            .map(|partition| {
                let mut row = vec![
                    partition.partition_index.to_string(),
                    partition.leader_id.0.to_string(),
                    partition.leader_epoch.to_string(),
                    join_ids(&partition.replica_nodes),
                    join_ids(&partition.isr_nodes),
                    earliest
                        .get(&partition.partition_index)
                        .copied()
                        .unwrap_or(-1)
                        .to_string(),
                    latest
                        .get(&partition.partition_index)
                        .copied()
                        .unwrap_or(-1)
                        .to_string(),
                ];
                if table_enabled {
                    let high = latest.get(&partition.partition_index).copied().unwrap_or(0);
                    match table_end(partition.partition_index) {
                        Some(end) => {
                            row.push(end.to_string());
                            row.push((high - end).max(0).to_string());
                        }
                        None => {
                            row.push("-".to_string());
                            row.push("-".to_string());
                        }
                    }
                }
                row
            })
            .collect();
        let mut headers = vec![
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG START",
            "HIGH WATERMARK",
        ];
        if table_enabled {
            headers.extend(["TABLE END", "TABLE LAG"]);
        }
        print_table(&headers, &rows);
        out!();
    }
    Ok(())
}

/// Runs a `silt groups` command against `bootstrap` (HOST:PORT).
///
/// # Errors
/// Connection failures and Kafka errors.
pub(crate) async fn run_groups(bootstrap: &str, command: GroupsCommand) -> Result<(), CliError> {
    let mut client = AdminClient::connect(bootstrap).await?;
    match command {
        GroupsCommand::List => {
            let response = client.call(ListGroupsRequest::default(), 4).await?;
            kafka_check("listing groups", response.error_code, None)?;
            let mut rows: Vec<Vec<String>> = response
                .groups
                .iter()
                .map(|group| {
                    vec![
                        group.group_id.0.to_string(),
                        group.group_state.to_string(),
                        group.protocol_type.to_string(),
                    ]
                })
                .collect();
            rows.sort();
            print_table(&["GROUP", "STATE", "PROTOCOL TYPE"], &rows);
        }
        GroupsCommand::Describe { group } => describe_group(&mut client, &group).await?,
    }
    Ok(())
}

async fn describe_group(client: &mut AdminClient, group: &str) -> Result<(), CliError> {
    let group_id = GroupId(StrBytes::from_string(group.to_string()));
    let described = client
        .call(
            DescribeGroupsRequest::default().with_groups(vec![group_id.clone()]),
            5,
        )
        .await?;
    let Some(description) = described.groups.first() else {
        return Err(CliError::Usage(format!(
            "no description returned for group '{group}'"
        )));
    };
    kafka_check(
        &format!("describing group '{group}'"),
        description.error_code,
        None,
    )?;
    out!(
        "Group: {group}  State: {}  Protocol: {}  Members: {}",
        description.group_state.as_str(),
        description.protocol_data.as_str(),
        description.members.len()
    );
    let member_rows: Vec<Vec<String>> = description
        .members
        .iter()
        .map(|member| {
            vec![
                member.member_id.to_string(),
                member.client_id.to_string(),
                member.client_host.to_string(),
                describe_assignment(&member.member_assignment),
            ]
        })
        .collect();
    if !member_rows.is_empty() {
        print_table(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"], &member_rows);
        out!();
    }
    let fetch = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(group_id)
            .with_topics(None),
    ]);
    let offsets = client.call(fetch, 8).await?;
    let mut rows = Vec::new();
    for response_group in &offsets.groups {
        kafka_check(
            &format!("fetching offsets of '{group}'"),
            response_group.error_code,
            None,
        )?;
        for topic in &response_group.topics {
            let topic_name = topic.name.0.to_string();
            let partition_ids: Vec<i32> =
                topic.partitions.iter().map(|p| p.partition_index).collect();
            let latest = list_offsets(client, &topic_name, &partition_ids, -1).await?;
            for partition in &topic.partitions {
                let end = latest
                    .get(&partition.partition_index)
                    .copied()
                    .unwrap_or(-1);
                let lag = if partition.committed_offset >= 0 && end >= 0 {
                    (end - partition.committed_offset).to_string()
                } else {
                    "-".to_string()
                };
                rows.push(vec![
                    topic_name.clone(),
                    partition.partition_index.to_string(),
                    partition.committed_offset.to_string(),
                    end.to_string(),
                    lag,
                ]);
            }
        }
    }
    rows.sort();
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "COMMITTED OFFSET",
            "LOG END OFFSET",
            "LAG",
        ],
        &rows,
    );
    Ok(())
}

/// The consumer protocol's assignment (version, [topic, [partition]], user data) as
/// `topic:0,1 other:2`; "-" when empty or not a consumer assignment.
fn describe_assignment(bytes: &bytes::Bytes) -> String {
    let mut buffer = bytes.clone();
    let mut parts = Vec::new();
    let read_string = |buffer: &mut bytes::Bytes| -> Option<String> {
        if buffer.remaining() < 2 {
            return None;
        }
        let length = usize::try_from(buffer.get_i16()).ok()?;
        if buffer.remaining() < length {
            return None;
        }
        let text = buffer.split_to(length);
        Some(String::from_utf8_lossy(&text).into_owned())
    };
    if buffer.remaining() < 6 {
        return "-".to_string();
    }
    let _version = buffer.get_i16();
    let topic_count = buffer.get_i32();
    for _ in 0..topic_count.max(0) {
        let Some(topic) = read_string(&mut buffer) else {
            break;
        };
        if buffer.remaining() < 4 {
            break;
        }
        let partition_count = buffer.get_i32().max(0) as usize;
        if buffer.remaining() < partition_count * 4 {
            break;
        }
        let partitions: Vec<String> = (0..partition_count)
            .map(|_| buffer.get_i32().to_string())
            .collect();
        parts.push(format!("{topic}:{}", partitions.join(",")));
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}
