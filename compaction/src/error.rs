//! Errors of the cleaner.

use silt_broker::log::LogError;
use silt_broker::record_batch::BatchError;

/// Why a cleaning pass stopped. Nothing acknowledged is lost by any of them: a pass
/// installs each replacement segment whole or not at all.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum CleanerError {
    /// The log refused a replacement or failed while installing one.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A batch of a sealed segment could not be framed or decoded.
    #[error("segment batch: {0}")]
    Batch(#[from] BatchError),
    /// Reading a sealed segment failed.
    #[error("cleaner i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A segment the pass planned with was deleted (retention) before it was read; the
    /// next pass plans again.
    #[error("segment {0} was deleted during the pass")]
    SegmentGone(String),
    /// The cleaner is shutting down.
    #[error("the cleaner is stopping")]
    Stopped,
    /// Reading, uploading or swapping a remote segment failed (object store or
    /// controller); the old segments stay readable.
    #[error("remote tier: {0}")]
    Remote(#[from] silt_tiering::TieringError),
    /// The controller refused a remote swap because the partition's remote segments
    /// changed meanwhile (retention, another swap, a new leader).
    #[error("the remote segments of {0} changed during the pass")]
    RemoteSwapRefused(String),
    /// The offset map cannot hold the keys of one remote segment.
    #[error(
        "the offset map cannot hold the keys of one remote segment of {segment_bytes} bytes: \
         raise log.cleaner.dedupe.buffer.size or lower log.cleaner.threads"
    )]
    MapTooSmall {
        /// Size of the segment (bytes).
        segment_bytes: u64,
    },
}

impl CleanerError {
    /// Whether the log changed under the pass (a truncation, a deleted segment) rather
    /// than failed: the pass is dropped quietly and retried.
    pub fn is_abort(&self) -> bool {
        matches!(
            self,
            CleanerError::SegmentGone(_)
                | CleanerError::Stopped
                | CleanerError::RemoteSwapRefused(_)
                | CleanerError::Log(LogError::CleaningAborted(_))
        )
    }
}
