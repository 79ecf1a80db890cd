//! Opening the object store remote segments live in: the local filesystem (object_store's
//! `LocalFileSystem`, the embedded default) or S3 and S3-compatible servers
//! (`AmazonS3`), with object_store's own retry and timeout handling.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, CredentialProvider, ObjectStore, RetryConfig};
use tokio::sync::Mutex;
use tracing::info;

use crate::TieringError;

/// Credentials this close to expiry are refreshed before use.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Where remote segments are stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStoreConfig {
    /// `file:///abs/dir` or a plain path for the local filesystem (the directory is
    /// created), or `s3://bucket[/prefix]` for S3 and S3-compatible stores.
    pub url: String,
    /// S3 endpoint for S3-compatible servers (MinIO, s3s-fs, ...), e.g.
    /// `http://127.0.0.1:9000`; requests then use path-style addressing. `None` = AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region; `None` = from aws-config (`AWS_REGION`, profile), else `us-east-1`.
    pub s3_region: Option<String>,
    /// Static access key id; with `s3_secret_access_key`. `None` = aws-config's default
    /// chain (environment, profile, web identity, ECS/EC2 instance metadata).
    pub s3_access_key_id: Option<String>,
    /// Static secret access key; with `s3_access_key_id`.
    pub s3_secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (implied by an `http://` `s3_endpoint`).
    pub s3_allow_http: bool,
}

/// Opens the store described by `config`; returns it with the path prefix every object key
/// starts with (empty for the local filesystem, whose root is the directory itself).
///
/// S3 requests are retried by object_store (5xx including 503 SlowDown, timeouts,
/// connection errors) with exponential backoff from 100 ms to 15 s, up to 10 retries
/// within 3 minutes; each request times out after 60 s.
///
/// # Errors
/// [`TieringError::InvalidConfig`] for an unsupported URL or half-given static
/// credentials, [`TieringError::Io`] if the local directory cannot be created,
/// [`TieringError::ObjectStore`] if the S3 client cannot be built.
pub async fn open_object_store(
    config: &ObjectStoreConfig,
) -> Result<(Arc<dyn ObjectStore>, Path), TieringError> {
    let url = config.url.trim();
    if let Some(location) = url.strip_prefix("s3://") {
        return open_s3(config, location).await;
    }
    if url.contains("://") && !url.starts_with("file://") {
        return Err(TieringError::InvalidConfig(format!(
            "unsupported object store url {url:?}: expected file://, s3:// or a path"
        )));
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if dir.is_empty() {
        return Err(TieringError::InvalidConfig(
            "object store url is empty".to_string(),
        ));
    }
    tokio::fs::create_dir_all(dir).await?;
    let local = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
    info!(dir, "object store: local filesystem");
    Ok((Arc::new(local), Path::default()))
}

async fn open_s3(
    config: &ObjectStoreConfig,
    location: &str,
) -> Result<(Arc<dyn ObjectStore>, Path), TieringError> {
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(TieringError::InvalidConfig(format!(
            "s3 url {:?} has no bucket",
            config.url
        )));
    }
    let prefix = Path::parse(prefix.trim_matches('/')).map_err(|error| {
        TieringError::InvalidConfig(format!("s3 prefix of {:?}: {error}", config.url))
    })?;
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(3 * 60),
    };
    let client_options = ClientOptions::new()
        .with_timeout(Duration::from_secs(60))
        .with_connect_timeout(Duration::from_secs(5));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_client_options(client_options);
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(config.s3_allow_http || endpoint.starts_with("http://"));
    } else if config.s3_allow_http {
        builder = builder.with_allow_http(true);
    }
    let static_keys = match (&config.s3_access_key_id, &config.s3_secret_access_key) {
        (Some(key_id), Some(secret)) => Some((key_id, secret)),
        (None, None) => None,
        _ => {
            return Err(TieringError::InvalidConfig(
                "give both the s3 access key id and the secret access key, or neither".to_string(),
            ));
        }
    };
    let region = if let Some((key_id, secret)) = static_keys {
        builder = builder
            .with_access_key_id(key_id)
            .with_secret_access_key(secret);
        match &config.s3_region {
            Some(region) => region.clone(),
            None => default_region().await,
        }
    } else {
        let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        if let Some(provider) = sdk_config.credentials_provider() {
            builder = builder.with_credentials(Arc::new(AwsSdkCredentials::new(provider)));
        }
        match &config.s3_region {
            Some(region) => region.clone(),
            None => region_or_default(&sdk_config),
        }
    };
    let store = builder.with_region(&region).build()?;
    info!(bucket, prefix = %prefix, region, endpoint = ?config.s3_endpoint, "object store: s3");
    Ok((Arc::new(store), prefix))
}

/// The region from aws-config's chain (environment, profile), else `us-east-1`.
async fn default_region() -> String {
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    region_or_default(&sdk_config)
}

fn region_or_default(sdk_config: &aws_config::SdkConfig) -> String {
    sdk_config
        .region()
        .map_or_else(|| "us-east-1".to_string(), ToString::to_string)
}

/// aws-config's credentials chain as an object_store [`CredentialProvider`], caching each
/// credential until shortly before it expires.
#[derive(Debug)]
struct AwsSdkCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl AwsSdkCredentials {
    fn new(provider: SharedCredentialsProvider) -> Self {
        AwsSdkCredentials {
            provider,
            cached: Mutex::new(None),
        }
    }
}

#[async_trait]
impl CredentialProvider for AwsSdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            let fresh =
                expiry.is_none_or(|expiry| SystemTime::now() + CREDENTIAL_REFRESH_MARGIN < expiry);
            if fresh {
                return Ok(Arc::clone(credential));
            }
        }
        let credentials = self.provider.provide_credentials().await.map_err(|error| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(error),
            }
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: credentials.access_key_id().to_string(),
            secret_key: credentials.secret_access_key().to_string(),
            token: credentials.session_token().map(ToString::to_string),
        });
        *cached = Some((Arc::clone(&credential), credentials.expiry()));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unsupported_urls_and_half_credentials_are_refused() {
        let gcs = ObjectStoreConfig {
            url: "gs://bucket".to_string(),
            ..ObjectStoreConfig::default()
        };
        assert!(matches!(
            open_object_store(&gcs).await,
            Err(TieringError::InvalidConfig(_))
        ));
        let half = ObjectStoreConfig {
            url: "s3://bucket/prefix".to_string(),
            s3_access_key_id: Some("key".to_string()),
            ..ObjectStoreConfig::default()
        };
        assert!(matches!(
            open_object_store(&half).await,
            Err(TieringError::InvalidConfig(_))
        ));
    }

    #[tokio::test]
    async fn s3_urls_split_into_bucket_and_prefix() {
        let config = ObjectStoreConfig {
            url: "s3://silt-bucket/cluster/a/".to_string(),
            s3_endpoint: Some("http://127.0.0.1:1".to_string()),
            s3_region: Some("us-east-1".to_string()),
            s3_access_key_id: Some("key".to_string()),
            s3_secret_access_key: Some("secret".to_string()),
            s3_allow_http: false,
        };
        let (_store, prefix) = open_object_store(&config).await.expect("s3 store");
        assert_eq!(prefix.as_ref(), "cluster/a");
    }

    #[tokio::test]
    async fn local_urls_create_the_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("remote");
        let config = ObjectStoreConfig {
            url: format!("file://{}", dir.display()),
            ..ObjectStoreConfig::default()
        };
        let (_store, prefix) = open_object_store(&config).await.expect("local store");
        assert!(dir.is_dir());
        assert_eq!(prefix, Path::default());
    }
}
