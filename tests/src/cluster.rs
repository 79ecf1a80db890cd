//! Multi-node clusters of real `silt` processes: every node is a broker and a controller
//! voter (KRaft combined mode), on its own ports, optionally inside its own network
//! namespace so a test can cut it off from the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::Consumer;

use crate::relay::TcpRelay;
use crate::{NodeIdentity, SiltOptions, SiltProcess, free_port, kafka, s3, wait_until};

/// How to start a [`SiltCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    nodes: usize,
    broker_only: usize,
    base: SiltOptions,
    netns: bool,
    s3_relay: bool,
    store_flags: Option<Vec<(String, String)>>,
}

impl ClusterOptions {
    /// `nodes` combined broker+controller nodes with ids `1..=nodes` and test-friendly
    /// timeouts (session timeout 3 s, heartbeats every 500 ms, ISR lag 3 s).
    /// `__consumer_offsets` keeps Silt's default replication factor (3, capped at the
    /// cluster's size).
    pub fn new(nodes: usize) -> Self {
        let base = SiltOptions::new()
            .flag("--broker-session-timeout-ms", 3000)
            .flag("--broker-heartbeat-interval-ms", 500)
            .flag("--replica-lag-time-max-ms", 3000)
            .flag("--leader-imbalance-check-interval-seconds", 5)
            .flag("--default-replication-factor", nodes.min(3));
        ClusterOptions {
            nodes,
            broker_only: 0,
            base,
            netns: false,
            s3_relay: false,
            store_flags: None,
        }
    }

    /// Tiers to the object store these `silt serve` flags select (for example another
    /// cluster's [`SiltCluster::store_flags`]) instead of a store of its own.
    pub fn object_store_flags(mut self, flags: Vec<(String, String)>) -> Self {
        self.store_flags = Some(flags);
        self
    }

    /// Puts every node's data directory on a tmpfs of `mib` MiB (needs root), so a test
    /// can fill it.
    pub fn data_dir_limit_mib(mut self, mib: u64) -> Self {
        self.base = self.base.data_dir_limit_mib(mib);
        self
    }

    /// With [`ClusterOptions::in_network_namespaces`] and the `SILT_TEST_S3_*` server:
    /// the nodes tier to that server through a relay on the bridge (a namespace cannot
    /// reach the host's loopback), which [`SiltCluster::set_object_store_down`] can
    /// switch off. Without an S3 server the nodes share a directory store, as always.
    pub fn object_store_relay(mut self) -> Self {
        self.s3_relay = true;
        self
    }

    /// Adds `count` broker-only nodes (`process.roles=broker`), with ids after the voters.
    pub fn broker_only_nodes(mut self, count: usize) -> Self {
        self.broker_only = count;
        self
    }

    /// Adds a `silt serve` flag for every node.
    pub fn flag(mut self, name: &str, value: impl ToString) -> Self {
        self.base = self.base.flag(name, value);
        self
    }

    /// Runs each node in a network namespace of its own, joined by a bridge, so
    /// [`SiltCluster::isolate`] can cut one off. Needs root (CAP_NET_ADMIN).
    pub fn in_network_namespaces(mut self) -> Self {
        self.netns = true;
        self
    }

    /// Starts the cluster and waits until every node is healthy.
    pub fn start(self) -> Result<SiltCluster> {
        let mut cluster = SiltCluster::prepare(self)?;
        cluster.start_all()?;
        Ok(cluster)
    }

    /// The cluster's nodes with their ports and empty data directories, not started:
    /// run commands on their settings, then [`SiltCluster::start_all`].
    pub fn prepare(self) -> Result<SiltCluster> {
        SiltCluster::prepare(self)
    }
}

/// A running cluster; nodes are SIGKILLed and their directories removed on drop.
#[derive(Debug)]
pub struct SiltCluster {
    nodes: BTreeMap<i32, SiltProcess>,
    relay: Option<TcpRelay>,
    network: Option<NetworkNamespaces>,
    store_flags: Vec<(String, String)>,
}

impl SiltCluster {
    fn prepare(options: ClusterOptions) -> Result<SiltCluster> {
        let network = match options.netns {
            true => Some(NetworkNamespaces::create(
                options.nodes + options.broker_only,
            )?),
            false => None,
        };
        let mut identities = Vec::new();
        for index in 0..options.nodes + options.broker_only {
            let node_id = i32::try_from(index + 1)?;
            let (host, netns, ports) = match &network {
                // Each namespace has its own port space.
                Some(network) => (
                    network.address(index),
                    Some(network.namespace(index)),
                    (9092, 9093, 9644),
                ),
                None => (
                    "127.0.0.1".to_string(),
                    None,
                    (free_port()?, free_port()?, free_port()?),
                ),
            };
            identities.push(NodeIdentity {
                node_id,
                host,
                kafka_port: ports.0,
                controller_port: (index < options.nodes).then_some(ports.1),
                admin_port: ports.2,
                quorum_voters: String::new(),
                netns,
            });
        }
        let voters = identities
            .iter()
            .filter_map(|identity| {
                Some(format!(
                    "{}@{}:{}",
                    identity.node_id, identity.host, identity.controller_port?
                ))
            })
            .collect::<Vec<_>>()
            .join(",");
        // Tiering needs one object store for the whole cluster: the test's S3 server under
        // one prefix, or a shared directory. (A namespace cannot reach the host's loopback,
        // where the S3 server listens.)
        let shared_objects = tempfile::Builder::new()
            .prefix("silt-cluster-objects-")
            .tempdir()?;
        let mut relay = None;
        let store_flags = match (&network, s3::S3Env::from_env()) {
            _ if options.store_flags.is_some() => options.store_flags.clone().unwrap_or_default(),
            (None, Some(env)) => s3::silt_options_for(&env, &s3::short_prefix()),
            (Some(network), Some(mut env)) if options.s3_relay => {
                let target: SocketAddr = env
                    .endpoint
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse()
                    .with_context(|| {
                        format!("S3 endpoint {} is not http://IP:PORT", env.endpoint)
                    })?;
                let started = TcpRelay::start(&network.host_address(), target)?;
                env.endpoint = format!("http://{}", started.listen_addr());
                relay = Some(started);
                s3::silt_options_for(&env, &s3::short_prefix())
            }
            _ => vec![(
                "--object-store".to_string(),
                shared_objects.path().display().to_string(),
            )],
        };
        let mut nodes = BTreeMap::new();
        for mut identity in identities {
            identity.quorum_voters = voters.clone();
            let mut node_options = options.base.clone().node(identity.clone());
            for (flag, value) in &store_flags {
                node_options = node_options.flag(flag, value);
            }
            let process = SiltProcess::prepare(node_options)?;
            let _ = nodes.insert(identity.node_id, process);
        }
        // The directory store must outlive the nodes; it is small and under the temp dir.
        let _kept = shared_objects.keep();
        Ok(SiltCluster {
            nodes,
            relay,
            network,
            store_flags,
        })
    }

    /// Starts every node that is not running, then waits until every node is healthy.
    pub fn start_all(&mut self) -> Result<()> {
        for process in self.nodes.values_mut() {
            if !process.is_running() {
                process.launch_again()?;
            }
        }
        for process in self.nodes.values_mut() {
            process.wait_healthy()?;
        }
        Ok(())
    }

    /// The `silt serve` flags that select the cluster's object store.
    pub fn store_flags(&self) -> Vec<(String, String)> {
        self.store_flags.clone()
    }

    /// Every node's Kafka listener, comma separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .values()
            .map(SiltProcess::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node ids in order.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.keys().copied().collect()
    }

    /// The node with `node_id`.
    pub fn node(&self, node_id: i32) -> Result<&SiltProcess> {
        self.nodes
            .get(&node_id)
            .with_context(|| format!("no node {node_id}"))
    }

    /// The node with `node_id`, mutably (to kill or restart it).
    pub fn node_mut(&mut self, node_id: i32) -> Result<&mut SiltProcess> {
        self.nodes
            .get_mut(&node_id)
            .with_context(|| format!("no node {node_id}"))
    }

    /// Bootstrap list of the nodes that are running.
    pub fn running_bootstrap(&mut self) -> String {
        self.running_nodes().join(",")
    }

    /// The `HOST:PORT` of each running node.
    fn running_nodes(&mut self) -> Vec<String> {
        self.nodes
            .values_mut()
            .filter_map(|node| node.is_running().then(|| node.bootstrap()))
            .collect()
    }

    /// Leader, replicas and ISR of every partition of `topic` as the Metadata API reports
    /// them (asked of any running node).
    pub fn partition_states(&mut self, topic: &str) -> Result<Vec<PartitionState>> {
        let bootstrap = self.running_bootstrap();
        partition_states_from(&bootstrap, topic)
    }

    /// Waits until every partition of `topic` has a leader and an ISR of `isr_size`, as
    /// every running node reports it. A node just reconnected after a network
    /// partition can still answer with the metadata it had when it was cut off
    /// (itself as leader, the old ISR) until its controller catches up; asking any one
    /// node could take that answer, and a check run next would read from a stale
    /// leader.
    pub fn wait_for_isr(
        &mut self,
        topic: &str,
        isr_size: usize,
        timeout: Duration,
    ) -> Result<Vec<PartitionState>> {
        let nodes = self.running_nodes();
        wait_until(
            &format!("every partition of {topic} with ISR size {isr_size} on every node"),
            timeout,
            || {
                let mut agreed: Option<Vec<PartitionState>> = None;
                for node in &nodes {
                    let Ok(states) = partition_states_from(node, topic) else {
                        return Ok(None);
                    };
                    let ready = !states.is_empty()
                        && states
                            .iter()
                            .all(|state| state.leader >= 0 && state.isr.len() == isr_size);
                    let leaders = |states: &[PartitionState]| {
                        states
                            .iter()
                            .map(|state| (state.partition, state.leader))
                            .collect::<Vec<_>>()
                    };
                    if !ready
                        || agreed
                            .as_ref()
                            .is_some_and(|first| leaders(first) != leaders(&states))
                    {
                        return Ok(None);
                    }
                    agreed.get_or_insert(states);
                }
                Ok(agreed)
            },
        )
    }

    /// The leader of `topic`-`partition` by Metadata, waiting until it has one that is not
    /// `excluded`.
    pub fn wait_for_leader(
        &mut self,
        topic: &str,
        partition: i32,
        excluded: Option<i32>,
        timeout: Duration,
    ) -> Result<i32> {
        wait_until(&format!("a leader of {topic}-{partition}"), timeout, || {
            let Ok(states) = self.partition_states(topic) else {
                return Ok(None);
            };
            let leader = states
                .iter()
                .find(|state| state.partition == partition)
                .map(|state| state.leader);
            Ok(leader.filter(|leader| *leader >= 0 && Some(*leader) != excluded))
        })
    }

    /// The node that is the active controller, by each running node's
    /// `silt_controller_active` gauge.
    pub fn active_controller(&mut self) -> Result<i32> {
        wait_until("an active controller", Duration::from_secs(30), || {
            for (node_id, node) in &mut self.nodes {
                if !node.is_running() {
                    continue;
                }
                if let Ok((200, body)) = node.admin_get("/metrics")
                    && body.lines().any(|line| {
                        line.starts_with("silt_controller_active")
                            && line.trim_end().ends_with(" 1")
                    })
                {
                    return Ok(Some(*node_id));
                }
            }
            Ok(None)
        })
    }

    /// Cuts `node_id` off from every other node and from the test (its link goes down).
    pub fn isolate(&self, node_id: i32) -> Result<()> {
        let network = self
            .network
            .as_ref()
            .context("the cluster was not started in network namespaces")?;
        network.set_link(usize::try_from(node_id - 1)?, false)
    }

    /// Whether the nodes tier to S3 through the relay of
    /// [`ClusterOptions::object_store_relay`].
    pub fn has_object_store_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// Takes the object store away from every node (an S3 outage: connections cut and
    /// refused) or brings it back.
    pub fn set_object_store_down(&self, down: bool) -> Result<()> {
        self.relay
            .as_ref()
            .context("the cluster does not tier through a relay")?
            .set_down(down);
        Ok(())
    }

    /// Reconnects a node cut off by [`SiltCluster::isolate`].
    pub fn reconnect(&self, node_id: i32) -> Result<()> {
        let network = self
            .network
            .as_ref()
            .context("the cluster was not started in network namespaces")?;
        network.set_link(usize::try_from(node_id - 1)?, true)
    }
}

impl Drop for SiltCluster {
    fn drop(&mut self) {
        // Processes go first: a namespace cannot be deleted while they run in it.
        self.nodes.clear();
        self.relay.take();
        self.network.take();
    }
}

/// Leader, replicas and ISR of every partition of `topic`, asked of the nodes in
/// `bootstrap` (one address asks that node).
fn partition_states_from(bootstrap: &str, topic: &str) -> Result<Vec<PartitionState>> {
    let consumer = kafka::base_consumer(bootstrap)?;

    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .context("metadata")?;
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic missing from metadata")?;
    if let Some(error) = topic_metadata.error() {
        bail!("metadata of {topic}: {error:?}");
    }
    Ok(topic_metadata
        .partitions()
        .iter()
        .map(|partition| PartitionState {
            partition: partition.id(),
            leader: partition.leader(),
            replicas: partition.replicas().to_vec(),
            isr: partition.isr().to_vec(),
        })
        .collect())
}

/// Leader, replicas and ISR of one partition, as Metadata reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Partition id.
    pub partition: i32,
    /// Leader node id, -1 if none.
    pub leader: i32,
    /// Replica node ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
}

/// One network namespace per node, each with a veth pair into a bridge in the host
/// namespace that also carries an address, so the test reaches every node.
#[derive(Debug)]
struct NetworkNamespaces {
    tag: String,
    subnet: (u8, u8),
    count: usize,
}

impl NetworkNamespaces {
    fn create(count: usize) -> Result<NetworkNamespaces> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100_000, sequence);
        // 10.(100..200).(0..250).0/24: distinct per test process and per cluster.
        let subnet = (
            100 + (pid % 100) as u8,
            ((pid / 100 + sequence) % 250) as u8,
        );
        let network = NetworkNamespaces { tag, subnet, count };
        network.setup().with_context(|| {
            "creating network namespaces for a network partition test needs root (CAP_NET_ADMIN) and the `ip` tool"
        })?;
        Ok(network)
    }

    fn bridge(&self) -> String {
        format!("sb{}", self.tag)
    }

    fn namespace(&self, index: usize) -> String {
        format!("silt-{}-{}", self.tag, index + 1)
    }

    fn host_link(&self, index: usize) -> String {
        format!("sh{}x{}", self.tag, index + 1)
    }

    /// The host's own address on the bridge, reachable from every namespace.
    fn host_address(&self) -> String {
        format!("10.{}.{}.254", self.subnet.0, self.subnet.1)
    }

    fn address(&self, index: usize) -> String {
        format!("10.{}.{}.{}", self.subnet.0, self.subnet.1, index + 1)
    }

    fn setup(&self) -> Result<()> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_address()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..self.count {
            let namespace = self.namespace(index);
            let host_link = self.host_link(index);
            let node_link = format!("sn{}x{}", self.tag, index + 1);
            ip(&["netns", "add", &namespace])?;
            ip(&[
                "link", "add", &host_link, "type", "veth", "peer", "name", &node_link,
            ])?;
            ip(&["link", "set", &node_link, "netns", &namespace])?;
            ip(&["link", "set", &host_link, "master", &bridge])?;
            ip(&["link", "set", &host_link, "up"])?;
            ip(&[
                "netns",
                "exec",
                &namespace,
                "ip",
                "addr",
                "add",
                &format!("{}/24", self.address(index)),
                "dev",
                &node_link,
            ])?;
            ip(&[
                "netns", "exec", &namespace, "ip", "link", "set", &node_link, "up",
            ])?;
            ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn set_link(&self, index: usize, up: bool) -> Result<()> {
        ip(&[
            "link",
            "set",
            &self.host_link(index),
            if up { "up" } else { "down" },
        ])
    }
}

impl Drop for NetworkNamespaces {
    fn drop(&mut self) {
        for index in 0..self.count {
            let _ = ip(&["link", "del", &self.host_link(index)]);
            let _ = ip(&["netns", "del", &self.namespace(index)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let started = Instant::now();
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {} failed after {:?}: {}",
            args.join(" "),
            started.elapsed(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
