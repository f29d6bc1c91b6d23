//! The directory: structures, users, classes, groups, links, rules and profile access.

use sqlx::Row;

use super::super::Error;
use super::{DirectoryStore, ScramCredential, SqlStore, Tx, flag, now_unix, replace_credentials};
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
        sqlx::query("INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, $3, $4)")
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
            exec(
                tx,
                "DELETE FROM structure_members WHERE username = $1",
                &[username],
            )
            .await?;
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
        AddClassMember { class, username } => exec(
            tx,
            "INSERT INTO class_members (class_id, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[class, username],
        )
        .await,
        RemoveClassMember { class, username } => {
            exec(
                tx,
                "DELETE FROM class_members WHERE class_id = $1 AND username = $2",
                &[class, username],
            )
            .await
        }
        AddGroupMember { group, username } => exec(
            tx,
            "INSERT INTO group_members (group_id, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[group, username],
        )
        .await,
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
    search: Option<&str>,
) -> Result<Vec<AuditEntry>, Error> {
    // LOWER on both sides: PostgreSQL's LIKE heeds case, SQLite's does not (for ASCII).
    let pattern = search.filter(|s| !s.is_empty()).map(|s| {
        let escaped = s
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let rows = sqlx::query(
        "SELECT id, at, actor, action, detail FROM audit_log WHERE id < $1 \
         AND ($2 = 0 OR LOWER(actor) LIKE $3 ESCAPE '\\' OR LOWER(action) LIKE $4 ESCAPE '\\' \
              OR LOWER(detail) LIKE $5 ESCAPE '\\') \
         ORDER BY id DESC LIMIT $6",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(pattern.is_some()))
    .bind(pattern.clone().unwrap_or_default())
    .bind(pattern.clone().unwrap_or_default())
    .bind(pattern.unwrap_or_default())
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

#[async_trait::async_trait]
impl DirectoryStore for SqlStore {
    async fn load_directory(&self) -> Result<crate::directory::DirectoryRows, Error> {
        load(&self.pool).await
    }

    async fn apply_directory(
        &self,
        actor: &str,
        changes: &[crate::directory::DirectoryChange],
        credentials: &[(String, Vec<ScramCredential>)],
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        apply(&mut tx, actor, changes, now_unix()).await?;
        for (username, credentials) in credentials {
            replace_credentials(&mut tx, username, credentials).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
