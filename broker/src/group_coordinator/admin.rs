//! Group administration: ListGroups, DescribeGroups and DeleteGroups.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};

use super::group::{Group, GroupState};
use super::records;
use super::{GroupCoordinator, GroupError, OffsetsRecord, now_ms, storage_error_code};
use crate::error::error_code;

/// The group type of every group this coordinator runs (KIP-848 calls them classic).
const CLASSIC_GROUP_TYPE: &str = "classic";

/// Operations on a group an unauthenticated client is allowed (no authorizer): READ (3),
/// DELETE (6) and DESCRIBE (8), as a bit set of Kafka's `AclOperation` codes.
const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

impl GroupCoordinator {
    pub(super) fn list_groups_request(
        &self,
        request: ListGroupsRequest,
        version: i16,
    ) -> ListGroupsResponse {
        if let Some(error) = self.unavailable() {
            return ListGroupsResponse::default().with_error_code(error.code());
        }
        let states: Vec<String> = request
            .states_filter
            .iter()
            .map(|state| state.to_lowercase())
            .collect();
        let types: Vec<String> = request
            .types_filter
            .iter()
            .map(|group_type| group_type.to_lowercase())
            .collect();
        if !types.is_empty()
            && !types
                .iter()
                .any(|group_type| group_type == CLASSIC_GROUP_TYPE)
        {
            return ListGroupsResponse::default();
        }
        let mut listed: Vec<ListedGroup> = self
            .all_groups()
            .into_iter()
            .filter_map(|handle| {
                let group = handle.lock();
                let state = group.state.name();
                let state_matches = states.is_empty()
                    || states.iter().any(|wanted| *wanted == state.to_lowercase());
                if group.is(GroupState::Dead) || !state_matches {
                    return None;
                }
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
                    .with_protocol_type(StrBytes::from_string(
                        group.protocol_type.clone().unwrap_or_default(),
                    ));
                if version >= 4 {
                    listed.group_state = StrBytes::from_static_str(state);
                }
                if version >= 5 {
                    listed.group_type = StrBytes::from_static_str(CLASSIC_GROUP_TYPE);
                }
                Some(listed)
            })
            .collect();
        listed.sort_by(|left, right| left.group_id.0.cmp(&right.group_id.0));
        ListGroupsResponse::default().with_groups(listed)
    }

    pub(super) fn describe_groups_request(
        &self,
        request: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let include_operations = version >= 3 && request.include_authorized_operations;
        let groups = request
            .groups
            .into_iter()
            .map(|group_id| {
                let mut described = self.describe_group(group_id, version);
                if include_operations {
                    described.authorized_operations = GROUP_AUTHORIZED_OPERATIONS;
                }
                described
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    fn describe_group(&self, group_id: GroupId, version: i16) -> DescribedGroup {
        if let Some(error) = self.unavailable_for(&group_id.0) {
            return DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(error.code());
        }
        let Some(handle) = self.group(&group_id.0) else {
            return DescribedGroup::default()
                .with_group_id(group_id)
                .with_group_state(StrBytes::from_static_str(GroupState::Dead.name()));
        };
        let group = handle.lock();
        describe(&group, group_id, version)
    }

    pub(super) async fn delete_groups_request(
        &self,
        request: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for group_id in request.groups_names {
            let id = group_id.0.to_string();
            let error = self
                .detached(move |coordinator| async move { coordinator.delete_group(&id).await })
                .await
                .unwrap_or(Some(ResponseError::UnknownServerError));
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(error_code(error)),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }

    /// Deletes an Empty group: tombstones for its offsets and metadata, then forgets it.
    async fn delete_group(&self, group_id: &str) -> Option<ResponseError> {
        if let Some(error) = self.unavailable_for(group_id) {
            return Some(error);
        }
        let Some(handle) = self.group(group_id) else {
            return Some(ResponseError::GroupIdNotFound);
        };
        let partition = self.partition_for(group_id);
        let _write = self.write_lock(partition).lock().await;
        let tombstones = {
            let mut group = handle.lock();
            match group.state {
                GroupState::Dead => return Some(ResponseError::GroupIdNotFound),
                GroupState::Empty => {}
                GroupState::PreparingRebalance
                | GroupState::CompletingRebalance
                | GroupState::Stable => {
                    return Some(ResponseError::NonEmptyGroup);
                }
            }
            let tombstones = match group_tombstones(&group) {
                Ok(tombstones) => tombstones,
                Err(error) => {
                    warn!(group_id, %error, "cannot encode group tombstones");
                    return Some(ResponseError::UnknownServerError);
                }
            };
            group.transition_to(GroupState::Dead, now_ms());
            tombstones
        };
        if let Err(error) = self.log.append(partition, tombstones).await {
            warn!(group_id, partition, %error, "failed to delete group");
            handle.lock().revive_as_empty();
            return Some(storage_error_code(&error));
        }
        {
            let mut group = handle.lock();
            group.offsets.clear();
            info!(group_id, generation = group.generation_id, "deleted group");
        }
        self.remove_dead_group(group_id, &handle);
        None
    }
}

fn group_tombstones(group: &Group) -> Result<Vec<OffsetsRecord>, GroupError> {
    let mut tombstones = Vec::with_capacity(group.offsets.len() + 1);
    for (topic, partition) in group.offsets.keys() {
        tombstones.push((
            records::encode_offset_key(&group.group_id, topic, *partition)?,
            None,
        ));
    }
    tombstones.push((records::encode_group_key(&group.group_id)?, None));
    Ok(tombstones)
}

/// Kafka's group summary: member metadata and assignments only once the group is Stable.
fn describe(group: &Group, group_id: GroupId, version: i16) -> DescribedGroup {
    let stable_protocol = group
        .protocol_name
        .as_deref()
        .filter(|_| group.is(GroupState::Stable));
    let members = group
        .members
        .values()
        .map(|member| {
            let mut described = DescribedGroupMember::default()
                .with_member_id(StrBytes::from_string(member.identity.member_id.clone()))
                .with_client_id(StrBytes::from_string(member.identity.client_id.clone()))
                .with_client_host(StrBytes::from_string(member.identity.client_host.clone()));
            if version >= 4 {
                described.group_instance_id = member
                    .identity
                    .group_instance_id
                    .clone()
                    .map(StrBytes::from_string);
            }
            if let Some(protocol) = stable_protocol {
                described.member_metadata = member.metadata(protocol);
                described.member_assignment = member.assignment.clone();
            }
            described
        })
        .collect();
    DescribedGroup::default()
        .with_group_id(group_id)
        .with_group_state(StrBytes::from_static_str(group.state.name()))
        .with_protocol_type(StrBytes::from_string(
            group.protocol_type.clone().unwrap_or_default(),
        ))
        .with_protocol_data(StrBytes::from_string(
            stable_protocol.unwrap_or_default().to_string(),
        ))
        .with_members(members)
}
