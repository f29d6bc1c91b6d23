//! Rosters (RFC 6121 §2): the in-memory copy kept for online accounts and every change (store
//! first, then memory, then pushes); the `jabber:iq:roster` IQ is `im::roster_iq`.
//!
//! Online accounts keep their roster in memory so that presence broadcast and the
//! "chat only between accepted contacts" check cost no database round trip. Every change of a
//! user's roster takes that user's lock, writes the store, then updates the memory copy, so the
//! two never disagree; a login loads the copy under the same lock.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use jid::{BareJid, Jid};
use minidom::Element;
use rand::Rng;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::roster::{Ask, Group, Item, Subscription as XmppSubscription};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::im::Context;
use crate::storage::{self, RosterItem, RosterSnapshot, Subscription};

/// Marks a roster item whose subscription request the contact refused ("Invitation refusée").
pub const CAUSETTE_ROSTER_NS: &str = "urn:causette:roster:0";

/// The roster of an online account.
#[derive(Debug, Default)]
pub struct RosterState {
    pub version: i64,
    pub items: HashMap<String, RosterItem>,
    pub empty_categories: BTreeSet<String>,
}

impl RosterState {
    fn from_snapshot(snapshot: RosterSnapshot) -> Self {
        Self {
            version: snapshot.version,
            items: snapshot
                .items
                .into_iter()
                .map(|i| (i.contact.clone(), i))
                .collect(),
            empty_categories: snapshot.empty_categories.into_iter().collect(),
        }
    }
}

struct Online {
    roster: Arc<RwLock<RosterState>>,
    sessions: usize,
}

/// Rosters of online accounts, and the per-user locks that serialise roster changes.
pub struct Rosters {
    online: DashMap<BareJid, Online>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

const LOCK_STRIPES: usize = 64;

impl Default for Rosters {
    fn default() -> Self {
        Self {
            online: DashMap::new(),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

pub type Error = storage::Error;

impl Rosters {
    fn lock_for(&self, user: &BareJid) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut hasher);
        &self.locks[(hasher.finish() as usize) % LOCK_STRIPES]
    }

    pub(super) fn cached(&self, user: &BareJid) -> Option<Arc<RwLock<RosterState>>> {
        self.online.get(user).map(|o| o.roster.clone())
    }

    /// How many items a roster holds: from memory for online accounts, else from the store.
    async fn count(&self, cx: &Context<'_>, user: &BareJid) -> Result<usize, Error> {
        if let Some(roster) = self.cached(user)
            && let Ok(state) = roster.read()
        {
            return Ok(state.items.len());
        }
        let stored = cx.store.roster_item_count(local(user)).await?;
        Ok(usize::try_from(stored).unwrap_or(usize::MAX))
    }

    /// The categories a user has: groups in use and empty ones. `None` when the roster is not
    /// in memory (the account is offline).
    pub fn categories(&self, user: &BareJid) -> Option<std::collections::BTreeSet<String>> {
        let roster = self.cached(user)?;
        let state = roster.read().ok()?;
        let mut names: std::collections::BTreeSet<String> =
            state.empty_categories.iter().cloned().collect();
        for item in state.items.values() {
            names.extend(item.groups.iter().cloned());
        }
        Some(names)
    }

    /// Reads one item: from memory for online accounts, else from the store.
    pub async fn item(
        &self,
        cx: &Context<'_>,
        user: &BareJid,
        contact: &str,
    ) -> Result<Option<RosterItem>, Error> {
        if let Some(roster) = self.cached(user) {
            return Ok(roster
                .read()
                .ok()
                .and_then(|r| r.items.get(contact).cloned()));
        }
        cx.store.roster_item(local(user), contact).await
    }

    /// The item, only if the account is online (no store access).
    pub fn cached_item(&self, user: &BareJid, contact: &str) -> Option<Option<RosterItem>> {
        self.cached_check(user, contact, |item| item.cloned())
    }

    /// Looks at an online account's item without copying it: for the message hot path.
    pub fn cached_check<T>(
        &self,
        user: &BareJid,
        contact: &str,
        check: impl FnOnce(Option<&RosterItem>) -> T,
    ) -> Option<T> {
        let online = self.online.get(user)?;
        let guard = online.roster.read().ok()?;
        Some(check(guard.items.get(contact)))
    }

    /// Contacts of an online account whose item satisfies `keep`.
    pub fn contacts_where(
        &self,
        user: &BareJid,
        keep: impl Fn(&RosterItem) -> bool,
    ) -> Vec<String> {
        let Some(roster) = self.cached(user) else {
            return Vec::new();
        };
        let Ok(guard) = roster.read() else {
            return Vec::new();
        };
        guard
            .items
            .values()
            .filter(|i| keep(i))
            .map(|i| i.contact.clone())
            .collect()
    }

    /// Loads the roster of an account that binds a resource.
    pub async fn attach(&self, cx: &Context<'_>, user: &BareJid) -> Result<(), Error> {
        let _guard = self.lock_for(user).lock().await;
        if let Some(mut online) = self.online.get_mut(user) {
            online.sessions += 1;
            return Ok(());
        }
        let snapshot = cx.store.load_roster(local(user)).await?;
        self.online.insert(
            user.clone(),
            Online {
                roster: Arc::new(RwLock::new(RosterState::from_snapshot(snapshot))),
                sessions: 1,
            },
        );
        Ok(())
    }

    /// Forgets the roster of an account once its last session is gone.
    pub async fn detach(&self, user: &BareJid) {
        let _guard = self.lock_for(user).lock().await;
        self.online.remove_if_mut(user, |_, online| {
            online.sessions = online.sessions.saturating_sub(1);
            online.sessions == 0
        });
    }

    /// Runs `change` on a user's roster under that user's lock. `change` gets the current
    /// item (if any) and returns what to store: `Some(item)` to save, `None` to remove, or an
    /// error to abort. Pushes the result to the user's interested resources.
    pub async fn update<F>(
        &self,
        cx: &Context<'_>,
        user: &BareJid,
        contact: &str,
        change: F,
    ) -> Result<Change, Error>
    where
        F: FnOnce(Option<RosterItem>) -> Update,
    {
        let _guard = self.lock_for(user).lock().await;
        let current = match self.cached(user) {
            Some(roster) => roster
                .read()
                .ok()
                .and_then(|r| r.items.get(contact).cloned()),
            None => cx.store.roster_item(local(user), contact).await?,
        };
        let before = current.clone();
        let (version, after) = match change(current) {
            Update::Keep => {
                return Ok(Change {
                    before: before.clone(),
                    after: before,
                });
            }
            Update::Save(item) => {
                if before.as_ref() == Some(&item) {
                    return Ok(Change {
                        before,
                        after: Some(item),
                    });
                }
                // Every way a roster grows comes through here (roster sets, requests sent,
                // requests accepted on the other's behalf): the limit holds for all of them.
                if before.is_none() && self.count(cx, user).await? >= cx.config.max_roster_items {
                    return Err(Error::LimitReached);
                }
                let version = cx.store.save_roster_item(local(user), &item).await?;
                (version, Some(item))
            }
            Update::Remove => match cx.store.delete_roster_item(local(user), contact).await? {
                Some(version) => (version, None),
                None => {
                    return Ok(Change {
                        before,
                        after: None,
                    });
                }
            },
        };
        if let Some(roster) = self.cached(user)
            && let Ok(mut state) = roster.write()
        {
            state.version = version;
            match &after {
                Some(item) => {
                    for group in &item.groups {
                        state.empty_categories.remove(group);
                    }
                    state.items.insert(contact.to_owned(), item.clone());
                }
                None => {
                    state.items.remove(contact);
                }
            }
        }
        let pushed = after.clone().unwrap_or_else(|| RosterItem {
            contact: contact.to_owned(),
            ..RosterItem::default()
        });
        push(cx, user, &[(pushed, after.is_none())], version);
        Ok(Change { before, after })
    }

    /// Applies the result of a category operation to the memory copy and pushes the items.
    pub async fn categories_changed(
        &self,
        cx: &Context<'_>,
        user: &BareJid,
        version: i64,
        changed: Vec<RosterItem>,
        empty: impl FnOnce(&mut BTreeSet<String>),
    ) {
        if let Some(roster) = self.cached(user)
            && let Ok(mut state) = roster.write()
        {
            state.version = version;
            empty(&mut state.empty_categories);
            for item in &changed {
                for group in &item.groups {
                    state.empty_categories.remove(group);
                }
                state.items.insert(item.contact.clone(), item.clone());
            }
        }
        let items: Vec<(RosterItem, bool)> = changed.into_iter().map(|i| (i, false)).collect();
        push(cx, user, &items, version);
    }

    /// The lock of a user, for category operations that change several items at once.
    pub async fn lock(&self, user: &BareJid) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock_for(user).lock().await
    }

    /// A snapshot of an online account's roster, or the stored one.
    pub async fn snapshot(
        &self,
        cx: &Context<'_>,
        user: &BareJid,
    ) -> Result<RosterSnapshot, Error> {
        if let Some(roster) = self.cached(user)
            && let Ok(state) = roster.read()
        {
            let mut items: Vec<RosterItem> = state.items.values().cloned().collect();
            items.sort_by(|a, b| a.contact.cmp(&b.contact));
            return Ok(RosterSnapshot {
                version: state.version,
                items,
                empty_categories: state.empty_categories.iter().cloned().collect(),
            });
        }
        cx.store.load_roster(local(user)).await
    }
}

/// What an update does.
pub enum Update {
    Keep,
    Save(RosterItem),
    Remove,
}

/// An item before and after an update.
pub struct Change {
    pub before: Option<RosterItem>,
    pub after: Option<RosterItem>,
}

/// The localpart of a local user's bare JID, as the store keys accounts.
pub fn local(user: &BareJid) -> &str {
    user.node().map(|n| n.as_str()).unwrap_or_default()
}

/// The XML of one roster item; `removed` gives `subscription='remove'` (RFC 6121 §2.5).
pub fn item_element(item: &RosterItem, removed: bool) -> Option<Element> {
    let jid = BareJid::new(&item.contact).ok()?;
    let parsed = Item {
        jid,
        name: if removed { None } else { item.name.clone() },
        subscription: if removed {
            XmppSubscription::Remove
        } else {
            match item.subscription {
                Subscription::None => XmppSubscription::None,
                Subscription::To => XmppSubscription::To,
                Subscription::From => XmppSubscription::From,
                Subscription::Both => XmppSubscription::Both,
            }
        },
        ask: if item.ask && !removed {
            Ask::Subscribe
        } else {
            Ask::None
        },
        groups: if removed {
            Vec::new()
        } else {
            item.groups.iter().cloned().map(Group).collect()
        },
        approved: (item.approved && !removed).then_some(true),
    };
    let mut element = Element::from(parsed);
    if item.refused && !removed {
        element.append_child(Element::builder("refused", CAUSETTE_ROSTER_NS).build());
    }
    Some(element)
}

pub(super) fn query(version: i64, items: impl IntoIterator<Item = Element>) -> Element {
    Element::builder("query", crate::ns::ROSTER)
        .attr(crate::ns::name("ver"), version.to_string())
        .append_all(items)
        .build()
}

/// Sends roster pushes (RFC 6121 §2.1.6) to the resources of `user` that asked for the roster.
fn push(cx: &Context<'_>, user: &BareJid, items: &[(RosterItem, bool)], version: i64) {
    cx.router.deliver_to_roster_readers(user, |reader| {
        items
            .iter()
            .filter_map(|(item, removed)| item_element(item, *removed))
            .map(|element| {
                Stanza::Iq(Iq::Set {
                    from: Some(Jid::from(user.clone())),
                    to: Some(Jid::from(reader.clone())),
                    id: format!("push-{:x}", rand::thread_rng().r#gen::<u64>()),
                    payload: query(version, [element]),
                })
            })
            .collect()
    });
}

/// Category names, checked and without duplicates.
/// Checks roster groups as a roster set does, with the default limits.
#[cfg(feature = "fuzzing")]
pub fn fuzz_groups<'a>(names: impl Iterator<Item = &'a str>) {
    let _ = validate_groups(&crate::config::ImConfig::default(), names);
}

pub fn validate_groups<'a>(
    im: &crate::config::ImConfig,
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, (DefinedCondition, &'static str)> {
    let mut groups: Vec<String> = Vec::new();
    for name in names {
        let name = name.trim();
        check_category_name(im, name)?;
        if !groups.iter().any(|g| g == name) {
            groups.push(name.to_owned());
        }
    }
    if groups.len() > im.max_categories_per_contact {
        return Err((
            DefinedCondition::NotAcceptable,
            "too many categories for one contact",
        ));
    }
    Ok(groups)
}

pub fn check_category_name(
    im: &crate::config::ImConfig,
    name: &str,
) -> Result<(), (DefinedCondition, &'static str)> {
    if name.is_empty() {
        return Err((
            DefinedCondition::NotAcceptable,
            "category names cannot be empty",
        ));
    }
    if name.chars().count() > im.max_category_name {
        return Err((DefinedCondition::NotAcceptable, "category name too long"));
    }
    Ok(())
}
