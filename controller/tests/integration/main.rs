//! The controller's integration tests, in one binary: one controller through its public
//! API on a real data dir (`controller`), and three voters on loopback (`quorum`).

mod controller;
mod quorum;
