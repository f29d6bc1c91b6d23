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
