//! Durable state behind one trait. Handlers see domain methods only: no SQL, no pool.
//!
//! One implementation, [`SqlStore`], serves SQLite (the embedded default) and PostgreSQL
//! (production) from the same queries.

pub mod batch;
mod observed;
mod sql;

use std::sync::Arc;

pub use observed::{QueryObserver, observed};
pub use sql::{Migrated, SchemaState, SqlStore, probe};

use observed::store_domain;

use crate::directory;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    #[error("limit reached")]
    LimitReached,
    #[error("unsupported database URL {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// The mark of a served store: another server holds it, or it cannot be taken.
    #[error("{0}")]
    Serving(String),
    #[error("cannot reach the database at {at}: {reason}")]
    Unreachable { at: String, reason: String },
    #[error("cannot open the SQLite database {path}: {reason}")]
    SqliteOpen { path: String, reason: String },
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A backup or a restore that cannot be done as asked; nothing was changed.
    #[error("{0}")]
    Backup(String),
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

/// RFC 6121 §2.1.2.5 subscription states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with_to(self, on: bool) -> Self {
        Self::from_flags(on, self.has_from())
    }

    pub fn with_from(self, on: bool) -> Self {
        Self::from_flags(self.has_to(), on)
    }

    fn from_flags(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One contact of a user's roster. Groups are the manual's categories.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Our subscription request is pending ("Invitation en attente").
    pub ask: bool,
    /// We pre-approved the contact's subscription (RFC 6121 §3.4).
    pub approved: bool,
    /// The contact refused our request ("Invitation refusée").
    pub refused: bool,
    pub groups: Vec<String>,
}

/// A whole roster, as loaded at login.
#[derive(Debug, Clone, Default)]
pub struct RosterSnapshot {
    pub version: i64,
    pub items: Vec<RosterItem>,
    /// Categories created empty and still without contacts.
    pub empty_categories: Vec<String>,
}

/// An inbound subscription request not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    pub requester: String,
    pub status: Option<String>,
}

/// A message kept for an offline user: its XML and when it arrived (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Increases with each message kept: delivery goes in this order.
    pub id: i64,
    pub stanza: String,
    pub received_at: i64,
}

// The store by domain; usernames are the localpart of the user's JID, already normalised
// (nodeprep). A `Store` is all of them.

store_domain! {
    /// Accounts and their SCRAM credentials.
    pub trait AccountStore {
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
        /// Notes a user's first login (only the first is kept).
        async fn record_first_login(&self, username: &str, at: i64) -> Result<(), Error>;
    }
}

store_domain! {
    /// Rosters, categories (roster groups) and subscription requests.
    pub trait RosterStore {
        /// The roster, its version and its empty categories, in a constant number of queries.
        async fn load_roster(&self, username: &str) -> Result<RosterSnapshot, Error>;
        /// One roster item with its groups.
        async fn roster_item(&self, username: &str, contact: &str)
        -> Result<Option<RosterItem>, Error>;
        /// How many items a roster holds.
        async fn roster_item_count(&self, username: &str) -> Result<u64, Error>;
        /// Creates or replaces one roster item with its groups, atomically; returns the new
        /// roster version. Categories it puts a contact in stop being empty categories.
        async fn save_roster_item(&self, username: &str, item: &RosterItem) -> Result<i64, Error>;
        /// Removes a roster item; `None` when there was none, else the new roster version.
        async fn delete_roster_item(&self, username: &str, contact: &str)
        -> Result<Option<i64>, Error>;
        /// Creates an empty category; `Conflict` if a category of that name exists.
        async fn create_category(&self, username: &str, name: &str) -> Result<i64, Error>;
        /// Renames a category, moving every contact, atomically. Returns the new version and the
        /// items that changed; `NotFound` if no such category, `Conflict` if `to` exists.
        async fn rename_category(
            &self,
            username: &str,
            from: &str,
            to: &str,
        ) -> Result<(i64, Vec<RosterItem>), Error>;
        /// Deletes a category, atomically. Its contacts left with no category move to
        /// `fallback`. Returns the new version and the items that changed; `NotFound` if none.
        async fn delete_category(
            &self,
            username: &str,
            name: &str,
            fallback: &str,
        ) -> Result<(i64, Vec<RosterItem>), Error>;
        async fn subscription_requests(
            &self,
            username: &str,
        ) -> Result<Vec<SubscriptionRequest>, Error>;
        /// Keeps (or refreshes) an inbound request; `LimitReached` when `limit` requests from
        /// others are already waiting.
        async fn save_subscription_request(
            &self,
            username: &str,
            request: &SubscriptionRequest,
            limit: u32,
        ) -> Result<(), Error>;
        /// Forgets an inbound request; whether there was one.
        async fn delete_subscription_request(
            &self,
            username: &str,
            requester: &str,
        ) -> Result<bool, Error>;
    }
}

store_domain! {
    /// Messages kept for offline users (XEP-0160).
    pub trait OfflineStore {
        /// Stores a message for an offline user; `LimitReached` when `limit` are already kept.
        async fn push_offline(&self, username: &str, stanza: &str, limit: u32) -> Result<(), Error>;
        /// Reads, oldest first, the messages kept for a user whose id is above `after`: at most
        /// `limit`, and no more after the one that reaches `max_bytes` (the first always comes).
        /// Nothing is deleted: see `delete_offline_through`.
        async fn offline_batch(
            &self,
            username: &str,
            after: i64,
            limit: u32,
            max_bytes: usize,
        ) -> Result<Vec<OfflineMessage>, Error>;
        /// Deletes the messages kept for a user up to id `last`, once the client has them.
        async fn delete_offline_through(&self, username: &str, last: i64) -> Result<(), Error>;
    }
}

store_domain! {
    /// The ENT directory: loaded at start, changed in batches.
    pub trait DirectoryStore {
        /// The whole directory, at start.
        async fn load_directory(&self) -> Result<directory::DirectoryRows, Error>;
        /// Applies a batch of directory changes in one transaction, with one audit entry each,
        /// and sets the passwords of users it provisions (`credentials`, by username) in the same
        /// transaction. The caller has validated the changes against the directory.
        async fn apply_directory(
            &self,
            actor: &str,
            changes: &[directory::DirectoryChange],
            credentials: &[(String, Vec<ScramCredential>)],
        ) -> Result<(), Error>;
    }
}

store_domain! {
    /// The audit log of directory changes.
    pub trait AuditStore {
        /// Audit entries, newest first, older than `before` when given, and with `search` in
        /// their actor, action or change (ignoring ASCII case) when given.
        async fn audit_log(
            &self,
            limit: u32,
            before: Option<i64>,
            search: Option<&str>,
        ) -> Result<Vec<directory::AuditEntry>, Error>;
    }
}

/// A persistent room as stored: what a room is loaded back from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRoom {
    pub name: String,
    /// The configuration as JSON, which the rooms module reads.
    pub config: String,
    pub subject: Option<String>,
    pub subject_by: Option<String>,
    pub vcard: Option<String>,
    /// (bare JID, affiliation) for every affiliation but `none`.
    pub affiliations: Vec<(String, String)>,
    /// The recent groupchat messages, oldest first, with when each was sent (Unix seconds):
    /// written by `create_room`; `load_room` leaves it empty (see `load_room_history`).
    pub history: Vec<(String, i64)>,
}

/// How much groupchat history a room keeps: the newest `messages`, as long as they add up to
/// at most `bytes` (the newest message always stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBound {
    pub messages: u32,
    pub bytes: u64,
}

/// A room as listed: its name and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListing {
    pub name: String,
    pub config: String,
}

store_domain! {
    /// Persistent conversations (XEP-0045 rooms).
    pub trait RoomStore {
        /// A room with its affiliations, without its history: most stanzas to a room need none.
        async fn load_room(&self, name: &str) -> Result<Option<StoredRoom>, Error>;
        /// A room's recent groupchat messages within `bound`, oldest first.
        async fn load_room_history(
            &self,
            name: &str,
            bound: HistoryBound,
        ) -> Result<Vec<(String, i64)>, Error>;
        /// Stores a new room with its affiliations (its owner among them), atomically;
        /// `LimitReached` when `owner` already owns `limit` rooms, `Conflict` if it exists.
        async fn create_room(
            &self,
            room: &StoredRoom,
            public: bool,
            owner: &str,
            limit: u32,
        ) -> Result<(), Error>;
        async fn save_room_config(&self, name: &str, config: &str, public: bool) -> Result<(), Error>;
        async fn save_room_subject(&self, name: &str, subject: &str, by: &str) -> Result<(), Error>;
        async fn save_room_vcard(&self, name: &str, vcard: &str) -> Result<(), Error>;
        /// Sets (or, with `None`, removes) a user's affiliation with a room.
        async fn set_room_affiliation(
            &self,
            name: &str,
            jid: &str,
            affiliation: Option<&str>,
        ) -> Result<(), Error>;
        /// Deletes a room with its affiliations and history; whether there was one.
        async fn delete_room(&self, name: &str) -> Result<bool, Error>;
        /// Appends groupchat messages (room, stanza, Unix seconds) in one transaction, then keeps
        /// of each room they touched only what `keep` allows.
        async fn append_room_history(
            &self,
            rows: &[(String, String, i64)],
            keep: HistoryBound,
        ) -> Result<(), Error>;
        /// Public rooms by name, after `after`: at most `limit`, with the count of all of them.
        async fn public_rooms(
            &self,
            after: Option<&str>,
            limit: u32,
        ) -> Result<(Vec<RoomListing>, u64), Error>;
        /// The rooms where a user is owner, admin or member, by name; at most `limit`.
        async fn rooms_of(&self, jid: &str, limit: u32) -> Result<Vec<RoomListing>, Error>;
        /// How many rooms a user owns.
        async fn rooms_owned(&self, jid: &str) -> Result<u64, Error>;
    }
}

/// Every domain of the store.
#[async_trait::async_trait]
pub trait Store:
    AccountStore + RosterStore + OfflineStore + DirectoryStore + AuditStore + RoomStore + 'static
{
    /// Answers when the store does: one trivial query (the readiness check).
    async fn ping(&self) -> Result<(), Error>;
    /// Waits for running queries and closes the connections.
    async fn close(&self);
}

pub type DynStore = Arc<dyn Store>;

pub use sql::backup::{BackupSummary, backup, restore};
pub use sql::serving::{ServingMark, is_served, mark_serving};

/// Brings the schema of the store a URL names up to date, and says what it did.
pub async fn migrate(url: &str) -> Result<Migrated, Error> {
    let (store, migrated) = SqlStore::connect_reporting(url, 1).await?;
    store.close().await;
    Ok(migrated)
}

/// Opens the store a URL names and brings its schema up to date.
pub async fn open(url: &str, max_connections: u32) -> Result<DynStore, Error> {
    Ok(Arc::new(SqlStore::connect(url, max_connections).await?))
}
