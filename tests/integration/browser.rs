//! The admin console in a real headless browser (Debian's Chromium, driven by playwright-core
//! from tests/browser/): turning student access off there refuses a student's login.
//!
//! Skipped with a message when Chromium or the npm package is missing, unless
//! CAUSETTE_REQUIRE_BROWSER is set (as in CI), where that fails the test.

use std::path::Path;

use crate::common::{Raw, TestServer, WAIT, http};

fn browser_available() -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let found = Path::new(&chromium).exists()
        && dir.join("node_modules/playwright-core").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CAUSETTE_REQUIRE_BROWSER").is_none(),
            "CAUSETTE_REQUIRE_BROWSER is set but Chromium, node or tests/browser/node_modules is missing"
        );
        eprintln!(
            "SKIPPED: browser test needs /usr/bin/chromium (apt-get install chromium) and \
             `npm ci --prefix tests/browser`"
        );
    }
    found
}

#[tokio::test]
async fn console_turns_a_profile_off_and_the_login_is_refused() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start_with(|c| c.tls.allow_plaintext_on_loopback = true).await;
    let token = server.server().admin_token().to_owned();
    let batch = "{\"op\":\"put_structure\",\"id\":\"0750001A\",\"name\":\"Collège Victor Hugo\"}\n\
                 {\"op\":\"put_user\",\"username\":\"eleve1\",\"display_name\":\"Léa\",\"profile\":\"student\",\"structures\":[\"0750001A\"]}\n";
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some(batch),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    http(
        server.http,
        "PUT",
        "/admin/api/v1/users/eleve1",
        Some(&token),
        Some(r#"{"display_name":"Léa","profile":"student","structures":["0750001A"],"password":"pw"}"#),
    )
    .await;
    // The student can log in before.
    Raw::connect(server.c2s)
        .await
        .login("eleve1", "pw", "web")
        .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.mjs");
    let screenshot = server.dir.path().join("console.png");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("http://{}", server.http))
        .arg(&token)
        .arg("0750001A")
        .arg(&screenshot)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT * 6, run)
        .await
        .expect("the browser finishes in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    assert!(screenshot.exists(), "a screenshot was taken");

    // The toggle reached the server: the student's login is now refused.
    use base64::Engine;
    let mut raw = Raw::connect(server.c2s).await;
    raw.send(crate::common::HEADER).await;
    raw.expect("</stream:features>").await;
    let auth = base64::engine::general_purpose::STANDARD.encode("\0eleve1\0pw");
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
    ))
    .await;
    let refused = raw.expect("</failure>").await;
    assert!(refused.contains("<account-disabled"), "{refused}");
    let (_, rules) = http(
        server.http,
        "GET",
        "/admin/api/v1/structures/0750001A/rules",
        Some(&token),
        None,
    )
    .await;
    assert!(
        rules.contains("\"student\":{\"") && rules.contains("same_structure"),
        "{rules}"
    );
    server.stop().await;
}
