//! A TCP relay that can be switched off: nodes in network namespaces reach the test's
//! S3 server on the host's loopback through it, and a fault test takes the object store
//! away (every open connection cut, new ones closed at once) and brings it back.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::Mutex;

/// How long the relay waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct RelayState {
    down: AtomicBool,
    stopped: AtomicBool,
    next_id: AtomicU64,
    /// Open connections (client side, target side), to cut them on an outage.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

impl RelayState {
    fn cut_all(&self) {
        for (_, (client, target)) in self.open.lock().drain() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = target.shutdown(Shutdown::Both);
        }
    }
}

/// A running relay from `listen_addr` to a target address; stopped on drop.
#[derive(Debug)]
pub struct TcpRelay {
    listen_addr: SocketAddr,
    state: Arc<RelayState>,
}

impl TcpRelay {
    /// Listens on `listen_ip` (a free port) and forwards every connection to `target`.
    pub fn start(listen_ip: &str, target: SocketAddr) -> Result<TcpRelay> {
        let listener = TcpListener::bind((listen_ip, 0))
            .with_context(|| format!("binding a relay on {listen_ip}"))?;
        let listen_addr = listener.local_addr()?;
        let state = Arc::new(RelayState::default());
        let accepting = Arc::clone(&state);
        let _accept = std::thread::Builder::new()
            .name("tcp-relay".to_string())
            .spawn(move || accept_loop(&listener, target, &accepting))?;
        Ok(TcpRelay { listen_addr, state })
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Takes the target away (`true`: open connections are cut, new ones closed at once)
    /// or brings it back (`false`).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Release);
        if down {
            self.state.cut_all();
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        self.state.cut_all();
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.listen_addr, Duration::from_secs(1));
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, state: &Arc<RelayState>) {
    for client in listener.incoming() {
        if state.stopped.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else { continue };
        if state.down.load(Ordering::Acquire) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        if let Err(error) = relay_connection(client, upstream, state) {
            eprintln!("relay: {error}");
        }
    }
}

fn relay_connection(
    client: TcpStream,
    upstream: TcpStream,
    state: &Arc<RelayState>,
) -> io::Result<()> {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = state
        .open
        .lock()
        .insert(id, (client.try_clone()?, upstream.try_clone()?));
    for (mut from, mut to) in [
        (client.try_clone()?, upstream.try_clone()?),
        (upstream, client),
    ] {
        let state = Arc::clone(state);
        let _copy = std::thread::Builder::new()
            .name("tcp-relay-copy".to_string())
            .spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                let _ = state.open.lock().remove(&id);
            })?;
    }
    Ok(())
}
