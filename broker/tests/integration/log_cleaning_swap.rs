//! Replacing sealed segments (the cleaner's swap) is crash safe: a crash after any step
//! leaves, once the log is reopened, either the old segments or the new one, never a
//! mix, and no leftover file.

use silt_broker::PartitionLog;
use silt_broker::cleaning::{CleaningView, ReplacementSegment, SealedSegment};
use silt_broker::log::LogError;
use silt_broker::record_batch::{batch_size_from_prefix, parse_header};
use silt_broker::test_util::{BatchSpec, file_names, log_files, open, read_all, small_segments};

const BATCHES: i64 = 12;

fn spec(index: i64) -> BatchSpec {
    BatchSpec::new(2, 1_000 + index * 10).tag(&format!("b{index}"))
}

/// A log of `BATCHES` two-record batches in segments of two or three batches.
fn filled(dir: &std::path::Path) -> PartitionLog {
    let mut log = open(dir, small_segments(350));
    for index in 0..BATCHES {
        log.append_as_leader(&spec(index).encode(), 0, 0)
            .expect("append");
    }
    log.roll(0).expect("roll");
    log
}

/// A replacement for the first `count` sealed segments holding every other batch.
fn replacement_of(view: &CleaningView, count: usize) -> (Vec<SealedSegment>, ReplacementSegment) {
    let replaced: Vec<SealedSegment> = view.sealed[..count].to_vec();
    let mut replacement =
        ReplacementSegment::create(&view.dir, replaced[0].base_offset, 256, 0).expect("create");
    for segment in &replaced {
        let bytes = std::fs::read(&segment.log_path).expect("read segment");
        let mut position = 0;
        while position < bytes.len() {
            let size = batch_size_from_prefix(&bytes[position..]).expect("frame");
            let header = parse_header(&bytes[position..]).expect("header");
            if header.base_offset % 4 == 0 {
                replacement
                    .append(&bytes[position..position + size])
                    .expect("append");
            }
            position += size;
        }
    }
    (replaced, replacement)
}

fn offsets(log: &PartitionLog) -> Vec<i64> {
    read_all(log, log.log_start_offset(), 1 << 20)
        .into_iter()
        .map(|(offset, _, _)| offset)
        .collect()
}

#[test]
fn a_crash_after_any_step_of_the_swap_leaves_the_old_or_the_new_segments() {
    let reference = tempfile::tempdir().expect("tempdir");
    let old_offsets = offsets(&filled(reference.path()));
    assert_eq!(old_offsets.len() as i64, BATCHES * 2);
    let mut new_offsets = None;
    for step in [1u8, 2, 3, 4] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = filled(dir.path());
        let view = log.cleaning_view();
        assert!(view.sealed.len() >= 4, "{:?}", view.sealed);
        let (replaced, replacement) = replacement_of(&view, 3);
        if step == 4 {
            log.replace_segments(&view, &replaced, replacement, 0)
                .expect("replace");
            let expected: Vec<i64> = old_offsets
                .iter()
                .copied()
                .filter(|offset| *offset >= view.sealed[3].base_offset || (offset / 2) % 2 == 0)
                .collect();
            assert_eq!(offsets(&log), expected, "live log after the swap");
            new_offsets = Some(expected);
        } else {
            log.replace_segments_crashing_after(&view, &replaced, replacement, step)
                .expect("partial replace");
        }
        drop(log);
        let reopened = PartitionLog::open(dir.path(), small_segments(350), 0).expect("reopen");
        let after = offsets(&reopened);
        let leftovers: Vec<String> = file_names(dir.path())
            .into_iter()
            .filter(|name| name.ends_with(".swap") || name == "cleaner-scratch")
            .collect();
        assert!(leftovers.is_empty(), "step {step}: leftovers {leftovers:?}");
        if step == 1 {
            assert_eq!(
                after, old_offsets,
                "uncommitted swap must leave the old segments"
            );
        } else {
            let expected: Vec<i64> = old_offsets
                .iter()
                .copied()
                .filter(|offset| *offset >= view.sealed[3].base_offset || (offset / 2) % 2 == 0)
                .collect();
            assert_eq!(
                after, expected,
                "step {step}: committed swap must be finished"
            );
            assert!(log_files(dir.path()).len() < view.sealed.len() + 1);
        }
    }
    assert!(new_offsets.is_some());
}

#[test]
fn a_replacement_planned_before_a_truncation_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path());
    let view = log.cleaning_view();
    let (replaced, replacement) = replacement_of(&view, 2);
    log.truncate_to(view.sealed[3].base_offset)
        .expect("truncate");
    let error = log
        .replace_segments(&view, &replaced, replacement, 0)
        .expect_err("refused");
    assert!(matches!(error, LogError::CleaningAborted(_)), "{error}");
    assert_eq!(offsets(&log).len() as i64, view.sealed[3].base_offset);
    assert!(
        !dir.path()
            .join("cleaner-scratch")
            .join("00000000000000000000.log")
            .exists()
    );
}

#[test]
fn a_failed_install_leaves_the_old_segments_readable_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path());
    let before = offsets(&log);
    let view = log.cleaning_view();
    let (replaced, replacement) = replacement_of(&view, 3);
    // The replacement's index vanishes before the swap: its first rename fails.
    let index = dir
        .path()
        .join("cleaner-scratch")
        .join(format!("{:020}.index", replaced[0].base_offset));
    std::fs::remove_file(&index).expect("remove index");
    let error = log
        .replace_segments(&view, &replaced, replacement, 0)
        .expect_err("the install fails");
    assert!(matches!(error, LogError::Io(_)), "{error}");
    assert_eq!(offsets(&log), before, "the live log lost offsets");
    let leftovers: Vec<String> = file_names(dir.path())
        .into_iter()
        .filter(|name| name.ends_with(".swap") || name == "cleaner-scratch")
        .collect();
    assert!(leftovers.is_empty(), "leftovers {leftovers:?}");
    drop(log);
    let reopened = PartitionLog::open(dir.path(), small_segments(350), 0).expect("reopen");
    assert_eq!(offsets(&reopened), before);
}
