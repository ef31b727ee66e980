use signal::{App, SignalConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = SignalConfig::from_env().unwrap_or_else(|e| {
        eprintln!("signal: invalid configuration:\n{e}");
        std::process::exit(config::EXIT_USAGE);
    });
    telemetry::init(config.log_format);
    tracing::info!(
        node = %config.node_id,
        backend = if config.redis_url.is_some() { "redis" } else { "in-process" },
        ?config,
        "starting"
    );
    let app = App::build(config).await?;
    tracing::info!(addr = %app.local_addr(), node = %app.node_id(), "ready");
    app.run_until(shutdown_signal()).await
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
