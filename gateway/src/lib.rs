//! Silt's network front: the Kafka protocol listener and its request handlers, the
//! admin HTTP server, the admin CLI client, and node start-up wiring for the `silt`
//! binary.

pub mod admin_client;
pub mod admin_http;
pub mod api_versions;
pub mod bench;
pub mod cli;
pub mod config;
pub mod context;
pub mod fetch_frame;
pub mod fetch_session;
pub mod flights;
mod handlers;
pub mod kafka_connection;
pub mod membership;
pub mod node;
pub mod replica_fetcher;
pub mod server;
