//! `log.cleaner.io.max.bytes.per.second`: the cleaner's read and write rate, shared by
//! every cleaner thread, as Kafka's `Throttler`. Cleaner threads are plain threads, so
//! waiting is a sleep.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often the rate is checked: bytes are counted over windows this long.
const CHECK_WINDOW: Duration = Duration::from_millis(100);

/// Limits the bytes per second moved through [`Throttler::maybe_throttle`].
#[derive(Debug)]
pub struct Throttler {
    bytes_per_second: f64,
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

    /// Counts `bytes` and sleeps while the current window is ahead of the rate.
    pub fn maybe_throttle(&self, bytes: u64) {
        if self.bytes_per_second <= 0.0 || self.bytes_per_second >= f64::MAX {
            return;
        }
        let sleep = {
            let mut window = self.window.lock();
            window.1 += bytes as f64;
            let elapsed = window.0.elapsed();
            if elapsed < CHECK_WINDOW {
                return;
            }
            let wanted = Duration::from_secs_f64(window.1 / self.bytes_per_second);
            *window = (Instant::now(), 0.0);
            wanted.saturating_sub(elapsed)
        };
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}
