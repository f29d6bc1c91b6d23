use super::*;
use crate::directory::DirectoryChange::*;
use Profile::*;

/// Every cell of the shipped matrix, as docs/policy.md states it.
#[test]
fn default_matrix_cells() {
    let expected = [
        (Student, Student, Scope::SameClass),
        (Student, Teacher, Scope::SameClass),
        (Student, Parent, Scope::None),
        (Student, Staff, Scope::SameStructure),
        (Student, Partner, Scope::None),
        (Teacher, Student, Scope::SameClass),
        (Teacher, Teacher, Scope::SameStructure),
        (Teacher, Parent, Scope::SameClass),
        (Teacher, Staff, Scope::SameStructure),
        (Teacher, Partner, Scope::SameStructure),
        (Parent, Student, Scope::None),
        (Parent, Teacher, Scope::SameClass),
        (Parent, Parent, Scope::None),
        (Parent, Staff, Scope::SameStructure),
        (Parent, Partner, Scope::None),
        (Staff, Student, Scope::SameStructure),
        (Staff, Teacher, Scope::SameStructure),
        (Staff, Parent, Scope::SameStructure),
        (Staff, Staff, Scope::SameStructure),
        (Staff, Partner, Scope::SameStructure),
        (Partner, Student, Scope::None),
        (Partner, Teacher, Scope::SameStructure),
        (Partner, Parent, Scope::None),
        (Partner, Staff, Scope::SameStructure),
        (Partner, Partner, Scope::SameStructure),
    ];
    assert_eq!(expected.len(), 25);
    for (from, to, scope) in expected {
        assert_eq!(default_scope(from, to), scope, "{from:?} -> {to:?}");
    }
}

fn user(username: &str, profile: Profile, structure: &str) -> DirectoryChange {
    PutUser {
        username: username.into(),
        display_name: username.to_uppercase(),
        profile,
        structures: vec![structure.into()],
    }
}

/// Two schools; 6A and 6B in the first, 5C in the second.
fn school() -> DirectoryState {
    let mut state = DirectoryState::default();
    let changes = vec![
        PutStructure {
            id: "0750001A".into(),
            name: "Collège Pasteur".into(),
        },
        PutStructure {
            id: "0750002B".into(),
            name: "Collège Curie".into(),
        },
        user("eleve1", Student, "0750001A"),
        user("eleve2", Student, "0750001A"),
        user("eleve3", Student, "0750001A"),
        user("eleve4", Student, "0750002B"),
        user("prof1", Teacher, "0750001A"),
        user("prof2", Teacher, "0750001A"),
        user("prof3", Teacher, "0750002B"),
        user("parent1", Parent, "0750001A"),
        user("cpe", Staff, "0750001A"),
        user("mairie", Partner, "0750001A"),
        PutClass {
            id: "6A".into(),
            structure: "0750001A".into(),
            name: "6e A".into(),
            members: Some(vec!["eleve1".into(), "eleve2".into(), "prof1".into()]),
        },
        PutClass {
            id: "6B".into(),
            structure: "0750001A".into(),
            name: "6e B".into(),
            members: Some(vec!["eleve3".into(), "prof2".into()]),
        },
        PutClass {
            id: "5C".into(),
            structure: "0750002B".into(),
            name: "5e C".into(),
            members: Some(vec!["eleve4".into(), "prof3".into()]),
        },
        LinkParent {
            parent: "parent1".into(),
            child: "eleve1".into(),
        },
    ];
    for change in &changes {
        state.apply(change).unwrap();
    }
    state
}

fn allowed(state: &DirectoryState, a: &str, b: &str) -> bool {
    decide(state, a, b, Action::Message, Relation::default()) == Decision::Allow
}

#[test]
fn decisions_follow_the_default_matrix() {
    let state = school();
    assert!(allowed(&state, "eleve1", "eleve2"), "same class");
    assert!(!allowed(&state, "eleve1", "eleve3"), "other class");
    assert!(!allowed(&state, "eleve1", "eleve4"), "other school");
    assert!(allowed(&state, "eleve1", "prof1"), "own teacher");
    assert!(
        !allowed(&state, "eleve1", "prof2"),
        "another class's teacher"
    );
    assert!(allowed(&state, "prof1", "prof2"), "teachers of one school");
    assert!(
        !allowed(&state, "prof1", "prof3"),
        "teachers of two schools"
    );
    assert!(
        allowed(&state, "parent1", "prof1"),
        "teacher of the child's class"
    );
    assert!(!allowed(&state, "parent1", "prof2"), "another teacher");
    assert!(
        allowed(&state, "prof1", "parent1"),
        "parent of a student of the class"
    );
    assert!(allowed(&state, "parent1", "eleve1"), "own child");
    assert!(allowed(&state, "eleve1", "parent1"), "own parent");
    assert!(!allowed(&state, "parent1", "eleve2"), "another child");
    assert!(allowed(&state, "cpe", "eleve3"), "staff reaches the school");
    assert!(allowed(&state, "eleve3", "cpe"), "students reach staff");
    assert!(!allowed(&state, "cpe", "eleve4"), "not another school");
    assert!(
        !allowed(&state, "mairie", "eleve1"),
        "partners do not reach students"
    );
    assert!(
        allowed(&state, "mairie", "prof1"),
        "partners reach teachers"
    );
    assert!(allowed(&state, "eleve1", "eleve1"), "oneself");
    assert!(
        allowed(&state, "eleve1", "admin"),
        "accounts outside the directory"
    );
}

#[test]
fn ent_groups_override_the_matrix_and_rules_can_change() {
    let mut state = school();
    assert!(!allowed(&state, "eleve1", "eleve4"));
    state
        .apply(&PutGroup {
            id: "club".into(),
            name: "Club échecs".into(),
            members: Some(vec!["eleve1".into(), "eleve4".into()]),
        })
        .unwrap();
    assert!(allowed(&state, "eleve1", "eleve4"), "shared ENT group");
    assert!(!allowed(&state, "eleve1", "eleve3"));
    state
        .apply(&SetRule {
            structure: "0750001A".into(),
            from: Student,
            to: Student,
            scope: Scope::SameStructure,
        })
        .unwrap();
    assert!(allowed(&state, "eleve1", "eleve3"), "widened matrix");
    state
        .apply(&SetRule {
            structure: "0750001A".into(),
            from: Student,
            to: Student,
            scope: Scope::None,
        })
        .unwrap();
    assert!(!allowed(&state, "eleve1", "eleve2"), "closed matrix");
}

#[test]
fn profile_access_and_moves_apply_at_once() {
    let mut state = school();
    state
        .apply(&SetProfileAccess {
            structure: "0750001A".into(),
            profile: Student,
            enabled: false,
        })
        .unwrap();
    assert_eq!(
        decide(
            &state,
            "eleve1",
            "eleve2",
            Action::Message,
            Relation::default()
        ),
        Decision::Deny(Reason::ActorProfileDisabled)
    );
    assert_eq!(
        decide(
            &state,
            "prof1",
            "eleve1",
            Action::Message,
            Relation::default()
        ),
        Decision::Deny(Reason::TargetProfileDisabled)
    );
    state
        .apply(&SetProfileAccess {
            structure: "0750001A".into(),
            profile: Student,
            enabled: true,
        })
        .unwrap();
    assert!(allowed(&state, "eleve1", "eleve2"));
    // A student moved to another class loses the former classmates.
    state
        .apply(&RemoveClassMember {
            class: "6A".into(),
            username: "eleve2".into(),
        })
        .unwrap();
    state
        .apply(&AddClassMember {
            class: "6B".into(),
            username: "eleve2".into(),
        })
        .unwrap();
    assert!(!allowed(&state, "eleve1", "eleve2"));
    assert!(allowed(&state, "eleve3", "eleve2"));
}

#[test]
fn invalid_changes_are_named() {
    let mut state = school();
    assert_eq!(
        state.apply(&AddClassMember {
            class: "9Z".into(),
            username: "eleve1".into()
        }),
        Err(Invalid::UnknownClass("9Z".into()))
    );
    assert_eq!(
        state.apply(&user("nouveau", Student, "0000000X")),
        Err(Invalid::UnknownStructure("0000000X".into()))
    );
    assert!(matches!(
        state.apply(&user("Not Valid", Student, "0750001A")),
        Err(Invalid::Bad(_))
    ));
    assert!(matches!(
        state.apply(&LinkParent {
            parent: "eleve1".into(),
            child: "eleve1".into()
        }),
        Err(Invalid::Bad(_))
    ));
    state
        .apply(&DeleteUser {
            username: "eleve1".into(),
        })
        .unwrap();
    assert!(!state.classes["6A"].members.contains("eleve1"));
    assert!(state.users["parent1"].children.is_empty());
}

fn policy(state: DirectoryState, requires_acceptance: bool) -> Policy {
    Policy {
        state: ArcSwap::from_pointee(state),
        writer: tokio::sync::Mutex::new(()),
        requires_acceptance,
        observer: None,
    }
}

/// "Chat only with accepted contacts" is a rule of `decide` like the others: after the
/// directory's rules, and only where the policy asks for it.
#[test]
fn chat_needs_an_accepted_request_when_the_policy_says_so() {
    let accepted = Relation {
        accepted: true,
        ..Relation::default()
    };
    let strict = policy(school(), true);
    assert_eq!(
        strict.decide("eleve1", "eleve2", Action::Message, Relation::default()),
        Decision::Deny(Reason::NotAccepted)
    );
    assert_eq!(
        strict.decide("eleve1", "eleve2", Action::Message, accepted),
        Decision::Allow
    );
    // The directory's refusal comes first, accepted or not.
    assert_eq!(
        strict.decide("eleve1", "eleve3", Action::Message, accepted),
        Decision::Deny(Reason::Rules)
    );
    // Adding a contact is how a request gets accepted: it needs no acceptance.
    assert_eq!(
        strict.decide("eleve1", "eleve2", Action::AddContact, Relation::default()),
        Decision::Allow
    );
    let open = policy(school(), false);
    assert_eq!(
        open.decide("eleve1", "eleve2", Action::Message, Relation::default()),
        Decision::Allow
    );
    assert_eq!(
        Reason::NotAccepted.condition(),
        xmpp_parsers::stanza_error::DefinedCondition::NotAllowed
    );
}

/// An IQ request needs, in the ENT mode, the target's presence shared with the actor, since
/// it tells whether a resource is online; without the ENT mode, only the rules decide (RFC
/// 6121 §8.5.3.1).
#[test]
fn requests_need_shared_presence_only_in_the_ent_mode() {
    let accepted_only = Relation {
        accepted: true,
        ..Relation::default()
    };
    let sharing = Relation {
        accepted: true,
        shares_presence: true,
        ..Relation::default()
    };
    let strict = policy(school(), true);
    assert_eq!(
        strict.decide("eleve1", "eleve2", Action::Request, accepted_only),
        Decision::Deny(Reason::NotAccepted)
    );
    assert_eq!(
        strict.decide("eleve1", "eleve2", Action::Request, sharing),
        Decision::Allow
    );
    let open = policy(school(), false);
    assert_eq!(
        open.decide("eleve1", "eleve2", Action::Request, Relation::default()),
        Decision::Allow
    );
    // The rules still hold without the ENT mode.
    assert_eq!(
        open.decide("eleve1", "eleve3", Action::Request, sharing),
        Decision::Deny(Reason::Rules)
    );
}

/// A contact already listed may be renamed or recategorised when the rules no longer allow
/// it; it does not stay writable.
#[test]
fn a_listed_contact_stays_editable_not_writable() {
    let state = school();
    let listed = Relation {
        listed: true,
        accepted: true,
        ..Relation::default()
    };
    assert_eq!(
        decide(&state, "eleve1", "eleve3", Action::EditContact, listed),
        Decision::Allow
    );
    assert_eq!(
        decide(
            &state,
            "eleve1",
            "eleve3",
            Action::EditContact,
            Relation::default()
        ),
        Decision::Deny(Reason::Rules)
    );
    assert_eq!(
        decide(&state, "eleve1", "eleve3", Action::Message, listed),
        Decision::Deny(Reason::Rules)
    );
}

/// A first login is noted once, in a new snapshot; readers of the old one keep theirs.
#[test]
fn a_first_login_is_noted_once_without_touching_old_snapshots() {
    let policy = policy(school(), true);
    let before = policy.snapshot();
    assert!(policy.note_login("eleve1", 42));
    assert!(!policy.note_login("eleve1", 43));
    assert_eq!(before.users["eleve1"].first_login, None);
    assert_eq!(policy.snapshot().users["eleve1"].first_login, Some(42));
}

/// Every refusal reaches the observer (the metrics), with its action and reason; a search's
/// filtering is not a refusal.
/// The refusals a policy reports, in order.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<(Action, Reason)>>);

impl DenialObserver for Seen {
    fn denied(&self, action: Action, reason: Reason) {
        self.0.lock().unwrap().push((action, reason));
    }
}

#[test]
fn refusals_are_reported_but_searches_are_not() {
    let seen = Arc::new(Seen::default());
    let policy = policy(school(), true).observed_by(seen.clone());
    policy.decide("eleve1", "eleve3", Action::Message, Relation::default());
    policy.decide("eleve1", "eleve2", Action::Message, Relation::default());
    policy.decide("eleve1", "eleve3", Action::Search, Relation::default());
    policy.decide("eleve1", "eleve2", Action::AddContact, Relation::default());
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            (Action::Message, Reason::Rules),
            (Action::Message, Reason::NotAccepted)
        ]
    );
}

/// Ending a contact and probing are always allowed: across the rules, with chat access
/// closed, in the ENT mode; the policy says so itself rather than the callers.
#[test]
fn ending_a_contact_and_probing_are_always_allowed() {
    let mut state = school();
    state
        .apply(&SetProfileAccess {
            structure: "0750001A".into(),
            profile: Student,
            enabled: false,
        })
        .unwrap();
    let strict = policy(state, true);
    for (actor, target) in [
        ("eleve1", "eleve3"),
        ("eleve1", "eleve4"),
        ("prof3", "eleve1"),
    ] {
        for action in [Action::EndContact, Action::Probe] {
            assert_eq!(
                strict.decide(actor, target, action, Relation::default()),
                Decision::Allow,
                "{action:?} {actor} -> {target}"
            );
        }
    }
    // What the rules refuse the same pairs otherwise.
    assert_eq!(
        strict.decide("eleve1", "eleve3", Action::Message, Relation::default()),
        Decision::Deny(Reason::ActorProfileDisabled)
    );
}

/// A contact's status text follows the communication rules, never the accepted request:
/// they are contacts already.
#[test]
fn a_status_text_follows_the_rules_between_listed_contacts() {
    let listed = Relation {
        listed: true,
        ..Relation::default()
    };
    let seen = Arc::new(Seen::default());
    let strict = policy(school(), true).observed_by(seen.clone());
    // Classmates who have not accepted each other: the text shows (acceptance is not asked).
    assert_eq!(
        strict.decide("eleve1", "eleve2", Action::SeeStatus, listed),
        Decision::Allow
    );
    // A pupil of another class still listed: no text.
    assert_eq!(
        strict.decide("eleve1", "eleve3", Action::SeeStatus, listed),
        Decision::Deny(Reason::Rules)
    );
    // Not a refusal a user meets: not reported.
    assert!(seen.0.lock().unwrap().is_empty());
}
