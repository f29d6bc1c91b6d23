//! The ENT's communication rules: one function decides whether an actor may act towards a
//! target, from the in-memory directory, without a database round trip. Every rule is there,
//! including those that depend on what the two already are to each other (`Relation`).
//!
//! Accounts that are not in the directory (made with `causette user add`, for administrators
//! and tests) are not restricted by the rules.

pub mod directory;

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::directory::{DirectoryChange, Profile, Scope};
use crate::storage::{self, DynStore};
use directory::{DirectoryState, Invalid, User};

/// What the actor wants to do to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask for presence, accept a request: adding a contact.
    AddContact,
    /// Put the target in one's contact list, or change it there. A contact already listed may
    /// always be renamed or recategorised, whatever the rules say now (`Relation::listed`).
    EditContact,
    /// Write to the target: messages of every kind, directed presence. A contact the rules no
    /// longer allow does not stay writable; with `chat_requires_acceptance`, the target must
    /// have accepted the actor (`Relation::accepted`).
    Message,
    /// Send an IQ request to one of the target's resources (RFC 6121 §8.5.3.1): the rules of
    /// `Message`; with `chat_requires_acceptance`, the target must share its presence with
    /// the actor (`Relation::shares_presence`), since a request tells whether a resource is
    /// online. Without it, only the rules decide, as a standard server has it.
    Request,
    /// Write privately to a fellow occupant of a conversation: the communication rules of
    /// `Message`, without the accepted request (both were admitted to the conversation).
    PrivateMessage,
    /// Invite into a conversation.
    Invite,
    /// Join a conversation where the target is.
    Join,
    /// See the target in the directory search.
    Search,
    /// End a relationship with the target: remove it from one's contacts, withdraw or cancel
    /// a subscription (`unsubscribe`, `unsubscribed`). Always allowed, whatever the rules say
    /// now: nobody may be kept in a contact list, and the server writes what the target gets,
    /// so nothing of the actor's goes through.
    EndContact,
    /// Probe the target's presence (RFC 6121 §4.3): always allowed; the server answers from
    /// the target's subscription state, and only a contact who shares its presence answers.
    Probe,
    /// See the status text and payloads of a listed contact's presence. A contact stays in
    /// the list, and keeps seeing whether the other is online, away or busy, when the rules no
    /// longer allow them to write to each other (a pupil moved to another class); the text is
    /// writing, so it follows the rules of `Message`, without the accepted request (they are
    /// contacts).
    SeeStatus,
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
    /// Chat needs an accepted contact request, and the target has not accepted the actor.
    NotAccepted,
}

/// What the actor already is to the target, for the rules that depend on it. Callers fill in
/// what the action reads (see `Action`); the rest is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relation {
    /// The target is in the actor's contact list.
    pub listed: bool,
    /// The target accepted the actor as a contact (a subscription either way).
    pub accepted: bool,
    /// The target shares its presence with the actor (a `from` or `both` subscription).
    pub shares_presence: bool,
}

impl Reason {
    pub fn english(self) -> &'static str {
        match self {
            Reason::ActorProfileDisabled => "the chat is not available for your profile",
            Reason::TargetProfileDisabled => "this person does not have access to the chat",
            Reason::Rules => {
                "the communication rules of your school do not allow you to contact this person"
            }
            Reason::NotAccepted => "you can only chat with contacts who accepted your request",
        }
    }

    /// The stanza error condition of a refusal: `forbidden`, but `not-allowed` for a request
    /// not yet accepted (RFC 6120 §8.3.3: the action is refused while it stays unaccepted).
    pub fn condition(self) -> xmpp_parsers::stanza_error::DefinedCondition {
        use xmpp_parsers::stanza_error::DefinedCondition;
        match self {
            Reason::NotAccepted => DefinedCondition::NotAllowed,
            _ => DefinedCondition::Forbidden,
        }
    }

    pub fn french(self) -> &'static str {
        match self {
            Reason::ActorProfileDisabled => "le chat n'est pas ouvert à votre profil",
            Reason::TargetProfileDisabled => "cette personne n'a pas accès au chat",
            Reason::Rules => {
                "les règles de communication de votre établissement ne vous permettent pas de contacter cette personne"
            }
            Reason::NotAccepted => {
                "vous ne pouvez discuter qu'avec les contacts qui ont accepté votre demande"
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
    /// Read by every decision, without a lock; replaced whole by a change.
    state: ArcSwap<DirectoryState>,
    /// Serialises writers: validate on a copy, store, swap.
    writer: tokio::sync::Mutex<()>,
    /// Chat needs an accepted contact request (`im.chat_requires_acceptance`).
    requires_acceptance: bool,
    /// Told of every refusal (the server's metrics).
    observer: Option<Arc<dyn DenialObserver>>,
}

/// What wants to know of the policy's refusals; searches, which filter rather than refuse,
/// are not reported.
pub trait DenialObserver: Send + Sync {
    fn denied(&self, action: Action, reason: Reason);
}

impl Policy {
    /// The directory as stored, with the shipped options (chat needs an accepted request).
    pub async fn load(store: &DynStore) -> Result<Self, storage::Error> {
        let rows = store.load_directory().await?;
        Ok(Self {
            state: ArcSwap::from_pointee(DirectoryState::from_rows(rows)),
            writer: tokio::sync::Mutex::new(()),
            requires_acceptance: true,
            observer: None,
        })
    }

    /// Reports every refusal to `observer`.
    pub fn observed_by(mut self, observer: Arc<dyn DenialObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Whether chat needs an accepted contact request.
    pub fn requiring_acceptance(mut self, required: bool) -> Self {
        self.requires_acceptance = required;
        self
    }

    pub fn requires_acceptance(&self) -> bool {
        self.requires_acceptance
    }

    /// The directory as it is now; cheap (one reference count, no lock).
    pub fn snapshot(&self) -> Arc<DirectoryState> {
        self.state.load_full()
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
        self.apply_locked(store, actor, changes, credentials).await
    }

    /// Applies the changes `build` makes from the directory as it is, with no other writer in
    /// between: a read-modify-write (a partial update) that cannot lose a concurrent change.
    /// Returns the users affected and the changes made.
    pub async fn apply_from(
        &self,
        store: &DynStore,
        actor: &str,
        build: impl FnOnce(&DirectoryState) -> Result<Vec<DirectoryChange>, Invalid>,
        credentials: &[(String, Vec<storage::ScramCredential>)],
    ) -> Result<(BTreeSet<String>, Vec<DirectoryChange>), ApplyError> {
        let _writer = self.writer.lock().await;
        let changes =
            build(&self.snapshot()).map_err(|invalid| ApplyError::Invalid { index: 0, invalid })?;
        let affected = self
            .apply_locked(store, actor, &changes, credentials)
            .await?;
        Ok((affected, changes))
    }

    /// `apply`, the writer lock held.
    async fn apply_locked(
        &self,
        store: &DynStore,
        actor: &str,
        changes: &[DirectoryChange],
        credentials: &[(String, Vec<storage::ScramCredential>)],
    ) -> Result<BTreeSet<String>, ApplyError> {
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
    /// The copy shares all it does not change with `base` (persistent maps).
    fn install(
        &self,
        mut base: Arc<DirectoryState>,
        mut next: DirectoryState,
        changes: &[DirectoryChange],
    ) {
        loop {
            let previous = self.state.compare_and_swap(&base, Arc::new(next));
            if Arc::ptr_eq(&previous, &base) {
                return;
            }
            base = arc_swap::Guard::into_inner(previous);
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
        let state = self.state.load();
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
        let is_first = |state: &DirectoryState| {
            state
                .users
                .get(username)
                .is_some_and(|u| u.first_login.is_none())
        };
        if !is_first(&self.state.load()) {
            return false;
        }
        let mut first = false;
        self.state.rcu(|current| {
            first = is_first(current);
            let mut next = (**current).clone();
            if first && let Some(user) = next.users.get_mut(username).map(Arc::make_mut) {
                user.first_login = Some(at);
            }
            next
        });
        first
    }

    /// The name the directory gives a user ("NOM Prénom"), if the user is in it.
    pub fn display_name(&self, username: &str) -> Option<String> {
        let state = self.state.load();
        let user = state.users.get(username)?;
        let name = user.display_name.trim();
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// The one decision every enforcement point asks for.
    pub fn decide(
        &self,
        actor: &str,
        target: &str,
        action: Action,
        relation: Relation,
    ) -> Decision {
        let accepted = match action {
            Action::Message => relation.accepted,
            Action::Request => relation.shares_presence,
            _ => true,
        };
        let decision = match decide(&self.state.load(), actor, target, action, relation) {
            Decision::Allow if self.requires_acceptance && !accepted && actor != target => {
                Decision::Deny(Reason::NotAccepted)
            }
            other => other,
        };
        // Searching and presence shown without its text are not refusals a user meets.
        if let (Decision::Deny(reason), Some(observer)) = (decision, &self.observer)
            && !matches!(action, Action::Search | Action::SeeStatus)
        {
            observer.denied(action, reason);
        }
        decision
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

/// The directory's rules (the options of `Policy::decide` aside).
pub fn decide(
    state: &DirectoryState,
    actor: &str,
    target: &str,
    action: Action,
    relation: Relation,
) -> Decision {
    if actor == target
        || matches!(action, Action::EndContact | Action::Probe)
        || (action == Action::EditContact && relation.listed)
    {
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
