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

fn init_logging(config: &Config) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    // tokio-xmpp traces every byte of the stream, SASL exchanges and message bodies
    // included: never let it log below warnings, whatever the filter asks.
    let filter = EnvFilter::try_new(format!("{spec},tokio_xmpp=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_xmpp=warn"));
    // Colours only for a person at a terminal: journald, files and pipes get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
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

/// Serves until SIGTERM or SIGINT; SIGHUP reloads the certificate (a renewal).
async fn serve_until_signalled(server: &Server) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = hangup.recv() => {
                // Logged either way; a pair that does not load leaves the old one in place.
                let _ = server.reload_certificate().await;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load_config(cli.config)?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let server = Server::start(config).await?;
            let signalled = serve_until_signalled(&server).await;
            server.shutdown().await;
            signalled?;
        }
        Command::Migrate => {
            let store = storage::open(&config.database_url(), 1).await?;
            store.close().await;
            println!("database schema is up to date");
        }
        Command::Backup { file } => {
            let summary = storage::backup(&config.database_url(), &file).await?;
            println!(
                "backed up {} users, {} offline messages and {} rooms to {} ({} bytes)",
                summary.users,
                summary.offline_messages,
                summary.rooms,
                file.display(),
                summary.bytes
            );
        }
        Command::Restore { file } => {
            let summary = storage::restore(&file, &config.database_url()).await?;
            println!(
                "restored {} users, {} offline messages and {} rooms from {}",
                summary.users,
                summary.offline_messages,
                summary.rooms,
                file.display()
            );
        }
        Command::Directory {
            action: DirectoryAction::Import { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
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
                Ok(_) => println!("imported {} changes from {}", changes.len(), file.display()),
                Err(causette::policy::ApplyError::Invalid { index, invalid }) => {
                    let line = lines.get(index).copied().unwrap_or(index + 1);
                    bail!("nothing imported: line {line}: {invalid}");
                }
                Err(other) => return Err(other.into()),
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
                        .map(|name| println!("created {name}@{}", config.domain))
                }
                UserAction::Passwd { username } => {
                    let password = read_password(true)?;
                    accounts::set_password(&store, &username, password, iterations)
                        .await
                        .map(|name| println!("password changed for {name}@{}", config.domain))
                }
                UserAction::AddMany { prefix, count } => {
                    let password = read_password(true)?;
                    add_many(&store, &prefix, count, password, iterations)
                        .await
                        .map(|created| println!("created {created} accounts"))
                }
                UserAction::Del { username } => accounts::delete(&store, &username)
                    .await
                    .map(|name| println!("deleted {name}@{}", config.domain)),
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
