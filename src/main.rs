//! The `shipmate` command line (SPEC §7). Thin: parse arguments, load config, hand over to `app`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use shipmate::config::{self, Config};
use shipmate::engine::Time;

#[derive(Parser)]
#[command(name = "shipmate", version, about = "Chat-ops release bot")]
struct Cli {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Action,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Action {
    /// Run the bot: HTTP server, chat adapters, workers.
    Serve {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
    /// Validate bot.toml; exit 0 when fine, 2 with every problem listed.
    CheckConfig {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
    /// Try every backend's credentials and reachability without deploying; exit 0 when all
    /// answer, 1 naming each that failed.
    CheckBackends {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
    /// Print a Slack app manifest (YAML) for this bot: paste it into "Create New App".
    SlackManifest {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
    /// Discord tasks.
    Discord {
        #[command(subcommand)]
        action: DiscordAction,
    },
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Walk the hash chain; exit 0 when every event matches, 1 naming the first that does not.
    Verify {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
    /// Write audit events (with their hashes) as JSON lines to standard output.
    Export {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
        /// Only events at or after this time: RFC 3339 (2026-12-01T09:00:00Z) or a date (2026-12-01, UTC).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum DiscordAction {
    /// Register (overwrite) the /release command in [discord] guild_id, or globally, and exit.
    RegisterCommands {
        #[arg(long, default_value = "bot.toml")]
        config: PathBuf,
    },
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shipmate: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(action: Action) -> ExitCode {
    match action {
        Action::CheckConfig { config } => match load(&config) {
            Ok(_) => {
                println!("{} is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Action::SlackManifest { config } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            match shipmate::chat::slack::manifest::manifest(&config) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shipmate: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Action::Discord {
            action: DiscordAction::RegisterCommands { config },
        } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            match register_discord_commands(&config).await {
                Ok(scope) => {
                    println!("registered /release {scope}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Action::Audit {
            action: AuditAction::Verify { config },
        } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            verify_audit(&config).await
        }
        Action::Audit {
            action: AuditAction::Export { config, since },
        } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            let since = match since.as_deref().map(parse_since).transpose() {
                Ok(since) => since,
                Err(problem) => {
                    eprintln!("shipmate: {problem}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut out = std::io::stdout().lock();
            match shipmate::app::export_audit(&config, since, &mut out).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Action::CheckBackends { config } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            check_backends(&config).await
        }
        Action::Migrate { config } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            match migrate(&config).await {
                Ok(()) => {
                    println!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Action::Serve { config } => {
            let Ok(config) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            match serve(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    tracing::error!("{error:#}");
    eprintln!("shipmate: {error:#}");
    ExitCode::from(EXIT_RUNTIME)
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path, &|name| std::env::var(name).ok()).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn check_backends(config: &Config) -> ExitCode {
    let checks = shipmate::app::check_backends(config).await;
    let mut failed = 0;
    for check in &checks {
        let target = format!("{} {} ({})", check.service, check.environment, check.kind);
        match &check.result {
            Ok(seen) => println!("ok      {target}: {seen}"),
            Err(problem) => {
                failed += 1;
                println!("FAILED  {target}: {problem}");
            }
        }
    }
    if failed == 0 {
        println!("all {} backends answered", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} backends failed", checks.len());
        ExitCode::from(EXIT_RUNTIME)
    }
}

async fn verify_audit(config: &Config) -> ExitCode {
    use shipmate::domain::audit_chain::ChainCheck;
    match shipmate::app::verify_audit(config).await {
        Ok(ChainCheck::Intact { events, head }) => {
            println!("audit chain intact: {events} events; head {head}");
            ExitCode::SUCCESS
        }
        Ok(ChainCheck::Broken { id, why }) => {
            println!("audit chain broken at event #{id}: {why}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => fail(&e),
    }
}

/// `--since`: an RFC 3339 time, or a date meaning its midnight UTC.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    shipmate::domain::audit::parse_since(text).map_err(|problem| format!("--since {problem}"))
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = shipmate::app::connect(&config.database_url).await?;
    store.migrate().await?;
    store.close().await;
    Ok(())
}

async fn register_discord_commands(config: &Config) -> anyhow::Result<String> {
    use shipmate::chat::discord;
    let Some(settings) = &config.discord else {
        anyhow::bail!("bot.toml has no [discord] table; add one (see the README's Discord setup)");
    };
    let http = discord::build_http(settings)?;
    discord::commands::register(&http, settings.guild_id)
        .await
        .map_err(|e| anyhow::anyhow!("Discord refused the registration: {e}"))?;
    Ok(match settings.guild_id {
        Some(guild) => format!("in guild {guild}"),
        None => "globally (Discord may take up to an hour to show it everywhere)".to_string(),
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    // Held until the process ends: a second `serve` on the same SQLite file refuses to start.
    let _serving = shipmate::app::lock_database(&config.database_url)?;
    let bot = shipmate::app::build(config, Time::system(), None).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("can't listen on {listen}: {e}; change [server].listen"))?;
    tracing::info!(address = %listen, "shipmate is listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    shipmate::app::run(bot, listener, shutdown).await?;
    tracing::info!("shipmate stopped");
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing running deploys");
    shutdown.cancel();
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
