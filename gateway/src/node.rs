//! Starting and stopping one Silt node: controller, replica manager, group coordinator,
//! Kafka listener and admin HTTP, wired in that order.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use silt_broker::broker_lifecycle::BrokerLifecycleManager;
use silt_broker::consumer_offsets::{CONSUMER_OFFSETS_TOPIC, ConsumerOffsetsLog};
use silt_broker::group_coordinator::GroupCoordinator;
use silt_broker::isr::ControllerIsrUpdater;
use silt_broker::log_manager::{LogManager, LogManagerConfig};
use silt_broker::replica_fetcher::{ReplicaFetcherConfig, ReplicaFetcherManager};
use silt_broker::replica_manager::{ReplicaManager, ReplicaManagerConfig, now_ms};
use silt_controller::{
    BrokerId, ClusterMetadata, CommandError, Controller, ControllerConfig, ControllerError,
    ControllerTuning,
};
use silt_tiering::chunk_cache::ChunkCache;
use silt_tiering::remote_reader::RemoteLogReader;
use silt_tiering::{RemoteLogManager, claim_prefix, topic_dir_name};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin_http;
use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::leader_end_point::KafkaLeaderConnector;
use crate::read_replica::follow_restore_points;
use crate::restore::{
    RestoreError, apply_restore, read_pending_restore, remove_pending_restore,
    restore_group_offsets,
};
use crate::restore_point_writer::RestorePointWriter;
use crate::server;

/// How long the metadata follower waits before applying the same metadata again after a
/// partition or coordinator load failed (a full disk, leadership not yet applied).
const APPLY_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Errors starting a node.
#[derive(thiserror::Error, Debug)]
pub enum NodeError {
    /// A listener could not bind or a directory could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The controller refused to start or to register this broker.
    #[error("controller: {0}")]
    Controller(#[from] ControllerError),
    /// Tiered storage could not be started (object store or cache).
    #[error("tiered storage: {0}")]
    Tiering(String),
    /// The pending restore (`silt restore`) could not be applied.
    #[error("restore: {0}")]
    Restore(#[from] RestoreError),
}

/// A running node; [`RunningNode::shutdown`] stops it cleanly.
pub struct RunningNode {
    /// Shared broker state.
    pub context: Arc<BrokerContext>,
    /// Bound Kafka listener address.
    pub kafka_addr: SocketAddr,
    /// Bound admin HTTP address.
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    remote_log_manager: Option<Arc<RemoteLogManager>>,
    membership: Arc<BrokerLifecycleManager>,
    log_cleaner: silt_compaction::LogCleaner,
}

/// Starts every component of a node from its configuration.
///
/// # Errors
/// Bind failures, controller start/registration failures, log recovery failures.
pub async fn start(mut config: BrokerConfig) -> Result<RunningNode, NodeError> {
    let io_error = |what: String| move |source: std::io::Error| NodeError::Io { what, source };
    for log_dir in &config.log_dirs {
        tokio::fs::create_dir_all(log_dir)
            .await
            .map_err(io_error(format!("creating log dir {}", log_dir.display())))?;
    }
    // A restored cluster keeps the cluster id of the restore point (its prefix's owner).
    let pending_restore = read_pending_restore(&config.log_dirs[0])?;
    if let Some(restore_point) = &pending_restore {
        match &config.cluster_id {
            Some(configured) if *configured != restore_point.cluster_id => {
                return Err(RestoreError::ClusterIdMismatch {
                    configured: configured.clone(),
                    restored: restore_point.cluster_id.clone(),
                }
                .into());
            }
            _ => config.cluster_id = Some(restore_point.cluster_id.clone()),
        }
        info!(restore_point = %restore_point.id, cluster_id = %restore_point.cluster_id, "starting from a pending restore");
    }
    export_replication_metrics();
    let controller = start_controller(&config).await?;
    let listener = TcpListener::bind(config.listener)
        .await
        .map_err(io_error(format!(
            "binding the Kafka listener {}",
            config.listener
        )))?;
    let kafka_addr = listener
        .local_addr()
        .map_err(io_error("reading the Kafka listener address".to_string()))?;
    let advertised_port = if config.advertised_port == 0 {
        kafka_addr.port()
    } else {
        config.advertised_port
    };
    let advertised_host = if config.advertised_host == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        config.advertised_host.clone()
    };
    // Both start-up waits retry until the quorum answers, but not past a failure of
    // this node's own raft core (a full metadata log dir), which never heals.
    let registered = BrokerLifecycleManager::register(
        controller.clone(),
        config.node_id,
        advertised_host.clone(),
        advertised_port,
        config.broker_rack.clone(),
        Duration::from_millis(config.broker_heartbeat_interval_ms.max(10)),
    );
    let membership = tokio::select! {
        registered = registered => registered?,
        error = controller.failed() => return Err(NodeError::Controller(error)),
    };

    let replica_manager = ReplicaManager::new(ReplicaManagerConfig {
        broker_id: config.node_id,
        log_dirs: config.log_dirs.clone(),
        log_defaults: config.log_defaults.clone(),
        replica_lag_time_max_ms: i64::try_from(config.replica_lag_time_max_ms).unwrap_or(i64::MAX),
        preallocate_max_bytes: config.segment_preallocate_bytes,
        writeback: config.writeback,
    });
    replica_manager.set_isr_updater(Arc::new(ControllerIsrUpdater::new(controller.clone())));
    // Neither a partition that cannot be opened nor a coordinator load that fails (this
    // broker not yet the partition's leader, say) stops the node: the metadata follower
    // retries both until they succeed. These first passes only spare clients a wait.
    let mut apply_errors = RepeatedError::new("applying metadata");
    let mut load_errors = RepeatedError::new("loading __consumer_offsets");
    // Remote reads before any partition opens: a log that starts at the end of its remote
    // segments (a restore, a new replica) takes its producer state from them.
    let remote_store = if config.remote_read_only || config.remote_storage_system_enable {
        Some(start_remote_reads(&config, &controller, &replica_manager).await?)
    } else {
        None
    };
    apply_errors.record(replica_manager.apply_metadata(&controller.metadata()).await);
    // A restarted broker is fenced until it has caught up with the metadata (KRaft).
    tokio::select! {
        () = membership.wait_until_unfenced() => {}
        error = controller.failed() => return Err(NodeError::Controller(error)),
    }
    let ensure_offsets_topic = tokio::spawn(ensure_consumer_offsets_topic(
        controller.clone(),
        config.clone(),
    ));
    if let Some(restore_point) = &pending_restore {
        let cluster_size = config.quorum_voters.len().max(1);
        apply_restore(&controller, restore_point, cluster_size).await?;
    }
    apply_errors.record(replica_manager.apply_metadata(&controller.metadata()).await);

    // A read-only replica only reads: no claim of the prefix, no uploads, no cleanup,
    // no restore points.
    let (read_replica, remote_log_manager) = match remote_store {
        Some(remote) if config.remote_read_only => (Some(remote), None),
        Some((store, prefix)) => (
            None,
            Some(start_tiering(&config, &controller, &replica_manager, store, prefix).await?),
        ),
        None => (None, None),
    };
    let restore_points = remote_log_manager.as_ref().map(|manager| {
        RestorePointWriter::new(
            controller.clone(),
            Arc::clone(manager.store()),
            manager.prefix().clone(),
            config.restore_point_interval_ms,
            config.restore_point_retention_ms,
        )
    });

    let group_coordinator = GroupCoordinator::new(
        Arc::new(ConsumerOffsetsLog::new(Arc::clone(&replica_manager))),
        config.group.clone(),
    );
    load_errors.record(
        group_coordinator
            .sync_leadership(&led_offsets_partitions(
                &controller.metadata(),
                config.node_id,
            ))
            .await,
    );

    let (shutdown, shutdown_receiver) = watch::channel(false);
    let mut tasks = vec![
        ensure_offsets_topic,
        tokio::spawn(Arc::clone(&membership).run_heartbeats()),
        tokio::spawn(follow_metadata(
            controller.clone(),
            Arc::clone(&replica_manager),
            Arc::clone(&group_coordinator),
            (apply_errors, load_errors),
            shutdown_receiver.clone(),
        )),
        tokio::spawn(
            Arc::clone(&replica_manager)
                .run_isr_maintenance_loop(replica_manager.isr_check_interval()),
        ),
    ];
    let log_manager = LogManager::new(
        Arc::clone(&replica_manager),
        LogManagerConfig {
            retention_check_interval: Duration::from_millis(
                config.retention_check_interval_ms.max(100),
            ),
            flush_interval: config.flush_interval_ms.map(Duration::from_millis),
        },
    );
    tasks.extend(log_manager.start());
    let log_cleaner = silt_compaction::LogCleaner::start(
        Arc::clone(&replica_manager),
        config.log_cleaner.clone(),
    );
    if let Some(manager) = &remote_log_manager {
        let remote_cleaner = silt_compaction::RemoteLogCleaner::new(
            Arc::clone(&replica_manager),
            controller.clone(),
            Arc::clone(manager),
            &config.log_cleaner,
            log_cleaner.throttler(),
        );
        tasks.push(tokio::spawn(remote_cleaner.run(shutdown_receiver.clone())));
    }

    // A read-only replica exports nothing: its bucket is another cluster's.
    let table_exporter = if config.remote_read_only {
        None
    } else {
        let (store, prefix) = match &remote_log_manager {
            Some(manager) => (Arc::clone(manager.store()), manager.prefix().clone()),
            None => silt_tiering::open_object_store(&config.object_store)
                .await
                .map_err(|error| NodeError::Tiering(error.to_string()))?,
        };
        let tables = silt_tables::TableStore::new(
            store,
            &prefix,
            &silt_tables::root_uri(&config.object_store.url),
        );
        let exporter = silt_tables::TableExporter::new(
            Arc::clone(&replica_manager),
            tables,
            config.table_export.clone(),
        );
        tasks.push(tokio::spawn(
            Arc::clone(&exporter).run(shutdown_receiver.clone()),
        ));
        Some(exporter)
    };

    if let Some(restore_point) = &pending_restore {
        // Before the listener serves: a consumer must not find its group without offsets.
        let restored = restore_group_offsets(
            &controller,
            &group_coordinator,
            config.node_id,
            &restore_point.groups,
        )
        .await;
        remove_pending_restore(&config.log_dirs[0])?;
        info!(restore_point = %restore_point.id, group_offsets = restored, "the restore is complete");
    }
    if let Some(writer) = &restore_points {
        tasks.push(tokio::spawn(
            Arc::clone(writer).run(shutdown_receiver.clone()),
        ));
    }
    if let Some((store, prefix)) = read_replica {
        tasks.push(tokio::spawn(follow_restore_points(
            controller.clone(),
            store,
            prefix,
            Duration::from_millis(config.restore_point_interval_ms.max(100)),
            shutdown_receiver.clone(),
        )));
    }

    let admin_listener = TcpListener::bind(config.admin_listener)
        .await
        .map_err(io_error(format!(
            "binding the admin listener {}",
            config.admin_listener
        )))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(io_error("reading the admin listener address".to_string()))?;
    let mut context = BrokerContext::new(
        config,
        controller,
        replica_manager,
        group_coordinator,
        advertised_host,
        advertised_port,
    );
    context.restore_points = restore_points;
    context.table_exporter = table_exporter;
    let context = Arc::new(context);
    tasks.push(tokio::spawn(admin_http::serve(
        admin_listener,
        Arc::clone(&context),
        shutdown_receiver.clone(),
    )));
    tasks.push(tokio::spawn(server::serve(
        listener,
        Arc::clone(&context),
        shutdown_receiver,
    )));
    info!(kafka = %kafka_addr, admin = %admin_addr, node_id = context.node_id(), "silt is ready");
    Ok(RunningNode {
        context,
        kafka_addr,
        admin_addr,
        shutdown,
        tasks,
        remote_log_manager,
        membership,
        log_cleaner,
    })
}

/// Exports the replication counters from the start, so dashboards see zeros rather than
/// missing series until the first ISR change or election.
fn export_replication_metrics() {
    for counter in [
        "silt_isr_shrinks_total",
        "silt_isr_expands_total",
        "silt_controller_leader_elections_total",
        "silt_controller_unclean_leader_elections_total",
        "silt_truncated_committed_records_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for gauge in [
        "silt_under_replicated_partitions",
        "silt_offline_partitions",
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
}

/// Starts this node's controller: a voter of `controller.quorum.voters`, a quorum of one
/// when no voters are configured, or a broker-only client of the voters.
async fn start_controller(config: &BrokerConfig) -> Result<Controller, ControllerError> {
    let unclean_default = config
        .log_defaults
        .get("unclean.leader.election.enable")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let tuning = ControllerTuning {
        broker_session_timeout: Duration::from_millis(config.broker_session_timeout_ms.max(1)),
        unclean_leader_election_enable: unclean_default,
        auto_leader_rebalance_enable: config.auto_leader_rebalance_enable,
        leader_imbalance_check_interval: Duration::from_millis(
            config.leader_imbalance_check_interval_ms.max(100),
        ),
        ..ControllerTuning::default()
    };
    let is_voter = config.process_roles.iter().any(|role| role == "controller");
    if !is_voter {
        return Controller::connect_with_tuning(
            config.node_id,
            config.quorum_voters.clone(),
            tuning,
        )
        .await;
    }
    let controller_config = ControllerConfig {
        node_id: config.node_id,
        data_dir: config.metadata_log_dir.join("__controller"),
        cluster_id: config.cluster_id.clone(),
        voters: config.quorum_voters.clone(),
        listen_addr: config.controller_listener,
    };
    Controller::start_with_tuning(controller_config, tuning).await
}

/// The `__consumer_offsets` partitions `broker_id` leads (the groups it coordinates),
/// with their leader epochs.
fn led_offsets_partitions(metadata: &ClusterMetadata, broker_id: BrokerId) -> BTreeMap<i32, i32> {
    metadata
        .topic(CONSUMER_OFFSETS_TOPIC)
        .map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|assignment| assignment.leader == broker_id)
                .map(|assignment| (assignment.partition, assignment.leader_epoch))
                .collect()
        })
        .unwrap_or_default()
}

/// The applied metadata once it carries the cluster id (set when the quorum first forms).
async fn cluster_id_known(controller: &Controller) -> Arc<ClusterMetadata> {
    let mut updates = controller.subscribe();
    loop {
        let metadata = controller.metadata();
        if !metadata.cluster_id.is_empty() {
            return metadata;
        }
        if updates.changed().await.is_err() {
            return controller.metadata();
        }
    }
}

/// Claims `prefix` of `store` for this cluster and starts the upload/retention task
/// (KIP-405).
async fn start_tiering(
    config: &BrokerConfig,
    controller: &Controller,
    replica_manager: &Arc<ReplicaManager>,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
) -> Result<Arc<RemoteLogManager>, NodeError> {
    // Nothing is written under the prefix before it is known to be this cluster's.
    let metadata = cluster_id_known(controller).await;
    let own_topic_dirs: HashSet<String> = metadata
        .topics
        .values()
        .map(|topic| topic_dir_name(&topic.name, topic.topic_id))
        .collect();
    claim_prefix(
        store.as_ref(),
        &prefix,
        &metadata.cluster_id,
        &own_topic_dirs,
        now_ms(),
    )
    .await
    .map_err(|error| NodeError::Tiering(error.to_string()))?;
    Ok(RemoteLogManager::new(
        config.tiering.clone(),
        store,
        prefix,
        controller.clone(),
        Arc::clone(replica_manager),
    )
    .start())
}

/// Opens the object store and the remote read cache and gives the replica manager a
/// remote reader over them. Returns the store and the prefix of this cluster's objects.
async fn start_remote_reads(
    config: &BrokerConfig,
    controller: &Controller,
    replica_manager: &Arc<ReplicaManager>,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath), NodeError> {
    let (store, prefix) = silt_tiering::open_object_store(&config.object_store)
        .await
        .map_err(|error| NodeError::Tiering(error.to_string()))?;
    let cache = ChunkCache::new(config.remote_cache.clone())
        .await
        .map_err(|error| NodeError::Tiering(error.to_string()))?;
    let reader = RemoteLogReader::new(
        Arc::clone(&store),
        prefix.clone(),
        controller.clone(),
        Arc::new(cache),
    );
    replica_manager.set_remote_log(Arc::new(reader));
    info!(object_store = %config.object_store.url, read_only = config.remote_read_only, "tiered storage ready");
    Ok((store, prefix))
}

/// Creates `__consumer_offsets` if it does not exist, with
/// `offsets.topic.replication.factor` (Kafka's default 3) replicas, retrying until enough
/// brokers are registered: a cluster's nodes start one by one, and FindCoordinator
/// answers COORDINATOR_NOT_AVAILABLE meanwhile (KIP-115).
///
/// The factor is capped at the cluster's size, the larger of the registered brokers and
/// the controller voters, with a log line: a single node gets 1 replica, a 3-voter
/// cluster waits for its third broker instead of settling for fewer replicas.
async fn ensure_consumer_offsets_topic(controller: Controller, config: BrokerConfig) {
    // Kafka's settings for the offsets topic: compacted, 100 MiB segments by default.
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "segment.bytes".to_string(),
            config.offsets_topic_segment_bytes.to_string(),
        ),
    ]);
    let mut attempts = 0u32;
    let mut capped_logged = false;
    while controller
        .metadata()
        .topic(CONSUMER_OFFSETS_TOPIC)
        .is_none()
    {
        let cluster_size = controller
            .metadata()
            .brokers
            .len()
            .max(config.quorum_voters.len())
            .max(1);
        let configured = config.offsets_topic_replication_factor;
        let replication_factor = configured.min(i16::try_from(cluster_size).unwrap_or(i16::MAX));
        if replication_factor < configured && !capped_logged {
            capped_logged = true;
            warn!(
                configured,
                replication_factor,
                cluster_size,
                "offsets.topic.replication.factor is larger than this cluster: \
                 {CONSUMER_OFFSETS_TOPIC} gets one replica per broker"
            );
        }
        let created = controller
            .create_topic(
                CONSUMER_OFFSETS_TOPIC,
                config.offsets_topic_num_partitions,
                replication_factor,
                configs.clone(),
                true,
            )
            .await;
        match created {
            Ok(_) => {
                info!(replication_factor, "created {CONSUMER_OFFSETS_TOPIC}");
                return;
            }
            Err(ControllerError::Rejected(CommandError::TopicAlreadyExists(_))) => return,
            Err(error) => {
                attempts += 1;
                if attempts % 10 == 1 {
                    warn!(%error, "cannot create {CONSUMER_OFFSETS_TOPIC} yet, retrying");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Applies every metadata change the controller publishes, in order: hosted partitions,
/// follower fetchers, group coordination (Kafka's `onElection`/`onResignation` for
/// `__consumer_offsets`), and the offline-partitions gauge. A pass that failed for some
/// partition or coordinator load is repeated every [`APPLY_RETRY_INTERVAL`] until it
/// succeeds or newer metadata arrives; failures never end the task.
async fn follow_metadata(
    controller: Controller,
    replica_manager: Arc<ReplicaManager>,
    group_coordinator: Arc<GroupCoordinator>,
    (mut apply_errors, mut load_errors): (RepeatedError, RepeatedError),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut updates = controller.subscribe();
    let replica_fetchers = ReplicaFetcherManager::new(
        Arc::clone(&replica_manager),
        Arc::new(KafkaLeaderConnector),
        ReplicaFetcherConfig::default(),
    );
    // The current version counts as seen by a new subscriber: apply it first.
    let mut metadata = controller.metadata();
    loop {
        let applied = apply_errors.record(replica_manager.apply_metadata(&metadata).await);
        replica_fetchers.apply_metadata(&metadata);
        let loaded = load_errors.record(
            group_coordinator
                .sync_leadership(&led_offsets_partitions(
                    &metadata,
                    replica_manager.broker_id(),
                ))
                .await,
        );
        let offline = metadata
            .topics
            .values()
            .flat_map(|topic| &topic.partitions)
            .filter(|assignment| assignment.leader < 0)
            .count();
        metrics::gauge!("silt_offline_partitions").set(offline as f64);
        let retry = !(applied && loaded);
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                metadata = updates.borrow_and_update().clone();
            }
            () = tokio::time::sleep(APPLY_RETRY_INTERVAL), if retry => {
                // Anything newer replaces the metadata that failed; else retry it.
                metadata = controller.metadata();
            }
            _ = shutdown.changed() => {
                replica_fetchers.shutdown().await;
                return;
            }
        }
    }
}

/// A step the metadata follower retries (applying partitions, loading coordinators):
/// every failure is counted in `silt_metadata_errors_total{step}`, but a failure is
/// logged only when its message differs from the last one, and recovery once.
struct RepeatedError {
    step: &'static str,
    last: Option<String>,
}

impl RepeatedError {
    fn new(step: &'static str) -> Self {
        metrics::counter!("silt_metadata_errors_total", "step" => step).increment(0);
        RepeatedError { step, last: None }
    }

    /// Counts and logs `result`'s error, if any; returns whether it succeeded.
    fn record<E: std::fmt::Display>(&mut self, result: Result<(), E>) -> bool {
        match result {
            Ok(()) => {
                if self.last.take().is_some() {
                    info!(step = self.step, "succeeded after earlier failures");
                }
                true
            }
            Err(error) => {
                metrics::counter!("silt_metadata_errors_total", "step" => self.step).increment(1);
                let message = error.to_string();
                if self.last.as_deref() != Some(message.as_str()) {
                    warn!(step = self.step, error = %message, "failed, retrying");
                    self.last = Some(message);
                }
                false
            }
        }
    }
}

impl RunningNode {
    /// Stops accepting requests, then closes logs (flush, indexes, clean-shutdown
    /// marker) and the controller.
    pub async fn shutdown(self) {
        self.membership.controlled_shutdown().await;
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(remote_log_manager) = &self.remote_log_manager {
            remote_log_manager.shutdown().await;
        }
        // Before the logs close: a pass in progress finishes its current group.
        let log_cleaner = self.log_cleaner;
        if let Err(error) = tokio::task::spawn_blocking(move || log_cleaner.shutdown()).await {
            warn!(%error, "stopping the log cleaner failed");
        }
        self.context.group_coordinator.shutdown();
        self.context.replica_manager.shutdown().await;
        if let Err(error) = self.context.controller.shutdown().await {
            warn!(%error, "controller shutdown failed");
        }
        info!("silt stopped");
    }
}
