//! Messages kept for offline users.

use super::*;

#[async_trait::async_trait]
impl OfflineStore for SqlStore {
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
}
