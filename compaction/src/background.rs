//! Where the cleaners' CPU work runs: threads of lower scheduling priority (nice 10),
//! so a cleaner at full speed takes the CPU the hot path leaves idle rather than
//! competing with produce and fetch on equal terms (on a 2-core host the difference
//! is several times the produce p99; see `docs/benchmarks.md`).

use tracing::debug;

use crate::error::CleanerError;

/// Niceness of cleaner threads (0 is the default, 19 the lowest priority).
const CLEANER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`CLEANER_NICE`]. On Linux a
/// thread id passed as the process id of `setpriority` changes that thread only.
/// Failing is harmless: the thread runs at normal priority.
pub(crate) fn lower_thread_priority() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), CLEANER_NICE) {
        debug!(%error, "lowering a cleaner thread's priority failed");
    }
}

/// Runs `work` on a new thread of lower priority and waits for it without blocking
/// the async runtime (tokio's blocking pool is shared with the broker's disk I/O, so
/// its threads are not reniced).
///
/// # Errors
/// [`CleanerError::Io`] when the thread cannot be started or `work` panicked.
pub(crate) async fn run_niced<T, F>(work: F) -> Result<T, CleanerError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let _thread = std::thread::Builder::new()
        .name("remote-cleaner".into())
        .spawn(move || {
            lower_thread_priority();
            let _receiver_gone = sender.send(work());
        })?;
    receiver
        .await
        .map_err(|_| CleanerError::Io(std::io::Error::other("a remote cleaner thread panicked")))
}
