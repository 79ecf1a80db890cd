//! Iceberg file IO over the object store the brokers already use: the `iceberg` crate
//! reads and writes manifests, manifest lists and data files through its `Storage`
//! trait; this one maps table locations (`s3://bucket/...` or `file:///dir/...`) to
//! `object_store` paths.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

/// Where the object store's root is as a URI, and the store: a location is
/// `{root_uri}/{object path}`.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct ObjectStorage {
    /// `s3://bucket` or `file:///absolute/dir` (no trailing slash).
    root_uri: String,
    /// Never serialized: the iceberg crate only needs the trait to be.
    #[serde(skip)]
    store: Option<Arc<dyn ObjectStore>>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ObjectStorage")
            .field("root_uri", &self.root_uri)
            .finish()
    }
}

impl ObjectStorage {
    /// Storage over `store`, whose root is `root_uri` (`s3://bucket`, `file:///dir`).
    pub fn new(store: Arc<dyn ObjectStore>, root_uri: impl Into<String>) -> ObjectStorage {
        ObjectStorage {
            root_uri: root_uri.into().trim_end_matches('/').to_string(),
            store: Some(store),
        }
    }

    /// A [`FileIO`] over this storage.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(Arc::new(ObjectStorageFactory {
            storage: self.clone(),
        }))
        .build()
    }

    /// The location URI of object `path`.
    pub fn location(&self, path: &Path) -> String {
        format!("{}/{}", self.root_uri, path)
    }

    /// The object path of `location`.
    ///
    /// # Errors
    /// `DataInvalid` when `location` is not under this storage's root.
    pub fn path(&self, location: &str) -> iceberg::Result<Path> {
        let relative = location
            .strip_prefix(&self.root_uri)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("{location} is not under the object store {}", self.root_uri),
                )
            })?;
        Path::parse(relative).map_err(|error| {
            Error::new(ErrorKind::DataInvalid, format!("{location}: {error}")).with_source(error)
        })
    }

    fn store(&self) -> iceberg::Result<&Arc<dyn ObjectStore>> {
        self.store.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "object storage deserialized without its store",
            )
        })
    }
}

/// An iceberg error for a failed object store call on `location`.
fn store_error(location: &str, error: object_store::Error) -> Error {
    let kind = match error {
        object_store::Error::NotFound { .. } => ErrorKind::DataInvalid,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, format!("object store: {location}: {error}")).with_source(error)
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.store()?.head(&self.path(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(store_error(path, error)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let meta = self
            .store()?
            .head(&self.path(path)?)
            .await
            .map_err(|error| store_error(path, error))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let result = self
            .store()?
            .get(&self.path(path)?)
            .await
            .map_err(|error| store_error(path, error))?;
        result
            .bytes()
            .await
            .map_err(|error| store_error(path, error))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Ok(Box::new(ObjectRead {
            store: Arc::clone(self.store()?),
            path: self.path(path)?,
            location: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.store()?
            .put(&self.path(path)?, PutPayload::from(bs))
            .await
            .map_err(|error| store_error(path, error))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(Box::new(ObjectWrite {
            store: Arc::clone(self.store()?),
            path: self.path(path)?,
            location: path.to_string(),
            parts: Vec::new(),
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.store()?.delete(&self.path(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(store_error(path, error)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let store = self.store()?;
        let prefix = self.path(path)?;
        let mut listed = store.list(Some(&prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|error| store_error(path, error))?;
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(store_error(path, error)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Builds [`ObjectStorage`] for a [`FileIO`]; the storage is fixed, the config unused.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObjectStorageFactory {
    storage: ObjectStorage,
}

#[typetag::serde]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

/// Ranged reads of one object (Parquet footers and column chunks).
struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(|error| store_error(&self.location, error))
    }
}

/// A whole-object write: parts are kept in memory and put in one request at close, so a
/// file is never visible half written (the exporter bounds a file's size).
struct ObjectWrite {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
    parts: Vec<Bytes>,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.parts.push(bs);
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let payload: PutPayload = std::mem::take(&mut self.parts).into_iter().collect();
        self.store
            .put(&self.path, payload)
            .await
            .map_err(|error| store_error(&self.location, error))?;
        Ok(())
    }
}
