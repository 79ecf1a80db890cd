//! Committed offsets: OffsetCommit (persisted before it is answered), OffsetFetch, and the
//! removal of offsets by retention or topic deletion, which also retires empty groups.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};

use super::group::{Group, GroupState, TopicPartition};
use super::records::{self, OffsetCommitValue};
use super::{GroupCoordinator, GroupError, GroupHandle, OffsetsRecord, now_ms, storage_error_code};
use crate::error::error_code;

/// Longest metadata string accepted with a committed offset (Kafka's
/// `offset.metadata.max.bytes`).
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// An OffsetCommit request without its version differences.
struct CommitRequest {
    group_id: String,
    member_id: String,
    group_instance_id: Option<String>,
    generation_id: i32,
    /// One per requested partition, in request order.
    partitions: Vec<CommitPartition>,
}

struct CommitPartition {
    topic_partition: TopicPartition,
    value: OffsetCommitValue,
    error: Option<ResponseError>,
}

/// A fetched offset; `-1` without metadata when nothing was committed.
struct FetchedPartition {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

impl FetchedPartition {
    fn unknown(partition: i32) -> Self {
        FetchedPartition {
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        }
    }

    fn committed(partition: i32, value: &OffsetCommitValue) -> Self {
        FetchedPartition {
            partition,
            offset: value.offset,
            leader_epoch: value.leader_epoch.unwrap_or(-1),
            metadata: value.metadata.clone(),
        }
    }
}

type FetchedTopics = Vec<(String, Vec<FetchedPartition>)>;

impl GroupCoordinator {
    pub(super) async fn offset_commit_request(
        &self,
        request: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        let topics: Vec<(StrBytes, Vec<i32>)> = request
            .topics
            .iter()
            .map(|topic| {
                (
                    topic.name.0.clone(),
                    topic
                        .partitions
                        .iter()
                        .map(|partition| partition.partition_index)
                        .collect(),
                )
            })
            .collect();
        let commit = commit_request(request, version, now_ms());
        let mut errors = self.handle_commit(commit).await.into_iter();
        let response_topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|partition_index| {
                        let error = errors.next().flatten();
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(partition_index)
                            .with_error_code(error_code(error))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(name.into())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(response_topics)
    }

    /// One error per requested partition, in request order.
    async fn handle_commit(&self, mut commit: CommitRequest) -> Vec<Option<ResponseError>> {
        let partition_count = commit.partitions.len();
        let all = |error: ResponseError| vec![Some(error); partition_count];
        if let Some(error) = self.unavailable_for(&commit.group_id) {
            return all(error);
        }
        let handle = match self.group(&commit.group_id) {
            Some(handle) => handle,
            // A standalone consumer stores offsets without group management.
            None if commit.generation_id < 0 => self.group_or_create(&commit.group_id),
            None => return all(ResponseError::IllegalGeneration),
        };
        if let Some(error) = self.validate_commit(&handle, &commit) {
            return all(error);
        }
        let accepted: Vec<(TopicPartition, OffsetCommitValue)> = commit
            .partitions
            .iter()
            .filter(|partition| partition.error.is_none())
            .map(|partition| (partition.topic_partition.clone(), partition.value.clone()))
            .collect();
        if !accepted.is_empty() {
            let stored = self
                .detached(move |coordinator| async move {
                    coordinator.store_offsets(&handle, accepted).await
                })
                .await
                .unwrap_or(Err(ResponseError::UnknownServerError));
            if let Err(error) = stored {
                for partition in commit
                    .partitions
                    .iter_mut()
                    .filter(|partition| partition.error.is_none())
                {
                    partition.error = Some(error);
                }
            }
        }
        commit
            .partitions
            .into_iter()
            .map(|partition| partition.error)
            .collect()
    }

    /// Kafka's `validateOffsetCommit` plus the state checks of `doCommitOffsets`.
    fn validate_commit(
        &self,
        handle: &GroupHandle,
        commit: &CommitRequest,
    ) -> Option<ResponseError> {
        let mut group = handle.lock();
        if group.is(GroupState::Dead) {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        let group_managed = commit.generation_id >= 0
            || !commit.member_id.is_empty()
            || commit.group_instance_id.is_some();
        if group_managed {
            if let Some(error) =
                group.validate_member(&commit.member_id, commit.group_instance_id.as_deref())
            {
                return Some(error);
            }
            if commit.generation_id != group.generation_id {
                return Some(ResponseError::IllegalGeneration);
            }
        } else if !group.is(GroupState::Empty) {
            // Only members may commit while the group has members.
            return Some(ResponseError::UnknownMemberId);
        }
        match group.state {
            GroupState::Empty => None,
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(member) = group.members.get_mut(&commit.member_id) {
                    member.refresh_session();
                }
                None
            }
            // The member has the new generation but not its assignment yet.
            GroupState::CompletingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Dead => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Appends the offsets, then makes them visible; both under the partition write lock.
    async fn store_offsets(
        &self,
        handle: &GroupHandle,
        offsets: Vec<(TopicPartition, OffsetCommitValue)>,
    ) -> Result<(), ResponseError> {
        let group_id = handle.lock().group_id.clone();
        let records = encode_offsets(&group_id, &offsets).map_err(|error| {
            warn!(group_id = %group_id, %error, "cannot encode committed offsets");
            ResponseError::UnknownServerError
        })?;
        let partition = self.partition_for(&group_id);
        let _write = self.write_lock(partition).lock().await;
        if handle.lock().is(GroupState::Dead) {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(error) = self.log.append(partition, records).await {
            warn!(group_id = %group_id, partition, %error, "failed to store committed offsets");
            return Err(storage_error_code(&error));
        }
        let mut group = handle.lock();
        debug_assert!(
            !group.is(GroupState::Dead),
            "groups only die under the partition write lock"
        );
        tracing::debug!(group_id = %group_id, generation = group.generation_id, partitions = offsets.len(), "committed offsets");
        group.offsets.extend(offsets);
        Ok(())
    }

    pub(super) fn offset_fetch_request(
        &self,
        request: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = request
                .groups
                .into_iter()
                .map(|requested| {
                    let topics = requested.topics.map(|topics| {
                        topics
                            .into_iter()
                            .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                            .collect()
                    });
                    let (error, fetched) = match self.fetch_offsets(&requested.group_id.0, topics) {
                        Ok(fetched) => (None, fetched),
                        Err(error) => (Some(error), Vec::new()),
                    };
                    OffsetFetchResponseGroup::default()
                        .with_group_id(requested.group_id)
                        .with_error_code(error_code(error))
                        .with_topics(fetched.into_iter().map(grouped_topic).collect())
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let topics: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                .collect()
        });
        match self.fetch_offsets(&request.group_id.0, topics.clone()) {
            Ok(fetched) => OffsetFetchResponse::default()
                .with_topics(fetched.into_iter().map(single_topic).collect()),
            Err(error) if version < 2 => {
                // v1 has no group-level error: every requested partition carries it.
                let topics = topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|partition| {
                                single_partition(FetchedPartition::unknown(partition), Some(error))
                            })
                            .collect();
                        OffsetFetchResponseTopic::default()
                            .with_name(StrBytes::from_string(name).into())
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponse::default().with_topics(topics)
            }
            Err(error) => OffsetFetchResponse::default().with_error_code(error.code()),
        }
    }

    /// Committed offsets of the requested partitions, or of every partition when `topics`
    /// is `None`.
    fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedTopics, ResponseError> {
        if let Some(error) = self.unavailable_for(group_id) {
            return Err(error);
        }
        let handle = self.group(group_id);
        let group = handle.as_ref().map(|handle| handle.lock());
        let group = group.as_deref().filter(|group| !group.is(GroupState::Dead));
        let Some(topics) = topics else {
            return Ok(group.map(all_offsets).unwrap_or_default());
        };
        let fetched = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|partition| {
                        let committed =
                            group.and_then(|group| group.offsets.get(&(topic.clone(), partition)));
                        match committed {
                            Some(value) => FetchedPartition::committed(partition, value),
                            None => FetchedPartition::unknown(partition),
                        }
                    })
                    .collect();
                (topic, partitions)
            })
            .collect();
        Ok(fetched)
    }

    /// One retention pass over every partition.
    pub(super) async fn run_offsets_retention(&self) -> usize {
        let now_ms = now_ms();
        let retention_ms = self.config.offsets_retention_ms;
        let mut removed = 0;
        for partition in 0..self.config.offsets_topic_num_partitions.max(1) {
            removed += self
                .remove_offsets(partition, |group| {
                    group.expired_offsets(now_ms, retention_ms)
                })
                .await;
        }
        if removed > 0 {
            info!(offsets = removed, "expired committed offsets");
        }
        removed
    }

    pub(super) async fn remove_topic_offsets(&self, topic: &str) {
        let topic = topic.to_string();
        let removed = self
            .detached(move |coordinator| async move {
                let mut removed = 0;
                for partition in 0..coordinator.config.offsets_topic_num_partitions.max(1) {
                    removed += coordinator
                        .remove_offsets(partition, |group| {
                            group
                                .offsets
                                .keys()
                                .filter(|(name, _)| *name == topic)
                                .cloned()
                                .collect()
                        })
                        .await;
                }
                removed
            })
            .await
            .unwrap_or(0);
        info!(
            offsets = removed,
            "removed committed offsets of a deleted topic"
        );
    }

    /// Removes the offsets `select` picks from every group of `partition` and retires the
    /// empty groups left without offsets: tombstones first, then the in-memory state.
    /// Returns the number of offsets removed.
    async fn remove_offsets(
        &self,
        partition: i32,
        select: impl Fn(&Group) -> Vec<TopicPartition>,
    ) -> usize {
        let handles: Vec<GroupHandle> = self
            .groups
            .read()
            .iter()
            .filter(|(group_id, _)| self.partition_for(group_id) == partition)
            .map(|(_, handle)| handle.clone())
            .collect();
        if handles.is_empty() {
            return 0;
        }
        let _write = self.write_lock(partition).lock().await;
        let mut removals = Vec::new();
        let mut tombstones: Vec<OffsetsRecord> = Vec::new();
        for handle in handles {
            let mut group = handle.lock();
            if group.is(GroupState::Dead) {
                continue;
            }
            let selected: HashSet<TopicPartition> = select(&group).into_iter().collect();
            let becomes_dead = group.is(GroupState::Empty)
                && group.pending_members.is_empty()
                && group
                    .offsets
                    .keys()
                    .all(|topic_partition| selected.contains(topic_partition));
            if selected.is_empty() && !becomes_dead {
                continue;
            }
            for (topic, topic_partition) in &selected {
                if let Ok(key) =
                    records::encode_offset_key(&group.group_id, topic, *topic_partition)
                {
                    tombstones.push((key, None));
                }
            }
            if becomes_dead {
                group.transition_to(GroupState::Dead, now_ms());
                if let Ok(key) = records::encode_group_key(&group.group_id) {
                    tombstones.push((key, None));
                }
            }
            drop(group);
            removals.push((handle, selected, becomes_dead));
        }
        if tombstones.is_empty() {
            return 0;
        }
        let appended = self.log.append(partition, tombstones).await;
        let mut removed = 0;
        for (handle, selected, becomes_dead) in removals {
            let mut group = handle.lock();
            if let Err(error) = &appended {
                warn!(group_id = %group.group_id, partition, %error, "failed to write offset tombstones");
                if becomes_dead {
                    group.revive_as_empty();
                }
                continue;
            }
            for topic_partition in &selected {
                removed += usize::from(group.offsets.remove(topic_partition).is_some());
            }
            if becomes_dead {
                info!(group_id = %group.group_id, generation = group.generation_id, "removed empty group");
                let group_id = group.group_id.clone();
                drop(group);
                self.remove_dead_group(&group_id, &handle);
            }
        }
        removed
    }

    /// Runs `work` on its own task, so a dropped request cannot stop it between a log
    /// append and the matching in-memory change.
    pub(super) async fn detached<T, F>(
        &self,
        work: impl FnOnce(Arc<GroupCoordinator>) -> F,
    ) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let coordinator = self.this()?;
        tokio::spawn(work(coordinator)).await.ok()
    }
}

fn commit_request(request: OffsetCommitRequest, version: i16, now_ms: i64) -> CommitRequest {
    let expire_timestamp_ms = (version <= 4 && request.retention_time_ms != -1)
        .then(|| now_ms.saturating_add(request.retention_time_ms));
    let partitions = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let topic_name = topic.name.0.to_string();
            topic.partitions.into_iter().map(move |partition| {
                let metadata = partition
                    .committed_metadata
                    .map(|metadata| metadata.to_string())
                    .unwrap_or_default();
                let error = (metadata.len() > OFFSET_METADATA_MAX_BYTES)
                    .then_some(ResponseError::OffsetMetadataTooLarge);
                let leader_epoch = (version >= 6 && partition.committed_leader_epoch >= 0)
                    .then_some(partition.committed_leader_epoch);
                CommitPartition {
                    topic_partition: (topic_name.clone(), partition.partition_index),
                    value: OffsetCommitValue {
                        offset: partition.committed_offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms: now_ms,
                        expire_timestamp_ms,
                    },
                    error,
                }
            })
        })
        .collect();
    CommitRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|id| id.to_string()),
        generation_id: request.generation_id_or_member_epoch,
        partitions,
    }
}

fn encode_offsets(
    group_id: &str,
    offsets: &[(TopicPartition, OffsetCommitValue)],
) -> Result<Vec<OffsetsRecord>, GroupError> {
    offsets
        .iter()
        .map(|((topic, partition), value)| {
            let key = records::encode_offset_key(group_id, topic, *partition)?;
            let value = records::encode_offset_value(value)?;
            Ok((key, Some(value)))
        })
        .collect()
}

fn all_offsets(group: &Group) -> FetchedTopics {
    let mut topics: FetchedTopics = Vec::new();
    for ((topic, partition), value) in &group.offsets {
        let fetched = FetchedPartition::committed(*partition, value);
        match topics.last_mut() {
            Some((name, partitions)) if name == topic => partitions.push(fetched),
            _ => topics.push((topic.clone(), vec![fetched])),
        }
    }
    topics
}

fn single_partition(
    fetched: FetchedPartition,
    error: Option<ResponseError>,
) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(fetched.partition)
        .with_committed_offset(fetched.offset)
        .with_committed_leader_epoch(fetched.leader_epoch)
        .with_metadata(Some(StrBytes::from_string(fetched.metadata)))
        .with_error_code(error_code(error))
}

fn single_topic((name, partitions): (String, Vec<FetchedPartition>)) -> OffsetFetchResponseTopic {
    OffsetFetchResponseTopic::default()
        .with_name(StrBytes::from_string(name).into())
        .with_partitions(
            partitions
                .into_iter()
                .map(|fetched| single_partition(fetched, None))
                .collect(),
        )
}

fn grouped_topic((name, partitions): (String, Vec<FetchedPartition>)) -> OffsetFetchResponseTopics {
    let partitions = partitions
        .into_iter()
        .map(|fetched| {
            OffsetFetchResponsePartitions::default()
                .with_partition_index(fetched.partition)
                .with_committed_offset(fetched.offset)
                .with_committed_leader_epoch(fetched.leader_epoch)
                .with_metadata(Some(StrBytes::from_string(fetched.metadata)))
        })
        .collect();
    OffsetFetchResponseTopics::default()
        .with_name(StrBytes::from_string(name).into())
        .with_partitions(partitions)
}
