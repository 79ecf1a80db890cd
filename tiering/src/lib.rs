//! Silt tiered storage (KIP-405): the copy path that ships sealed log segments to object
//! storage and applies remote and local retention, plus the object layout shared with the
//! read path.
//!
//! - [`open_object_store`] opens the object store (local filesystem or S3) from an
//!   [`ObjectStoreConfig`];
//! - [`object_layout`] names every remote object;
//! - [`RemoteLogManager`] runs the periodic copy, cleanup and retention task;
//! - [`remote_reader`] serves reads of remote segments through [`chunk_cache`];
//! - `testsuite` (feature `testsuite`) is the RemoteLog conformance suite.

pub mod chunk_cache;
pub mod config;
pub mod object_layout;
mod orphan_cleanup;
mod prefix_owner;
mod remote_log_manager;
pub mod remote_reader;
mod remote_retention;
pub mod restore_point;
mod segment_upload;
mod store;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use crate::config::TieringConfig;
pub use crate::object_layout::{
    ObjectKind, parse_segment_object, segment_object, segment_object_prefix, topic_dir_name,
};
pub use crate::prefix_owner::{CLUSTER_MARKER, claim_prefix, owns_prefix};
pub use crate::remote_log_manager::{RemoteLogManager, RoundSummary};
pub use crate::segment_upload::CleanedSegment;
pub use crate::store::{ObjectStoreConfig, open_object_store};

use silt_broker::log::LogError;
use silt_controller::ControllerError;

/// Errors of tiering operations.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TieringError {
    /// The object store refused or failed a request (after its own retries).
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The controller refused or failed a metadata change.
    #[error("controller: {0}")]
    Controller(#[from] ControllerError),
    /// Reading a local segment file failed.
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    /// The partition log refused an operation.
    #[error("partition log: {0}")]
    Log(#[from] LogError),
    /// A bad [`ObjectStoreConfig`] or [`TieringConfig`]; carries a description.
    #[error("invalid tiering config: {0}")]
    InvalidConfig(String),
    /// A blocking task failed to complete (panicked or was cancelled).
    #[error("blocking task failed: {0}")]
    Task(String),
    /// The object-store prefix belongs to another cluster (its `cluster.json` names it).
    #[error(
        "object store prefix '{prefix}' belongs to cluster {owner}, not to this cluster ({cluster_id}): \
         two clusters must never share a prefix; give this cluster an --object-store prefix of its own"
    )]
    PrefixOwned {
        /// The prefix.
        prefix: String,
        /// The cluster id in the prefix's marker.
        owner: String,
        /// This cluster's id.
        cluster_id: String,
    },
    /// An unmarked prefix holds objects of a topic this cluster does not know: another
    /// cluster's archive.
    #[error(
        "object store prefix '{prefix}' holds another cluster's data (topic folder {topic_dir}) \
         and this cluster ({cluster_id}) did not write it: give this cluster an --object-store \
         prefix of its own"
    )]
    ForeignObjects {
        /// The prefix.
        prefix: String,
        /// The first unknown `<topic>-<topicId>` folder.
        topic_dir: String,
        /// This cluster's id.
        cluster_id: String,
    },
    /// The prefix's `cluster.json` cannot be read as a marker.
    #[error("corrupt cluster marker {object}: {reason}; fix or remove it if this prefix is yours")]
    CorruptMarker {
        /// The marker object's path.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A restore point object does not check out (torn, damaged, or not a restore point).
    #[error("restore point {object} is unusable: {reason}")]
    CorruptRestorePoint {
        /// The object's path (or the restore point id before it is written).
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No restore point under the prefix matches what was asked for.
    #[error(
        "no usable restore point under '{prefix}' matches {wanted}; list them with \
         `silt restore-points list`"
    )]
    NoRestorePoint {
        /// The prefix.
        prefix: String,
        /// What was asked for.
        wanted: String,
    },
    /// The partition changed under the upload (leadership or leader epoch moved, or the
    /// segment is gone); the copy was abandoned and will be retried by the new leader.
    #[error("partition changed during the copy: {0}")]
    PartitionChanged(String),
}
