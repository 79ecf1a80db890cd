//! Tiering's integration tests, in one binary: the RemoteLog conformance suite
//! (`silt_tiering::testsuite`) against an in-memory store, the local filesystem and S3;
//! damaged remote objects; the chunk cache; segment uploads, their cleanup and
//! retention.

mod remote_log_chunk_cache;
mod remote_log_conformance;
mod remote_log_corruption;
mod uploads_cleanup;
mod uploads_copy;
mod uploads_support;
