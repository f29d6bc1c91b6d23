//! Rosters, categories and subscription requests.

use super::*;

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
impl RosterStore for SqlStore {
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
}
