//! A raw Kafka wire-protocol client for sending hand-made (and broken) requests.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, ListOffsetsRequest,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use silt_broker::test_util::BatchSpec;

/// How long a read waits before a test treats the connection as silent.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened when reading from a connection.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A whole response frame (without its length prefix).
    Frame(Bytes),
    /// The peer closed the connection (EOF or reset).
    Closed,
    /// Nothing arrived within the timeout.
    TimedOut,
}

/// One TCP connection speaking Kafka framing.
#[derive(Debug)]
pub struct WireClient {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl WireClient {
    /// Connects to a broker.
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(WireClient {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Sets how long reads wait.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Writes bytes exactly as given (no framing added).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("writing raw bytes")?;
        self.stream.flush()?;
        Ok(())
    }

    /// Writes one frame: a 4-byte big-endian length followed by `body`.
    pub fn send_frame(&mut self, body: &[u8]) -> Result<()> {
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.send_raw(&frame)
    }

    /// Encodes a request header plus body for `Req` at `version`; returns the
    /// frame body and the correlation id used.
    pub fn encode_request<Req: Request>(
        &mut self,
        version: i16,
        request: &Req,
    ) -> Result<(Vec<u8>, i32)> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(Req::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("silt-tests-wire")));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version))?;
        request.encode(&mut body, version)?;
        Ok((body.to_vec(), correlation_id))
    }

    /// Sends a request and decodes its response, checking the correlation id.
    pub fn call<Req: Request>(&mut self, version: i16, request: &Req) -> Result<Req::Response> {
        let (body, correlation_id) = self.encode_request(version, request)?;
        self.send_frame(&body)?;
        let mut frame = match self.read_frame()? {
            ReadOutcome::Frame(frame) => frame,
            ReadOutcome::Closed => bail!(
                "connection closed instead of a response to api key {}",
                Req::KEY
            ),
            ReadOutcome::TimedOut => bail!(
                "no response to api key {} within {READ_TIMEOUT:?}",
                Req::KEY
            ),
        };
        let header = ResponseHeader::decode(&mut frame, Req::Response::header_version(version))?;
        if header.correlation_id != correlation_id {
            bail!(
                "response correlation id {} does not match request {}",
                header.correlation_id,
                correlation_id
            );
        }
        Req::Response::decode(&mut frame, version).context("decoding response")
    }

    /// The idempotent-producer fields of the record at `offset` of `topic`-`partition`,
    /// read with a consumer Fetch (v11) from this broker, which must lead it: (producer
    /// id, producer epoch, sequence).
    pub fn producer_of_record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(i64, i16, i32)> {
        let batch = self.batch_holding(topic, partition, offset)?;
        let record = batch
            .iter()
            .find(|record| record.offset == offset)
            .context("the batch holds the offset")?;
        Ok((record.producer_id, record.producer_epoch, record.sequence))
    }

    /// The records of the batch holding `offset` of `topic`-`partition` (decompressed,
    /// in offset order), read with a consumer Fetch (v11) from this broker, which must
    /// lead it. Each record carries its batch's producer id and epoch and its sequence.
    pub fn batch_holding(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<kafka_protocol::records::Record>> {
        let (error_code, mut records) = self.fetch_from(topic, partition, offset)?;
        if error_code != 0 {
            bail!("fetch of {topic}-{partition} at {offset}: error code {error_code}");
        }
        while records.has_remaining() {
            let batch = RecordBatchDecoder::decode(&mut records).context("decoding a batch")?;
            if batch.records.iter().any(|record| record.offset == offset) {
                return Ok(batch.records);
            }
        }
        bail!("no record at offset {offset} of {topic}-{partition}")
    }

    /// The first offset of `topic`-`partition`'s local log on this broker, which must lead
    /// it: ListOffsets v8 with EARLIEST_LOCAL_TIMESTAMP (-4, KIP-405).
    pub fn earliest_local_offset(&mut self, topic: &str, partition: i32) -> Result<i64> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(-4),
                    ]),
            ]);
        let response = self.call(8, &request)?;
        let answer = response
            .topics
            .first()
            .and_then(|topic| topic.partitions.first())
            .context("list offsets response without the partition")?;
        if answer.error_code != 0 {
            bail!(
                "list offsets of {topic}-{partition}: error code {}",
                answer.error_code
            );
        }
        Ok(answer.offset)
    }

    /// One consumer Fetch (v11, up to 1 MiB, no wait) of `topic`-`partition` from
    /// `offset` on this broker: the partition's error code and its record batches.
    pub fn fetch_from(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(i16, Bytes)> {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response = self.call(11, &request)?;
        let data = response
            .responses
            .first()
            .and_then(|topic| topic.partitions.first())
            .context("fetch response without the partition")?;
        Ok((data.error_code, data.records.clone().unwrap_or_default()))
    }

    /// Reads one response frame, or reports EOF / timeout.
    pub fn read_frame(&mut self) -> Result<ReadOutcome> {
        let mut length_bytes = [0u8; 4];
        if let Some(outcome) = read_exact_or_outcome(&mut self.stream, &mut length_bytes)? {
            return Ok(outcome);
        }
        let length = i32::from_be_bytes(length_bytes);
        if !(0..=64 * 1024 * 1024).contains(&length) {
            bail!("implausible response length {length}");
        }
        let mut body = vec![0u8; length as usize];
        match read_exact_or_outcome(&mut self.stream, &mut body)? {
            Some(ReadOutcome::TimedOut) => bail!("response body truncated (timeout)"),
            Some(ReadOutcome::Closed) => bail!("response body truncated (closed)"),
            Some(ReadOutcome::Frame(_)) | None => {}
        }
        Ok(ReadOutcome::Frame(Bytes::from(body)))
    }

    /// Waits until the peer closes the connection; fails if a frame arrives
    /// or nothing happens within `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => bail!("expected the connection to be closed, got {n} bytes"),
                Err(error) if is_reset(&error) => return Ok(()),
                Err(error) if is_timeout(&error) => {
                    bail!("connection still open after {timeout:?}")
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// ApiVersions v0 round trip; proves the connection (and broker) still serve.
    pub fn api_versions(&mut self) -> Result<ApiVersionsResponse> {
        self.call(0, &ApiVersionsRequest::default())
    }

    /// Highest version of `api_key` both the broker and this test client support.
    pub fn negotiated_version(&mut self, api_key: i16, ours_max: i16) -> Result<i16> {
        let versions = self.api_versions()?;
        let entry = versions
            .api_keys
            .iter()
            .find(|entry| entry.api_key == api_key)
            .with_context(|| format!("broker does not list api key {api_key}"))?;
        let version = entry.max_version.min(ours_max);
        if version < entry.min_version {
            bail!("no common version for api key {api_key}");
        }
        Ok(version)
    }

    /// Produces an already-encoded record batch to one partition.
    pub fn produce_batch(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<ProduceResponse> {
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ]);
        self.call(version, &request)
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Fills `buf`; `Some(outcome)` when the peer closed or went silent first.
fn read_exact_or_outcome(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<ReadOutcome>> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(Some(ReadOutcome::Closed)),
            Ok(n) => filled += n,
            Err(error) if is_reset(&error) => return Ok(Some(ReadOutcome::Closed)),
            Err(error) if is_timeout(&error) => return Ok(Some(ReadOutcome::TimedOut)),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(None)
}

/// Encodes a valid RecordBatch v2 holding `values` (keyed `key-<i>`), with the broker's
/// test kit.
pub fn encode_batch(values: &[&str]) -> Result<BytesMut> {
    let batch = BatchSpec::with_values(values, 1_700_000_000_000).encode_bytes();
    Ok(BytesMut::from(&batch[..]))
}

/// Byte offset of the CRC field in a RecordBatch v2 header.
pub const BATCH_CRC_OFFSET: usize = 8 + 4 + 4 + 1;

/// Reads the 4-byte CRC32C stored in an encoded batch.
pub fn batch_crc(batch: &[u8]) -> u32 {
    let mut field = &batch[BATCH_CRC_OFFSET..BATCH_CRC_OFFSET + 4];
    field.get_u32()
}
