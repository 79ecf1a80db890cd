//! Kafka's `LogManager` duties over the logs this broker hosts: the periodic retention
//! pass (`log.retention.check.interval.ms`) that applies `retention.ms`,
//! `retention.bytes` and the tiered local retention; every second, the roll of idle
//! active segments of tiered topics after `segment.ms` (so their records reach the
//! object store within a bound); and the periodic flush (`log.flush.interval.ms`). The logs themselves are owned by the [`ReplicaManager`];
//! the recovery-point checkpoint is written by each log (`checkpoint`), the
//! high-watermark checkpoint by the replica manager, as in Kafka.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::background::every;
use crate::replica_manager::{ReplicaManager, now_ms, with_log, with_log_refreshed};

/// How often the active segments of tiered partitions are checked against `segment.ms`
/// (at most [`LogManagerConfig::retention_check_interval`]): the delay a roll can add to
/// a record's way to the object store.
pub const IDLE_ROLL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// When the log manager's loops run.
#[derive(Debug, Clone)]
pub struct LogManagerConfig {
    /// `log.retention.check.interval.ms`: time between retention passes.
    pub retention_check_interval: Duration,
    /// `log.flush.interval.ms`: time between flushes of every log; `None` leaves
    /// flushing to each log's `flush.ms`/`flush.messages` and to the OS (Kafka's default).
    pub flush_interval: Option<Duration>,
}

/// Runs retention and flushes over every hosted log.
#[derive(Debug)]
pub struct LogManager {
    replica_manager: Arc<ReplicaManager>,
    config: LogManagerConfig,
}

impl LogManager {
    /// A log manager over `replica_manager`'s logs; nothing runs until [`Self::start`].
    pub fn new(replica_manager: Arc<ReplicaManager>, config: LogManagerConfig) -> Arc<Self> {
        Arc::new(LogManager {
            replica_manager,
            config,
        })
    }

    /// Spawns the retention loop, the idle-roll loop and, when configured, the flush
    /// loop. The tasks run until aborted.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::with_capacity(3);
        let retention = Arc::clone(self);
        let interval = self.config.retention_check_interval;
        tasks.push(tokio::spawn(async move {
            every(interval, || retention.run_retention_pass()).await;
        }));
        let rolling = Arc::clone(self);
        let roll_interval = IDLE_ROLL_CHECK_INTERVAL.min(interval);
        tasks.push(tokio::spawn(async move {
            every(roll_interval, || rolling.roll_idle_segments()).await;
        }));
        if let Some(interval) = self.config.flush_interval {
            let flushing = Arc::clone(self);
            tasks.push(tokio::spawn(async move {
                every(interval, || flushing.flush_all()).await;
            }));
        }
        tasks
    }

    /// Rolls the active segment of every tiered partition this broker leads that has
    /// held records for `segment.ms` ([`crate::log::PartitionLog::roll_if_idle`]);
    /// returns how many rolled. A partition that fails is logged and skipped.
    pub async fn roll_idle_segments(&self) -> usize {
        let mut rolled = 0;
        for hosted in self.replica_manager.all_partitions() {
            if !hosted.is_leader() {
                continue;
            }
            match with_log(&hosted, |log| log.roll_if_idle(now_ms())).await {
                Ok(true) => rolled += 1,
                Ok(false) => {}
                Err(error) => {
                    warn!(topic = %hosted.topic, partition = hosted.partition, %error, "rolling an idle segment failed");
                }
            }
        }
        rolled
    }

    /// One pass of time/size retention over every hosted partition; returns the number
    /// of segments deleted. A partition that fails is logged and skipped.
    pub async fn run_retention_pass(&self) -> usize {
        let mut deleted_segments = 0;
        for hosted in self.replica_manager.all_partitions() {
            let outcome = with_log_refreshed(&hosted, move |log| {
                Ok((log.apply_retention(now_ms())?, log.log_start_offset()))
            })
            .await;
            match outcome {
                Ok((deleted, log_start_offset)) => {
                    if deleted > 0 {
                        debug!(topic = %hosted.topic, partition = hosted.partition, deleted, log_start_offset, "retention deleted segments");
                    }
                    deleted_segments += deleted;
                }
                Err(error) => {
                    warn!(topic = %hosted.topic, partition = hosted.partition, %error, "retention pass failed")
                }
            }
        }
        deleted_segments
    }

    /// Flushes every log and checkpoints the high watermarks. A log that fails is
    /// logged and skipped.
    pub async fn flush_all(&self) {
        for hosted in self.replica_manager.all_partitions() {
            if let Err(error) = with_log(&hosted, |log| log.flush()).await {
                warn!(topic = %hosted.topic, partition = hosted.partition, %error, "flush failed");
            }
        }
        self.replica_manager.checkpoint_high_watermarks().await;
    }
}
