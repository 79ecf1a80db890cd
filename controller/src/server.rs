//! The controller RPC server of a voter (axum, HTTP + JSON) and the metadata follower of a
//! broker-only node. Routes are listed in [`crate::network::routes`].

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use openraft::error::InstallSnapshotError;
use openraft::error::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Controller;
use crate::cluster_metadata::ClusterMetadata;
use crate::command::Command;
use crate::command::NodeId;
use crate::command::TypeConfig;
use crate::network::HeartbeatRequest;
use crate::network::LeaderAnswer;
use crate::network::routes;
use crate::quorum_controller::LeaderRequest;

/// Largest request body accepted: a snapshot chunk or a batch of entries, JSON-encoded.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Longest a metadata long-poll is held open.
const MAX_METADATA_WAIT: Duration = Duration::from_secs(10);
/// How long a broker-only node's long-poll asks the voter to wait.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// Serves the controller routes on `listener` until the controller stops.
pub(crate) fn spawn(controller: Controller, listener: TcpListener) -> JoinHandle<()> {
    let mut stop = controller.inner.stop.subscribe();
    let router = Router::new()
        .route(routes::APPEND, post(append))
        .route(routes::VOTE, post(vote))
        .route(routes::SNAPSHOT, post(install_snapshot))
        .route(routes::WRITE, post(write))
        .route(routes::HEARTBEAT, post(heartbeat))
        .route(routes::METADATA, get(metadata))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(controller.clone());
    let node_id = controller.node_id();
    let local_addr = listener.local_addr().ok();
    tokio::spawn(async move {
        tracing::info!(node_id, addr = ?local_addr, "controller rpc server listening");
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _stopped = stop.wait_for(|stopped| *stopped).await;
            })
            .await;
        if let Err(error) = served {
            tracing::warn!(node_id, %error, "controller rpc server failed");
        }
    })
}

fn raft_unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "not a controller voter").into_response()
}

async fn append(
    State(controller): State<Controller>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    let Some(raft) = &controller.inner.raft else {
        return raft_unavailable();
    };
    let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        raft.append_entries(request).await;
    Json(answer).into_response()
}

async fn vote(
    State(controller): State<Controller>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> Response {
    let Some(raft) = &controller.inner.raft else {
        return raft_unavailable();
    };
    let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> = raft.vote(request).await;
    Json(answer).into_response()
}

async fn install_snapshot(
    State(controller): State<Controller>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    let Some(raft) = &controller.inner.raft else {
        return raft_unavailable();
    };
    let answer: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        raft.install_snapshot(request).await;
    Json(answer).into_response()
}

/// A write forwarded by another node: proposed here if this node leads.
async fn write(
    State(controller): State<Controller>,
    Json(command): Json<Command>,
) -> Json<LeaderAnswer> {
    serve(&controller, LeaderRequest::Propose(command)).await
}

async fn heartbeat(
    State(controller): State<Controller>,
    Json(request): Json<HeartbeatRequest>,
) -> Json<LeaderAnswer> {
    serve(&controller, LeaderRequest::Heartbeat(request)).await
}

async fn serve(controller: &Controller, request: LeaderRequest) -> Json<LeaderAnswer> {
    let answer = controller
        .serve_locally(&request)
        .await
        .unwrap_or_else(|error| LeaderAnswer::Unavailable(error.to_string()));
    Json(answer)
}

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    /// The metadata offset the caller has; only newer metadata is sent.
    after: Option<u64>,
    /// How long to wait for newer metadata, in milliseconds (capped).
    wait_ms: Option<u64>,
}

/// `200` with the whole [`ClusterMetadata`] once its offset exceeds `after`, or `204`
/// when nothing newer was applied within the wait.
async fn metadata(
    State(controller): State<Controller>,
    Query(query): Query<MetadataQuery>,
) -> Response {
    let after = query.after;
    let is_newer =
        |metadata: &ClusterMetadata| after.is_none_or(|after| metadata.metadata_offset > after);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_METADATA_WAIT);
    let mut updates = controller.subscribe();
    let mut stop = controller.inner.stop.subscribe();
    let newer = tokio::select! {
        found = tokio::time::timeout(wait, updates.wait_for(|metadata| is_newer(metadata))) => {
            matches!(found, Ok(Ok(_)))
        }
        _ = stop.wait_for(|stopped| *stopped) => false,
    };
    if !newer {
        let current = controller.metadata();
        if !is_newer(&current) {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
    Json(controller.metadata().as_ref().clone()).into_response()
}

/// A broker-only node's metadata follower: long-polls voters in turn and publishes every
/// newer metadata version.
pub(crate) async fn follow_voters(controller: Controller) {
    let voters: Vec<(i32, String)> = controller
        .inner
        .voters
        .iter()
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    let mut stop = controller.inner.stop.subscribe();
    let mut index = 0_usize;
    loop {
        if *stop.borrow() || voters.is_empty() {
            return;
        }
        let (voter, addr) = &voters[index % voters.len()];
        let after = controller.metadata().metadata_offset;
        let url = format!(
            "http://{addr}{}?after={after}&wait_ms={}",
            routes::METADATA,
            FOLLOW_WAIT.as_millis()
        );
        let request = controller
            .inner
            .http
            .get(url)
            .timeout(FOLLOW_WAIT + Duration::from_secs(5))
            .send();
        let polled = tokio::select! {
            response = request => response,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let failed = match polled {
            Ok(response) if response.status() == StatusCode::NO_CONTENT => false,
            Ok(response) if response.status().is_success() => {
                match response.json::<ClusterMetadata>().await {
                    Ok(metadata) => {
                        publish(&controller, metadata);
                        false
                    }
                    Err(error) => {
                        tracing::debug!(voter, %error, "bad metadata from controller");
                        true
                    }
                }
            }
            Ok(response) => {
                tracing::debug!(voter, status = %response.status(), "controller refused metadata");
                true
            }
            Err(error) => {
                tracing::debug!(voter, %error, "polling controller metadata failed");
                true
            }
        };
        if failed {
            index += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn publish(controller: &Controller, metadata: ClusterMetadata) {
    if metadata.controller_id >= 0 {
        *controller.inner.leader_hint.lock() = Some(metadata.controller_id);
    }
    let _replaced = controller.inner.publisher.send_if_modified(|current| {
        if metadata.metadata_offset > current.metadata_offset {
            *current = std::sync::Arc::new(metadata);
            true
        } else {
            false
        }
    });
}
