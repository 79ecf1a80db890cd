//! The compaction crate's integration tests: one binary.

mod model;
mod producers;
mod support;
mod tombstones;
