//! A minimal Kafka protocol client for the `silt topics|groups` admin commands:
//! one connection, one request at a time, typed requests from kafka-protocol.

use kafka_protocol::protocol::Request;

use silt_gateway::kafka_connection::{ConnectionError, KafkaConnection};

/// Largest response accepted, bytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Errors talking to a broker.
#[derive(thiserror::Error, Debug)]
pub(crate) enum AdminError {
    /// The broker cannot be reached or the connection broke.
    #[error("cannot talk to {addr}: {source}")]
    Io {
        /// Broker address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A request could not be encoded or a response decoded.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// One connection to a broker.
pub(crate) struct AdminClient {
    addr: String,
    connection: KafkaConnection,
}

impl AdminClient {
    /// Connects to `addr` (HOST:PORT).
    ///
    /// # Errors
    /// The connection cannot be established.
    pub(crate) async fn connect(addr: &str) -> Result<AdminClient, AdminError> {
        let connection = KafkaConnection::connect(addr, "silt-admin", MAX_RESPONSE_BYTES)
            .await
            .map_err(|source| AdminError::Io {
                addr: addr.to_string(),
                source,
            })?;
        Ok(AdminClient {
            addr: addr.to_string(),
            connection,
        })
    }

    /// Sends `request` at `version` and waits for its response.
    ///
    /// # Errors
    /// I/O failure, or bytes that do not decode as the expected response.
    pub(crate) async fn call<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, AdminError> {
        self.connection
            .call(&request, version)
            .await
            .map_err(|error| match error {
                ConnectionError::Io(source) => AdminError::Io {
                    addr: self.addr.clone(),
                    source,
                },
                ConnectionError::Protocol(message) => AdminError::Protocol(message),
            })
    }
}
