use signal::{App, SignalConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        // For container runtimes: exit 0 when this machine's node answers /healthz.
        let healthy = lifecycle::healthcheck(lifecycle::port_from_env(8080), std::time::Duration::from_secs(3)).await;
        std::process::exit(if healthy { 0 } else { 1 });
    }
    let config = SignalConfig::from_env().unwrap_or_else(|e| {
        eprintln!("signal: invalid configuration:\n{e}");
        std::process::exit(config::EXIT_USAGE);
    });
    let _tracing = telemetry::init(config.log_format, "signal", Some(config.node_id.as_str())).unwrap_or_else(|e| {
        eprintln!("signal: invalid configuration:\n{e}");
        std::process::exit(config::EXIT_USAGE);
    });
    tracing::info!(
        node = %config.node_id,
        backend = if config.redis_url.is_some() { "redis" } else { "in-process" },
        ?config,
        "starting"
    );
    let app = App::build(config).await?;
    tracing::info!(addr = %app.local_addr(), node = %app.node_id(), "ready");
    app.run_until(lifecycle::shutdown_signal()).await
}
