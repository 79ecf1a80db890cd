//! The copy path: sealed segments reach the object store once, byte for byte, committed
//! as COPY_FINISHED; local retention then drops only what was copied.

use std::sync::Arc;
use std::time::Duration;

use crate::uploads_support::{Cluster, PARTITION, store_configs, test_tiering_config};
use silt_controller::RemoteSegmentState;
use silt_tiering::object_layout::{ObjectKind, parse_segment_object, segment_object};
use silt_tiering::{RemoteLogManager, open_object_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sealed_segment_is_copied_once_with_identical_bytes() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let cluster = Cluster::start(&store_config, "orders", &[]).await;
        cluster.append_now(20).await;
        let sealed = cluster.sealed_base_offsets().await;
        assert!(sealed.len() >= 4, "small segments roll: {sealed:?}");

        let manager = RemoteLogManager::new(
            test_tiering_config(),
            Arc::clone(&cluster.store),
            cluster.prefix.clone(),
            cluster.controller.clone(),
            Arc::clone(&cluster.replica_manager),
        );
        let summary = manager.run_round().await;
        assert_eq!(summary.segments_copied, sealed.len(), "{summary:?}");
        assert_eq!(summary.failed_partitions, 0);

        let metadata = cluster.controller.metadata();
        let copied: Vec<_> = metadata
            .copied_remote_segments(cluster.topic_id, PARTITION)
            .cloned()
            .collect();
        assert_eq!(
            copied
                .iter()
                .map(|segment| segment.base_offset)
                .collect::<Vec<_>>(),
            sealed
        );
        assert_eq!(
            metadata
                .remote_segments(cluster.topic_id, PARTITION)
                .count(),
            copied.len(),
            "no entry left half-way"
        );
        for segment in &copied {
            assert_eq!(segment.state, RemoteSegmentState::CopyFinished);
            assert_eq!(segment.broker_id, crate::uploads_support::BROKER_ID);
            let base_offset = segment.base_offset;
            let files = cluster
                .with_log(move |log| log.sealed_segment_files(base_offset))
                .await
                .expect("still local");
            assert_eq!(segment.end_offset, files.next_offset - 1);
            for (kind, local) in [
                (ObjectKind::Log, &files.log),
                (ObjectKind::OffsetIndex, &files.offset_index),
                (ObjectKind::TimeIndex, &files.time_index),
            ] {
                let path = segment_object(
                    &cluster.prefix,
                    &cluster.topic,
                    cluster.topic_id,
                    PARTITION,
                    base_offset,
                    segment.segment_id,
                    kind,
                );
                let remote_bytes = cluster.object_bytes(&path).await;
                let local_bytes = tokio::fs::read(local).await.expect("local file");
                assert_eq!(
                    remote_bytes.as_ref(),
                    local_bytes.as_slice(),
                    "{kind:?} of segment {base_offset}"
                );
            }
            let log_size = tokio::fs::metadata(&files.log)
                .await
                .expect("log file")
                .len();
            assert_eq!(segment.size_bytes, log_size);
            let checkpoint_path = segment_object(
                &cluster.prefix,
                &cluster.topic,
                cluster.topic_id,
                PARTITION,
                base_offset,
                segment.segment_id,
                ObjectKind::LeaderEpochCheckpoint,
            );
            let checkpoint = cluster.object_bytes(&checkpoint_path).await;
            assert!(checkpoint.starts_with(b"0\n1\n0 0\n"), "{checkpoint:?}");
        }
        let last_next = copied.last().map(|segment| segment.end_offset + 1);
        assert_eq!(
            metadata.remote_log_end_offset(cluster.topic_id, PARTITION),
            last_next
        );

        let again = manager.run_round().await;
        assert_eq!(
            again.segments_copied, 0,
            "a copied segment is never copied again"
        );

        cluster.append_now(10).await;
        let more = manager.run_round().await;
        let sealed_now = cluster.sealed_base_offsets().await;
        assert_eq!(more.segments_copied, sealed_now.len() - sealed.len());
        let log_objects: Vec<_> = cluster
            .objects()
            .await
            .into_iter()
            .filter(|object| {
                parse_segment_object(&object.location)
                    .is_some_and(|(_, _, kind)| kind == ObjectKind::Log)
            })
            .collect();
        assert_eq!(
            log_objects.len(),
            sealed_now.len(),
            "one .log object per sealed segment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_retention_deletes_only_copied_segments() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let cluster =
            Cluster::start(&store_config, "clicks", &[("local.retention.bytes", "0")]).await;
        cluster.append_now(20).await;
        let sealed = cluster.sealed_base_offsets().await;

        // Nothing copied yet (the store is down): nothing deleted.
        let faulty = crate::uploads_support::FaultyStore::new(Arc::clone(&cluster.store));
        faulty.fail_next(usize::MAX);
        let broken = RemoteLogManager::new(
            test_tiering_config(),
            faulty.clone(),
            cluster.prefix.clone(),
            cluster.controller.clone(),
            Arc::clone(&cluster.replica_manager),
        );
        let failed = broken.run_round().await;
        assert_eq!(failed.failed_partitions, 1);
        assert_eq!(failed.local_segments_deleted, 0);
        assert_eq!(cluster.sealed_base_offsets().await, sealed);

        let manager = RemoteLogManager::new(
            test_tiering_config(),
            Arc::clone(&cluster.store),
            cluster.prefix.clone(),
            cluster.controller.clone(),
            Arc::clone(&cluster.replica_manager),
        );
        let summary = manager.run_round().await;
        assert_eq!(summary.segments_copied, sealed.len(), "{summary:?}");
        assert_eq!(summary.local_segments_deleted, sealed.len());
        let metadata = cluster.controller.metadata();
        let remote_end = metadata
            .remote_log_end_offset(cluster.topic_id, PARTITION)
            .expect("copied");
        let (local_start, segments, log_end) = cluster
            .with_log(|log| {
                (
                    log.log_start_offset(),
                    log.segment_count(),
                    log.log_end_offset(),
                )
            })
            .await;
        assert_eq!(
            local_start, remote_end,
            "the local log now starts where the remote one ends"
        );
        assert_eq!(segments, 1, "only the active segment stays");
        let partition = cluster
            .replica_manager
            .partition(&cluster.topic, PARTITION)
            .expect("hosted");
        assert_eq!(partition.log_start_offset(), local_start);
        assert_eq!(partition.log_end_offset(), log_end);
        assert_eq!(
            metadata.remote_log_start_offset(cluster.topic_id, PARTITION),
            Some(0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_manager_copies_on_its_own_until_shut_down() {
    let remote = tempfile::tempdir().expect("tempdir");
    let store_config = silt_tiering::ObjectStoreConfig {
        url: remote.path().display().to_string(),
        ..Default::default()
    };
    let cluster = Cluster::start(&store_config, "events", &[]).await;
    let (store, prefix) = open_object_store(&store_config).await.expect("store");
    cluster.append_now(12).await;
    let sealed = cluster.sealed_base_offsets().await;
    let manager = RemoteLogManager::new(
        test_tiering_config(),
        store,
        prefix,
        cluster.controller.clone(),
        Arc::clone(&cluster.replica_manager),
    )
    .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let copied = cluster
            .controller
            .metadata()
            .copied_remote_segments(cluster.topic_id, PARTITION)
            .count();
        if copied == sealed.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "copied {copied} of {}",
            sealed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    manager.shutdown().await;
    manager.shutdown().await;
}
