//! A private RabbitMQ (Debian's `rabbitmq-server`) on free loopback ports: its own node
//! name, data directory, Erlang cookie and epmd, so it never meets a broker already
//! running on the machine. Starting takes a few seconds.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct TestRabbitMq {
    pub port: u16,
    epmd_port: u16,
    dist_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl TestRabbitMq {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut broker =
            TestRabbitMq { port: free_port(), epmd_port: free_port(), dist_port: free_port(), child: None, dir };
        broker.launch().await;
        broker
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (guest may connect from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    async fn launch(&mut self) {
        let home = self.dir.path();
        std::fs::write(home.join("enabled_plugins"), "[].").unwrap();
        let log = std::fs::File::create(home.join("server.log")).unwrap();
        let child = Command::new(SERVER)
            .current_dir(home)
            .env("HOME", home)
            .env("RABBITMQ_NODENAME", format!("test{}@localhost", self.port))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", home.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", home.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", home.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", home.join("no-config"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            // Its own process group: the script, the Erlang VM and its helpers stop together.
            .process_group(0)
            .spawn()
            .expect("rabbitmq-server is installed (the README test command installs it)");
        self.child = Some(child);
        let port = self.port;
        let log = home.join("server.log");
        wait_until(Duration::from_secs(60), "rabbitmq-server to accept AMQP connections", || {
            let log = log.clone();
            async move {
                let started =
                    std::fs::read_to_string(&log).unwrap_or_default().contains("Starting broker... completed");
                started && tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            }
        })
        .await;
    }

    /// Stops the broker (its data stays: [`TestRabbitMq::restart`] brings it back).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.wait();
        }
        stop_epmd(self.epmd_port, self.dir.path());
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }
}

impl Drop for TestRabbitMq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
}

/// The broker's epmd daemonised out of its process group; stop it by its port.
fn stop_epmd(port: u16, home: &Path) {
    for _ in 0..20 {
        let out =
            Command::new("epmd").args(["-kill"]).env("ERL_EPMD_PORT", port.to_string()).env("HOME", home).output();
        match out {
            Ok(out) if String::from_utf8_lossy(&out.stdout).contains("living nodes") => {
                // The VM has not unregistered yet.
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => return,
        }
    }
}
