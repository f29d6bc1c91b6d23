//! The same scenarios on PostgreSQL, in the database CAUSETTE_TEST_POSTGRES_URL names. Marked
//! ignored, so that `cargo test` counts them without PostgreSQL; `--include-ignored` runs them
//! and fails without it.

use crate::common::TestServer;

/// Why the PostgreSQL tests cannot run here, if they cannot.
pub fn postgres_missing() -> Option<&'static str> {
    std::env::var("CAUSETTE_TEST_POSTGRES_URL")
        .map_or(true, |url| url.is_empty())
        .then_some(
            "the PostgreSQL tests need CAUSETTE_TEST_POSTGRES_URL naming a database they may \
             write to",
        )
}

/// The test database's URL; fails the test without one.
pub fn postgres_url() -> String {
    crate::common::require(postgres_missing());
    std::env::var("CAUSETTE_TEST_POSTGRES_URL").unwrap_or_default()
}

/// Usernames unique to this run, since the database outlives it.
fn unique(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}{}", rand::thread_rng().r#gen::<u32>())
}

#[tokio::test]
#[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
async fn login_and_chat_on_postgres() {
    let url = postgres_url();
    let server = TestServer::start_with(|c| c.database.url = url).await;
    crate::login::login_and_chat(&server, &unique("alice"), &unique("bob"), false).await;
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
async fn account_store_on_postgres() {
    let url = postgres_url();
    let store = causette::storage::open(&url, 2)
        .await
        .expect("postgres store");
    crate::storage::account_story(&store, &unique("user")).await;
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
async fn directory_store_on_postgres() {
    let url = postgres_url();
    let store = causette::storage::open(&url, 2)
        .await
        .expect("postgres store");
    crate::storage::directory_story(&store, &unique("pg")).await;
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
async fn rooms_survive_a_restart_on_postgres() {
    let url = postgres_url();
    crate::rooms::restart_story(url, &unique("room")).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
async fn room_history_on_postgres() {
    let url = postgres_url();
    let store = causette::storage::open(&url, 2)
        .await
        .expect("postgres store");
    crate::storage::room_history_story(&store, &unique("salle")).await;
    store.close().await;
}
