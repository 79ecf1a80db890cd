//! A TCP proxy that loses Produce responses on purpose.
//!
//! It forwards Kafka frames between clients and a broker. Every `n`-th
//! Produce request (counted over all connections, up to a limit) is forwarded
//! to the broker, but its response is swallowed and the client connection is
//! closed right after the broker answered: the append happened, the client
//! never hears about it and has to retry.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest frame the proxy forwards.
const MAX_FRAME: usize = 128 * 1024 * 1024;
/// Kafka API key of Produce.
const PRODUCE_API_KEY: i16 = 0;

/// Counters shared by all proxied connections.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Produce requests seen.
    pub produce_requests: AtomicU64,
    /// Produce responses swallowed (connections cut).
    pub dropped_responses: AtomicU64,
    /// Produce requests chosen to lose their response.
    pub doomed_requests: AtomicU64,
    /// Client connections accepted.
    pub connections: AtomicU64,
}

/// A running fault-injecting proxy; stops when dropped.
#[derive(Debug)]
pub struct ResponseDroppingProxy {
    local_addr: SocketAddr,
    stats: Arc<ProxyStats>,
    accept_task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
struct DropPolicy {
    every_nth_produce: u64,
    max_drops: u64,
}

impl ResponseDroppingProxy {
    /// Binds a listener on a free loopback port without a target yet, so the
    /// broker can be started advertising this port.
    pub async fn bind() -> Result<TcpListener> {
        TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding proxy listener")
    }

    /// Starts proxying `listener` to `target`, cutting the connection after
    /// every `every_nth_produce`-th Produce request's response, `max_drops`
    /// times at most.
    pub fn start(
        listener: TcpListener,
        target: SocketAddr,
        every_nth_produce: u64,
        max_drops: u64,
    ) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let policy = DropPolicy {
            every_nth_produce: every_nth_produce.max(1),
            max_drops,
        };
        let accept_stats = stats.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let _ = accept_stats.connections.fetch_add(1, Ordering::Relaxed);
                let stats = accept_stats.clone();
                let _connection = tokio::spawn(async move {
                    let _ = proxy_connection(client, target, policy, stats).await;
                });
            }
        });
        Ok(ResponseDroppingProxy {
            local_addr,
            stats,
            accept_task,
        })
    }

    /// Address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for ResponseDroppingProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn read_frame(reader: &mut OwnedReadHalf) -> Result<Option<Vec<u8>>> {
    let mut length_bytes = [0u8; 4];
    if reader.read_exact(&mut length_bytes).await.is_err() {
        return Ok(None);
    }
    let length = i32::from_be_bytes(length_bytes);
    let length = usize::try_from(length).context("negative frame length")?;
    anyhow::ensure!(length <= MAX_FRAME, "frame of {length} bytes too large");
    let mut frame = vec![0u8; 4 + length];
    frame[..4].copy_from_slice(&length_bytes);
    let _ = reader.read_exact(&mut frame[4..]).await?;
    Ok(Some(frame))
}

async fn proxy_connection(
    client: TcpStream,
    target: SocketAddr,
    policy: DropPolicy,
    stats: Arc<ProxyStats>,
) -> Result<()> {
    let server = TcpStream::connect(target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let doomed: Arc<Mutex<HashSet<i32>>> = Arc::default();
    let mut upstream = tokio::spawn(forward_requests(
        client_read,
        server_write,
        policy,
        stats.clone(),
        doomed.clone(),
    ));
    let mut downstream = tokio::spawn(forward_responses(server_read, client_write, doomed, stats));
    // Whichever direction ends first ends the connection: dropping the other
    // task's halves closes both sockets.
    tokio::select! {
        _ = &mut upstream => downstream.abort(),
        _ = &mut downstream => upstream.abort(),
    }
    Ok(())
}

async fn forward_requests(
    mut client_read: OwnedReadHalf,
    mut server_write: OwnedWriteHalf,
    policy: DropPolicy,
    stats: Arc<ProxyStats>,
    doomed: Arc<Mutex<HashSet<i32>>>,
) -> Result<()> {
    while let Some(frame) = read_frame(&mut client_read).await? {
        if frame.len() >= 12 {
            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
            let correlation_id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            if api_key == PRODUCE_API_KEY {
                let seen = stats.produce_requests.fetch_add(1, Ordering::Relaxed) + 1;
                if seen.is_multiple_of(policy.every_nth_produce)
                    && stats.doomed_requests.load(Ordering::Relaxed) < policy.max_drops
                {
                    let _ = stats.doomed_requests.fetch_add(1, Ordering::Relaxed);
                    let _ = doomed.lock().insert(correlation_id);
                }
            }
        }
        server_write.write_all(&frame).await?;
    }
    Ok(())
}

async fn forward_responses(
    mut server_read: OwnedReadHalf,
    mut client_write: OwnedWriteHalf,
    doomed: Arc<Mutex<HashSet<i32>>>,
    stats: Arc<ProxyStats>,
) -> Result<()> {
    while let Some(frame) = read_frame(&mut server_read).await? {
        if frame.len() >= 8 {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if doomed.lock().remove(&correlation_id) {
                let _ = stats.dropped_responses.fetch_add(1, Ordering::Relaxed);
                // The broker has answered, so the append happened; the client
                // loses the answer together with the connection.
                return Ok(());
            }
        }
        client_write.write_all(&frame).await?;
    }
    Ok(())
}
