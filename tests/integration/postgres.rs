//! The same scenarios on PostgreSQL, when CAUSETTE_TEST_POSTGRES_URL names a database.

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

pub fn postgres_url() -> Option<String> {
    match std::env::var("CAUSETTE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Said out loud, so that a run without PostgreSQL never passes for one with it.
            eprintln!("SKIPPED: CAUSETTE_TEST_POSTGRES_URL is not set; PostgreSQL not tested");
            None
        }
    }
}

/// Usernames unique to this run, since the database outlives it.
fn unique(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}{}", rand::thread_rng().r#gen::<u32>())
}

#[tokio::test]
async fn login_and_chat_on_postgres() {
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start_with(|c| c.database.url = url).await;
    crate::login::login_and_chat(&server, &unique("alice"), &unique("bob"), false).await;
    server.stop().await;
}

#[tokio::test]
async fn account_store_on_postgres() {
    let Some(url) = postgres_url() else { return };
    let store = causette::storage::open(&url, 2)
        .await
        .expect("postgres store");
    crate::storage::account_story(&store, &unique("user")).await;
    store.close().await;
}

#[tokio::test]
async fn directory_store_on_postgres() {
    let Some(url) = postgres_url() else { return };
    let store = causette::storage::open(&url, 2)
        .await
        .expect("postgres store");
    crate::storage::directory_story(&store, &unique("pg")).await;
    store.close().await;
}

#[tokio::test]
async fn rooms_survive_a_restart_on_postgres() {
    let Some(url) = postgres_url() else { return };
    crate::rooms::restart_story(url, &unique("room")).await;
}
