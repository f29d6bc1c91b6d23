//! Backups of the embedded SQLite store: `VACUUM INTO` writes a consistent copy while the
//! server runs (it reads one snapshot; writers go on), and a restore puts a checked copy in
//! place of a database that does not exist yet. PostgreSQL has pg_dump and pg_restore.

use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use super::{Backend, SqlStore, sqlite_path};
use crate::storage::Error;

/// What a backup or a restore holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub users: i64,
    pub offline_messages: i64,
    pub rooms: i64,
    pub bytes: u64,
}

fn refused(text: impl Into<String>) -> Error {
    Error::Backup(text.into())
}

/// The file of an SQLite URL (`sqlite://path?mode=rwc`), or why there is none.
fn sqlite_file(url: &str, what: &str) -> Result<PathBuf, Error> {
    if !matches!(Backend::of(url), Ok(Backend::Sqlite)) {
        return Err(refused(format!(
            "the store is PostgreSQL: {what} it with pg_dump and pg_restore (README, \"Backups\")"
        )));
    }
    let path = sqlite_path(url)
        .ok_or_else(|| refused("the store is in memory: there is nothing to back up"))?;
    Ok(PathBuf::from(path))
}

async fn open_read_only(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
}

/// What a database file holds, after checking that it is a sound Causette store.
async fn summary(path: &Path) -> Result<BackupSummary, Error> {
    let not_ours = |err: &dyn std::fmt::Display| {
        refused(format!(
            "{} is not a Causette backup: {err}",
            path.display()
        ))
    };
    let mut conn = open_read_only(path).await.map_err(|e| not_ours(&e))?;
    let checked: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| not_ours(&e))?;
    if checked != "ok" {
        return Err(not_ours(&format!("damaged ({checked})")));
    }
    let mut count = async |query: &'static str| -> Result<i64, Error> {
        sqlx::query(query)
            .fetch_one(&mut conn)
            .await
            .and_then(|row| row.try_get::<i64, _>(0))
            .map_err(|e| not_ours(&e))
    };
    count("SELECT COUNT(*) FROM _sqlx_migrations").await?;
    let users = count("SELECT COUNT(*) FROM users").await?;
    let offline_messages = count("SELECT COUNT(*) FROM offline_messages").await?;
    let rooms = count("SELECT COUNT(*) FROM rooms").await?;
    let _ = conn.close().await;
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    Ok(BackupSummary {
        users,
        offline_messages,
        rooms,
        bytes,
    })
}

/// Writes a consistent copy of the store at `url` into `target`, a new file, while the server
/// may be running.
pub async fn backup(url: &str, target: &Path) -> Result<BackupSummary, Error> {
    let source = sqlite_file(url, "back up")?;
    if !source.exists() {
        return Err(refused(format!(
            "there is no database at {}",
            source.display()
        )));
    }
    if target.exists() {
        return Err(refused(format!(
            "{} exists: a backup never overwrites a file",
            target.display()
        )));
    }
    let target_text = target
        .to_str()
        .ok_or_else(|| refused("the backup's path must be UTF-8"))?;
    let mut conn = open_read_only(&source).await?;
    let written = sqlx::query("VACUUM INTO $1")
        .bind(target_text)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    if let Err(err) = written {
        // A partial file is no backup.
        let _ = std::fs::remove_file(target);
        return Err(refused(format!("cannot write {}: {err}", target.display())));
    }
    summary(target).await
}

/// Puts the backup `file` in place of the store at `url`, which must not exist yet, and
/// brings its schema up to date. Nothing is changed when it cannot be done.
pub async fn restore(file: &Path, url: &str) -> Result<BackupSummary, Error> {
    let target = sqlite_file(url, "restore")?;
    if target.exists() {
        return Err(refused(format!(
            "a database is already at {}: restore into a data_dir without one (or move it \
             away first); nothing was changed",
            target.display()
        )));
    }
    if !file.is_file() {
        return Err(refused(format!("no backup file at {}", file.display())));
    }
    summary(file).await?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| refused(format!("cannot create {}: {e}", parent.display())))?;
    }
    // Copied beside the target and renamed: a crash leaves either nothing or the whole copy.
    let partial = target.with_extension("db.restoring");
    let copied = std::fs::copy(file, &partial)
        .and_then(|_| std::fs::File::open(&partial)?.sync_all())
        .and_then(|()| std::fs::rename(&partial, &target));
    if let Err(err) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(refused(format!(
            "cannot copy the backup to {}: {err}; nothing was changed",
            target.display()
        )));
    }
    // Migrations bring a backup of an older version up to date.
    let store = SqlStore::connect(url, 1).await?;
    store.pool.close().await;
    summary(&target).await
}
