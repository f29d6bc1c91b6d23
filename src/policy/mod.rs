//! The ENT's communication rules: one function decides whether an actor may act towards a
//! target, from the in-memory directory, without a database round trip.
//!
//! Accounts that are not in the directory (made with `causette user add`, for administrators
//! and tests) are not restricted by the rules.

pub mod directory;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use crate::storage::directory::{DirectoryChange, Profile, Scope};
use crate::storage::{self, DynStore};
use directory::{DirectoryState, Invalid, User};

/// What the actor wants to do to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add to the roster, ask for presence, accept a request.
    AddContact,
    /// Send a one-to-one message.
    Message,
    /// Invite into a conversation.
    Invite,
    /// Join a conversation where the target is.
    Join,
    /// See the target in the directory search.
    Search,
}

/// Why an action is refused; each reason has an English and a French text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The actor's own profile has no chat access.
    ActorProfileDisabled,
    /// The target's profile has no chat access.
    TargetProfileDisabled,
    /// The communication rules of the structures do not allow it.
    Rules,
}

impl Reason {
    pub fn english(self) -> &'static str {
        match self {
            Reason::ActorProfileDisabled => "the chat is not available for your profile",
            Reason::TargetProfileDisabled => "this person does not have access to the chat",
            Reason::Rules => {
                "the communication rules of your school do not allow you to contact this person"
            }
        }
    }

    pub fn french(self) -> &'static str {
        match self {
            Reason::ActorProfileDisabled => "le chat n'est pas ouvert à votre profil",
            Reason::TargetProfileDisabled => "cette personne n'a pas accès au chat",
            Reason::Rules => {
                "les règles de communication de votre établissement ne vous permettent pas de contacter cette personne"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Reason),
}

/// The shipped matrix, used where a structure has not set a cell (docs/policy.md).
pub fn default_scope(from: Profile, to: Profile) -> Scope {
    use Profile::*;
    match (from, to) {
        (Student, Student) | (Student, Teacher) => Scope::SameClass,
        (Student, Staff) => Scope::SameStructure,
        (Student, Parent) | (Student, Partner) => Scope::None,
        (Teacher, Student) | (Teacher, Parent) => Scope::SameClass,
        (Teacher, Teacher) | (Teacher, Staff) | (Teacher, Partner) => Scope::SameStructure,
        (Parent, Teacher) => Scope::SameClass,
        (Parent, Staff) => Scope::SameStructure,
        (Parent, Student) | (Parent, Parent) | (Parent, Partner) => Scope::None,
        (Staff, _) => Scope::SameStructure,
        (Partner, Teacher) | (Partner, Staff) | (Partner, Partner) => Scope::SameStructure,
        (Partner, Student) | (Partner, Parent) => Scope::None,
    }
}

/// The error a batch of changes met.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("change {index}: {invalid}")]
    Invalid { index: usize, invalid: Invalid },
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

pub struct Policy {
    state: RwLock<Arc<DirectoryState>>,
    /// Serialises writers: validate on a copy, store, swap.
    writer: tokio::sync::Mutex<()>,
}

impl Policy {
    pub async fn load(store: &DynStore) -> Result<Self, storage::Error> {
        let rows = store.load_directory().await?;
        Ok(Self {
            state: RwLock::new(Arc::new(DirectoryState::from_rows(rows))),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory as it is now; cheap (one reference count).
    pub fn snapshot(&self) -> Arc<DirectoryState> {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Validates a batch, stores it in one transaction, then makes it live. Returns the users
    /// whose chat access may have been withdrawn by the batch.
    pub async fn apply(
        &self,
        store: &DynStore,
        actor: &str,
        changes: &[DirectoryChange],
        credentials: &[(String, Vec<storage::ScramCredential>)],
    ) -> Result<BTreeSet<String>, ApplyError> {
        let _writer = self.writer.lock().await;
        let base = self.snapshot();
        let mut next = (*base).clone();
        let mut affected = BTreeSet::new();
        for (index, change) in changes.iter().enumerate() {
            next.apply(change)
                .map_err(|invalid| ApplyError::Invalid { index, invalid })?;
            match change {
                DirectoryChange::SetProfileAccess {
                    structure,
                    enabled: false,
                    ..
                } => {
                    if let Some(s) = next.structures.get(structure) {
                        affected.extend(s.members.iter().cloned());
                    }
                }
                DirectoryChange::PutUser { username, .. } => {
                    affected.insert(username.clone());
                }
                DirectoryChange::DeleteUser { username } => {
                    affected.insert(username.clone());
                }
                DirectoryChange::DeleteStructure { .. } => {
                    affected.extend(next.users.keys().cloned());
                }
                _ => {}
            }
        }
        store.apply_directory(actor, changes, credentials).await?;
        self.install(base, next, changes);
        Ok(affected)
    }

    /// Makes `next` (the changes applied to `base`) live. Logins note themselves in the state
    /// while the store is written (`note_login`): if the state moved on from `base`, the
    /// changes are applied again to the state as it is now, so that no first login is lost.
    /// The copy is made outside the lock, which is held only to compare and swap.
    fn install(
        &self,
        mut base: Arc<DirectoryState>,
        mut next: DirectoryState,
        changes: &[DirectoryChange],
    ) {
        loop {
            {
                let mut state = self
                    .state
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if Arc::ptr_eq(&state, &base) {
                    *state = Arc::new(next);
                    return;
                }
            }
            base = self.snapshot();
            next = (*base).clone();
            for change in changes {
                if let Err(invalid) = next.apply(change) {
                    // Only first logins can have moved the state on, and they change nothing
                    // a change is checked against.
                    tracing::error!(%invalid, "a directory change no longer applies");
                }
            }
        }
    }

    /// Whether a user may log in: not when their profile's chat access is off.
    pub fn login_allowed(&self, username: &str) -> Result<(), Reason> {
        let state = self.snapshot();
        match state.users.get(username) {
            Some(user) if !access_enabled(&state, user) => Err(Reason::ActorProfileDisabled),
            _ => Ok(()),
        }
    }

    /// Whether the user was deleted from the directory by the ENT, or lost chat access.
    pub fn still_allowed(&self, username: &str) -> bool {
        self.login_allowed(username).is_ok()
    }

    /// Notes a first login in memory (the store is told separately).
    pub fn note_login(&self, username: &str, at: i64) -> bool {
        let Ok(mut state) = self.state.write() else {
            return false;
        };
        let first = state
            .users
            .get(username)
            .is_some_and(|u| u.first_login.is_none());
        if first {
            let next = Arc::make_mut(&mut state);
            if let Some(user) = next.users.get_mut(username) {
                user.first_login = Some(at);
            }
        }
        first
    }

    /// The one decision every enforcement point asks for.
    pub fn decide(&self, actor: &str, target: &str, action: Action) -> Decision {
        decide(&self.snapshot(), actor, target, action)
    }
}

fn access_enabled(state: &DirectoryState, user: &User) -> bool {
    if user.structures.is_empty() {
        return true;
    }
    user.structures.iter().any(|s| {
        state
            .structures
            .get(s)
            .and_then(|s| s.access.get(&user.profile).copied())
            .unwrap_or(true)
    })
}

fn shares<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> bool {
    a.intersection(b).next().is_some()
}

/// Classes of `user` in `structure`; for a parent, the classes of their children there.
fn classes_in(state: &DirectoryState, user: &User, structure: &str) -> BTreeSet<String> {
    let own = user.classes.iter();
    let children = user
        .children
        .iter()
        .filter_map(|c| state.users.get(c))
        .flat_map(|c| c.classes.iter());
    let mut classes: Vec<&String> = own.collect();
    if user.profile == Profile::Parent {
        classes = children.collect();
    }
    classes
        .into_iter()
        .filter(|c| {
            state
                .classes
                .get(*c)
                .is_some_and(|c| c.structure == structure)
        })
        .cloned()
        .collect()
}

pub fn decide(state: &DirectoryState, actor: &str, target: &str, _action: Action) -> Decision {
    if actor == target {
        return Decision::Allow;
    }
    let (Some(a), Some(t)) = (state.users.get(actor), state.users.get(target)) else {
        return Decision::Allow;
    };
    if !access_enabled(state, a) {
        return Decision::Deny(Reason::ActorProfileDisabled);
    }
    if !access_enabled(state, t) {
        return Decision::Deny(Reason::TargetProfileDisabled);
    }
    // An ENT group widens the circle whatever the matrix says; family links always hold.
    if shares(&a.groups, &t.groups) || a.children.contains(target) || a.parents.contains(target) {
        return Decision::Allow;
    }
    for structure_id in &a.structures {
        let Some(structure) = state.structures.get(structure_id) else {
            continue;
        };
        let scope = structure
            .rules
            .get(&(a.profile, t.profile))
            .copied()
            .unwrap_or_else(|| default_scope(a.profile, t.profile));
        let allowed = match scope {
            Scope::None => false,
            Scope::Any => true,
            Scope::SameStructure => t.structures.contains(structure_id),
            Scope::SameClass => shares(
                &classes_in(state, a, structure_id),
                &classes_in(state, t, structure_id),
            ),
        };
        if allowed {
            return Decision::Allow;
        }
    }
    Decision::Deny(Reason::Rules)
}

#[cfg(test)]
mod tests;
