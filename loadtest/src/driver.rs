//! The seam between scenarios and a wire dialect. Scenarios speak in dialect-free
//! [`Command`]s and [`Event`]s; a [`Driver`] opens connections and translates. The
//! native protocol v1, the plain-JSON dialect and Socket.IO are drivers; another dialect is
//! another module here and no scenario changes.

pub mod native;
pub mod plain;
pub mod socketio;
mod ws;

use async_trait::async_trait;

/// What a scenario asks a connection to do.
#[derive(Debug, Clone)]
pub enum Command {
    Join {
        room: String,
        name: String,
        meta: Option<String>,
    },
    Leave {
        room: String,
    },
    /// `data` is JSON text and travels untouched.
    Signal {
        room: String,
        to: String,
        kind: &'static str,
        data: String,
    },
    Broadcast {
        room: String,
        kind: &'static str,
        data: String,
    },
    Update {
        room: String,
        meta: String,
    },
}

/// What a connection heard. Ids are the server's peer ids as text.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Joined {
        room: String,
        peers: Vec<String>,
    },
    PeerJoined {
        room: String,
        peer: String,
    },
    PeerLeft {
        room: String,
        peer: String,
        reason: String,
    },
    Left {
        room: String,
    },
    Updated {
        room: String,
    },
    PeerUpdated {
        room: String,
        peer: String,
    },
    /// `data` is the sender's JSON text.
    Signal {
        room: String,
        from: String,
        kind: String,
        data: String,
    },
    Broadcast {
        room: String,
        from: String,
        kind: String,
        data: String,
    },
    Error {
        code: String,
        message: String,
    },
    /// The server asked clients to reconnect elsewhere (it is draining).
    Reconnect,
    /// Anything else the dialect sends that scenarios do not act on.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the server closed the connection: {0}")]
    Closed(String),
    #[error("bad frame from the server: {0}")]
    BadFrame(String),
    #[error("socket error: {0}")]
    Io(String),
    #[error("the dialect has no {0}: this scenario cannot run in it")]
    Unsupported(&'static str),
}

impl DriverError {
    /// A short stable label for counting failures by kind in reports.
    pub fn label(&self) -> &'static str {
        match self {
            DriverError::Connect { .. } => "connect-failed",
            DriverError::Closed(_) => "closed",
            DriverError::BadFrame(_) => "bad-frame",
            DriverError::Io(_) => "socket-error",
            DriverError::Unsupported(_) => "unsupported",
        }
    }
}

/// Opens connections in one dialect.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Connects and completes the dialect's greeting; returns the halves and the
    /// peer id the server assigned.
    async fn connect(&self, url: &str) -> Result<Connection, DriverError>;

    /// Connects and resumes the connection `token` names (its peer id and rooms, with
    /// what was held for it arriving on the new `rx`). Only dialects that resume.
    async fn resume(&self, _url: &str, _token: &str) -> Result<Connection, DriverError> {
        Err(DriverError::Unsupported("resume"))
    }
}

pub struct Connection {
    pub peer: String,
    pub tx: Box<dyn CommandSink>,
    pub rx: Box<dyn EventStream>,
    /// The token that resumes this connection, when the dialect and the node give one.
    pub resume: Option<String>,
}

#[async_trait]
pub trait CommandSink: Send {
    /// Queues a command without flushing (cheap; call `flush` after a batch).
    async fn feed(&mut self, cmd: &Command) -> Result<(), DriverError>;
    async fn flush(&mut self) -> Result<(), DriverError>;
    async fn send(&mut self, cmd: &Command) -> Result<(), DriverError> {
        self.feed(cmd).await?;
        self.flush().await
    }
    /// Closes the connection politely, for good (the node lets its member leave).
    async fn close(&mut self);

    /// Closes the connection to resume it elsewhere (the node holds its member).
    async fn close_to_resume(&mut self) {
        self.close().await;
    }
}

#[async_trait]
pub trait EventStream: Send {
    /// The next event; `Err(Closed)` when the server closed.
    async fn next(&mut self) -> Result<Event, DriverError>;
}

/// The driver for a dialect name given on the command line.
pub fn by_name(name: &str) -> Option<Box<dyn Driver>> {
    match name {
        "native" => Some(Box::new(native::NativeDriver)),
        "plain" => Some(Box::new(plain::PlainDriver)),
        "socketio" => Some(Box::new(socketio::SocketIoDriver)),
        _ => None,
    }
}
