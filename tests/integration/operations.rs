//! What an operator runs and reads, through the `causette` binary: backups of the embedded
//! store (`causette backup`, `causette restore`: one taken while the server serves, restored
//! into a new data_dir, holds the accounts, rosters, offline messages and the directory; and
//! what bad input gets), and the logs.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{TestServer, WAIT, Xmpp, http};

/// Runs the `causette` binary; whether it succeeded, and what it printed.
async fn causette(config: &Path, args: &[&str]) -> (bool, String) {
    let ran = run_causette(config, args, "", &[]).await;
    (ran.success, ran.stdout + &ran.stderr)
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
        out.contains("backed up 2 users, 1 offline message and 0 rooms"),
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
        out.contains("restored 2 users, 1 offline message and"),
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
            // The shell's own kill: no procps needed.
            let status = tokio::process::Command::new("sh")
                .args(["-c", &format!("kill {name} {pid}")])
                .status()
                .await
                .expect("kill runs");
            assert!(status.success());
        }
    };
    // A renewal that expires in 3 days: loaded, and the log says to renew it.
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(3);
    use chrono::Datelike;
    let (cert, key) =
        crate::certificates::pair_until(soon.year(), soon.month() as u8, soon.day() as u8);
    std::fs::write(dir.path().join("tls/localhost.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls/localhost.key"), key).unwrap();
    signal("-HUP").await;
    let (mut reloaded, mut warned) = (None, None);
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        if line.contains("certificate reloaded") {
            reloaded = Some(line);
        } else if line.contains("expires soon") {
            warned = Some(line);
            break;
        }
    }
    let reloaded = reloaded.expect("the reload is logged");
    assert!(reloaded.contains("localhost.crt"), "{reloaded}");
    let warned = warned.expect("the near expiry is logged");
    assert!(warned.contains("days_left=2"), "{warned}");
    signal("-TERM").await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops in time")
        .expect("status");
    assert!(status.success(), "{status}");
}

/// What a command printed, split, and how it ended.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the `causette` binary with `stdin` as its input and extra environment variables.
async fn run_causette(config: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Ran {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_causette"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("causette runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(WAIT * 3, child.wait_with_output())
        .await
        .expect("in time")
        .expect("output");
    Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A person's mistakes get one line each, without a backtrace even when RUST_BACKTRACE asks
/// for them, and a non-zero exit.
#[tokio::test]
async fn command_line_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let backtrace = [("RUST_BACKTRACE", "1")];
    let created = run_causette(&config, &["user", "add", "bob"], "pw\n", &backtrace).await;
    assert!(created.success, "{}", created.stderr);
    assert_eq!(created.stdout, "created bob@localhost\n");
    let again = run_causette(&config, &["user", "add", "bob"], "pw\n", &backtrace).await;
    assert!(!again.success);
    assert_eq!(again.stderr, "error: user bob already exists\n");
    let empty = run_causette(&config, &["user", "add", "carl"], "\n", &backtrace).await;
    assert!(!empty.success);
    assert_eq!(empty.stderr, "error: the password is empty\n");
    let missing = run_causette(&config, &["user", "del", "nobody"], "", &backtrace).await;
    assert_eq!(missing.stderr, "error: no user nobody\n");

    // A malformed file: where and what, on one line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "domain = \"x\"\n[limits]\nmax_stanza_size = \"big\"\n",
    )
    .unwrap();
    let refused = run_causette(&bad, &["migrate"], "", &backtrace).await;
    assert!(!refused.success);
    assert_eq!(
        refused.stderr,
        format!(
            "error: invalid configuration in {}, line 3, column 19: invalid type: string \"big\", expected usize\n",
            bad.display()
        )
    );
}

/// `migrate` says what it did; an unreachable PostgreSQL is said at once, with where.
#[tokio::test]
async fn migrate_reports_and_an_unreachable_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let first = run_causette(&config, &["migrate"], "", &[]).await;
    assert!(first.success, "{}", first.stderr);
    assert!(
        first.stdout.starts_with("created the schema ("),
        "{}",
        first.stdout
    );
    let second = run_causette(&config, &["migrate"], "", &[]).await;
    assert!(
        second.stdout.starts_with("the schema is up to date ("),
        "{}",
        second.stdout
    );

    // A port nobody listens on: refused at once (the pool's 30 s timeout is not waited).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://causette:secret@127.0.0.1:{port}/causette");
    let started = std::time::Instant::now();
    let refused = run_causette(
        &config,
        &["migrate"],
        "",
        &[("CAUSETTE_DATABASE_URL", &url)],
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!refused.success);
    assert_eq!(
        refused.stderr,
        format!("error: cannot reach the database at 127.0.0.1:{port}: connection refused\n")
    );
    assert!(!refused.stderr.contains("secret"));
}

/// `causette check` says what is fine and what is wrong, and exits non-zero when something is.
#[tokio::test]
async fn check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let fine = run_causette(&config, &["check"], "", &[]).await;
    assert!(fine.success, "{}{}", fine.stdout, fine.stderr);
    assert!(
        fine.stdout
            .contains("ok      configuration valid, domain localhost"),
        "{}",
        fine.stdout
    );
    assert!(
        fine.stdout
            .contains("self-signed certificate will be generated"),
        "{}",
        fine.stdout
    );
    assert!(
        fine.stdout.contains("does not exist yet"),
        "{}",
        fine.stdout
    );

    // A data_dir that does not exist yet is fine, and the check does not create it.
    let fresh = dir.path().join("fresh");
    let fresh_config = dir.path().join("fresh.toml");
    std::fs::write(
        &fresh_config,
        format!("data_dir = \"{}\"\n", fresh.display()),
    )
    .unwrap();
    let untouched = run_causette(&fresh_config, &["check"], "", &[]).await;
    assert!(
        untouched.success,
        "{}{}",
        untouched.stdout, untouched.stderr
    );
    assert!(
        untouched
            .stdout
            .contains("does not exist yet: the first start creates it"),
        "{}",
        untouched.stdout
    );
    assert!(!fresh.exists(), "check created {}", fresh.display());

    // A key that is not the certificate's, and a certificate for another name.
    let pair = crate::certificates::pair_named;
    let (cert, _) = pair("localhost");
    let (_, other_key) = pair("localhost");
    std::fs::write(dir.path().join("a.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("b.key"), &other_key).unwrap();
    let mismatched = dir.path().join("mismatched.toml");
    std::fs::write(
        &mismatched,
        format!(
            "data_dir = \"{0}\"\n[tls]\ncert = \"{0}/a.crt\"\nkey = \"{0}/b.key\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let refused = run_causette(&mismatched, &["check"], "", &[]).await;
    assert!(!refused.success);
    assert!(
        refused.stdout.contains(&format!(
            "error   the private key in {}/b.key does not match the certificate in {}/a.crt",
            dir.path().display(),
            dir.path().display()
        )),
        "{}",
        refused.stdout
    );
    assert_eq!(
        refused.stderr.lines().last(),
        Some("error: the configuration has problems (above)")
    );

    let (cert, key) = pair("chat.example.org");
    std::fs::write(dir.path().join("a.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("b.key"), &key).unwrap();
    let wrong_name = run_causette(&mismatched, &["check"], "", &[]).await;
    assert!(!wrong_name.success);
    assert!(
        wrong_name
            .stdout
            .contains("does not name the domain localhost"),
        "{}",
        wrong_name.stdout
    );

    // Expiry: past is an error, within 14 days a warning, later fine.
    let cert_path = dir.path().join("a.crt");
    let expiring = |(cert, key): (String, String)| {
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(dir.path().join("b.key"), key).unwrap();
    };
    expiring(crate::certificates::pair_until(2020, 1, 1));
    let expired = run_causette(&mismatched, &["check"], "", &[]).await;
    assert!(!expired.success);
    assert!(
        expired.stdout.contains(&format!(
            "error   certificate {} expired on 2020-01-01",
            cert_path.display()
        )),
        "{}",
        expired.stdout
    );
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(6);
    use chrono::Datelike;
    expiring(crate::certificates::pair_until(
        soon.year(),
        soon.month() as u8,
        soon.day() as u8,
    ));
    let renew = run_causette(&mismatched, &["check"], "", &[]).await;
    assert!(renew.success, "{}{}", renew.stdout, renew.stderr);
    assert!(
        renew
            .stdout
            .contains(&format!("expires on {soon}, in 5 days: renew it")),
        "{}",
        renew.stdout
    );
}

/// `causette directory import` refuses a store a server is running on (the server keeps the
/// directory in memory and would not see the change), says how to import through it, and
/// changes nothing; once the server stops, the same import goes through. A second server on
/// the same SQLite store is refused at start.
#[tokio::test]
async fn an_import_behind_a_running_servers_back_is_refused() {
    // A folder of our own: the store outlives the server.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let server = TestServer::start_with(|c| c.data_dir = data_dir.clone()).await;
    let config = config_for(&data_dir);
    let file = data_dir.join("batch.jsonl");
    std::fs::write(
        &file,
        "{\"op\":\"put_structure\",\"id\":\"0750001A\",\"name\":\"Collège Victor Hugo\"}\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let refused = run_causette(&config, &["directory", "import", file_arg], "", &[]).await;
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .starts_with("error: nothing imported: a Causette server is running on this store")
            && refused.stderr.contains("curl --data-binary @")
            && refused.stderr.ends_with("/admin/api/v1/import\n"),
        "{}",
        refused.stderr
    );
    let checked = run_causette(&config, &["check"], "", &[]).await;
    assert!(
        checked
            .stdout
            .contains("ok      a Causette server is running on the SQLite store now"),
        "{}",
        checked.stdout
    );
    let token = server.server().admin_token().to_owned();
    let (status, _) = http(
        server.http,
        "GET",
        "/admin/api/v1/structures/0750001A",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let mut second = causette::Config {
        data_dir: data_dir.clone(),
        ..causette::Config::default()
    };
    second.listen.c2s = vec!["127.0.0.1:0".parse().unwrap()];
    second.listen.c2s_direct_tls = Vec::new();
    second.http.listen = Vec::new();
    second.admin.demo_directory = false;
    let error = causette::Server::start(second)
        .await
        .err()
        .expect("a second server is refused")
        .to_string();
    assert!(
        error.starts_with("another Causette server serves this store"),
        "{error}"
    );

    server.stop().await;
    let imported = run_causette(&config, &["directory", "import", file_arg], "", &[]).await;
    assert!(imported.success, "{}", imported.stderr);
    assert!(
        imported.stdout.starts_with("imported 1 changes"),
        "{}",
        imported.stdout
    );
}

/// On PostgreSQL, a running server's mark is an advisory lock that the import finds.
#[tokio::test]
#[ignore = "needs PostgreSQL: CAUSETTE_TEST_POSTGRES_URL (bash .ci/run sets it up)"]
async fn an_import_finds_a_server_running_on_postgres() {
    let url = crate::postgres::postgres_url();
    let server = TestServer::start_with(|c| c.database.url = url.clone()).await;
    let config = config_for(&server.server().config().data_dir);
    let file = server.server().config().data_dir.join("batch.jsonl");
    std::fs::write(&file, "{\"op\":\"delete_structure\",\"id\":\"none\"}\n").unwrap();
    let refused = run_causette(
        &config,
        &["directory", "import", file.to_str().unwrap()],
        "",
        &[("CAUSETTE_DATABASE_URL", &url)],
    )
    .await;
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("a Causette server is running on this store"),
        "{}",
        refused.stderr
    );
    server.stop().await;
}

/// A first run as the README has it, tried as a new user would: a bad database URL stops
/// `serve` before it writes anything (no certificate), and SQLite's error names the file; a
/// good one generates a certificate named for the domain, valid for ten years, not for the
/// year 4096.
#[tokio::test]
async fn a_first_start_says_what_is_wrong_and_writes_a_certificate_for_its_domain() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let unopenable = dir.path().join("not-a-dir");
    std::fs::write(&unopenable, "a file, where a directory is needed").unwrap();
    let url = format!("sqlite://{}/causette.db?mode=rwc", unopenable.display());
    let ran = run_causette(&config, &["serve"], "", &[("CAUSETTE_DATABASE_URL", &url)]).await;
    assert!(!ran.success);
    assert!(
        ran.stderr
            .contains(&format!("{}/causette.db", unopenable.display())),
        "{}",
        ran.stderr
    );
    assert!(
        !dir.path().join("tls").exists(),
        "a certificate was written"
    );

    let server = TestServer::start().await;
    let pem = std::fs::read(server.dir.path().join("tls/localhost.crt")).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    assert_eq!(common_name.as_deref(), Some("localhost"));
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert!((9..=10).contains(&years), "{years} years");
    server.stop().await;
}
