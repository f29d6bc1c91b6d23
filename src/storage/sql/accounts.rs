//! Accounts and their SCRAM credentials.

use super::*;

#[async_trait::async_trait]
impl AccountStore for SqlStore {
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
}
