//! Bad input: broken frames, unknown APIs, oversized requests, corrupt batches
//! and unknown topics get the right answer and harm nobody else.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use silt_tests::kafka::{self, create_topic};
use silt_tests::wire::{ReadOutcome, WireClient, encode_batch};
use silt_tests::{SiltOptions, SiltProcess};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;

fn partition_error(response: &ProduceResponse) -> Result<(i16, i64)> {
    let partition = response
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .context("produce response without a partition")?;
    Ok((partition.error_code, partition.base_offset))
}

fn produce_version(client: &mut WireClient) -> Result<i16> {
    client.negotiated_version(ApiKey::Produce as i16, 9)
}

#[test]
fn malformed_frames_close_only_their_own_connection() -> Result<()> {
    let silt = SiltProcess::start()?;
    let mut bystander = WireClient::connect(silt.kafka_addr())?;
    let _ = bystander.api_versions()?;

    // A negative frame length.
    let mut negative = WireClient::connect(silt.kafka_addr())?;
    negative.send_raw(&(-5i32).to_be_bytes())?;
    negative
        .expect_closed(Duration::from_secs(10))
        .context("negative length")?;

    // A frame too short to hold a request header.
    let mut short = WireClient::connect(silt.kafka_addr())?;
    short.send_frame(&[0, 18, 0])?;
    short
        .expect_closed(Duration::from_secs(10))
        .context("3-byte frame")?;

    // A header whose client id claims more bytes than the frame has.
    let mut lying = WireClient::connect(silt.kafka_addr())?;
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::Metadata as i16);
    body.put_i16(1);
    body.put_i32(7);
    body.put_i16(500);
    body.put_slice(b"short");
    lying.send_frame(&body)?;
    lying
        .expect_closed(Duration::from_secs(10))
        .context("client id overrun")?;

    // A well-framed Metadata request whose body is garbage.
    let mut garbage = WireClient::connect(silt.kafka_addr())?;
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::Metadata as i16);
    body.put_i16(1);
    body.put_i32(8);
    body.put_i16(-1);
    body.put_i32(1_000_000); // topic array length far beyond the frame
    garbage.send_frame(&body)?;
    match garbage.read_frame()? {
        ReadOutcome::Closed => {}
        ReadOutcome::Frame(mut frame) => {
            ensure!(
                frame.len() >= 4 && frame.get_i32() == 8,
                "answer to garbage has the wrong correlation id"
            );
        }
        ReadOutcome::TimedOut => {
            anyhow::bail!("garbage Metadata body got neither an answer nor a close")
        }
    }

    // The connection opened before all this still works, and so do new ones.
    let _ = bystander
        .api_versions()
        .context("bystander connection after bad frames")?;
    let _ = WireClient::connect(silt.kafka_addr())?.api_versions()?;
    Ok(())
}

#[test]
fn unknown_api_key_gets_an_error_response() -> Result<()> {
    let silt = SiltProcess::start()?;
    let mut client = WireClient::connect(silt.kafka_addr())?;
    let mut body = BytesMut::new();
    body.put_i16(9_999);
    body.put_i16(0);
    body.put_i32(4242);
    body.put_i16(-1);
    client.send_frame(&body)?;
    let mut frame = match client.read_frame()? {
        ReadOutcome::Frame(frame) => frame,
        other => anyhow::bail!("unknown api key 9999: expected an error response, got {other:?}"),
    };
    ensure!(
        frame.len() >= 6,
        "response to unknown api key is {} bytes",
        frame.len()
    );
    let correlation_id = frame.get_i32();
    ensure!(
        correlation_id == 4242,
        "correlation id {correlation_id} != 4242"
    );
    let error_code = frame.get_i16();
    ensure!(
        error_code != 0,
        "unknown api key answered with error code 0"
    );
    let _ = client
        .api_versions()
        .context("connection after unknown api key")?;
    Ok(())
}

#[test]
fn unsupported_api_versions_version_gets_unsupported_version() -> Result<()> {
    let silt = SiltProcess::start()?;
    let mut client = WireClient::connect(silt.kafka_addr())?;
    // Kafka answers an ApiVersions request of an unknown version with a v0
    // response carrying UNSUPPORTED_VERSION and its supported range.
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(99);
    body.put_i32(77);
    body.put_i16(-1);
    body.put_u8(0); // empty tagged fields
    client.send_frame(&body)?;
    let mut frame = match client.read_frame()? {
        ReadOutcome::Frame(frame) => frame,
        other => anyhow::bail!("ApiVersions v99: expected a response, got {other:?}"),
    };
    ensure!(frame.get_i32() == 77, "wrong correlation id");
    let error_code = frame.get_i16();
    ensure!(
        error_code == UNSUPPORTED_VERSION,
        "ApiVersions v99 returned error {error_code}, expected UNSUPPORTED_VERSION(35)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_and_others_keep_working() -> Result<()> {
    let silt = SiltOptions::new()
        .flag("--socket-request-max-bytes", 16_384)
        .start()?;
    create_topic(&silt.bootstrap(), "small", 1, &[]).await?;
    let mut bystander = WireClient::connect(silt.kafka_addr())?;
    let _ = bystander.api_versions()?;

    // Announce 10 MiB but send only a header: the broker must refuse from the
    // length alone instead of waiting to buffer the body.
    let mut oversized = WireClient::connect(silt.kafka_addr())?;
    let mut start = BytesMut::new();
    start.put_i32(10 * 1024 * 1024);
    start.put_i16(ApiKey::Produce as i16);
    start.put_i16(7);
    start.put_i32(1);
    oversized.send_raw(&start)?;
    oversized
        .expect_closed(Duration::from_secs(10))
        .context("a 10 MiB frame with --socket-request-max-bytes 16384 was not refused")?;

    // A request under the limit is served.
    let _ = bystander.api_versions()?;
    let mut client = WireClient::connect(silt.kafka_addr())?;
    let version = produce_version(&mut client)?;
    let batch = encode_batch(&["small enough"; 10])?.freeze();
    let response = client.produce_batch(version, "small", 0, batch)?;
    let (error_code, _) = partition_error(&response)?;
    ensure!(
        error_code == 0,
        "produce under the size limit failed with {error_code}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batch_gets_corrupt_message_and_nothing_is_appended() -> Result<()> {
    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "crc", 1, &[]).await?;
    let mut client = WireClient::connect(silt.kafka_addr())?;
    let version = produce_version(&mut client)?;

    // A single batch whose last byte (inside the CRC'd range) is flipped.
    let mut corrupt = encode_batch(&["alpha", "beta", "gamma"])?;
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x5a;
    let response = client.produce_batch(version, "crc", 0, corrupt.clone().freeze())?;
    let (error_code, _) = partition_error(&response)?;
    ensure!(
        error_code == CORRUPT_MESSAGE,
        "bad CRC answered with error {error_code}, expected CORRUPT_MESSAGE(2)"
    );

    // A good batch followed by a corrupt one in the same request: rejected whole.
    let mut mixed = encode_batch(&["good-1", "good-2"])?;
    mixed.extend_from_slice(&corrupt);
    let response = client.produce_batch(version, "crc", 0, mixed.freeze())?;
    let (error_code, _) = partition_error(&response)?;
    ensure!(
        error_code == CORRUPT_MESSAGE,
        "good+corrupt batches answered with error {error_code}, expected CORRUPT_MESSAGE(2)"
    );

    let (low, high) = kafka::watermarks(&bootstrap, "crc", 1)?[0];
    ensure!(
        high == 0,
        "log end offset is {high} after rejected batches (low {low}); something was appended"
    );

    // The partition still takes good data, starting at offset 0.
    let good = encode_batch(&["ok-1", "ok-2"])?.freeze();
    let response = client.produce_batch(version, "crc", 0, good)?;
    let (error_code, base_offset) = partition_error(&response)?;
    ensure!(
        error_code == 0,
        "valid batch after corrupt ones failed with {error_code}"
    );
    ensure!(
        base_offset == 0,
        "valid batch got base offset {base_offset}, expected 0"
    );
    let records = kafka::read_all(&bootstrap, "crc", 1).await?;
    let values: Vec<String> = records.iter().map(|r| r.value_str()).collect();
    ensure!(values == ["ok-1", "ok-2"], "log holds {values:?}");
    Ok(())
}

#[test]
fn unknown_topic_with_auto_create_off_gets_unknown_topic_or_partition() -> Result<()> {
    let silt = SiltOptions::new()
        .flag("--auto-create-topics-enable", "false")
        .start()?;
    let mut client = WireClient::connect(silt.kafka_addr())?;
    let version = produce_version(&mut client)?;
    let batch = encode_batch(&["nobody home"])?.freeze();
    let response = client.produce_batch(version, "no-such-topic", 0, batch)?;
    let (error_code, _) = partition_error(&response)?;
    ensure!(
        error_code == UNKNOWN_TOPIC_OR_PARTITION,
        "produce to a missing topic returned {error_code}, expected UNKNOWN_TOPIC_OR_PARTITION(3)"
    );

    // Metadata asking to auto-create is refused too, and the topic stays absent.
    let metadata_version = client
        .negotiated_version(ApiKey::Metadata as i16, 12)?
        .max(4);
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_static_str("no-such-topic")),
        ))]))
        .with_allow_auto_topic_creation(true);
    for attempt in 0..2 {
        let response = client.call(metadata_version, &request)?;
        let topic = response
            .topics
            .first()
            .context("metadata without the topic")?;
        ensure!(
            topic.error_code == UNKNOWN_TOPIC_OR_PARTITION,
            "metadata attempt {attempt} for a missing topic returned {}, expected 3",
            topic.error_code
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// Kafka's LogValidator rule: a compacted topic keeps the latest record of each key, so
/// a record without a key is refused with INVALID_RECORD and a message saying why, and
/// nothing of its request is appended; keyed records go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_refuses_records_without_a_key() -> Result<()> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::FutureRecord;

    let silt = SiltProcess::start()?;
    let bootstrap = silt.bootstrap();
    create_topic(&bootstrap, "changelog", 1, &[("cleanup.policy", "compact")]).await?;
    let producer = kafka::producer(&bootstrap, &[("retries", "0"), ("linger.ms", "0")])?;
    let keyless = producer
        .send(
            FutureRecord::<(), str>::to("changelog").payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    ensure!(
        matches!(
            &keyless,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord),
                _
            ))
        ),
        "a keyless record on a compacted topic answered {keyless:?}"
    );
    let keyed = producer
        .send(
            FutureRecord::to("changelog").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await;
    ensure!(
        matches!(&keyed, Ok(delivery) if delivery.partition == 0 && delivery.offset == 0),
        "a keyed record is appended at offset 0: {keyed:?}"
    );

    // The message names the rule, for clients that show it.
    let mut client = WireClient::connect(silt.kafka_addr())?;
    let version = produce_version(&mut client)?;
    let unkeyed = silt_broker::test_util::BatchSpec::with_values(&["v"], 1_700_000_000_000)
        .without_keys()
        .encode_bytes();
    let response = client.produce_batch(version, "changelog", 0, unkeyed)?;
    let partition = response
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .context("produce response without a partition")?;
    let message = partition
        .error_message
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    ensure!(
        partition.error_code == kafka_protocol::ResponseError::InvalidRecord.code()
            && message.contains("without a key"),
        "raw produce: error {} {message:?}",
        partition.error_code
    );
    let (low, high) = kafka::watermarks(&bootstrap, "changelog", 1)?[0];
    ensure!(
        (low, high) == (0, 1),
        "only the keyed record is in the log: ({low}, {high})"
    );
    Ok(())
}
