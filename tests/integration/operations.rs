//! What an operator runs and reads, through the `causette` binary: backups of the embedded
//! store (`causette backup`, `causette restore`: one taken while the server serves, restored
//! into a new data_dir, holds the accounts, rosters, offline messages and the directory; and
//! what bad input gets), and the logs.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{TestServer, WAIT, Xmpp, http};

/// Runs the `causette` binary; whether it succeeded, and what it printed.
async fn causette(config: &Path, args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_causette"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(WAIT * 3, run)
        .await
        .expect("in time")
        .expect("causette runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A configuration file for the command line, on the store under `data_dir`.
fn config_for(data_dir: &Path) -> PathBuf {
    let path = data_dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[admin]\ndemo_directory = false\n[log]\nlevel = \"warn\"\n",
            data_dir.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_everything() {
    let server = TestServer::start_with(|c| c.im.chat_requires_acceptance = false).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let token = server.server().admin_token().to_owned();
    let (status, body) = http(
        server.http,
        "POST",
        "/admin/api/v1/import",
        Some(&token),
        Some("{\"op\":\"put_structure\",\"id\":\"0750001A\",\"name\":\"Collège Victor Hugo\"}\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut alice = Xmpp::login(&server, "alice", "pw").await;
    let set = alice
        .iq(
            "set",
            "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'><group>Amis</group></item></query>",
        )
        .await;
    assert!(set.contains("type='result'"), "{set}");
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>Gardé pour plus tard</body></message>")
        .await;
    let _ = alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>").await;

    // While the server serves: a consistent copy.
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("causette-backup.db");
    let backup_arg = backup.to_str().unwrap();
    let live = config_for(server.dir.path());
    let (ok, out) = causette(&live, &["backup", backup_arg]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("backed up 2 users, 1 offline messages and 0 rooms"),
        "{out}"
    );
    // A backup never overwrites a file.
    let (ok, out) = causette(&live, &["backup", backup_arg]).await;
    assert!(!ok && out.contains("never overwrites"), "{out}");
    alice.logout().await;
    server.stop().await;

    // Restored into a new data_dir.
    let fresh = tempfile::tempdir().unwrap();
    let restored_config = config_for(fresh.path());
    let not_a_backup = work.path().join("notes.txt");
    std::fs::write(&not_a_backup, "pas une sauvegarde").unwrap();
    let (ok, out) = causette(
        &restored_config,
        &["restore", not_a_backup.to_str().unwrap()],
    )
    .await;
    assert!(!ok && out.contains("is not a Causette backup"), "{out}");
    assert!(
        !fresh.path().join("causette.db").exists(),
        "nothing was changed"
    );
    let (ok, out) = causette(&restored_config, &["restore", backup_arg]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("restored 2 users, 1 offline messages"),
        "{out}"
    );
    // Never over a store that exists.
    let (ok, out) = causette(&restored_config, &["restore", backup_arg]).await;
    assert!(!ok && out.contains("already at"), "{out}");

    let data_dir = fresh.path().to_path_buf();
    let restored = TestServer::start_with(|c| {
        c.data_dir = data_dir;
        c.im.chat_requires_acceptance = false;
    })
    .await;
    // The clients trust the certificate the server made in its data_dir.
    std::fs::create_dir_all(restored.dir.path().join("tls")).unwrap();
    std::fs::copy(
        fresh.path().join("tls/localhost.crt"),
        restored.dir.path().join("tls/localhost.crt"),
    )
    .unwrap();
    let mut bob = Xmpp::login(&restored, "bob", "pw").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    bob.expect("Gardé pour plus tard").await;
    let mut alice = Xmpp::login(&restored, "alice", "pw").await;
    let roster = alice.iq("get", "<query xmlns='jabber:iq:roster'/>").await;
    assert!(
        roster.contains("jid='bob@localhost'") && roster.contains("<group>Amis</group>"),
        "{roster}"
    );
    let token = restored.server().admin_token().to_owned();
    let (status, structures) = http(
        restored.http,
        "GET",
        "/admin/api/v1/structures",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{structures}");
    assert!(structures.contains("0750001A"), "{structures}");
    alice.logout().await;
    bob.logout().await;
    restored.stop().await;
}

#[tokio::test]
async fn postgresql_is_pg_dumps_to_back_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pg.toml");
    std::fs::write(
        &config,
        "[database]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let target = dir.path().join("backup.db");
    let (ok, out) = causette(&config, &["backup", target.to_str().unwrap()]).await;
    assert!(!ok && out.contains("pg_dump"), "{out}");
    assert!(!target.exists());
}

/// A serving `causette` process with its log on a pipe; its c2s address, from the log.
async fn serving(
    dir: &Path,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    Vec<String>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let config = dir.join("causette.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[listen]\nc2s = [\"127.0.0.1:0\"]\nc2s_direct_tls = []\n\
             [http]\nlisten = []\n[tls]\nallow_plaintext_on_loopback = true\n\
             [admin]\ndemo_directory = false\n[log]\nlevel = \"info\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_causette"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("causette serve runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        let done = line.contains("serving");
        seen.push(line);
        if done {
            break;
        }
    }
    (child, lines, seen)
}

/// Logs written to a pipe (journald, a file) carry no terminal colour codes, and a failed
/// login says who was tried and from where, never the password.
#[tokio::test]
async fn logs_an_operator_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines, seen) = serving(dir.path()).await;
    let serving_line = seen
        .iter()
        .find(|l| l.contains("serving"))
        .unwrap_or_else(|| panic!("{seen:?}"))
        .clone();
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:?}");
    // c2s=[127.0.0.1:PORT]
    let c2s: std::net::SocketAddr = serving_line
        .split("c2s=[")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{serving_line}"));
    let refused = crate::common::plain_attempt(
        crate::common::Raw::connect(c2s).await,
        "alice",
        "s3cret-never-logged",
    )
    .await;
    assert!(refused.contains("not-authorized"), "{refused}");
    let mut failed = None;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        assert!(!line.contains("s3cret-never-logged"), "{line}");
        if line.contains("authentication failed") {
            failed = Some(line);
            break;
        }
    }
    let failed = failed.expect("the failure is logged");
    assert!(
        failed.contains("user=\"alice\"") && failed.contains("peer=127.0.0.1"),
        "{failed}"
    );
    assert!(!failed.contains('\u{1b}'), "{failed:?}");
    let _ = child.kill().await;
}

/// SIGHUP reloads the certificate (what a renewal hook sends) and the server goes on serving;
/// SIGTERM then stops it cleanly.
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines, _) = serving(dir.path()).await;
    let pid = child.id().expect("running").to_string();
    let signal = |name: &'static str| {
        let pid = pid.clone();
        async move {
            let status = tokio::process::Command::new("kill")
                .args([name, &pid])
                .status()
                .await
                .expect("kill runs");
            assert!(status.success());
        }
    };
    signal("-HUP").await;
    let mut reloaded = None;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        if line.contains("certificate reloaded") {
            reloaded = Some(line);
            break;
        }
    }
    let reloaded = reloaded.expect("the reload is logged");
    assert!(reloaded.contains("localhost.crt"), "{reloaded}");
    signal("-TERM").await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops in time")
        .expect("status");
    assert!(status.success(), "{status}");
}
