//! The admin console in a real headless browser (Debian's Chromium, driven by playwright-core
//! from tests/browser/): turning student access off there refuses a student's login.
//!
//! Marked ignored, so that `cargo test` counts them where Chromium or the npm packages are
//! missing; `--include-ignored` (as in CI) runs them and fails without them.

use std::path::Path;

use crate::common::{Raw, TestServer, WAIT, Xmpp, http};

/// Why the browser tests cannot run here, if they cannot.
pub fn browser_missing() -> Option<&'static str> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let found = Path::new(&chromium).exists()
        && dir.join("node_modules/playwright-core").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    (!found).then_some(
        "browser tests need /usr/bin/chromium (apt-get install chromium), node and \
         `npm ci --prefix tests/browser`",
    )
}

fn require_browser() {
    crate::common::require(browser_missing());
}

#[tokio::test]
#[ignore = "needs Chromium, node and npm packages (bash .ci/run installs them)"]
async fn console_turns_a_profile_off_and_the_login_is_refused() {
    require_browser();
    let server = TestServer::start_with(|c| c.tls.allow_plaintext_on_loopback = true).await;
    let token = server.server().admin_token().to_owned();
    let batch = "{\"op\":\"put_structure\",\"id\":\"0750001A\",\"name\":\"Collège Victor Hugo\"}\n\
                 {\"op\":\"put_user\",\"username\":\"eleve1\",\"display_name\":\"Léa\",\"profile\":\"student\",\"structures\":[\"0750001A\"]}\n\
                 {\"op\":\"put_user\",\"username\":\"eleve2\",\"display_name\":\"Hugo\",\"profile\":\"student\",\"structures\":[\"0750001A\"]}\n\
                 {\"op\":\"put_user\",\"username\":\"prof1\",\"display_name\":\"M. Durand\",\"profile\":\"teacher\",\"structures\":[\"0750001A\"]}\n\
                 {\"op\":\"put_class\",\"id\":\"6A\",\"structure\":\"0750001A\",\"name\":\"6e A\",\"members\":[\"eleve1\",\"prof1\"]}\n\
                 {\"op\":\"put_group\",\"id\":\"theatre\",\"name\":\"Club théâtre\",\"members\":[\"eleve1\",\"eleve2\"]}\n";
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
    // The student can log in before, and stays online while the console looks.
    let online = Raw::connect(server.c2s)
        .await
        .login("eleve1", "pw", "web")
        .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.mjs");
    // CAUSETTE_SCREENSHOTS=DIR keeps the pictures to look at.
    let shots = std::env::var_os("CAUSETTE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| server.dir.path().to_path_buf());
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("http://{}", server.http))
        .arg(&token)
        .arg("0750001A")
        .arg(&shots)
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
    for name in ["structures", "users", "classes", "audit", "structures-en"] {
        let path = shots.join(format!("console-{name}.png"));
        assert!(path.exists(), "{} was taken", path.display());
    }
    drop(online);

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

/// Where the browser test keeps its screenshots: target/browser-tests/.
fn screenshot_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-tests");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// Why the ENT window tests cannot run here (beyond the browser), if they cannot.
pub fn ent_embed_missing() -> Option<&'static str> {
    let converse = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/ent-embed/node_modules/converse.js/dist/converse.min.js");
    (!converse.exists()).then_some("the ENT window tests need `npm ci --prefix deploy/ent-embed`")
}

fn require_ent_embed() {
    require_browser();
    crate::common::require(ent_embed_missing());
}

/// The ENT page of deploy/ent-embed in headless Chromium, over WebSocket with an ENT token:
/// the window signs in, shows a contact in its category, accepts a pending request, shows a
/// message sent over TCP, joins a conversation it is invited to, and comes back signed in
/// after a reload.
#[tokio::test]
#[ignore = "needs Chromium, node and npm packages (bash .ci/run installs them)"]
async fn ent_window_signs_in_with_a_token_chats_and_survives_a_reload() {
    require_ent_embed();
    ent_window("websocket").await;
}

/// The same window behind a proxy that cannot upgrade: BOSH only.
#[tokio::test]
#[ignore = "needs Chromium, node and npm packages (bash .ci/run installs them)"]
async fn ent_window_over_bosh() {
    require_ent_embed();
    ent_window("bosh").await;
}

async fn ent_window(transport: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let ent = format!("http://127.0.0.1:{port}");
    let server = TestServer::start_with(|c| {
        c.tls.allow_plaintext_on_loopback = true;
        c.admin.demo_directory = true;
        c.http.allowed_origins = vec![ent.clone()];
        crate::sso::configure(c);
    })
    .await;

    // Léa has Hugo in her category "Classe de 6e A"; M. Durand asked to be her contact while
    // she was away.
    let mut lea = Xmpp::login(&server, "lea.martin", "demo").await;
    let mut hugo = Xmpp::login(&server, "hugo.bernard", "demo").await;
    let mut prof = Xmpp::login(&server, "prof.durand", "demo").await;
    // The school's CPE has signed in once, so the directory search finds him.
    let mut cpe = Xmpp::login(&server, "cpe.leroy", "demo").await;
    for client in [&mut lea, &mut hugo, &mut prof, &mut cpe] {
        client.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
        client.send("<presence xmlns='jabber:client'/>").await;
    }
    let set = lea
        .iq(
            "set",
            "<query xmlns='jabber:iq:roster'><item jid='hugo.bernard@localhost' name='Hugo Bernard'>\
             <group>Classe de 6e A</group></item></query>",
        )
        .await;
    assert!(set.contains("type='result'"), "{set}");
    lea.send("<presence xmlns='jabber:client' to='hugo.bernard@localhost' type='subscribe'/>")
        .await;
    hugo.expect_all(&["type='subscribe'", "lea.martin@localhost"])
        .await;
    hugo.send("<presence xmlns='jabber:client' to='lea.martin@localhost' type='subscribed'/>")
        .await;
    lea.expect_all(&["type='subscribed'", "hugo.bernard@localhost"])
        .await;
    lea.logout().await;
    prof.send("<presence xmlns='jabber:client' to='lea.martin@localhost' type='subscribe'/>")
        .await;
    let _ = prof.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stand_in = tokio::process::Command::new("node")
        .arg(root.join("deploy/ent-embed/ent-standin.mjs"))
        .env("PORT", port.to_string())
        .env("CAUSETTE_HTTP", format!("http://{}", server.http))
        .env("XMPP_DOMAIN", "localhost")
        .env("TOKEN_SECRET", crate::sso::SECRET)
        .env("TOKEN_ISSUER", crate::sso::ISSUER)
        .env("TOKEN_AUDIENCE", crate::sso::AUDIENCE)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the ENT stand-in");
    let mut stand_in_out = BufReader::new(stand_in.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(WAIT, stand_in_out.next_line())
        .await
        .expect("the stand-in starts in time")
        .unwrap()
        .unwrap_or_default();
    assert!(listening.contains("listening"), "{listening}");

    let shots = screenshot_dir();
    let mut browser = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/ent-window.mjs"))
        .args([
            &ent,
            "lea.martin",
            "Léa Martin",
            "Hugo Bernard",
            "Classe de 6e A",
            // The request shows the directory's name (XEP-0172 nick), not the JID.
            "M. Durand",
            // Found by the directory search (XEP-0055).
            "M. Leroy (CPE)",
        ])
        .arg(&shots)
        .arg(transport)
        .current_dir(root.join("tests/browser"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser");
    let mut input = browser.stdin.take().unwrap();
    let mut steps = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut errors = BufReader::new(browser.stderr.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let line = match tokio::time::timeout(WAIT * 6, steps.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let mut error = String::new();
                let _ = tokio::time::timeout(
                    WAIT,
                    tokio::io::AsyncReadExt::read_to_string(&mut errors, &mut error),
                )
                .await;
                panic!("browser stopped after {seen:?} ({other:?}):\n{error}");
            }
        };
        let Some(step) = line.strip_prefix("STEP ") else {
            continue;
        };
        seen.push(step.to_owned());
        match step {
            "accepted" => {
                // The acceptance reached M. Durand.
                prof.expect_all(&["type='subscribed'", "lea.martin@localhost"])
                    .await;
            }
            "waiting-message" => {
                hugo.send(
                    "<message xmlns='jabber:client' to='lea.martin@localhost' type='chat'>\
                     <body>Bonjour Léa, tu as fini l'exercice 5 ?</body></message>",
                )
                .await;
                input.write_all(b"go\n").await.unwrap();
            }
            "waiting-invitation" => {
                let room = "sortie-musee@conference.localhost";
                prof.send(&format!(
                    "<presence xmlns='jabber:client' to='{room}/Durand'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
                ))
                .await;
                prof.expect_all(&["status code='201'"]).await;
                prof.send(&format!(
                    "<iq xmlns='jabber:client' type='set' to='{room}' id='configure'>\
                     <query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
                ))
                .await;
                let configured = prof.expect("id='configure'").await;
                assert!(configured.contains("type='result'"), "{configured}");
                prof.send(&format!(
                    "<message xmlns='jabber:client' to='{room}'><x xmlns='http://jabber.org/protocol/muc#user'>\
                     <invite to='lea.martin@localhost'><reason>Sortie au musée</reason></invite></x></message>"
                ))
                .await;
                input.write_all(b"go\n").await.unwrap();
                // Once Léa is in, the conversation goes on.
                prof.expect_all(&[
                    "<presence",
                    "from='sortie-musee@conference.localhost/",
                    "lea.martin@localhost",
                ])
                .await;
                prof.send(&format!(
                    "<message xmlns='jabber:client' to='{room}' type='groupchat'><body>Rendez-vous devant le musée à 9 h</body></message>"
                ))
                .await;
            }
            "waiting-after-reload" => {
                hugo.send(
                    "<message xmlns='jabber:client' to='lea.martin@localhost' type='chat'>\
                     <body>Tu es toujours là ?</body></message>",
                )
                .await;
                input.write_all(b"go\n").await.unwrap();
            }
            "requested" => {
                // The request carries Léa's name from the directory (XEP-0172).
                cpe.expect_all(&[
                    "type='subscribe'",
                    "lea.martin@localhost",
                    "<nick xmlns='http://jabber.org/protocol/nick'>Léa Martin</nick>",
                ])
                .await;
            }
            "waiting-access-closed" => {
                set_student_access(&server, false).await;
                // Léa's window was in the conversation: she leaves it.
                prof.expect_all(&[
                    "type='unavailable'",
                    "from='sortie-musee@conference.localhost/",
                    "lea.martin@localhost",
                ])
                .await;
                prof.drain().await;
                input.write_all(b"go\n").await.unwrap();
            }
            "waiting-access-open" => {
                set_student_access(&server, true).await;
                input.write_all(b"go\n").await.unwrap();
            }
            "waiting-rejoin" => {
                // Signed in again, the window goes back into its conversation by itself.
                prof.expect_where(&["Léa back in the conversation"], |s| {
                    s.starts_with("<presence")
                        && !s.contains("type='unavailable'")
                        && s.contains("from='sortie-musee@conference.localhost/")
                        && s.contains("lea.martin@localhost")
                })
                .await;
                prof.send(
                    "<message xmlns='jabber:client' to='sortie-musee@conference.localhost' type='groupchat'>\
                     <body>On part à 8 h 45</body></message>",
                )
                .await;
                input.write_all(b"go\n").await.unwrap();
            }
            "done" => break,
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "roster",
            "accepted",
            "waiting-message",
            "message",
            "waiting-invitation",
            "conversation",
            "waiting-after-reload",
            "reloaded",
            "requested",
            "waiting-access-closed",
            "refused",
            "waiting-access-open",
            "waiting-rejoin",
            "rejoined",
            "done"
        ]
    );
    drop(input);
    let status = tokio::time::timeout(WAIT, browser.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let suffix = if transport == "bosh" { "-bosh" } else { "" };
    assert!(shots.join(format!("ent-window{suffix}.png")).exists());
    println!("screenshots in {}", shots.display());
    let _ = stand_in.kill().await;
    // Hugo is a pupil too: closing the pupils' access closed his stream as well, and
    // tokio-xmpp retries quietly (its logins refused) until the client is dropped.
    drop(hugo);
    prof.logout().await;
    cpe.logout().await;
    server.stop().await;
}

/// Opens or closes the chat to the demo college's pupils, as the ENT's console does.
async fn set_student_access(server: &TestServer, enabled: bool) {
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "PUT",
        "/admin/api/v1/structures/0750001A/profiles/student",
        Some(&token),
        Some(&format!("{{\"enabled\":{enabled}}}")),
    )
    .await;
    assert_eq!(status, 204, "{body}");
}
