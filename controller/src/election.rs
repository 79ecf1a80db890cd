//! Partition leadership and ISR changes in the state machine: broker fencing and unfencing,
//! AlterPartition (KIP-497) and preferred leader election, with Kafka KRaft semantics.
//!
//! Every leader change bumps `leader_epoch` and `partition_epoch`; every other change of a
//! partition record (ISR only) bumps `partition_epoch` alone.

use crate::cluster_metadata::AlterPartitionRequest;
use crate::cluster_metadata::BrokerId;
use crate::cluster_metadata::ClusterMetadata;
use crate::cluster_metadata::NO_BROKER;
use crate::cluster_metadata::PartitionAssignment;
use crate::command::CommandError;
use crate::command::CommandOutput;
use crate::command::CommandResult;

/// Topic config that allows electing a leader outside the ISR (may lose records).
pub(crate) const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

fn is_unfenced(metadata: &ClusterMetadata, broker_id: BrokerId) -> bool {
    metadata
        .broker(broker_id)
        .is_some_and(|broker| !broker.fenced)
}

fn set_leader(partition: &mut PartitionAssignment, leader: BrokerId) {
    debug_assert!(
        partition.leader != leader,
        "a leader change changes the leader"
    );
    partition.leader = leader;
    partition.leader_epoch = partition.leader_epoch.saturating_add(1);
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
}

/// Marks `broker_id` fenced and takes it out of every partition: out of the ISR unless it
/// is the last member (Kafka keeps it so that it can come back as leader), and off every
/// leadership. Answers the number of leader changes.
pub(crate) fn fence_broker(
    metadata: &mut ClusterMetadata,
    broker_id: BrokerId,
    incarnation_id: Option<uuid::Uuid>,
    unclean_leader_election_default: bool,
) -> CommandResult {
    let Some(broker) = metadata.brokers.get_mut(&broker_id) else {
        return Err(CommandError::StaleBrokerEpoch(format!(
            "broker {broker_id} is not registered"
        )));
    };
    if let Some(incarnation_id) = incarnation_id
        && broker.incarnation_id != incarnation_id
    {
        return Err(CommandError::StaleBrokerEpoch(format!(
            "broker {broker_id} is registered as incarnation {}, not {incarnation_id}",
            broker.incarnation_id
        )));
    }
    broker.fenced = true;
    let (changes, unclean) =
        remove_from_partitions(metadata, broker_id, unclean_leader_election_default);
    Ok(CommandOutput::LeadersElected { changes, unclean })
}

/// The fencing effect on partitions of a broker that is already marked fenced. Answers
/// the number of leader changes and the unclean elections among them.
pub(crate) fn remove_from_partitions(
    metadata: &mut ClusterMetadata,
    broker_id: BrokerId,
    unclean_leader_election_default: bool,
) -> (u32, Vec<(String, i32, BrokerId)>) {
    let mut unclean_elections = Vec::new();
    let unfenced: Vec<BrokerId> = metadata
        .unfenced_brokers()
        .map(|broker| broker.broker_id)
        .collect();
    let mut leader_changes = 0;
    for topic in metadata.topics.values_mut() {
        let unclean = unclean_election_enabled(topic, unclean_leader_election_default);
        for partition in &mut topic.partitions {
            let isr_shrinks = partition.isr.len() > 1 && partition.isr.contains(&broker_id);
            if isr_shrinks {
                partition.isr.retain(|member| *member != broker_id);
            }
            if partition.leader != broker_id {
                if isr_shrinks {
                    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
                }
                continue;
            }
            let clean_choice = partition
                .replicas
                .iter()
                .copied()
                .find(|replica| partition.isr.contains(replica) && unfenced.contains(replica));
            let new_leader = match clean_choice {
                Some(leader) => leader,
                None if unclean => {
                    match partition
                        .replicas
                        .iter()
                        .copied()
                        .find(|replica| unfenced.contains(replica))
                    {
                        Some(leader) => {
                            partition.isr = vec![leader];
                            unclean_elections.push((
                                topic.name.clone(),
                                partition.partition,
                                leader,
                            ));
                            leader
                        }
                        None => NO_BROKER,
                    }
                }
                None => NO_BROKER,
            };
            set_leader(partition, new_leader);
            leader_changes += 1;
        }
    }
    (leader_changes, unclean_elections)
}

/// Unfences the broker and makes it leader of every offline partition whose ISR holds it.
/// Answers the number of leader changes.
pub(crate) fn unfence_broker(
    metadata: &mut ClusterMetadata,
    broker_id: BrokerId,
    incarnation_id: uuid::Uuid,
    unclean_leader_election_default: bool,
) -> CommandResult {
    let Some(broker) = metadata.brokers.get_mut(&broker_id) else {
        return Err(CommandError::StaleBrokerEpoch(format!(
            "broker {broker_id} is not registered"
        )));
    };
    if broker.incarnation_id != incarnation_id {
        return Err(CommandError::StaleBrokerEpoch(format!(
            "broker {broker_id} is registered as incarnation {}, not {incarnation_id}",
            broker.incarnation_id
        )));
    }
    broker.fenced = false;
    let mut leader_changes = 0;
    let mut unclean_elections = Vec::new();
    for topic in metadata.topics.values_mut() {
        let unclean = unclean_election_enabled(topic, unclean_leader_election_default);
        for partition in &mut topic.partitions {
            if partition.leader != NO_BROKER || !partition.replicas.contains(&broker_id) {
                continue;
            }
            if partition.isr.contains(&broker_id) {
                set_leader(partition, broker_id);
                leader_changes += 1;
            } else if unclean {
                // Every ISR member is fenced (else one would lead): the returning replica
                // takes over with what it has, as Kafka's unclean election does.
                partition.isr = vec![broker_id];
                set_leader(partition, broker_id);
                leader_changes += 1;
                unclean_elections.push((topic.name.clone(), partition.partition, broker_id));
            }
        }
    }
    Ok(CommandOutput::LeadersElected {
        changes: leader_changes,
        unclean: unclean_elections,
    })
}

/// `unclean.leader.election.enable` of a topic: its override, else the broker default.
fn unclean_election_enabled(topic: &crate::cluster_metadata::TopicMetadata, default: bool) -> bool {
    topic
        .configs
        .get(UNCLEAN_LEADER_ELECTION_ENABLE)
        .map_or(default, |value| value.trim().eq_ignore_ascii_case("true"))
}

/// KIP-497 AlterPartition, validated as Kafka's controller does; answers the partition
/// after the change.
pub(crate) fn alter_partition(
    metadata: &mut ClusterMetadata,
    request: AlterPartitionRequest,
) -> CommandResult {
    let described = format!("topic {} partition {}", request.topic_id, request.partition);
    let current = metadata
        .topic_by_id(request.topic_id)
        .and_then(|topic| topic.partition(request.partition))
        .cloned()
        .ok_or_else(|| CommandError::UnknownTopicOrPartition(described.clone()))?;
    if current.leader != request.broker_id {
        return Err(CommandError::NotLeaderOrFollower(format!(
            "broker {} does not lead {described}, broker {} does",
            request.broker_id, current.leader
        )));
    }
    if request.leader_epoch != current.leader_epoch {
        return Err(CommandError::FencedLeaderEpoch(format!(
            "{described} is at leader epoch {}, the request has {}",
            current.leader_epoch, request.leader_epoch
        )));
    }
    if request.partition_epoch != current.partition_epoch {
        return Err(CommandError::InvalidUpdateVersion(format!(
            "{described} is at partition epoch {}, the request has {}",
            current.partition_epoch, request.partition_epoch
        )));
    }
    validate_new_isr(metadata, &current, &request.new_isr, &described)?;

    let Some(partition) = metadata
        .topics
        .values_mut()
        .find(|topic| topic.topic_id == request.topic_id)
        .and_then(|topic| {
            usize::try_from(request.partition)
                .ok()
                .and_then(|index| topic.partitions.get_mut(index))
        })
    else {
        return Err(CommandError::UnknownTopicOrPartition(described));
    };
    partition.isr = request.new_isr;
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    Ok(CommandOutput::Partition(partition.clone()))
}

fn validate_new_isr(
    metadata: &ClusterMetadata,
    current: &PartitionAssignment,
    new_isr: &[BrokerId],
    described: &str,
) -> Result<(), CommandError> {
    if !new_isr.contains(&current.leader) {
        return Err(CommandError::InvalidRequest(format!(
            "the new ISR {new_isr:?} of {described} does not contain the leader {}",
            current.leader
        )));
    }
    for (index, member) in new_isr.iter().enumerate() {
        if new_isr[..index].contains(member) {
            return Err(CommandError::InvalidRequest(format!(
                "the new ISR {new_isr:?} of {described} lists broker {member} twice"
            )));
        }
        if !current.replicas.contains(member) {
            return Err(CommandError::InvalidRequest(format!(
                "broker {member} in the new ISR of {described} is not a replica ({:?})",
                current.replicas
            )));
        }
        if !current.isr.contains(member) && !is_unfenced(metadata, *member) {
            return Err(CommandError::IneligibleReplica(format!(
                "broker {member} cannot join the ISR of {described}: it is fenced or not registered"
            )));
        }
    }
    Ok(())
}

/// True if `partition` would move to its preferred replica under
/// [`elect_preferred_leaders`].
pub(crate) fn prefers_another_leader(
    metadata: &ClusterMetadata,
    partition: &PartitionAssignment,
) -> bool {
    partition.replicas.first().is_some_and(|preferred| {
        partition.leader != *preferred
            && partition.isr.contains(preferred)
            && is_unfenced(metadata, *preferred)
    })
}

/// Moves every partition whose preferred replica is unfenced and in the ISR to it. Answers
/// the number of leader changes.
pub(crate) fn elect_preferred_leaders(metadata: &mut ClusterMetadata) -> CommandResult {
    let unfenced: Vec<BrokerId> = metadata
        .unfenced_brokers()
        .map(|broker| broker.broker_id)
        .collect();
    let mut leader_changes = 0;
    for partition in metadata
        .topics
        .values_mut()
        .flat_map(|topic| topic.partitions.iter_mut())
    {
        let Some(&preferred) = partition.replicas.first() else {
            continue;
        };
        if partition.leader != preferred
            && partition.isr.contains(&preferred)
            && unfenced.contains(&preferred)
        {
            set_leader(partition, preferred);
            leader_changes += 1;
        }
    }
    Ok(CommandOutput::LeadersElected {
        changes: leader_changes,
        unclean: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster_metadata::BrokerRegistration;
    use crate::cluster_metadata::TopicId;
    use crate::cluster_metadata::TopicMetadata;
    use crate::command::Command;
    use crate::state_machine::apply;

    const TOPIC_ID: TopicId = TopicId(uuid::Uuid::from_u128(7));

    fn incarnation(broker_id: BrokerId) -> uuid::Uuid {
        uuid::Uuid::from_u128(100 + u128::from(broker_id.unsigned_abs()))
    }

    fn partition(
        index: i32,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        leader: BrokerId,
    ) -> PartitionAssignment {
        PartitionAssignment {
            partition: index,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 10,
        }
    }

    /// Brokers 1, 2, 3 and topic "t" with the given partitions.
    fn cluster(partitions: Vec<PartitionAssignment>) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for broker_id in [1, 2, 3] {
            let registration = BrokerRegistration {
                broker_id,
                incarnation_id: incarnation(broker_id),
                host: "localhost".to_owned(),
                port: 9092,
                rack: None,
                fenced: false,
            };
            apply(&mut metadata, Command::RegisterBroker(registration)).unwrap();
        }
        let topic = TopicMetadata {
            name: "t".to_owned(),
            topic_id: TOPIC_ID,
            partitions,
            configs: BTreeMap::new(),
            log_start_offsets: BTreeMap::new(),
            internal: false,
        };
        let _previous = metadata.topics.insert("t".to_owned(), topic);
        metadata
    }

    fn fence(broker_id: BrokerId, unclean: bool) -> Command {
        Command::FenceBroker {
            broker_id,
            incarnation_id: None,
            unclean_leader_election_default: unclean,
        }
    }

    fn part(metadata: &ClusterMetadata, index: usize) -> &PartitionAssignment {
        &metadata.topic("t").unwrap().partitions[index]
    }

    fn epochs(partition: &PartitionAssignment) -> (i32, i32) {
        (partition.leader_epoch, partition.partition_epoch)
    }

    #[test]
    fn fencing_moves_leadership_to_the_next_isr_replica_and_bumps_epochs() {
        let mut metadata = cluster(vec![
            partition(0, &[1, 2, 3], &[1, 2, 3], 1),
            partition(1, &[2, 1, 3], &[2, 1, 3], 2),
            partition(2, &[1, 2, 3], &[1, 3], 1),
            partition(3, &[2, 3], &[2, 3], 2),
        ]);
        let result = apply(&mut metadata, fence(1, false));
        assert_eq!(
            result,
            Ok(CommandOutput::LeadersElected {
                changes: 2,
                unclean: Vec::new()
            })
        );
        assert!(metadata.broker(1).unwrap().fenced);

        // Led by 1: next replica in order that is in the ISR.
        assert_eq!(
            (part(&metadata, 0).leader, part(&metadata, 0).isr.clone()),
            (2, vec![2, 3])
        );
        assert_eq!(epochs(part(&metadata, 0)), (6, 11));
        // Skips replica 2, which is not in the ISR.
        assert_eq!(
            (part(&metadata, 2).leader, part(&metadata, 2).isr.clone()),
            (3, vec![3])
        );
        assert_eq!(epochs(part(&metadata, 2)), (6, 11));
        // Follower only: ISR shrinks, leader epoch stays.
        assert_eq!(
            (part(&metadata, 1).leader, part(&metadata, 1).isr.clone()),
            (2, vec![2, 3])
        );
        assert_eq!(epochs(part(&metadata, 1)), (5, 11));
        // Not a replica: untouched.
        assert_eq!(epochs(part(&metadata, 3)), (5, 10));
    }

    #[test]
    fn fencing_the_last_isr_member_keeps_it_and_takes_the_partition_offline() {
        let mut metadata = cluster(vec![partition(0, &[1, 2], &[1], 1)]);
        apply(&mut metadata, fence(1, false)).unwrap();
        let offline = part(&metadata, 0);
        assert_eq!((offline.leader, offline.isr.clone()), (NO_BROKER, vec![1]));
        assert_eq!(epochs(offline), (6, 11));
        // Fencing again changes nothing more.
        assert_eq!(
            apply(&mut metadata, fence(1, false)),
            Ok(CommandOutput::LeadersElected {
                changes: 0,
                unclean: Vec::new()
            })
        );
        assert_eq!(epochs(part(&metadata, 0)), (6, 11));
    }

    #[test]
    fn unclean_election_picks_an_unfenced_replica_outside_the_isr() {
        let mut metadata = cluster(vec![
            partition(0, &[1, 3, 2], &[1], 1),
            partition(1, &[1, 3, 2], &[1], 1),
        ]);
        // The broker default applies to topics without an override.
        apply(&mut metadata, fence(1, true)).unwrap();
        assert_eq!(
            (part(&metadata, 0).leader, part(&metadata, 0).isr.clone()),
            (3, vec![3])
        );
        assert_eq!(epochs(part(&metadata, 0)), (6, 11));

        // The topic override wins over the broker default.
        let mut metadata = cluster(vec![partition(0, &[1, 3, 2], &[1], 1)]);
        let _previous = metadata
            .topics
            .get_mut("t")
            .unwrap()
            .configs
            .insert(UNCLEAN_LEADER_ELECTION_ENABLE.to_owned(), "true".to_owned());
        apply(&mut metadata, fence(1, false)).unwrap();
        assert_eq!(part(&metadata, 0).leader, 3);

        let mut metadata = cluster(vec![partition(0, &[1, 3, 2], &[1], 1)]);
        let _previous = metadata.topics.get_mut("t").unwrap().configs.insert(
            UNCLEAN_LEADER_ELECTION_ENABLE.to_owned(),
            "false".to_owned(),
        );
        apply(&mut metadata, fence(1, true)).unwrap();
        assert_eq!(part(&metadata, 0).leader, NO_BROKER);
    }

    #[test]
    fn a_returning_out_of_sync_replica_leads_only_with_unclean_election() {
        for (unclean, expected_leader) in [(false, NO_BROKER), (true, 2)] {
            // Broker 2 fell out of the ISR, then both brokers went down: offline.
            let mut metadata = cluster(vec![partition(0, &[1, 2], &[1], 1)]);
            apply(&mut metadata, fence(2, unclean)).unwrap();
            apply(&mut metadata, fence(1, unclean)).unwrap();
            assert_eq!(part(&metadata, 0).leader, NO_BROKER);
            let unfence = Command::UnfenceBroker {
                broker_id: 2,
                incarnation_id: incarnation(2),
                unclean_leader_election_default: unclean,
            };
            apply(&mut metadata, unfence).unwrap();
            assert_eq!(
                part(&metadata, 0).leader,
                expected_leader,
                "unclean={unclean}"
            );
            let isr = if unclean { vec![2] } else { vec![1] };
            assert_eq!(part(&metadata, 0).isr, isr, "unclean={unclean}");
        }
    }

    #[test]
    fn fencing_checks_the_incarnation_and_the_registration() {
        let mut metadata = cluster(vec![partition(0, &[1, 2], &[1, 2], 1)]);
        let before = metadata.clone();
        let stale = Command::FenceBroker {
            broker_id: 1,
            incarnation_id: Some(uuid::Uuid::from_u128(1)),
            unclean_leader_election_default: false,
        };
        assert!(matches!(
            apply(&mut metadata, stale),
            Err(CommandError::StaleBrokerEpoch(_))
        ));
        assert!(matches!(
            apply(&mut metadata, fence(9, false)),
            Err(CommandError::StaleBrokerEpoch(_))
        ));
        assert_eq!(metadata, before);
        let current = Command::FenceBroker {
            broker_id: 1,
            incarnation_id: Some(incarnation(1)),
            unclean_leader_election_default: false,
        };
        apply(&mut metadata, current).unwrap();
        assert_eq!(part(&metadata, 0).leader, 2);
    }

    #[test]
    fn unfencing_restores_the_leader_of_offline_partitions() {
        let mut metadata = cluster(vec![
            partition(0, &[1, 2], &[1], 1),
            partition(1, &[2, 1], &[2, 1], 2),
        ]);
        apply(&mut metadata, fence(1, false)).unwrap();
        assert_eq!(part(&metadata, 0).leader, NO_BROKER);
        let stale = Command::UnfenceBroker {
            broker_id: 1,
            incarnation_id: uuid::Uuid::from_u128(1),
            unclean_leader_election_default: false,
        };
        assert!(matches!(
            apply(&mut metadata, stale),
            Err(CommandError::StaleBrokerEpoch(_))
        ));
        let unfence = Command::UnfenceBroker {
            broker_id: 1,
            incarnation_id: incarnation(1),
            unclean_leader_election_default: false,
        };
        assert_eq!(
            apply(&mut metadata, unfence),
            Ok(CommandOutput::LeadersElected {
                changes: 1,
                unclean: Vec::new()
            })
        );
        assert!(!metadata.broker(1).unwrap().fenced);
        assert_eq!(part(&metadata, 0).leader, 1);
        assert_eq!(epochs(part(&metadata, 0)), (7, 12));
        // Partition 1 has a leader; broker 1 rejoins its ISR through AlterPartition only.
        assert_eq!(
            (part(&metadata, 1).leader, part(&metadata, 1).isr.clone()),
            (2, vec![2])
        );
    }

    fn alter(new_isr: &[BrokerId]) -> AlterPartitionRequest {
        AlterPartitionRequest {
            broker_id: 1,
            topic_id: TOPIC_ID,
            partition: 0,
            leader_epoch: 5,
            partition_epoch: 10,
            new_isr: new_isr.to_vec(),
        }
    }

    fn assert_alter_refused(
        metadata: &mut ClusterMetadata,
        request: AlterPartitionRequest,
        expected: fn(&CommandError) -> bool,
    ) {
        let before = metadata.clone();
        let result = apply(metadata, Command::AlterPartition(request.clone()));
        match &result {
            Err(error) if expected(error) => {}
            other => panic!("{request:?}: unexpected {other:?}"),
        }
        assert_eq!(*metadata, before);
    }

    #[test]
    fn alter_partition_shrinks_and_expands_the_isr() {
        let mut metadata = cluster(vec![partition(0, &[1, 2, 3], &[1, 2, 3], 1)]);
        let shrunk = match apply(&mut metadata, Command::AlterPartition(alter(&[1, 3]))) {
            Ok(CommandOutput::Partition(partition)) => partition,
            other => panic!("{other:?}"),
        };
        assert_eq!(shrunk.isr, vec![1, 3]);
        assert_eq!(epochs(&shrunk), (5, 11));
        assert_eq!(part(&metadata, 0), &shrunk);
        let expand = AlterPartitionRequest {
            partition_epoch: 11,
            ..alter(&[1, 3, 2])
        };
        apply(&mut metadata, Command::AlterPartition(expand)).unwrap();
        assert_eq!(part(&metadata, 0).isr, vec![1, 3, 2]);
        assert_eq!(epochs(part(&metadata, 0)), (5, 12));
    }

    #[test]
    fn alter_partition_rejects_each_invalid_request() {
        let mut metadata = cluster(vec![partition(0, &[1, 2, 3], &[1, 2], 1)]);
        assert_alter_refused(
            &mut metadata,
            AlterPartitionRequest {
                topic_id: TopicId(uuid::Uuid::from_u128(8)),
                ..alter(&[1])
            },
            |error| matches!(error, CommandError::UnknownTopicOrPartition(_)),
        );
        assert_alter_refused(
            &mut metadata,
            AlterPartitionRequest {
                partition: 1,
                ..alter(&[1])
            },
            |error| matches!(error, CommandError::UnknownTopicOrPartition(_)),
        );
        assert_alter_refused(
            &mut metadata,
            AlterPartitionRequest {
                broker_id: 2,
                ..alter(&[2])
            },
            |error| matches!(error, CommandError::NotLeaderOrFollower(_)),
        );
        assert_alter_refused(
            &mut metadata,
            AlterPartitionRequest {
                leader_epoch: 4,
                ..alter(&[1])
            },
            |error| matches!(error, CommandError::FencedLeaderEpoch(_)),
        );
        assert_alter_refused(
            &mut metadata,
            AlterPartitionRequest {
                partition_epoch: 9,
                ..alter(&[1])
            },
            |error| matches!(error, CommandError::InvalidUpdateVersion(_)),
        );
        for bad_isr in [&[][..], &[2][..], &[1, 1][..], &[1, 4][..]] {
            assert_alter_refused(&mut metadata, alter(bad_isr), |error| {
                matches!(error, CommandError::InvalidRequest(_))
            });
        }
        // Adding a fenced broker is refused; keeping one that is already in is not.
        metadata.brokers.get_mut(&3).unwrap().fenced = true;
        assert_alter_refused(&mut metadata, alter(&[1, 2, 3]), |error| {
            matches!(error, CommandError::IneligibleReplica(_))
        });
        metadata.brokers.get_mut(&2).unwrap().fenced = true;
        apply(&mut metadata, Command::AlterPartition(alter(&[1, 2]))).unwrap();
    }

    #[test]
    fn preferred_leader_election_moves_back_only_when_eligible() {
        let mut metadata = cluster(vec![
            partition(0, &[1, 2], &[1, 2], 2),
            partition(1, &[1, 2], &[2], 2),
            partition(2, &[3, 2], &[3, 2], 2),
            partition(3, &[2, 1], &[2, 1], 2),
        ]);
        metadata.brokers.get_mut(&3).unwrap().fenced = true;
        assert!(prefers_another_leader(&metadata, part(&metadata, 0)));
        assert!(!prefers_another_leader(&metadata, part(&metadata, 1)));
        assert_eq!(
            apply(&mut metadata, Command::ElectPreferredLeaders),
            Ok(CommandOutput::LeadersElected {
                changes: 1,
                unclean: Vec::new()
            })
        );
        assert_eq!(part(&metadata, 0).leader, 1);
        assert_eq!(epochs(part(&metadata, 0)), (6, 11));
        // Not in the ISR, fenced, or already preferred: unchanged.
        for index in 1..4 {
            assert_eq!(part(&metadata, index).leader, 2);
            assert_eq!(epochs(part(&metadata, index)), (5, 10));
        }
    }
}
