//! Tables in the layout of Iceberg's file-system (Hadoop) catalog, so that a reader
//! given only a table's path finds its current snapshot:
//!
//! ```text
//! <prefix>/tables/<topic>/metadata/v<N>.metadata.json   one per commit, N = 1, 2, ...
//! <prefix>/tables/<topic>/metadata/version-hint.text    the current N
//! <prefix>/tables/<topic>/metadata/snap-*.avro, *-m*.avro  manifest lists, manifests
//! <prefix>/tables/<topic>/data/...                       Parquet data files
//! ```
//!
//! A commit writes `v<N+1>.metadata.json` only if it does not exist (`If-None-Match`
//! on S3, an exclusive link on a local file system), which is the optimistic
//! concurrency of the layout, and reads it back (some S3-compatible servers check the
//! condition apart from the write). The hint is rewritten after; a reader that finds a
//! stale hint goes on to the newest version that exists, as Iceberg's Hadoop tables do.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::table::Table;
use iceberg::transaction::Transaction;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Runtime, TableCommit, TableCreation,
    TableIdent,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::TableError;
use crate::storage::ObjectStorage;

/// The namespace every Silt table is in.
pub const NAMESPACE: &str = "silt";
const VERSION_HINT: &str = "version-hint.text";

/// The tables under one object store prefix (`<prefix>/tables/`).
#[derive(Debug, Clone)]
pub struct TableStore {
    store: Arc<dyn ObjectStore>,
    storage: ObjectStorage,
    /// `<prefix>/tables`.
    root: Path,
}

/// One loaded version of a table.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    /// N of `v<N>.metadata.json`.
    pub version: u64,
    /// The table at that version.
    pub table: Table,
}

impl LoadedTable {
    /// The manifest list of `snapshot`, a snapshot of this table.
    ///
    /// # Errors
    /// [`TableError::Iceberg`] when it cannot be read or parsed.
    pub async fn manifest_list(
        &self,
        snapshot: &iceberg::spec::Snapshot,
    ) -> Result<iceberg::spec::ManifestList, TableError> {
        let metadata = self.table.metadata();
        let bytes = self
            .table
            .file_io()
            .new_input(snapshot.manifest_list())?
            .read()
            .await?;
        Ok(iceberg::spec::ManifestList::parse_with_version(
            &bytes,
            metadata.format_version(),
        )?)
    }

    /// The locations the snapshots `snapshot_ids` name: their manifest lists, their
    /// manifests, and the data files of their manifests' entries, only the live ones
    /// with `live_only` (a `DELETED` entry names a file the snapshot no longer needs).
    ///
    /// # Errors
    /// [`TableError::Iceberg`] when a manifest list or manifest cannot be read.
    pub async fn named_by(
        &self,
        snapshot_ids: &std::collections::HashSet<i64>,
        live_only: bool,
    ) -> Result<std::collections::HashSet<String>, TableError> {
        let file_io = self.table.file_io();
        let mut named = std::collections::HashSet::new();
        let mut manifests = std::collections::HashSet::new();
        for snapshot in self.table.metadata().snapshots() {
            if !snapshot_ids.contains(&snapshot.snapshot_id()) {
                continue;
            }
            named.insert(snapshot.manifest_list().to_string());
            for manifest_file in self.manifest_list(snapshot).await?.entries() {
                if !manifests.insert(manifest_file.manifest_path.clone()) {
                    continue;
                }
                named.insert(manifest_file.manifest_path.clone());
                let manifest = manifest_file.load_manifest(file_io).await?;
                for entry in manifest.entries() {
                    if entry.is_alive() || !live_only {
                        named.insert(entry.data_file().file_path().to_string());
                    }
                }
            }
        }
        Ok(named)
    }

    /// The current snapshot's summary properties (empty for a table without one).
    pub fn summary(&self) -> HashMap<String, String> {
        self.table
            .metadata()
            .current_snapshot()
            .map(|snapshot| snapshot.summary().additional_properties.clone())
            .unwrap_or_default()
    }
}

/// The URI of the root of the object store `object.store` names, as table locations
/// start: `s3://bucket` for `s3://bucket/prefix` (the prefix is part of each object's
/// path), `file:///absolute/dir` for a local directory.
pub fn root_uri(object_store_url: &str) -> String {
    let url = object_store_url.trim();
    if let Some(location) = url.strip_prefix("s3://") {
        let bucket = location.split('/').next().unwrap_or(location);
        return format!("s3://{bucket}");
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| std::path::PathBuf::from(dir));
    format!(
        "file://{}",
        absolute.display().to_string().trim_end_matches('/')
    )
}

fn metadata_file(version: u64) -> String {
    format!("v{version}.metadata.json")
}

impl TableStore {
    /// The tables under `prefix` of `store`, whose root as a URI is `root_uri`
    /// (`s3://bucket` or `file:///dir`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &Path, root_uri: &str) -> TableStore {
        TableStore {
            storage: ObjectStorage::new(Arc::clone(&store), root_uri),
            store,
            root: prefix.clone().join("tables"),
        }
    }

    /// The object store holding the tables.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The storage the iceberg crate reads and writes through.
    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// `<prefix>/tables/<topic>`.
    pub fn table_path(&self, topic: &str) -> Path {
        self.root.clone().join(topic)
    }

    /// The table's location URI (what its metadata names).
    pub fn table_location(&self, topic: &str) -> String {
        self.storage.location(&self.table_path(topic))
    }

    fn metadata_path(&self, topic: &str, file: &str) -> Path {
        self.table_path(topic).join("metadata").join(file)
    }

    /// The topics that have a table, sorted.
    ///
    /// # Errors
    /// [`TableError::ObjectStore`] when the listing fails.
    pub async fn list(&self) -> Result<Vec<String>, TableError> {
        let listed = self.store.list_with_delimiter(Some(&self.root)).await?;
        let mut topics: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|path| path.filename().map(str::to_string))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// The newest version of `topic`'s table, or None if it has none.
    ///
    /// # Errors
    /// [`TableError::ObjectStore`] when the store fails, [`TableError::Iceberg`] for
    /// metadata that does not parse.
    pub async fn load(&self, topic: &str) -> Result<Option<LoadedTable>, TableError> {
        let Some(mut version) = self.hinted_version(topic).await? else {
            return Ok(None);
        };
        // A hint lags when a committer stopped between its commit and the hint.
        let mut bytes = None;
        while let Some(newer) = self
            .read(&self.metadata_path(topic, &metadata_file(version + 1)))
            .await?
        {
            version += 1;
            bytes = Some(newer);
        }
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => match self
                .read(&self.metadata_path(topic, &metadata_file(version)))
                .await?
            {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
        };
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|error| {
            TableError::Iceberg(
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("{topic}: v{version}.metadata.json does not parse"),
                )
                .with_source(error),
            )
        })?;
        Ok(Some(self.loaded(topic, version, metadata)?))
    }

    /// The version the hint names; without a hint, the newest `v<N>.metadata.json` listed.
    async fn hinted_version(&self, topic: &str) -> Result<Option<u64>, TableError> {
        if let Some(hint) = self.read(&self.metadata_path(topic, VERSION_HINT)).await?
            && let Ok(version) = std::str::from_utf8(&hint)
                .unwrap_or("")
                .trim()
                .parse::<u64>()
        {
            return Ok(Some(version));
        }
        let prefix = self.table_path(topic).join("metadata");
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(listed
            .iter()
            .filter_map(|meta| meta.location.filename())
            .filter_map(|name| name.strip_prefix('v')?.strip_suffix(".metadata.json"))
            .filter_map(|version| version.parse::<u64>().ok())
            .max())
    }

    async fn read(&self, path: &Path) -> Result<Option<bytes::Bytes>, TableError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn loaded(
        &self,
        topic: &str,
        version: u64,
        metadata: TableMetadata,
    ) -> Result<LoadedTable, TableError> {
        let location = self
            .storage
            .location(&self.metadata_path(topic, &metadata_file(version)));
        let table = Table::builder()
            .file_io(self.storage.file_io())
            .metadata_location(location)
            .metadata(metadata)
            .identifier(TableIdent::new(
                NamespaceIdent::new(NAMESPACE.to_string()),
                topic.to_string(),
            ))
            .runtime(Runtime::try_current()?)
            .build()?;
        Ok(LoadedTable { version, table })
    }

    /// Creates `topic`'s table as version 1 from `creation` (its location is set here),
    /// or loads the one another broker created first.
    ///
    /// # Errors
    /// [`TableError::Iceberg`] for an invalid creation, [`TableError::ObjectStore`].
    pub async fn create(
        &self,
        topic: &str,
        creation: TableCreation,
    ) -> Result<LoadedTable, TableError> {
        let creation = TableCreation {
            location: Some(self.table_location(topic)),
            ..creation
        };
        let metadata = TableMetadataBuilder::from_table_creation(creation)?
            .build()?
            .metadata;
        match self.write_version(topic, 1, &metadata).await? {
            true => self.loaded(topic, 1, metadata),
            false => self.load(topic).await?.ok_or_else(|| {
                TableError::Conflict(format!("{topic}: v1 exists but does not load"))
            }),
        }
    }

    /// Writes `v<version>.metadata.json` if it does not exist and then the hint;
    /// false when another writer's version is there.
    async fn write_version(
        &self,
        topic: &str,
        version: u64,
        metadata: &TableMetadata,
    ) -> Result<bool, TableError> {
        let path = self.metadata_path(topic, &metadata_file(version));
        let bytes = serde_json::to_vec(metadata).map_err(|error| {
            TableError::Iceberg(
                Error::new(ErrorKind::Unexpected, "table metadata does not serialize")
                    .with_source(error),
            )
        })?;
        let written = self
            .store
            .put_opts(
                &path,
                PutPayload::from(bytes.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match written {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        if self.read(&path).await?.is_none_or(|stored| stored != bytes) {
            return Ok(false);
        }
        self.store
            .put(
                &self.metadata_path(topic, VERSION_HINT),
                PutPayload::from(version.to_string()),
            )
            .await?;
        Ok(true)
    }

    /// Applies `updates` to `base` as version `base.version + 1` if `requirements` hold
    /// on it.
    ///
    /// # Errors
    /// [`TableError::Conflict`] when a requirement fails or another commit wrote the
    /// version first, [`TableError::Iceberg`] for updates that do not apply,
    /// [`TableError::ObjectStore`] when the write fails (it may have landed).
    pub async fn commit_updates(
        &self,
        base: &LoadedTable,
        requirements: Vec<iceberg::TableRequirement>,
        updates: Vec<iceberg::TableUpdate>,
    ) -> Result<LoadedTable, TableError> {
        let topic = base.table.identifier().name().to_string();
        let metadata = base.table.metadata();
        for requirement in requirements {
            requirement
                .check(Some(metadata))
                .map_err(|error| TableError::Conflict(error.to_string()))?;
        }
        let mut builder = metadata
            .clone()
            .into_builder(base.table.metadata_location().map(str::to_string));
        for update in updates {
            builder = update.apply(builder)?;
        }
        let metadata = builder.build()?.metadata;
        let version = base.version + 1;
        if !self.write_version(&topic, version, &metadata).await? {
            return Err(TableError::Conflict(format!(
                "{topic}: v{version}.metadata.json was written by another commit"
            )));
        }
        self.loaded(&topic, version, metadata)
    }

    /// Deletes `topic`'s metadata files of versions below `version`; returns how many.
    ///
    /// # Errors
    /// [`TableError::ObjectStore`] when listing or deleting fails.
    pub async fn delete_metadata_before(
        &self,
        topic: &str,
        version: u64,
    ) -> Result<usize, TableError> {
        if version <= 1 {
            return Ok(0);
        }
        let prefix = self.table_path(topic).join("metadata");
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut deleted = 0;
        for meta in listed {
            let old = meta
                .location
                .filename()
                .and_then(|name| name.strip_prefix('v')?.strip_suffix(".metadata.json"))
                .and_then(|number| number.parse::<u64>().ok())
                .is_some_and(|number| number < version);
            if old {
                match self.store.delete(&meta.location).await {
                    Ok(()) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(deleted)
    }

    /// Commits `transaction`, built on `base`, as version `base.version + 1`.
    ///
    /// # Errors
    /// [`TableError::Conflict`] when another commit came first (nothing of this one is
    /// in the table; the caller reloads and starts over), [`TableError::Iceberg`] and
    /// [`TableError::ObjectStore`] otherwise (the commit may or may not have landed).
    pub async fn commit(
        &self,
        base: &LoadedTable,
        transaction: Transaction,
    ) -> Result<LoadedTable, TableError> {
        let catalog = PinnedCatalog {
            tables: self.clone(),
            base: base.clone(),
            committed: tokio::sync::Mutex::new(None),
        };
        match transaction.commit(&catalog).await {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::CatalogCommitConflicts => {
                return Err(TableError::Conflict(error.to_string()));
            }
            Err(error) => return Err(error.into()),
        }
        catalog
            .committed
            .into_inner()
            .ok_or_else(|| TableError::Conflict("the commit wrote no version".to_string()))
    }
}

/// A catalog for one commit that always answers the base the caller built its commit
/// on: the iceberg crate reloads the table before a commit and would re-apply the
/// commit on a newer version, but a Silt commit's summary (the offsets it covers) is
/// only right on its base, so a newer version is a conflict, never a rebase.
#[derive(Debug)]
struct PinnedCatalog {
    tables: TableStore,
    base: LoadedTable,
    committed: tokio::sync::Mutex<Option<LoadedTable>>,
}

fn unsupported() -> Error {
    Error::new(
        ErrorKind::FeatureUnsupported,
        "a Silt table commit only loads and updates its table",
    )
}

fn conflict(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::CatalogCommitConflicts, message.into())
}

#[async_trait]
impl Catalog for PinnedCatalog {
    async fn list_namespaces(
        &self,
        _parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        Err(unsupported())
    }

    async fn create_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        Err(unsupported())
    }

    async fn get_namespace(&self, _namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        Err(unsupported())
    }

    async fn namespace_exists(&self, _namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        Err(unsupported())
    }

    async fn update_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        Err(unsupported())
    }

    async fn drop_namespace(&self, _namespace: &NamespaceIdent) -> iceberg::Result<()> {
        Err(unsupported())
    }

    async fn list_tables(&self, _namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        Err(unsupported())
    }

    async fn create_table(
        &self,
        _namespace: &NamespaceIdent,
        _creation: TableCreation,
    ) -> iceberg::Result<Table> {
        Err(unsupported())
    }

    async fn load_table(&self, _table: &TableIdent) -> iceberg::Result<Table> {
        Ok(self.base.table.clone())
    }

    async fn drop_table(&self, _table: &TableIdent) -> iceberg::Result<()> {
        Err(unsupported())
    }

    async fn purge_table(&self, _table: &TableIdent) -> iceberg::Result<()> {
        Err(unsupported())
    }

    async fn table_exists(&self, _table: &TableIdent) -> iceberg::Result<bool> {
        Ok(true)
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> iceberg::Result<()> {
        Err(unsupported())
    }

    async fn register_table(
        &self,
        _table: &TableIdent,
        _metadata_location: String,
    ) -> iceberg::Result<Table> {
        Err(unsupported())
    }

    async fn update_table(&self, mut commit: TableCommit) -> iceberg::Result<Table> {
        let committed = self
            .tables
            .commit_updates(
                &self.base,
                commit.take_requirements(),
                commit.take_updates(),
            )
            .await
            .map_err(|error| match error {
                TableError::Conflict(reason) => conflict(reason),
                TableError::Iceberg(error) => error,
                other => Error::new(ErrorKind::Unexpected, other.to_string()),
            })?;
        let table = committed.table.clone();
        *self.committed.lock().await = Some(committed);
        Ok(table)
    }
}
