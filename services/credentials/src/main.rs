use clap::{Parser, Subcommand};
use credentials::config::KeyringConfig;
use credentials::keyring::{KeyringReport, RedisKeyring};
use credentials::source::unix_now_ms;
use credentials::{App, CredentialsConfig};

/// TURN credential service. Configuration comes from the environment (docs/credentials.md).
#[derive(Parser)]
#[command(name = "credentials", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Add a new TURN secret to coturn's Redis userdb and mint with it from now on;
    /// older secrets are retired once every credential issued with them has expired.
    Rotate {
        /// Remove every older secret now (a leaked secret). Credentials issued with them
        /// stop working for new TURN logins at once.
        #[arg(long)]
        revoke_previous: bool,
    },
    /// List the TURN secrets in the userdb: fingerprints and times, never the secrets.
    Secrets,
    /// Remove the secrets whose overlap has passed (running services do this on their
    /// own; this is for set-ups that rotate from cron without a running service).
    Retire,
    /// Exit 0 when the service on this machine (PORT) answers /healthz: for container
    /// health checks (the image has no shell or curl).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Rotate { revoke_previous } => {
            print_report(&keyring().await?.rotate_now(unix_now_ms(), revoke_previous).await?)
        }
        Command::Secrets => print_report(&keyring().await?.list(unix_now_ms()).await?),
        Command::Retire => print_report(&keyring().await?.retire_due(unix_now_ms()).await?),
        Command::Healthcheck => {
            let healthy =
                lifecycle::healthcheck(lifecycle::port_from_env(8090), std::time::Duration::from_secs(3)).await;
            std::process::exit(if healthy { 0 } else { 1 });
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = CredentialsConfig::from_env().unwrap_or_else(|e| {
        eprintln!("credentials: invalid configuration:\n{e}");
        std::process::exit(config::EXIT_USAGE);
    });
    let _tracing = telemetry::init(config.log_format, "credentials", None).unwrap_or_else(|e| {
        eprintln!("credentials: invalid configuration:\n{e}");
        std::process::exit(config::EXIT_USAGE);
    });
    tracing::info!(
        source = config.source.name(),
        auth = ?config.auth_mode,
        redis = config.redis_url.is_some(),
        stats = config.stats,
        "starting"
    );
    let app = App::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "ready");
    app.run_until(lifecycle::shutdown_signal()).await
}

async fn keyring() -> anyhow::Result<RedisKeyring> {
    let config = KeyringConfig::from_env().unwrap_or_else(|e| {
        eprintln!("credentials: invalid configuration:\n{e}");
        std::process::exit(config::EXIT_USAGE);
    });
    let clients = credentials::redis::connect(config.redis_url.expose(), false)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to REDIS_URL: {}", e.kind().to_str()))?;
    Ok(RedisKeyring::new(clients.client, &config.realm, config.retire_after))
}

fn print_report(report: &KeyringReport) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
