//! The store, timed: every operation's latency goes to `causette_store_query_seconds`, by
//! operation, whichever backend answers.

use std::sync::Arc;

use crate::directory;
use crate::storage::{
    AccountStore, AuditStore, DirectoryStore, DynStore, Error, HistoryBound, OfflineMessage,
    OfflineStore, RoomListing, RoomStore, RosterItem, RosterSnapshot, RosterStore, ScramCredential,
    ScramHash, Store, StoredRoom, SubscriptionRequest,
};

use super::{Metrics, timed};

/// Wraps `inner` so that each call is timed into `metrics`.
pub(crate) fn timed_store(inner: DynStore, metrics: Arc<Metrics>) -> DynStore {
    Arc::new(TimedStore { inner, metrics })
}

struct TimedStore {
    inner: DynStore,
    metrics: Arc<Metrics>,
}

macro_rules! time {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        timed(&$self.metrics, stringify!($method), $self.inner.$method($($arg),*)).await
    };
}

#[async_trait::async_trait]
impl AccountStore for TimedStore {
    async fn create_user(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error> {
        time!(self.create_user(username, credentials))
    }
    async fn set_credentials(
        &self,
        username: &str,
        credentials: &[ScramCredential],
    ) -> Result<(), Error> {
        time!(self.set_credentials(username, credentials))
    }
    async fn delete_user(&self, username: &str) -> Result<(), Error> {
        time!(self.delete_user(username))
    }
    async fn user_exists(&self, username: &str) -> Result<bool, Error> {
        time!(self.user_exists(username))
    }
    async fn list_users(&self) -> Result<Vec<String>, Error> {
        time!(self.list_users())
    }
    async fn credential(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredential>, Error> {
        time!(self.credential(username, hash))
    }
    async fn record_first_login(&self, username: &str, at: i64) -> Result<(), Error> {
        time!(self.record_first_login(username, at))
    }
}

#[async_trait::async_trait]
impl RosterStore for TimedStore {
    async fn load_roster(&self, username: &str) -> Result<RosterSnapshot, Error> {
        time!(self.load_roster(username))
    }
    async fn roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, Error> {
        time!(self.roster_item(username, contact))
    }
    async fn roster_item_count(&self, username: &str) -> Result<u64, Error> {
        time!(self.roster_item_count(username))
    }
    async fn save_roster_item(&self, username: &str, item: &RosterItem) -> Result<i64, Error> {
        time!(self.save_roster_item(username, item))
    }
    async fn delete_roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<i64>, Error> {
        time!(self.delete_roster_item(username, contact))
    }
    async fn create_category(&self, username: &str, name: &str) -> Result<i64, Error> {
        time!(self.create_category(username, name))
    }
    async fn rename_category(
        &self,
        username: &str,
        from: &str,
        to: &str,
    ) -> Result<(i64, Vec<RosterItem>), Error> {
        time!(self.rename_category(username, from, to))
    }
    async fn delete_category(
        &self,
        username: &str,
        name: &str,
        fallback: &str,
    ) -> Result<(i64, Vec<RosterItem>), Error> {
        time!(self.delete_category(username, name, fallback))
    }
    async fn subscription_requests(
        &self,
        username: &str,
    ) -> Result<Vec<SubscriptionRequest>, Error> {
        time!(self.subscription_requests(username))
    }
    async fn save_subscription_request(
        &self,
        username: &str,
        request: &SubscriptionRequest,
        limit: u32,
    ) -> Result<(), Error> {
        time!(self.save_subscription_request(username, request, limit))
    }
    async fn delete_subscription_request(
        &self,
        username: &str,
        requester: &str,
    ) -> Result<bool, Error> {
        time!(self.delete_subscription_request(username, requester))
    }
}

#[async_trait::async_trait]
impl OfflineStore for TimedStore {
    async fn push_offline(&self, username: &str, stanza: &str, limit: u32) -> Result<(), Error> {
        let kept = time!(self.push_offline(username, stanza, limit));
        if kept.is_ok() {
            self.metrics.offline_stored.inc();
        }
        kept
    }
    async fn offline_batch(
        &self,
        username: &str,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>, Error> {
        time!(self.offline_batch(username, after, limit, max_bytes))
    }
    async fn delete_offline_through(&self, username: &str, last: i64) -> Result<(), Error> {
        time!(self.delete_offline_through(username, last))
    }
}

#[async_trait::async_trait]
impl DirectoryStore for TimedStore {
    async fn load_directory(&self) -> Result<directory::DirectoryRows, Error> {
        time!(self.load_directory())
    }
    async fn apply_directory(
        &self,
        actor: &str,
        changes: &[directory::DirectoryChange],
        credentials: &[(String, Vec<ScramCredential>)],
    ) -> Result<(), Error> {
        time!(self.apply_directory(actor, changes, credentials))
    }
}

#[async_trait::async_trait]
impl AuditStore for TimedStore {
    async fn audit_log(
        &self,
        limit: u32,
        before: Option<i64>,
        search: Option<&str>,
    ) -> Result<Vec<directory::AuditEntry>, Error> {
        time!(self.audit_log(limit, before, search))
    }
}

#[async_trait::async_trait]
impl RoomStore for TimedStore {
    async fn load_room(&self, name: &str) -> Result<Option<StoredRoom>, Error> {
        time!(self.load_room(name))
    }
    async fn load_room_history(
        &self,
        name: &str,
        bound: HistoryBound,
    ) -> Result<Vec<(String, i64)>, Error> {
        time!(self.load_room_history(name, bound))
    }
    async fn create_room(
        &self,
        room: &StoredRoom,
        public: bool,
        owner: &str,
        limit: u32,
    ) -> Result<(), Error> {
        time!(self.create_room(room, public, owner, limit))
    }
    async fn save_room_config(&self, name: &str, config: &str, public: bool) -> Result<(), Error> {
        time!(self.save_room_config(name, config, public))
    }
    async fn save_room_subject(&self, name: &str, subject: &str, by: &str) -> Result<(), Error> {
        time!(self.save_room_subject(name, subject, by))
    }
    async fn save_room_vcard(&self, name: &str, vcard: &str) -> Result<(), Error> {
        time!(self.save_room_vcard(name, vcard))
    }
    async fn set_room_affiliation(
        &self,
        name: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), Error> {
        time!(self.set_room_affiliation(name, jid, affiliation))
    }
    async fn delete_room(&self, name: &str) -> Result<bool, Error> {
        time!(self.delete_room(name))
    }
    async fn append_room_history(
        &self,
        rows: &[(String, String, i64)],
        keep: HistoryBound,
    ) -> Result<(), Error> {
        time!(self.append_room_history(rows, keep))
    }
    async fn public_rooms(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<RoomListing>, u64), Error> {
        time!(self.public_rooms(after, limit))
    }
    async fn rooms_of(&self, jid: &str, limit: u32) -> Result<Vec<RoomListing>, Error> {
        time!(self.rooms_of(jid, limit))
    }
    async fn rooms_owned(&self, jid: &str) -> Result<u64, Error> {
        time!(self.rooms_owned(jid))
    }
}

#[async_trait::async_trait]
impl Store for TimedStore {
    async fn ping(&self) -> Result<(), Error> {
        time!(self.ping())
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
