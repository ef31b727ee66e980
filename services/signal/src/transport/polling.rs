//! Engine.IO's HTTP long-polling transport, and its upgrade to WebSocket.
//!
//! A polling session is a [`Transport`] made of two channels. The connection driver
//! runs on it as on any socket; HTTP requests feed it: a POST carries client packets
//! in, a GET waits for what the node has to send (at most one GET at a time, as
//! Engine.IO requires). When the client upgrades, a WebSocket takes over both
//! channels, so the session (its peer id, rooms and queued events) carries on
//! unchanged. Every request of a session must reach the node that holds it: this is
//! why the ingress needs sticky sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Utf8Bytes, WebSocket};
use tokio::sync::{mpsc, Notify};

use super::socketio::MAX_PAYLOAD;
use super::ws::WsTransport;
use super::{Gone, Incoming, Transport};

/// Frames the node may queue for a client between two polls; beyond it, writing
/// waits, and the session's own queue decides when the client is too slow.
const OUTBOUND_FRAMES: usize = 64;
/// Client packets waiting for the session.
const INBOUND_FRAMES: usize = 64;
/// Longest a client may take over each step of the upgrade.
const UPGRADE_STEP: Duration = Duration::from_secs(10);
/// Frames written to an upgraded WebSocket before one flush.
const WRITE_BATCH: usize = 64;

/// What the session sends its client.
#[derive(Debug)]
enum Out {
    Frame(Utf8Bytes),
    /// The node ends the session.
    Close(u16, &'static str),
}

/// The node's open polling sessions, by Engine.IO session id.
#[derive(Default)]
pub struct PollingSessions {
    open: Mutex<HashMap<Box<str>, Arc<PollingSession>>>,
}

impl PollingSessions {
    /// Opens a session: its id, and the transport the connection driver runs on.
    pub fn open(self: &Arc<Self>) -> (Arc<PollingSession>, PollingTransport) {
        let sid: Box<str> = format!("{:032x}", rand::random::<u128>()).into();
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_FRAMES);
        let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_FRAMES);
        let session = Arc::new(PollingSession {
            sid: sid.clone(),
            inbound: inbound_tx,
            outbound: tokio::sync::Mutex::new(outbound_rx),
            release: Notify::new(),
            upgraded: AtomicBool::new(false),
        });
        self.open.lock().expect("not poisoned").insert(sid.clone(), session.clone());
        let transport = PollingTransport { inbound: inbound_rx, outbound: outbound_tx, sessions: self.clone(), sid };
        (session, transport)
    }

    pub fn get(&self, sid: &str) -> Option<Arc<PollingSession>> {
        self.open.lock().expect("not poisoned").get(sid).cloned()
    }

    pub fn len(&self) -> usize {
        self.open.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a polling request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("a GET is already waiting for this session")]
    Overlapping,
    #[error("the session has upgraded to WebSocket")]
    Upgraded,
    #[error("the session is closed")]
    Closed,
}

/// The HTTP side of one polling session.
pub struct PollingSession {
    sid: Box<str>,
    inbound: mpsc::Sender<Incoming>,
    outbound: tokio::sync::Mutex<mpsc::Receiver<Out>>,
    /// Ends a waiting GET early (with a `noop`) so the client can finish upgrading.
    release: Notify,
    upgraded: AtomicBool,
}

impl PollingSession {
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// A GET: waits up to `wait` for the node's packets and returns them as one
    /// body; a `noop` when there were none.
    pub async fn poll(&self, wait: Duration) -> Result<String, PollError> {
        if self.upgraded.load(Ordering::Acquire) {
            return Err(PollError::Upgraded);
        }
        let Ok(mut outbound) = self.outbound.try_lock() else { return Err(PollError::Overlapping) };
        let first = tokio::select! {
            biased;
            out = outbound.recv() => out,
            _ = self.release.notified() => return Ok("6".into()),
            _ = tokio::time::sleep(wait) => return Ok("6".into()),
        };
        let mut body = String::new();
        let mut next = first;
        loop {
            match next {
                Some(Out::Frame(frame)) => {
                    if !body.is_empty() {
                        body.push(protocol::socketio::RECORD_SEPARATOR);
                    }
                    body.push_str(frame.as_str());
                }
                Some(Out::Close(..)) | None => {
                    if !body.is_empty() {
                        body.push(protocol::socketio::RECORD_SEPARATOR);
                    }
                    body.push('1');
                    break;
                }
            }
            if body.len() >= MAX_PAYLOAD {
                break;
            }
            match outbound.try_recv() {
                Ok(out) => next = Some(out),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => next = None,
            }
        }
        Ok(body)
    }

    /// A POST: the client's packets, in order.
    pub async fn post(&self, body: &str) -> Result<(), PollError> {
        for packet in protocol::socketio::split_payload(body) {
            let frame = Incoming::Text(Utf8Bytes::from(packet.to_owned()));
            self.inbound.send(frame).await.map_err(|_| PollError::Closed)?;
        }
        Ok(())
    }

    /// Takes the session over to `socket`: answers the client's probe, frees its
    /// pending GET, and once the client confirms, moves every packet both ways
    /// through the WebSocket until either side ends.
    pub async fn upgrade(self: Arc<Self>, socket: WebSocket) {
        let mut ws = WsTransport::new(socket);
        if !self.probe(&mut ws).await {
            return;
        }
        self.upgraded.store(true, Ordering::Release);
        let mut outbound = self.outbound.lock().await;
        loop {
            tokio::select! {
                incoming = ws.recv() => {
                    let ended = incoming.ends_connection();
                    if self.inbound.send(incoming).await.is_err() || ended {
                        return;
                    }
                }
                out = outbound.recv() => match out {
                    Some(Out::Frame(frame)) => {
                        if write_batch(&mut ws, frame, &mut outbound).await.is_err() {
                            let _ = self.inbound.send(Incoming::Failed).await;
                            return;
                        }
                    }
                    Some(Out::Close(code, reason)) => return ws.close(code, reason).await,
                    None => return ws.close(crate::connection::close::GOING_AWAY, "session ended").await,
                },
            }
        }
    }

    /// The upgrade handshake: `2probe` -> `3probe`, then the client's `5`.
    async fn probe(&self, ws: &mut WsTransport) -> bool {
        if next_text(ws).await.as_deref() != Some("2probe") {
            return false;
        }
        if ws.feed(Utf8Bytes::from_static("3probe")).await.is_err() || ws.flush().await.is_err() {
            return false;
        }
        self.release.notify_one();
        next_text(ws).await.as_deref() == Some("5")
    }
}

/// The client's next text frame during the upgrade, if it comes in time.
async fn next_text(ws: &mut WsTransport) -> Option<Utf8Bytes> {
    match tokio::time::timeout(UPGRADE_STEP, ws.recv()).await {
        Ok(Incoming::Text(text)) => Some(text),
        _ => None,
    }
}

async fn write_batch(ws: &mut WsTransport, first: Utf8Bytes, outbound: &mut mpsc::Receiver<Out>) -> Result<(), Gone> {
    ws.feed(first).await?;
    for _ in 1..WRITE_BATCH {
        match outbound.try_recv() {
            Ok(Out::Frame(frame)) => ws.feed(frame).await?,
            Ok(Out::Close(code, reason)) => {
                ws.flush().await?;
                ws.close(code, reason).await;
                return Err(Gone);
            }
            Err(_) => break,
        }
    }
    ws.flush().await
}

/// The session's side of a polling session.
pub struct PollingTransport {
    inbound: mpsc::Receiver<Incoming>,
    outbound: mpsc::Sender<Out>,
    sessions: Arc<PollingSessions>,
    sid: Box<str>,
}

impl Drop for PollingTransport {
    fn drop(&mut self) {
        self.sessions.open.lock().expect("not poisoned").remove(&self.sid);
    }
}

impl Transport for PollingTransport {
    async fn recv(&mut self) -> Incoming {
        self.inbound.recv().await.unwrap_or(Incoming::Failed)
    }

    async fn feed(&mut self, frame: Utf8Bytes) -> Result<(), Gone> {
        self.outbound.send(Out::Frame(frame)).await.map_err(|_| Gone)
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        Ok(())
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = tokio::time::timeout(UPGRADE_STEP, self.outbound.send(Out::Close(code, reason))).await;
    }

    /// Engine.IO pings are frames of the dialect; there is no transport ping.
    async fn ping(&mut self) -> Result<(), Gone> {
        Ok(())
    }
}
