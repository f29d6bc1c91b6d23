//! Whether a server serves a store: a running server marks it, and the commands that would
//! change the store behind its back (`causette directory import`) look for the mark.
//!
//! SQLite: an exclusive lock on a file beside the database (`<file>.serving`), so a second
//! server on the same file is refused too. PostgreSQL: a shared advisory lock, held by a
//! connection of its own, which any number of servers may hold (several nodes, later) and
//! which an exclusive attempt finds.

use std::path::PathBuf;

use sqlx::{AnyConnection, Connection};

use super::{Backend, sqlite_path, unreachable_error};
use crate::storage::Error;

/// The advisory lock's key: "causette" in ASCII.
const ADVISORY_KEY: i64 = 0x6361_7573_6574_7465;

/// Held while serving; dropping it (or the process ending) removes the mark.
pub enum ServingMark {
    File(std::fs::File),
    Postgres(AnyConnection),
    None,
}

impl ServingMark {
    /// Removes the mark now rather than when the last reference goes.
    pub async fn release(self) {
        if let ServingMark::Postgres(connection) = self {
            let _ = connection.close().await;
        }
    }
}

fn lock_path(url: &str) -> Option<PathBuf> {
    sqlite_path(url).map(|path| PathBuf::from(format!("{path}.serving")))
}

/// Marks the store as served; refused when another server serves this SQLite file.
pub async fn mark_serving(url: &str) -> Result<ServingMark, Error> {
    if Backend::of(url)? == Backend::Sqlite {
        let Some(path) = lock_path(url) else {
            return Ok(ServingMark::None);
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Serving(format!("cannot open {}: {e}", path.display())))?;
        return match file.try_lock() {
            Ok(()) => Ok(ServingMark::File(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Serving(format!(
                "another Causette server serves this store ({} is locked)",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Serving(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        };
    }
    sqlx::any::install_default_drivers();
    let mut connection = AnyConnection::connect(url)
        .await
        .map_err(|err| unreachable_error(url, err))?;
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(ADVISORY_KEY)
        .execute(&mut connection)
        .await?;
    Ok(ServingMark::Postgres(connection))
}

/// Whether a server serves the store now.
pub async fn is_served(url: &str) -> Result<bool, Error> {
    if Backend::of(url)? == Backend::Sqlite {
        let Some(path) = lock_path(url).filter(|p| p.exists()) else {
            return Ok(false);
        };
        let Ok(file) = std::fs::File::open(&path) else {
            return Ok(false);
        };
        return Ok(matches!(
            file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
    }
    sqlx::any::install_default_drivers();
    let mut connection = AnyConnection::connect(url)
        .await
        .map_err(|err| unreachable_error(url, err))?;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_KEY)
        .fetch_one(&mut connection)
        .await?;
    let _ = connection.close().await;
    Ok(!free)
}
