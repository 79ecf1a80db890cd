//! ISR replication rules, free of I/O so they can be tested alone: the leader's view of
//! each follower (Kafka's `Replica`), the high watermark over the ISR, which followers
//! fall out of or may rejoin the ISR, and the follower's truncation point after a
//! leader change (KIP-101, KIP-279).

use std::collections::BTreeMap;

use silt_controller::BrokerId;

/// Offset of a follower the leader has not heard from since it became leader.
pub(crate) const UNKNOWN_OFFSET: i64 = -1;

/// Kafka's default `replica.lag.time.max.ms`: an ISR follower that has not caught up
/// with the leader's log end offset for this long (ms) is removed from the ISR.
pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: i64 = 30_000;

/// The leader's view of one follower, updated on each of its fetches (Kafka's
/// `Replica.updateFetchState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch (exclusive end of
    /// what it holds), or [`UNKNOWN_OFFSET`].
    pub log_end_offset: i64,
    /// The leader's log end offset at the follower's last fetch, or [`UNKNOWN_OFFSET`].
    pub last_fetch_leader_log_end_offset: i64,
    /// Time of the last fetch (ms since the Unix epoch), 0 before the first.
    pub last_fetch_time_ms: i64,
    /// Last time the follower was known to hold everything the leader held (ms since
    /// the Unix epoch), 0 when never.
    pub last_caught_up_time_ms: i64,
}

impl FollowerState {
    /// State after a leadership change: the follower's offset is unknown until it
    /// fetches. An ISR member counts as caught up now so it gets a full
    /// `replica.lag.time.max.ms` to fetch before it can be removed.
    pub(crate) fn reset(now_ms: i64, in_sync: bool) -> FollowerState {
        FollowerState {
            log_end_offset: UNKNOWN_OFFSET,
            last_fetch_leader_log_end_offset: UNKNOWN_OFFSET,
            last_fetch_time_ms: 0,
            last_caught_up_time_ms: if in_sync { now_ms } else { 0 },
        }
    }

    /// Records a fetch at `fetch_offset` made at `fetch_time_ms` while the leader's
    /// log end offset was `leader_log_end_offset`. A fetch at the leader's end makes
    /// the follower caught up now; a fetch reaching the leader's end as of the
    /// previous fetch makes it caught up as of that previous fetch.
    pub(crate) fn update_fetch_state(
        &mut self,
        fetch_offset: i64,
        fetch_time_ms: i64,
        leader_log_end_offset: i64,
    ) {
        if fetch_offset >= leader_log_end_offset {
            self.last_caught_up_time_ms = self.last_caught_up_time_ms.max(fetch_time_ms);
        } else if self.last_fetch_leader_log_end_offset != UNKNOWN_OFFSET
            && fetch_offset >= self.last_fetch_leader_log_end_offset
        {
            self.last_caught_up_time_ms = self.last_caught_up_time_ms.max(self.last_fetch_time_ms);
        }
        self.log_end_offset = fetch_offset;
        self.last_fetch_leader_log_end_offset = leader_log_end_offset;
        self.last_fetch_time_ms = fetch_time_ms;
    }

    /// Whether the follower may stay in the ISR: it holds the leader's whole log or was
    /// caught up within the last `lag_time_max_ms`.
    pub(crate) fn is_caught_up(
        &self,
        leader_log_end_offset: i64,
        now_ms: i64,
        lag_time_max_ms: i64,
    ) -> bool {
        self.log_end_offset == leader_log_end_offset
            || now_ms.saturating_sub(self.last_caught_up_time_ms) <= lag_time_max_ms
    }

    /// Messages the follower is behind the leader, `None` while its offset is unknown.
    pub(crate) fn lag(&self, leader_log_end_offset: i64) -> Option<i64> {
        (self.log_end_offset != UNKNOWN_OFFSET)
            .then(|| (leader_log_end_offset - self.log_end_offset).max(0))
    }
}

/// The leader's high watermark: the minimum log end offset over the ISR (the leader
/// included, even when the ISR omits it), never below `current` (it does not move back
/// within one leader epoch) and never above the leader's log end offset. An ISR
/// follower whose offset is unknown holds the high watermark where it is.
pub(crate) fn leader_high_watermark(
    current: i64,
    leader_id: BrokerId,
    leader_log_end_offset: i64,
    isr: &[BrokerId],
    followers: &BTreeMap<BrokerId, FollowerState>,
) -> i64 {
    let mut minimum = leader_log_end_offset;
    for replica in isr.iter().filter(|replica| **replica != leader_id) {
        match followers
            .get(replica)
            .map(|follower| follower.log_end_offset)
        {
            Some(offset) if offset != UNKNOWN_OFFSET => minimum = minimum.min(offset),
            _ => return current.min(leader_log_end_offset),
        }
    }
    minimum.max(current).min(leader_log_end_offset)
}

/// ISR followers that have not been caught up for more than `lag_time_max_ms` (ms)
/// and should be removed; the leader never is.
pub(crate) fn shrink_candidates(
    leader_id: BrokerId,
    leader_log_end_offset: i64,
    isr: &[BrokerId],
    followers: &BTreeMap<BrokerId, FollowerState>,
    now_ms: i64,
    lag_time_max_ms: i64,
) -> Vec<BrokerId> {
    isr.iter()
        .copied()
        .filter(|replica| *replica != leader_id)
        .filter(|replica| match followers.get(replica) {
            Some(follower) => {
                !follower.is_caught_up(leader_log_end_offset, now_ms, lag_time_max_ms)
            }
            // Not a replica the leader tracks: nothing will ever fetch for it.
            None => true,
        })
        .collect()
}

/// Whether a follower outside the ISR may join it (Kafka's `isFollowerInSync`): it has
/// reached the high watermark and everything the current leader epoch wrote before it.
pub(crate) fn is_follower_in_sync(
    follower_log_end_offset: i64,
    high_watermark: i64,
    leader_epoch_start_offset: i64,
) -> bool {
    follower_log_end_offset != UNKNOWN_OFFSET
        && follower_log_end_offset >= high_watermark
        && follower_log_end_offset >= leader_epoch_start_offset
}

/// Where a follower truncates after asking the leader about an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TruncationPoint {
    /// Truncate the log to this offset (records at and after it go).
    pub offset: i64,
    /// False when the leader answered an epoch the follower does not have: truncate,
    /// then ask again with the follower's epoch before that offset.
    pub completed: bool,
}

/// Kafka's truncation rule (KIP-101, KIP-279). `leader_epoch`/`leader_end_offset` are
/// the leader's OffsetForLeaderEpoch answer (-1/-1 when it has no such epoch);
/// `local_end_offset_for` is the follower's own `end_offset_for_epoch(leader_epoch)`.
/// - no answer (UNDEFINED end offset): truncate to the follower's high watermark;
/// - the follower knows the leader's epoch: truncate to
///   min(leader end offset, follower end of that epoch, follower LEO);
/// - the follower's floor epoch differs: truncate to its end of that epoch and ask
///   again;
/// - the follower has no epoch at or below it: min(leader end offset, follower LEO).
pub(crate) fn truncation_point(
    leader_epoch: i32,
    leader_end_offset: i64,
    local_end_offset_for: Option<(i32, i64)>,
    local_log_end_offset: i64,
    local_high_watermark: i64,
) -> TruncationPoint {
    if leader_end_offset < 0 {
        return TruncationPoint {
            offset: local_high_watermark.min(local_log_end_offset),
            completed: true,
        };
    }
    if leader_epoch < 0 {
        return TruncationPoint {
            offset: leader_end_offset.min(local_log_end_offset),
            completed: true,
        };
    }
    match local_end_offset_for {
        Some((local_epoch, local_end_offset)) if local_epoch == leader_epoch => TruncationPoint {
            offset: leader_end_offset
                .min(local_end_offset)
                .min(local_log_end_offset),
            completed: true,
        },
        Some((_, local_end_offset)) => TruncationPoint {
            offset: local_end_offset.min(local_log_end_offset),
            completed: false,
        },
        None => TruncationPoint {
            offset: leader_end_offset.min(local_log_end_offset),
            completed: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower_at(log_end_offset: i64) -> FollowerState {
        FollowerState {
            log_end_offset,
            last_fetch_leader_log_end_offset: log_end_offset,
            last_fetch_time_ms: 0,
            last_caught_up_time_ms: 0,
        }
    }

    #[test]
    fn high_watermark_is_the_minimum_log_end_offset_over_the_isr() {
        let followers = BTreeMap::from([(2, follower_at(7)), (3, follower_at(4))]);
        assert_eq!(leader_high_watermark(0, 1, 10, &[1, 2, 3], &followers), 4);
        assert_eq!(leader_high_watermark(0, 1, 10, &[1, 2], &followers), 7);
    }

    #[test]
    fn high_watermark_with_the_leader_alone_in_the_isr_is_its_log_end_offset() {
        assert_eq!(leader_high_watermark(3, 1, 10, &[1], &BTreeMap::new()), 10);
        assert_eq!(leader_high_watermark(3, 1, 10, &[], &BTreeMap::new()), 10);
    }

    #[test]
    fn high_watermark_does_not_go_back() {
        let followers = BTreeMap::from([(2, follower_at(3))]);
        assert_eq!(leader_high_watermark(6, 1, 10, &[1, 2], &followers), 6);
    }

    #[test]
    fn high_watermark_waits_for_isr_followers_with_unknown_offsets() {
        let followers = BTreeMap::from([(2, FollowerState::reset(100, true)), (3, follower_at(9))]);
        assert_eq!(leader_high_watermark(5, 1, 10, &[1, 2, 3], &followers), 5);
        // Not in the ISR: does not hold the high watermark back.
        assert_eq!(leader_high_watermark(5, 1, 10, &[1, 3], &followers), 9);
    }

    #[test]
    fn fetch_at_the_leader_end_makes_the_follower_caught_up_now() {
        let mut follower = FollowerState::reset(1_000, false);
        follower.update_fetch_state(10, 2_000, 10);
        assert_eq!(follower.last_caught_up_time_ms, 2_000);
        assert_eq!(follower.log_end_offset, 10);
        assert_eq!(follower.lag(10), Some(0));
    }

    #[test]
    fn fetch_reaching_the_previous_leader_end_is_caught_up_as_of_the_previous_fetch() {
        let mut follower = FollowerState::reset(0, false);
        follower.update_fetch_state(5, 1_000, 10);
        assert_eq!(follower.last_caught_up_time_ms, 0);
        follower.update_fetch_state(10, 2_000, 15);
        assert_eq!(follower.last_caught_up_time_ms, 1_000);
        assert_eq!(follower.lag(15), Some(5));
    }

    #[test]
    fn lagging_follower_becomes_a_shrink_candidate_after_the_lag_time() {
        let mut follower = FollowerState::reset(0, true);
        follower.update_fetch_state(5, 1_000, 10);
        let followers = BTreeMap::from([(2, follower)]);
        assert!(shrink_candidates(1, 10, &[1, 2], &followers, 20_000, 30_000).is_empty());
        assert_eq!(
            shrink_candidates(1, 10, &[1, 2], &followers, 30_001, 30_000),
            vec![2]
        );
        // A follower at the leader's end is never a candidate.
        assert!(shrink_candidates(1, 5, &[1, 2], &followers, 90_000, 30_000).is_empty());
    }

    #[test]
    fn isr_follower_that_never_fetches_after_a_leader_change_is_removed_after_the_lag_time() {
        let followers = BTreeMap::from([(2, FollowerState::reset(1_000, true))]);
        assert!(shrink_candidates(1, 10, &[1, 2], &followers, 31_000, 30_000).is_empty());
        assert_eq!(
            shrink_candidates(1, 10, &[1, 2], &followers, 31_001, 30_000),
            vec![2]
        );
    }

    #[test]
    fn follower_joins_the_isr_at_the_high_watermark_and_the_epoch_start() {
        assert!(!is_follower_in_sync(UNKNOWN_OFFSET, 0, 0));
        assert!(!is_follower_in_sync(9, 10, 0));
        assert!(!is_follower_in_sync(10, 10, 12));
        assert!(is_follower_in_sync(12, 10, 12));
    }

    #[test]
    fn truncation_with_the_same_epoch_goes_to_the_smaller_end() {
        assert_eq!(
            truncation_point(3, 50, Some((3, 60)), 60, 40),
            TruncationPoint {
                offset: 50,
                completed: true
            }
        );
        assert_eq!(
            truncation_point(3, 80, Some((3, 60)), 60, 40),
            TruncationPoint {
                offset: 60,
                completed: true
            }
        );
    }

    #[test]
    fn truncation_to_a_lower_leader_epoch_uses_the_local_end_of_that_epoch() {
        // Follower wrote epochs 2 (0..30) and 4 (30..60); the leader's latest <= 4 is 2, ending at 25.
        assert_eq!(
            truncation_point(2, 25, Some((2, 30)), 60, 10),
            TruncationPoint {
                offset: 25,
                completed: true
            }
        );
    }

    #[test]
    fn truncation_when_the_follower_lacks_the_leaders_epoch_asks_again() {
        // Leader answered epoch 3, the follower has 2 (0..30) then 4: cut at 30, ask again.
        assert_eq!(
            truncation_point(3, 40, Some((2, 30)), 60, 10),
            TruncationPoint {
                offset: 30,
                completed: false
            }
        );
    }

    #[test]
    fn truncation_without_a_leader_answer_goes_to_the_high_watermark() {
        assert_eq!(
            truncation_point(-1, -1, Some((3, 60)), 60, 40),
            TruncationPoint {
                offset: 40,
                completed: true
            }
        );
        assert_eq!(
            truncation_point(2, 25, None, 60, 10),
            TruncationPoint {
                offset: 25,
                completed: true
            }
        );
    }
}
