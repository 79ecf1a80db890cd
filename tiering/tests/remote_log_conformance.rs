//! The `RemoteLog` conformance suite against every object store Silt supports: the local
//! filesystem always, S3 (or any S3-compatible store) when `SILT_TEST_S3_ENDPOINT`,
//! `SILT_TEST_S3_BUCKET`, `SILT_TEST_S3_ACCESS_KEY_ID` and
//! `SILT_TEST_S3_SECRET_ACCESS_KEY` are set.

mod remote_log_support;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::remote_log_support::remote_log_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filesystem_passes_the_remote_log_suite() {
    let root = tempfile::tempdir().expect("store root");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(root.path()).expect("local store"));
    remote_log_conformance(store, Path::from("silt")).await;
}

/// The S3 settings from the environment, or `None` when any is missing.
fn s3_from_env() -> Option<Arc<dyn ObjectStore>> {
    let setting = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let endpoint = setting("SILT_TEST_S3_ENDPOINT")?;
    let bucket = setting("SILT_TEST_S3_BUCKET")?;
    let access_key_id = setting("SILT_TEST_S3_ACCESS_KEY_ID")?;
    let secret_access_key = setting("SILT_TEST_S3_SECRET_ACCESS_KEY")?;
    let region = setting("SILT_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned());
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_access_key_id(access_key_id)
        .with_secret_access_key(secret_access_key)
        .with_region(region)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(true)
        .build()
        .expect("s3 store from SILT_TEST_S3_* settings");
    Some(Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_passes_the_remote_log_suite() {
    let Some(store) = s3_from_env() else {
        eprintln!(
            "skipped: set SILT_TEST_S3_ENDPOINT, SILT_TEST_S3_BUCKET, SILT_TEST_S3_ACCESS_KEY_ID and SILT_TEST_S3_SECRET_ACCESS_KEY to run against S3"
        );
        return;
    };
    // A fresh prefix per run, so runs never see each other's objects.
    let prefix = Path::from(format!(
        "r{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    remote_log_conformance(store, prefix).await;
}
