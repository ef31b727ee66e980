//! The official Socket.IO client (socket.io-client 4.x on Node.js), driven through
//! `services/signal/tests/socketio/agent.mjs`: one Node.js process hosts any number of named client
//! sockets; commands go in as JSON lines, everything the sockets see comes back as
//! JSON lines, which the test awaits with a deadline.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// How long a report may take to arrive.
pub const SIO_DEADLINE: Duration = Duration::from_secs(10);

pub struct SioAgent {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Reports read but not yet taken by the test, in arrival order.
    unread: Vec<Value>,
    acks: u64,
}

fn agent_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../services/signal/tests/socketio")
}

impl SioAgent {
    pub async fn start() -> Self {
        let dir = agent_dir();
        assert!(
            dir.join("node_modules/socket.io-client").is_dir(),
            "socket.io-client is not installed: run `npm ci` in {} (the README test command does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("agent.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed (the README test command installs it)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { _child: child, stdin, lines, unread: Vec::new(), acks: 0 }
    }

    async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("agent is running");
        self.stdin.flush().await.unwrap();
    }

    /// Takes the first report matching `wanted`, waiting up to `wait` for it.
    async fn take_within(&mut self, wait: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(i) = self.unread.iter().position(&wanted) {
            return Some(self.unread.remove(i));
        }
        let deadline = Instant::now() + wait;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Err(_) => return None,
                Ok(line) => line.expect("read agent").expect("agent is running"),
            };
            let report: Value = serde_json::from_str(&line).expect("agent writes JSON lines");
            assert!(report.get("error").is_none(), "agent: {report}");
            if wanted(&report) {
                return Some(report);
            }
            self.unread.push(report);
        }
    }

    async fn take(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        match self.take_within(SIO_DEADLINE, wanted).await {
            Some(report) => report,
            None => panic!("no {what} within {SIO_DEADLINE:?}; unread: {:?}", self.unread),
        }
    }

    /// Connects `client` to `namespace` at `url` with these transports; returns its
    /// `socket.id` and the transport it connected with.
    pub async fn connect(&mut self, client: &str, url: &str, namespace: &str, transports: &[&str]) -> (String, String) {
        self.connect_with(client, url, namespace, transports, None, false)
            .await
            .unwrap_or_else(|e| panic!("{client} failed to connect: {e}"))
    }

    /// Connects a client that reconnects by itself, as deployed clients do (quickly,
    /// for tests); returns its `socket.id`.
    pub async fn connect_reconnecting(
        &mut self,
        client: &str,
        url: &str,
        namespace: &str,
        transports: &[&str],
    ) -> String {
        let command = json!({
            "op": "connect", "client": client, "url": url, "namespace": namespace,
            "transports": transports, "reconnection": true,
        });
        self.command(command).await;
        self.reconnected(client).await.0
    }

    /// Loses `client`'s transport as a lost network would (no close frame, no close
    /// packet, no Socket.IO disconnect); a reconnecting client comes back at `url`.
    pub async fn drop_connection(&mut self, client: &str, url: &str) {
        self.command(json!({"op": "drop", "client": client, "url": url})).await;
    }

    /// Closes `client`'s Engine.IO connection as socket.io-client's own `close` does (a
    /// goodbye: a close packet over polling, a close frame over WebSocket).
    pub async fn close_engine(&mut self, client: &str) {
        self.command(json!({"op": "close_engine", "client": client})).await;
    }

    /// Sends `client`'s next reconnection attempts to `url`.
    pub async fn move_to(&mut self, client: &str, url: &str) {
        self.command(json!({"op": "move", "client": client, "url": url})).await;
    }

    /// The next connect of `client`: its `socket.id`, and whether Socket.IO says the
    /// session was recovered (`socket.recovered`).
    pub async fn reconnected(&mut self, client: &str) -> (String, bool) {
        let report =
            self.take(&format!("{client} connected"), |r| r["client"] == client && r.get("connected").is_some()).await;
        (report["connected"].as_str().unwrap().to_owned(), report["recovered"] == true)
    }

    /// Connects with the handshake's `auth` payload (over WebSocket); returns the socket id.
    pub async fn connect_with_auth(&mut self, client: &str, url: &str, namespace: &str, auth: Value) -> String {
        self.connect_with(client, url, namespace, &["websocket"], Some(auth), false)
            .await
            .unwrap_or_else(|e| panic!("{client} failed to connect: {e}"))
            .0
    }

    /// Connects expecting a refusal; returns the CONNECT_ERROR's message.
    pub async fn connect_error(&mut self, client: &str, url: &str, namespace: &str, auth: Option<Value>) -> String {
        match self.connect_with(client, url, namespace, &["websocket"], auth, false).await {
            Ok((id, _)) => panic!("{client} connected as {id}, expected a refusal"),
            Err(message) => message,
        }
    }

    /// Connects over HTTP long-polling only, keeping cookies as a browser does
    /// (`withCredentials`: what a sticky load balancer's affinity cookie needs); returns
    /// the socket id, or the connection error.
    pub async fn connect_polling_with_cookies(&mut self, client: &str, url: &str) -> Result<String, String> {
        self.connect_with(client, url, "/", &["polling"], None, true).await.map(|(id, _)| id)
    }

    async fn connect_with(
        &mut self,
        client: &str,
        url: &str,
        namespace: &str,
        transports: &[&str],
        auth: Option<Value>,
        with_credentials: bool,
    ) -> Result<(String, String), String> {
        let mut command = json!({
            "op": "connect", "client": client, "url": url, "namespace": namespace,
            "transports": transports, "withCredentials": with_credentials,
        });
        if let Some(auth) = auth {
            command["auth"] = auth;
        }
        self.command(command).await;
        let report = self
            .take(&format!("{client} connected"), |r| {
                r["client"] == client && (r.get("connected").is_some() || r.get("connect_error").is_some())
            })
            .await;
        match report["connected"].as_str() {
            Some(id) => Ok((id.to_owned(), report["transport"].as_str().unwrap().to_owned())),
            None => Err(report["connect_error"].as_str().unwrap_or_default().to_owned()),
        }
    }

    pub async fn emit(&mut self, client: &str, event: &str, args: Value) {
        let args = if args.is_array() { args } else { json!([args]) };
        self.command(json!({"op": "emit", "client": client, "event": event, "args": args})).await;
    }

    /// Emits with an acknowledgement callback and returns the ack's first argument.
    pub async fn emit_ack(&mut self, client: &str, event: &str, args: Value) -> Value {
        self.acks += 1;
        let seq = self.acks;
        let args = if args.is_array() { args } else { json!([args]) };
        self.command(json!({"op": "emit", "client": client, "event": event, "args": args, "ack": true, "seq": seq}))
            .await;
        let report = self.take(&format!("ack {seq} for {client}"), |r| r["client"] == client && r["ack"] == seq).await;
        report["args"][0].clone()
    }

    /// The first argument of the next `event` that `client` received.
    pub async fn event(&mut self, client: &str, event: &str) -> Value {
        let report = self.take(&format!("{event} at {client}"), |r| r["client"] == client && r["event"] == event).await;
        report["args"][0].clone()
    }

    /// Asserts `client` receives no `event` for `wait`.
    pub async fn no_event(&mut self, client: &str, event: &str, wait: Duration) {
        if let Some(report) = self.take_within(wait, |r| r["client"] == client && r["event"] == event).await {
            panic!("{client} got an unexpected {event}: {report}");
        }
    }

    pub async fn upgraded(&mut self, client: &str) -> String {
        let report =
            self.take(&format!("{client} upgraded"), |r| r["client"] == client && r.get("upgraded").is_some()).await;
        report["upgraded"].as_str().unwrap().to_owned()
    }

    pub async fn disconnect(&mut self, client: &str) {
        self.command(json!({"op": "disconnect", "client": client})).await;
        self.disconnected(client).await;
    }

    /// Why `client` was disconnected (socket.io-client's reason).
    pub async fn disconnected(&mut self, client: &str) -> String {
        let report = self
            .take(&format!("{client} disconnected"), |r| r["client"] == client && r.get("disconnected").is_some())
            .await;
        report["disconnected"].as_str().unwrap().to_owned()
    }
}

/// The URL socket.io-client connects to for a node.
pub fn url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}
