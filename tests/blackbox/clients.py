#!/usr/bin/env python3
"""Drive a running Kafka-compatible broker with kcat, confluent-kafka and kafka-python.

Usage: clients.py --bootstrap HOST:PORT

Each client creates its own topic(s), produces, consumes (with a consumer
group where the client has one) and checks what it read. Exit status: 0 when
every check passed, 1 on a failed check, 3 when a client is not installed.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
import uuid

MISSING_CLIENT = 3
TIMEOUT_S = 30


def log(message):
    print(message, flush=True)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def run_kcat(bootstrap, args, stdin=None):
    result = subprocess.run(
        ["kcat", "-b", bootstrap, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if result.returncode != 0:
        raise AssertionError(f"kcat {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def kcat_suite(bootstrap):
    metadata = json.loads(run_kcat(bootstrap, ["-L", "-J"]))
    check(metadata.get("brokers"), f"kcat -L lists no brokers: {metadata}")
    log(f"ok: kcat -L sees brokers {[b['name'] for b in metadata['brokers']]}")

    topic = unique("kcat")
    lines = [f"key-{i}:value-{i}" for i in range(20)]
    run_kcat(bootstrap, ["-P", "-t", topic, "-K:", "-p", "0"], stdin="\n".join(lines) + "\n")
    log(f"ok: kcat -P produced {len(lines)} keyed records to auto-created topic {topic}")

    deadline = time.time() + TIMEOUT_S
    consumed = []
    while time.time() < deadline:
        out = run_kcat(bootstrap, ["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k:%s|%o\\n"])
        consumed = [line for line in out.splitlines() if line]
        if len(consumed) >= len(lines):
            break
        time.sleep(0.5)
    got = [line.split("|")[0] for line in consumed]
    offsets = [int(line.split("|")[1]) for line in consumed]
    check(got == lines, f"kcat -C read {got}, expected {lines}")
    check(offsets == list(range(len(lines))), f"kcat -C offsets {offsets}")
    log(f"ok: kcat -C -e read back all {len(got)} records in order")

    listed = json.loads(run_kcat(bootstrap, ["-L", "-J", "-t", topic]))
    partitions = listed["topics"][0]["partitions"]
    check(len(partitions) >= 1, f"kcat -L -t {topic}: {listed}")
    log(f"ok: kcat -L -t shows {topic} with {len(partitions)} partition(s)")


def confluent_suite(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = unique("confluent")
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, config={"retention.ms": "86400000"})],
        request_timeout=TIMEOUT_S,
    )
    futures[topic].result(timeout=TIMEOUT_S)
    log(f"ok: confluent admin created {topic} with 3 partitions")

    deadline = time.time() + TIMEOUT_S
    while True:
        metadata = admin.list_topics(topic=topic, timeout=10)
        described = metadata.topics.get(topic)
        if described is not None and described.error is None and len(described.partitions) == 3:
            break
        check(time.time() < deadline, f"metadata for {topic} never showed 3 partitions: {described}")
        time.sleep(0.2)
    log("ok: confluent admin list_topics describes 3 partitions")

    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    retention = configs.get("retention.ms")
    check(retention is not None and retention.value == "86400000", f"retention.ms is {retention}")
    log("ok: confluent admin describe_configs shows retention.ms=86400000")

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    errors = []
    delivered = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(error)
        else:
            delivered.append((message.partition(), message.offset()))

    for i in range(300):
        producer.produce(
            topic,
            key=f"key-{i % 17}".encode(),
            value=f"value-{i}".encode(),
            headers=[("source", b"confluent")],
            on_delivery=on_delivery,
        )
    remaining = producer.flush(TIMEOUT_S)
    check(remaining == 0 and not errors, f"{remaining} undelivered, errors {errors[:3]}")
    check(len(delivered) == 300, f"{len(delivered)} delivery reports")
    log("ok: confluent idempotent producer delivered 300 records")

    group = unique("confluent-group")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values = []
    deadline = time.time() + TIMEOUT_S
    while len(values) < 300 and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        check(message.error() is None, f"consumer error {message.error()}")
        check(message.headers() == [("source", b"confluent")], f"headers {message.headers()}")
        values.append(message.value().decode())
    check(sorted(values) == sorted(f"value-{i}" for i in range(300)), f"group read {len(values)} records")
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=TIMEOUT_S)
    total = sum(tp.offset for tp in committed if tp.offset >= 0)
    check(total == 300, f"committed offsets sum to {total}: {committed}")
    log(f"ok: confluent consumer group {group} read 300 records and committed offsets summing to 300")

    groups = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    names = [listing.group_id for listing in groups.valid]
    check(group in names, f"list_consumer_groups lacks {group}: {names}")
    description = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(timeout=TIMEOUT_S)
    check(len(description.members) == 1, f"describe_consumer_groups members {description.members}")
    log(f"ok: confluent admin lists and describes {group} with 1 member")
    consumer.close()

    admin.delete_topics([topic], request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    log(f"ok: confluent admin deleted {topic}")


def compacted_suite(bootstrap):
    """A compacted topic: kcat and confluent-kafka produce updates and tombstones, the
    broker's cleaner compacts it, and both read every key's latest value back."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = unique("compacted")
    # Batches must fit a segment (RECORD_LIST_TOO_LARGE otherwise, as in Kafka).
    config = {"cleanup.policy": "compact", "segment.bytes": "32768", "min.cleanable.dirty.ratio": "0.01"}
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1, config=config)], request_timeout=TIMEOUT_S
    )
    futures[topic].result(timeout=TIMEOUT_S)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    described = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    for name, value in config.items():
        check(described[name].value == value, f"{name} is {described[name].value}, set {value}")
    log(f"ok: confluent admin created compacted topic {topic}: {config}")

    # Expected state, in produce order (one partition, one producer at a time).
    latest = {}
    lines = []
    for i in range(3000):
        key = f"key-{i % 50}"
        value = "" if i % 7 == 0 else f"kcat-{i}"
        lines.append(f"{key}:{value}")
        latest[key] = value or None
    # -Z: an empty value is produced as NULL, a tombstone.
    run_kcat(bootstrap, ["-P", "-t", topic, "-p", "0", "-K:", "-Z", "-X", "batch.size=16384"],
             stdin="\n".join(lines) + "\n")
    log("ok: kcat produced 3000 updates of 50 keys, with tombstones")

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "batch.size": 16384})
    errors = []
    for i in range(3000):
        key = f"key-{(i * 3) % 60}"
        value = None if i % 11 == 0 else f"confluent-{i}".encode()
        producer.produce(topic, key=key.encode(), value=value, partition=0,
                         on_delivery=lambda error, _message: error and errors.append(error))
        latest[key] = value.decode() if value else None
    remaining = producer.flush(TIMEOUT_S)
    check(remaining == 0 and not errors, f"{remaining} undelivered, errors {errors[:3]}")
    log("ok: confluent idempotent producer delivered 3000 more updates")

    def read_confluent():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("compacted-reader"),
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "enable.partition.eof": True})
        consumer.assign([TopicPartition(topic, 0, 0)])
        records = []
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error() is not None:
                check(message.error().code() == KafkaError._PARTITION_EOF, f"consumer error {message.error()}")
                break
            records.append((message.offset(), message.key().decode(),
                            None if message.value() is None else message.value().decode()))
        consumer.close()
        return records

    deadline = time.time() + 60
    while True:
        records = read_confluent()
        if len(records) < 1500:
            break
        check(time.time() < deadline, f"{len(records)} of 6000 records left after 60 s of cleaning")
        time.sleep(1)
    offsets = [offset for offset, _, _ in records]
    check(offsets == sorted(set(offsets)), "offsets not strictly increasing")
    read_latest = {}
    for _, key, value in records:
        read_latest[key] = value
    check(read_latest == latest, f"confluent read differs from the latest values: "
          f"{[(k, read_latest.get(k), v) for k, v in latest.items() if read_latest.get(k) != v][:5]}")
    log(f"ok: the cleaner compacted 6000 records to {len(records)}; confluent-kafka reads every key's latest value")

    output = run_kcat(bootstrap, ["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-J"])
    kcat_latest = {}
    for line in output.splitlines():
        record = json.loads(line)
        kcat_latest[record["key"]] = record["payload"]
    check(kcat_latest == latest, "kcat read differs from the latest values")
    log("ok: kcat -C reads every key's latest value of the compacted topic")

    keyless = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0})
    outcome = []
    keyless.produce(topic, value=b"no key", partition=0, on_delivery=lambda error, _m: outcome.append(error))
    keyless.flush(TIMEOUT_S)
    check(outcome and outcome[0] is not None and outcome[0].code() == KafkaError.INVALID_RECORD,
          f"a keyless record got {outcome}")
    log("ok: a record without a key is refused with INVALID_RECORD")
    admin.delete_topics([topic], request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)


def kafka_python_suite(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = unique("kafka-python")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    admin.create_topics([NewTopic(name=topic, num_partitions=2, replication_factor=1)])
    log(f"ok: kafka-python admin created {topic}")

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    metadata = [
        producer.send(topic, key=f"k{i % 5}".encode(), value=f"value-{i}".encode(), partition=i % 2)
        for i in range(100)
    ]
    offsets = [future.get(timeout=TIMEOUT_S) for future in metadata]
    check(len(offsets) == 100, "not every send was acknowledged")
    producer.close(timeout=TIMEOUT_S)
    log("ok: kafka-python producer sent 100 records with acks=all")

    group = unique("kafka-python-group")
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    values = []
    deadline = time.time() + TIMEOUT_S
    while len(values) < 100 and time.time() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            values.extend(record.value.decode() for record in records)
    check(sorted(values) == sorted(f"value-{i}" for i in range(100)), f"group read {len(values)} records")
    consumer.commit()
    committed = [consumer.committed(TopicPartition(topic, p)) for p in range(2)]
    check(committed == [50, 50], f"committed offsets {committed}")
    consumer.close()
    log(f"ok: kafka-python consumer group {group} read 100 records and committed [50, 50]")

    # A new member of the same group starts from the committed offsets.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(topic, value=b"after-commit", partition=0).get(timeout=TIMEOUT_S)
    producer.close(timeout=TIMEOUT_S)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    later = []
    deadline = time.time() + TIMEOUT_S
    while not later and time.time() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            later.extend(record.value for record in records)
    consumer.close()
    check(later == [b"after-commit"], f"restarted group member read {later}")
    log("ok: kafka-python group resumed from its committed offsets")
    admin.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    args = parser.parse_args()

    missing = []
    if shutil.which("kcat") is None:
        missing.append("kcat")
    for module, package in [("confluent_kafka", "confluent-kafka"), ("kafka", "kafka-python")]:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        log(f"missing clients: {', '.join(missing)} (scripts/install-test-deps installs them)")
        return MISSING_CLIENT

    failures = 0
    for name, suite in [
        ("kcat", kcat_suite),
        ("confluent-kafka", confluent_suite),
        ("kafka-python", kafka_python_suite),
        ("compacted topic (kcat, confluent-kafka)", compacted_suite),
    ]:
        started = time.time()
        try:
            suite(args.bootstrap)
            log(f"== {name}: ok ({time.time() - started:.1f} s)")
        except Exception as error:  # report every client, not just the first failure
            failures += 1
            traceback.print_exc()
            log(f"== {name}: FAILED: {type(error).__name__}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
