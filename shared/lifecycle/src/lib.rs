//! Process lifecycle shared by the services: the shutdown signal `main` waits for, the
//! handle tests and embedders get for a service serving in a background task, and the
//! `healthcheck` command container runtimes run (the images have no shell or curl).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
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

/// What a service's `run_until` waits for before it drains.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service serving in the background. `stop` drains it as SIGTERM would; dropping the
/// handle aborts it.
pub struct RunningService {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
    /// Spawns `serve(stop_signal)`, typically `|stop| app.run_until(stop)`.
    pub fn spawn<F, Fut>(addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async move {
            let _ = stopped.await;
        })));
        Self { addr, stop: Some(stop), task: Some(task) }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drains the service and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.context("service task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Asks the service on this machine's `port` for `/healthz`: true on HTTP 200 within
/// `timeout`. The images' HEALTHCHECK runs this as `<binary> healthcheck`.
pub async fn healthcheck(port: u16, timeout: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

/// The port a service listens on, from PORT (as its configuration reads it).
pub fn port_from_env(default: u16) -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.trim().parse().ok()).unwrap_or(default)
}
