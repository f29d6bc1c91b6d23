//! Durable state behind one trait. Handlers see domain methods only: no SQL, no pool.
//!
//! One implementation, [`SqlStore`], serves SQLite (the embedded default) and PostgreSQL
//! (production) from the same queries.

mod sql;

use std::sync::Arc;

pub use sql::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    #[error("unsupported database URL {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The hash family of a SCRAM credential; the -PLUS variant shares its family's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub const ALL: [ScramHash; 2] = [ScramHash::Sha1, ScramHash::Sha256];

    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }
}

/// What a SCRAM server needs to verify a password (RFC 5802 §3): never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    // Keys stay out of logs even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Usernames are the localpart of the user's JID, already normalised (nodeprep).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account with its credentials, atomically. `Conflict` if it exists.
    async fn create_user(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error>;
    /// Replaces every credential of an account, atomically. `NotFound` if it does not exist.
    async fn set_credentials(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error>;
    /// Deletes an account and everything it owns. `NotFound` if it does not exist.
    async fn delete_user(&self, username: &str) -> Result<(), Error>;
    async fn user_exists(&self, username: &str) -> Result<bool, Error>;
    /// Usernames in order.
    async fn list_users(&self) -> Result<Vec<String>, Error>;
    async fn credential(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredential>, Error>;
    /// Waits for running queries and closes the connections.
    async fn close(&self);
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store a URL names and brings its schema up to date.
pub async fn open(url: &str, max_connections: u32) -> Result<DynStore, Error> {
    Ok(Arc::new(SqlStore::connect(url, max_connections).await?))
}
