//! Persistent conversations: rooms, affiliations, recent history.

use std::collections::BTreeSet;

use super::*;

/// The ids of a room's history that `HistoryBound` keeps: the newest within the count and
/// the bytes, and the newest whatever its size. Binds: room, messages, bytes. A macro, so that
/// the queries built on it stay literals.
macro_rules! history_kept {
    () => {
        "SELECT id FROM ( \
             SELECT id, ROW_NUMBER() OVER (ORDER BY id DESC) AS n, \
                    SUM(bytes) OVER (ORDER BY id DESC) AS total \
             FROM room_history WHERE room = $1 \
         ) AS recent WHERE n = 1 OR (n <= $2 AND total <= $3)"
    };
}

/// How many rooms a user owns.
const ROOMS_OWNED: &str =
    "SELECT COUNT(*) FROM room_affiliations WHERE jid = $1 AND affiliation = 'owner'";

#[async_trait::async_trait]
impl RoomStore for SqlStore {
    async fn load_room(&self, name: &str) -> Result<Option<StoredRoom>, Error> {
        let Some(row) = sqlx::query(
            "SELECT name, config, subject, subject_by, vcard FROM rooms WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let affiliations = sqlx::query(
            "SELECT jid, affiliation FROM room_affiliations WHERE room = $1 ORDER BY jid",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(StoredRoom {
            name: row.try_get(0)?,
            config: row.try_get(1)?,
            subject: row.try_get(2)?,
            subject_by: row.try_get(3)?,
            vcard: row.try_get(4)?,
            affiliations,
            history: Vec::new(),
        }))
    }

    async fn load_room_history(
        &self,
        name: &str,
        bound: HistoryBound,
    ) -> Result<Vec<(String, i64)>, Error> {
        sqlx::query(concat!(
            "SELECT stanza, created_at FROM room_history WHERE id IN (",
            history_kept!(),
            ") ORDER BY id"
        ))
        .bind(name)
        .bind(i64::from(bound.messages))
        .bind(i64::try_from(bound.bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Error::from)
    }

    async fn create_room(
        &self,
        room: &StoredRoom,
        public: bool,
        owner: &str,
        limit: u32,
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let owned: i64 = sqlx::query_scalar(ROOMS_OWNED)
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
        if owned >= i64::from(limit) {
            return Err(Error::LimitReached);
        }
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE name = $1")
            .bind(&room.name)
            .fetch_one(&mut *tx)
            .await?;
        if exists > 0 {
            return Err(Error::Conflict);
        }
        sqlx::query(
            "INSERT INTO rooms (name, config, public, subject, subject_by, vcard, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&room.name)
        .bind(&room.config)
        .bind(flag(public))
        .bind(room.subject.clone())
        .bind(room.subject_by.clone())
        .bind(room.vcard.clone())
        .bind(now_unix())
        .execute(&mut *tx)
        .await?;
        for (jid, affiliation) in &room.affiliations {
            sqlx::query(
                "INSERT INTO room_affiliations (room, jid, affiliation) VALUES ($1, $2, $3)",
            )
            .bind(&room.name)
            .bind(jid)
            .bind(affiliation)
            .execute(&mut *tx)
            .await?;
        }
        for (stanza, at) in &room.history {
            sqlx::query(
                "INSERT INTO room_history (room, stanza, created_at, bytes) VALUES ($1, $2, $3, $4)",
            )
            .bind(&room.name)
            .bind(stanza)
            .bind(*at)
            .bind(stanza_bytes(stanza))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn save_room_config(&self, name: &str, config: &str, public: bool) -> Result<(), Error> {
        let done = sqlx::query("UPDATE rooms SET config = $1, public = $2 WHERE name = $3")
            .bind(config)
            .bind(flag(public))
            .bind(name)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    async fn save_room_subject(&self, name: &str, subject: &str, by: &str) -> Result<(), Error> {
        let done = sqlx::query("UPDATE rooms SET subject = $1, subject_by = $2 WHERE name = $3")
            .bind(subject)
            .bind(by)
            .bind(name)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    async fn save_room_vcard(&self, name: &str, vcard: &str) -> Result<(), Error> {
        let done = sqlx::query("UPDATE rooms SET vcard = $1 WHERE name = $2")
            .bind(vcard)
            .bind(name)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    async fn set_room_affiliation(
        &self,
        name: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM room_affiliations WHERE room = $1 AND jid = $2")
            .bind(name)
            .bind(jid)
            .execute(&mut *tx)
            .await?;
        if let Some(affiliation) = affiliation {
            sqlx::query(
                "INSERT INTO room_affiliations (room, jid, affiliation) VALUES ($1, $2, $3)",
            )
            .bind(name)
            .bind(jid)
            .bind(affiliation)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_room(&self, name: &str) -> Result<bool, Error> {
        // Children first: SQLite enforces the cascade only with foreign keys on, which a
        // restored copy may lack.
        let mut tx = self.begin().await?;
        for query in [
            "DELETE FROM room_history WHERE room = $1",
            "DELETE FROM room_affiliations WHERE room = $1",
        ] {
            sqlx::query(query).bind(name).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM rooms WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_room_history(
        &self,
        rows: &[(String, String, i64)],
        keep: HistoryBound,
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let mut touched = BTreeSet::new();
        for (room, stanza, at) in rows {
            // A room destroyed meanwhile takes no more history.
            sqlx::query(
                "INSERT INTO room_history (room, stanza, created_at, bytes) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM rooms WHERE name = $5)",
            )
            .bind(room)
            .bind(stanza)
            .bind(*at)
            .bind(stanza_bytes(stanza))
            .bind(room)
            .execute(&mut *tx)
            .await?;
            touched.insert(room.as_str());
        }
        // The kept ids' binds come first: $1–$3 in history_kept!, then the room again.
        for room in touched {
            sqlx::query(concat!(
                "DELETE FROM room_history WHERE id NOT IN (",
                history_kept!(),
                ") AND room = $4"
            ))
            .bind(room)
            .bind(i64::from(keep.messages))
            .bind(i64::try_from(keep.bytes).unwrap_or(i64::MAX))
            .bind(room)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn public_rooms(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<RoomListing>, u64), Error> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE public = 1")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT name, config FROM rooms WHERE public = 1 AND name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok((listings(&rows)?, u64::try_from(count).unwrap_or(0)))
    }

    async fn rooms_of(&self, jid: &str, limit: u32) -> Result<Vec<RoomListing>, Error> {
        let rows = sqlx::query(
            "SELECT r.name, r.config FROM rooms r JOIN room_affiliations a ON a.room = r.name \
             WHERE a.jid = $1 AND a.affiliation IN ('owner', 'admin', 'member') \
             ORDER BY r.name LIMIT $2",
        )
        .bind(jid)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        listings(&rows)
    }

    async fn rooms_owned(&self, jid: &str) -> Result<u64, Error> {
        let owned: i64 = sqlx::query_scalar(ROOMS_OWNED)
            .bind(jid)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(owned).unwrap_or(0))
    }
}

/// A stanza's size as stored, counted against `HistoryBound::bytes`.
fn stanza_bytes(stanza: &str) -> i64 {
    i64::try_from(stanza.len()).unwrap_or(i64::MAX)
}

fn found(rows: u64) -> Result<(), Error> {
    if rows == 0 {
        Err(Error::NotFound)
    } else {
        Ok(())
    }
}

fn listings(rows: &[sqlx::any::AnyRow]) -> Result<Vec<RoomListing>, Error> {
    rows.iter()
        .map(|r| {
            Ok(RoomListing {
                name: r.try_get(0)?,
                config: r.try_get(1)?,
            })
        })
        .collect()
}
