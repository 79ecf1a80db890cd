//! Admin HTTP: `/healthz` for liveness and `/metrics` in Prometheus text format.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::context::BrokerContext;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// Installs the metrics recorder; call before any metric is recorded.
pub fn install_metrics() {
    let _ = prometheus();
}

/// Serves the admin endpoints until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    context: Arc<BrokerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(context);
    let stopped = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(%error, "admin http server failed");
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn render_metrics(State(context): State<Arc<BrokerContext>>) -> Result<String, StatusCode> {
    let handle = prometheus().ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    for partition in context.replica_manager.all_partitions() {
        let labels = [
            ("topic", partition.topic.to_string()),
            ("partition", partition.partition.to_string()),
        ];
        metrics::gauge!("silt_partition_log_end_offset", &labels)
            .set(partition.log_end_offset() as f64);
        metrics::gauge!("silt_partition_high_watermark", &labels)
            .set(partition.high_watermark() as f64);
        metrics::gauge!("silt_partition_log_start_offset", &labels)
            .set(partition.log_start_offset() as f64);
    }
    metrics::gauge!("silt_fetch_sessions").set(context.fetch_sessions.len() as f64);
    metrics::gauge!("silt_topics").set(context.controller.metadata().topics.len() as f64);
    Ok(handle.render())
}
