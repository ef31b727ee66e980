//! The WebSocket transport: axum's upgraded socket, text frames only.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;

use super::{close_code, Gone, Incoming, Transport};

/// Longest wait to hand a close frame to a client that is not reading.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a closing connection keeps reading (and discarding) for the client's own
/// close frame. Closing a TCP socket with unread input makes the kernel send a reset,
/// and a reset can destroy our close frame before the client has read it; reading until
/// the client's close (or EOF) lets the close frame arrive.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub struct WsTransport {
    socket: WebSocket,
}

impl WsTransport {
    pub fn new(socket: WebSocket) -> Self {
        Self { socket }
    }
}

impl Transport for WsTransport {
    async fn recv(&mut self) -> Incoming {
        match self.socket.recv().await {
            Some(Ok(Message::Close(frame))) => match close_code::hold(frame.map(|f| f.code)) {
                Some(hold) => Incoming::Closed(hold),
                None => Incoming::Goodbye,
            },
            // The stream ended without a close frame seen here: the connection is lost.
            None => Incoming::Failed,
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Binary(_))) => Incoming::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::KeepAlive,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket error");
                Incoming::Failed
            }
        }
    }

    async fn feed(&mut self, frame: Utf8Bytes) -> Result<(), Gone> {
        self.socket.feed(Message::Text(frame)).await.map_err(|_| Gone)
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        self.socket.flush().await.map_err(|_| Gone)
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        self.socket.send(Message::Ping(Default::default())).await.map_err(|_| Gone)
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
        match tokio::time::timeout(CLOSE_SEND_TIMEOUT, self.socket.send(frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    return;
                }
            }
        })
        .await;
    }
}
