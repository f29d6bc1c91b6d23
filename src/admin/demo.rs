//! The demo ENT directory loaded on a first start with the embedded defaults, so that a new
//! user sees the communication rules at work at once. Every demo user's password is `demo`.

use crate::directory::DirectoryChange::{self, *};
use crate::directory::Profile::{self, *};

pub const PASSWORD: &str = "demo";

const COLLEGE: &str = "0750001A";
const LYCEE: &str = "0750002B";

/// (username, display name, profile, structure)
pub const USERS: [(&str, &str, Profile, &str); 10] = [
    ("lea.martin", "Léa Martin", Student, COLLEGE),
    ("hugo.bernard", "Hugo Bernard", Student, COLLEGE),
    ("ines.petit", "Inès Petit", Student, COLLEGE),
    ("prof.durand", "M. Durand", Teacher, COLLEGE),
    ("prof.moreau", "Mme Moreau", Teacher, COLLEGE),
    ("parent.martin", "Sophie Martin", Parent, COLLEGE),
    ("cpe.leroy", "M. Leroy (CPE)", Staff, COLLEGE),
    ("mairie.dupont", "Mme Dupont (mairie)", Partner, COLLEGE),
    ("tom.roux", "Tom Roux", Student, LYCEE),
    ("prof.garcia", "M. Garcia", Teacher, LYCEE),
];

pub fn changes() -> Vec<DirectoryChange> {
    let mut changes = vec![
        PutStructure {
            id: COLLEGE.into(),
            name: "Collège Victor Hugo".into(),
        },
        PutStructure {
            id: LYCEE.into(),
            name: "Lycée Jean Moulin".into(),
        },
    ];
    for (username, name, profile, structure) in USERS {
        changes.push(PutUser {
            username: username.into(),
            display_name: name.into(),
            profile,
            structures: vec![structure.into()],
        });
    }
    let class = |id: &str, structure: &str, name: &str, members: &[&str]| PutClass {
        id: id.into(),
        structure: structure.into(),
        name: name.into(),
        members: Some(members.iter().map(|m| m.to_string()).collect()),
    };
    changes.push(class(
        "college-6a",
        COLLEGE,
        "6e A",
        &["lea.martin", "hugo.bernard", "prof.durand"],
    ));
    changes.push(class(
        "college-6b",
        COLLEGE,
        "6e B",
        &["ines.petit", "prof.moreau"],
    ));
    changes.push(class(
        "lycee-2nd1",
        LYCEE,
        "Seconde 1",
        &["tom.roux", "prof.garcia"],
    ));
    changes.push(LinkParent {
        parent: "parent.martin".into(),
        child: "lea.martin".into(),
    });
    changes.push(PutGroup {
        id: "club-theatre".into(),
        name: "Club théâtre inter-établissements".into(),
        members: Some(vec!["lea.martin".into(), "tom.roux".into()]),
    });
    changes
}
