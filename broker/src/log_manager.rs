//! Kafka's `LogManager` duties over the logs this broker hosts: the periodic retention
//! pass (`log.retention.check.interval.ms`) that applies `retention.ms`,
//! `retention.bytes` and the tiered local retention, and rolls idle active segments of
//! tiered topics after `segment.ms` (so their records reach the object store within a
//! bound), and the periodic flush (`log.flush.interval.ms`). The logs themselves are owned by the [`ReplicaManager`];
//! the recovery-point checkpoint is written by each log (`checkpoint`), the
//! high-watermark checkpoint by the replica manager, as in Kafka.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::background::every;
use crate::replica_manager::{ReplicaManager, now_ms, with_log, with_log_refreshed};

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

    /// Spawns the retention loop and, when configured, the flush loop. The tasks run
    /// until aborted.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::with_capacity(2);
        let retention = Arc::clone(self);
        let interval = self.config.retention_check_interval;
        tasks.push(tokio::spawn(async move {
            every(interval, || retention.run_retention_pass()).await;
        }));
        if let Some(interval) = self.config.flush_interval {
            let flushing = Arc::clone(self);
            tasks.push(tokio::spawn(async move {
                every(interval, || flushing.flush_all()).await;
            }));
        }
        tasks
    }

    /// One pass of time/size retention over every hosted partition, after rolling the
    /// idle active segments of tiered partitions this broker leads; returns the number
    /// of segments deleted. A partition that fails is logged and skipped.
    pub async fn run_retention_pass(&self) -> usize {
        let mut deleted_segments = 0;
        for hosted in self.replica_manager.all_partitions() {
            let leader = hosted.is_leader();
            let outcome = with_log_refreshed(&hosted, move |log| {
                let now = now_ms();
                let rolled = if leader {
                    log.roll_if_idle(now)
                } else {
                    Ok(false)
                };
                Ok((rolled, log.apply_retention(now)?, log.log_start_offset()))
            })
            .await;
            match outcome {
                Ok((rolled, deleted, log_start_offset)) => {
                    if let Err(error) = rolled {
                        warn!(topic = %hosted.topic, partition = hosted.partition, %error, "rolling an idle segment failed");
                    }
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
