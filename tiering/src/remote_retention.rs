//! Remote-tier retention (KIP-405): which remote segments `retention.ms` and
//! `retention.bytes` expire. Whole segments only, oldest first, as Kafka's
//! `RLMExpirationTask`.

use silt_controller::RemoteSegmentMetadata;

/// The limits of one partition's whole log (remote plus local).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteRetention {
    /// `retention.ms`; -1 = keep forever.
    pub(crate) retention_ms: i64,
    /// `retention.bytes`; negative = unlimited.
    pub(crate) retention_bytes: i64,
    /// Bytes of the local log not yet in remote storage (they count towards
    /// `retention.bytes` but are never deleted here).
    pub(crate) local_only_bytes: u64,
    /// The log start offset DeleteRecords set (`0` when never): segments wholly below
    /// it go whatever their age.
    pub(crate) log_start_offset: i64,
}

/// The leading run of `copied` (readable segments ordered by base offset) that retention
/// deletes at `now_ms`: segments wholly below `log_start_offset`, segments whose largest
/// timestamp is more than `retention_ms` old (a segment without timestamps goes by the
/// time its copy finished), then while the whole log minus the segment stays above
/// `retention_bytes`.
pub(crate) fn expired_segments<'a>(
    copied: &[&'a RemoteSegmentMetadata],
    retention: RemoteRetention,
    now_ms: i64,
) -> Vec<&'a RemoteSegmentMetadata> {
    let mut by_time = 0usize;
    if retention.retention_ms >= 0 {
        by_time = copied
            .iter()
            .take_while(|segment| {
                let timestamp = if segment.max_timestamp_ms >= 0 {
                    segment.max_timestamp_ms
                } else {
                    segment.event_timestamp_ms
                };
                now_ms.saturating_sub(timestamp) > retention.retention_ms
            })
            .count();
    }
    let mut by_size = 0usize;
    if retention.retention_bytes >= 0 {
        let remote_bytes: u64 = copied.iter().map(|segment| segment.size_bytes).sum();
        let total = remote_bytes.saturating_add(retention.local_only_bytes);
        let mut excess = i128::from(total) - i128::from(retention.retention_bytes);
        for segment in copied {
            let after = excess - i128::from(segment.size_bytes);
            if after < 0 {
                break;
            }
            excess = after;
            by_size += 1;
        }
    }
    let by_log_start = copied
        .iter()
        .take_while(|segment| segment.next_offset() <= retention.log_start_offset)
        .count();
    copied
        .iter()
        .take(by_time.max(by_size).max(by_log_start))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use silt_controller::{RemoteSegmentState, TopicId};
    use uuid::Uuid;

    use super::*;

    fn segment(base_offset: i64, max_timestamp_ms: i64, size_bytes: u64) -> RemoteSegmentMetadata {
        RemoteSegmentMetadata {
            topic_id: TopicId(Uuid::from_u128(1)),
            partition: 0,
            segment_id: Uuid::new_v4(),
            base_offset,
            end_offset: base_offset + 9,
            max_timestamp_ms,
            size_bytes,
            leader_epoch: 0,
            state: RemoteSegmentState::CopyFinished,
            broker_id: 0,
            event_timestamp_ms: 1_000_000,
            segment_leader_epochs: BTreeMap::new(),
            compacted: false,
        }
    }

    #[test]
    fn time_retention_deletes_the_old_prefix_only() {
        let segments = [
            segment(0, 100, 10),
            segment(10, 5_000, 10),
            segment(20, 200, 10),
        ];
        let refs: Vec<&RemoteSegmentMetadata> = segments.iter().collect();
        let retention = RemoteRetention {
            retention_ms: 1_000,
            retention_bytes: -1,
            local_only_bytes: 0,
            log_start_offset: 0,
        };
        let expired = expired_segments(&refs, retention, 5_500);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].base_offset, 0);
    }

    #[test]
    fn size_retention_counts_local_only_bytes() {
        let segments = [segment(0, 0, 100), segment(10, 0, 100), segment(20, 0, 100)];
        let refs: Vec<&RemoteSegmentMetadata> = segments.iter().collect();
        let retention = RemoteRetention {
            retention_ms: -1,
            retention_bytes: 250,
            local_only_bytes: 100,
            log_start_offset: 0,
        };
        // 400 bytes in all: without the oldest segment 300 remain; without two, 200 < 250.
        assert_eq!(expired_segments(&refs, retention, 0).len(), 1);
        let unlimited = RemoteRetention {
            retention_bytes: -1,
            ..retention
        };
        assert!(expired_segments(&refs, unlimited, 0).is_empty());
    }

    #[test]
    fn segments_wholly_below_the_log_start_offset_go_whatever_their_age() {
        let segments = [
            segment(0, 100, 10),
            segment(10, 100, 10),
            segment(20, 100, 10),
        ];
        let refs: Vec<&RemoteSegmentMetadata> = segments.iter().collect();
        let keep_all = RemoteRetention {
            retention_ms: -1,
            retention_bytes: -1,
            local_only_bytes: 0,
            log_start_offset: 0,
        };
        assert!(expired_segments(&refs, keep_all, 0).is_empty());
        // 15 lies inside the second segment [10, 19]: only the first is wholly below it.
        let below_15 = RemoteRetention {
            log_start_offset: 15,
            ..keep_all
        };
        assert_eq!(expired_segments(&refs, below_15, 0).len(), 1);
        let below_20 = RemoteRetention {
            log_start_offset: 20,
            ..keep_all
        };
        assert_eq!(expired_segments(&refs, below_20, 0).len(), 2);
    }
}
