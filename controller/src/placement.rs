//! Replica placement for new partitions: round-robin with leader balance and rack awareness,
//! after Kafka's `AdminUtils.assignReplicasToBrokers`, but deterministic (the start broker
//! is the one leading the fewest partitions instead of a random one), because it runs
//! inside the state machine.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use crate::cluster_metadata::BrokerId;
use crate::cluster_metadata::BrokerRegistration;

/// Chooses replicas for `partition_count` new partitions with `replication_factor` replicas
/// each. The first replica of each list is the preferred leader.
///
/// `brokers` are the candidate (unfenced) brokers; `leader_counts` how many partitions each
/// broker leads already. Callers guarantee `1 <= replication_factor <= brokers.len()`.
pub(crate) fn assign_replicas(
    brokers: &[&BrokerRegistration],
    leader_counts: &BTreeMap<BrokerId, usize>,
    partition_count: usize,
    replication_factor: usize,
) -> Vec<Vec<BrokerId>> {
    debug_assert!(replication_factor >= 1 && replication_factor <= brokers.len());
    let ring = placement_ring(brokers);
    let broker_count = ring.len();
    if broker_count == 0 {
        return vec![Vec::new(); partition_count];
    }
    let distinct_racks = ring
        .iter()
        .map(|slot| slot.rack)
        .collect::<BTreeSet<_>>()
        .len();
    let start = least_loaded_position(&ring, leader_counts);

    let mut assignments = Vec::with_capacity(partition_count);
    for partition in 0..partition_count {
        let first = (start + partition) % broker_count;
        // Kafka shifts the followers by one each time the leaders wrap around the ring, so
        // that the pairs of brokers sharing partitions vary.
        let shift = (partition / broker_count) % broker_count.saturating_sub(1).max(1);
        let followers_in_order: Vec<usize> = (0..broker_count.saturating_sub(1))
            .map(|step| (first + 1 + (shift + step) % (broker_count - 1)) % broker_count)
            .collect();

        let mut replicas = vec![ring[first].broker_id];
        let mut racks_used = BTreeSet::from([ring[first].rack]);
        while replicas.len() < replication_factor {
            if racks_used.len() >= distinct_racks {
                racks_used.clear();
            }
            let is_free = |position: &&usize| !replicas.contains(&ring[**position].broker_id);
            let next = followers_in_order
                .iter()
                .filter(is_free)
                .find(|position| !racks_used.contains(&ring[**position].rack))
                .or_else(|| followers_in_order.iter().find(is_free));
            let Some(&position) = next else {
                break;
            };
            replicas.push(ring[position].broker_id);
            let _ = racks_used.insert(ring[position].rack);
        }
        debug_assert_eq!(replicas.len(), replication_factor);
        assignments.push(replicas);
    }
    assignments
}

struct RingSlot<'a> {
    broker_id: BrokerId,
    /// `None` for every broker unless all brokers have a rack.
    rack: Option<&'a str>,
}

/// Orders the brokers around the placement ring: by id, or, when every broker has a rack,
/// alternating between racks (Kafka's `getRackAlternatedBrokerList`) so that consecutive
/// brokers sit in different racks.
fn placement_ring<'a>(brokers: &[&'a BrokerRegistration]) -> Vec<RingSlot<'a>> {
    let mut sorted: Vec<&BrokerRegistration> = brokers.to_vec();
    sorted.sort_by_key(|broker| broker.broker_id);
    let rack_aware = !sorted.is_empty() && sorted.iter().all(|broker| broker.rack.is_some());
    if !rack_aware {
        return sorted
            .iter()
            .map(|broker| RingSlot {
                broker_id: broker.broker_id,
                rack: None,
            })
            .collect();
    }

    let mut by_rack: BTreeMap<&str, Vec<BrokerId>> = BTreeMap::new();
    for broker in &sorted {
        let rack = broker.rack.as_deref().unwrap_or_default();
        by_rack.entry(rack).or_default().push(broker.broker_id);
    }
    let mut ring = Vec::with_capacity(sorted.len());
    let deepest_rack = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for round in 0..deepest_rack {
        for (rack, ids) in &by_rack {
            if let Some(&broker_id) = ids.get(round) {
                ring.push(RingSlot {
                    broker_id,
                    rack: Some(rack),
                });
            }
        }
    }
    ring
}

/// Position of the broker leading the fewest partitions; the earliest one on ties.
fn least_loaded_position(
    ring: &[RingSlot<'_>],
    leader_counts: &BTreeMap<BrokerId, usize>,
) -> usize {
    let mut best_position = 0;
    let mut best_count = usize::MAX;
    for (position, slot) in ring.iter().enumerate() {
        let count = leader_counts.get(&slot.broker_id).copied().unwrap_or(0);
        if count < best_count {
            best_count = count;
            best_position = position;
        }
    }
    best_position
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(broker_id: BrokerId, rack: Option<&str>) -> BrokerRegistration {
        BrokerRegistration {
            broker_id,
            incarnation_id: uuid::Uuid::from_u128(u128::from(broker_id.unsigned_abs()) + 1),
            host: "localhost".to_owned(),
            port: 9092,
            rack: rack.map(str::to_owned),
            fenced: false,
        }
    }

    fn leaders(assignments: &[Vec<BrokerId>]) -> BTreeMap<BrokerId, usize> {
        let mut counts = BTreeMap::new();
        for replicas in assignments {
            *counts.entry(replicas[0]).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn leaders_spread_evenly_and_replicas_are_distinct() {
        let brokers = [broker(1, None), broker(2, None), broker(3, None)];
        let refs: Vec<&BrokerRegistration> = brokers.iter().collect();
        let assignments = assign_replicas(&refs, &BTreeMap::new(), 6, 3);
        assert_eq!(assignments.len(), 6);
        for replicas in &assignments {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
        assert_eq!(
            leaders(&assignments),
            BTreeMap::from([(1, 2), (2, 2), (3, 2)])
        );
        assert_eq!(assignments[0], vec![1, 2, 3]);
        assert_eq!(assignments[1], vec![2, 3, 1]);
    }

    #[test]
    fn followers_shift_after_each_round_of_leaders() {
        let brokers = [
            broker(0, None),
            broker(1, None),
            broker(2, None),
            broker(3, None),
        ];
        let refs: Vec<&BrokerRegistration> = brokers.iter().collect();
        let assignments = assign_replicas(&refs, &BTreeMap::new(), 8, 2);
        assert_eq!(assignments[0], vec![0, 1]);
        assert_eq!(assignments[4], vec![0, 2]);
    }

    #[test]
    fn new_topic_starts_on_least_loaded_broker() {
        let brokers = [broker(1, None), broker(2, None), broker(3, None)];
        let refs: Vec<&BrokerRegistration> = brokers.iter().collect();
        let existing = BTreeMap::from([(1, 5), (2, 1), (3, 4)]);
        let assignments = assign_replicas(&refs, &existing, 1, 1);
        assert_eq!(assignments, vec![vec![2]]);
    }

    #[test]
    fn replicas_span_racks_when_every_broker_has_one() {
        let brokers = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
        ];
        let refs: Vec<&BrokerRegistration> = brokers.iter().collect();
        let assignments = assign_replicas(&refs, &BTreeMap::new(), 8, 2);
        let rack_of = |id: BrokerId| if id <= 2 { "a" } else { "b" };
        for replicas in &assignments {
            assert_ne!(rack_of(replicas[0]), rack_of(replicas[1]), "{replicas:?}");
        }
        assert_eq!(
            leaders(&assignments).values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2, 2]
        );
    }

    #[test]
    fn single_broker_gets_every_replica() {
        let brokers = [broker(7, None)];
        let refs: Vec<&BrokerRegistration> = brokers.iter().collect();
        assert_eq!(
            assign_replicas(&refs, &BTreeMap::new(), 3, 1),
            vec![vec![7], vec![7], vec![7]]
        );
    }
}
