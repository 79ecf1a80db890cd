//! One log segment: `<baseOffset:020>.log` with its `.index` and `.timeindex`.
//!
//! Batches are stored exactly as appended (v2 record batches, offsets
//! already assigned). Byte positions are `u32` in the indexes, so a segment
//! never grows past `u32::MAX` bytes; the log rolls long before that.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tracing::{debug, warn};

use crate::checkpoint::remove_if_exists;
use crate::error::LogError;
use crate::offset_index::{OffsetIndex, OffsetPosition};
use crate::record_batch::{
    BATCH_HEADER_SIZE, BatchHeader, NO_TIMESTAMP, OFFSET_PREFIX_SIZE, RecordLookup,
    batch_size_from_prefix, encode_offset_prefix, find_record_by_timestamp, parse_header,
    validate_stored_batch,
};
use crate::time_index::{TimeIndex, TimestampOffset};

/// File extension of segment data files.
pub const LOG_FILE_SUFFIX: &str = "log";
/// File extension of offset index files.
pub const INDEX_FILE_SUFFIX: &str = "index";
/// File extension of time index files.
pub const TIME_INDEX_FILE_SUFFIX: &str = "timeindex";

/// Window for scans that only need headers.
const HEADER_SCAN_WINDOW: usize = 16 * 1024;
/// Window for scans that verify whole batches.
const VERIFY_SCAN_WINDOW: usize = 1024 * 1024;

/// Reads exactly `len` bytes at `position` into a new buffer that is not zero-filled
/// first: fetches read megabytes at a time, and the fill would be a second pass over
/// every byte.
///
/// # Errors
/// The file's I/O errors; `UnexpectedEof` when the file ends before `position + len`.
pub fn read_exact_at_uninit(file: &File, position: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = position + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file ends before byte {} (wanted {len} bytes at {position})",
                        at
                    ),
                ));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    // The spare capacity may exceed `len`: keep only what was asked for.
    buf.truncate(len);
    Ok(buf)
}

/// `<dir>/<offset:020>.<suffix>`, Kafka's file naming.
pub fn offset_file_path(dir: &Path, offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{offset:020}.{suffix}"))
}

/// Parses the base offset out of a `<offset:020>.<suffix>` file name.
pub fn parse_offset_file_name(file_name: &str, suffix: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A batch found in a segment: where it starts and its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    /// Byte position of the batch in the `.log` file.
    pub position: u64,
    /// The batch header.
    pub header: BatchHeader,
}

/// What the segment knows about its content; rebuilt by load and recovery.
#[derive(Debug, Clone, Copy)]
struct SegmentState {
    size: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    first_batch_timestamp: Option<i64>,
    bytes_since_last_index_entry: u64,
}

/// Index entries Kafka writes for one batch.
struct IndexPoint {
    offset_entry: OffsetPosition,
    time_entry: TimestampOffset,
}

impl SegmentState {
    fn empty(base_offset: i64) -> SegmentState {
        SegmentState {
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            bytes_since_last_index_entry: 0,
        }
    }

    /// [`SegmentState::observe`] for a batch met by a scan of the file: the batch itself
    /// is read from `scanner` only when it holds a new maximum timestamp.
    fn observe_scanned(
        &mut self,
        scanner: &mut BatchScanner<'_>,
        position: u64,
        header: &BatchHeader,
        index_interval_bytes: u64,
    ) -> io::Result<Option<IndexPoint>> {
        let mut batch_max_offset = header.base_offset;
        if header.max_timestamp > self.max_timestamp {
            let batch = scanner.bytes(position, header.size_bytes())?;
            batch_max_offset = offset_of_batch_max(batch, header);
        }
        Ok(self.observe(position, header, batch_max_offset, index_interval_bytes))
    }

    /// Accounts for `header` stored at `position` and returns the index
    /// entries due before it, following Kafka's `LogSegment.append`.
    fn observe(
        &mut self,
        position: u64,
        header: &BatchHeader,
        offset_of_batch_max: i64,
        index_interval_bytes: u64,
    ) -> Option<IndexPoint> {
        debug_assert_eq!(position, self.size);
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = offset_of_batch_max;
        }
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
        let mut point = None;
        if self.bytes_since_last_index_entry > index_interval_bytes {
            point = Some(IndexPoint {
                offset_entry: OffsetPosition {
                    offset: header.last_offset(),
                    position: position as u32,
                },
                time_entry: TimestampOffset {
                    timestamp: self.max_timestamp,
                    offset: self.offset_of_max_timestamp,
                },
            });
            self.bytes_since_last_index_entry = 0;
        }
        let size = header.size_bytes() as u64;
        self.bytes_since_last_index_entry += size;
        self.size += size;
        self.next_offset = header.next_offset();
        point
    }
}

/// Writes the batches of `records` at `position` with one `pwritev` per
/// [`MAX_WRITE_SLICES`] slices: each batch's offset prefix from its header, the
/// rest from `records`.
fn write_batches_at(
    file: &File,
    records: &[u8],
    headers: &[BatchHeader],
    position: u64,
) -> io::Result<()> {
    let prefixes: Vec<[u8; OFFSET_PREFIX_SIZE]> =
        headers.iter().map(encode_offset_prefix).collect();
    let mut slices = Vec::with_capacity(headers.len() * 2);
    let mut start = 0usize;
    for (header, prefix) in headers.iter().zip(&prefixes) {
        let end = start + header.size_bytes();
        slices.push(io::IoSlice::new(prefix));
        slices.push(io::IoSlice::new(&records[start + OFFSET_PREFIX_SIZE..end]));
        start = end;
    }
    let mut position = position;
    let mut remaining: &mut [io::IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let chunk = remaining.len().min(MAX_WRITE_SLICES);
        let written = match rustix::io::pwritev(file, &remaining[..chunk], position) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        };
        position += written as u64;
        io::IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

/// Slices per `pwritev` call, Linux's `IOV_MAX`.
const MAX_WRITE_SLICES: usize = 1024;

/// Offset of the first record carrying the batch's max timestamp; the
/// batch's base offset when the records cannot be inspected.
fn offset_of_batch_max(batch: &[u8], header: &BatchHeader) -> i64 {
    match find_record_by_timestamp(batch, header, header.max_timestamp, header.base_offset) {
        RecordLookup::Found { offset, .. } => offset,
        RecordLookup::NotFound | RecordLookup::Compressed => header.base_offset,
    }
}

/// One step of a sequential scan over a `.log` file.
enum ScanStep {
    Batch(BatchLocation),
    Invalid { position: u64, reason: String },
    End,
}

/// Sequential reader of batch headers (and optionally whole batches) with a
/// read-ahead window, so a scan costs few system calls.
struct BatchScanner<'a> {
    file: &'a File,
    position: u64,
    end: u64,
    window: Vec<u8>,
    window_start: u64,
    window_size: usize,
}

impl<'a> BatchScanner<'a> {
    fn new(file: &'a File, start: u64, end: u64, window_size: usize) -> BatchScanner<'a> {
        BatchScanner {
            file,
            position: start,
            end,
            window: Vec::new(),
            window_start: start,
            window_size,
        }
    }

    /// Bytes `[at, at + len)`, which must lie before `end`.
    fn bytes(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        debug_assert!(at + len as u64 <= self.end);
        let window_end = self.window_start + self.window.len() as u64;
        if at < self.window_start || at + len as u64 > window_end {
            let read_len = (len.max(self.window_size) as u64).min(self.end - at) as usize;
            self.window.resize(read_len, 0);
            self.file.read_exact_at(&mut self.window, at)?;
            self.window_start = at;
        }
        let start = (at - self.window_start) as usize;
        Ok(&self.window[start..start + len])
    }

    /// Next batch, with its CRC checked when `verify`.
    fn next(&mut self, verify: bool) -> io::Result<ScanStep> {
        let position = self.position;
        let remaining = self.end - position;
        if remaining == 0 {
            return Ok(ScanStep::End);
        }
        let invalid = |reason: String| Ok(ScanStep::Invalid { position, reason });
        if remaining < BATCH_HEADER_SIZE as u64 {
            return invalid(format!("{remaining} trailing bytes"));
        }
        let header_bytes = self.bytes(position, BATCH_HEADER_SIZE)?;
        let size = match batch_size_from_prefix(header_bytes) {
            Ok(size) => size,
            Err(error) => return invalid(error.to_string()),
        };
        let header = match parse_header(header_bytes) {
            Ok(header) => header,
            Err(error) => return invalid(error.to_string()),
        };
        if size as u64 > remaining {
            return invalid(format!("batch of {size} bytes with {remaining} bytes left"));
        }
        if header.records_count < 0 || header.last_offset_delta < 0 {
            return invalid(format!(
                "records count {} and last offset delta {}",
                header.records_count, header.last_offset_delta
            ));
        }
        if verify {
            let batch = self.bytes(position, size)?;
            if let Err(error) = validate_stored_batch(batch) {
                return invalid(error.to_string());
            }
        }
        self.position += size as u64;
        Ok(ScanStep::Batch(BatchLocation { position, header }))
    }
}

/// Calls `visit` with every batch of the segment `.log` file `file` (a handle of the
/// caller's own, so the log may delete the file meanwhile), in order, through a
/// read-ahead window: the log cleaner's reader. Stops at the end of the file, or when
/// `visit` returns `false`.
///
/// # Errors
/// I/O errors and [`LogError::Corrupt`] (a batch that cannot be framed) as `E`, or
/// `visit`'s own.
pub fn visit_batches<E: From<LogError>>(
    file: &File,
    mut visit: impl FnMut(&BatchHeader, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    let end = file.metadata().map_err(LogError::from)?.len();
    let mut scanner = BatchScanner::new(file, 0, end, VERIFY_SCAN_WINDOW);
    loop {
        match scanner.next(false).map_err(LogError::from)? {
            ScanStep::End => return Ok(()),
            ScanStep::Invalid { position, reason } => {
                return Err(
                    LogError::Corrupt(format!("batch at byte {position}: {reason}")).into(),
                );
            }
            ScanStep::Batch(location) => {
                let batch = scanner
                    .bytes(location.position, location.header.size_bytes())
                    .map_err(LogError::from)?;
                if !visit(&location.header, batch)? {
                    return Ok(());
                }
            }
        }
    }
}

/// Blocks past a reopened segment's records below this many bytes are block rounding
/// and extent-tree blocks, not an allocation ahead.
const ALLOCATION_SLACK_BYTES: u64 = 64 * 1024;

/// Fewest bytes of blocks past the records worth freeing at a roll
/// ([`LogSegment::seal_for_roll`]).
pub const ROLL_RELEASE_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// A `.log` file and its two sparse indexes.
#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    log_path: PathBuf,
    file: File,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    index_interval_bytes: u64,
    state: SegmentState,
    /// Where the disk blocks allocated for the `.log` file end (bytes), as far as the
    /// segment knows: past `state.size` after [`LogSegment::preallocate_ahead`] or when
    /// opened with blocks past its end; at or below `state.size` (appends do not move it)
    /// when nothing lies past the records. The file's length is always `state.size`.
    allocated_end: u64,
    /// Blocks were allocated ahead of the records at some point (see
    /// [`LogSegment::allocation_started`]).
    allocated_ahead: bool,
    created_ms: i64,
    load_problem: Option<String>,
}

/// The bounds of one read from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// At most this many bytes in total (whole batches only).
    pub max_bytes: usize,
    /// Only batches whose last offset is below this offset (exclusive; e.g. the high
    /// watermark).
    pub max_offset: i64,
    /// Return the first batch even when it is larger than `max_bytes` (KIP-74).
    pub min_one_batch: bool,
}

/// Which files [`LogSegment::open`] starts a segment from (Kafka's `fileAlreadyExists`).
#[derive(Debug, Clone, Copy)]
pub enum SegmentFile<'a> {
    /// The segment's existing files: its state is restored from the indexes plus a
    /// header scan after the last offset-index entry.
    Existing,
    /// A new, empty segment, replacing any files of the same name.
    Empty,
    /// A new, empty segment from a standby file ([`crate::preallocate::Standby`]): the
    /// empty file at `path`, which has `allocated_bytes` of disk blocks allocated past
    /// its end, is renamed to the segment's `.log` name, so the roll does no allocation.
    Standby {
        /// The standby file.
        path: &'a Path,
        /// Bytes of disk blocks allocated past the file's end.
        allocated_bytes: u64,
    },
}

impl LogSegment {
    /// Opens the segment starting at `base_offset` in `dir` from `file`, with an
    /// offset-index entry every `index_interval_bytes`; `now_ms` is its creation time.
    ///
    /// For [`SegmentFile::Existing`], missing or inconsistent indexes, or a bad batch in
    /// the scan, do not fail the open: they are reported by
    /// [`LogSegment::needs_recovery`], and [`LogSegment::recover`] must run before the
    /// segment is used.
    ///
    /// # Errors
    /// I/O errors opening or creating the files; for a standby, a failed rename leaves
    /// nothing changed.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
        file: SegmentFile<'_>,
    ) -> Result<LogSegment, LogError> {
        let log_path = offset_file_path(dir, base_offset, LOG_FILE_SUFFIX);
        let (file, allocated_end) = match file {
            SegmentFile::Existing => {
                return Self::load(dir, base_offset, index_interval_bytes, now_ms);
            }
            SegmentFile::Empty => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&log_path)?;
                (file, 0)
            }
            SegmentFile::Standby {
                path,
                allocated_bytes,
            } => {
                fs::rename(path, &log_path)?;
                // No O_TRUNC: truncating frees the blocks allocated past the end.
                let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
                if file.metadata()?.len() != 0 {
                    file.set_len(0)?;
                }
                (file, allocated_bytes)
            }
        };
        let mut segment = Self::from_files(dir, base_offset, file, index_interval_bytes, now_ms)?;
        segment.offset_index.rewrite(Vec::new())?;
        segment.time_index.rewrite(Vec::new())?;
        segment.allocated_end = allocated_end;
        segment.allocated_ahead = allocated_end > 0;
        debug!(base_offset, path = %segment.log_path.display(), "created log segment");
        Ok(segment)
    }

    /// A segment over its open `.log` file and its index files (opened or created as
    /// they are), with empty state and nothing allocated ahead.
    fn from_files(
        dir: &Path,
        base_offset: i64,
        file: File,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<LogSegment, LogError> {
        let index_path = offset_file_path(dir, base_offset, INDEX_FILE_SUFFIX);
        let time_index_path = offset_file_path(dir, base_offset, TIME_INDEX_FILE_SUFFIX);
        Ok(LogSegment {
            base_offset,
            log_path: offset_file_path(dir, base_offset, LOG_FILE_SUFFIX),
            file,
            offset_index: OffsetIndex::open(&index_path, base_offset)?,
            time_index: TimeIndex::open(&time_index_path, base_offset)?,
            index_interval_bytes: u64::from(index_interval_bytes),
            state: SegmentState::empty(base_offset),
            allocated_end: 0,
            allocated_ahead: false,
            created_ms: now_ms,
            load_problem: None,
        })
    }

    /// Restores an existing segment's state (see [`LogSegment::open`]).
    fn load(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<LogSegment, LogError> {
        let log_path = offset_file_path(dir, base_offset, LOG_FILE_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(false)
            .open(&log_path)?;
        let indexes_existed = offset_file_path(dir, base_offset, INDEX_FILE_SUFFIX).exists()
            && offset_file_path(dir, base_offset, TIME_INDEX_FILE_SUFFIX).exists();
        let mut segment = Self::from_files(dir, base_offset, file, index_interval_bytes, now_ms)?;
        let metadata = segment.file.metadata()?;
        let file_size = metadata.len();
        // Blocks preallocated before a crash show here, so sealing still frees them. A
        // file without blocks past its records (beyond block rounding and extent-tree
        // blocks) counts as never allocated ahead.
        let allocated = metadata.blocks() * 512;
        segment.allocated_ahead = allocated > file_size + ALLOCATION_SLACK_BYTES;
        segment.allocated_end = file_size.max(allocated);
        if !indexes_existed && file_size > 0 {
            segment.load_problem = Some("index files missing".to_string());
        } else if let Err(reason) = segment.load_state(file_size) {
            segment.load_problem = Some(reason);
        }
        Ok(segment)
    }

    /// Why the segment must be recovered before use, if it must.
    pub fn needs_recovery(&self) -> Option<&str> {
        self.load_problem.as_deref()
    }

    /// Restores in-memory state from the indexes and a header scan of the
    /// tail after the last offset-index entry.
    fn load_state(&mut self, file_size: u64) -> Result<(), String> {
        self.offset_index.sanity_check(file_size)?;
        let tail_start = self
            .offset_index
            .last_entry()
            .map_or(0, |entry| u64::from(entry.position));
        let mut state = SegmentState::empty(self.base_offset);
        state.size = tail_start;
        if let Some(entry) = self.time_index.last_entry() {
            state.max_timestamp = entry.timestamp;
            state.offset_of_max_timestamp = entry.offset;
        }
        if tail_start > 0 {
            let mut first = [0u8; BATCH_HEADER_SIZE];
            self.file
                .read_exact_at(&mut first, 0)
                .map_err(|error| format!("reading first batch: {error}"))?;
            let header = parse_header(&first).map_err(|error| error.to_string())?;
            state.first_batch_timestamp = Some(header.max_timestamp);
        }
        let expected_indexed_offset = self.offset_index.last_entry().map(|entry| entry.offset);
        let mut scanner = BatchScanner::new(&self.file, tail_start, file_size, HEADER_SCAN_WINDOW);
        let mut minimum_base_offset = self.base_offset;
        let mut repaired_entries = Vec::new();
        loop {
            let step = scanner
                .next(false)
                .map_err(|error| format!("reading segment: {error}"))?;
            let location = match step {
                ScanStep::End => break,
                ScanStep::Invalid { position, reason } => {
                    return Err(format!("invalid batch at position {position}: {reason}"));
                }
                ScanStep::Batch(location) => location,
            };
            let header = location.header;
            check_batch_offsets(self.base_offset, minimum_base_offset, &header)?;
            if location.position == tail_start
                && let Some(expected) = expected_indexed_offset
                && header.last_offset() != expected
            {
                return Err(format!(
                    "index entry for offset {expected} points at batch ending at {}",
                    header.last_offset()
                ));
            }
            if let Some(point) = state
                .observe_scanned(
                    &mut scanner,
                    location.position,
                    &header,
                    self.index_interval_bytes,
                )
                .map_err(|error| format!("reading batch: {error}"))?
            {
                repaired_entries.push(point);
            }
            minimum_base_offset = header.next_offset();
        }
        self.time_index.sanity_check(state.next_offset)?;
        for point in repaired_entries {
            self.write_index_point(&point)
                .map_err(|error| format!("repairing index: {error}"))?;
        }
        self.state = state;
        Ok(())
    }

    /// Scans the whole `.log` from the start, verifying framing, CRC and
    /// offset order of every batch; truncates the file at the first invalid
    /// batch and rebuilds both indexes for what is kept. Returns the number
    /// of bytes truncated.
    pub fn recover(&mut self) -> Result<u64, LogError> {
        let file_size = self.file.metadata()?.len();
        let mut state = SegmentState::empty(self.base_offset);
        let mut offset_entries = Vec::new();
        let mut time_entries: Vec<TimestampOffset> = Vec::new();
        let mut scanner = BatchScanner::new(&self.file, 0, file_size, VERIFY_SCAN_WINDOW);
        let valid_end = loop {
            let location = match scanner.next(true)? {
                ScanStep::End => break file_size,
                ScanStep::Invalid { position, reason } => {
                    warn!(log = %self.log_path.display(), position, %reason, "invalid batch found during recovery");
                    break position;
                }
                ScanStep::Batch(location) => location,
            };
            let header = location.header;
            if let Err(reason) = check_batch_offsets(self.base_offset, state.next_offset, &header) {
                warn!(log = %self.log_path.display(), position = location.position, %reason, "out of order batch found during recovery");
                break location.position;
            }
            if location.position + header.size_bytes() as u64 > u64::from(u32::MAX) {
                warn!(log = %self.log_path.display(), position = location.position, "segment exceeds the addressable size");
                break location.position;
            }
            if let Some(point) = state.observe_scanned(
                &mut scanner,
                location.position,
                &header,
                self.index_interval_bytes,
            )? {
                offset_entries.push(point.offset_entry);
                let grows = time_entries
                    .last()
                    .map_or(point.time_entry.timestamp > NO_TIMESTAMP, |last| {
                        point.time_entry.timestamp > last.timestamp
                    });
                if grows {
                    time_entries.push(point.time_entry);
                }
            }
        };
        let truncated = file_size - valid_end;
        if truncated > 0 {
            self.file.set_len(valid_end)?;
            self.allocated_end = valid_end;
        }
        self.offset_index.rewrite(offset_entries)?;
        self.time_index.rewrite(time_entries)?;
        self.state = state;
        self.load_problem = None;
        self.flush()?;
        debug!(
            base_offset = self.base_offset,
            next_offset = state.next_offset,
            truncated,
            "recovered log segment"
        );
        Ok(truncated)
    }

    /// Appends `records` (one or more complete batches, described by `headers`
    /// in order) at the end of the file, adding index entries every
    /// `index.interval.bytes`. Each batch's offset prefix (`baseOffset`,
    /// `batchLength`, `partitionLeaderEpoch`) is written from its header, the
    /// rest from `records`: a leader passes the batches as received with the
    /// assigned offsets and epoch in `headers`. On failure the file and indexes
    /// are rolled back to their previous length.
    pub fn append(&mut self, records: &[u8], headers: &[BatchHeader]) -> Result<(), LogError> {
        debug_assert_eq!(
            headers.iter().map(BatchHeader::size_bytes).sum::<usize>(),
            records.len()
        );
        debug_assert!(self.state.size + records.len() as u64 <= u64::from(u32::MAX));
        let previous_state = self.state;
        let start_position = self.state.size;
        if let Err(error) = write_batches_at(&self.file, records, headers, start_position) {
            self.rollback(previous_state);
            return Err(error.into());
        }
        let mut position = start_position;
        for header in headers {
            debug_assert!(
                header.base_offset >= self.state.next_offset,
                "offsets must grow within a segment"
            );
            let batch_start = (position - start_position) as usize;
            let batch = &records[batch_start..batch_start + header.size_bytes()];
            let batch_max_offset = if header.max_timestamp > self.state.max_timestamp {
                offset_of_batch_max(batch, header)
            } else {
                header.base_offset
            };
            if let Some(point) = self.state.observe(
                position,
                header,
                batch_max_offset,
                self.index_interval_bytes,
            ) && let Err(error) = self.write_index_point(&point)
            {
                self.rollback(previous_state);
                return Err(error.into());
            }
            position += header.size_bytes() as u64;
        }
        Ok(())
    }

    fn write_index_point(&mut self, point: &IndexPoint) -> io::Result<()> {
        self.offset_index
            .append(point.offset_entry.offset, point.offset_entry.position)?;
        let _appended = self
            .time_index
            .maybe_append(point.time_entry.timestamp, point.time_entry.offset)?;
        Ok(())
    }

    /// Best-effort undo of a failed append.
    fn rollback(&mut self, previous_state: SegmentState) {
        self.state = previous_state;
        self.allocated_end = previous_state.size;
        let results = [
            self.file.set_len(previous_state.size),
            self.offset_index.truncate_to_position(previous_state.size),
            self.time_index
                .truncate_to_offset(previous_state.next_offset),
        ];
        for result in results {
            if let Err(error) = result {
                warn!(log = %self.log_path.display(), %error, "rolling back a failed append failed");
            }
        }
    }

    /// Position and header of the first batch whose last offset is
    /// `>= offset`, found through the offset index and a header scan; None
    /// if the segment holds no such batch.
    pub fn find_offset_position(&self, offset: i64) -> Result<Option<BatchLocation>, LogError> {
        if offset >= self.state.next_offset {
            return Ok(None);
        }
        let start = self
            .offset_index
            .lookup(offset)
            .map_or(0, |entry| u64::from(entry.position));
        let mut scanner = BatchScanner::new(&self.file, start, self.state.size, HEADER_SCAN_WINDOW);
        loop {
            match scanner.next(false)? {
                ScanStep::End => return Ok(None),
                ScanStep::Invalid { position, reason } => {
                    return Err(self.corrupt_at(position, &reason));
                }
                ScanStep::Batch(location) => {
                    if location.header.last_offset() >= offset {
                        return Ok(Some(location));
                    }
                }
            }
        }
    }

    /// Reads whole batches starting with the batch containing `start_offset` (or the
    /// first batch after it), within `limits`. Returns None when the segment has no batch
    /// at or after `start_offset`, otherwise the bytes (possibly empty) from one
    /// positional read.
    ///
    /// # Errors
    /// I/O errors, and `Corrupt` when the first batch in range cannot be framed.
    pub fn read(&self, start_offset: i64, limits: ReadLimits) -> Result<Option<Vec<u8>>, LogError> {
        let ReadLimits {
            max_bytes,
            max_offset,
            min_one_batch,
        } = limits;
        let Some(first) = self.find_offset_position(start_offset)? else {
            return Ok(None);
        };
        let first_size = first.header.size_bytes();
        if first.header.last_offset() >= max_offset || (first_size > max_bytes && !min_one_batch) {
            return Ok(Some(Vec::new()));
        }
        let mut end_position = self.state.size;
        if max_offset < self.state.next_offset
            && let Some(limit) = self.find_offset_position(max_offset)?
        {
            end_position = limit.position;
        }
        let budget = if min_one_batch {
            max_bytes.max(first_size)
        } else {
            max_bytes
        };
        let read_len = (budget as u64).min(end_position.saturating_sub(first.position)) as usize;
        let mut buf = read_exact_at_uninit(&self.file, first.position, read_len)?;
        let whole = whole_batches_prefix(&buf, max_offset);
        if whole == 0 {
            return Err(self.corrupt_at(first.position, "first batch unreadable"));
        }
        buf.truncate(whole);
        Ok(Some(buf))
    }

    /// Offset and timestamp of the first record with offset `>= min_offset`
    /// and timestamp `>= target_ts`. Records inside compressed `CreateTime`
    /// batches are not inspected: such a batch answers with its first offset
    /// `>= min_offset` and its max timestamp.
    pub fn find_by_timestamp(
        &self,
        target_ts: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self.state.max_timestamp < target_ts || min_offset >= self.state.next_offset {
            return Ok(None);
        }
        let indexed_offset = self
            .time_index
            .lookup(target_ts)
            .map_or(self.base_offset, |entry| entry.offset);
        let start_offset = indexed_offset.max(min_offset);
        let start = self
            .offset_index
            .lookup(start_offset)
            .map_or(0, |entry| u64::from(entry.position));
        let mut scanner = BatchScanner::new(&self.file, start, self.state.size, HEADER_SCAN_WINDOW);
        loop {
            let location = match scanner.next(false)? {
                ScanStep::End => return Ok(None),
                ScanStep::Invalid { position, reason } => {
                    return Err(self.corrupt_at(position, &reason));
                }
                ScanStep::Batch(location) => location,
            };
            let header = location.header;
            if header.last_offset() < min_offset || header.max_timestamp < target_ts {
                continue;
            }
            let batch = scanner.bytes(location.position, header.size_bytes())?;
            match find_record_by_timestamp(batch, &header, target_ts, min_offset) {
                RecordLookup::Found { offset, timestamp } => return Ok(Some((offset, timestamp))),
                RecordLookup::Compressed => {
                    return Ok(Some((
                        header.base_offset.max(min_offset),
                        header.max_timestamp,
                    )));
                }
                RecordLookup::NotFound => continue,
            }
        }
    }

    /// Calls `visit` with every batch whose base offset is `>= from_offset`,
    /// in order (header scan, no CRC check).
    pub fn for_each_batch_from(
        &self,
        from_offset: i64,
        mut visit: impl FnMut(&BatchLocation) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let start = self
            .offset_index
            .lookup(from_offset)
            .map_or(0, |entry| u64::from(entry.position));
        let mut scanner = BatchScanner::new(&self.file, start, self.state.size, HEADER_SCAN_WINDOW);
        loop {
            match scanner.next(false)? {
                ScanStep::End => return Ok(()),
                ScanStep::Invalid { position, reason } => {
                    return Err(self.corrupt_at(position, &reason));
                }
                ScanStep::Batch(location) => {
                    if location.header.base_offset >= from_offset {
                        visit(&location)?;
                    }
                }
            }
        }
    }

    /// Removes every batch whose last offset is `>= offset` (a batch
    /// straddling `offset` goes entirely, as in Kafka) and returns the number
    /// of bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64, LogError> {
        let Some(first_removed) = self.find_offset_position(offset)? else {
            return Ok(0);
        };
        let new_size = first_removed.position;
        let removed = self.state.size - new_size;
        // Also frees blocks preallocated past the old end.
        self.file.set_len(new_size)?;
        self.allocated_end = new_size;
        self.offset_index.truncate_to_position(new_size)?;
        self.time_index
            .truncate_to_offset(first_removed.header.base_offset)?;
        if let Err(reason) = self.load_state(new_size) {
            return Err(LogError::Corrupt(format!(
                "{}: after truncation: {reason}",
                self.log_path.display()
            )));
        }
        debug_assert!(self.state.next_offset <= offset);
        Ok(removed)
    }

    /// Marks the segment inactive: records its final max timestamp in the
    /// time index (as Kafka does on roll and close) and fsyncs everything.
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.seal_unflushed()?;
        self.flush()
    }

    /// [`Self::seal`] without the fsync; the caller flushes the handles from
    /// [`Self::sync_handles`] later.
    pub fn seal_unflushed(&mut self) -> Result<(), LogError> {
        self.release_preallocated(0)?;
        self.append_final_time_index_entry()
    }

    /// [`Self::seal_unflushed`] for a roll, which holds the log lock: blocks allocated
    /// past the records are freed only when there are at least [`ROLL_RELEASE_MIN_BYTES`]
    /// of them. A segment rolled for size has less than a batch of them, and freeing
    /// blocks can wait for the device (a synchronous discard on file systems mounted
    /// with `discard`); they go when the segment is deleted.
    pub fn seal_for_roll(&mut self) -> Result<(), LogError> {
        self.release_preallocated(ROLL_RELEASE_MIN_BYTES)?;
        self.append_final_time_index_entry()
    }

    fn append_final_time_index_entry(&mut self) -> Result<(), LogError> {
        if self.state.max_timestamp > NO_TIMESTAMP {
            let _appended = self
                .time_index
                .maybe_append(self.state.max_timestamp, self.state.offset_of_max_timestamp)?;
        }
        Ok(())
    }

    /// Makes sure disk blocks are allocated for at least `ahead / 2` bytes past the
    /// records, allocating them (`fallocate` with `FALLOC_FL_KEEP_SIZE`, so the file's
    /// length does not change) up to `ahead` bytes past the records but never beyond
    /// `limit` bytes in all. Returns whether blocks were allocated.
    ///
    /// Appending into allocated (unwritten) blocks needs no block allocation when the
    /// kernel writes the pages back; on ext4 that allocation holds the inode's block-map
    /// lock, and an append that needs the same lock waits for it (tens of ms while the
    /// disk is busy).
    ///
    /// # Errors
    /// The `fallocate` failed (`EOPNOTSUPP` on file systems without it); nothing changed.
    pub fn preallocate_ahead(&mut self, ahead: u64, limit: u64) -> Result<bool, LogError> {
        let from = self.allocated_end.max(self.state.size);
        let target = (self.state.size + ahead)
            .min(limit)
            .min(u64::from(u32::MAX));
        if from - self.state.size >= ahead / 2 || target <= from {
            return Ok(false);
        }
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            from,
            target - from,
        )
        .map_err(io::Error::from)?;
        self.allocated_end = target;
        self.allocated_ahead = true;
        Ok(true)
    }

    /// Frees the blocks [`LogSegment::preallocate_ahead`] allocated past the records
    /// when there are at least `min_bytes` of them: a `ftruncate` to the current length,
    /// which ext4 and XFS take as the cue to drop blocks past the end.
    fn release_preallocated(&mut self, min_bytes: u64) -> Result<(), LogError> {
        if self.allocated_end > self.state.size && self.allocated_end - self.state.size >= min_bytes
        {
            self.file.set_len(self.state.size)?;
            self.allocated_end = self.state.size;
        }
        Ok(())
    }

    /// A second handle on the `.log` file.
    ///
    /// # Errors
    /// The `dup` failed (out of descriptors).
    pub fn try_clone_log_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Whether blocks were ever allocated ahead of this segment's records: by
    /// [`LogSegment::preallocate_ahead`], from a standby file, or (reopened) found past
    /// its end. False for a fresh segment written only by appends.
    pub fn allocation_started(&self) -> bool {
        self.allocated_ahead
    }

    /// Second handles on the `.log`, `.index` and `.timeindex` files, so they can be
    /// fsynced on another thread without holding the log.
    pub fn sync_handles(&self) -> Result<Vec<File>, LogError> {
        Ok(vec![
            self.file.try_clone()?,
            self.offset_index.try_clone_file()?,
            self.time_index.try_clone_file()?,
        ])
    }

    /// fsyncs the `.log` file and both indexes.
    pub fn flush(&self) -> Result<(), LogError> {
        self.file.sync_data()?;
        self.offset_index.flush()?;
        self.time_index.flush()?;
        Ok(())
    }

    /// Removes the segment's three files.
    pub fn delete(self) -> Result<(), LogError> {
        let LogSegment {
            log_path,
            file,
            offset_index,
            time_index,
            ..
        } = self;
        drop(file);
        remove_if_exists(&log_path)?;
        offset_index.delete()?;
        time_index.delete()?;
        debug!(path = %log_path.display(), "deleted log segment");
        Ok(())
    }

    /// First offset the segment may hold.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch (the base offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.state.next_offset
    }

    /// Size of the `.log` file in bytes.
    pub fn size(&self) -> u64 {
        self.state.size
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.state.size == 0
    }

    /// Largest batch max timestamp in the segment (ms), -1 if none.
    pub fn max_timestamp(&self) -> i64 {
        self.state.max_timestamp
    }

    /// Offset of the first record with [`LogSegment::max_timestamp`].
    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.state.offset_of_max_timestamp
    }

    /// Max timestamp of the first batch: Kafka's base for `segment.ms`.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.state.first_batch_timestamp
    }

    /// When this process created or opened the segment (ms).
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The timestamp `retention.ms` compares with: the max timestamp, or the
    /// file's modification time when no batch has a timestamp (ms).
    pub fn largest_timestamp(&self) -> Result<i64, LogError> {
        if self.state.max_timestamp > NO_TIMESTAMP {
            return Ok(self.state.max_timestamp);
        }
        let modified = self.file.metadata()?.modified()?;
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Path of the `.index` file.
    pub fn offset_index_path(&self) -> &Path {
        self.offset_index.path()
    }

    /// Path of the `.timeindex` file.
    pub fn time_index_path(&self) -> &Path {
        self.time_index.path()
    }

    /// The offset index entries (for inspection and tests).
    pub fn offset_index_entries(&self) -> &[OffsetPosition] {
        self.offset_index.entries()
    }

    /// The time index entries (for inspection and tests).
    pub fn time_index_entries(&self) -> &[TimestampOffset] {
        self.time_index.entries()
    }

    fn corrupt_at(&self, position: u64, reason: &str) -> LogError {
        LogError::Corrupt(format!(
            "{} at position {position}: {reason}",
            self.log_path.display()
        ))
    }
}

/// Checks that a batch read from a segment based at `base_offset` starts at
/// or after `minimum_base_offset` and fits the u32 relative offsets.
fn check_batch_offsets(
    base_offset: i64,
    minimum_base_offset: i64,
    header: &BatchHeader,
) -> Result<(), String> {
    if header.base_offset < minimum_base_offset {
        return Err(format!(
            "batch base offset {} below expected {minimum_base_offset}",
            header.base_offset
        ));
    }
    if header.last_offset() - base_offset > i64::from(u32::MAX) {
        return Err(format!(
            "batch last offset {} too far from segment base {base_offset}",
            header.last_offset()
        ));
    }
    Ok(())
}

/// Length of the longest prefix of `buf` made of whole batches whose last
/// offset is `< max_offset`.
fn whole_batches_prefix(buf: &[u8], max_offset: i64) -> usize {
    let mut position = 0usize;
    while position < buf.len() {
        let remaining = &buf[position..];
        let Ok(header) = parse_header(remaining) else {
            break;
        };
        let Ok(size) = batch_size_from_prefix(remaining) else {
            break;
        };
        if size > remaining.len() || header.last_offset() >= max_offset {
            break;
        }
        position += size;
    }
    position
}
