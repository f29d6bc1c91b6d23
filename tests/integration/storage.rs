//! The account store, through the Store trait (SQLite here; PostgreSQL in postgres.rs).

use causette::accounts;
use causette::storage::{DynStore, Error, ScramHash};

pub async fn account_story(store: &DynStore, name: &str) {
    assert!(!store.user_exists(name).await.unwrap());
    accounts::add(store, name, "first".into(), 4096)
        .await
        .unwrap();
    assert!(store.user_exists(name).await.unwrap());
    assert!(
        store
            .list_users()
            .await
            .unwrap()
            .contains(&name.to_string())
    );
    let err = accounts::add(store, name, "again".into(), 4096)
        .await
        .unwrap_err();
    assert!(matches!(err, accounts::Error::Exists(_)), "{err}");

    let before = store
        .credential(name, ScramHash::Sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.iterations, 4096);
    assert!(causette::auth::scram::verify("first", &before));
    accounts::set_password(store, name, "second".into(), 4096)
        .await
        .unwrap();
    let after = store
        .credential(name, ScramHash::Sha256)
        .await
        .unwrap()
        .unwrap();
    assert!(causette::auth::scram::verify("second", &after));
    assert!(!causette::auth::scram::verify("first", &after));
    assert!(
        store
            .credential(name, ScramHash::Sha1)
            .await
            .unwrap()
            .is_some()
    );

    accounts::delete(store, name).await.unwrap();
    assert!(!store.user_exists(name).await.unwrap());
    assert!(
        store
            .credential(name, ScramHash::Sha256)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.delete_user(name).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        accounts::set_password(store, name, "x".into(), 4096).await,
        Err(accounts::Error::NotFound(_))
    ));
}

#[tokio::test]
async fn account_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db/test.db").display()
    );
    let store = causette::storage::open(&url, 2).await.unwrap();
    account_story(&store, "zoe").await;
    store.close().await;
}

#[tokio::test]
async fn invalid_usernames_and_passwords_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let store = causette::storage::open(&url, 1).await.unwrap();
    assert!(matches!(
        accounts::add(&store, "a@b", "pw".into(), 4096).await,
        Err(accounts::Error::InvalidUsername(_))
    ));
    assert!(matches!(
        accounts::add(&store, "", "pw".into(), 4096).await,
        Err(accounts::Error::InvalidUsername(_))
    ));
    assert!(matches!(
        accounts::add(&store, "ok", "".into(), 4096).await,
        Err(accounts::Error::Password(_))
    ));
    assert!(
        store.list_users().await.unwrap().is_empty(),
        "nothing half-written"
    );
    assert!(matches!(
        causette::storage::open("mysql://x", 1).await,
        Err(Error::UnsupportedUrl(_))
    ));
    store.close().await;
}

/// Directory changes survive a reload from the store, on any backend.
pub async fn directory_story(store: &DynStore, tag: &str) {
    use causette::directory::DirectoryChange::*;
    use causette::directory::{Profile, Scope};
    use causette::policy::Policy;
    let s = format!("S{tag}");
    let (u1, u2, p1) = (
        format!("u1x{tag}"),
        format!("u2x{tag}"),
        format!("p1x{tag}"),
    );
    let changes = vec![
        PutStructure {
            id: s.clone(),
            name: "École".into(),
        },
        PutUser {
            username: u1.clone(),
            display_name: "Un".into(),
            profile: Profile::Student,
            structures: vec![s.clone()],
        },
        PutUser {
            username: u2.clone(),
            display_name: "Deux".into(),
            profile: Profile::Student,
            structures: vec![s.clone()],
        },
        PutUser {
            username: p1.clone(),
            display_name: "Parent".into(),
            profile: Profile::Parent,
            structures: vec![s.clone()],
        },
        PutClass {
            id: format!("C{tag}"),
            structure: s.clone(),
            name: "6e".into(),
            members: Some(vec![u1.clone(), u2.clone()]),
        },
        PutGroup {
            id: format!("G{tag}"),
            name: "Club".into(),
            members: Some(vec![u1.clone()]),
        },
        LinkParent {
            parent: p1.clone(),
            child: u1.clone(),
        },
        SetProfileAccess {
            structure: s.clone(),
            profile: Profile::Parent,
            enabled: false,
        },
        SetRule {
            structure: s.clone(),
            from: Profile::Student,
            to: Profile::Student,
            scope: Scope::None,
        },
        SetHidden {
            username: u2.clone(),
            hidden: true,
        },
    ];
    let policy = Policy::load(store).await.unwrap();
    policy.apply(store, "test", &changes, &[]).await.unwrap();
    store.record_first_login(&u1, 1234).await.unwrap();
    // A fresh load sees the same directory.
    let reloaded = Policy::load(store).await.unwrap().snapshot();
    let user = &reloaded.users[&u1];
    assert!(user.classes.contains(&format!("C{tag}")));
    assert!(user.groups.contains(&format!("G{tag}")));
    assert!(user.parents.contains(&p1));
    assert_eq!(user.first_login, Some(1234));
    assert!(reloaded.users[&u2].hidden);
    let structure = &reloaded.structures[&s];
    assert_eq!(structure.access.get(&Profile::Parent), Some(&false));
    assert_eq!(
        structure.rules.get(&(Profile::Student, Profile::Student)),
        Some(&Scope::None)
    );
    assert_eq!(
        causette::policy::decide(
            &reloaded,
            &u1,
            &u2,
            causette::policy::Action::Message,
            Default::default()
        ),
        causette::policy::Decision::Deny(causette::policy::Reason::Rules)
    );
    // Deleting cascades in the store too.
    policy
        .apply(
            store,
            "test",
            &[
                DeleteUser {
                    username: u1.clone(),
                },
                DeleteStructure { id: s.clone() },
            ],
            &[],
        )
        .await
        .unwrap();
    let reloaded = Policy::load(store).await.unwrap().snapshot();
    assert!(!reloaded.users.contains_key(&u1));
    assert!(!reloaded.structures.contains_key(&s));
    assert!(!reloaded.classes.contains_key(&format!("C{tag}")));
    assert!(
        !store.user_exists(&u1).await.unwrap(),
        "the account went with the directory entry"
    );
    let audit = store.audit_log(20, None, None).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "delete_structure" && e.actor == "test")
    );
    assert!(audit.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    // A search ignores case and takes its text literally (`_` and `%` are no wildcards).
    let found = store
        .audit_log(20, None, Some(&format!("c{}", tag.to_uppercase())))
        .await
        .unwrap();
    assert!(!found.is_empty(), "the class's changes");
    assert!(found.iter().all(|e| {
        e.detail
            .to_string()
            .to_lowercase()
            .contains(&format!("c{}", tag.to_lowercase()))
    }));
    let literal = store
        .audit_log(20, None, Some("delete%structure"))
        .await
        .unwrap();
    assert!(literal.is_empty(), "{literal:?}");
    let underscore = store
        .audit_log(20, None, Some("delete_structure"))
        .await
        .unwrap();
    assert!(underscore.iter().any(|e| e.action == "delete_structure"));
}

#[tokio::test]
async fn directory_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let store = causette::storage::open(&url, 2).await.unwrap();
    directory_story(&store, "sqlite").await;
    store.close().await;
}

/// Regression: transactions that read before writing failed at once with "database is locked"
/// under concurrent writers on SQLite (seen at 2,000 concurrent logins); every one must wait
/// its turn and succeed.
#[tokio::test]
async fn concurrent_writers_on_sqlite_wait_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let store = causette::storage::open(&url, 8).await.unwrap();
    for i in 0..20 {
        store.create_user(&format!("u{i}"), &[]).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        for round in 0..5 {
            let store = store.clone();
            tasks.spawn(async move {
                let user = format!("u{i}");
                store.push_offline(&user, "<message/>", 100).await?;
                store.create_category(&user, &format!("c{round}")).await?;
                let kept = store.offline_batch(&user, 0, 100, 1 << 20).await?;
                let last = kept.last().map_or(0, |m| m.id);
                store.delete_offline_through(&user, last).await
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().expect("no writer fails with SQLITE_BUSY");
    }
    for i in 0..20 {
        let roster = store.load_roster(&format!("u{i}")).await.unwrap();
        assert_eq!(roster.empty_categories.len(), 5);
    }
    store.close().await;
}

/// Room history kept within its bound in messages and in bytes, the newest always.
pub async fn room_history_story(store: &DynStore, name: &str) {
    use causette::storage::{HistoryBound, StoredRoom};
    let room = StoredRoom {
        name: name.to_owned(),
        config: "{}".into(),
        affiliations: vec![(format!("{name}@localhost"), "owner".into())],
        ..StoredRoom::default()
    };
    store
        .create_room(&room, false, &format!("{name}@localhost"), 10)
        .await
        .unwrap();
    let row = |i: usize, size: usize| {
        (
            name.to_owned(),
            format!("<m{i}>{}</m>", "é".repeat(size)),
            0,
        )
    };
    let keep = HistoryBound {
        messages: 4,
        bytes: 1000,
    };
    // 6 small ones: the count bounds them.
    let small: Vec<_> = (0..6).map(|i| row(i, 10)).collect();
    store.append_room_history(&small, keep).await.unwrap();
    let all = HistoryBound {
        messages: 100,
        bytes: u64::MAX,
    };
    let kept = store.load_room_history(name, all).await.unwrap();
    let tags: Vec<_> = kept.iter().map(|(xml, _)| &xml[..4]).collect();
    assert_eq!(tags, ["<m2>", "<m3>", "<m4>", "<m5>"]);
    // Two of 300 "é" (600 bytes each, 300 characters): the bytes bound them, not the characters.
    store
        .append_room_history(&[row(6, 300), row(7, 300)], keep)
        .await
        .unwrap();
    let kept = store.load_room_history(name, all).await.unwrap();
    let tags: Vec<_> = kept.iter().map(|(xml, _)| &xml[..4]).collect();
    assert_eq!(tags, ["<m7>"]);
    // One larger than the bound stays alone; loading applies the bound too.
    store
        .append_room_history(&[row(8, 10), row(9, 1000)], keep)
        .await
        .unwrap();
    let kept = store.load_room_history(name, all).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].0.starts_with("<m9>"));
    store
        .append_room_history(&[row(10, 10), row(11, 10)], all)
        .await
        .unwrap();
    let bounded = store.load_room_history(name, keep).await.unwrap();
    let tags: Vec<_> = bounded.iter().map(|(xml, _)| &xml[..4]).collect();
    assert_eq!(tags, ["<m10", "<m11"]);
    assert!(store.delete_room(name).await.unwrap());
}

#[tokio::test]
async fn room_history_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/rooms.db?mode=rwc", dir.path().display());
    let store = causette::storage::open(&url, 2).await.unwrap();
    room_history_story(&store, "salle").await;
    store.close().await;
}
