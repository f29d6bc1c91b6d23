//! The `causette` command: serve, migrate the store, manage accounts.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use causette::config::{Config, LogFormat};
use causette::{Server, accounts, storage};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "Causette: XMPP chat server for school portals (ENT)")]
struct Cli {
    /// Configuration file. Without it, ./causette.toml is read if present, else the defaults
    /// apply (domain localhost, SQLite under ./data, self-signed certificate).
    #[arg(long, short, env = "CAUSETTE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Create or update the database schema, then exit.
    Migrate,
    /// Import directory changes (JSON Lines, one change per line) in one transaction. Run it
    /// with the server stopped; a running server takes the same file on
    /// POST /admin/api/v1/import.
    Directory {
        #[command(subcommand)]
        action: DirectoryAction,
    },
    /// Manage accounts. Passwords are read from standard input or a prompt, never from
    /// the command line.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Copy the SQLite store into FILE, a new file: a consistent copy, safe while the server
    /// runs (VACUUM INTO). For PostgreSQL, use pg_dump.
    Backup { file: PathBuf },
    /// Put a backup made by `backup` in place of the store, which must not exist yet (a new
    /// data_dir); its schema is then brought up to date. For PostgreSQL, use pg_restore.
    Restore { file: PathBuf },
    /// Check the configuration: the file, the certificate and key, the data directory, the
    /// database, the single sign-on key; say what is wrong and exit non-zero if anything is.
    Check,
}

#[derive(Subcommand)]
enum DirectoryAction {
    /// Apply a JSON Lines file of directory changes; a bad line rejects the whole file.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create an account.
    Add { username: String },
    /// Change an account's password.
    Passwd { username: String },
    /// Delete an account.
    Del { username: String },
    /// Create PREFIX0 … PREFIX{COUNT-1} with one password read once (load tests, demos);
    /// existing accounts are left as they are.
    AddMany { prefix: String, count: usize },
    /// List accounts.
    List,
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::from_file(&path)?,
        None => {
            let default = PathBuf::from("causette.toml");
            if default.exists() {
                Config::from_file(&default)?
            } else {
                Config::default()
            }
        }
    };
    // Environment overrides, for containers and CI.
    if let Ok(url) = std::env::var("CAUSETTE_DATABASE_URL") {
        config.database.url = url;
    }
    if let Ok(list) = std::env::var("CAUSETTE_LISTEN_C2S") {
        config.listen.c2s = parse_addrs("CAUSETTE_LISTEN_C2S", &list)?;
    }
    if let Ok(list) = std::env::var("CAUSETTE_LISTEN_C2S_DIRECT_TLS") {
        config.listen.c2s_direct_tls = parse_addrs("CAUSETTE_LISTEN_C2S_DIRECT_TLS", &list)?;
    }
    config.validate()?;
    Ok(config)
}

fn parse_addrs(name: &str, list: &str) -> anyhow::Result<Vec<SocketAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("{name}: {s:?} is not an address like 127.0.0.1:5222"))
        })
        .collect()
}

/// The server logs to standard output; the one-shot commands log to standard error, keeping
/// standard output for what they report.
fn init_logging(config: &Config, serving: bool) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    // tokio-xmpp traces every byte of the stream, SASL exchanges and message bodies
    // included: never let it log below warnings, whatever the filter asks. PostgreSQL's
    // notices ("relation already exists, skipping") are noise for an operator.
    const QUIET: &str = "tokio_xmpp=warn,sqlx::postgres::notice=warn";
    let filter = EnvFilter::try_new(format!("{spec},{QUIET}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")));
    // Colours only for a person at a terminal: journald, files and pipes get plain text.
    let terminal = if serving {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal);
    match (config.log.format, serving) {
        (LogFormat::Json, true) => builder.json().init(),
        (LogFormat::Json, false) => builder.json().with_writer(std::io::stderr).init(),
        (LogFormat::Text, true) => builder.init(),
        (LogFormat::Text, false) => builder.with_writer(std::io::stderr).init(),
    }
}

/// Who runs a command, for the log: the login behind sudo, else the user (from the
/// environment, else the process's user id, as in containers and CI where `USER` is unset).
fn cli_actor() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(process_user);
    format!("cli:{user}")
}

/// The process's user: its name from /etc/passwd, else `uid <n>`.
fn process_user() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// "1 room", "2 rooms".
fn counted(n: i64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn read_password(confirm: bool) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Again: ")? != password {
            bail!("the passwords differ");
        }
        Ok(password)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

async fn add_many(
    store: &causette::storage::DynStore,
    prefix: &str,
    count: usize,
    password: String,
    iterations: u32,
) -> Result<usize, accounts::Error> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(workers * 2));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (store, password, limit) = (store.clone(), password.clone(), limit.clone());
        let name = format!("{prefix}{i}");
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            match accounts::add(&store, &name, password, iterations).await {
                Ok(_) => Ok(1),
                Err(accounts::Error::Exists(_)) => Ok(0),
                Err(e) => Err(e),
            }
        });
    }
    let mut created = 0;
    while let Some(done) = tasks.join_next().await {
        if let Ok(result) = done {
            created += result?;
        }
    }
    Ok(created)
}

/// Serves until SIGTERM or SIGINT; SIGHUP reloads the certificate (a renewal). The signals
/// are watched before the server starts: one sent as soon as it says it serves is not lost
/// (nor does SIGHUP's default action end the process).
async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let server = Server::start(config).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                // Logged either way; a pair that does not load leaves the old one in place.
                let _ = server.reload_certificate().await;
            }
        }
    }
    server.shutdown().await;
    Ok(())
}

/// Errors are for the person at the terminal: one line, every cause said once, no backtrace
/// (an error here is a situation to act on; a bug panics, and a panic keeps its backtrace).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause its predecessor already says.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    let config = load_config(cli.config)?;
    init_logging(&config, matches!(command, Command::Serve));
    match command {
        Command::Serve => {
            serve(config).await?;
        }
        Command::Migrate => {
            let migrated = storage::migrate(&config.database_url()).await?;
            println!("{migrated}");
        }
        Command::Check => {
            let report = causette::check::run(&config).await;
            print!("{report}");
            if report.failed() {
                bail!("the configuration has problems (above)");
            }
        }
        Command::Backup { file } => {
            let summary = storage::backup(&config.database_url(), &file).await?;
            println!(
                "backed up {}, {} and {} to {} ({} bytes)",
                counted(summary.users, "user"),
                counted(summary.offline_messages, "offline message"),
                counted(summary.rooms, "room"),
                file.display(),
                summary.bytes
            );
        }
        Command::Restore { file } => {
            let summary = storage::restore(&file, &config.database_url()).await?;
            println!(
                "restored {}, {} and {} from {}",
                counted(summary.users, "user"),
                counted(summary.offline_messages, "offline message"),
                counted(summary.rooms, "room"),
                file.display()
            );
        }
        Command::Directory {
            action: DirectoryAction::Import { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            // The running server keeps the directory in memory: it would not see the change.
            if storage::is_served(&config.database_url()).await? {
                let http = config.http.listen.first().map_or_else(
                    || "http://SERVER".to_owned(),
                    |addr| format!("http://{addr}"),
                );
                bail!(
                    "nothing imported: a Causette server is running on this store and would not \
                     see the change; import through it: curl --data-binary @{} -H \
                     'Authorization: Bearer <admin token>' {http}/admin/api/v1/import",
                    file.display()
                );
            }
            let batch = causette::admin::import::parse_import(&text)
                .map_err(|e| anyhow::anyhow!("nothing imported: {e}"))?;
            let credentials =
                causette::admin::import::credentials(batch.passwords, config.auth.scram_iterations)
                    .await
                    .map_err(|e| anyhow::anyhow!("nothing imported: {e}"))?;
            let store = storage::open(&config.database_url(), 1).await?;
            let policy = causette::policy::Policy::load(&store).await?;
            let result = policy
                .apply(&store, "cli:import", &batch.changes, &credentials)
                .await;
            store.close().await;
            let (changes, lines) = (batch.changes, batch.lines);
            match result {
                Ok(_) => {
                    tracing::info!(
                        actor = %cli_actor(),
                        count = changes.len(),
                        file = %file.display(),
                        "directory changed by an import"
                    );
                    println!("imported {} changes from {}", changes.len(), file.display())
                }
                Err(causette::policy::ApplyError::Invalid { index, invalid }) => {
                    let line = lines.get(index).copied().unwrap_or(index + 1);
                    bail!("nothing imported: line {line}: {invalid}");
                }
                Err(other) => bail!("nothing imported: {other}"),
            }
        }
        Command::User { action } => {
            let store = storage::open(&config.database_url(), 1).await?;
            let iterations = config.auth.scram_iterations;
            let result = match action {
                UserAction::Add { username } => {
                    let password = read_password(true)?;
                    accounts::add(&store, &username, password, iterations)
                        .await
                        .map(|name| {
                            tracing::info!(actor = %cli_actor(), user = %name, "account created");
                            println!("created {name}@{}", config.domain)
                        })
                }
                UserAction::Passwd { username } => {
                    let password = read_password(true)?;
                    accounts::set_password(&store, &username, password, iterations)
                        .await
                        .map(|name| {
                            tracing::info!(actor = %cli_actor(), user = %name, "password changed");
                            println!("password changed for {name}@{}", config.domain)
                        })
                }
                UserAction::AddMany { prefix, count } => {
                    let password = read_password(true)?;
                    add_many(&store, &prefix, count, password, iterations)
                        .await
                        .map(|created| {
                            tracing::info!(actor = %cli_actor(), prefix, created, "accounts created");
                            println!("created {created} accounts")
                        })
                }
                UserAction::Del { username } => {
                    accounts::delete(&store, &username).await.map(|name| {
                        tracing::info!(actor = %cli_actor(), user = %name, "account deleted");
                        println!("deleted {name}@{}", config.domain)
                    })
                }
                UserAction::List => accounts::list(&store).await.map(|names| {
                    for name in names {
                        println!("{name}@{}", config.domain);
                    }
                }),
            };
            store.close().await;
            result?;
        }
    }
    Ok(())
}
