//! The Kafka protocol listener: size-prefixed frames in, one response per request out,
//! in request order (the protocol guide's ordering guarantee per connection).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api_versions::{self, is_supported};
use crate::context::BrokerContext;
use crate::fetch_frame::{ResponseFrame, encode_fetch_response};
use crate::handlers::{self, Handled};
use crate::kafka_connection::read_frame;

/// Responses queued per connection before the broker stops reading further requests:
/// acks=all produces overlap their replication waits up to this depth (librdkafka sends
/// at most 5 in flight with idempotence).
const MAX_PIPELINED_RESPONSES: usize = 16;

/// Why a connection is closed instead of answered.
#[derive(thiserror::Error, Debug)]
pub enum FrameError {
    /// The declared size is negative or above `socket.request.max.bytes`.
    #[error("request of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge {
        /// Declared frame size in bytes.
        size: i64,
        /// Configured limit in bytes.
        max: usize,
    },
    /// The frame cannot be parsed as a request of its declared API key and version.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Encoding our own response failed (a bug: the response does not fit its version).
    #[error("cannot encode {api:?} v{version} response: {message}")]
    Encode {
        /// API of the response.
        api: ApiKey,
        /// Version requested.
        version: i16,
        /// Encoder message.
        message: String,
    },
    /// Socket I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A decoded request with what handlers need to answer it.
#[derive(Debug)]
pub struct Request {
    /// Request header (API key, version, correlation id, client id).
    pub header: RequestHeader,
    /// The decoded body.
    pub body: RequestKind,
    /// Address of the client.
    pub peer: SocketAddr,
}

impl Request {
    /// API version of the request.
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// The client id, or "" when absent.
    pub fn client_id(&self) -> &str {
        self.header
            .client_id
            .as_ref()
            .map(|id| id.as_str())
            .unwrap_or("")
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    context: Arc<BrokerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection_context = Arc::clone(&context);
                    let connection_shutdown = shutdown.clone();
                    drop(tokio::spawn(async move {
                        metrics::gauge!("silt_open_connections").increment(1.0);
                        match handle_connection(stream, peer, connection_context, connection_shutdown).await {
                            Ok(()) => debug!(%peer, "connection closed"),
                            Err(FrameError::Io(error)) => debug!(%peer, %error, "connection closed"),
                            Err(error) => warn!(%peer, %error, "closing connection"),
                        }
                        metrics::gauge!("silt_open_connections").decrement(1.0);
                    }));
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => {
                info!("kafka listener stopped");
                return;
            }
        }
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<BrokerContext>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FrameError> {
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let (responses, pending) = mpsc::channel::<PendingResponse>(MAX_PIPELINED_RESPONSES);
    let writing = tokio::spawn(write_responses(writer, pending));
    let max_size = context.config.socket_request_max_bytes;
    let read_outcome: Result<(), FrameError> = async {
        loop {
            let size = tokio::select! {
                size = reader.read_i32() => match size {
                    Ok(size) => size,
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(error) => return Err(error.into()),
                },
                _ = shutdown.changed() => return Ok(()),
            };
            if size < 0 || size as usize > max_size {
                return Err(FrameError::TooLarge { size: i64::from(size), max: max_size });
            }
            let frame = read_frame(&mut reader, size as usize).await?;
            metrics::counter!("silt_network_bytes_in_total").increment(size as u64 + 4);
            let Some(response) = process_frame(&context, frame, peer).await? else {
                continue;
            };
            if responses.send(response).await.is_err() {
                // The writer stopped on an error; it reports it.
                return Ok(());
            }
        }
    }
    .await;
    drop(responses);
    let write_outcome = writing
        .await
        .map_err(|error| FrameError::Malformed(format!("response writer failed: {error}")))?;
    read_outcome.and(write_outcome)
}

/// Writes responses in request order as they become ready; flushes when no further
/// response is queued, so pipelined responses share a write.
async fn write_responses(
    writer: OwnedWriteHalf,
    mut pending: mpsc::Receiver<PendingResponse>,
) -> Result<(), FrameError> {
    let mut writer = BufWriter::new(writer);
    while let Some(response) = pending.recv().await {
        let frame = match response {
            PendingResponse::Ready(frame) => frame,
            PendingResponse::Waiting(future) => future.await?,
        };
        metrics::counter!("silt_network_bytes_out_total").increment(frame.len() as u64 + 4);
        let size = i32::try_from(frame.len()).map_err(|_| {
            FrameError::Malformed(format!("response of {} bytes is too large", frame.len()))
        })?;
        write_frame(&mut writer, &size.to_be_bytes(), frame.parts()).await?;
        if pending.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(())
}

/// Most slices handed to one vectored write.
const MAX_WRITE_SLICES: usize = 64;

/// Writes `prefix` then every part, with vectored writes: record parts go from their
/// buffers to the socket without being gathered first.
async fn write_frame(
    writer: &mut BufWriter<OwnedWriteHalf>,
    prefix: &[u8],
    parts: &[Bytes],
) -> std::io::Result<()> {
    let pieces: Vec<&[u8]> = std::iter::once(prefix)
        .chain(parts.iter().map(|part| part.as_ref()))
        .collect();
    let mut piece = 0usize;
    let mut offset = 0usize;
    while piece < pieces.len() {
        let slices: Vec<std::io::IoSlice<'_>> = pieces[piece..]
            .iter()
            .take(MAX_WRITE_SLICES)
            .enumerate()
            .map(|(i, bytes)| std::io::IoSlice::new(if i == 0 { &bytes[offset..] } else { bytes }))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while piece < pieces.len() && written >= pieces[piece].len() - offset {
            written -= pieces[piece].len() - offset;
            piece += 1;
            offset = 0;
        }
        offset += written;
    }
    Ok(())
}

/// An encoded response, or one still waiting for replication (acks=all).
pub enum PendingResponse {
    /// Encoded, ready to send.
    Ready(ResponseFrame),
    /// Resolves to the encoded response.
    Waiting(BoxFuture<'static, Result<ResponseFrame, FrameError>>),
}

/// Decodes one request frame (without its length prefix), runs its handler and encodes
/// the answer; `None` when the request gets no response (Produce with acks=0).
///
/// # Errors
/// A frame too short for a header, an undecodable header or body, or a response that
/// cannot be encoded: the connection is closed. Unknown API keys and versions get an
/// UNSUPPORTED_VERSION response instead.
pub async fn process_frame(
    context: &Arc<BrokerContext>,
    mut frame: Bytes,
    peer: SocketAddr,
) -> Result<Option<PendingResponse>, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Malformed(format!(
            "frame of {} bytes has no request header",
            frame.len()
        )));
    }
    let raw_api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_api_key) else {
        warn!(%peer, api_key = raw_api_key, "unknown api key");
        metrics::counter!("silt_requests_unsupported_total").increment(1);
        return Ok(Some(PendingResponse::Ready(ResponseFrame::single(
            bare_error_response(correlation_id, ResponseError::UnsupportedVersion.code()),
        ))));
    };
    if !is_supported(api_key, version) {
        metrics::counter!("silt_requests_unsupported_total").increment(1);
        if api_key == ApiKey::ApiVersions {
            let response = api_versions::unsupported_version_response();
            let encoded = encode_response(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                ResponseKind::ApiVersions(response),
            )?;
            return Ok(Some(PendingResponse::Ready(encoded)));
        }
        warn!(%peer, api = ?api_key, version, "unsupported api version");
        return Ok(Some(PendingResponse::Ready(ResponseFrame::single(
            bare_error_response(correlation_id, ResponseError::UnsupportedVersion.code()),
        ))));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|error| {
        FrameError::Malformed(format!("{api_key:?} v{version} header: {error}"))
    })?;
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|error| FrameError::Malformed(format!("{api_key:?} v{version} body: {error}")))?;
    if frame.has_remaining() {
        debug!(api = ?api_key, version, trailing = frame.remaining(), "ignoring trailing request bytes");
    }
    let request = Request { header, body, peer };
    let started = std::time::Instant::now();
    let handled = handlers::handle(context, request).await;
    let record = move || {
        let api_label = format!("{api_key:?}");
        metrics::histogram!("silt_request_duration_seconds", "api" => api_label.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("silt_requests_total", "api" => api_label).increment(1);
    };
    match handled {
        Handled::Now(None) => {
            record();
            Ok(None)
        }
        Handled::Now(Some(body)) => {
            record();
            encode_response(api_key, version, correlation_id, body)
                .map(|bytes| Some(PendingResponse::Ready(bytes)))
        }
        Handled::Later(waiting) => Ok(Some(PendingResponse::Waiting(Box::pin(async move {
            let body = waiting.await;
            record();
            encode_response(api_key, version, correlation_id, body)
        })))),
    }
}

/// Encodes a response frame; Fetch responses keep their record bytes as parts of their own
/// ([`encode_fetch_response`]).
fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
) -> Result<ResponseFrame, FrameError> {
    let encode_error = |error: anyhow::Error| FrameError::Encode {
        api: api_key,
        version,
        message: error.to_string(),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    if let ResponseKind::Fetch(fetch) = &body
        && let Some(frame) =
            encode_fetch_response(&header, header_version, fetch, version).map_err(encode_error)?
    {
        return Ok(frame);
    }
    let mut buffer = BytesMut::new();
    header
        .encode(&mut buffer, header_version)
        .map_err(encode_error)?;
    body.encode(&mut buffer, version).map_err(encode_error)?;
    Ok(ResponseFrame::single(buffer.freeze()))
}

/// Correlation id and an error code: all that can be said to a request whose API or
/// version this broker cannot decode.
fn bare_error_response(correlation_id: i32, error_code: i16) -> Bytes {
    let mut buffer = BytesMut::with_capacity(6);
    buffer.put_i32(correlation_id);
    buffer.put_i16(error_code);
    buffer.freeze()
}
