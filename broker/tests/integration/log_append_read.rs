//! Append and read paths of the partition log, with real batches.

use kafka_protocol::records::Compression;
use silt_broker::log::LogError;
use silt_broker::log_config::LogConfig;
use silt_broker::record_batch::{TimestampType, parse_header, validate_batches};
use silt_broker::segment::{LogSegment, SegmentFile};
use silt_broker::test_util::{BatchSpec, batch, decode, log_files, open, read_all, small_segments};

fn partition_dir(root: &tempfile::TempDir) -> std::path::PathBuf {
    root.path().join("orders-0")
}

#[test]
fn append_and_read_round_trip_across_many_segment_rolls() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = partition_dir(&root);
    let mut log = open(&dir, small_segments(2_048));
    let mut expected = Vec::new();
    for index in 0..120 {
        let spec = BatchSpec::new(3, 10_000 + index * 10).tag(&format!("b{index}"));
        let info = log
            .append_as_leader(&spec.encode(), 5, 50_000)
            .expect("append");
        assert_eq!(info.first_offset, index * 3);
        assert_eq!(info.last_offset, index * 3 + 2);
        assert_eq!(info.records_count, 3);
        assert!(!info.duplicate);
        assert_eq!(info.log_append_time_ms, -1);
        for record in 0..3 {
            expected.push((index * 3 + record as i64, spec.value(record)));
        }
    }
    assert_eq!(log.log_end_offset(), 360);
    assert!(
        log.segment_count() > 10,
        "only {} segments",
        log.segment_count()
    );
    assert_eq!(log_files(&dir).len(), log.segment_count());
    assert_eq!(
        log.sealed_segment_base_offsets().len(),
        log.segment_count() - 1
    );

    let all = read_all(&log, 0, 700);
    let got: Vec<(i64, Vec<u8>)> = all
        .into_iter()
        .map(|(offset, _, value)| (offset, value))
        .collect();
    assert_eq!(got, expected);

    // Every offset reads back the batch that contains it.
    for offset in 0..360 {
        let read = log.read(offset, 1, i64::MAX, true).expect("read");
        let records = decode(&read.records);
        let first = records.first().expect("records").0;
        let last = records.last().expect("records").0;
        assert!(
            first <= offset && offset <= last,
            "offset {offset} not in {first}..={last}"
        );
        assert_eq!(read.log_end_offset, 360);
    }
}

#[test]
fn reads_respect_max_bytes_min_one_batch_and_max_offset() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&partition_dir(&root), LogConfig::default());
    let one = batch(4, 1_000);
    let size = one.len();
    for _ in 0..5 {
        let _info = log.append_as_leader(&one, 0, 2_000).expect("append");
    }

    let too_small = log.read(0, size - 1, i64::MAX, false).expect("read");
    assert!(too_small.records.is_empty());
    let forced = log.read(0, size - 1, i64::MAX, true).expect("read");
    assert_eq!(forced.records.len(), size);

    let two_and_a_half = log.read(0, size * 5 / 2, i64::MAX, false).expect("read");
    assert_eq!(two_and_a_half.records.len(), size * 2, "only whole batches");

    // High watermark at 8: batches [0,3] and [4,7] only.
    let below_hw = log.read(0, usize::MAX / 2, 8, false).expect("read");
    assert_eq!(decode(&below_hw.records).len(), 8);
    // A batch straddling the high watermark is not exposed.
    let straddling = log.read(4, usize::MAX / 2, 6, true).expect("read");
    assert!(straddling.records.is_empty());

    let at_end = log.read(20, 1_000, i64::MAX, true).expect("read at LEO");
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.log_end_offset, 20);

    let beyond = log.read(21, 1_000, i64::MAX, true).expect_err("beyond LEO");
    assert!(matches!(
        beyond,
        LogError::OffsetOutOfRange {
            offset: 21,
            log_start_offset: 0,
            log_end_offset: 20
        }
    ));
    assert_eq!(beyond.kafka_error_code(), 1);
    assert!(log.read(-1, 1_000, i64::MAX, true).is_err());

    // Starting in the middle of a batch returns the whole batch.
    let middle = log.read(6, size, i64::MAX, false).expect("read");
    let offsets: Vec<i64> = decode(&middle.records)
        .iter()
        .map(|record| record.0)
        .collect();
    assert_eq!(offsets, vec![4, 5, 6, 7]);
}

#[test]
fn compressed_batches_pass_through_untouched() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&partition_dir(&root), LogConfig::default());
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
        Compression::None,
    ];
    let mut sent = Vec::new();
    for (index, codec) in codecs.into_iter().enumerate() {
        let spec = BatchSpec::new(10, 5_000)
            .compression(codec)
            .value_size(200)
            .tag(&format!("c{index}"));
        let bytes = spec.encode();
        let info = log.append_as_leader(&bytes, 3, 6_000).expect("append");
        sent.push((info.first_offset, bytes, spec));
    }
    for (first_offset, bytes, spec) in sent {
        let read = log.read(first_offset, 1, i64::MAX, true).expect("read");
        let stored = read.records.to_vec();
        assert_eq!(stored.len(), bytes.len());
        assert_eq!(
            &stored[0..8],
            &first_offset.to_be_bytes(),
            "base offset patched"
        );
        assert_eq!(&stored[12..16], &3i32.to_be_bytes(), "leader epoch patched");
        assert_eq!(&stored[8..12], &bytes[8..12]);
        assert_eq!(
            &stored[16..],
            &bytes[16..],
            "everything from magic on is byte-identical"
        );
        let records = decode(&read.records);
        assert_eq!(records.len(), 10);
        for (index, (offset, _, value)) in records.into_iter().enumerate() {
            assert_eq!(offset, first_offset + index as i64);
            assert_eq!(value, spec.value(index));
        }
    }
}

#[test]
fn corrupt_crc_is_rejected_and_nothing_is_appended() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&partition_dir(&root), LogConfig::default());
    let _info = log
        .append_as_leader(&batch(2, 1_000), 0, 2_000)
        .expect("append");
    let good = batch(3, 1_000);
    let mut bad = batch(3, 1_000);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let mut request = good.clone();
    request.extend_from_slice(&bad);
    let error = log
        .append_as_leader(&request, 0, 2_000)
        .expect_err("corrupt");
    assert_eq!(error.kafka_error_code(), 2);
    assert_eq!(
        log.log_end_offset(),
        2,
        "the good batch of the request was not appended either"
    );
    assert_eq!(log.size_bytes() as usize, batch(2, 1_000).len());

    let mut old_magic = good.clone();
    old_magic[16] = 1;
    let error = log
        .append_as_leader(&old_magic, 0, 2_000)
        .expect_err("magic 1");
    assert_eq!(error.kafka_error_code(), 43);

    let truncated = &good[..good.len() - 3];
    let error = log
        .append_as_leader(truncated, 0, 2_000)
        .expect_err("truncated");
    assert_eq!(error.kafka_error_code(), 2);
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn oversized_batch_is_message_too_large() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        max_message_bytes: 500,
        ..LogConfig::default()
    };
    let mut log = open(&partition_dir(&root), config);
    let big = BatchSpec::new(2, 1_000).value_size(400).encode();
    let error = log.append_as_leader(&big, 0, 2_000).expect_err("too large");
    assert!(matches!(error, LogError::MessageTooLarge { max: 500, .. }));
    assert_eq!(error.kafka_error_code(), 10);
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = partition_dir(&root);
    let mut log = open(&dir, small_segments(1_024));
    // Batch i holds 4 records with timestamps 100*i .. 100*i+3.
    for index in 0..30 {
        let _info = log
            .append_as_leader(&batch(4, 100 * index), 0, 10_000)
            .expect("append");
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), Some((0, 0)));
    assert_eq!(
        log.offset_for_timestamp(102).expect("lookup"),
        Some((6, 102))
    );
    assert_eq!(
        log.offset_for_timestamp(104).expect("lookup"),
        Some((8, 200))
    );
    assert_eq!(
        log.offset_for_timestamp(2_503).expect("lookup"),
        Some((103, 2_503))
    );
    assert_eq!(
        log.offset_for_timestamp(2_903).expect("lookup"),
        Some((119, 2_903))
    );
    assert_eq!(log.offset_for_timestamp(2_904).expect("lookup"), None);
    assert_eq!(log.max_timestamp_offset(), Some((119, 2_903)));

    // The same answers after a clean restart, from the indexes.
    log.close().expect("close");
    let log = open(&dir, small_segments(1_024));
    assert_eq!(
        log.offset_for_timestamp(1_702).expect("lookup"),
        Some((70, 1_702))
    );
    assert_eq!(log.max_timestamp_offset(), Some((119, 2_903)));
}

#[test]
fn offset_for_timestamp_in_compressed_batch_answers_with_the_batch() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&partition_dir(&root), LogConfig::default());
    let _first = log
        .append_as_leader(&batch(5, 100), 0, 1_000)
        .expect("append");
    let compressed = BatchSpec::new(5, 200)
        .compression(Compression::Gzip)
        .encode();
    let _second = log.append_as_leader(&compressed, 0, 1_000).expect("append");
    assert_eq!(
        log.offset_for_timestamp(202).expect("lookup"),
        Some((5, 204))
    );
    assert_eq!(
        log.offset_for_timestamp(103).expect("lookup"),
        Some((3, 103))
    );
}

#[test]
fn a_leader_append_of_many_batches_stores_the_assigned_offsets_and_epoch() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut log = open(&partition_dir(&root), LogConfig::default());
    let _first = log
        .append_as_leader(&batch(4, 1_000), 3, 50_000)
        .expect("first append");
    // 600 batches in one record set: 1,200 write slices, more than one pwritev takes.
    let specs: Vec<BatchSpec> = (0..600)
        .map(|index| BatchSpec::new(2, 2_000 + index).tag(&format!("m{index}")))
        .collect();
    let received: Vec<u8> = specs.iter().flat_map(BatchSpec::encode).collect();
    let info = log
        .append_as_leader(&received, 7, 50_000)
        .expect("append of 600 batches");
    assert_eq!((info.first_offset, info.last_offset), (4, 4 + 1_199));
    assert!(
        validate_batches(&received)
            .expect("input")
            .iter()
            .all(|header| header.base_offset == 0),
        "the received bytes are written as they are, not patched in place"
    );

    let read = log.read(4, 10 << 20, i64::MAX, true).expect("read");
    assert_eq!(read.records.len(), received.len());
    let stored = validate_batches(&read.records).expect("stored batches keep valid CRCs");
    assert_eq!(stored.len(), 600);
    for (index, header) in stored.iter().enumerate() {
        assert_eq!(header.base_offset, 4 + 2 * index as i64);
        assert_eq!(header.partition_leader_epoch, 7);
    }
    let expected: Vec<(i64, Vec<u8>)> = specs
        .iter()
        .enumerate()
        .flat_map(|(index, spec)| {
            (0..2).map(move |record| (4 + 2 * index as i64 + record as i64, spec.value(record)))
        })
        .collect();
    let got: Vec<(i64, Vec<u8>)> = decode(&read.records)
        .into_iter()
        .map(|(offset, _, value)| (offset, value))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn log_append_time_topics_stamp_the_broker_time() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = open(&partition_dir(&root), config);
    let info = log
        .append_as_leader(&batch(3, 5), 0, 777_000)
        .expect("append");
    assert_eq!(info.log_append_time_ms, 777_000);
    assert_eq!(info.max_timestamp, 777_000);
    let read = log.read(0, 10_000, i64::MAX, true).expect("read");
    let headers = validate_batches(&read.records).expect("crc recomputed");
    assert_eq!(headers[0].timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(headers[0].max_timestamp, 777_000);
    assert_eq!(
        log.offset_for_timestamp(700_000).expect("lookup"),
        Some((0, 777_000))
    );
}

#[test]
fn segment_ms_rolls_on_record_time() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    };
    let mut log = open(&partition_dir(&root), config);
    let _a = log
        .append_as_leader(&batch(1, 10_000), 0, 10_000)
        .expect("append");
    let _b = log
        .append_as_leader(&batch(1, 10_500), 0, 10_500)
        .expect("append");
    assert_eq!(log.segment_count(), 1);
    let _c = log
        .append_as_leader(&batch(1, 11_001), 0, 11_001)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.sealed_segment_base_offsets(), vec![0]);
    let files = log.sealed_segment_files(0).expect("sealed files");
    assert_eq!(files.next_offset, 2);
    assert!(files.producer_snapshot.is_some());
    assert!(files.log.exists() && files.offset_index.exists() && files.time_index.exists());
}

#[test]
fn idle_tiered_segments_roll_after_segment_ms_of_wall_clock() {
    let root = tempfile::tempdir().expect("tempdir");
    let tiered = LogConfig {
        segment_ms: 1_000,
        remote_storage_enable: true,
        ..LogConfig::default()
    };
    let dir = partition_dir(&root);
    let mut log = open(&dir, tiered.clone());
    assert!(
        !log.roll_if_idle(5_000).expect("check"),
        "an empty segment never rolls"
    );
    let _a = log
        .append_as_leader(&batch(3, 10_000), 0, 10_000)
        .expect("append");
    assert!(
        !log.roll_if_idle(10_999).expect("check"),
        "not idle for segment.ms yet"
    );
    assert!(
        log.roll_if_idle(11_000).expect("check"),
        "idle for segment.ms"
    );
    assert_eq!(log.sealed_segment_base_offsets(), vec![0]);
    assert_eq!(log.active_segment_base_offset(), 3);
    assert!(
        !log.roll_if_idle(60_000).expect("check"),
        "the new segment is empty"
    );

    // After a restart the clock starts at the first check that finds records.
    let _b = log
        .append_as_leader(&batch(2, 20_000), 0, 20_000)
        .expect("append");
    log.close().expect("close");
    let mut reopened = open(&dir, tiered);
    assert!(
        !reopened.roll_if_idle(90_000).expect("check"),
        "clock starts now"
    );
    assert!(!reopened.roll_if_idle(90_999).expect("check"));
    assert!(reopened.roll_if_idle(91_000).expect("check"));
    assert_eq!(reopened.sealed_segment_base_offsets(), vec![0, 3]);

    // Topics that do not tier roll only on appends, as in Kafka.
    let plain_root = tempfile::tempdir().expect("tempdir");
    let mut plain = open(
        &partition_dir(&plain_root),
        LogConfig {
            segment_ms: 1_000,
            ..LogConfig::default()
        },
    );
    let _c = plain
        .append_as_leader(&batch(1, 10_000), 0, 10_000)
        .expect("append");
    assert!(!plain.roll_if_idle(1_000_000).expect("check"));
    assert_eq!(plain.segment_count(), 1);
}

#[test]
fn segment_index_lookups_find_the_containing_batch() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let mut segment = LogSegment::open(dir, 1_000, 128, 0, SegmentFile::Empty).expect("create");
    let mut offset = 1_000i64;
    for index in 0..40 {
        let mut bytes = BatchSpec::new(3, index * 10).value_size(50).encode();
        silt_broker::record_batch::patch_base_offset_and_epoch(&mut bytes, offset, 0);
        let header = parse_header(&bytes).expect("header");
        segment.append(&bytes, &[header]).expect("append");
        offset = header.next_offset();
    }
    let entries = segment.offset_index_entries().to_vec();
    assert!(entries.len() > 10, "{} entries", entries.len());
    for entry in &entries {
        let location = segment
            .find_offset_position(entry.offset)
            .expect("lookup")
            .expect("found");
        assert_eq!(location.header.last_offset(), entry.offset);
        assert_eq!(location.position, u64::from(entry.position));
    }
    for target in 1_000..offset {
        let location = segment
            .find_offset_position(target)
            .expect("lookup")
            .expect("found");
        assert!(location.header.base_offset <= target && target <= location.header.last_offset());
    }
    assert!(
        segment
            .find_offset_position(offset)
            .expect("lookup")
            .is_none()
    );
    let time_entries = segment.time_index_entries().to_vec();
    assert!(
        time_entries
            .windows(2)
            .all(|pair| pair[0].timestamp < pair[1].timestamp)
    );
    segment.seal().expect("seal");
    drop(segment);

    let reopened = LogSegment::open(dir, 1_000, 128, 0, SegmentFile::Existing).expect("open");
    assert_eq!(reopened.needs_recovery(), None);
    assert_eq!(reopened.offset_index_entries(), entries.as_slice());
    assert_eq!(reopened.next_offset(), offset);
    assert_eq!(reopened.max_timestamp(), 392);
    assert_eq!(reopened.offset_of_max_timestamp(), offset - 1);
}
