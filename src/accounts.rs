//! Account management shared by the CLI (and, later, the admin API).

use crate::auth::{normalise_username, scram};
use crate::storage::{self, DynStore};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a valid username (the part before @ in a JID, RFC 7622)")]
    InvalidUsername(String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error("no user {0}")]
    NotFound(String),
    #[error(transparent)]
    Password(#[from] scram::PasswordError),
    #[error(transparent)]
    Storage(storage::Error),
}

fn username(raw: &str) -> Result<String, Error> {
    normalise_username(raw.trim()).ok_or_else(|| Error::InvalidUsername(raw.to_owned()))
}

/// The stored credentials of a password; refuses a password that may not be set (empty).
pub async fn credentials(
    password: String,
    iterations: u32,
) -> Result<Vec<storage::ScramCredential>, Error> {
    // PBKDF2 is CPU-heavy: keep it off the async workers.
    tokio::task::spawn_blocking(move || scram::credentials_for(&password, iterations))
        .await
        .map_err(|_| Error::Password(scram::PasswordError::Empty))?
        .map_err(Error::from)
}

/// Creates an account; returns the normalised username.
pub async fn add(
    store: &DynStore,
    raw_username: &str,
    password: String,
    iterations: u32,
) -> Result<String, Error> {
    let name = username(raw_username)?;
    let creds = credentials(password, iterations).await?;
    store
        .create_user(&name, &creds)
        .await
        .map_err(|e| match e {
            storage::Error::Conflict => Error::Exists(name.clone()),
            other => Error::Storage(other),
        })?;
    Ok(name)
}

pub async fn set_password(
    store: &DynStore,
    raw_username: &str,
    password: String,
    iterations: u32,
) -> Result<String, Error> {
    let name = username(raw_username)?;
    let creds = credentials(password, iterations).await?;
    store
        .set_credentials(&name, &creds)
        .await
        .map_err(|e| match e {
            storage::Error::NotFound => Error::NotFound(name.clone()),
            other => Error::Storage(other),
        })?;
    Ok(name)
}

pub async fn delete(store: &DynStore, raw_username: &str) -> Result<String, Error> {
    let name = username(raw_username)?;
    store.delete_user(&name).await.map_err(|e| match e {
        storage::Error::NotFound => Error::NotFound(name.clone()),
        other => Error::Storage(other),
    })?;
    Ok(name)
}

pub async fn list(store: &DynStore) -> Result<Vec<String>, Error> {
    store.list_users().await.map_err(Error::Storage)
}
