//! The load generator builds and a short smoke run against Causette delivers every message.
//! (Benchmarks proper are never CI tests: see bench/README.md.)

use crate::common::{TestServer, WAIT};

async fn run(args: &[&str]) -> Vec<serde_json::Value> {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_causette-load"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT * 6, run)
        .await
        .expect("the generator finishes in time")
        .expect("the generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test]
async fn smoke_run_delivers_every_message() {
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.im.chat_requires_acceptance = false;
    })
    .await;
    for i in 0..20 {
        server.add_user(&format!("load{i}"), "load-password").await;
    }
    let address = server.c2s.to_string();
    let pid = std::process::id().to_string();
    let login = run(&[
        "--scenario",
        "login",
        "--server",
        &address,
        "--users",
        "20",
        "--concurrency",
        "10",
        "--hold-secs",
        "1",
        "--server-pid",
        &pid,
        "--label",
        "causette",
    ])
    .await;
    assert_eq!(login[0]["logged_in"], 20, "{login:?}");
    assert_eq!(login[0]["errors"], 0, "{login:?}");
    assert!(login[0]["kb_per_connection"].is_number(), "{login:?}");

    let chat = run(&[
        "--scenario",
        "chat",
        "--server",
        &address,
        "--pairs",
        "10",
        "--rates",
        "100,300",
        "--step-secs",
        "3",
        "--grace-secs",
        "1",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(chat.len(), 2, "{chat:?}");
    for step in &chat {
        assert!(step["sent"].as_u64().unwrap() > 0, "{step}");
        assert_eq!(step["lost"], 0, "every message delivered: {step}");
        assert_eq!(step["errors"], 0, "{step}");
        assert!(step["p99_ms"].as_f64().unwrap() >= 0.0, "{step}");
    }
    server.stop().await;
}
