//! Admin HTTP: `/healthz` for liveness, `/metrics` in Prometheus text format, and
//! `POST /restore-points`, which writes a restore point now (`silt restore-points
//! create`) and answers with its summary as JSON.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
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
        .route("/restore-points", post(create_restore_point))
        .route("/tables/lag", get(table_export_lag))
        .route("/tables/{topic}", get(describe_table))
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

/// Writes a restore point: 200 with `{id, created_ms, partitions, bytes, groups}`; 503
/// when tiered storage is off (no object store), 500 with the reason when it failed.
async fn create_restore_point(
    State(context): State<Arc<BrokerContext>>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let Some(writer) = &context.restore_points else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "restore points need tiered storage (remote.log.storage.system.enable=true)"
                .to_string(),
        ));
    };
    let restore_point = writer
        .create()
        .await
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    Ok(Json(serde_json::json!({
        "id": restore_point.id,
        "created_ms": restore_point.created_ms,
        "partitions": restore_point.partition_count(),
        "bytes": restore_point.size_bytes(),
        "groups": restore_point.groups.len(),
    })))
}

/// The Iceberg table export lag of every partition this broker leads and exports:
/// a JSON array of `{topic, partition, exported_offset, high_watermark, lag_offsets,
/// lag_ms}`.
async fn table_export_lag(
    State(context): State<Arc<BrokerContext>>,
) -> Json<Vec<silt_tables::ExportLag>> {
    Json(
        context
            .table_exporter
            .as_ref()
            .map(|exporter| exporter.lags())
            .unwrap_or_default(),
    )
}

/// A table as its metadata in the object store describes it
/// ([`silt_tables::TableDescription`] as JSON); 404 when the topic has no table, 503 on
/// a read-only replica, 500 with the reason when the read failed.
async fn describe_table(
    State(context): State<Arc<BrokerContext>>,
    axum::extract::Path(topic): axum::extract::Path<String>,
) -> Result<Json<silt_tables::TableDescription>, (StatusCode, String)> {
    let Some(exporter) = &context.table_exporter else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "a read-only replica exports no tables".to_string(),
        ));
    };
    match exporter.tables().load(&topic).await {
        Ok(Some(loaded)) => Ok(Json(silt_tables::describe(&loaded))),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            format!("topic {topic} has no table yet"),
        )),
        Err(error) => Err((StatusCode::INTERNAL_SERVER_ERROR, error.to_string())),
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
