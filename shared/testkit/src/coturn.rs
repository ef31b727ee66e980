//! A private coturn (turnserver) on loopback ports with `use-auth-secret`, and
//! `turnutils_uclient` runs against it. Settings follow what coturn 4.6.1 needs to stay
//! on loopback and out of system paths: its own config file, no CLI/TLS/DTLS, pid file,
//! SQLite userdb and log in a temp dir.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, wait_until};

pub struct TestCoturn {
    _child: Child,
    pub port: u16,
    pub realm: String,
    dir: tempfile::TempDir,
}

/// How the server finds its secrets and where it reports allocations.
#[derive(Debug, Clone, Default)]
pub struct CoturnOptions {
    /// `static-auth-secret=` lines.
    pub static_secret: Option<String>,
    /// A Redis port for `redis-userdb` (the secret set) and `redis-statsdb`.
    pub redis_port: Option<u16>,
}

impl TestCoturn {
    pub async fn start(realm: &str, options: CoturnOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Relay ports below the kernel's ephemeral range, a different block per server.
        let min_port = 20_000 + (u32::from(port) * 7 % 10_000) as u16;
        let d = dir.path().display();
        let mut conf = format!(
            "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\nmin-port={min_port}\nmax-port={}\n\
             realm={realm}\nuse-auth-secret\nno-cli\nno-tls\nno-dtls\nallow-loopback-peers\nno-multicast-peers\n\
             pidfile={d}/turnserver.pid\nsimple-log\nlog-file={d}/turnserver.log\n\
             userdb={d}/turndb\n",
            min_port + 200
        );
        if let Some(secret) = &options.static_secret {
            conf.push_str(&format!("static-auth-secret={secret}\n"));
        }
        if let Some(redis) = options.redis_port {
            // After `userdb=`: the two are one setting and the last line wins.
            let db = format!("\"ip=127.0.0.1 port={redis} dbname=0 connect_timeout=30\"");
            conf.push_str(&format!("redis-userdb={db}\nredis-statsdb={db}\n"));
        }
        let conf_path = dir.path().join("turnserver.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf_path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver on PATH (the README test command installs coturn)");
        wait_until(Duration::from_secs(15), "turnserver to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self { _child: child, port, realm: realm.to_owned(), dir }
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("turnserver.log")).unwrap_or_default()
    }

    /// Allocates a relay with `turnutils_uclient` and exchanges a few messages through
    /// it (TCP when `tcp`). Ok(output) if it worked, Err(output) if coturn refused.
    pub async fn allocate(&self, username: &str, password: &str, tcp: bool) -> Result<String, String> {
        let mut cmd = Command::new("turnutils_uclient");
        if tcp {
            cmd.arg("-t");
        }
        cmd.args(["-u", username, "-w", password, "-p", &self.port.to_string()])
            .args(["-n", "3", "-m", "1", "-l", "170", "-y", "127.0.0.1"])
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let run = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await;
        let out = run.expect("turnutils_uclient finished within 60 s").expect("turnutils_uclient on PATH");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() && text.contains("Total lost packets 0") {
            Ok(text)
        } else {
            Err(text)
        }
    }
}
