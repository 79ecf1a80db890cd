//! Incremental fetch sessions (KIP-227): the broker remembers a client's partition set
//! and fetch positions so later Fetch requests only carry what changed, and responses
//! only carry partitions with news.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;

/// Epoch asking for a full fetch without (or closing) a session.
pub const FINAL_EPOCH: i32 = -1;
/// Epoch asking to open a new session.
pub const INITIAL_EPOCH: i32 = 0;

/// Sessions idle longer than this are evicted.
const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A topic partition in a fetch session.
pub type SessionKey = (String, i32);

/// What the session holds per partition: the client's position and what the client was
/// last told, so unchanged partitions can be left out of incremental responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPartition {
    /// Next offset the client wants.
    pub fetch_offset: i64,
    /// `partition_max_bytes` from the request, bytes.
    pub partition_max_bytes: i32,
    /// Client's view of the leader epoch (-1 = unknown).
    pub current_leader_epoch: i32,
    /// High watermark last sent (-1 = never).
    pub last_high_watermark: i64,
    /// Log start offset last sent (-1 = never).
    pub last_log_start_offset: i64,
}

#[derive(Debug)]
struct FetchSession {
    next_epoch: i32,
    partitions: IndexMap<SessionKey, SessionPartition>,
    last_used: Instant,
}

/// The outcome of resolving a Fetch request's session fields.
#[derive(Debug)]
pub enum SessionResolution {
    /// Sessionless full fetch: answer every requested partition, session id 0.
    Sessionless,
    /// Full fetch that opened session `session_id`; answer every partition.
    Opened {
        /// New session id.
        session_id: i32,
    },
    /// Incremental fetch on an existing session; `partitions` is the session's whole set.
    Incremental {
        /// Session id.
        session_id: i32,
        /// Every partition in the session after applying the request.
        partitions: Vec<(SessionKey, SessionPartition)>,
    },
    /// The request's session cannot be used: answer with this top-level error.
    Error(ResponseError),
}

/// Every open fetch session of the broker.
#[derive(Debug)]
pub struct FetchSessionCache {
    sessions: Mutex<HashMap<i32, FetchSession>>,
    next_session_id: AtomicI32,
    max_sessions: usize,
}

impl FetchSessionCache {
    /// At most `max_sessions` sessions are kept; beyond that new full fetches run sessionless.
    pub fn new(max_sessions: usize) -> Self {
        FetchSessionCache {
            sessions: Mutex::new(HashMap::new()),
            next_session_id: AtomicI32::new(1),
            max_sessions,
        }
    }

    /// Resolves a request's `session_id`/`session_epoch` (KIP-227 rules), applying its
    /// partitions and forgotten topics to an existing session.
    pub fn resolve(
        &self,
        session_id: i32,
        session_epoch: i32,
        requested: Vec<(SessionKey, SessionPartition)>,
        forgotten: Vec<SessionKey>,
    ) -> SessionResolution {
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, session| now.duration_since(session.last_used) < SESSION_IDLE_TIMEOUT);
        if session_epoch == FINAL_EPOCH {
            if session_id != 0 {
                let _ = sessions.remove(&session_id);
            }
            return SessionResolution::Sessionless;
        }
        if session_epoch == INITIAL_EPOCH {
            if session_id != 0 {
                let _ = sessions.remove(&session_id);
            }
            if sessions.len() >= self.max_sessions {
                return SessionResolution::Sessionless;
            }
            let new_id = self.allocate_id(&sessions);
            let partitions: IndexMap<SessionKey, SessionPartition> =
                requested.into_iter().collect();
            let _ = sessions.insert(
                new_id,
                FetchSession {
                    next_epoch: 1,
                    partitions,
                    last_used: now,
                },
            );
            return SessionResolution::Opened { session_id: new_id };
        }
        let Some(session) = sessions.get_mut(&session_id) else {
            return SessionResolution::Error(ResponseError::FetchSessionIdNotFound);
        };
        if session.next_epoch != session_epoch {
            return SessionResolution::Error(ResponseError::InvalidFetchSessionEpoch);
        }
        session.next_epoch = next_epoch(session_epoch);
        session.last_used = now;
        for key in forgotten {
            let _ = session.partitions.shift_remove(&key);
        }
        for (key, update) in requested {
            match session.partitions.get_mut(&key) {
                Some(existing) => {
                    existing.fetch_offset = update.fetch_offset;
                    existing.partition_max_bytes = update.partition_max_bytes;
                    existing.current_leader_epoch = update.current_leader_epoch;
                }
                None => {
                    let _ = session.partitions.insert(key, update);
                }
            }
        }
        let partitions = session
            .partitions
            .iter()
            .map(|(key, partition)| (key.clone(), partition.clone()))
            .collect();
        SessionResolution::Incremental {
            session_id,
            partitions,
        }
    }

    /// Records what was sent for a partition of a session, so the next incremental
    /// response can skip it when nothing changed.
    pub fn record_sent(
        &self,
        session_id: i32,
        key: &SessionKey,
        high_watermark: i64,
        log_start_offset: i64,
    ) {
        if let Some(session) = self.sessions.lock().get_mut(&session_id)
            && let Some(partition) = session.partitions.get_mut(key)
        {
            partition.last_high_watermark = high_watermark;
            partition.last_log_start_offset = log_start_offset;
        }
    }

    /// Number of open sessions (a metric).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn allocate_id(&self, sessions: &HashMap<i32, FetchSession>) -> i32 {
        loop {
            let candidate = self.next_session_id.fetch_add(1, Ordering::Relaxed);
            if candidate > 0 && !sessions.contains_key(&candidate) {
                return candidate;
            }
            if candidate <= 0 {
                self.next_session_id.store(1, Ordering::Relaxed);
            }
        }
    }
}

/// Session epochs wrap from i32::MAX to 1 (0 and -1 are reserved).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(offset: i64) -> SessionPartition {
        SessionPartition {
            fetch_offset: offset,
            partition_max_bytes: 1024,
            current_leader_epoch: -1,
            last_high_watermark: -1,
            last_log_start_offset: -1,
        }
    }

    #[test]
    fn session_opens_then_accepts_only_the_next_epoch() {
        let cache = FetchSessionCache::new(10);
        let SessionResolution::Opened { session_id } = cache.resolve(
            0,
            INITIAL_EPOCH,
            vec![
                (("t".into(), 0), partition(0)),
                (("t".into(), 1), partition(0)),
            ],
            vec![],
        ) else {
            panic!("expected a new session");
        };
        let SessionResolution::Incremental { partitions, .. } =
            cache.resolve(session_id, 1, vec![(("t".into(), 0), partition(5))], vec![])
        else {
            panic!("expected incremental");
        };
        assert_eq!(partitions.len(), 2);
        assert_eq!(partitions[0].1.fetch_offset, 5);
        assert!(matches!(
            cache.resolve(session_id, 1, vec![], vec![]),
            SessionResolution::Error(ResponseError::InvalidFetchSessionEpoch)
        ));
        let SessionResolution::Incremental { partitions, .. } =
            cache.resolve(session_id, 2, vec![], vec![("t".into(), 1)])
        else {
            panic!("expected incremental");
        };
        assert_eq!(partitions.len(), 1);
        assert!(matches!(
            cache.resolve(999, 1, vec![], vec![]),
            SessionResolution::Error(ResponseError::FetchSessionIdNotFound)
        ));
    }
}
