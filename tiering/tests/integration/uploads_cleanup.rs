//! Cleanup and retention of remote segments: abandoned uploads, duplicate uploads,
//! deleted topics, objects without metadata, remote retention and store outages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::uploads_support::{
    BROKER_ID, Cluster, FaultyStore, PARTITION, store_configs, test_tiering_config,
};
use futures::FutureExt;
use object_store::{ObjectStoreExt, PutPayload};
use silt_broker::replica_manager::now_ms;
use silt_controller::{RemoteSegmentMetadata, RemoteSegmentState};
use silt_tiering::CLUSTER_MARKER;
use silt_tiering::RemoteLogManager;
use silt_tiering::object_layout::{ObjectKind, parse_segment_object, segment_object};

fn copy_started(
    cluster: &Cluster,
    base_offset: i64,
    end_offset: i64,
    broker_id: i32,
    event_timestamp_ms: i64,
) -> RemoteSegmentMetadata {
    RemoteSegmentMetadata {
        topic_id: cluster.topic_id,
        partition: PARTITION,
        segment_id: uuid::Uuid::new_v4(),
        base_offset,
        end_offset,
        max_timestamp_ms: now_ms(),
        size_bytes: 10,
        leader_epoch: 0,
        state: RemoteSegmentState::CopyStarted,
        broker_id,
        event_timestamp_ms,
        segment_leader_epochs: BTreeMap::new(),
        compacted: false,
    }
}

fn manager(cluster: &Cluster, store: Arc<dyn object_store::ObjectStore>) -> Arc<RemoteLogManager> {
    RemoteLogManager::new(
        test_tiering_config(),
        store,
        cluster.prefix.clone(),
        cluster.controller.clone(),
        Arc::clone(&cluster.replica_manager),
    )
}

async fn segment_ids_in_store(cluster: &Cluster) -> Vec<uuid::Uuid> {
    let mut ids: Vec<uuid::Uuid> = cluster
        .objects()
        .await
        .iter()
        .filter_map(|object| parse_segment_object(&object.location).map(|(_, id, _)| id))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_copy_started_uploads_are_cleaned_up() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let cluster = Cluster::start(&store_config, "orders", &[]).await;
        cluster.append_now(12).await;
        let sealed = cluster.sealed_base_offsets().await;
        let first_end = sealed[1] - 1;
        // Left by this broker before a crash: an entry and part of its objects.
        let own = copy_started(&cluster, 0, first_end, BROKER_ID, now_ms());
        // Written by another broker just now: it may still be uploading.
        let recent_foreign = copy_started(&cluster, 0, first_end, 2, now_ms());
        // Written by another broker long ago.
        let stale_foreign = copy_started(&cluster, 0, first_end, 2, now_ms() - 60_000);
        for segment in [&own, &recent_foreign, &stale_foreign] {
            cluster
                .controller
                .begin_remote_segment_copy(segment.clone())
                .await
                .expect("begin copy");
            let path = segment_object(
                &cluster.prefix,
                &cluster.topic,
                cluster.topic_id,
                PARTITION,
                0,
                segment.segment_id,
                ObjectKind::Log,
            );
            let _put = cluster
                .store
                .put(&path, PutPayload::from_static(b"partial"))
                .await
                .expect("put");
        }

        let summary = manager(&cluster, Arc::clone(&cluster.store))
            .run_round()
            .await;
        assert_eq!(summary.orphan_segments_deleted, 2, "{summary:?}");
        assert_eq!(summary.segments_copied, sealed.len());
        let metadata = cluster.controller.metadata();
        assert!(
            metadata
                .remote_segment(cluster.topic_id, PARTITION, own.segment_id)
                .is_none()
        );
        assert!(
            metadata
                .remote_segment(cluster.topic_id, PARTITION, stale_foreign.segment_id)
                .is_none()
        );
        let kept = metadata
            .remote_segment(cluster.topic_id, PARTITION, recent_foreign.segment_id)
            .expect("within grace");
        assert_eq!(kept.state, RemoteSegmentState::CopyStarted);
        let ids = segment_ids_in_store(&cluster).await;
        assert!(!ids.contains(&own.segment_id) && !ids.contains(&stale_foreign.segment_id));
        assert!(ids.contains(&recent_foreign.segment_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_upload_is_refused_and_its_objects_removed() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let cluster = Cluster::start(&store_config, "orders", &[]).await;
        cluster.append_now(12).await;
        let sealed = cluster.sealed_base_offsets().await;
        let first_end = sealed[1] - 1;
        // Another uploader finishes the first segment while this broker uploads it.
        let winner = copy_started(&cluster, 0, first_end, 2, now_ms());
        let controller = cluster.controller.clone();
        let competing = winner.clone();
        let faulty = FaultyStore::new(Arc::clone(&cluster.store));
        faulty.on_put(
            ".leader-epoch-checkpoint",
            Box::new(move |_path| {
                async move {
                    controller
                        .begin_remote_segment_copy(competing.clone())
                        .await
                        .expect("competing begin");
                    let _finished = controller
                        .finish_remote_segment_copy(
                            competing.topic_id,
                            competing.partition,
                            competing.segment_id,
                        )
                        .await
                        .expect("competing finish");
                }
                .boxed()
            }),
        );
        let manager = manager(&cluster, faulty.clone());
        let summary = manager.run_round().await;
        assert_eq!(summary.duplicates_discarded, 1, "{summary:?}");
        assert_eq!(summary.segments_copied, 0);
        let metadata = cluster.controller.metadata();
        let segments: Vec<_> = metadata
            .remote_segments(cluster.topic_id, PARTITION)
            .collect();
        assert_eq!(segments.len(), 1, "only the winner is left: {segments:?}");
        assert_eq!(segments[0].segment_id, winner.segment_id);
        assert!(
            segment_ids_in_store(&cluster).await.is_empty(),
            "the refused upload's objects are gone"
        );

        let next = manager.run_round().await;
        assert_eq!(
            next.segments_copied,
            sealed.len() - 1,
            "copying goes on after the winner"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topics_and_objects_without_metadata_are_removed() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let cluster = Cluster::start(&store_config, "doomed", &[]).await;
        cluster.append_now(10).await;
        let manager = manager(&cluster, Arc::clone(&cluster.store));
        let copied = manager.run_round().await.segments_copied;
        assert!(copied > 0);

        let stray_id = uuid::Uuid::new_v4();
        let stray = segment_object(
            &cluster.prefix,
            &cluster.topic,
            cluster.topic_id,
            PARTITION,
            99_999,
            stray_id,
            ObjectKind::Log,
        );
        let _put = cluster
            .store
            .put(&stray, PutPayload::from_static(b"stray"))
            .await
            .expect("put");
        let fresh = manager.run_round().await;
        assert_eq!(
            fresh.orphan_objects_deleted, 0,
            "younger than the grace period"
        );
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let old = manager.run_round().await;
        assert_eq!(old.orphan_objects_deleted, 1, "{old:?}");
        assert!(!segment_ids_in_store(&cluster).await.contains(&stray_id));

        // A prefix whose marker names another cluster: nothing is deleted as an orphan.
        let marker = cluster.prefix.clone().join(CLUSTER_MARKER);
        let ours = cluster.object_bytes(&marker).await;
        let _put = cluster
            .store
            .put(
                &marker,
                PutPayload::from_static(
                    br#"{"version":1,"cluster_id":"someone-else","created_ms":0}"#,
                ),
            )
            .await
            .expect("put");
        let second_stray = uuid::Uuid::new_v4();
        let _put = cluster
            .store
            .put(
                &segment_object(
                    &cluster.prefix,
                    &cluster.topic,
                    cluster.topic_id,
                    PARTITION,
                    88_888,
                    second_stray,
                    ObjectKind::Log,
                ),
                PutPayload::from_static(b"stray"),
            )
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let lost_claim = manager.run_round().await;
        assert_eq!(lost_claim.orphan_objects_deleted, 0, "{lost_claim:?}");
        assert!(segment_ids_in_store(&cluster).await.contains(&second_stray));
        let _put = cluster
            .store
            .put(&marker, PutPayload::from(ours))
            .await
            .expect("put");
        let reclaimed = manager.run_round().await;
        assert_eq!(reclaimed.orphan_objects_deleted, 1, "{reclaimed:?}");

        let _topic_id = cluster
            .controller
            .delete_topic(&cluster.topic)
            .await
            .expect("delete topic");
        cluster
            .replica_manager
            .apply_metadata(&cluster.controller.metadata())
            .await
            .expect("apply");
        let summary = manager.run_round().await;
        assert_eq!(summary.orphan_segments_deleted, copied, "{summary:?}");
        assert_eq!(cluster.controller.metadata().remote_partitions().count(), 0);
        assert!(segment_ids_in_store(&cluster).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_retention_deletes_old_segments_and_advances_the_remote_start() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let hour_ms = 3_600_000;
        let cluster = Cluster::start(
            &store_config,
            "history",
            &[("retention.ms", "3600000"), ("local.retention.ms", "-1")],
        )
        .await;
        cluster.append(9, now_ms() - 2 * hour_ms).await;
        cluster.append_now(9).await;
        let sealed = cluster.sealed_base_offsets().await;
        let manager = manager(&cluster, Arc::clone(&cluster.store));
        let summary = manager.run_round().await;
        assert_eq!(summary.segments_copied, sealed.len());
        assert!(summary.remote_segments_expired > 0, "{summary:?}");
        assert_eq!(
            summary.local_segments_deleted, 0,
            "local.retention.ms=-1 keeps local copies"
        );
        let metadata = cluster.controller.metadata();
        let remaining: Vec<_> = metadata
            .copied_remote_segments(cluster.topic_id, PARTITION)
            .collect();
        assert_eq!(
            remaining.len(),
            sealed.len() - summary.remote_segments_expired
        );
        let remote_start = metadata
            .remote_log_start_offset(cluster.topic_id, PARTITION)
            .expect("recent segments stay");
        assert!(remote_start > 0);
        assert_eq!(remote_start, remaining[0].base_offset);
        assert!(
            remaining
                .iter()
                .all(|segment| segment.max_timestamp_ms > now_ms() - hour_ms)
        );
        let ids = segment_ids_in_store(&cluster).await;
        assert_eq!(ids.len(), remaining.len(), "expired objects are deleted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_backs_off_and_keeps_local_segments_until_copies_succeed() {
    let remote = tempfile::tempdir().expect("tempdir");
    for store_config in store_configs(remote.path()) {
        let cluster =
            Cluster::start(&store_config, "outage", &[("local.retention.bytes", "0")]).await;
        cluster.append_now(12).await;
        let sealed = cluster.sealed_base_offsets().await;
        let faulty = FaultyStore::new(Arc::clone(&cluster.store));
        faulty.fail_next(6);
        let manager = manager(&cluster, faulty.clone());

        let first = manager.run_round().await;
        assert_eq!(first.failed_partitions, 1, "{first:?}");
        assert_eq!(first.segments_copied, 0);
        let backing_off = manager.run_round().await;
        assert_eq!(backing_off.partitions_backing_off, 1, "{backing_off:?}");
        assert_eq!(
            cluster.sealed_base_offsets().await,
            sealed,
            "nothing local deleted"
        );

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut copied = 0;
        while copied < sealed.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "copies never resumed"
            );
            assert_eq!(
                cluster.with_log(|log| log.log_start_offset()).await,
                0,
                "nothing local deleted before every copy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let summary = manager.run_round().await;
            copied += summary.segments_copied;
        }
        assert!(faulty.failures() >= 6);
        let metadata = cluster.controller.metadata();
        assert!(
            metadata
                .remote_segments(cluster.topic_id, PARTITION)
                .all(|segment| segment.state == RemoteSegmentState::CopyFinished)
        );
        assert_eq!(
            cluster.with_log(|log| log.segment_count()).await,
            1,
            "copied segments deleted locally at last"
        );
    }
}
