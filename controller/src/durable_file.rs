//! Small blocking file helpers shared by the log store and the snapshot store. Call them from
//! `tokio::task::spawn_blocking`, never directly on the runtime.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically: writes a temporary sibling, then renames it over
/// `path`. With `durable`, the data and the rename are fsynced before returning.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
    }
    std::fs::rename(&temporary, path)?;
    if durable {
        sync_parent_dir(path)?;
    }
    Ok(())
}

/// Fsyncs the directory holding `path`, making a create or rename in it durable.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Reads `path`, or `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => Err(io::Error::other(format!(
            "blocking file task failed: {join_error}"
        ))),
    }
}
