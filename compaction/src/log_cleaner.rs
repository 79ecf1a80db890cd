//! The background cleaner (Kafka's `LogCleaner` with its `LogCleanerManager`):
//! `log.cleaner.threads` threads take, one at a time, the hosted compacted log with the
//! highest dirty ratio that is due, and clean it. Leaders and followers clean their own
//! replicas: offsets never change, so replicas stay comparable offset by offset.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use silt_broker::ReplicaManager;
use silt_broker::partition::Partition;
use silt_broker::replica_manager::now_ms;
use tracing::{debug, info, warn};

use crate::cleaner::{Cleaner, CleanerConfig, log_pass, plan};
use crate::throttler::Throttler;
use silt_broker::background::lower_priority;

/// The broker settings of the cleaner, under Kafka's names.
#[derive(Debug, Clone)]
pub struct LogCleanerConfig {
    /// `log.cleaner.enable`: whether compacted topics are cleaned. Default true.
    pub enable: bool,
    /// `log.cleaner.threads`: cleaner threads. Default 1.
    pub threads: usize,
    /// `log.cleaner.dedupe.buffer.size`: offset map budget of all threads together
    /// (bytes). Default 128 MiB.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: read plus write rate of all threads
    /// together (bytes/s). Default unlimited (`f64::MAX`).
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: sleep when no log is due. Default 15 s.
    pub backoff: Duration,
}

impl Default for LogCleanerConfig {
    fn default() -> LogCleanerConfig {
        LogCleanerConfig {
            enable: true,
            threads: 1,
            dedupe_buffer_bytes: 128 * 1024 * 1024,
            io_max_bytes_per_second: f64::MAX,
            backoff: Duration::from_secs(15),
        }
    }
}

/// State the cleaner threads share.
struct Shared {
    replica_manager: Arc<ReplicaManager>,
    config: LogCleanerConfig,
    throttler: Arc<Throttler>,
    /// `(topic, partition)` of the logs being cleaned: one thread per log.
    in_progress: Mutex<HashSet<(Arc<str>, i32)>>,
    stopping: Arc<AtomicBool>,
    /// Wakes sleeping threads on shutdown.
    wake: (Mutex<()>, Condvar),
}

/// Running cleaner threads; [`LogCleaner::shutdown`] stops them.
pub struct LogCleaner {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LogCleaner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LogCleaner")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl LogCleaner {
    /// Starts `config.threads` cleaner threads over `replica_manager`'s logs; none when
    /// `log.cleaner.enable` is false.
    pub fn start(replica_manager: Arc<ReplicaManager>, config: LogCleanerConfig) -> LogCleaner {
        let threads = if config.enable {
            config.threads.max(1)
        } else {
            0
        };
        let shared = Arc::new(Shared {
            replica_manager,
            throttler: Arc::new(Throttler::new(config.io_max_bytes_per_second)),
            config,
            in_progress: Mutex::new(HashSet::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            wake: (Mutex::new(()), Condvar::new()),
        });
        let handles = (0..threads)
            .filter_map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("log-cleaner-{index}"))
                    .spawn(move || {
                        lower_priority();
                        run(&shared, threads);
                    })
                    .map_err(|error| warn!(%error, "starting a log cleaner thread failed"))
                    .ok()
            })
            .collect::<Vec<_>>();
        if threads > 0 {
            info!(threads, "log cleaner started");
        }
        LogCleaner {
            shared,
            threads: handles,
        }
    }

    /// The I/O rate limiter the threads share, for the remote cleaner to share too.
    pub fn throttler(&self) -> Arc<Throttler> {
        Arc::clone(&self.shared.throttler)
    }

    /// Stops the threads after the pass each is in (a pass in progress finishes its
    /// current group) and waits for them.
    pub fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.wake.0.lock();
            self.shared.wake.1.notify_all();
        }
        for thread in self.threads {
            let _joined = thread.join();
        }
    }
}

/// One cleaner thread: clean the dirtiest due log, or sleep for the backoff.
fn run(shared: &Shared, threads: usize) {
    let cleaner = Cleaner::new(
        CleanerConfig {
            dedupe_buffer_bytes: shared.config.dedupe_buffer_bytes / threads.max(1),
        },
        Arc::clone(&shared.throttler),
        Arc::clone(&shared.stopping),
    );
    while !shared.stopping.load(Ordering::SeqCst) {
        let cleaned = match grab_dirtiest(shared) {
            Some(partition) => {
                let key = (Arc::clone(&partition.topic), partition.partition);
                clean_one(&partition, &cleaner);
                let _removed = shared.in_progress.lock().remove(&key);
                true
            }
            None => false,
        };
        if !cleaned {
            let mut guard = shared.wake.0.lock();
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            let _timed_out = shared.wake.1.wait_for(&mut guard, shared.config.backoff);
        }
    }
}

/// The hosted log with the highest dirty ratio that is due and not being cleaned,
/// marked in progress.
fn grab_dirtiest(shared: &Shared) -> Option<Arc<Partition>> {
    let now = now_ms();
    let mut best: Option<(f64, Arc<Partition>)> = None;
    for partition in shared.replica_manager.all_partitions() {
        let key = (Arc::clone(&partition.topic), partition.partition);
        if shared.in_progress.lock().contains(&key) {
            continue;
        }
        let view = partition.log().lock().cleaning_view();
        if view.config.remote_storage_enable {
            // Tiered topics are compacted in the bucket (the remote cleaner); their
            // local segments are the ones the tiering service copies, as written.
            continue;
        }
        let Some(plan) = plan(&view, now) else {
            continue;
        };
        if !plan.is_due(view.config.min_cleanable_dirty_ratio) {
            continue;
        }
        let ratio = if plan.overdue {
            f64::MAX
        } else {
            plan.dirty_ratio
        };
        if best
            .as_ref()
            .is_none_or(|(best_ratio, _)| ratio > *best_ratio)
        {
            best = Some((ratio, partition));
        }
    }
    let (_, partition) = best?;
    let key = (Arc::clone(&partition.topic), partition.partition);
    shared.in_progress.lock().insert(key).then_some(partition)
}

fn clean_one(partition: &Partition, cleaner: &Cleaner) {
    let log = partition.log();
    let started = std::time::Instant::now();
    match cleaner.clean(&log, now_ms(), false) {
        Ok(Some(stats)) => {
            log_pass(
                &partition.topic,
                partition.partition,
                &stats,
                started.elapsed().as_millis(),
            );
            metrics::counter!("silt_log_cleaner_passes_total").increment(1);
            metrics::counter!("silt_log_cleaner_records_removed_total")
                .increment(stats.records_removed);
            metrics::counter!("silt_log_cleaner_bytes_reclaimed_total")
                .increment(stats.bytes_before.saturating_sub(stats.bytes_after));
        }
        Ok(None) => {}
        Err(error) if error.is_abort() => {
            debug!(topic = %partition.topic, partition = partition.partition, %error, "cleaning pass dropped; the next one starts over");
        }
        Err(error) => {
            metrics::counter!("silt_log_cleaner_failures_total").increment(1);
            warn!(topic = %partition.topic, partition = partition.partition, %error, "cleaning pass failed");
        }
    }
}
