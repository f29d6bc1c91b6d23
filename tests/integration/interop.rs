//! Interop with an independent client library: slixmpp (Python, from PyPI), driven from here.
//!
//! Marked ignored, so that `cargo test` counts it where slixmpp is missing; `--include-ignored`
//! (as in CI) runs it and fails without it.

use std::process::Stdio;

use crate::common::{TestServer, WAIT};

/// Why the interop tests cannot run here, if they cannot.
pub fn slixmpp_missing() -> Option<&'static str> {
    let found = std::process::Command::new("python3")
        .args(["-c", "import slixmpp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then_some("the slixmpp interop tests need python3 with `pip install slixmpp`")
}

#[tokio::test]
#[ignore = "needs python3 with slixmpp (bash .ci/run installs it)"]
async fn slixmpp_logs_in_over_starttls_and_chats() {
    crate::common::require(slixmpp_missing());
    let server = TestServer::start().await;
    server.add_user("alice", "mot de passe A").await;
    server.add_user("bob", "mot de passe B").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_chat.py");
    let cafile = server.dir.path().join("tls/localhost.crt");
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(server.c2s.port().to_string())
        .arg(&cafile)
        .args([
            "alice@localhost",
            "mot de passe A",
            "bob@localhost",
            "mot de passe B",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT * 4, child)
        .await
        .expect("slixmpp finishes in time")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "slixmpp failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("messages both ways OK"), "{stdout}");
    assert!(stdout.contains("subscription=both"), "{stdout}");
    server.stop().await;
}
