//! Snapshots of the cluster metadata, kept on disk as one file that is replaced atomically.
//!
//! File layout: `magic "SILTSNP1" | crc32c(rest): u32 LE | meta_len: u32 LE | meta json |
//! data`, where `data` is the snapshot payload exactly as sent to other voters (the
//! serde_json [`ClusterMetadata`]).

use std::io;
use std::path::Path;

use openraft::BasicNode;
use openraft::SnapshotMeta;

use serde::{Deserialize, Serialize};

use crate::applied_requests::AppliedRequests;
use crate::cluster_metadata::ClusterMetadata;
use crate::command::NodeId;
use crate::durable_file::blocking;
use crate::durable_file::read_if_exists;
use crate::durable_file::write_atomically;

const SNAPSHOT_FILE: &str = "snapshot.bin";
const MAGIC: &[u8; 8] = b"SILTSNP1";
const HEADER_LEN: usize = MAGIC.len() + 4 + 4;

/// Snapshot metadata as openraft describes it.
pub(crate) type Meta = SnapshotMeta<NodeId, BasicNode>;

/// A snapshot: its raft metadata and its serialized [`ClusterMetadata`].
#[derive(Clone, Debug)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: Meta,
    pub(crate) data: Vec<u8>,
}

/// The snapshot payload: the metadata and the answers of recent
/// [`Command::Once`](crate::command::Command::Once) writes. Snapshots written before
/// writes were deduplicated hold the bare metadata, and still load.
#[derive(Serialize, Deserialize)]
struct Payload<M> {
    metadata: M,
    applied_requests: AppliedRequests,
}

/// Serializes the replicated state into a snapshot payload.
pub(crate) fn encode_state(
    metadata: &ClusterMetadata,
    applied_requests: &AppliedRequests,
) -> io::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&Payload {
        metadata,
        applied_requests: applied_requests.clone(),
    })?)
}

/// Parses a snapshot payload, of either layout.
pub(crate) fn decode_state(data: &[u8]) -> io::Result<(ClusterMetadata, AppliedRequests)> {
    let payload_error = match serde_json::from_slice::<Payload<ClusterMetadata>>(data) {
        Ok(payload) => return Ok((payload.metadata, payload.applied_requests)),
        Err(error) => error,
    };
    match serde_json::from_slice::<ClusterMetadata>(data) {
        Ok(metadata) => Ok((metadata, AppliedRequests::default())),
        Err(bare_error) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot data does not decode: {payload_error} (as bare metadata: {bare_error})"
            ),
        )),
    }
}

/// Writes `snapshot` as the current snapshot file of `dir`, durably.
pub(crate) async fn save(dir: &Path, snapshot: &StoredSnapshot) -> io::Result<()> {
    let bytes = encode_file(snapshot)?;
    let path = dir.join(SNAPSHOT_FILE);
    blocking(move || write_atomically(&path, &bytes, true)).await
}

/// Loads the current snapshot of `dir`, if one was saved. A damaged file is an error: the
/// log before it may be purged, so starting without it would lose metadata.
pub(crate) async fn load(dir: &Path) -> io::Result<Option<StoredSnapshot>> {
    let path = dir.join(SNAPSHOT_FILE);
    let Some(bytes) = blocking(move || read_if_exists(&path)).await? else {
        return Ok(None);
    };
    decode_file(&bytes).map(Some)
}

fn encode_file(snapshot: &StoredSnapshot) -> io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(&snapshot.meta)?;
    let meta_len = u32::try_from(meta.len())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let mut checked = Vec::with_capacity(4 + meta.len() + snapshot.data.len());
    checked.extend_from_slice(&meta_len.to_le_bytes());
    checked.extend_from_slice(&meta);
    checked.extend_from_slice(&snapshot.data);

    let mut bytes = Vec::with_capacity(HEADER_LEN + checked.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32c::crc32c(&checked).to_le_bytes());
    bytes.extend_from_slice(&checked);
    Ok(bytes)
}

fn decode_file(bytes: &[u8]) -> io::Result<StoredSnapshot> {
    let corrupt =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file {what}"));
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("has no valid header"));
    }
    let crc_bytes: [u8; 4] = bytes[MAGIC.len()..MAGIC.len() + 4]
        .try_into()
        .map_err(|_| corrupt("has no valid header"))?;
    let checked = &bytes[MAGIC.len() + 4..];
    if crc32c::crc32c(checked) != u32::from_le_bytes(crc_bytes) {
        return Err(corrupt("fails its checksum"));
    }
    let meta_len_bytes: [u8; 4] = checked
        .get(..4)
        .and_then(|slice| slice.try_into().ok())
        .ok_or_else(|| corrupt("is truncated"))?;
    let meta_len =
        usize::try_from(u32::from_le_bytes(meta_len_bytes)).map_err(|_| corrupt("is truncated"))?;
    let meta_bytes = checked
        .get(4..4 + meta_len)
        .ok_or_else(|| corrupt("is truncated"))?;
    let meta: Meta = serde_json::from_slice(meta_bytes)
        .map_err(|error| corrupt(&format!("has undecodable metadata: {error}")))?;
    let data = checked.get(4 + meta_len..).unwrap_or_default().to_vec();
    Ok(StoredSnapshot { meta, data })
}

#[cfg(test)]
mod tests {
    use openraft::Membership;
    use openraft::StoredMembership;
    use openraft::testing::log_id;

    use super::*;

    fn sample() -> StoredSnapshot {
        let metadata = ClusterMetadata {
            cluster_id: "abc".to_owned(),
            next_producer_id: 42,
            ..ClusterMetadata::default()
        };
        let membership = Membership::new(vec![[1u64].into_iter().collect()], None);
        StoredSnapshot {
            meta: Meta {
                last_log_id: Some(log_id(2, 1, 17)),
                last_membership: StoredMembership::new(Some(log_id(1, 1, 0)), membership),
                snapshot_id: "2-17-x".to_owned(),
            },
            data: encode_state(&metadata, &AppliedRequests::default()).unwrap(),
        }
    }

    #[tokio::test]
    async fn snapshot_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).await.unwrap().is_none());
        let snapshot = sample();
        save(dir.path(), &snapshot).await.unwrap();
        let loaded = load(dir.path()).await.unwrap().unwrap();
        assert_eq!(loaded.meta, snapshot.meta);
        assert_eq!(decode_state(&loaded.data).unwrap().0.next_producer_id, 42);
    }

    #[test]
    fn a_snapshot_of_bare_metadata_still_loads() {
        let metadata = ClusterMetadata {
            cluster_id: "old".to_owned(),
            ..ClusterMetadata::default()
        };
        let bare = serde_json::to_vec(&metadata).unwrap();
        let (decoded, requests) = decode_state(&bare).unwrap();
        assert_eq!(decoded, metadata);
        assert_eq!(requests, AppliedRequests::default());
        assert!(decode_state(b"{\"metadata\": 3}").is_err());
    }

    #[tokio::test]
    async fn damaged_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample()).await.unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let error = load(dir.path()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        std::fs::write(&path, b"short").unwrap();
        assert!(load(dir.path()).await.is_err());
    }
}
