//! The sqlx implementation of [`Store`], one set of queries for SQLite and PostgreSQL through
//! sqlx's `Any` driver.
//!
//! Queries use `$1, $2, …` placeholders, which both back ends accept; in SQLite they are
//! numbered in order of first appearance, so every query names them in ascending order.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

use super::{
    Error, OfflineMessage, RosterItem, RosterSnapshot, ScramCredential, ScramHash, Store,
    Subscription, SubscriptionRequest,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
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
        Ok(Self { pool, backend })
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

/// Bumps and returns the roster version of a user, inside the caller's transaction.
async fn bump_version(tx: &mut Tx<'_>, username: &str) -> Result<i64, Error> {
    let updated = sqlx::query(
        "UPDATE roster_versions SET version = version + 1 WHERE username = $1 RETURNING version",
    )
    .bind(username)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = updated {
        return Ok(row.try_get(0)?);
    }
    sqlx::query("INSERT INTO roster_versions (username, version) VALUES ($1, 1)")
        .bind(username)
        .execute(&mut **tx)
        .await?;
    Ok(1)
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

fn item_from_row(row: &sqlx::any::AnyRow) -> Result<RosterItem, Error> {
    let subscription: String = row.try_get(2)?;
    Ok(RosterItem {
        contact: row.try_get(0)?,
        name: row.try_get(1)?,
        subscription: Subscription::parse(&subscription).unwrap_or_default(),
        ask: row.try_get::<i64, _>(3)? != 0,
        approved: row.try_get::<i64, _>(4)? != 0,
        refused: row.try_get::<i64, _>(5)? != 0,
        groups: Vec::new(),
    })
}

const SELECT_ITEMS: &str = "SELECT contact, name, subscription, ask, approved, refused \
     FROM roster_items WHERE username = $1 ORDER BY contact";

/// Items of a user (all, or those in `only`), with their groups: two queries.
async fn load_items(
    conn: &mut sqlx::AnyConnection,
    username: &str,
    only: Option<&[String]>,
) -> Result<Vec<RosterItem>, Error> {
    let rows = sqlx::query(SELECT_ITEMS)
        .bind(username)
        .fetch_all(&mut *conn)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let item = item_from_row(row)?;
        if only.is_none_or(|wanted| wanted.contains(&item.contact)) {
            items.push(item);
        }
    }
    let groups = sqlx::query(
        "SELECT contact, name FROM roster_groups WHERE username = $1 ORDER BY contact, name",
    )
    .bind(username)
    .fetch_all(&mut *conn)
    .await?;
    for row in &groups {
        let contact: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        if let Ok(at) = items.binary_search_by(|i| i.contact.as_str().cmp(contact.as_str())) {
            items[at].groups.push(name);
        }
    }
    Ok(items)
}

async fn write_item(tx: &mut Tx<'_>, username: &str, item: &RosterItem) -> Result<(), Error> {
    sqlx::query("DELETE FROM roster_groups WHERE username = $1 AND contact = $2")
        .bind(username)
        .bind(&item.contact)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
        .bind(username)
        .bind(&item.contact)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO roster_items (username, contact, name, subscription, ask, approved, refused) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(username)
    .bind(&item.contact)
    .bind(item.name.clone())
    .bind(item.subscription.as_str())
    .bind(flag(item.ask))
    .bind(flag(item.approved))
    .bind(flag(item.refused))
    .execute(&mut **tx)
    .await?;
    for group in &item.groups {
        sqlx::query("INSERT INTO roster_groups (username, contact, name) VALUES ($1, $2, $3)")
            .bind(username)
            .bind(&item.contact)
            .bind(group)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM empty_categories WHERE username = $1 AND name = $2")
            .bind(username)
            .bind(group)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn category_exists(tx: &mut Tx<'_>, username: &str, name: &str) -> Result<bool, Error> {
    let in_use =
        sqlx::query("SELECT 1 FROM roster_groups WHERE username = $1 AND name = $2 LIMIT 1")
            .bind(username)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
    let empty = sqlx::query("SELECT 1 FROM empty_categories WHERE username = $1 AND name = $2")
        .bind(username)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(in_use.is_some() || empty.is_some())
}

/// The items of `username` in category `name`, inside the transaction.
async fn items_in_category(
    tx: &mut Tx<'_>,
    username: &str,
    name: &str,
) -> Result<Vec<RosterItem>, Error> {
    let contacts: Vec<String> =
        sqlx::query("SELECT contact FROM roster_groups WHERE username = $1 AND name = $2")
            .bind(username)
            .bind(name)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
    if contacts.is_empty() {
        return Ok(Vec::new());
    }
    load_items(tx, username, Some(&contacts)).await
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn create_user(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        replace_credentials(&mut tx, username, credentials).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        // Explicit, so that deletion does not depend on the foreign-key pragma.
        for table in OWNED_BY_USER {
            sqlx::query(table).bind(username).execute(&mut *tx).await?;
        }
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

    async fn load_roster(&self, username: &str) -> Result<RosterSnapshot, Error> {
        let mut conn = self.pool.acquire().await?;
        let items = load_items(&mut conn, username, None).await?;
        drop(conn);
        let version = sqlx::query("SELECT version FROM roster_versions WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0);
        let empty_categories =
            sqlx::query("SELECT name FROM empty_categories WHERE username = $1 ORDER BY name")
                .bind(username)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?;
        Ok(RosterSnapshot {
            version,
            items,
            empty_categories,
        })
    }

    async fn roster_item_count(&self, username: &str) -> Result<u64, Error> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM roster_items WHERE username = $1")
                .bind(username)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, Error> {
        let row = sqlx::query(
            "SELECT contact, name, subscription, ask, approved, refused FROM roster_items \
             WHERE username = $1 AND contact = $2",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut item = item_from_row(&row)?;
        item.groups = sqlx::query(
            "SELECT name FROM roster_groups WHERE username = $1 AND contact = $2 ORDER BY name",
        )
        .bind(username)
        .bind(contact)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        Ok(Some(item))
    }

    async fn save_roster_item(&self, username: &str, item: &RosterItem) -> Result<i64, Error> {
        let mut tx = self.begin().await?;
        write_item(&mut tx, username, item).await?;
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn delete_roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<i64>, Error> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM roster_groups WHERE username = $1 AND contact = $2")
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    async fn create_category(&self, username: &str, name: &str) -> Result<i64, Error> {
        let mut tx = self.begin().await?;
        if category_exists(&mut tx, username, name).await? {
            return Err(Error::Conflict);
        }
        sqlx::query("INSERT INTO empty_categories (username, name) VALUES ($1, $2)")
            .bind(username)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn rename_category(
        &self,
        username: &str,
        from: &str,
        to: &str,
    ) -> Result<(i64, Vec<RosterItem>), Error> {
        let mut tx = self.begin().await?;
        if !category_exists(&mut tx, username, from).await? {
            return Err(Error::NotFound);
        }
        if from != to && category_exists(&mut tx, username, to).await? {
            return Err(Error::Conflict);
        }
        sqlx::query("UPDATE roster_groups SET name = $1 WHERE username = $2 AND name = $3")
            .bind(to)
            .bind(username)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE empty_categories SET name = $1 WHERE username = $2 AND name = $3")
            .bind(to)
            .bind(username)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        let changed = items_in_category(&mut tx, username, to).await?;
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok((version, changed))
    }

    async fn delete_category(
        &self,
        username: &str,
        name: &str,
        fallback: &str,
    ) -> Result<(i64, Vec<RosterItem>), Error> {
        let mut tx = self.begin().await?;
        if !category_exists(&mut tx, username, name).await? {
            return Err(Error::NotFound);
        }
        let mut changed = items_in_category(&mut tx, username, name).await?;
        for item in &mut changed {
            item.groups.retain(|g| g != name);
            if item.groups.is_empty() {
                item.groups.push(fallback.to_owned());
            }
            write_item(&mut tx, username, item).await?;
        }
        sqlx::query("DELETE FROM empty_categories WHERE username = $1 AND name = $2")
            .bind(username)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok((version, changed))
    }

    async fn subscription_requests(
        &self,
        username: &str,
    ) -> Result<Vec<SubscriptionRequest>, Error> {
        let rows = sqlx::query(
            "SELECT requester, status FROM subscription_requests WHERE username = $1 \
             ORDER BY created_at, requester",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionRequest {
                    requester: r.try_get(0)?,
                    status: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn save_subscription_request(
        &self,
        username: &str,
        request: &SubscriptionRequest,
        limit: u32,
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM subscription_requests WHERE username = $1 AND requester = $2")
            .bind(username)
            .bind(&request.requester)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "INSERT INTO subscription_requests (username, requester, status, created_at) \
             SELECT $1, $2, $3, $4 \
             WHERE (SELECT COUNT(*) FROM subscription_requests WHERE username = $5) < $6",
        )
        .bind(username)
        .bind(&request.requester)
        .bind(request.status.clone())
        .bind(now_unix())
        .bind(username)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Dropping the transaction rolls the refresh back too.
            return Err(Error::LimitReached);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_subscription_request(
        &self,
        username: &str,
        requester: &str,
    ) -> Result<bool, Error> {
        let done =
            sqlx::query("DELETE FROM subscription_requests WHERE username = $1 AND requester = $2")
                .bind(username)
                .bind(requester)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn push_offline(&self, username: &str, stanza: &str, limit: u32) -> Result<(), Error> {
        // One statement, so that the limit check and the insert are atomic on any backend.
        let done = sqlx::query(
            "INSERT INTO offline_messages (username, stanza, created_at) \
             SELECT $1, $2, $3 WHERE (SELECT COUNT(*) FROM offline_messages WHERE username = $4) < $5",
        )
        .bind(username)
        .bind(stanza)
        .bind(now_unix())
        .bind(username)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::LimitReached);
        }
        Ok(())
    }

    async fn offline_batch(
        &self,
        username: &str,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>, Error> {
        // The running length bounds what one batch loads, whatever the messages' sizes.
        let rows = sqlx::query(
            "SELECT id, stanza, created_at FROM ( \
                 SELECT id, stanza, created_at, \
                        SUM(LENGTH(stanza)) OVER (ORDER BY id) - LENGTH(stanza) AS before \
                 FROM offline_messages WHERE username = $1 AND id > $2 ORDER BY id LIMIT $3 \
             ) AS batch WHERE before < $4 ORDER BY id",
        )
        .bind(username)
        .bind(after)
        .bind(i64::from(limit))
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OfflineMessage {
                    id: r.try_get(0)?,
                    stanza: r.try_get(1)?,
                    received_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn delete_offline_through(&self, username: &str, last: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM offline_messages WHERE username = $1 AND id <= $2")
            .bind(username)
            .bind(last)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load_directory(&self) -> Result<crate::directory::DirectoryRows, Error> {
        directory_sql::load(&self.pool).await
    }

    async fn apply_directory(
        &self,
        actor: &str,
        changes: &[crate::directory::DirectoryChange],
        credentials: &[(String, Vec<ScramCredential>)],
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        directory_sql::apply(&mut tx, actor, changes, now_unix()).await?;
        for (username, credentials) in credentials {
            replace_credentials(&mut tx, username, credentials).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_first_login(&self, username: &str, at: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE directory_users SET first_login = $1 WHERE username = $2 AND first_login IS NULL",
        )
        .bind(at)
        .bind(username)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_log(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<crate::directory::AuditEntry>, Error> {
        directory_sql::audit(&self.pool, limit, before).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

mod directory_sql {
    //! The directory part of [`SqlStore`](super::SqlStore).

    use sqlx::Row;

    use super::super::Error;
    use super::{Tx, flag};
    use crate::directory::{AuditEntry, DirectoryChange, DirectoryRows};

    /// Statements that take one bound username and remove a directory user's rows.
    const USER_ROWS: [&str; 6] = [
        "DELETE FROM class_members WHERE username = $1",
        "DELETE FROM group_members WHERE username = $1",
        "DELETE FROM parent_links WHERE parent = $1 OR child = $1",
        "DELETE FROM structure_members WHERE username = $1",
        "DELETE FROM directory_users WHERE username = $1",
        "DELETE FROM users WHERE username = $1",
    ];

    async fn exec(tx: &mut Tx<'_>, sql: &'static str, args: &[&str]) -> Result<(), Error> {
        let mut query = sqlx::query(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }

    fn op_name(change: &DirectoryChange) -> String {
        serde_json::to_value(change)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }

    pub(super) async fn apply(
        tx: &mut Tx<'_>,
        actor: &str,
        changes: &[DirectoryChange],
        now: i64,
    ) -> Result<(), Error> {
        for change in changes {
            apply_one(tx, change, now).await?;
            let detail = serde_json::to_string(change).unwrap_or_default();
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, $3, $4)",
            )
            .bind(now)
            .bind(actor)
            .bind(op_name(change))
            .bind(detail)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn set_members(
        tx: &mut Tx<'_>,
        clear: &'static str,
        insert: &'static str,
        id: &str,
        members: &Option<Vec<String>>,
    ) -> Result<(), Error> {
        if let Some(members) = members {
            exec(tx, clear, &[id]).await?;
            for member in members {
                exec(tx, insert, &[id, member]).await?;
            }
        }
        Ok(())
    }

    async fn apply_one(tx: &mut Tx<'_>, change: &DirectoryChange, now: i64) -> Result<(), Error> {
        use DirectoryChange::*;
        match change {
            PutStructure { id, name } => {
                exec(
                    tx,
                    "INSERT INTO structures (id, name) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                    &[id, name],
                )
                .await
            }
            DeleteStructure { id } => {
                for sql in [
                    "DELETE FROM class_members WHERE class_id IN (SELECT id FROM classes WHERE structure_id = $1)",
                    "DELETE FROM classes WHERE structure_id = $1",
                    "DELETE FROM structure_members WHERE structure_id = $1",
                    "DELETE FROM profile_access WHERE structure_id = $1",
                    "DELETE FROM communication_rules WHERE structure_id = $1",
                    "DELETE FROM structures WHERE id = $1",
                ] {
                    exec(tx, sql, &[id]).await?;
                }
                Ok(())
            }
            PutUser {
                username,
                display_name,
                profile,
                structures,
            } => {
                sqlx::query(
                    "INSERT INTO users (username, created_at) VALUES ($1, $2) \
                     ON CONFLICT (username) DO NOTHING",
                )
                .bind(username)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                exec(
                    tx,
                    "INSERT INTO directory_users (username, display_name, profile) VALUES ($1, $2, $3) \
                     ON CONFLICT (username) DO UPDATE SET display_name = excluded.display_name, \
                     profile = excluded.profile",
                    &[username, display_name, profile.as_str()],
                )
                .await?;
                exec(tx, "DELETE FROM structure_members WHERE username = $1", &[username]).await?;
                for structure in structures {
                    exec(
                        tx,
                        "INSERT INTO structure_members (structure_id, username) VALUES ($1, $2)",
                        &[structure, username],
                    )
                    .await?;
                }
                Ok(())
            }
            DeleteUser { username } => {
                for sql in super::OWNED_BY_USER {
                    exec(tx, sql, &[username]).await?;
                }
                for sql in USER_ROWS {
                    exec(tx, sql, &[username]).await?;
                }
                Ok(())
            }
            PutClass {
                id,
                structure,
                name,
                members,
            } => {
                exec(
                    tx,
                    "INSERT INTO classes (id, structure_id, name) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET structure_id = excluded.structure_id, name = excluded.name",
                    &[id, structure, name],
                )
                .await?;
                set_members(
                    tx,
                    "DELETE FROM class_members WHERE class_id = $1",
                    "INSERT INTO class_members (class_id, username) VALUES ($1, $2)",
                    id,
                    members,
                )
                .await
            }
            DeleteClass { id } => {
                exec(tx, "DELETE FROM class_members WHERE class_id = $1", &[id]).await?;
                exec(tx, "DELETE FROM classes WHERE id = $1", &[id]).await
            }
            PutGroup { id, name, members } => {
                exec(
                    tx,
                    "INSERT INTO ent_groups (id, name) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                    &[id, name],
                )
                .await?;
                set_members(
                    tx,
                    "DELETE FROM group_members WHERE group_id = $1",
                    "INSERT INTO group_members (group_id, username) VALUES ($1, $2)",
                    id,
                    members,
                )
                .await
            }
            DeleteGroup { id } => {
                exec(tx, "DELETE FROM group_members WHERE group_id = $1", &[id]).await?;
                exec(tx, "DELETE FROM ent_groups WHERE id = $1", &[id]).await
            }
            AddClassMember { class, username } => {
                exec(
                    tx,
                    "INSERT INTO class_members (class_id, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[class, username],
                )
                .await
            }
            RemoveClassMember { class, username } => {
                exec(
                    tx,
                    "DELETE FROM class_members WHERE class_id = $1 AND username = $2",
                    &[class, username],
                )
                .await
            }
            AddGroupMember { group, username } => {
                exec(
                    tx,
                    "INSERT INTO group_members (group_id, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[group, username],
                )
                .await
            }
            RemoveGroupMember { group, username } => {
                exec(
                    tx,
                    "DELETE FROM group_members WHERE group_id = $1 AND username = $2",
                    &[group, username],
                )
                .await
            }
            LinkParent { parent, child } => {
                exec(
                    tx,
                    "INSERT INTO parent_links (parent, child) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[parent, child],
                )
                .await
            }
            UnlinkParent { parent, child } => {
                exec(
                    tx,
                    "DELETE FROM parent_links WHERE parent = $1 AND child = $2",
                    &[parent, child],
                )
                .await
            }
            SetProfileAccess {
                structure,
                profile,
                enabled,
            } => {
                sqlx::query(
                    "INSERT INTO profile_access (structure_id, profile, enabled) VALUES ($1, $2, $3) \
                     ON CONFLICT (structure_id, profile) DO UPDATE SET enabled = excluded.enabled",
                )
                .bind(structure)
                .bind(profile.as_str())
                .bind(flag(*enabled))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
            SetRule {
                structure,
                from,
                to,
                scope,
            } => {
                exec(
                    tx,
                    "INSERT INTO communication_rules (structure_id, from_profile, to_profile, scope) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (structure_id, from_profile, to_profile) \
                     DO UPDATE SET scope = excluded.scope",
                    &[structure, from.as_str(), to.as_str(), scope.as_str()],
                )
                .await
            }
            SetHidden { username, hidden } => {
                sqlx::query("UPDATE directory_users SET hidden = $1 WHERE username = $2")
                    .bind(flag(*hidden))
                    .bind(username)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }
    }

    fn pairs(rows: &[sqlx::any::AnyRow]) -> Result<Vec<(String, String)>, Error> {
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(super) async fn load(pool: &sqlx::AnyPool) -> Result<DirectoryRows, Error> {
        let all = |sql: &'static str| sqlx::query(sql).fetch_all(pool);
        let users =
            all("SELECT username, display_name, profile, hidden, first_login FROM directory_users")
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get::<i64, _>(3)? != 0,
                        r.try_get(4)?,
                    ))
                })
                .collect::<Result<_, Error>>()?;
        let classes = all("SELECT id, structure_id, name FROM classes")
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, Error>>()?;
        let profile_access = all("SELECT structure_id, profile, enabled FROM profile_access")
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<i64, _>(2)? != 0)))
            .collect::<Result<_, Error>>()?;
        let rules =
            all("SELECT structure_id, from_profile, to_profile, scope FROM communication_rules")
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<_, Error>>()?;
        Ok(DirectoryRows {
            structures: pairs(&all("SELECT id, name FROM structures").await?)?,
            users,
            structure_members: pairs(
                &all("SELECT structure_id, username FROM structure_members").await?,
            )?,
            classes,
            class_members: pairs(&all("SELECT class_id, username FROM class_members").await?)?,
            groups: pairs(&all("SELECT id, name FROM ent_groups").await?)?,
            group_members: pairs(&all("SELECT group_id, username FROM group_members").await?)?,
            parent_links: pairs(&all("SELECT parent, child FROM parent_links").await?)?,
            profile_access,
            rules,
        })
    }

    pub(super) async fn audit(
        pool: &sqlx::AnyPool,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, detail FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get(4)?;
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}
