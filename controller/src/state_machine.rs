//! The pure apply logic: how each [`Command`] changes [`ClusterMetadata`].
//!
//! Applying is deterministic (no clocks, no randomness, ordered maps only), so every voter
//! that applies the same log reaches the same metadata. A rejected command leaves the
//! metadata untouched.

use std::collections::BTreeMap;

use crate::cluster_metadata::BrokerId;
use crate::cluster_metadata::BrokerRegistration;
use crate::cluster_metadata::ClusterMetadata;
use crate::cluster_metadata::PartitionAssignment;
use crate::cluster_metadata::RemoteSegmentMetadata;
use crate::cluster_metadata::RemoteSegmentState;
use crate::cluster_metadata::RestoredPartition;
use crate::cluster_metadata::RestoredTopic;
use crate::cluster_metadata::TopicId;
use crate::cluster_metadata::TopicMetadata;
use crate::command::Command;
use crate::command::CommandError;
use crate::command::CommandOutput;
use crate::command::CommandResult;
use crate::command::NewTopic;
use crate::election;
use crate::placement::assign_replicas;

/// Longest topic name Kafka accepts.
pub(crate) const MAX_TOPIC_NAME_LEN: usize = 249;

/// Upper bound on partitions created by one command, so a single request cannot blow up the
/// metadata (Kafka's controller bounds records per operation the same way).
pub(crate) const MAX_PARTITIONS_PER_COMMAND: i32 = 10_000;

/// Applies `command` to `metadata` and returns its answer.
pub(crate) fn apply(metadata: &mut ClusterMetadata, command: Command) -> CommandResult {
    match command {
        // Deduplicated by the metadata store, which keeps the answers.
        Command::Once { command, .. } => apply(metadata, *command),
        Command::SetClusterId { cluster_id } => set_cluster_id(metadata, cluster_id),
        Command::RegisterBroker(registration) => register_broker(metadata, registration),
        Command::CreateTopic(new_topic) => create_topic(metadata, new_topic),
        Command::DeleteTopic { name } => delete_topic(metadata, &name),
        Command::CreatePartitions { name, new_total } => {
            create_partitions(metadata, &name, new_total)
        }
        Command::AlterTopicConfigs { name, set, delete } => {
            alter_topic_configs(metadata, &name, set, delete)
        }
        Command::AllocateProducerIds { count } => allocate_producer_ids(metadata, count),
        Command::BeginRemoteSegmentCopy(segment) => begin_remote_segment_copy(metadata, segment),
        Command::FinishRemoteSegmentCopy {
            topic_id,
            partition,
            segment_id,
            event_timestamp_ms,
        } => finish_remote_segment_copy(
            metadata,
            SegmentKey {
                topic_id,
                partition,
                segment_id,
            },
            event_timestamp_ms,
        ),
        Command::BeginRemoteSegmentDelete {
            topic_id,
            partition,
            segment_id,
            event_timestamp_ms,
            expected_state,
        } => begin_remote_segment_delete(
            metadata,
            SegmentKey {
                topic_id,
                partition,
                segment_id,
            },
            event_timestamp_ms,
            expected_state,
        ),
        Command::ReplaceRemoteSegments {
            topic_id,
            partition,
            segment_id,
            replaced,
            event_timestamp_ms,
        } => replace_remote_segments(
            metadata,
            SegmentKey {
                topic_id,
                partition,
                segment_id,
            },
            &replaced,
            event_timestamp_ms,
        ),
        Command::FinishRemoteSegmentDelete {
            topic_id,
            partition,
            segment_id,
        } => finish_remote_segment_delete(
            metadata,
            SegmentKey {
                topic_id,
                partition,
                segment_id,
            },
        ),
        Command::FenceBroker {
            broker_id,
            incarnation_id,
            unclean_leader_election_default,
        } => election::fence_broker(
            metadata,
            broker_id,
            incarnation_id,
            unclean_leader_election_default,
        ),
        Command::UnfenceBroker {
            broker_id,
            incarnation_id,
            unclean_leader_election_default,
        } => election::unfence_broker(
            metadata,
            broker_id,
            incarnation_id,
            unclean_leader_election_default,
        ),
        Command::AlterPartition(request) => election::alter_partition(metadata, request),
        Command::ElectPreferredLeaders => election::elect_preferred_leaders(metadata),
        Command::RestoreCluster {
            restore_point_id,
            topics,
            next_producer_id,
        } => restore_cluster(metadata, restore_point_id, topics, next_producer_id),
        Command::FollowRestorePoint {
            restore_point_id,
            topics,
        } => follow_restore_point(metadata, restore_point_id, topics),
        Command::DeleteRecords {
            topic_id,
            partition,
            offset,
        } => delete_records(metadata, topic_id, partition, offset),
    }
}

/// Checks Kafka's topic naming rules: 1..=249 characters from `[a-zA-Z0-9._-]`, and
/// neither `.` nor `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), CommandError> {
    if name.is_empty() {
        return Err(CommandError::InvalidTopic("topic name is empty".to_owned()));
    }
    if name == "." || name == ".." {
        return Err(CommandError::InvalidTopic(format!(
            "topic name cannot be '{name}'"
        )));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(CommandError::InvalidTopic(format!(
            "topic name is {} characters long, the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        )));
    }
    let is_legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if let Some(illegal) = name.chars().find(|c| !is_legal(*c)) {
        return Err(CommandError::InvalidTopic(format!(
            "topic name '{name}' contains the illegal character {illegal:?}; \
             only ASCII alphanumerics, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

fn set_cluster_id(metadata: &mut ClusterMetadata, cluster_id: String) -> CommandResult {
    if cluster_id.is_empty() {
        return Err(CommandError::InvalidConfig(
            "cluster id is empty".to_owned(),
        ));
    }
    if metadata.cluster_id.is_empty() {
        metadata.cluster_id = cluster_id;
    }
    Ok(CommandOutput::ClusterId(metadata.cluster_id.clone()))
}

fn register_broker(
    metadata: &mut ClusterMetadata,
    registration: BrokerRegistration,
) -> CommandResult {
    if registration.broker_id < 0 {
        return Err(CommandError::InvalidConfig(format!(
            "broker id must be non-negative, got {}",
            registration.broker_id
        )));
    }
    let broker_id = registration.broker_id;
    let previous_incarnation = metadata
        .broker(broker_id)
        .map(|previous| previous.incarnation_id);
    match previous_incarnation {
        // A retry of the same registration.
        Some(incarnation) if incarnation == registration.incarnation_id => {
            return Ok(CommandOutput::Done);
        }
        // The broker restarted: fenced until it has caught up with the metadata, and its
        // old incarnation's leaderships and ISR places go.
        Some(_) => {
            let restarted = BrokerRegistration {
                fenced: true,
                ..registration
            };
            let _previous = metadata.brokers.insert(broker_id, restarted);
            let _leader_changes = election::remove_from_partitions(metadata, broker_id, false);
        }
        None => {
            let _previous = metadata.brokers.insert(broker_id, registration);
        }
    }
    let _previous_epoch = metadata
        .broker_epochs
        .insert(broker_id, metadata.metadata_offset);
    Ok(CommandOutput::Done)
}

fn create_topic(metadata: &mut ClusterMetadata, new_topic: NewTopic) -> CommandResult {
    validate_topic_name(&new_topic.name)?;
    if metadata.topics.contains_key(&new_topic.name) {
        return Err(CommandError::TopicAlreadyExists(new_topic.name));
    }
    if new_topic.topic_id.is_nil() {
        return Err(CommandError::InvalidTopic(
            "topic id is the nil uuid".to_owned(),
        ));
    }
    if metadata.topic_by_id(new_topic.topic_id).is_some() {
        return Err(CommandError::InvalidTopic(format!(
            "topic id {} is already in use",
            new_topic.topic_id
        )));
    }
    validate_partition_growth(new_topic.num_partitions, new_topic.num_partitions)?;
    if new_topic.replication_factor < 1 {
        return Err(CommandError::InvalidReplicationFactor(format!(
            "replication factor must be at least 1, got {}",
            new_topic.replication_factor
        )));
    }
    validate_config_keys(new_topic.configs.keys())?;

    let replication_factor = usize::from(new_topic.replication_factor.unsigned_abs());
    let partitions = place_partitions(metadata, 0, new_topic.num_partitions, replication_factor)?;
    let topic = TopicMetadata {
        name: new_topic.name.clone(),
        topic_id: new_topic.topic_id,
        partitions,
        configs: new_topic.configs,
        log_start_offsets: BTreeMap::new(),
        internal: new_topic.internal,
    };
    let _previous = metadata.topics.insert(new_topic.name, topic.clone());
    Ok(CommandOutput::Topic(topic))
}

/// Removes the topic only: its remote segments stay, for tiering to delete their objects.
fn delete_topic(metadata: &mut ClusterMetadata, name: &str) -> CommandResult {
    match metadata.topics.remove(name) {
        Some(topic) => Ok(CommandOutput::TopicDeleted(topic.topic_id)),
        None => Err(CommandError::UnknownTopic(name.to_owned())),
    }
}

fn create_partitions(metadata: &mut ClusterMetadata, name: &str, new_total: i32) -> CommandResult {
    let topic = metadata
        .topics
        .get(name)
        .ok_or_else(|| CommandError::UnknownTopic(name.to_owned()))?;
    let current = partition_count(topic);
    if new_total < current {
        return Err(CommandError::InvalidPartitions(format!(
            "topic '{name}' has {current} partitions, which is more than the requested {new_total}"
        )));
    }
    if new_total == current {
        return Err(CommandError::InvalidPartitions(format!(
            "topic '{name}' already has {current} partitions"
        )));
    }
    validate_partition_growth(new_total, new_total - current)?;
    let replication_factor = topic
        .partitions
        .first()
        .map_or(1, |first| first.replicas.len().max(1));

    let added = place_partitions(metadata, current, new_total - current, replication_factor)?;
    let Some(topic) = metadata.topics.get_mut(name) else {
        return Err(CommandError::UnknownTopic(name.to_owned()));
    };
    topic.partitions.extend(added);
    Ok(CommandOutput::Topic(topic.clone()))
}

fn alter_topic_configs(
    metadata: &mut ClusterMetadata,
    name: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
) -> CommandResult {
    let Some(topic) = metadata.topics.get_mut(name) else {
        return Err(CommandError::UnknownTopic(name.to_owned()));
    };
    validate_config_keys(set.keys().chain(delete.iter()))?;
    if let Some(both) = delete.iter().find(|key| set.contains_key(*key)) {
        return Err(CommandError::InvalidConfig(format!(
            "config '{both}' is both set and deleted in one request"
        )));
    }
    for key in &delete {
        let _removed = topic.configs.remove(key);
    }
    topic.configs.extend(set);
    Ok(CommandOutput::Topic(topic.clone()))
}

fn allocate_producer_ids(metadata: &mut ClusterMetadata, count: i64) -> CommandResult {
    if count < 1 {
        return Err(CommandError::InvalidConfig(format!(
            "producer id block size must be at least 1, got {count}"
        )));
    }
    let first_producer_id = metadata.next_producer_id;
    let Some(next) = first_producer_id.checked_add(count) else {
        return Err(CommandError::InvalidConfig(
            "producer id space is exhausted".to_owned(),
        ));
    };
    metadata.next_producer_id = next;
    Ok(CommandOutput::ProducerIdBlock { first_producer_id })
}

/// Applies [`Command::RestoreCluster`]. Every check runs before the first change, so
/// a refused restore leaves the metadata as it was. Topics that exist already with the
/// same id (the restore applied before) or that are internal (`__consumer_offsets`, made
/// by the brokers) are left as they are.
fn restore_cluster(
    metadata: &mut ClusterMetadata,
    restore_point_id: String,
    topics: Vec<RestoredTopic>,
    next_producer_id: i64,
) -> CommandResult {
    if metadata.restored_from.as_deref() == Some(restore_point_id.as_str()) {
        return Ok(CommandOutput::Restored {
            restore_point_id,
            topics_created: 0,
        });
    }
    if let Some(previous) = &metadata.restored_from {
        return Err(CommandError::InvalidRequest(format!(
            "the cluster was restored from restore point {previous} already"
        )));
    }
    if let Some(topic) = metadata.topics.values().find(|topic| !topic.internal) {
        return Err(CommandError::InvalidRequest(format!(
            "a restore needs a cluster without topics, but topic '{}' exists",
            topic.name
        )));
    }
    let mut to_create = Vec::new();
    for restored in topics {
        if let Some(existing) = metadata.topics.get(&restored.name)
            && (existing.internal || existing.topic_id == restored.topic_id)
        {
            continue;
        }
        validate_restored_topic(&restored)?;
        if metadata.topic_by_id(restored.topic_id).is_some() {
            return Err(CommandError::InvalidTopic(format!(
                "restored topic '{}' has a used topic id {}",
                restored.name, restored.topic_id
            )));
        }
        to_create.push(restored);
    }
    let topics_created = to_create.len();
    for restored in to_create {
        create_restored_topic(metadata, restored)?;
    }
    metadata.next_producer_id = metadata.next_producer_id.max(next_producer_id);
    metadata.restored_from = Some(restore_point_id.clone());
    Ok(CommandOutput::Restored {
        restore_point_id,
        topics_created,
    })
}

/// Applies [`Command::FollowRestorePoint`]: the cluster's own (non-internal) topics
/// become those of the restore point. A topic is created (or re-created under a new
/// id), grown, given the restore point's configs, and its remote segments replaced by
/// the restore point's; a topic the restore point lacks is deleted. Every check runs
/// before the first change.
fn follow_restore_point(
    metadata: &mut ClusterMetadata,
    restore_point_id: String,
    topics: Vec<RestoredTopic>,
) -> CommandResult {
    let wanted: BTreeMap<String, RestoredTopic> = topics
        .into_iter()
        .filter(|topic| !topic.internal)
        .map(|topic| (topic.name.clone(), topic))
        .collect();
    for restored in wanted.values() {
        validate_restored_topic(restored)?;
        if let Some(other) = metadata.topic_by_id(restored.topic_id)
            && other.name != restored.name
        {
            return Err(CommandError::InvalidTopic(format!(
                "topic id {} of '{}' is used by '{}'",
                restored.topic_id, restored.name, other.name
            )));
        }
    }
    let gone: Vec<String> = metadata
        .topics
        .values()
        .filter(|topic| !topic.internal)
        .filter(|topic| {
            wanted
                .get(&topic.name)
                .is_none_or(|restored| restored.topic_id != topic.topic_id)
        })
        .map(|topic| topic.name.clone())
        .collect();
    for name in gone {
        if let Some(topic) = metadata.topics.remove(&name) {
            metadata
                .remote_segments
                .retain(|(topic_id, _), _| *topic_id != topic.topic_id);
        }
    }
    let mut topics_created = 0;
    for (name, restored) in wanted {
        let Some(topic) = metadata.topics.get(&name) else {
            create_restored_topic(metadata, restored)?;
            topics_created += 1;
            continue;
        };
        let have = partition_count(topic);
        let want = i32::try_from(restored.partitions.len()).unwrap_or(i32::MAX);
        if want > have {
            let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
            let added = place_partitions(metadata, have, want - have, replication_factor)?;
            if let Some(topic) = metadata.topics.get_mut(&name) {
                topic.partitions.extend(added);
            }
        }
        if let Some(topic) = metadata.topics.get_mut(&name) {
            topic.configs = restored.configs.clone();
            topic.log_start_offsets = restored_log_start_offsets(&restored);
        }
        for partition in &restored.partitions {
            install_restored_segments(metadata, restored.topic_id, partition);
        }
    }
    metadata.restored_from = Some(restore_point_id.clone());
    Ok(CommandOutput::Restored {
        restore_point_id,
        topics_created,
    })
}

/// A restored topic holds together: a valid name, configs and id, partitions listed in
/// order, segments below their cuts.
fn validate_restored_topic(restored: &RestoredTopic) -> Result<(), CommandError> {
    validate_topic_name(&restored.name)?;
    validate_config_keys(restored.configs.keys())?;
    let count = i32::try_from(restored.partitions.len()).unwrap_or(i32::MAX);
    validate_partition_growth(count, count)?;
    if restored.topic_id.is_nil() {
        return Err(CommandError::InvalidTopic(format!(
            "restored topic '{}' has the nil topic id",
            restored.name
        )));
    }
    for (index, partition) in restored.partitions.iter().enumerate() {
        if usize::try_from(partition.partition).ok() != Some(index) {
            return Err(CommandError::InvalidPartitions(format!(
                "restored topic '{}' lists partition {} at position {index}",
                restored.name, partition.partition
            )));
        }
        validate_restored_segments(restored, partition)?;
    }
    Ok(())
}

/// Creates a validated restored topic on the unfenced brokers (as many replicas as it
/// had, at most one per broker), led above its old leader epochs, with its segments.
fn create_restored_topic(
    metadata: &mut ClusterMetadata,
    restored: RestoredTopic,
) -> Result<(), CommandError> {
    let brokers = metadata.unfenced_brokers().count();
    let replication_factor =
        usize::from(restored.replication_factor.max(1).unsigned_abs()).min(brokers.max(1));
    let count = i32::try_from(restored.partitions.len()).unwrap_or(i32::MAX);
    let mut partitions = place_partitions(metadata, 0, count, replication_factor)?;
    for (assignment, partition) in partitions.iter_mut().zip(&restored.partitions) {
        assignment.leader_epoch = partition.leader_epoch.saturating_add(1).max(0);
        install_restored_segments(metadata, restored.topic_id, partition);
    }
    let topic = TopicMetadata {
        name: restored.name.clone(),
        topic_id: restored.topic_id,
        partitions,
        log_start_offsets: restored_log_start_offsets(&restored),
        configs: restored.configs,
        internal: restored.internal,
    };
    let _previous = metadata.topics.insert(restored.name, topic);
    Ok(())
}

/// The log start offsets DeleteRecords had set in a restored topic.
fn restored_log_start_offsets(restored: &RestoredTopic) -> BTreeMap<i32, i64> {
    restored
        .partitions
        .iter()
        .filter(|partition| partition.records_deleted_before > 0)
        .map(|partition| (partition.partition, partition.records_deleted_before))
        .collect()
}

/// DeleteRecords on a tiered partition: its log start offset moves up to `offset` (never
/// down). Records below are no longer served, and tiering deletes the remote segments
/// wholly below it. The caller checks `offset` against the high watermark.
fn delete_records(
    metadata: &mut ClusterMetadata,
    topic_id: TopicId,
    partition: i32,
    offset: i64,
) -> CommandResult {
    let topic = metadata
        .topics
        .values_mut()
        .find(|topic| topic.topic_id == topic_id)
        .ok_or_else(|| CommandError::UnknownTopicOrPartition(format!("topic id {topic_id}")))?;
    if topic.partition(partition).is_none() {
        return Err(CommandError::UnknownTopicOrPartition(format!(
            "{}-{partition}",
            topic.name
        )));
    }
    if offset < 0 {
        return Err(CommandError::InvalidRequest(format!(
            "log start offset {offset} of {}-{partition} is negative",
            topic.name
        )));
    }
    let start = topic.log_start_offsets.entry(partition).or_insert(0);
    *start = (*start).max(offset);
    Ok(CommandOutput::LogStartOffset(*start))
}

/// Makes `partition`'s segments the partition's remote segments, all `CopyFinished`.
fn install_restored_segments(
    metadata: &mut ClusterMetadata,
    topic_id: TopicId,
    partition: &RestoredPartition,
) {
    let segments = partition
        .segments
        .iter()
        .map(|segment| {
            let mut segment = segment.clone();
            segment.state = RemoteSegmentState::CopyFinished;
            (segment.segment_id, segment)
        })
        .collect();
    let key = (topic_id, partition.partition);
    let _previous = metadata.remote_segments.insert(key, segments);
}

/// A restored partition's segments belong to it, are valid and lie below its cut.
fn validate_restored_segments(
    topic: &RestoredTopic,
    partition: &RestoredPartition,
) -> Result<(), CommandError> {
    for segment in &partition.segments {
        if segment.topic_id != topic.topic_id
            || segment.partition != partition.partition
            || segment.segment_id.is_nil()
            || segment.base_offset < 0
            || segment.base_offset > segment.end_offset
            || segment.end_offset >= partition.cut_offset
        {
            return Err(invalid_segment(format!(
                "restored segment {} of topic '{}' partition {} [{}, {}] does not belong \
                 below the cut {}",
                segment.segment_id,
                topic.name,
                partition.partition,
                segment.base_offset,
                segment.end_offset,
                partition.cut_offset
            )));
        }
    }
    Ok(())
}

/// Identifies one remote segment.
#[derive(Clone, Copy)]
struct SegmentKey {
    topic_id: TopicId,
    partition: i32,
    segment_id: uuid::Uuid,
}

impl std::fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "remote segment {} of topic {} partition {}",
            self.segment_id, self.topic_id, self.partition
        )
    }
}

fn invalid_segment(reason: String) -> CommandError {
    CommandError::InvalidRemoteSegment(reason)
}

fn begin_remote_segment_copy(
    metadata: &mut ClusterMetadata,
    segment: RemoteSegmentMetadata,
) -> CommandResult {
    let key = SegmentKey {
        topic_id: segment.topic_id,
        partition: segment.partition,
        segment_id: segment.segment_id,
    };
    validate_new_remote_segment(metadata, &segment, key)?;
    let segments = metadata
        .remote_segments
        .entry((key.topic_id, key.partition))
        .or_default();
    if segments.contains_key(&key.segment_id) {
        return Err(invalid_segment(format!("{key} already exists")));
    }
    let _previous = segments.insert(key.segment_id, segment);
    Ok(CommandOutput::Done)
}

/// Checks a segment proposed for `CopyStarted`: ids, state, offsets and epochs.
fn validate_new_remote_segment(
    metadata: &ClusterMetadata,
    segment: &RemoteSegmentMetadata,
    key: SegmentKey,
) -> Result<(), CommandError> {
    let Some(topic) = metadata.topic_by_id(key.topic_id) else {
        return Err(invalid_segment(format!(
            "{key}: no topic has id {}",
            key.topic_id
        )));
    };
    if topic.partition(key.partition).is_none() {
        return Err(invalid_segment(format!(
            "{key}: topic '{}' has no partition {}",
            topic.name, key.partition
        )));
    }
    if key.segment_id.is_nil() {
        return Err(invalid_segment(format!(
            "{key}: segment id is the nil uuid"
        )));
    }
    if segment.state != RemoteSegmentState::CopyStarted {
        return Err(invalid_segment(format!(
            "{key}: a new segment must be in state CopyStarted, not {:?}",
            segment.state
        )));
    }
    if segment.base_offset < 0
        || segment.end_offset < segment.base_offset
        || segment.end_offset == i64::MAX
    {
        return Err(invalid_segment(format!(
            "{key}: invalid offsets [{}, {}]",
            segment.base_offset, segment.end_offset
        )));
    }
    if segment.leader_epoch < 0 {
        return Err(invalid_segment(format!(
            "{key}: negative leader epoch {}",
            segment.leader_epoch
        )));
    }
    if segment.broker_id < 0 {
        return Err(invalid_segment(format!(
            "{key}: negative broker id {}",
            segment.broker_id
        )));
    }
    let mut previous_start: Option<i64> = None;
    for (&epoch, &start_offset) in &segment.segment_leader_epochs {
        if epoch < 0 || !segment.contains_offset(start_offset) {
            return Err(invalid_segment(format!(
                "{key}: leader epoch {epoch} starting at offset {start_offset} is not a \
                 non-negative epoch within [{}, {}]",
                segment.base_offset, segment.end_offset
            )));
        }
        if previous_start.is_some_and(|previous| previous >= start_offset) {
            return Err(invalid_segment(format!(
                "{key}: leader epoch {epoch} starts at offset {start_offset}, \
                 not after the previous epoch"
            )));
        }
        previous_start = Some(start_offset);
    }
    Ok(())
}

/// The stored segment `key`, or an error naming it.
fn stored_segment(
    metadata: &mut ClusterMetadata,
    key: SegmentKey,
) -> Result<&mut RemoteSegmentMetadata, CommandError> {
    metadata
        .remote_segments
        .get_mut(&(key.topic_id, key.partition))
        .and_then(|segments| segments.get_mut(&key.segment_id))
        .ok_or_else(|| invalid_segment(format!("{key} does not exist")))
}

fn wrong_state(key: SegmentKey, state: RemoteSegmentState, change: &str) -> CommandError {
    invalid_segment(format!("{key} is {state:?}, cannot {change}"))
}

fn finish_remote_segment_copy(
    metadata: &mut ClusterMetadata,
    key: SegmentKey,
    event_timestamp_ms: i64,
) -> CommandResult {
    let segment = stored_segment(metadata, key)?;
    if segment.state != RemoteSegmentState::CopyStarted {
        return Err(wrong_state(key, segment.state, "finish its copy"));
    }
    let candidate = segment.clone();
    // The first finished copy of an offset wins: a copy must extend the remote log past
    // its current end. It may overlap the end (a new leader's segment boundaries differ
    // from the old leader's; committed offsets are identical on every replica), but a
    // copy adding nothing, such as a duplicate upload after a crash, is refused.
    let remote_end = metadata
        .remote_segments
        .get(&(key.topic_id, key.partition))
        .into_iter()
        .flat_map(BTreeMap::values)
        .filter(|other| {
            other.state == RemoteSegmentState::CopyFinished && other.segment_id != key.segment_id
        })
        .map(RemoteSegmentMetadata::next_offset)
        .max();
    if let Some(remote_end) = remote_end
        && candidate.next_offset() <= remote_end
    {
        return Err(invalid_segment(format!(
            "{key} with offsets [{}, {}] adds nothing to the copied remote log, which ends before offset {remote_end}",
            candidate.base_offset, candidate.end_offset
        )));
    }
    let segment = stored_segment(metadata, key)?;
    segment.state = RemoteSegmentState::CopyFinished;
    segment.event_timestamp_ms = event_timestamp_ms;
    Ok(CommandOutput::RemoteSegment(segment.clone()))
}

fn begin_remote_segment_delete(
    metadata: &mut ClusterMetadata,
    key: SegmentKey,
    event_timestamp_ms: i64,
    expected_state: Option<RemoteSegmentState>,
) -> CommandResult {
    let segment = stored_segment(metadata, key)?;
    if expected_state.is_some_and(|expected| expected != segment.state) {
        return Err(wrong_state(
            key,
            segment.state,
            "start its deletion as expected",
        ));
    }
    match segment.state {
        RemoteSegmentState::CopyStarted | RemoteSegmentState::CopyFinished => {
            segment.state = RemoteSegmentState::DeleteStarted;
            segment.event_timestamp_ms = event_timestamp_ms;
            Ok(CommandOutput::Done)
        }
        state @ (RemoteSegmentState::DeleteStarted | RemoteSegmentState::DeleteFinished) => {
            Err(wrong_state(key, state, "start its deletion"))
        }
    }
}

/// The swap of a compacted remote copy: `key` (`CopyStarted`) becomes readable and the
/// `replaced` segments (`CopyFinished`) stop being readable, in one step. The cleaned
/// copy must end where the last replaced segment ends (so the remote log end offset does
/// not move) and start within the replaced range.
fn replace_remote_segments(
    metadata: &mut ClusterMetadata,
    key: SegmentKey,
    replaced: &[uuid::Uuid],
    event_timestamp_ms: i64,
) -> CommandResult {
    let candidate = stored_segment(metadata, key)?.clone();
    if candidate.state != RemoteSegmentState::CopyStarted {
        return Err(wrong_state(key, candidate.state, "replace other segments"));
    }
    if replaced.is_empty() || replaced.contains(&key.segment_id) {
        return Err(invalid_segment(format!(
            "{key} must replace at least one segment other than itself"
        )));
    }
    let mut replaced_range: Option<(i64, i64)> = None;
    for id in replaced {
        let old_key = SegmentKey {
            segment_id: *id,
            ..key
        };
        let old = stored_segment(metadata, old_key)?;
        if old.state != RemoteSegmentState::CopyFinished {
            return Err(wrong_state(old_key, old.state, "be replaced"));
        }
        let (base, end) = replaced_range.unwrap_or((old.base_offset, old.end_offset));
        replaced_range = Some((base.min(old.base_offset), end.max(old.end_offset)));
    }
    let Some((replaced_base, replaced_end)) = replaced_range else {
        return Err(invalid_segment(format!("{key} replaces nothing")));
    };
    if candidate.end_offset != replaced_end
        || candidate.base_offset < replaced_base
        || candidate.base_offset > candidate.end_offset
    {
        return Err(invalid_segment(format!(
            "{key} with offsets [{}, {}] cannot replace segments covering [{replaced_base}, {replaced_end}]: \
             it must end at {replaced_end} and start within the range",
            candidate.base_offset, candidate.end_offset
        )));
    }
    for id in replaced {
        let old = stored_segment(
            metadata,
            SegmentKey {
                segment_id: *id,
                ..key
            },
        )?;
        old.state = RemoteSegmentState::DeleteStarted;
        old.event_timestamp_ms = event_timestamp_ms;
    }
    let segment = stored_segment(metadata, key)?;
    segment.state = RemoteSegmentState::CopyFinished;
    segment.event_timestamp_ms = event_timestamp_ms;
    Ok(CommandOutput::RemoteSegment(segment.clone()))
}

fn finish_remote_segment_delete(metadata: &mut ClusterMetadata, key: SegmentKey) -> CommandResult {
    let state = stored_segment(metadata, key)?.state;
    if state != RemoteSegmentState::DeleteStarted {
        return Err(wrong_state(key, state, "finish its deletion"));
    }
    let partition_key = (key.topic_id, key.partition);
    if let Some(segments) = metadata.remote_segments.get_mut(&partition_key) {
        let _removed = segments.remove(&key.segment_id);
        if segments.is_empty() {
            let _empty = metadata.remote_segments.remove(&partition_key);
        }
    }
    Ok(CommandOutput::Done)
}

/// Checks the resulting partition count and the number of partitions added at once.
fn validate_partition_growth(new_total: i32, added: i32) -> Result<(), CommandError> {
    if new_total < 1 {
        return Err(CommandError::InvalidPartitions(format!(
            "number of partitions must be at least 1, got {new_total}"
        )));
    }
    if added > MAX_PARTITIONS_PER_COMMAND {
        return Err(CommandError::InvalidPartitions(format!(
            "cannot create {added} partitions at once, the limit is {MAX_PARTITIONS_PER_COMMAND}"
        )));
    }
    Ok(())
}

fn validate_config_keys<'a>(keys: impl Iterator<Item = &'a String>) -> Result<(), CommandError> {
    for key in keys {
        if key.trim().is_empty() {
            return Err(CommandError::InvalidConfig(
                "config name is empty".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Builds assignments for partitions `first_partition..first_partition + count` on the
/// unfenced brokers: leader = first replica, ISR = all replicas, epochs 0.
fn place_partitions(
    metadata: &ClusterMetadata,
    first_partition: i32,
    count: i32,
    replication_factor: usize,
) -> Result<Vec<PartitionAssignment>, CommandError> {
    let brokers: Vec<&BrokerRegistration> = metadata.unfenced_brokers().collect();
    if replication_factor > brokers.len() {
        return Err(CommandError::InvalidReplicationFactor(format!(
            "replication factor {replication_factor} is larger than the {} available broker(s)",
            brokers.len()
        )));
    }
    let partition_count = usize::try_from(count).unwrap_or(0);
    let replica_lists = assign_replicas(
        &brokers,
        &leader_counts(metadata),
        partition_count,
        replication_factor,
    );
    let assignments = (first_partition..)
        .zip(replica_lists)
        .map(|(partition, replicas)| PartitionAssignment {
            partition,
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        })
        .collect();
    Ok(assignments)
}

fn leader_counts(metadata: &ClusterMetadata) -> BTreeMap<BrokerId, usize> {
    let mut counts = BTreeMap::new();
    for topic in metadata.topics.values() {
        for partition in &topic.partitions {
            if partition.leader >= 0 {
                *counts.entry(partition.leader).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn partition_count(topic: &TopicMetadata) -> i32 {
    i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(broker_id: BrokerId) -> BrokerRegistration {
        BrokerRegistration {
            broker_id,
            incarnation_id: uuid::Uuid::from_u128(100 + u128::from(broker_id.unsigned_abs())),
            host: format!("broker-{broker_id}"),
            port: 9092,
            rack: None,
            fenced: false,
        }
    }

    fn cluster_with_brokers(ids: &[BrokerId]) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for &id in ids {
            apply(&mut metadata, Command::RegisterBroker(broker(id))).unwrap();
        }
        metadata
    }

    fn create(name: &str, partitions: i32, replication_factor: i16) -> Command {
        Command::CreateTopic(NewTopic {
            name: name.to_owned(),
            topic_id: TopicId(uuid::Uuid::from_u128(
                name.bytes().fold(17u128, |hash, byte| {
                    hash.wrapping_mul(31) + u128::from(byte)
                }),
            )),
            num_partitions: partitions,
            replication_factor,
            configs: BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
            internal: false,
        })
    }

    fn topic_of(result: CommandResult) -> TopicMetadata {
        match result {
            Ok(CommandOutput::Topic(topic)) => topic,
            other => panic!("expected a topic, got {other:?}"),
        }
    }

    #[test]
    fn create_topic_places_replicas_with_fresh_epochs() {
        let mut metadata = cluster_with_brokers(&[1, 2, 3]);
        let topic = topic_of(apply(&mut metadata, create("orders", 3, 2)));
        assert_eq!(topic.partitions.len(), 3);
        for (index, partition) in topic.partitions.iter().enumerate() {
            assert_eq!(partition.partition, index as i32);
            assert_eq!(partition.replicas.len(), 2);
            assert_eq!(partition.isr, partition.replicas);
            assert_eq!(partition.leader, partition.replicas[0]);
            assert_eq!((partition.leader_epoch, partition.partition_epoch), (0, 0));
        }
        assert_eq!(topic.configs["retention.ms"], "1000");
        assert_eq!(metadata.topic("orders"), Some(&topic));
        assert_eq!(metadata.topic_by_id(topic.topic_id), Some(&topic));
    }

    #[test]
    fn create_existing_topic_is_rejected_without_change() {
        let mut metadata = cluster_with_brokers(&[1]);
        let _ = topic_of(apply(&mut metadata, create("orders", 1, 1)));
        let before = metadata.clone();
        let result = apply(&mut metadata, create("orders", 4, 1));
        assert_eq!(
            result,
            Err(CommandError::TopicAlreadyExists("orders".to_owned()))
        );
        assert_eq!(metadata, before);
    }

    #[test]
    fn create_topic_rejects_bad_names_partitions_and_replication() {
        let mut metadata = cluster_with_brokers(&[1, 2]);
        for bad_name in ["", ".", "..", "has space", "slash/name", &"x".repeat(250)] {
            let result = apply(&mut metadata, create(bad_name, 1, 1));
            assert!(
                matches!(result, Err(CommandError::InvalidTopic(_))),
                "{bad_name:?}: {result:?}"
            );
        }
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(validate_topic_name("a.b_c-D9").is_ok());

        let result = apply(&mut metadata, create("t", 0, 1));
        assert!(
            matches!(result, Err(CommandError::InvalidPartitions(_))),
            "{result:?}"
        );
        let result = apply(
            &mut metadata,
            create("t", MAX_PARTITIONS_PER_COMMAND + 1, 1),
        );
        assert!(
            matches!(result, Err(CommandError::InvalidPartitions(_))),
            "{result:?}"
        );
        let result = apply(&mut metadata, create("t", 1, 0));
        assert!(
            matches!(result, Err(CommandError::InvalidReplicationFactor(_))),
            "{result:?}"
        );
        let result = apply(&mut metadata, create("t", 1, 3));
        assert!(
            matches!(result, Err(CommandError::InvalidReplicationFactor(_))),
            "{result:?}"
        );
        assert!(metadata.topics.is_empty());
    }

    #[test]
    fn fenced_brokers_get_no_replicas() {
        let mut metadata = cluster_with_brokers(&[1, 2]);
        let mut fenced = broker(3);
        fenced.fenced = true;
        apply(&mut metadata, Command::RegisterBroker(fenced)).unwrap();
        let result = apply(&mut metadata, create("t", 1, 3));
        assert!(
            matches!(result, Err(CommandError::InvalidReplicationFactor(_))),
            "{result:?}"
        );
        let topic = topic_of(apply(&mut metadata, create("t", 6, 2)));
        assert!(topic.partitions.iter().all(|p| !p.replicas.contains(&3)));
    }

    #[test]
    fn topic_ids_must_be_unique_and_not_nil() {
        let mut metadata = cluster_with_brokers(&[1]);
        let topic = topic_of(apply(&mut metadata, create("a", 1, 1)));
        let mut reuse = create("b", 1, 1);
        if let Command::CreateTopic(new_topic) = &mut reuse {
            new_topic.topic_id = topic.topic_id;
        }
        assert!(matches!(
            apply(&mut metadata, reuse),
            Err(CommandError::InvalidTopic(_))
        ));
        let mut nil = create("c", 1, 1);
        if let Command::CreateTopic(new_topic) = &mut nil {
            new_topic.topic_id = TopicId(uuid::Uuid::nil());
        }
        assert!(matches!(
            apply(&mut metadata, nil),
            Err(CommandError::InvalidTopic(_))
        ));
    }

    #[test]
    fn delete_topic_returns_its_id_and_unknown_topic_fails() {
        let mut metadata = cluster_with_brokers(&[1]);
        let topic = topic_of(apply(&mut metadata, create("gone", 2, 1)));
        let deleted = apply(
            &mut metadata,
            Command::DeleteTopic {
                name: "gone".to_owned(),
            },
        );
        assert_eq!(deleted, Ok(CommandOutput::TopicDeleted(topic.topic_id)));
        assert!(metadata.topic("gone").is_none());
        let again = apply(
            &mut metadata,
            Command::DeleteTopic {
                name: "gone".to_owned(),
            },
        );
        assert_eq!(again, Err(CommandError::UnknownTopic("gone".to_owned())));
    }

    #[test]
    fn create_partitions_only_grows_and_keeps_replication_factor() {
        let mut metadata = cluster_with_brokers(&[1, 2, 3]);
        let _ = topic_of(apply(&mut metadata, create("grow", 2, 2)));
        let grown = topic_of(apply(
            &mut metadata,
            Command::CreatePartitions {
                name: "grow".to_owned(),
                new_total: 5,
            },
        ));
        assert_eq!(grown.partitions.len(), 5);
        for (index, partition) in grown.partitions.iter().enumerate() {
            assert_eq!(partition.partition, index as i32);
            assert_eq!(partition.replicas.len(), 2);
        }
        for new_total in [5, 3] {
            let result = apply(
                &mut metadata,
                Command::CreatePartitions {
                    name: "grow".to_owned(),
                    new_total,
                },
            );
            assert!(
                matches!(result, Err(CommandError::InvalidPartitions(_))),
                "{result:?}"
            );
        }
        let unknown = apply(
            &mut metadata,
            Command::CreatePartitions {
                name: "nope".to_owned(),
                new_total: 3,
            },
        );
        assert_eq!(unknown, Err(CommandError::UnknownTopic("nope".to_owned())));
    }

    #[test]
    fn alter_configs_sets_and_deletes_overrides() {
        let mut metadata = cluster_with_brokers(&[1]);
        let _ = topic_of(apply(&mut metadata, create("cfg", 1, 1)));
        let altered = topic_of(apply(
            &mut metadata,
            Command::AlterTopicConfigs {
                name: "cfg".to_owned(),
                set: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
                delete: vec!["retention.ms".to_owned(), "never.set".to_owned()],
            },
        ));
        assert_eq!(
            altered.configs,
            BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())])
        );

        let before = metadata.clone();
        let empty_key = apply(
            &mut metadata,
            Command::AlterTopicConfigs {
                name: "cfg".to_owned(),
                set: BTreeMap::from([(String::new(), "x".to_owned())]),
                delete: Vec::new(),
            },
        );
        assert!(
            matches!(empty_key, Err(CommandError::InvalidConfig(_))),
            "{empty_key:?}"
        );
        let both = apply(
            &mut metadata,
            Command::AlterTopicConfigs {
                name: "cfg".to_owned(),
                set: BTreeMap::from([("a".to_owned(), "1".to_owned())]),
                delete: vec!["a".to_owned()],
            },
        );
        assert!(
            matches!(both, Err(CommandError::InvalidConfig(_))),
            "{both:?}"
        );
        assert_eq!(metadata, before);

        let unknown = apply(
            &mut metadata,
            Command::AlterTopicConfigs {
                name: "x".to_owned(),
                set: BTreeMap::new(),
                delete: Vec::new(),
            },
        );
        assert_eq!(unknown, Err(CommandError::UnknownTopic("x".to_owned())));
    }

    #[test]
    fn producer_id_blocks_are_consecutive_and_bounded() {
        let mut metadata = ClusterMetadata::default();
        let first = apply(&mut metadata, Command::AllocateProducerIds { count: 1000 });
        assert_eq!(
            first,
            Ok(CommandOutput::ProducerIdBlock {
                first_producer_id: 0
            })
        );
        let second = apply(&mut metadata, Command::AllocateProducerIds { count: 10 });
        assert_eq!(
            second,
            Ok(CommandOutput::ProducerIdBlock {
                first_producer_id: 1000
            })
        );
        assert_eq!(metadata.next_producer_id, 1010);
        let zero = apply(&mut metadata, Command::AllocateProducerIds { count: 0 });
        assert!(matches!(zero, Err(CommandError::InvalidConfig(_))));
        let overflow = apply(
            &mut metadata,
            Command::AllocateProducerIds { count: i64::MAX },
        );
        assert!(matches!(overflow, Err(CommandError::InvalidConfig(_))));
        assert_eq!(metadata.next_producer_id, 1010);
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut metadata = ClusterMetadata::default();
        let set = apply(
            &mut metadata,
            Command::SetClusterId {
                cluster_id: "first".to_owned(),
            },
        );
        assert_eq!(set, Ok(CommandOutput::ClusterId("first".to_owned())));
        let again = apply(
            &mut metadata,
            Command::SetClusterId {
                cluster_id: "second".to_owned(),
            },
        );
        assert_eq!(again, Ok(CommandOutput::ClusterId("first".to_owned())));
    }

    #[test]
    fn re_registration_with_a_new_incarnation_fences_the_broker() {
        let mut metadata = cluster_with_brokers(&[1, 2]);
        let topic = topic_of(apply(&mut metadata, create("t", 2, 2)));
        let led_by_1 = topic
            .partitions
            .iter()
            .find(|partition| partition.leader == 1)
            .unwrap()
            .partition;
        metadata.metadata_offset = 42;
        let same = broker(1);
        apply(&mut metadata, Command::RegisterBroker(same.clone())).unwrap();
        assert_eq!(
            metadata.broker(1),
            Some(&same),
            "same incarnation is a no-op"
        );
        assert_eq!(metadata.broker_epochs[&1], 0);

        let mut restarted = broker(1);
        restarted.incarnation_id = uuid::Uuid::from_u128(999);
        restarted.port = 9093;
        apply(&mut metadata, Command::RegisterBroker(restarted.clone())).unwrap();
        let stored = metadata.broker(1).unwrap();
        assert!(stored.fenced);
        assert_eq!(
            (stored.port, stored.incarnation_id),
            (9093, restarted.incarnation_id)
        );
        assert_eq!(metadata.broker_epochs[&1], 42);
        let partition = &metadata.topic("t").unwrap().partitions[led_by_1 as usize];
        assert_eq!(partition.leader, 2);
        assert_eq!(partition.isr, vec![2]);
        assert_eq!((partition.leader_epoch, partition.partition_epoch), (1, 1));

        let negative = apply(&mut metadata, Command::RegisterBroker(broker(-1)));
        assert!(matches!(negative, Err(CommandError::InvalidConfig(_))));
    }

    #[test]
    fn leaders_balance_across_topics() {
        let mut metadata = cluster_with_brokers(&[1, 2, 3]);
        for name in ["a", "b", "c"] {
            let _ = topic_of(apply(&mut metadata, create(name, 1, 1)));
        }
        let mut leaders: Vec<BrokerId> = metadata
            .topics
            .values()
            .map(|topic| topic.partitions[0].leader)
            .collect();
        leaders.sort();
        assert_eq!(leaders, vec![1, 2, 3]);
    }

    fn segment_id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(0x5e6 << 64 | n)
    }

    fn segment(topic_id: TopicId, id: u128, base: i64, end: i64) -> RemoteSegmentMetadata {
        RemoteSegmentMetadata {
            topic_id,
            partition: 0,
            segment_id: segment_id(id),
            base_offset: base,
            end_offset: end,
            max_timestamp_ms: 1_700_000_000_000,
            size_bytes: 4096,
            leader_epoch: 0,
            state: RemoteSegmentState::CopyStarted,
            broker_id: 1,
            event_timestamp_ms: 1_700_000_000_001,
            segment_leader_epochs: BTreeMap::from([(0, base)]),
            compacted: false,
        }
    }

    fn tiered_cluster() -> (ClusterMetadata, TopicId) {
        let mut metadata = cluster_with_brokers(&[1]);
        let topic = topic_of(apply(&mut metadata, create("tiered", 2, 1)));
        (metadata, topic.topic_id)
    }

    fn finish_copy(topic_id: TopicId, id: u128) -> Command {
        Command::FinishRemoteSegmentCopy {
            topic_id,
            partition: 0,
            segment_id: segment_id(id),
            event_timestamp_ms: 2_000,
        }
    }

    fn begin_delete(topic_id: TopicId, id: u128) -> Command {
        Command::BeginRemoteSegmentDelete {
            topic_id,
            partition: 0,
            segment_id: segment_id(id),
            event_timestamp_ms: 3_000,
            expected_state: None,
        }
    }

    fn finish_delete(topic_id: TopicId, id: u128) -> Command {
        Command::FinishRemoteSegmentDelete {
            topic_id,
            partition: 0,
            segment_id: segment_id(id),
        }
    }

    fn assert_refused(metadata: &mut ClusterMetadata, command: Command) {
        let before = metadata.clone();
        let result = apply(metadata, command);
        assert!(
            matches!(result, Err(CommandError::InvalidRemoteSegment(_))),
            "{result:?}"
        );
        assert_eq!(*metadata, before, "a refused command changed the metadata");
    }

    fn state_of(metadata: &ClusterMetadata, topic_id: TopicId, id: u128) -> RemoteSegmentState {
        metadata
            .remote_segment(topic_id, 0, segment_id(id))
            .map(|segment| segment.state)
            .unwrap()
    }

    fn replace(topic_id: TopicId, id: u128, replaced: &[u128]) -> Command {
        Command::ReplaceRemoteSegments {
            topic_id,
            partition: 0,
            segment_id: segment_id(id),
            replaced: replaced.iter().map(|old| segment_id(*old)).collect(),
            event_timestamp_ms: 4_000,
        }
    }

    #[test]
    fn a_compacted_copy_replaces_its_segments_in_one_step() {
        let (mut metadata, topic_id) = tiered_cluster();
        for (id, base, end) in [(1, 0, 99), (2, 100, 199), (3, 200, 299)] {
            let _begun = apply(
                &mut metadata,
                Command::BeginRemoteSegmentCopy(segment(topic_id, id, base, end)),
            );
            let _finished = apply(&mut metadata, finish_copy(topic_id, id));
        }
        let cleaned = RemoteSegmentMetadata {
            compacted: true,
            ..segment(topic_id, 10, 0, 199)
        };
        assert_eq!(
            apply(&mut metadata, Command::BeginRemoteSegmentCopy(cleaned)),
            Ok(CommandOutput::Done)
        );
        // Not readable before the swap: offsets 0..199 still come from 1 and 2.
        assert_eq!(
            metadata
                .remote_segment_for_offset(topic_id, 0, 150)
                .map(|segment| segment.segment_id),
            Some(segment_id(2))
        );
        // The copy must end where the replaced segments end, and replace only readable ones.
        assert_refused(&mut metadata, replace(topic_id, 10, &[1]));
        assert_refused(&mut metadata, replace(topic_id, 10, &[1, 2, 3]));
        assert_refused(&mut metadata, replace(topic_id, 10, &[]));
        assert_refused(&mut metadata, replace(topic_id, 10, &[10]));
        assert_refused(&mut metadata, replace(topic_id, 10, &[1, 2, 99]));

        let swapped = match apply(&mut metadata, replace(topic_id, 10, &[1, 2])) {
            Ok(CommandOutput::RemoteSegment(segment)) => segment,
            other => panic!("expected the new segment, got {other:?}"),
        };
        assert_eq!(swapped.state, RemoteSegmentState::CopyFinished);
        assert!(swapped.compacted);
        for old in [1, 2] {
            assert_eq!(
                metadata
                    .remote_segment(topic_id, 0, segment_id(old))
                    .map(|segment| segment.state),
                Some(RemoteSegmentState::DeleteStarted)
            );
        }
        let readable: Vec<_> = metadata
            .copied_remote_segments(topic_id, 0)
            .map(|segment| (segment.segment_id, segment.base_offset, segment.end_offset))
            .collect();
        assert_eq!(
            readable,
            vec![(segment_id(10), 0, 199), (segment_id(3), 200, 299)]
        );
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(300));
        // The cleanup of an abandoned upload expects CopyStarted: a copy committed
        // since it looked is not deleted.
        assert_refused(
            &mut metadata,
            Command::BeginRemoteSegmentDelete {
                topic_id,
                partition: 0,
                segment_id: segment_id(10),
                event_timestamp_ms: 5_000,
                expected_state: Some(RemoteSegmentState::CopyStarted),
            },
        );
        // A second swap over segments already replaced is refused.
        let _begun = apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 11, 0, 199)),
        );
        assert_refused(&mut metadata, replace(topic_id, 11, &[1, 2]));
    }

    #[test]
    fn remote_segment_walks_through_every_state() {
        let (mut metadata, topic_id) = tiered_cluster();
        let new = segment(topic_id, 1, 0, 99);
        assert_eq!(
            apply(&mut metadata, Command::BeginRemoteSegmentCopy(new.clone())),
            Ok(CommandOutput::Done)
        );
        assert_eq!(
            metadata.remote_segment(topic_id, 0, segment_id(1)),
            Some(&new)
        );
        assert_eq!(metadata.remote_segments(topic_id, 0).count(), 1);
        assert_eq!(metadata.copied_remote_segments(topic_id, 0).count(), 0);
        assert_eq!(metadata.remote_log_start_offset(topic_id, 0), None);
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), None);
        assert_eq!(
            metadata.remote_partitions().collect::<Vec<_>>(),
            vec![(topic_id, 0)]
        );

        let finished = match apply(&mut metadata, finish_copy(topic_id, 1)) {
            Ok(CommandOutput::RemoteSegment(segment)) => segment,
            other => panic!("expected the finished segment, got {other:?}"),
        };
        assert_eq!(finished.state, RemoteSegmentState::CopyFinished);
        assert_eq!(finished.event_timestamp_ms, 2_000);
        assert_eq!(
            RemoteSegmentMetadata {
                state: RemoteSegmentState::CopyStarted,
                event_timestamp_ms: new.event_timestamp_ms,
                ..finished.clone()
            },
            new
        );
        assert_eq!(
            metadata.remote_segment(topic_id, 0, segment_id(1)),
            Some(&finished)
        );
        assert_eq!(metadata.copied_remote_segments(topic_id, 0).count(), 1);
        assert_eq!(metadata.remote_log_start_offset(topic_id, 0), Some(0));
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(100));
        assert_eq!(
            metadata.remote_segment_for_offset(topic_id, 0, 99),
            Some(&finished)
        );
        assert_eq!(metadata.remote_segment_for_offset(topic_id, 0, 100), None);

        assert_eq!(
            apply(&mut metadata, begin_delete(topic_id, 1)),
            Ok(CommandOutput::Done)
        );
        assert_eq!(
            state_of(&metadata, topic_id, 1),
            RemoteSegmentState::DeleteStarted
        );
        let deleting = metadata.remote_segment(topic_id, 0, segment_id(1)).unwrap();
        assert_eq!(deleting.event_timestamp_ms, 3_000);
        assert_eq!(metadata.copied_remote_segments(topic_id, 0).count(), 0);
        assert_eq!(metadata.remote_segment_for_offset(topic_id, 0, 50), None);
        assert_eq!(metadata.remote_log_start_offset(topic_id, 0), None);
        assert_eq!(metadata.remote_segments(topic_id, 0).count(), 1);

        assert_eq!(
            apply(&mut metadata, finish_delete(topic_id, 1)),
            Ok(CommandOutput::Done)
        );
        assert!(
            metadata
                .remote_segment(topic_id, 0, segment_id(1))
                .is_none()
        );
        assert!(metadata.remote_segments.is_empty());
        assert_eq!(metadata.remote_partitions().count(), 0);
    }

    #[test]
    fn abandoned_upload_can_be_deleted_without_finishing() {
        let (mut metadata, topic_id) = tiered_cluster();
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 0, 9)),
        )
        .unwrap();
        apply(&mut metadata, begin_delete(topic_id, 1)).unwrap();
        assert_eq!(
            state_of(&metadata, topic_id, 1),
            RemoteSegmentState::DeleteStarted
        );
        assert_refused(&mut metadata, finish_copy(topic_id, 1));
        apply(&mut metadata, finish_delete(topic_id, 1)).unwrap();
        assert!(metadata.remote_segments.is_empty());
    }

    #[test]
    fn begin_copy_refuses_unknown_topics_partitions_and_duplicate_ids() {
        let (mut metadata, topic_id) = tiered_cluster();
        let unknown = TopicId(uuid::Uuid::from_u128(404));
        assert_refused(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(unknown, 1, 0, 9)),
        );
        for partition in [-1, 2] {
            let mut bad = segment(topic_id, 1, 0, 9);
            bad.partition = partition;
            assert_refused(&mut metadata, Command::BeginRemoteSegmentCopy(bad));
        }
        let mut nil = segment(topic_id, 1, 0, 9);
        nil.segment_id = uuid::Uuid::nil();
        assert_refused(&mut metadata, Command::BeginRemoteSegmentCopy(nil));

        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 0, 9)),
        )
        .unwrap();
        assert_refused(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 10, 19)),
        );
        apply(&mut metadata, finish_copy(topic_id, 1)).unwrap();
        assert_refused(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 10, 19)),
        );
        // The same segment id in another partition is another segment.
        let mut other_partition = segment(topic_id, 1, 0, 9);
        other_partition.partition = 1;
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(other_partition),
        )
        .unwrap();
        assert_eq!(
            metadata.remote_partitions().collect::<Vec<_>>(),
            vec![(topic_id, 0), (topic_id, 1)]
        );
    }

    #[test]
    fn begin_copy_refuses_bad_offsets_epochs_and_states() {
        let (mut metadata, topic_id) = tiered_cluster();
        let mut cases = vec![
            segment(topic_id, 1, 10, 9),
            segment(topic_id, 1, -1, 9),
            segment(topic_id, 1, 0, i64::MAX),
        ];
        let mut negative_epoch = segment(topic_id, 1, 0, 9);
        negative_epoch.leader_epoch = -1;
        cases.push(negative_epoch);
        let mut negative_broker = segment(topic_id, 1, 0, 9);
        negative_broker.broker_id = -1;
        cases.push(negative_broker);
        let mut epoch_outside = segment(topic_id, 1, 10, 19);
        epoch_outside.segment_leader_epochs = BTreeMap::from([(0, 5)]);
        cases.push(epoch_outside);
        let mut epoch_after_end = segment(topic_id, 1, 10, 19);
        epoch_after_end.segment_leader_epochs = BTreeMap::from([(0, 10), (1, 20)]);
        cases.push(epoch_after_end);
        let mut epochs_not_increasing = segment(topic_id, 1, 10, 19);
        epochs_not_increasing.segment_leader_epochs = BTreeMap::from([(1, 15), (2, 15)]);
        cases.push(epochs_not_increasing);
        let mut negative_leader_epoch_entry = segment(topic_id, 1, 10, 19);
        negative_leader_epoch_entry.segment_leader_epochs = BTreeMap::from([(-1, 10)]);
        cases.push(negative_leader_epoch_entry);
        for state in [
            RemoteSegmentState::CopyFinished,
            RemoteSegmentState::DeleteStarted,
            RemoteSegmentState::DeleteFinished,
        ] {
            let mut not_started = segment(topic_id, 1, 0, 9);
            not_started.state = state;
            cases.push(not_started);
        }
        for bad in cases {
            assert_refused(&mut metadata, Command::BeginRemoteSegmentCopy(bad));
        }
        assert!(metadata.remote_segments.is_empty());

        let mut epochs = segment(topic_id, 1, 10, 19);
        epochs.segment_leader_epochs = BTreeMap::from([(3, 10), (5, 12), (6, 19)]);
        apply(&mut metadata, Command::BeginRemoteSegmentCopy(epochs)).unwrap();
        let mut single_offset = segment(topic_id, 2, 20, 20);
        single_offset.segment_leader_epochs = BTreeMap::new();
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(single_offset),
        )
        .unwrap();
    }

    #[test]
    fn transitions_from_the_wrong_state_are_refused() {
        let (mut metadata, topic_id) = tiered_cluster();
        for command in [
            finish_copy(topic_id, 1),
            begin_delete(topic_id, 1),
            finish_delete(topic_id, 1),
        ] {
            assert_refused(&mut metadata, command);
        }
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 0, 9)),
        )
        .unwrap();
        // CopyStarted: cannot finish a delete that never started.
        assert_refused(&mut metadata, finish_delete(topic_id, 1));
        apply(&mut metadata, finish_copy(topic_id, 1)).unwrap();
        // CopyFinished: no second finish, no delete without its start.
        assert_refused(&mut metadata, finish_copy(topic_id, 1));
        assert_refused(&mut metadata, finish_delete(topic_id, 1));
        apply(&mut metadata, begin_delete(topic_id, 1)).unwrap();
        // DeleteStarted: never readable again, no second start.
        assert_refused(&mut metadata, finish_copy(topic_id, 1));
        assert_refused(&mut metadata, begin_delete(topic_id, 1));
        apply(&mut metadata, finish_delete(topic_id, 1)).unwrap();
        // Gone.
        assert_refused(&mut metadata, finish_delete(topic_id, 1));
        assert_refused(&mut metadata, begin_delete(topic_id, 1));
    }

    #[test]
    fn first_finished_copy_wins_over_overlapping_uploads() {
        let (mut metadata, topic_id) = tiered_cluster();
        for (id, base, end) in [
            (1, 0, 99),
            (2, 0, 99),
            (3, 50, 149),
            (4, 99, 99),
            (5, 100, 199),
            (6, 120, 180),
        ] {
            apply(
                &mut metadata,
                Command::BeginRemoteSegmentCopy(segment(topic_id, id, base, end)),
            )
            .unwrap();
        }
        apply(&mut metadata, finish_copy(topic_id, 1)).unwrap();
        // Same range, a single shared offset: nothing new, refused.
        for id in [2, 4] {
            assert_refused(&mut metadata, finish_copy(topic_id, id));
            assert_eq!(
                state_of(&metadata, topic_id, id),
                RemoteSegmentState::CopyStarted
            );
        }
        // A segment of a new leader straddling the remote end extends it.
        apply(&mut metadata, finish_copy(topic_id, 3)).unwrap();
        apply(&mut metadata, finish_copy(topic_id, 5)).unwrap();
        // Ends inside what is copied: refused.
        assert_refused(&mut metadata, finish_copy(topic_id, 6));
        let copied: Vec<i64> = metadata
            .copied_remote_segments(topic_id, 0)
            .map(|segment| segment.base_offset)
            .collect();
        assert_eq!(copied, vec![0, 50, 100]);
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(200));
        let all: Vec<(i64, uuid::Uuid)> = metadata
            .remote_segments(topic_id, 0)
            .map(|segment| (segment.base_offset, segment.segment_id))
            .collect();
        assert_eq!(
            all,
            vec![
                (0, segment_id(1)),
                (0, segment_id(2)),
                (50, segment_id(3)),
                (99, segment_id(4)),
                (100, segment_id(5)),
                (120, segment_id(6)),
            ]
        );
        assert_eq!(metadata.remote_log_start_offset(topic_id, 0), Some(0));
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(200));
        assert_eq!(
            metadata
                .remote_segment_for_offset(topic_id, 0, 150)
                .map(|segment| segment.segment_id),
            Some(segment_id(5))
        );

        // Retention deleting the oldest copy does not let a duplicate of it back in.
        apply(&mut metadata, begin_delete(topic_id, 1)).unwrap();
        assert_refused(&mut metadata, finish_copy(topic_id, 2));
        assert_eq!(metadata.remote_log_start_offset(topic_id, 0), Some(50));
        // Other partitions never conflict.
        let mut other = segment(topic_id, 6, 0, 99);
        other.partition = 1;
        apply(&mut metadata, Command::BeginRemoteSegmentCopy(other)).unwrap();
        apply(
            &mut metadata,
            Command::FinishRemoteSegmentCopy {
                topic_id,
                partition: 1,
                segment_id: segment_id(6),
                event_timestamp_ms: 0,
            },
        )
        .unwrap();
        assert_eq!(metadata.remote_log_end_offset(topic_id, 1), Some(100));
    }

    #[test]
    fn deleting_a_topic_keeps_its_remote_segments() {
        let (mut metadata, topic_id) = tiered_cluster();
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 0, 9)),
        )
        .unwrap();
        apply(&mut metadata, finish_copy(topic_id, 1)).unwrap();
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 2, 10, 19)),
        )
        .unwrap();
        let deleted = apply(
            &mut metadata,
            Command::DeleteTopic {
                name: "tiered".to_owned(),
            },
        );
        assert_eq!(deleted, Ok(CommandOutput::TopicDeleted(topic_id)));
        assert_eq!(metadata.remote_segments(topic_id, 0).count(), 2);
        let orphans: Vec<(TopicId, i32)> = metadata
            .remote_partitions()
            .filter(|(id, _)| metadata.topic_by_id(*id).is_none())
            .collect();
        assert_eq!(orphans, vec![(topic_id, 0)]);
        // No new uploads for the deleted topic, but its cleanup goes on.
        assert_refused(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 3, 20, 29)),
        );
        for id in [1, 2] {
            apply(&mut metadata, begin_delete(topic_id, id)).unwrap();
            apply(&mut metadata, finish_delete(topic_id, id)).unwrap();
        }
        assert!(metadata.remote_segments.is_empty());
    }

    #[test]
    fn delete_records_raises_the_log_start_offset_and_survives_json() {
        let (mut metadata, topic_id) = tiered_cluster();
        let delete = |offset| Command::DeleteRecords {
            topic_id,
            partition: 0,
            offset,
        };
        assert_eq!(
            apply(&mut metadata, delete(120)).unwrap(),
            CommandOutput::LogStartOffset(120)
        );
        // Never down.
        assert_eq!(
            apply(&mut metadata, delete(50)).unwrap(),
            CommandOutput::LogStartOffset(120)
        );
        let topic = metadata.topic_by_id(topic_id).unwrap();
        assert_eq!(topic.records_deleted_before(0), 120);
        assert_eq!(topic.records_deleted_before(1), 0);
        let decoded: ClusterMetadata =
            serde_json::from_value(serde_json::to_value(&metadata).unwrap()).unwrap();
        assert_eq!(decoded, metadata);
        for refused in [
            Command::DeleteRecords {
                topic_id,
                partition: 99,
                offset: 1,
            },
            delete(-5),
            Command::DeleteRecords {
                topic_id: TopicId(uuid::Uuid::from_u128(0xdead)),
                partition: 0,
                offset: 1,
            },
        ] {
            let before = metadata.clone();
            let result = apply(&mut metadata, refused);
            assert!(
                matches!(
                    result,
                    Err(CommandError::UnknownTopicOrPartition(_) | CommandError::InvalidRequest(_))
                ),
                "{result:?}"
            );
            assert_eq!(metadata, before, "a refused command changed the metadata");
        }
    }

    #[test]
    fn remote_segments_round_trip_through_json() {
        let (mut metadata, topic_id) = tiered_cluster();
        apply(
            &mut metadata,
            Command::BeginRemoteSegmentCopy(segment(topic_id, 1, 0, 9)),
        )
        .unwrap();
        apply(&mut metadata, finish_copy(topic_id, 1)).unwrap();
        let mut second = segment(topic_id, 2, 10, 19);
        second.partition = 1;
        second.segment_leader_epochs = BTreeMap::from([(0, 10), (2, 15)]);
        apply(&mut metadata, Command::BeginRemoteSegmentCopy(second)).unwrap();

        let json = serde_json::to_value(&metadata).unwrap();
        let listed = json["remote_segments"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        let decoded: ClusterMetadata = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(decoded, metadata);

        // Commands carrying segments survive the raft log encoding too.
        let command = Command::BeginRemoteSegmentCopy(segment(topic_id, 3, 20, 29));
        let encoded = serde_json::to_vec(&command).unwrap();
        assert_eq!(
            serde_json::from_slice::<Command>(&encoded).unwrap(),
            command
        );

        // Metadata written before remote segments existed decodes with none.
        let mut old = json.clone();
        let _removed = old.as_object_mut().unwrap().remove("remote_segments");
        let decoded_old: ClusterMetadata = serde_json::from_value(old).unwrap();
        assert!(decoded_old.remote_segments.is_empty());

        let mut duplicated = json;
        let first = duplicated["remote_segments"][0].clone();
        duplicated["remote_segments"]
            .as_array_mut()
            .unwrap()
            .push(first);
        let error = serde_json::from_value::<ClusterMetadata>(duplicated).unwrap_err();
        assert!(error.to_string().contains("listed twice"), "{error}");
    }

    fn restored_topic(name: &str, topic_id: TopicId, cut: i64) -> RestoredTopic {
        let mut first = segment(topic_id, 1, 0, 9);
        first.state = RemoteSegmentState::CopyFinished;
        first.leader_epoch = 4;
        let mut second = segment(topic_id, 2, 10, cut - 1);
        second.state = RemoteSegmentState::CopyFinished;
        RestoredTopic {
            name: name.to_owned(),
            topic_id,
            configs: BTreeMap::from([("remote.storage.enable".to_owned(), "true".to_owned())]),
            internal: false,
            replication_factor: 3,
            partitions: vec![RestoredPartition {
                partition: 0,
                leader_epoch: 4,
                cut_offset: cut,
                segments: vec![first, second],
                records_deleted_before: 0,
            }],
        }
    }

    fn restore(topics: Vec<RestoredTopic>) -> Command {
        Command::RestoreCluster {
            restore_point_id: "rp-1".to_owned(),
            topics,
            next_producer_id: 7_000,
        }
    }

    #[test]
    fn restore_brings_back_topics_segments_epochs_and_producer_ids_once() {
        let mut metadata = cluster_with_brokers(&[1]);
        let topic_id = TopicId(uuid::Uuid::from_u128(77));
        let restored = apply(
            &mut metadata,
            restore(vec![restored_topic("orders", topic_id, 25)]),
        );
        assert_eq!(
            restored,
            Ok(CommandOutput::Restored {
                restore_point_id: "rp-1".to_owned(),
                topics_created: 1
            })
        );
        let topic = metadata.topic("orders").expect("restored topic");
        assert_eq!(topic.topic_id, topic_id);
        assert_eq!(topic.partitions.len(), 1);
        assert_eq!(
            topic.partitions[0].replicas,
            vec![1],
            "as many replicas as brokers"
        );
        assert_eq!(
            topic.partitions[0].leader_epoch, 5,
            "above the restored epoch"
        );
        assert_eq!(metadata.remote_log_start_offset(topic_id, 0), Some(0));
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(25));
        assert_eq!(metadata.next_producer_id, 7_000);
        assert_eq!(metadata.restored_from.as_deref(), Some("rp-1"));

        let again = apply(
            &mut metadata,
            restore(vec![restored_topic("orders", topic_id, 25)]),
        );
        assert_eq!(
            again,
            Ok(CommandOutput::Restored {
                restore_point_id: "rp-1".to_owned(),
                topics_created: 0
            }),
            "the same restore point applies once"
        );
        let other = apply(
            &mut metadata,
            Command::RestoreCluster {
                restore_point_id: "rp-2".to_owned(),
                topics: Vec::new(),
                next_producer_id: 0,
            },
        );
        assert!(matches!(other, Err(CommandError::InvalidRequest(_))));
    }

    #[test]
    fn restore_is_refused_on_a_cluster_with_topics_or_with_segments_past_the_cut() {
        let mut used = cluster_with_brokers(&[1]);
        let _ = topic_of(apply(&mut used, create("mine", 1, 1)));
        let before = used.clone();
        let topic_id = TopicId(uuid::Uuid::from_u128(78));
        let refused = apply(
            &mut used,
            restore(vec![restored_topic("orders", topic_id, 25)]),
        );
        assert!(matches!(refused, Err(CommandError::InvalidRequest(_))));
        assert_eq!(used, before);

        let mut fresh = cluster_with_brokers(&[1]);
        let before = fresh.clone();
        let mut past_cut = restored_topic("orders", topic_id, 25);
        past_cut.partitions[0].cut_offset = 20;
        let refused = apply(&mut fresh, restore(vec![past_cut]));
        assert!(matches!(
            refused,
            Err(CommandError::InvalidRemoteSegment(_))
        ));
        assert_eq!(fresh, before, "a refused restore changes nothing");
    }

    #[test]
    fn following_restore_points_tracks_topics_segments_and_deletions() {
        let mut metadata = cluster_with_brokers(&[1]);
        let topic_id = TopicId(uuid::Uuid::from_u128(90));
        let follow = |id: &str, topics: Vec<RestoredTopic>| Command::FollowRestorePoint {
            restore_point_id: id.to_owned(),
            topics,
        };
        let first = apply(
            &mut metadata,
            follow("rp-1", vec![restored_topic("orders", topic_id, 25)]),
        );
        assert!(matches!(
            first,
            Ok(CommandOutput::Restored {
                topics_created: 1,
                ..
            })
        ));
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(25));

        // A later restore point: more segments, a new config, a second partition.
        let mut later = restored_topic("orders", topic_id, 25);
        let mut third = segment(topic_id, 3, 25, 39);
        third.state = RemoteSegmentState::CopyFinished;
        later.partitions[0].segments.push(third);
        later.partitions[0].segments.remove(0);
        later.partitions[0].cut_offset = 40;
        later
            .configs
            .insert("retention.ms".to_owned(), "1000".to_owned());
        let mut second_partition = later.partitions[0].clone();
        second_partition.partition = 1;
        second_partition.segments.clear();
        second_partition.cut_offset = 0;
        later.partitions.push(second_partition);
        let followed = apply(&mut metadata, follow("rp-2", vec![later]));
        assert!(matches!(
            followed,
            Ok(CommandOutput::Restored {
                topics_created: 0,
                ..
            })
        ));
        let topic = metadata.topic("orders").expect("still there");
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!(
            topic.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            metadata.remote_log_start_offset(topic_id, 0),
            Some(10),
            "old segment gone"
        );
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), Some(40));
        assert_eq!(metadata.restored_from.as_deref(), Some("rp-2"));

        // The source deleted the topic.
        let emptied = apply(&mut metadata, follow("rp-3", Vec::new()));
        assert!(emptied.is_ok());
        assert!(metadata.topic("orders").is_none());
        assert_eq!(metadata.remote_log_end_offset(topic_id, 0), None);
    }
}
