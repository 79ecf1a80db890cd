//! Silt's network front: the Kafka protocol listener and its request handlers, the
//! admin HTTP server, and node start-up wiring for the `silt` binary (whose admin
//! commands live with the binary, in `src/bin/silt/`).

pub mod admin_http;
mod api_versions;
pub mod config;
pub mod context;
pub mod fetch_frame;
pub mod fetch_session;
mod handlers;
pub mod kafka_connection;
pub mod leader_end_point;
pub mod node;
pub mod read_replica;
pub mod restore;
pub mod restore_point_writer;
pub mod server;
