//! One client connection speaking the Kafka protocol: size-prefixed frames, one request
//! at a time, the response's correlation id checked. Used by the admin CLI and by
//! follower fetchers; [`read_frame`] is also how the listener reads requests.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Why a call failed.
#[derive(thiserror::Error, Debug)]
pub enum ConnectionError {
    /// The connection broke or could not be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A request could not be encoded, or the response did not decode as the answer to it.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A connection to one broker.
#[derive(Debug)]
pub struct KafkaConnection {
    stream: TcpStream,
    client_id: &'static str,
    max_response_bytes: usize,
    next_correlation_id: i32,
}

impl KafkaConnection {
    /// Connects to `addr` with Nagle off; requests carry `client_id`; responses larger
    /// than `max_response_bytes` are refused.
    ///
    /// # Errors
    /// The connection cannot be established.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        client_id: &'static str,
        max_response_bytes: usize,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(KafkaConnection {
            stream,
            client_id,
            max_response_bytes,
            next_correlation_id: 1,
        })
    }

    /// Sends `request` at `version` and waits for its response.
    ///
    /// # Errors
    /// I/O failure, an unknown API key, a response of implausible size, a correlation id
    /// that does not match, or bytes that do not decode as the expected response.
    pub async fn call<Req: Request>(
        &mut self,
        request: &Req,
        version: i16,
    ) -> Result<Req::Response, ConnectionError> {
        let protocol_error = |error: anyhow::Error| ConnectionError::Protocol(error.to_string());
        let api_key = ApiKey::try_from(Req::KEY)
            .map_err(|_| ConnectionError::Protocol(format!("unknown api key {}", Req::KEY)))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(Req::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0, 0, 0, 0]);
        header
            .encode(&mut frame, api_key.request_header_version(version))
            .map_err(protocol_error)?;
        request
            .encode(&mut frame, version)
            .map_err(protocol_error)?;
        let size = i32::try_from(frame.len() - 4)
            .map_err(|_| ConnectionError::Protocol("request too large".to_string()))?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).await?;

        let size = self.stream.read_i32().await?;
        let size = usize::try_from(size)
            .ok()
            .filter(|size| *size <= self.max_response_bytes)
            .ok_or_else(|| {
                ConnectionError::Protocol(format!("response size {size} out of range"))
            })?;
        let mut body = read_frame(&mut self.stream, size).await?;
        let response_header =
            ResponseHeader::decode(&mut body, api_key.response_header_version(version))
                .map_err(protocol_error)?;
        if response_header.correlation_id != correlation_id {
            return Err(ConnectionError::Protocol(format!(
                "correlation id {} does not match request {correlation_id}",
                response_header.correlation_id
            )));
        }
        let response = Req::Response::decode(&mut body, version).map_err(protocol_error)?;
        if body.has_remaining() {
            return Err(ConnectionError::Protocol(format!(
                "{} trailing bytes after the response",
                body.remaining()
            )));
        }
        Ok(response)
    }
}

/// Reads the next `size` bytes (a frame after its length prefix) into one buffer,
/// without zero-filling it first.
///
/// # Errors
/// I/O failure, or the stream ends before `size` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> std::io::Result<Bytes> {
    let mut frame = BytesMut::with_capacity(size);
    let mut limited = reader.take(size as u64);
    while frame.len() < size {
        if limited.read_buf(&mut frame).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} of {size} frame bytes",
                    frame.len()
                ),
            ));
        }
    }
    Ok(frame.freeze())
}
