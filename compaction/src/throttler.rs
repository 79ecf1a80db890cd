//! `log.cleaner.io.max.bytes.per.second`: the cleaner's read and write rate, shared by
//! every cleaner thread, as Kafka's `Throttler`. Cleaner threads are plain threads, so
//! waiting is a sleep.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Bytes are counted over windows of about this length, so a pause of the cleaner does
/// not turn into a burst afterwards.
const WINDOW: Duration = Duration::from_secs(1);

/// Limits the bytes per second moved through [`Throttler::maybe_throttle`].
#[derive(Debug)]
pub struct Throttler {
    bytes_per_second: f64,
    /// Start of the current window and the bytes counted in it.
    window: Mutex<(Instant, f64)>,
}

impl Throttler {
    /// A throttler allowing `bytes_per_second`; `f64::MAX` (Kafka's default) or any
    /// non-positive value never waits.
    pub fn new(bytes_per_second: f64) -> Throttler {
        Throttler {
            bytes_per_second,
            window: Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// Counts `bytes` and sleeps for as long as the window is ahead of the rate.
    pub fn maybe_throttle(&self, bytes: u64) {
        if self.bytes_per_second <= 0.0 || self.bytes_per_second >= f64::MAX {
            return;
        }
        let sleep = {
            let mut window = self.window.lock();
            window.1 += bytes as f64;
            let elapsed = window.0.elapsed();
            let due = Duration::from_secs_f64(window.1 / self.bytes_per_second);
            let sleep = due.saturating_sub(elapsed);
            if sleep.is_zero() && elapsed >= WINDOW {
                *window = (Instant::now(), 0.0);
            }
            sleep
        };
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_over_many_small_calls() {
        let throttler = Throttler::new(1_000_000.0);
        let started = Instant::now();
        for _ in 0..20 {
            throttler.maybe_throttle(10_000);
        }
        // 200 kB at 1 MB/s: at least about 0.2 s (the first call's bytes are due too).
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        let unlimited = Throttler::new(f64::MAX);
        let started = Instant::now();
        unlimited.maybe_throttle(u64::MAX);
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
