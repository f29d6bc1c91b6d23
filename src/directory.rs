//! Directory types shared by the store and the policy: the ENT's structures, users, classes,
//! groups and links, the per-structure rules and profile access, and the audit log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user's profile in the ENT.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Student,
    Teacher,
    Parent,
    /// Direction, administration, vie scolaire.
    Staff,
    /// External: local authority, university…
    Partner,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Student,
        Profile::Teacher,
        Profile::Parent,
        Profile::Staff,
        Profile::Partner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Student => "student",
            Profile::Teacher => "teacher",
            Profile::Parent => "parent",
            Profile::Staff => "staff",
            Profile::Partner => "partner",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Profile::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// How far a profile may reach another, within a structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    None,
    /// Sharing a class (for parents: a class of one of their children).
    SameClass,
    SameStructure,
    Any,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::None => "none",
            Scope::SameClass => "same_class",
            Scope::SameStructure => "same_structure",
            Scope::Any => "any",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Scope::None,
            Scope::SameClass,
            Scope::SameStructure,
            Scope::Any,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One change of the directory, as the admin API and the bulk import express them. A batch of
/// changes is applied in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum DirectoryChange {
    PutStructure {
        id: String,
        name: String,
    },
    DeleteStructure {
        id: String,
    },
    /// Creates or replaces a user's entry; `structures` replaces its structure memberships
    /// and must be given (`[]` for none), so that a line that leaves it out empties nothing.
    PutUser {
        username: String,
        display_name: String,
        profile: Profile,
        structures: Vec<String>,
    },
    DeleteUser {
        username: String,
    },
    /// Creates or renames a class; `members`, when given, replaces its members.
    PutClass {
        id: String,
        structure: String,
        name: String,
        #[serde(default)]
        members: Option<Vec<String>>,
    },
    DeleteClass {
        id: String,
    },
    PutGroup {
        id: String,
        name: String,
        #[serde(default)]
        members: Option<Vec<String>>,
    },
    DeleteGroup {
        id: String,
    },
    // Field names are those of the matching admin call's path (see `admin::import`); the
    // former names are still read, for files written before.
    AddClassMember {
        #[serde(rename = "id", alias = "class")]
        class: String,
        username: String,
    },
    RemoveClassMember {
        #[serde(rename = "id", alias = "class")]
        class: String,
        username: String,
    },
    AddGroupMember {
        #[serde(rename = "id", alias = "group")]
        group: String,
        username: String,
    },
    RemoveGroupMember {
        #[serde(rename = "id", alias = "group")]
        group: String,
        username: String,
    },
    LinkParent {
        #[serde(rename = "username", alias = "parent")]
        parent: String,
        child: String,
    },
    UnlinkParent {
        #[serde(rename = "username", alias = "parent")]
        parent: String,
        child: String,
    },
    SetProfileAccess {
        #[serde(rename = "id", alias = "structure")]
        structure: String,
        profile: Profile,
        enabled: bool,
    },
    SetRule {
        #[serde(rename = "id", alias = "structure")]
        structure: String,
        from: Profile,
        to: Profile,
        scope: Scope,
    },
    /// The user's own choice to be left out of the directory search.
    SetHidden {
        username: String,
        hidden: bool,
    },
}

/// The directory as stored, row by row, loaded at start.
#[derive(Debug, Clone, Default)]
pub struct DirectoryRows {
    pub structures: Vec<(String, String)>,
    /// username, display name, profile, hidden, first login.
    pub users: Vec<(String, String, String, bool, Option<i64>)>,
    pub structure_members: Vec<(String, String)>,
    /// id, structure, name.
    pub classes: Vec<(String, String, String)>,
    pub class_members: Vec<(String, String)>,
    pub groups: Vec<(String, String)>,
    pub group_members: Vec<(String, String)>,
    pub parent_links: Vec<(String, String)>,
    pub profile_access: Vec<(String, String, bool)>,
    pub rules: Vec<(String, String, String, String)>,
}

/// One entry of the audit log of admin changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    /// The change, as JSON.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}
