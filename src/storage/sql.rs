//! The sqlx implementation of [`Store`], one set of queries for SQLite and PostgreSQL through
//! sqlx's `Any` driver.
//!
//! Queries use `$1, $2, …` placeholders, which both back ends accept; in SQLite they are
//! numbered in order of first appearance, so every query names them in ascending order.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

use super::{Error, ScramCredential, ScramHash, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pool: AnyPool,
}

impl SqlStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl(url.to_owned()));
        };
        install_default_drivers();
        if backend == Backend::Sqlite {
            create_sqlite_parent_dir(url);
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
        let pool = options.connect(url).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("schema/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("schema/postgres").run(&pool).await?,
        }
        Ok(Self { pool })
    }
}

/// SQLite creates the file (mode=rwc) but not its folder.
fn create_sqlite_parent_dir(url: &str) {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return;
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        // An error here resurfaces, better worded, when SQLite opens the file.
        let _ = std::fs::create_dir_all(parent);
    }
}

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

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn create_user(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO users (username, created_at) VALUES ($1, $2)")
            .bind(username)
            .bind(now_unix())
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(Error::Conflict),
            other => other?,
        };
        insert_credentials(&mut tx, username, credentials).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_credentials(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::NotFound);
        }
        sqlx::query("DELETE FROM credentials WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        insert_credentials(&mut tx, username, credentials).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        // Explicit, so that deletion does not depend on the foreign-key pragma.
        sqlx::query("DELETE FROM credentials WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user_exists(&self, username: &str) -> Result<bool, Error> {
        let row = sqlx::query("SELECT 1 FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn list_users(&self) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT username FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(Error::from))
            .collect()
    }

    async fn credential(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredential>, Error> {
        let row = sqlx::query(
            "SELECT mechanism, salt, iterations, stored_key, server_key FROM credentials \
             WHERE username = $1 AND mechanism = $2",
        )
        .bind(username)
        .bind(hash.mechanism())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mechanism: String = row.try_get(0)?;
        let iterations: i64 = row.try_get(2)?;
        Ok(Some(ScramCredential {
            hash: hash_from_name(&mechanism).unwrap_or(hash),
            salt: row.try_get(1)?,
            iterations: u32::try_from(iterations).unwrap_or(0),
            stored_key: row.try_get(3)?,
            server_key: row.try_get(4)?,
        }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
