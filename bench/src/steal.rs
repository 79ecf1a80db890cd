//! CPU time the hypervisor took from this machine during a run.
//!
//! On a virtual machine a vCPU that has work can still wait while the host runs
//! something else. Linux counts that wait as `steal` in `/proc/stat` (in
//! `USER_HZ` ticks, 10 ms on most systems). Both the broker and the load
//! generator stop during it, so a stall that lines up with steal says nothing
//! about either of them. The sampler reads the all-CPU total on a thread of its
//! own. Where `/proc/stat` cannot be read or has no steal field (not Linux) it
//! samples nothing and the reports carry no steal figure; a machine without a
//! paravirtual steal clock reports 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use procfs::{CurrentSI, KernelStats};

/// How often `/proc/stat` is read. Its counters move in 10 ms ticks, so sampling
/// more often adds no precision to a 100 ms stall window.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// One reading: the all-CPU steal total (ms since boot) at `at_us` µs after the
/// sampler's `origin`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_us: u64,
    steal_ms: u64,
}

/// Reads the host's steal time in the background until [`StealSampler::finish`].
pub(crate) struct StealSampler {
    origin: Instant,
    /// 0 when there is nothing to sample.
    cpus: usize,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The steal totals read over a run, for [`StealSamples::between`].
#[derive(Debug, Clone, Default)]
pub(crate) struct StealSamples {
    samples: Vec<Sample>,
    /// CPUs the totals are summed over.
    pub(crate) cpus: usize,
}

/// The all-CPU steal total in ms, and the number of CPUs.
fn read_steal_ms() -> Option<(u64, usize)> {
    let stats = KernelStats::current().ok()?;
    Some((stats.total.steal_ms()?, stats.cpu_time.len()))
}

fn push_reading(samples: &Mutex<Vec<Sample>>, origin: Instant) {
    if let Some((steal_ms, _)) = read_steal_ms() {
        let at_us = origin.elapsed().as_micros() as u64;
        samples.lock().push(Sample { at_us, steal_ms });
    }
}

impl StealSampler {
    /// Takes a first reading and starts sampling; times are µs since `origin`.
    /// Returns a sampler that never samples when that reading finds no steal
    /// counter, or only takes the first and last readings when the thread cannot be
    /// started.
    pub(crate) fn start(origin: Instant) -> StealSampler {
        let first_reading = read_steal_ms();
        let first = first_reading.map(|(steal_ms, _)| Sample {
            at_us: origin.elapsed().as_micros() as u64,
            steal_ms,
        });
        let samples = Arc::new(Mutex::new(Vec::from_iter(first)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = first.and_then(|_| {
            let samples = samples.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-steal".to_string())
                .spawn(move || {
                    std::thread::sleep(SAMPLE_INTERVAL);
                    while !stop.load(Ordering::Relaxed) {
                        push_reading(&samples, origin);
                        std::thread::sleep(SAMPLE_INTERVAL);
                    }
                })
                .ok()
        });
        StealSampler {
            origin,
            cpus: first_reading.map_or(0, |(_, cpus)| cpus),
            samples,
            stop,
            thread,
        }
    }

    /// Stops the thread, takes a last reading and returns every reading.
    pub(crate) fn finish(mut self) -> StealSamples {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and reads /proc/stat; a panic there loses
            // readings, not the run.
            let _ = thread.join();
        }
        if self.cpus > 0 {
            push_reading(&self.samples, self.origin);
        }
        StealSamples {
            samples: std::mem::take(&mut *self.samples.lock()),
            cpus: self.cpus,
        }
    }
}

impl StealSamples {
    /// Steal in ms, summed over all CPUs, between the last reading at or before
    /// `from_us` and the first at or after `to_us` (µs since the sampler's origin):
    /// an upper bound for the span asked for, which the readings cover with up to
    /// one sampling interval on each side. None without readings on both sides.
    pub(crate) fn between(&self, from_us: u64, to_us: u64) -> Option<u64> {
        let first = self
            .samples
            .iter()
            .rev()
            .find(|sample| sample.at_us <= from_us)?;
        let last = self.samples.iter().find(|sample| sample.at_us >= to_us)?;
        Some(last.steal_ms.saturating_sub(first.steal_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(u64, u64)]) -> StealSamples {
        StealSamples {
            samples: points
                .iter()
                .map(|&(at_us, steal_ms)| Sample { at_us, steal_ms })
                .collect(),
            cpus: 2,
        }
    }

    #[test]
    fn steal_between_covers_the_span_with_the_readings_around_it() {
        let readings = samples(&[(0, 100), (50_000, 100), (100_000, 130), (150_000, 150)]);
        assert_eq!(readings.between(50_000, 100_000), Some(30));
        assert_eq!(readings.between(60_000, 110_000), Some(50));
        assert_eq!(readings.between(0, 150_000), Some(50));
        assert_eq!(
            readings.between(0, 160_000),
            None,
            "no reading after the span"
        );
        assert_eq!(samples(&[]).between(0, 1), None);
    }

    #[test]
    fn a_sampler_on_linux_reads_the_counter_while_it_runs() {
        let origin = Instant::now();
        let sampler = StealSampler::start(origin);
        std::thread::sleep(SAMPLE_INTERVAL * 3);
        let readings = sampler.finish();
        if read_steal_ms().is_some() {
            let until = origin.elapsed().as_micros() as u64;
            let all = &readings.samples;
            // The first reading at start, the last at finish.
            assert!(all.len() >= 2, "{readings:?}");
            assert!(readings.cpus >= 1);
            let (first, last) = (all[0], all[all.len() - 1]);
            assert!(readings.between(first.at_us, last.at_us).is_some());
            assert!(
                all.windows(2).all(|pair| pair[0].at_us <= pair[1].at_us),
                "{readings:?}"
            );
            assert!(last.at_us <= until);
        } else {
            assert!(readings.samples.is_empty());
        }
    }
}
