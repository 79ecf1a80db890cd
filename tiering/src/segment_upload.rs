//! Uploading the objects of one sealed segment, and deleting them again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use silt_broker::log::{EpochEntry, SegmentFiles};
use tokio::io::AsyncReadExt;
use tracing::debug;
use uuid::Uuid;

use crate::TieringError;
use crate::object_layout::{ObjectKind, segment_file_name};

/// Checkpoint format version, as Kafka's `leader-epoch-checkpoint`.
const CHECKPOINT_VERSION: i64 = 0;

/// What the log said about one sealed segment, taken under its lock.
#[derive(Debug, Clone)]
pub(crate) struct SealedSegment {
    /// The segment's files.
    pub(crate) files: SegmentFiles,
    /// Largest record timestamp (ms), -1 when none.
    pub(crate) max_timestamp_ms: i64,
    /// The leader-epoch cache truncated at the segment's end, as checkpoint text.
    pub(crate) leader_epoch_checkpoint: Vec<u8>,
    /// Epoch -> first offset of that epoch within the segment.
    pub(crate) segment_leader_epochs: BTreeMap<i32, i64>,
}

impl SealedSegment {
    /// Describes `files` with the partition's leader-epoch cache `epochs`.
    pub(crate) fn new(files: SegmentFiles, max_timestamp_ms: i64, epochs: &[EpochEntry]) -> Self {
        let leader_epoch_checkpoint = checkpoint_up_to(epochs, files.next_offset);
        let segment_leader_epochs = epochs_within(epochs, files.base_offset, files.next_offset);
        SealedSegment {
            files,
            max_timestamp_ms,
            leader_epoch_checkpoint,
            segment_leader_epochs,
        }
    }
}

/// Kafka's checkpoint text (`0\n<count>\n<epoch> <startOffset>\n...`) of the epochs that
/// start before `end_offset` (exclusive).
fn checkpoint_up_to(epochs: &[EpochEntry], end_offset: i64) -> Vec<u8> {
    let kept: Vec<&EpochEntry> = epochs
        .iter()
        .filter(|entry| entry.start_offset < end_offset)
        .collect();
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", kept.len());
    for entry in kept {
        text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
    }
    text.into_bytes()
}

/// The epochs with records in `[base_offset, next_offset)`, each with its first offset
/// there (the epoch covering `base_offset` starts at `base_offset`).
fn epochs_within(epochs: &[EpochEntry], base_offset: i64, next_offset: i64) -> BTreeMap<i32, i64> {
    let mut within = BTreeMap::new();
    for (index, entry) in epochs.iter().enumerate() {
        let epoch_end = epochs
            .get(index + 1)
            .map_or(i64::MAX, |next| next.start_offset);
        let empty = epoch_end <= entry.start_offset;
        if empty || epoch_end <= base_offset || entry.start_offset >= next_offset {
            continue;
        }
        let _previous = within.insert(entry.epoch, entry.start_offset.max(base_offset));
    }
    within
}

/// The object paths of one remote segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentObjects {
    /// `<prefix>/topics/<topic>-<topicId>/<partition>`.
    pub(crate) partition_prefix: Path,
    /// Segment base offset.
    pub(crate) base_offset: i64,
    /// Segment id of this upload.
    pub(crate) segment_id: Uuid,
}

impl SegmentObjects {
    /// The path of one object.
    pub(crate) fn path(&self, kind: ObjectKind) -> Path {
        self.partition_prefix
            .clone()
            .join(segment_file_name(self.base_offset, self.segment_id, kind).as_str())
    }
}

/// Multipart settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadSettings {
    pub(crate) multipart_threshold_bytes: usize,
    pub(crate) multipart_part_bytes: usize,
    pub(crate) multipart_concurrency: usize,
}

/// Uploads `.log`, `.index`, `.timeindex`, the producer snapshot (when the log has one)
/// and the leader-epoch checkpoint. Returns the size of the `.log` object in bytes.
pub(crate) async fn upload_segment(
    store: &dyn ObjectStore,
    objects: &SegmentObjects,
    segment: &SealedSegment,
    settings: UploadSettings,
) -> Result<u64, TieringError> {
    let log_bytes = upload_file(
        store,
        &objects.path(ObjectKind::Log),
        &segment.files.log,
        settings,
    )
    .await?;
    let _index_bytes = upload_file(
        store,
        &objects.path(ObjectKind::OffsetIndex),
        &segment.files.offset_index,
        settings,
    )
    .await?;
    let _time_index_bytes = upload_file(
        store,
        &objects.path(ObjectKind::TimeIndex),
        &segment.files.time_index,
        settings,
    )
    .await?;
    if let Some(snapshot) = &segment.files.producer_snapshot {
        let _snapshot_bytes = upload_file(
            store,
            &objects.path(ObjectKind::ProducerSnapshot),
            snapshot,
            settings,
        )
        .await?;
    }
    let checkpoint = PutPayload::from(segment.leader_epoch_checkpoint.clone());
    let _put = store
        .put(&objects.path(ObjectKind::LeaderEpochCheckpoint), checkpoint)
        .await?;
    Ok(log_bytes)
}

/// A compacted copy of remote segments in local files, to be uploaded as one new
/// remote segment replacing them.
#[derive(Debug, Clone)]
pub struct CleanedSegment {
    /// First offset the copy covers (its first batch may start later: compaction gap).
    pub base_offset: i64,
    /// Last offset it covers, inclusive: the last replaced segment's end offset.
    pub end_offset: i64,
    /// Largest record timestamp (ms), -1 when none.
    pub max_timestamp_ms: i64,
    /// The `.log` file.
    pub log: PathBuf,
    /// The `.index` file.
    pub offset_index: PathBuf,
    /// The `.timeindex` file.
    pub time_index: PathBuf,
}

/// Uploads a cleaned segment's `.log`, `.index` and `.timeindex`, and copies the
/// producer snapshot (when there is one) and leader-epoch checkpoint of the last segment
/// it replaces (`carried_from`): both describe the state at the same end offset.
/// Returns the size of the `.log` object in bytes.
pub(crate) async fn upload_cleaned_segment(
    store: &dyn ObjectStore,
    objects: &SegmentObjects,
    cleaned: &CleanedSegment,
    carried_from: &SegmentObjects,
    settings: UploadSettings,
) -> Result<u64, TieringError> {
    let log_bytes = upload_file(
        store,
        &objects.path(ObjectKind::Log),
        &cleaned.log,
        settings,
    )
    .await?;
    for (kind, file) in [
        (ObjectKind::OffsetIndex, &cleaned.offset_index),
        (ObjectKind::TimeIndex, &cleaned.time_index),
    ] {
        let _bytes = upload_file(store, &objects.path(kind), file, settings).await?;
    }
    for kind in [
        ObjectKind::ProducerSnapshot,
        ObjectKind::LeaderEpochCheckpoint,
    ] {
        match store.get(&carried_from.path(kind)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                let _put = store
                    .put(&objects.path(kind), PutPayload::from(bytes))
                    .await?;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(log_bytes)
}

/// Bytes a download writes between two `fdatasync`s.
const DOWNLOAD_SYNC_BYTES: u64 = 8 * 1024 * 1024;

/// Writes the object at `location` to the local file `to` (created or truncated);
/// returns the bytes written.
pub(crate) async fn download_object(
    store: &dyn ObjectStore,
    location: &Path,
    to: &std::path::Path,
) -> Result<u64, TieringError> {
    use tokio::io::AsyncWriteExt;
    let mut stream = store.get(location).await?.into_stream();
    let mut file = tokio::fs::File::create(to).await?;
    let (mut written, mut unsynced) = (0u64, 0u64);
    while let Some(chunk) = stream.try_next().await? {
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
        unsynced += chunk.len() as u64;
        // Few dirty pages at a time: a large download must not push the kernel into
        // throttling every writer, the broker's appends included.
        if unsynced >= DOWNLOAD_SYNC_BYTES {
            file.sync_data().await?;
            unsynced = 0;
        }
    }
    file.flush().await?;
    Ok(written)
}

/// Uploads one local file: a single put below the multipart threshold, a multipart upload
/// at or above it. Returns the bytes uploaded.
async fn upload_file(
    store: &dyn ObjectStore,
    location: &Path,
    file_path: &PathBuf,
    settings: UploadSettings,
) -> Result<u64, TieringError> {
    let mut file = tokio::fs::File::open(file_path).await?;
    let length = file.metadata().await?.len();
    if length < settings.multipart_threshold_bytes as u64 {
        let mut data = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        let _read = file.read_to_end(&mut data).await?;
        let uploaded = data.len() as u64;
        let _put = store.put(location, PutPayload::from(data)).await?;
        debug!(location = %location, bytes = uploaded, "uploaded object");
        return Ok(uploaded);
    }
    let upload = store.put_multipart(location).await?;
    let part_bytes = settings.multipart_part_bytes.max(1);
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_bytes);
    match copy_into(
        &mut file,
        &mut writer,
        part_bytes,
        settings.multipart_concurrency,
    )
    .await
    {
        Ok(uploaded) => {
            let _put = writer.finish().await?;
            debug!(location = %location, bytes = uploaded, "uploaded object in parts");
            Ok(uploaded)
        }
        Err(error) => {
            if let Err(abort_error) = writer.abort().await {
                debug!(location = %location, error = %abort_error, "aborting a multipart upload failed");
            }
            Err(error)
        }
    }
}

async fn copy_into(
    file: &mut tokio::fs::File,
    writer: &mut WriteMultipart,
    part_bytes: usize,
    concurrency: usize,
) -> Result<u64, TieringError> {
    let mut buffer = vec![0u8; part_bytes];
    let mut uploaded = 0u64;
    loop {
        let mut filled = 0usize;
        while filled < buffer.len() {
            let read = file.read(&mut buffer[filled..]).await?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            return Ok(uploaded);
        }
        writer.wait_for_capacity(concurrency.max(1)).await?;
        writer.write(&buffer[..filled]);
        uploaded += filled as u64;
    }
}

/// Deletes every object of one segment; objects already gone are fine.
pub(crate) async fn delete_segment_objects(
    store: &dyn ObjectStore,
    objects: &SegmentObjects,
) -> Result<(), TieringError> {
    for kind in ObjectKind::ALL {
        delete_if_exists(store, &objects.path(kind)).await?;
    }
    Ok(())
}

/// Deletes the objects under `partition_prefix` that belong to `segment_id`, found by
/// listing (for segments whose topic name is no longer known).
pub(crate) async fn delete_segment_objects_by_listing(
    store: &dyn ObjectStore,
    partition_prefix: &Path,
    segment_id: Uuid,
) -> Result<usize, TieringError> {
    let listed: Vec<object_store::ObjectMeta> =
        store.list(Some(partition_prefix)).try_collect().await?;
    let mut deleted = 0usize;
    for object in listed {
        let matches = crate::object_layout::parse_segment_object(&object.location)
            .is_some_and(|(_, id, _)| id == segment_id);
        if matches {
            delete_if_exists(store, &object.location).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes one object; a missing object is not an error.
pub(crate) async fn delete_if_exists(
    store: &dyn ObjectStore,
    location: &Path,
) -> Result<(), TieringError> {
    match store.delete(location).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn segment_epochs_start_inside_the_segment() {
        let epochs = [entry(0, 0), entry(2, 50), entry(3, 120), entry(5, 300)];
        let within = epochs_within(&epochs, 100, 200);
        assert_eq!(within, BTreeMap::from([(2, 100), (3, 120)]));
        let first = epochs_within(&epochs, 0, 50);
        assert_eq!(first, BTreeMap::from([(0, 0)]));
        let last = epochs_within(&epochs, 300, 400);
        assert_eq!(last, BTreeMap::from([(5, 300)]));
    }

    #[test]
    fn empty_epochs_are_left_out() {
        let epochs = [entry(1, 10), entry(2, 10), entry(3, 20)];
        assert_eq!(
            epochs_within(&epochs, 10, 30),
            BTreeMap::from([(2, 10), (3, 20)])
        );
    }

    #[test]
    fn checkpoint_is_truncated_at_the_segment_end() {
        let epochs = [entry(0, 0), entry(2, 50), entry(3, 120)];
        assert_eq!(
            String::from_utf8(checkpoint_up_to(&epochs, 100)).expect("utf8"),
            "0\n2\n0 0\n2 50\n"
        );
    }
}
