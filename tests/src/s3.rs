//! Object storage for the tiered-storage tests (`tests/tiering_*.rs`).
//!
//! - [`S3Env`]: the S3-compatible server named by the `SILT_TEST_S3_*` variables
//!   (what `eval "$(minio-dev/start)"` exports), and [`silt_options_for`], the
//!   `silt serve` flags pointing a broker at it;
//! - [`S3Server`]: a private s3s-fs server started through `minio-dev/start` on a
//!   port and state directory of its own, for tests that stop and restart it;
//! - [`TierStore`]: where a test broker tiers to (that S3 server under a fresh
//!   prefix, or a local directory when no S3 server is configured), with a
//!   listing of the segment objects it holds;
//! - scraping the broker's `/metrics`, counting local segment files, and
//!   deterministic record payloads whose content follows from their index.
//!
//! Keep prefixes and topic names short: s3s-fs names a file after the base64 of
//! the whole object key and fails with "File name too long" for keys over about
//! 170 bytes. [`short_prefix`] gives `t` and 6 hex digits; topics of at most 8
//! characters keep every key of the layout below that limit.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{SiltOptions, SiltProcess, free_port, segment_files};

/// An S3-compatible server and the credentials to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Env {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket the tests write under.
    pub bucket: String,
    /// Static access key id.
    pub access_key_id: String,
    /// Static secret access key.
    pub secret_access_key: String,
    /// Region requests are signed for.
    pub region: String,
}

impl S3Env {
    /// The server named by `SILT_TEST_S3_ENDPOINT`, `SILT_TEST_S3_BUCKET`,
    /// `SILT_TEST_S3_ACCESS_KEY_ID`, `SILT_TEST_S3_SECRET_ACCESS_KEY` and
    /// `SILT_TEST_S3_REGION` (default `us-east-1`); `None` when the endpoint is
    /// not set.
    ///
    /// # Panics
    /// When the endpoint is set but the bucket or a key is not: a test run that
    /// asked for S3 must not quietly fall back to the local filesystem.
    pub fn from_env() -> Option<S3Env> {
        let setting = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        let endpoint = setting("SILT_TEST_S3_ENDPOINT")?;
        let required = |name: &str| {
            setting(name).unwrap_or_else(|| {
                panic!("SILT_TEST_S3_ENDPOINT is set but {name} is not (run eval \"$(minio-dev/start)\")")
            })
        };
        Some(S3Env {
            endpoint,
            bucket: required("SILT_TEST_S3_BUCKET"),
            access_key_id: required("SILT_TEST_S3_ACCESS_KEY_ID"),
            secret_access_key: required("SILT_TEST_S3_SECRET_ACCESS_KEY"),
            region: setting("SILT_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".to_string()),
        })
    }

    /// [`S3Env::from_env`] for a test that runs against S3 only: `None` (the test
    /// skips, saying so) when no server is configured, an error under `CI` so that
    /// a CI run never passes without the S3 variant.
    pub fn required_in_ci() -> Result<Option<S3Env>> {
        let env = S3Env::from_env();
        if env.is_none() {
            ensure!(
                std::env::var_os("CI").is_none(),
                "CI is set but the S3 test server is not: run `eval \"$(minio-dev/start)\"`"
            );
            eprintln!("skipping: no S3 test server (eval \"$(minio-dev/start)\" sets one)");
        }
        Ok(env)
    }

    /// Parses the `export NAME=VALUE` lines `minio-dev/start` prints.
    pub fn from_exports(text: &str) -> Result<S3Env> {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let Some(assignment) = line.trim().strip_prefix("export ") else {
                continue;
            };
            let (name, value) = assignment
                .split_once('=')
                .with_context(|| format!("malformed export line {line:?}"))?;
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            let _ = values.insert(name.trim().to_string(), value.to_string());
        }
        let take = |name: &str| {
            values
                .get(name)
                .cloned()
                .with_context(|| format!("{name} missing from minio-dev/start output:\n{text}"))
        };
        Ok(S3Env {
            endpoint: take("SILT_TEST_S3_ENDPOINT")?,
            bucket: take("SILT_TEST_S3_BUCKET")?,
            access_key_id: take("SILT_TEST_S3_ACCESS_KEY_ID")?,
            secret_access_key: take("SILT_TEST_S3_SECRET_ACCESS_KEY")?,
            region: take("SILT_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".to_string()),
        })
    }

    /// An object_store client of the bucket (path-style requests, plain http
    /// allowed), for listing what a broker wrote.
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_region(&self.region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .context("building an S3 client for the test server")?;
        Ok(Arc::new(store))
    }
}

/// `silt serve` flags tiering to `s3://<bucket>/<prefix>` on `s3`:
/// `--object-store`, `--s3-endpoint`, `--s3-access-key-id`,
/// `--s3-secret-access-key` and `--s3-region`.
pub fn silt_options_for(s3: &S3Env, prefix: &str) -> Vec<(String, String)> {
    vec![
        (
            "--object-store".to_string(),
            format!("s3://{}/{prefix}", s3.bucket),
        ),
        ("--s3-endpoint".to_string(), s3.endpoint.clone()),
        ("--s3-access-key-id".to_string(), s3.access_key_id.clone()),
        (
            "--s3-secret-access-key".to_string(),
            s3.secret_access_key.clone(),
        ),
        ("--s3-region".to_string(), s3.region.clone()),
    ]
}

/// A fresh object key prefix: `t` and 6 hex digits.
pub fn short_prefix() -> String {
    format!("t{:06x}", rand::random::<u32>() & 0x00ff_ffff)
}

/// `minio-dev/<script>` of this repository.
fn minio_dev_script(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("minio-dev")
        .join(script)
}

/// A private S3-compatible server for one test, run by `minio-dev/start` with
/// its own state directory and port, so the test can stop and restart it.
/// Dropping it stops the server and deletes its data.
#[derive(Debug)]
pub struct S3Server {
    env: S3Env,
    port: u16,
    running: bool,
    // Dropped last: holds the server's data, pid file and log.
    state_dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free loopback port. The first start on a machine
    /// may install s3s-fs (`cargo install`, several minutes).
    pub fn start() -> Result<S3Server> {
        let state_dir = tempfile::Builder::new()
            .prefix("silt-s3-test-")
            .tempdir()
            .context("creating the S3 state dir")?;
        let port = free_port()?;
        let output = run_minio_dev("start", state_dir.path(), port)?;
        let env = S3Env::from_exports(&output)?;
        Ok(S3Server {
            env,
            port,
            running: true,
            state_dir,
        })
    }

    /// The server's endpoint, bucket and credentials.
    pub fn env(&self) -> &S3Env {
        &self.env
    }

    /// Whether the server should be up.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server (`minio-dev/stop`); its data stays.
    pub fn stop(&mut self) -> Result<()> {
        let _ = run_minio_dev("stop", self.state_dir.path(), self.port)?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped server again on the same port with the same data.
    pub fn start_again(&mut self) -> Result<()> {
        let output = run_minio_dev("start", self.state_dir.path(), self.port)?;
        let env = S3Env::from_exports(&output)?;
        ensure!(
            env == self.env,
            "the restarted S3 server differs: {env:?} vs {:?}",
            self.env
        );
        self.running = true;
        Ok(())
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if self.running
            && let Err(error) = run_minio_dev("stop", self.state_dir.path(), self.port)
        {
            eprintln!("stopping the test S3 server failed: {error:#}");
        }
    }
}

/// Runs `minio-dev/<script>` for the server in `state_dir` on `port`; returns stdout.
fn run_minio_dev(script: &str, state_dir: &Path, port: u16) -> Result<String> {
    let path = minio_dev_script(script);
    let output = Command::new(&path)
        .env("SILT_S3_STATE_DIR", state_dir)
        .env("SILT_S3_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed with {}\nstdout:\n{}\nstderr:\n{}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Where a test broker tiers its segments to.
#[derive(Debug, Clone)]
pub enum TierStore {
    /// An S3-compatible server, under `prefix` of its bucket.
    S3 {
        /// The server.
        env: S3Env,
        /// Key prefix of this broker's objects.
        prefix: String,
    },
    /// A directory on the local filesystem.
    Local {
        /// The directory (`--object-store <dir>`).
        dir: PathBuf,
    },
}

impl TierStore {
    /// The server of [`S3Env::from_env`] under a fresh [`short_prefix`], or
    /// `local_dir` when no S3 server is configured.
    pub fn from_env_or_local(local_dir: &Path) -> TierStore {
        match S3Env::from_env() {
            Some(env) => TierStore::s3(env),
            None => TierStore::Local {
                dir: local_dir.to_path_buf(),
            },
        }
    }

    /// `env` under a fresh [`short_prefix`].
    pub fn s3(env: S3Env) -> TierStore {
        TierStore::S3 {
            env,
            prefix: short_prefix(),
        }
    }

    /// The `silt serve` flags selecting this store.
    pub fn flags(&self) -> Vec<(String, String)> {
        match self {
            TierStore::S3 { env, prefix } => silt_options_for(env, prefix),
            TierStore::Local { dir } => {
                vec![("--object-store".to_string(), dir.display().to_string())]
            }
        }
    }

    /// `options` with [`TierStore::flags`] added.
    pub fn apply(&self, options: SiltOptions) -> SiltOptions {
        self.flags()
            .into_iter()
            .fold(options, |options, (flag, value)| options.flag(&flag, value))
    }

    /// A description for messages.
    pub fn describe(&self) -> String {
        match self {
            TierStore::S3 { env, prefix } => {
                format!("s3://{}/{prefix} at {}", env.bucket, env.endpoint)
            }
            TierStore::Local { dir } => format!("local directory {}", dir.display()),
        }
    }

    /// Every object under the store's prefix, keys relative to it, in key order.
    /// Files the local store is still writing (`<name>#<n>`) are left out.
    pub async fn list(&self) -> Result<Vec<StoredObject>> {
        let mut objects = match self {
            TierStore::S3 { env, prefix } => {
                let store = env.object_store()?;
                let root = object_store::path::Path::from(prefix.as_str());
                let listed: Vec<object_store::ObjectMeta> = store
                    .list(Some(&root))
                    .try_collect()
                    .await
                    .with_context(|| format!("listing {}", self.describe()))?;
                listed
                    .into_iter()
                    .map(|meta| {
                        let key = meta.location.as_ref();
                        let relative = key
                            .strip_prefix(prefix.as_str())
                            .map(|rest| rest.trim_start_matches('/'))
                            .unwrap_or(key);
                        StoredObject {
                            key: relative.to_string(),
                            size: meta.size,
                        }
                    })
                    .collect()
            }
            TierStore::Local { dir } => {
                let mut found = Vec::new();
                if dir.exists() {
                    walk_files(dir, dir, &mut found)?;
                }
                found
            }
        };
        objects.retain(|object| !object.key.contains('#'));
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Writes `bytes` at `key` (relative to the store's prefix), replacing what is there.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            TierStore::S3 { env, prefix } => {
                let store = env.object_store()?;
                let location = object_store::path::Path::from(format!("{prefix}/{key}"));
                store
                    .put(&location, bytes.into())
                    .await
                    .with_context(|| format!("writing {key} to {}", self.describe()))?;
            }
            TierStore::Local { dir } => {
                std::fs::write(dir.join(key), bytes)
                    .with_context(|| format!("writing {key} under {}", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Deletes every object under the store's prefix of an S3 store, so that runs
    /// against a shared server do not pile up data; a local directory is left to
    /// its temporary directory's owner. Returns how many objects were deleted.
    pub async fn remove_all(&self) -> Result<usize> {
        let TierStore::S3 { env, prefix } = self else {
            return Ok(0);
        };
        let store = env.object_store()?;
        let root = object_store::path::Path::from(prefix.as_str());
        let locations = store.list(Some(&root)).map_ok(|meta| meta.location).boxed();
        let deleted: Vec<object_store::path::Path> = store
            .delete_stream(locations)
            .try_collect()
            .await
            .with_context(|| format!("deleting everything under {}", self.describe()))?;
        Ok(deleted.len())
    }

    /// The segment objects of `topic` (every `<topic>-<topicId>` folder), parsed.
    /// Fails on a file under `topics/` that does not follow the layout.
    pub async fn segment_objects(&self, topic: &str) -> Result<Vec<SegmentObject>> {
        let mut segments = Vec::new();
        for object in self.list().await? {
            if !object.key.starts_with("topics/") {
                continue;
            }
            let parsed = SegmentObject::parse(&object).with_context(|| {
                format!("unexpected object {} in {}", object.key, self.describe())
            })?;
            if parsed.topic == topic {
                segments.push(parsed);
            }
        }
        Ok(segments)
    }
}

fn walk_files(root: &Path, dir: &Path, found: &mut Vec<StoredObject>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk_files(root, &path, found)?;
        } else if file_type.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            // A file may vanish between listing and stat (deletions run concurrently).
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            found.push(StoredObject {
                key: relative.to_string_lossy().replace('\\', "/"),
                size: metadata.len(),
            });
        }
    }
    Ok(())
}

/// One object in a [`TierStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Key relative to the store's prefix, e.g. `topics/t-<id>/0/<file>`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A segment object named as the layout says:
/// `topics/<topic>-<topicId>/<partition>/<baseOffset:020>-<segmentId>.<ext>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentObject {
    /// Topic name.
    pub topic: String,
    /// Topic id (22 characters).
    pub topic_id: String,
    /// Partition index.
    pub partition: i32,
    /// First offset of the segment.
    pub base_offset: i64,
    /// Upload id (a uuid).
    pub segment_id: String,
    /// `log`, `index`, `timeindex`, `snapshot` or `leader-epoch-checkpoint`.
    pub extension: String,
    /// Size in bytes.
    pub size: u64,
}

impl SegmentObject {
    /// Parses a key relative to the store prefix.
    pub fn parse(object: &StoredObject) -> Result<SegmentObject> {
        let parts: Vec<&str> = object.key.split('/').collect();
        let [topics, topic_dir, partition, file] = parts[..] else {
            bail!("expected topics/<topic>-<topicId>/<partition>/<file>");
        };
        ensure!(topics == "topics", "not under topics/");
        // The topic id (22 characters of base64url) may itself contain '-'.
        let split = topic_dir
            .len()
            .checked_sub(23)
            .filter(|split| *split > 0 && topic_dir.is_char_boundary(*split))
            .context("topic folder is not <topic>-<topicId>")?;
        let (topic, dash_id) = topic_dir.split_at(split);
        let topic_id = dash_id
            .strip_prefix('-')
            .context("topic folder is not <topic>-<topicId>")?;
        ensure!(
            topic_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
            "topic id {topic_id:?} is not base64url"
        );
        let partition: i32 = partition
            .parse()
            .context("partition folder is not a number")?;
        let (stem, extension) = file.split_once('.').context("file name has no extension")?;
        ensure!(
            [
                "log",
                "index",
                "timeindex",
                "snapshot",
                "leader-epoch-checkpoint"
            ]
            .contains(&extension),
            "unknown extension {extension:?}"
        );
        let (offset_text, segment_id) = stem.split_at_checked(20).context("file name too short")?;
        ensure!(
            offset_text.bytes().all(|byte| byte.is_ascii_digit()),
            "base offset {offset_text:?} is not 20 digits"
        );
        let segment_id = segment_id
            .strip_prefix('-')
            .context("no '-' after the base offset")?;
        ensure!(
            segment_id.len() == 36 && segment_id.bytes().filter(|byte| *byte == b'-').count() == 4,
            "segment id {segment_id:?} is not a hyphenated uuid"
        );
        Ok(SegmentObject {
            topic: topic.to_string(),
            topic_id: topic_id.to_string(),
            partition,
            base_offset: offset_text.parse()?,
            segment_id: segment_id.to_string(),
            extension: extension.to_string(),
            size: object.size,
        })
    }
}

/// The broker's `/metrics` text.
pub fn scrape_metrics(silt: &SiltProcess) -> Result<String> {
    let (status, body) = silt.admin_get("/metrics")?;
    ensure!(status == 200, "GET /metrics answered {status}: {body}");
    Ok(body)
}

/// Samples of metric `name` in Prometheus text: (labels, value) per series.
pub fn metric_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels_text, value_text) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((labels, value)) = inner.split_once('}') else {
                continue;
            };
            (labels, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let Some(value) = value_text
            .split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        else {
            continue;
        };
        let mut labels = BTreeMap::new();
        for pair in labels_text.split("\",").filter(|pair| !pair.is_empty()) {
            if let Some((key, value)) = pair.split_once("=\"") {
                let _ = labels.insert(
                    key.trim().to_string(),
                    value.trim_end_matches('"').to_string(),
                );
            }
        }
        samples.push((labels, value));
    }
    samples
}

/// Per-partition values of a `{topic, partition}` metric for `topic`.
pub fn partition_metric(text: &str, name: &str, topic: &str) -> BTreeMap<i32, f64> {
    metric_samples(text, name)
        .into_iter()
        .filter(|(labels, _)| labels.get("topic").is_some_and(|value| value == topic))
        .filter_map(|(labels, value)| Some((labels.get("partition")?.parse().ok()?, value)))
        .collect()
}

/// `silt_tiering_upload_backlog_segments` of every partition of `topic` that
/// the remote log manager has visited.
pub fn upload_backlog(silt: &SiltProcess, topic: &str) -> Result<BTreeMap<i32, f64>> {
    Ok(partition_metric(
        &scrape_metrics(silt)?,
        "silt_tiering_upload_backlog_segments",
        topic,
    ))
}

/// `<data>/<topic>-<partition>` of a broker.
pub fn partition_dir(silt: &SiltProcess, topic: &str, partition: i32) -> PathBuf {
    silt.data_dir().join(format!("{topic}-{partition}"))
}

/// The local `.log` segment files of one partition, oldest first.
pub fn local_segments(silt: &SiltProcess, topic: &str, partition: i32) -> Result<Vec<PathBuf>> {
    segment_files(&partition_dir(silt, topic, partition))
}

/// Base offset of a local segment file (`<baseOffset:020>.log`).
pub fn segment_base_offset(path: &Path) -> Result<i64> {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .with_context(|| format!("segment file {} has no name", path.display()))?;
    stem.parse()
        .with_context(|| format!("segment file {} is not <offset>.log", path.display()))
}

/// Size of the pool record values are cut from.
const PAYLOAD_POOL_BYTES: usize = 1 << 18;

/// Pseudo-random bytes (xorshift, fixed seed) that values are cut from.
fn payload_pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pool = Vec::with_capacity(PAYLOAD_POOL_BYTES);
        while pool.len() < PAYLOAD_POOL_BYTES {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            pool.extend_from_slice(&state.to_le_bytes());
        }
        pool
    })
}

/// Deterministic record contents: record `index` has key [`Payloads::key`]
/// and a value of [`Payloads::value_len`] bytes: the index (8 bytes,
/// little-endian) followed by a slice of a fixed pseudo-random pool chosen by
/// the index. Values are incompressible and differ from record to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payloads {
    /// Smallest value length in bytes (at least 8).
    pub min_value_bytes: usize,
    /// Largest value length in bytes (at most 64 KiB).
    pub max_value_bytes: usize,
}

impl Payloads {
    /// Key of record `index`: `k` and the index in 12 digits.
    pub fn key(index: u64) -> String {
        format!("k{index:012}")
    }

    /// The index a key encodes.
    pub fn index_of_key(key: &[u8]) -> Option<u64> {
        std::str::from_utf8(key.strip_prefix(b"k")?)
            .ok()?
            .parse()
            .ok()
    }

    /// Value length of record `index`.
    pub fn value_len(&self, index: u64) -> usize {
        let span = (self.max_value_bytes - self.min_value_bytes + 1) as u64;
        self.min_value_bytes + (index.wrapping_mul(0x9e37_79b9) % span) as usize
    }

    /// Value of record `index`.
    pub fn value(&self, index: u64) -> Vec<u8> {
        let len = self.value_len(index).max(8);
        let pool = payload_pool();
        let start =
            (index.wrapping_mul(2_654_435_761) % (PAYLOAD_POOL_BYTES - len) as u64) as usize;
        let mut value = Vec::with_capacity(len);
        value.extend_from_slice(&index.to_le_bytes());
        value.extend_from_slice(&pool[start..start + len - 8]);
        value
    }

    /// Bytes of key and value of record `index`.
    pub fn record_bytes(&self, index: u64) -> u64 {
        (Self::key(index).len() + self.value_len(index).max(8)) as u64
    }
}

/// Running checksum of one partition's records: CRC32C over each record's
/// offset (8 bytes, big-endian), key and value, in offset order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionChecksum {
    /// Records folded in.
    pub records: u64,
    /// The CRC32C so far.
    pub crc: u32,
}

impl PartitionChecksum {
    /// Folds in the next record.
    pub fn add(&mut self, offset: i64, key: &[u8], value: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, &offset.to_be_bytes());
        self.crc = crc32c::crc32c_append(self.crc, key);
        self.crc = crc32c::crc32c_append(self.crc, value);
        self.records += 1;
    }
}

/// What was acknowledged: per partition, offset → record index.
pub type Acked = BTreeMap<i32, BTreeMap<i64, u64>>;

/// Produces records `indices` of `payloads` to `topic`, record `i` to
/// partition `i % partitions` with timestamp `timestamp(i)` when given, keeping
/// at most `window` deliveries outstanding. Fails on the first failed delivery.
/// Returns the acknowledged positions.
pub async fn produce_payloads(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    indices: Range<u64>,
    payloads: Payloads,
    timestamp: impl Fn(u64) -> Option<i64>,
    window: usize,
) -> Result<Acked> {
    let mut acked = Acked::new();
    let mut pending = std::collections::VecDeque::new();
    for index in indices {
        let key = Payloads::key(index);
        let value = payloads.value(index);
        let partition = (index % partitions as u64) as i32;
        loop {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(value.as_slice())
                .partition(partition);
            if let Some(timestamp) = timestamp(index) {
                record = record.timestamp(timestamp);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back((index, delivery));
                    break;
                }
                Err((error, _)) => {
                    // The local queue is full: wait for the oldest delivery.
                    let Some((pending_index, delivery)) = pending.pop_front() else {
                        bail!("enqueueing record {index} failed: {error}");
                    };
                    record_delivery(&mut acked, pending_index, delivery.await)?;
                }
            }
        }
        while pending.len() >= window.max(1) {
            let (pending_index, delivery) = pending.pop_front().context("window is empty")?;
            record_delivery(&mut acked, pending_index, delivery.await)?;
        }
    }
    for (index, delivery) in pending {
        record_delivery(&mut acked, index, delivery.await)?;
    }
    Ok(acked)
}

fn record_delivery(
    acked: &mut Acked,
    index: u64,
    delivery: std::result::Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<()> {
    let delivered = delivery
        .map_err(|_| anyhow!("delivery of record {index} cancelled"))?
        .map_err(|(error, _)| anyhow!("delivery of record {index} failed: {error}"))?;
    let previous = acked
        .entry(delivered.partition)
        .or_default()
        .insert(delivered.offset, index);
    ensure!(
        previous.is_none(),
        "offset {}/{} acknowledged for records {} and {index}",
        delivered.partition,
        delivered.offset,
        previous.unwrap_or_default()
    );
    Ok(())
}

/// Checksums of what `acked` says each partition holds, regenerated from the
/// indices.
pub fn expected_checksums(acked: &Acked, payloads: Payloads) -> BTreeMap<i32, PartitionChecksum> {
    acked
        .iter()
        .map(|(partition, offsets)| {
            let mut checksum = PartitionChecksum::default();
            for (offset, index) in offsets {
                checksum.add(
                    *offset,
                    Payloads::key(*index).as_bytes(),
                    &payloads.value(*index),
                );
            }
            (*partition, checksum)
        })
        .collect()
}

/// What [`consume_and_verify`] read from one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionRead {
    /// Checksum of every record read, in offset order.
    pub checksum: PartitionChecksum,
    /// Offset → record index of every record read.
    pub indices: BTreeMap<i64, u64>,
    /// Timestamp of every record read.
    pub timestamps: BTreeMap<i64, i64>,
}

/// Reads every partition of `topic` from offset 0 up to `ends[partition]` as a
/// member of a new consumer group (`auto.offset.reset=earliest`, nothing
/// committed), within `timeout`, and checks each record as it comes: offsets
/// contiguous from 0 (no gap, no repeat), a key naming a record index and the
/// value [`Payloads::value`] gives for it. Returns what was read per partition.
pub async fn consume_and_verify(
    bootstrap: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    payloads: Payloads,
    timeout: Duration,
) -> Result<BTreeMap<i32, PartitionRead>> {
    let group = format!("verify-{}", short_prefix());
    let consumer: StreamConsumer = crate::kafka::stream_consumer(
        bootstrap,
        &group,
        &[
            ("fetch.wait.max.ms", "100"),
            ("max.partition.fetch.bytes", "4194304"),
        ],
    )?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    let mut reads: BTreeMap<i32, PartitionRead> = ends
        .keys()
        .map(|partition| (*partition, PartitionRead::default()))
        .collect();
    let mut next: BTreeMap<i32, i64> = ends.keys().map(|partition| (*partition, 0)).collect();
    let done = |next: &BTreeMap<i32, i64>| {
        ends.iter()
            .all(|(partition, end)| next.get(partition) >= Some(end))
    };
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&next) {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => bail!("consumer error: {error}"),
            Err(_) => bail!(
                "timed out after {timeout:?} reading {topic}: next offsets {next:?}, ends {ends:?}"
            ),
        };
        let partition = message.partition();
        let offset = message.offset();
        let (Some(expected), Some(end)) = (next.get_mut(&partition), ends.get(&partition)) else {
            bail!("record from unexpected partition {partition}");
        };
        ensure!(
            offset == *expected,
            "partition {partition}: read offset {offset} where {expected} was next (a gap or a repeat)"
        );
        ensure!(
            offset < *end,
            "partition {partition}: read offset {offset} at or past the end {end}"
        );
        *expected += 1;
        let key = message.key().unwrap_or_default();
        let value = message.payload().unwrap_or_default();
        let index = Payloads::index_of_key(key).with_context(|| {
            format!(
                "partition {partition} offset {offset}: key {:?} names no record",
                String::from_utf8_lossy(key)
            )
        })?;
        ensure!(
            value == payloads.value(index).as_slice(),
            "partition {partition} offset {offset}: value of record {index} differs from what was produced ({} bytes read, {} expected)",
            value.len(),
            payloads.value_len(index)
        );
        let read = reads.entry(partition).or_default();
        read.checksum.add(offset, key, value);
        let _ = read.indices.insert(offset, index);
        if let Some(timestamp) = message.timestamp().to_millis() {
            let _ = read.timestamps.insert(offset, timestamp);
        }
    }
    Ok(reads)
}

/// High watermark of every partition of `topic`, checking that each low
/// watermark (the log start offset clients see) is 0.
pub fn ends_from_zero(bootstrap: &str, topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>> {
    let marks = crate::kafka::watermarks(bootstrap, topic, partitions)?;
    let mut ends = BTreeMap::new();
    for (partition, (low, high)) in marks.into_iter().enumerate() {
        ensure!(
            low == 0,
            "partition {partition}: log start offset {low}, expected 0 (tiered data must stay readable)"
        );
        let _ = ends.insert(partition as i32, high);
    }
    Ok(ends)
}

/// Per partition of `topic`: the `.log` objects' total size and the
/// `silt_tiering_remote_bytes` gauge. Equal totals mean no `.log` object
/// exists beyond the segments the broker counts as copied.
pub async fn remote_log_bytes(
    silt: &SiltProcess,
    store: &TierStore,
    topic: &str,
) -> Result<(BTreeMap<i32, u64>, BTreeMap<i32, f64>)> {
    let mut listed: BTreeMap<i32, u64> = BTreeMap::new();
    for object in store.segment_objects(topic).await? {
        if object.extension == "log" {
            *listed.entry(object.partition).or_default() += object.size;
        }
    }
    let gauge = partition_metric(&scrape_metrics(silt)?, "silt_tiering_remote_bytes", topic);
    Ok((listed, gauge))
}

/// Waits until the remote log manager has caught up on `topic`: every
/// partition reports an upload backlog of 0, keeps at most `max_local_segments`
/// local segment files, and its `.log` objects add up to its
/// `silt_tiering_remote_bytes` gauge.
pub async fn wait_tiered(
    silt: &SiltProcess,
    store: &TierStore,
    topic: &str,
    partitions: i32,
    max_local_segments: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_state: String;
    loop {
        let state = async {
            let backlog = upload_backlog(silt, topic)?;
            let mut local = BTreeMap::new();
            for partition in 0..partitions {
                let _ = local.insert(partition, local_segments(silt, topic, partition)?.len());
            }
            let (listed, gauge) = remote_log_bytes(silt, store, topic).await?;
            let caught_up = (0..partitions).all(|partition| {
                backlog.get(&partition) == Some(&0.0)
                    && local[&partition] <= max_local_segments
                    && listed.get(&partition).copied().unwrap_or(0) > 0
                    && gauge.get(&partition).copied() == listed.get(&partition).map(|bytes| *bytes as f64)
            });
            anyhow::Ok((
                caught_up,
                format!("backlog {backlog:?}, local segments {local:?}, .log object bytes {listed:?}, remote bytes gauge {gauge:?}"),
            ))
        }
        .await;
        match state {
            Ok((true, _)) => return Ok(()),
            Ok((false, description)) => last_state = description,
            Err(error) => last_state = format!("{error:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{topic} did not finish tiering within {timeout:?}: {last_state}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_parse() {
        let text = "export SILT_TEST_S3_ENDPOINT=http://127.0.0.1:19001\nexport SILT_TEST_S3_BUCKET=silt\n\
                    export SILT_TEST_S3_ACCESS_KEY_ID=silt\nexport SILT_TEST_S3_SECRET_ACCESS_KEY=siltsilt\n\
                    export SILT_TEST_S3_REGION=us-east-1\nexport SILT_TEST_S3_BACKEND=s3s-fs\n";
        let env = S3Env::from_exports(text).expect("parses");
        assert_eq!(env.endpoint, "http://127.0.0.1:19001");
        assert_eq!(env.secret_access_key, "siltsilt");
        let flags = silt_options_for(&env, "t00abcd");
        assert_eq!(
            flags[0],
            (
                "--object-store".to_string(),
                "s3://silt/t00abcd".to_string()
            )
        );
    }

    #[test]
    fn segment_object_names_parse() {
        let object = StoredObject {
            key: "topics/cat-AAAAAAAA-AAAAAAAAAA_AA/2/00000000000000000042-0c6f3c1e-8a5d-4e0f-9a57-5d7c0a1b2c3d.leader-epoch-checkpoint"
                .to_string(),
            size: 12,
        };
        let parsed = SegmentObject::parse(&object).expect("parses");
        assert_eq!(
            (parsed.topic.as_str(), parsed.partition, parsed.base_offset),
            ("cat", 2, 42)
        );
        assert_eq!(parsed.topic_id, "AAAAAAAA-AAAAAAAAAA_AA");
        assert_eq!(parsed.extension, "leader-epoch-checkpoint");
        let bad = StoredObject {
            key: "topics/cat-AAAAAAAAAAAAAAAAAAAAAA/2/42.log".to_string(),
            size: 1,
        };
        assert!(SegmentObject::parse(&bad).is_err());
    }

    #[test]
    fn metrics_parse_with_labels_in_any_order() {
        let text = "# TYPE g gauge\ng{topic=\"a\",partition=\"1\"} 3\ng{partition=\"0\",topic=\"a\"} 0\ng{topic=\"b\",partition=\"0\"} 9\ngx 1\n";
        let values = partition_metric(text, "g", "a");
        assert_eq!(values, BTreeMap::from([(0, 0.0), (1, 3.0)]));
    }

    #[test]
    fn payloads_are_deterministic_and_distinct() {
        let payloads = Payloads {
            min_value_bytes: 100,
            max_value_bytes: 4000,
        };
        assert_eq!(payloads.value(7), payloads.value(7));
        assert_ne!(payloads.value(7), payloads.value(8));
        assert_eq!(
            Payloads::index_of_key(Payloads::key(123).as_bytes()),
            Some(123)
        );
        for index in 0..1000 {
            let len = payloads.value(index).len();
            assert!((100..=4000).contains(&len), "{len}");
        }
    }
}
