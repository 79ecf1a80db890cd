//! Idempotent producers: retries after lost responses create no duplicates.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use anyhow::{Result, ensure};
use silt_tests::SiltOptions;
use silt_tests::kafka::{self, create_topic, read_all};
use silt_tests::proxy::ResponseDroppingProxy;

const TOPIC: &str = "payments";
const PARTITIONS: i32 = 3;
const RECORDS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_produce_responses_cause_no_duplicates_with_idempotence() -> Result<()> {
    // Clients reach the broker only through the proxy: the broker advertises
    // the proxy's port in its metadata.
    let listener = ResponseDroppingProxy::bind().await?;
    let proxy_port = listener.local_addr()?.port();
    let silt = SiltOptions::new().advertised_port(proxy_port).start()?;
    let proxy = ResponseDroppingProxy::start(listener, silt.kafka_addr(), 5, 12)?;
    let bootstrap = proxy.local_addr().to_string();
    create_topic(&bootstrap, TOPIC, PARTITIONS, &[]).await?;

    let producer = kafka::producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "1"),
            ("batch.num.messages", "40"),
            ("retry.backoff.ms", "50"),
            ("message.timeout.ms", "60000"),
        ],
    )?;
    // Produce in slices so that there are many Produce requests to cut.
    for slice_start in (0..RECORDS).step_by(100) {
        let _ = kafka::produce_numbered(&producer, TOPIC, slice_start, 100).await?;
    }
    drop(producer);
    let dropped = proxy.stats().dropped_responses.load(Ordering::Relaxed);
    let produce_requests = proxy.stats().produce_requests.load(Ordering::Relaxed);
    ensure!(
        dropped >= 3,
        "the proxy cut only {dropped} of {produce_requests} produce responses; the test proved nothing"
    );

    let records = read_all(&silt.bootstrap(), TOPIC, PARTITIONS).await?;
    let numbers = kafka::numbered_values(&records)?;
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for number in &numbers {
        *seen.entry(*number).or_default() += 1;
    }
    let duplicated: Vec<usize> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| *v)
        .collect();
    ensure!(
        duplicated.is_empty(),
        "{} records stored more than once (e.g. {:?}) after {dropped} lost responses",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    let missing: Vec<usize> = (0..RECORDS).filter(|n| !seen.contains_key(n)).collect();
    ensure!(
        missing.is_empty(),
        "records missing: {:?}",
        &missing[..missing.len().min(10)]
    );
    // Per key (and so per partition) order is the order of production.
    for (partition, records) in kafka::by_partition(&records) {
        let values = kafka::numbered_values(&records)?;
        ensure!(
            values.windows(2).all(|pair| pair[0] < pair[1]),
            "partition {partition} is out of production order"
        );
    }
    Ok(())
}
