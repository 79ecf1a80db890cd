//! One hosted partition: its log plus the replication state around it (leader epoch,
//! high watermark, log start/end offsets cached for lock-free reads).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use parking_lot::Mutex;
use silt_controller::{BrokerId, PartitionAssignment, TopicId};

use crate::log::PartitionLog;

/// A partition this broker hosts as a replica.
///
/// The log is behind a blocking mutex because every log call does file I/O and is made
/// from `spawn_blocking`. Offsets are mirrored in atomics so Fetch and Metadata can read
/// them without touching the log.
#[derive(Debug)]
pub struct Partition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
    /// Topic id the log was created for; a re-created topic has a new id and a new log.
    pub topic_id: TopicId,
    /// The partition's directory, `<log dir>/<topic>-<partition>`.
    pub dir: std::path::PathBuf,
    log: Arc<Mutex<PartitionLog>>,
    leader_epoch: AtomicI32,
    leader: AtomicI32,
    high_watermark: AtomicI64,
    log_end_offset: AtomicI64,
    log_start_offset: AtomicI64,
    isr: Mutex<Vec<BrokerId>>,
}

impl Partition {
    /// Wraps an opened log; offsets are read from it.
    pub fn new(topic: Arc<str>, partition: i32, topic_id: TopicId, log: PartitionLog) -> Self {
        let log_end_offset = log.log_end_offset();
        let log_start_offset = log.log_start_offset();
        Partition {
            topic,
            partition,
            topic_id,
            dir: log.dir().to_path_buf(),
            log: Arc::new(Mutex::new(log)),
            leader_epoch: AtomicI32::new(0),
            leader: AtomicI32::new(-1),
            // A single-replica ISR: everything recovered is committed.
            high_watermark: AtomicI64::new(log_end_offset),
            log_end_offset: AtomicI64::new(log_end_offset),
            log_start_offset: AtomicI64::new(log_start_offset),
            isr: Mutex::new(Vec::new()),
        }
    }

    /// The log, for use inside `spawn_blocking` only.
    pub fn log(&self) -> Arc<Mutex<PartitionLog>> {
        Arc::clone(&self.log)
    }

    /// Applies the controller's view of this partition (leader, leader epoch, ISR).
    pub fn apply_assignment(&self, assignment: &PartitionAssignment) {
        let previous_epoch = self.leader_epoch.load(Ordering::Acquire);
        debug_assert!(assignment.leader_epoch >= previous_epoch || previous_epoch == 0);
        self.leader_epoch.store(assignment.leader_epoch, Ordering::Release);
        self.leader.store(assignment.leader, Ordering::Release);
        *self.isr.lock() = assignment.isr.clone();
    }

    /// Current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Current leader broker id, -1 when there is none.
    pub fn leader(&self) -> BrokerId {
        self.leader.load(Ordering::Acquire)
    }

    /// In-sync replica set as last applied from the controller.
    pub fn isr(&self) -> Vec<BrokerId> {
        self.isr.lock().clone()
    }

    /// High watermark: the first offset not yet known to be committed (exclusive bound
    /// of what consumers may read).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Log end offset (LEO): the offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Log start offset: the first offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Refreshes the cached offsets after the log changed. With this broker as the only
    /// ISR member, the high watermark follows the LEO; replication will move it to the
    /// minimum LEO over the ISR.
    pub fn refresh_offsets(&self, log_start_offset: i64, log_end_offset: i64) {
        self.log_start_offset.store(log_start_offset, Ordering::Release);
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        self.high_watermark.store(log_end_offset, Ordering::Release);
        debug_assert!(self.high_watermark() <= self.log_end_offset());
    }
}
