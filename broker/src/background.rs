//! Threads that do background work: the log's housekeeping (starting writeback,
//! allocating standby segment files, fsyncing rolled segments), the key cleaners, and
//! the table exporter's Parquet encoding ([`run_niced`]); and [`every`], the loop of
//! the periodic async passes (retention, flush, ISR maintenance).
//!
//! They run at a lower CPU priority (nice [`BACKGROUND_NICE`]) than the threads
//! serving requests. On a machine with few cores, six partitions rolling at once put
//! six fsyncs and their index writes on the CPUs next to the produce path; at the
//! default priority the request threads then wait, runnable, for as long as that work
//! runs. Their I/O is not affected: it is issued by the same syscalls, only scheduled
//! later when the CPUs are busy.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::debug;

/// Nice value of background threads (request threads keep the process's, usually 0).
/// Linux gives a nice-10 thread about a tenth of a nice-0 thread's CPU share while
/// both are runnable.
pub const BACKGROUND_NICE: i32 = 10;

/// Starts a thread named `name` that lowers its own CPU priority to
/// [`BACKGROUND_NICE`] and then runs `work`.
///
/// # Errors
/// The thread could not be created. Failing to lower the priority is not an
/// error: the work then runs at the default priority.
pub fn spawn<T, F>(name: String, work: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_at_nice(name, BACKGROUND_NICE, work)
}

/// [`spawn`] at nice value `nice` (19, the lowest priority, for work that may wait
/// whenever the broker is busy).
///
/// # Errors
/// As [`spawn`].
pub fn spawn_at_nice<T, F>(name: String, nice: i32, work: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        lower_priority_to(nice);
        work()
    })
}

/// Runs `work` on a new background thread named `name` (see [`spawn`]) and waits for
/// it without blocking the async runtime (tokio's blocking pool serves the broker's
/// disk I/O, so its threads are not reniced).
///
/// # Errors
/// The thread could not be created, or `work` panicked.
pub async fn run_niced<T, F>(name: &str, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_at_nice(name, BACKGROUND_NICE, work).await
}

/// [`run_niced`] at nice value `nice`.
///
/// # Errors
/// As [`run_niced`].
pub async fn run_at_nice<T, F>(name: &str, nice: i32, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let _thread = spawn_at_nice(name.to_string(), nice, move || {
        let _receiver_gone = sender.send(work());
    })?;
    receiver
        .await
        .map_err(|_| io::Error::other(format!("background thread {name} panicked")))
}

/// Raises the calling thread's nice value to [`BACKGROUND_NICE`] unless it is
/// higher already (a broker started under `nice -n 15` keeps 15). On Linux the nice
/// value belongs to the thread, not the process (setpriority(2), NOTES).
pub fn lower_priority() {
    lower_priority_to(BACKGROUND_NICE);
}

/// Raises the calling thread's nice value to `target` unless it is higher already.
pub fn lower_priority_to(target: i32) {
    let thread = Some(rustix::thread::gettid());
    let lowered = rustix::process::getpriority_process(thread).and_then(|nice| {
        if nice < target {
            rustix::process::setpriority_process(thread, target)
        } else {
            Ok(())
        }
    });
    if let Err(error) = lowered {
        debug!(%error, "could not lower a background thread's priority");
    }
}

/// Runs `pass` every `interval` (at least 1 ms; a late tick delays the next ones).
pub(crate) async fn every<F, Fut>(interval: Duration, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let _ = ticker.tick().await;
        let _ = pass().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_threads_run_at_the_lower_priority() {
        let own_before = rustix::process::getpriority_process(None).expect("getpriority");
        let nice = spawn("silt-test-background".to_string(), || {
            rustix::process::getpriority_process(None)
        })
        .expect("spawn")
        .join()
        .expect("join")
        .expect("getpriority");
        assert_eq!(nice, own_before.max(BACKGROUND_NICE));
        // The thread that spawned it keeps its own priority.
        let own_after = rustix::process::getpriority_process(None).expect("getpriority");
        assert_eq!(own_after, own_before);
    }
}
