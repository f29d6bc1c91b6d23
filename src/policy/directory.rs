//! The in-memory directory index: every decision reads it, none touches the database.
//!
//! Changes are validated and applied to a copy, written to the store in one transaction, and
//! only then swapped in, so the index never holds what the store refused.
//!
//! The maps and the member sets are persistent (imbl): a copy shares everything with the
//! original, and a change copies only the path to what it touches, so a change costs the same
//! with 100 users or 100,000 (bench/RESULTS.md, "Directory changes").

use std::collections::{BTreeSet, HashMap};

use std::sync::Arc;

use imbl::{HashMap as SharedMap, OrdSet};

use crate::directory::{DirectoryChange, DirectoryRows, Profile, Scope};

#[derive(Debug, Clone, Default)]
pub struct Structure {
    pub name: String,
    /// Profiles whose access was set; absent means on.
    pub access: HashMap<Profile, bool>,
    /// Rules set by the admin; absent cells use the default matrix.
    pub rules: HashMap<(Profile, Profile), Scope>,
    pub members: OrdSet<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub display_name: String,
    pub profile: Profile,
    pub structures: BTreeSet<String>,
    pub classes: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub parents: BTreeSet<String>,
    pub children: BTreeSet<String>,
    pub hidden: bool,
    pub first_login: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Class {
    pub structure: String,
    pub name: String,
    pub members: OrdSet<String>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub members: OrdSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DirectoryState {
    pub structures: SharedMap<String, Structure>,
    /// Values behind an `Arc`: a map node holds a pointer per slot instead of a whole user, and
    /// a change copies the one user it touches.
    pub users: SharedMap<String, Arc<User>>,
    pub classes: SharedMap<String, Class>,
    pub groups: SharedMap<String, Group>,
}

/// Why a change was refused: what an API client needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("unknown structure {0:?}")]
    UnknownStructure(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown class {0:?}")]
    UnknownClass(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("{0}")]
    Bad(String),
}

impl Invalid {
    /// Unknown ids are "not found"; the rest is bad input.
    pub fn is_not_found(&self) -> bool {
        !matches!(self, Invalid::Bad(_))
    }
}

fn check_id(kind: &str, id: &str) -> Result<(), Invalid> {
    if id.trim().is_empty() || id.len() > 255 {
        return Err(Invalid::Bad(format!("{kind} must be 1 to 255 bytes")));
    }
    Ok(())
}

fn check_name(kind: &str, name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(Invalid::Bad(format!("{kind} must be 1 to 255 characters")));
    }
    Ok(())
}

impl DirectoryState {
    pub fn from_rows(rows: DirectoryRows) -> Self {
        let mut state = DirectoryState::default();
        for (id, name) in rows.structures {
            state.structures.insert(
                id,
                Structure {
                    name,
                    ..Structure::default()
                },
            );
        }
        for (username, display_name, profile, hidden, first_login) in rows.users {
            let Some(profile) = Profile::parse(&profile) else {
                continue;
            };
            state.users.insert(
                username,
                Arc::new(User {
                    display_name,
                    profile,
                    structures: BTreeSet::new(),
                    classes: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    parents: BTreeSet::new(),
                    children: BTreeSet::new(),
                    hidden,
                    first_login,
                }),
            );
        }
        for (structure, username) in rows.structure_members {
            state.join_structure(&structure, &username);
        }
        for (id, structure, name) in rows.classes {
            state.classes.insert(
                id,
                Class {
                    structure,
                    name,
                    members: OrdSet::new(),
                },
            );
        }
        for (class, username) in rows.class_members {
            state.join_class(&class, &username);
        }
        for (id, name) in rows.groups {
            state.groups.insert(
                id,
                Group {
                    name,
                    members: OrdSet::new(),
                },
            );
        }
        for (group, username) in rows.group_members {
            state.join_group(&group, &username);
        }
        for (parent, child) in rows.parent_links {
            state.link(&parent, &child);
        }
        for (structure, profile, enabled) in rows.profile_access {
            if let (Some(s), Some(p)) = (
                state.structures.get_mut(&structure),
                Profile::parse(&profile),
            ) {
                s.access.insert(p, enabled);
            }
        }
        for (structure, from, to, scope) in rows.rules {
            if let (Some(s), Some(f), Some(t), Some(sc)) = (
                state.structures.get_mut(&structure),
                Profile::parse(&from),
                Profile::parse(&to),
                Scope::parse(&scope),
            ) {
                s.rules.insert((f, t), sc);
            }
        }
        state
    }

    fn join_structure(&mut self, structure: &str, username: &str) {
        if let (Some(s), Some(u)) = (
            self.structures.get_mut(structure),
            self.users.get_mut(username).map(Arc::make_mut),
        ) {
            s.members.insert(username.to_owned());
            u.structures.insert(structure.to_owned());
        }
    }

    fn join_class(&mut self, class: &str, username: &str) {
        if let (Some(c), Some(u)) = (
            self.classes.get_mut(class),
            self.users.get_mut(username).map(Arc::make_mut),
        ) {
            c.members.insert(username.to_owned());
            u.classes.insert(class.to_owned());
        }
    }

    fn leave_class(&mut self, class: &str, username: &str) {
        if let Some(c) = self.classes.get_mut(class) {
            c.members.remove(username);
        }
        if let Some(u) = self.users.get_mut(username).map(Arc::make_mut) {
            u.classes.remove(class);
        }
    }

    fn join_group(&mut self, group: &str, username: &str) {
        if let (Some(g), Some(u)) = (
            self.groups.get_mut(group),
            self.users.get_mut(username).map(Arc::make_mut),
        ) {
            g.members.insert(username.to_owned());
            u.groups.insert(group.to_owned());
        }
    }

    fn leave_group(&mut self, group: &str, username: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            g.members.remove(username);
        }
        if let Some(u) = self.users.get_mut(username).map(Arc::make_mut) {
            u.groups.remove(group);
        }
    }

    fn link(&mut self, parent: &str, child: &str) {
        if self.users.contains_key(parent) && self.users.contains_key(child) {
            if let Some(p) = self.users.get_mut(parent).map(Arc::make_mut) {
                p.children.insert(child.to_owned());
            }
            if let Some(c) = self.users.get_mut(child).map(Arc::make_mut) {
                c.parents.insert(parent.to_owned());
            }
        }
    }

    fn unlink(&mut self, parent: &str, child: &str) {
        if let Some(p) = self.users.get_mut(parent).map(Arc::make_mut) {
            p.children.remove(child);
        }
        if let Some(c) = self.users.get_mut(child).map(Arc::make_mut) {
            c.parents.remove(parent);
        }
    }

    fn user(&self, username: &str) -> Result<(), Invalid> {
        if self.users.contains_key(username) {
            Ok(())
        } else {
            Err(Invalid::UnknownUser(username.to_owned()))
        }
    }

    fn structure(&self, id: &str) -> Result<(), Invalid> {
        if self.structures.contains_key(id) {
            Ok(())
        } else {
            Err(Invalid::UnknownStructure(id.to_owned()))
        }
    }

    fn class(&self, id: &str) -> Result<(), Invalid> {
        if self.classes.contains_key(id) {
            Ok(())
        } else {
            Err(Invalid::UnknownClass(id.to_owned()))
        }
    }

    fn group(&self, id: &str) -> Result<(), Invalid> {
        if self.groups.contains_key(id) {
            Ok(())
        } else {
            Err(Invalid::UnknownGroup(id.to_owned()))
        }
    }

    /// Validates one change and applies it.
    pub fn apply(&mut self, change: &DirectoryChange) -> Result<(), Invalid> {
        use DirectoryChange::*;
        match change {
            PutStructure { id, name } => {
                check_id("a structure id", id)?;
                check_name("a structure name", name)?;
                self.structures.entry(id.clone()).or_default().name = name.clone();
            }
            DeleteStructure { id } => {
                self.structure(id)?;
                let classes: Vec<String> = self
                    .classes
                    .iter()
                    .filter(|(_, c)| c.structure == *id)
                    .map(|(k, _)| k.clone())
                    .collect();
                for class in classes {
                    self.apply(&DeleteClass { id: class })?;
                }
                if let Some(structure) = self.structures.remove(id) {
                    for member in structure.members {
                        if let Some(u) = self.users.get_mut(&member).map(Arc::make_mut) {
                            u.structures.remove(id);
                        }
                    }
                }
            }
            PutUser {
                username,
                display_name,
                profile,
                structures,
            } => {
                if crate::auth::normalise_username(username).as_deref() != Some(username.as_str()) {
                    return Err(Invalid::Bad(format!(
                        "{username:?} is not a valid username: lowercase JID localpart expected"
                    )));
                }
                check_name("a display name", display_name)?;
                for s in structures {
                    self.structure(s)?;
                }
                let previous = self
                    .users
                    .get(username)
                    .map(|u| u.structures.clone())
                    .unwrap_or_default();
                for s in &previous {
                    if let Some(structure) = self.structures.get_mut(s) {
                        structure.members.remove(username);
                    }
                }
                let user = self.users.entry(username.clone()).or_insert_with(|| {
                    Arc::new(User {
                        display_name: String::new(),
                        profile: *profile,
                        structures: BTreeSet::new(),
                        classes: BTreeSet::new(),
                        groups: BTreeSet::new(),
                        parents: BTreeSet::new(),
                        children: BTreeSet::new(),
                        hidden: false,
                        first_login: None,
                    })
                });
                let user = Arc::make_mut(user);
                user.display_name = display_name.clone();
                user.profile = *profile;
                user.structures.clear();
                for s in structures {
                    self.join_structure(s, username);
                }
            }
            DeleteUser { username } => {
                self.user(username)?;
                if let Some(user) = self.users.remove(username) {
                    for s in &user.structures {
                        if let Some(structure) = self.structures.get_mut(s) {
                            structure.members.remove(username);
                        }
                    }
                    for c in &user.classes {
                        if let Some(class) = self.classes.get_mut(c) {
                            class.members.remove(username);
                        }
                    }
                    for g in &user.groups {
                        if let Some(group) = self.groups.get_mut(g) {
                            group.members.remove(username);
                        }
                    }
                    for p in &user.parents {
                        if let Some(parent) = self.users.get_mut(p).map(Arc::make_mut) {
                            parent.children.remove(username);
                        }
                    }
                    for c in &user.children {
                        if let Some(child) = self.users.get_mut(c).map(Arc::make_mut) {
                            child.parents.remove(username);
                        }
                    }
                }
            }
            PutClass {
                id,
                structure,
                name,
                members,
            } => {
                check_id("a class id", id)?;
                check_name("a class name", name)?;
                self.structure(structure)?;
                if let Some(members) = members {
                    for m in members {
                        self.user(m)?;
                    }
                }
                let class = self.classes.entry(id.clone()).or_insert_with(|| Class {
                    structure: structure.clone(),
                    name: name.clone(),
                    members: OrdSet::new(),
                });
                class.structure = structure.clone();
                class.name = name.clone();
                if let Some(members) = members {
                    let old: Vec<String> = class.members.iter().cloned().collect();
                    for m in old {
                        self.leave_class(id, &m);
                    }
                    for m in members {
                        self.join_class(id, m);
                    }
                }
            }
            DeleteClass { id } => {
                self.class(id)?;
                if let Some(class) = self.classes.remove(id) {
                    for m in class.members {
                        if let Some(u) = self.users.get_mut(&m).map(Arc::make_mut) {
                            u.classes.remove(id);
                        }
                    }
                }
            }
            PutGroup { id, name, members } => {
                check_id("a group id", id)?;
                check_name("a group name", name)?;
                if let Some(members) = members {
                    for m in members {
                        self.user(m)?;
                    }
                }
                let group = self.groups.entry(id.clone()).or_insert_with(|| Group {
                    name: name.clone(),
                    members: OrdSet::new(),
                });
                group.name = name.clone();
                if let Some(members) = members {
                    let old: Vec<String> = group.members.iter().cloned().collect();
                    for m in old {
                        self.leave_group(id, &m);
                    }
                    for m in members {
                        self.join_group(id, m);
                    }
                }
            }
            DeleteGroup { id } => {
                self.group(id)?;
                if let Some(group) = self.groups.remove(id) {
                    for m in group.members {
                        if let Some(u) = self.users.get_mut(&m).map(Arc::make_mut) {
                            u.groups.remove(id);
                        }
                    }
                }
            }
            AddClassMember { class, username } => {
                self.class(class)?;
                self.user(username)?;
                self.join_class(class, username);
            }
            RemoveClassMember { class, username } => {
                self.class(class)?;
                self.user(username)?;
                self.leave_class(class, username);
            }
            AddGroupMember { group, username } => {
                self.group(group)?;
                self.user(username)?;
                self.join_group(group, username);
            }
            RemoveGroupMember { group, username } => {
                self.group(group)?;
                self.user(username)?;
                self.leave_group(group, username);
            }
            LinkParent { parent, child } => {
                self.user(parent)?;
                self.user(child)?;
                if parent == child {
                    return Err(Invalid::Bad("a user cannot be their own parent".into()));
                }
                self.link(parent, child);
            }
            UnlinkParent { parent, child } => {
                self.user(parent)?;
                self.user(child)?;
                self.unlink(parent, child);
            }
            SetProfileAccess {
                structure,
                profile,
                enabled,
            } => {
                self.structure(structure)?;
                if let Some(s) = self.structures.get_mut(structure) {
                    s.access.insert(*profile, *enabled);
                }
            }
            SetRule {
                structure,
                from,
                to,
                scope,
            } => {
                self.structure(structure)?;
                if let Some(s) = self.structures.get_mut(structure) {
                    s.rules.insert((*from, *to), *scope);
                }
            }
            SetHidden { username, hidden } => {
                self.user(username)?;
                if let Some(u) = self.users.get_mut(username).map(Arc::make_mut) {
                    u.hidden = *hidden;
                }
            }
        }
        Ok(())
    }
}
