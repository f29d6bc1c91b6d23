//! The sqlx implementation of [`Store`], one set of queries for SQLite and PostgreSQL through
//! sqlx's `Any` driver, one file per domain (accounts, roster, offline, directory, audit, rooms).
//!
//! Queries use `$1, $2, …` placeholders, which both back ends accept; in SQLite they are
//! numbered in order of first appearance, so every query names them in ascending order.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

use super::{
    AccountStore, AuditStore, DirectoryStore, Error, HistoryBound, OfflineMessage, OfflineStore,
    RoomListing, RoomStore, RosterItem, RosterSnapshot, RosterStore, ScramCredential, ScramHash,
    Store, StoredRoom, Subscription, SubscriptionRequest,
};

mod accounts;
mod audit;
pub mod backup;
mod directory;
mod offline;
mod rooms;
mod roster;
pub mod serving;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    fn of(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Its migrations, from `schema/`.
    fn migrator(self) -> sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => sqlx::migrate!("schema/sqlite"),
            Backend::Postgres => sqlx::migrate!("schema/postgres"),
        }
    }
}

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

impl SqlStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        Ok(Self::connect_reporting(url, max_connections).await?.0)
    }

    /// Opens the store and migrates it, saying what the migration did.
    pub async fn connect_reporting(
        url: &str,
        max_connections: u32,
    ) -> Result<(Self, Migrated), Error> {
        let backend = Backend::of(url)?;
        install_default_drivers();
        if backend == Backend::Sqlite {
            create_sqlite_parent_dir(url);
        }
        if backend == Backend::Postgres {
            // The pool retries a server that refuses until its acquire timeout (30 s) and then
            // only says it timed out: one connection first says at once what is wrong.
            use sqlx::Connection;
            sqlx::AnyConnection::connect(url)
                .await
                .map_err(|err| unreachable_error(url, err))?
                .close()
                .await
                .map_err(|err| unreachable_error(url, err))?;
        }
        let mut options = AnyPoolOptions::new().max_connections(max_connections.max(1));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; NORMAL sync is durable in WAL
                    // mode except on power loss of the last transactions.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|err| match sqlite_path(url) {
                // SQLite's own message ("unable to open database file") names no file.
                Some(path) if backend == Backend::Sqlite => Error::SqliteOpen {
                    path: path.to_owned(),
                    reason: err.to_string(),
                },
                _ => Error::from(err),
            })?;
        let before = applied_migrations(&pool).await;
        backend.migrator().run(&pool).await?;
        let migrated = Migrated {
            before,
            after: applied_migrations(&pool).await,
        };
        Ok((Self { pool, backend }, migrated))
    }

    /// A transaction that holds the write lock from its start on SQLite: a transaction that
    /// reads first and writes later would fail at once with SQLITE_BUSY when another writer
    /// got there in between (busy_timeout does not cover that upgrade).
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, Error> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// What opening the store did to its schema: migrations applied before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub before: u64,
    pub after: u64,
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        match (self.before, self.after) {
            (0, after) => write!(f, "created the schema ({after} migration{})", plural(after)),
            (before, after) if after > before => {
                let applied = after - before;
                write!(
                    f,
                    "applied {applied} migration{} (now {after})",
                    plural(applied)
                )
            }
            (_, after) => write!(
                f,
                "the schema is up to date ({after} migration{})",
                plural(after)
            ),
        }
    }
}

/// Migrations recorded as applied; none when the bookkeeping table does not exist yet.
async fn applied_migrations<'c>(on: impl sqlx::AnyExecutor<'c>) -> u64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(on)
        .await
        .map_or(0, |count| u64::try_from(count).unwrap_or(0))
}

/// The schema of an existing store, read without changing anything (`causette check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaState {
    pub applied: u64,
    pub known: u64,
}

/// Connects once to the store a URL names and reads its schema's state; `None` for an SQLite
/// file that does not exist yet (the server creates it). Migrates nothing.
pub async fn probe(url: &str) -> Result<Option<SchemaState>, Error> {
    use sqlx::Connection;
    let backend = Backend::of(url)?;
    if backend == Backend::Sqlite && sqlite_path(url).is_some_and(|path| !Path::new(path).exists())
    {
        return Ok(None);
    }
    install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|err| unreachable_error(url, err))?;
    let applied = applied_migrations(&mut connection).await;
    let _ = connection.close().await;
    Ok(Some(SchemaState {
        applied,
        known: backend.migrator().iter().count() as u64,
    }))
}

/// The file an SQLite URL names, unless it is in memory.
fn sqlite_path(url: &str) -> Option<&str> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// A database that cannot be reached, said with where it was looked for.
fn unreachable_error(url: &str, err: sqlx::Error) -> Error {
    let reason = match &err {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".to_owned()
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    Error::Unreachable {
        at: host_of(url),
        reason,
    }
}

/// `host:port` of a database URL, without the credentials.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        "the local socket".to_owned()
    } else if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// SQLite creates the file (mode=rwc) but not its folder.
fn create_sqlite_parent_dir(url: &str) {
    let Some(path) = sqlite_path(url) else {
        return;
    };
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        // An error here resurfaces, better worded, when SQLite opens the file.
        let _ = std::fs::create_dir_all(parent);
    }
}

/// Everything an account owns, children first.
const OWNED_BY_USER: [&str; 7] = [
    "DELETE FROM credentials WHERE username = $1",
    "DELETE FROM roster_groups WHERE username = $1",
    "DELETE FROM roster_items WHERE username = $1",
    "DELETE FROM empty_categories WHERE username = $1",
    "DELETE FROM roster_versions WHERE username = $1",
    "DELETE FROM subscription_requests WHERE username = $1",
    "DELETE FROM offline_messages WHERE username = $1",
];

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn hash_from_name(name: &str) -> Option<ScramHash> {
    ScramHash::ALL.into_iter().find(|h| h.mechanism() == name)
}

/// Replaces an existing account's credentials; `NotFound` when there is no such account.
async fn replace_credentials(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    username: &str,
    credentials: &[ScramCredential],
) -> Result<(), Error> {
    let exists = sqlx::query("SELECT 1 FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_none() {
        return Err(Error::NotFound);
    }
    sqlx::query("DELETE FROM credentials WHERE username = $1")
        .bind(username)
        .execute(&mut **tx)
        .await?;
    insert_credentials(tx, username, credentials).await
}

async fn insert_credentials(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    username: &str,
    credentials: &[ScramCredential],
) -> Result<(), Error> {
    for c in credentials {
        sqlx::query(
            "INSERT INTO credentials (username, mechanism, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(username)
        .bind(c.hash.mechanism())
        .bind(c.salt.clone())
        .bind(i64::from(c.iterations))
        .bind(c.stored_key.clone())
        .bind(c.server_key.clone())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

fn flag(value: bool) -> i64 {
    i64::from(value)
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
