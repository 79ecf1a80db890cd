//! A minimal Kafka protocol client for the `silt topics|groups` admin commands:
//! one connection, one request at a time, typed requests from kafka-protocol.

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted, bytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Errors talking to a broker.
#[derive(thiserror::Error, Debug)]
pub enum AdminError {
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
pub struct AdminClient {
    addr: String,
    stream: TcpStream,
    next_correlation_id: i32,
}

impl AdminClient {
    /// Connects to `addr` (HOST:PORT).
    ///
    /// # Errors
    /// The connection cannot be established.
    pub async fn connect(addr: &str) -> Result<AdminClient, AdminError> {
        let stream = TcpStream::connect(addr).await.map_err(|source| AdminError::Io { addr: addr.to_string(), source })?;
        Ok(AdminClient { addr: addr.to_string(), stream, next_correlation_id: 1 })
    }

    /// Sends `request` at `version` and waits for its response.
    ///
    /// # Errors
    /// I/O failure, or bytes that do not decode as the expected response.
    pub async fn call<R: Request>(&mut self, request: R, version: i16) -> Result<R::Response, AdminError> {
        let api_key = ApiKey::try_from(R::KEY).map_err(|_| AdminError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("silt-admin")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0, 0, 0, 0]);
        header.encode(&mut frame, api_key.request_header_version(version)).map_err(|e| AdminError::Protocol(e.to_string()))?;
        request.encode(&mut frame, version).map_err(|e| AdminError::Protocol(e.to_string()))?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let io_error = |addr: &str| {
            let addr = addr.to_string();
            move |source| AdminError::Io { addr, source }
        };
        self.stream.write_all(&frame).await.map_err(io_error(&self.addr))?;
        let response_size = self.stream.read_i32().await.map_err(io_error(&self.addr))?;
        let response_size = usize::try_from(response_size)
            .ok()
            .filter(|size| *size <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| AdminError::Protocol(format!("response size {response_size} out of range")))?;
        let mut body = BytesMut::zeroed(response_size);
        let _ = self.stream.read_exact(&mut body).await.map_err(io_error(&self.addr))?;
        let mut body = body.freeze();
        let response_header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .map_err(|e| AdminError::Protocol(e.to_string()))?;
        if response_header.correlation_id != correlation_id {
            return Err(AdminError::Protocol(format!(
                "correlation id {} does not match request {correlation_id}",
                response_header.correlation_id
            )));
        }
        let response = R::Response::decode(&mut body, version).map_err(|e| AdminError::Protocol(e.to_string()))?;
        if body.has_remaining() {
            return Err(AdminError::Protocol(format!("{} trailing bytes after the response", body.remaining())));
        }
        Ok(response)
    }
}
