//! `silt restore` and `silt restore-points list|create`.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use silt_gateway::config::{BrokerConfig, ServeArgs};
use silt_gateway::restore::prepare_restore;
use silt_tiering::open_object_store;
use silt_tiering::restore_point::{
    RestorePointSelector, list_restore_points, read_restore_point, select_restore_point,
};

/// Which restore point `silt restore` uses, from `--restore-point` and `--before`.
pub(crate) fn selector(
    restore_point: &str,
    before: Option<&str>,
) -> anyhow::Result<RestorePointSelector> {
    if let Some(before) = before {
        return Ok(RestorePointSelector::Before(parse_time_ms(before)?));
    }
    Ok(match restore_point {
        "latest" => RestorePointSelector::Latest,
        id => RestorePointSelector::Id(id.to_string()),
    })
}

/// Milliseconds since the Unix epoch from an RFC 3339 time (`2026-12-03T09:30:00Z`) or
/// a number of milliseconds.
fn parse_time_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!(
            "--before {text}: give an RFC 3339 time (2026-12-03T09:30:00Z) or ms since the epoch"
        )
    })?;
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

fn rfc3339(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// `silt restore`: prepares the first log dir for `silt serve`.
pub(crate) async fn restore(
    settings: &ServeArgs,
    selector: RestorePointSelector,
    force: bool,
) -> anyhow::Result<()> {
    let config = BrokerConfig::load(settings)?;
    let log_dir = &config.log_dirs[0];
    let prepared = prepare_restore(&config.object_store, log_dir, &selector, force).await?;
    for skipped in &prepared.skipped {
        eprintln!("warning: skipped {skipped}");
    }
    let restore_point = &prepared.restore_point;
    out!(
        "restore point {} of cluster {} ({}): {} topics, {} partitions, {} bytes, {} groups",
        restore_point.id,
        restore_point.cluster_id,
        rfc3339(restore_point.created_ms),
        restore_point
            .topics
            .iter()
            .filter(|topic| !topic.internal)
            .count(),
        restore_point.partition_count(),
        restore_point.size_bytes(),
        restore_point.groups.len()
    );
    out!(
        "{} is ready: start `silt serve` with the same --log-dirs and --object-store to \
         bring the cluster back",
        log_dir.display()
    );
    Ok(())
}

/// `silt restore-points list`: every restore point under the object store prefix.
pub(crate) async fn list(settings: &ServeArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(settings)?;
    let (store, prefix) = open_object_store(&config.object_store).await?;
    let objects = list_restore_points(store.as_ref(), &prefix).await?;
    out!(
        "{:<24} {:<24} {:<16} {:>10} {:>14} {:>7}",
        "ID",
        "CREATED",
        "CLUSTER",
        "PARTITIONS",
        "BYTES",
        "GROUPS"
    );
    for object in objects.iter().rev() {
        match read_restore_point(store.as_ref(), object).await {
            Ok(point) => out!(
                "{:<24} {:<24} {:<16} {:>10} {:>14} {:>7}",
                point.id,
                rfc3339(point.created_ms),
                point.cluster_id,
                point.partition_count(),
                point.size_bytes(),
                point.groups.len()
            ),
            Err(error) => out!(
                "{:<24} {:<24} unusable: {error}",
                object.id,
                rfc3339(object.created_ms)
            ),
        }
    }
    if objects.is_empty() {
        eprintln!("no restore points under {}", config.object_store.url);
    }
    Ok(())
}

/// `silt restore-points show`: one restore point as pretty JSON.
pub(crate) async fn show(
    settings: &ServeArgs,
    selector: RestorePointSelector,
) -> anyhow::Result<()> {
    let config = BrokerConfig::load(settings)?;
    let (store, prefix) = open_object_store(&config.object_store).await?;
    let (restore_point, skipped) = select_restore_point(store.as_ref(), &prefix, &selector).await?;
    for skipped in &skipped {
        eprintln!("warning: skipped {skipped}");
    }
    out!("{}", serde_json::to_string_pretty(&restore_point)?);
    Ok(())
}

/// `silt restore-points create`: asks a node (its admin listener) to write one now.
pub(crate) async fn create(admin: &str) -> anyhow::Result<()> {
    let url = format!("http://{admin}/restore-points");
    let response = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("asking {url}: is a node's admin listener there?"))?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("no restore point: {body} (HTTP {status})");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("unexpected answer {body}"))?;
    out!(
        "restore point {} ({}): {} partitions, {} bytes, {} groups",
        summary["id"].as_str().unwrap_or("?"),
        rfc3339(summary["created_ms"].as_i64().unwrap_or(0)),
        summary["partitions"],
        summary["bytes"],
        summary["groups"]
    );
    Ok(())
}
