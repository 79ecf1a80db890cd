//! Reads a sealed segment's batches in order through its own file handle, a buffer at a
//! time (Kafka's cleaner read buffer), growing the buffer for a batch larger than it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use silt_broker::record_batch::{BatchHeader, LOG_OVERHEAD, batch_size_from_prefix, parse_header};

use crate::error::CleanerError;

/// Default read buffer (bytes).
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Batches of one segment file, in file order.
pub(crate) struct SegmentBatches {
    file: File,
    buffer: Vec<u8>,
    /// Start of the unread bytes in `buffer`.
    position: usize,
    end_of_file: bool,
    /// Bytes read from the file so far.
    pub(crate) bytes_read: u64,
}

impl SegmentBatches {
    /// Opens `path`.
    ///
    /// # Errors
    /// [`CleanerError::SegmentGone`] when the file no longer exists (retention deleted
    /// it); other I/O errors.
    pub(crate) fn open(path: &Path) -> Result<SegmentBatches, CleanerError> {
        let file = File::open(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                CleanerError::SegmentGone(path.display().to_string())
            } else {
                CleanerError::Io(error)
            }
        })?;
        Ok(SegmentBatches {
            file,
            buffer: Vec::new(),
            position: 0,
            end_of_file: false,
            bytes_read: 0,
        })
    }

    /// Makes at least `wanted` unread bytes available unless the file ends first.
    fn fill(&mut self, wanted: usize) -> Result<(), CleanerError> {
        if self.buffer.len() - self.position >= wanted || self.end_of_file {
            return Ok(());
        }
        let unread = self.buffer.len() - self.position;
        self.buffer.copy_within(self.position.., 0);
        self.buffer.truncate(unread);
        self.position = 0;
        let target = wanted.max(READ_BUFFER_BYTES);
        while self.buffer.len() < target {
            let start = self.buffer.len();
            self.buffer.resize(target, 0);
            let read = self.file.read(&mut self.buffer[start..])?;
            self.buffer.truncate(start + read);
            self.bytes_read += read as u64;
            if read == 0 {
                self.end_of_file = true;
                break;
            }
        }
        Ok(())
    }

    /// The next whole batch with its header; None at the end of the records. Bytes
    /// after the last whole batch (none in a sealed segment) end the walk.
    pub(crate) fn next_batch(&mut self) -> Result<Option<(BatchHeader, &[u8])>, CleanerError> {
        self.fill(LOG_OVERHEAD)?;
        let unread = &self.buffer[self.position..];
        if unread.len() < LOG_OVERHEAD {
            return Ok(None);
        }
        let size = batch_size_from_prefix(unread)?;
        self.fill(size)?;
        let unread = &self.buffer[self.position..];
        if unread.len() < size {
            return Ok(None);
        }
        let batch = &unread[..size];
        let header = parse_header(batch)?;
        self.position += size;
        Ok(Some((header, batch)))
    }
}
