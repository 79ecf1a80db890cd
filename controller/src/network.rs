//! HTTP + JSON transport between controller nodes: the raft RPCs between voters, and the
//! wire types of the controller routes served by [`crate::server`].
//!
//! Every route is a `POST` of a JSON body answered with a JSON body (the metadata route is a
//! `GET`). Paths are in [`routes`]. A peer is addressed by `host:port` as stored in
//! [`BasicNode::addr`]; only plain HTTP is spoken.

use std::time::Duration;

use openraft::BasicNode;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster_metadata::BrokerId;
use crate::command::CommandError;
use crate::command::CommandResult;
use crate::command::NodeId;
use crate::command::TypeConfig;

/// URL paths of the controller RPC server.
pub(crate) mod routes {
    /// Raft AppendEntries (body `AppendEntriesRequest`).
    pub(crate) const APPEND: &str = "/raft/append";
    /// Raft RequestVote (body `VoteRequest`).
    pub(crate) const VOTE: &str = "/raft/vote";
    /// Raft InstallSnapshot chunk (body `InstallSnapshotRequest`).
    pub(crate) const SNAPSHOT: &str = "/raft/snapshot";
    /// A [`crate::command::Command`] to propose on the active controller.
    pub(crate) const WRITE: &str = "/controller/write";
    /// A broker heartbeat ([`super::HeartbeatRequest`]) for the active controller.
    pub(crate) const HEARTBEAT: &str = "/controller/heartbeat";
    /// `GET ?after=<offset>`: the metadata once newer than `after` (long-poll).
    pub(crate) const METADATA: &str = "/controller/metadata";
}

/// Connect timeout of every controller RPC; a peer that does not accept within it is
/// reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds the HTTP client shared by one controller node. Errors if the TLS-less client
/// cannot be constructed (should not happen).
pub(crate) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
}

/// A broker heartbeat as sent to the active controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HeartbeatRequest {
    pub(crate) broker_id: BrokerId,
    pub(crate) incarnation_id: uuid::Uuid,
    pub(crate) metadata_offset: u64,
}

/// What a node answers to a request meant for the active controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaderAnswer {
    /// The proposed command was applied (or rejected by the state machine).
    Applied(CommandResult),
    /// The heartbeat was handled; `fenced` is the broker's state afterwards.
    Heartbeat(Result<bool, CommandError>),
    /// This node is not the active controller; `leader` is the one it knows of.
    NotLeader { leader: Option<BrokerId> },
    /// The active controller could not serve the request (e.g. raft is stopping).
    Unavailable(String),
}

/// Why an HTTP call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The connection could not be made (refused, connect timeout): back off.
    #[error("controller {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request was sent but no usable answer came back.
    #[error("controller {addr} did not answer: {source}")]
    Failed {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The peer answered with an error status.
    #[error("controller {addr} answered http {status}")]
    Status {
        addr: String,
        status: reqwest::StatusCode,
    },
}

impl HttpError {
    fn from_reqwest(addr: &str, source: reqwest::Error) -> HttpError {
        if source.is_connect() {
            HttpError::Unreachable {
                addr: addr.to_owned(),
                source,
            }
        } else {
            HttpError::Failed {
                addr: addr.to_owned(),
                source,
            }
        }
    }
}

/// `POST`s `body` as JSON to `http://{addr}{path}` and decodes the JSON answer.
pub(crate) async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, HttpError> {
    let response = client
        .post(format!("http://{addr}{path}"))
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| HttpError::from_reqwest(addr, source))?;
    let status = response.status();
    if !status.is_success() {
        return Err(HttpError::Status {
            addr: addr.to_owned(),
            status,
        });
    }
    response
        .json()
        .await
        .map_err(|source| HttpError::from_reqwest(addr, source))
}

/// Creates raft connections to peer voters.
pub(crate) struct ControllerNetwork {
    client: reqwest::Client,
}

impl ControllerNetwork {
    pub(crate) fn new(client: reqwest::Client) -> ControllerNetwork {
        ControllerNetwork { client }
    }
}

/// A raft connection to one peer voter.
pub(crate) struct PeerConnection {
    target: NodeId,
    node: BasicNode,
    client: reqwest::Client,
}

impl RaftNetworkFactory<TypeConfig> for ControllerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            target,
            node: node.clone(),
            client: self.client.clone(),
        }
    }
}

impl PeerConnection {
    /// Sends one raft RPC; the peer answers `Result<Resp, E>` as JSON.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, E> = post_json(
            &self.client,
            &self.node.addr,
            path,
            request,
            option.hard_ttl(),
        )
        .await
        .map_err(|error| match error {
            HttpError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
            HttpError::Failed { .. } | HttpError::Status { .. } => {
                RPCError::Network(NetworkError::new(&error))
            }
        })?;
        answer.map_err(|remote| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    /// Retries an unreachable voter after 250 ms, doubling up to 2 s: a voter that is
    /// down for long is not asked (and logged about) twice a second, and one that comes
    /// back is caught up within 2 s.
    fn backoff(&self) -> openraft::network::Backoff {
        let delays = std::iter::successors(Some(std::time::Duration::from_millis(250)), |delay| {
            Some((*delay * 2).min(std::time::Duration::from_secs(2)))
        });
        openraft::network::Backoff::new(delays)
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(routes::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(routes::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(routes::VOTE, &rpc, &option).await
    }
}
