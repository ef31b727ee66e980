//! The WebSocket plumbing every driver shares: connecting with small buffers, and
//! reading the next text frame.

use futures::stream::{SplitSink, SplitStream};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::DriverError;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url`; the halves for writing and reading.
pub async fn connect(url: &str) -> Result<(SplitSink<Ws, Message>, SplitStream<Ws>), DriverError> {
    // Small buffers: the harness holds tens of thousands of idle sockets.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| DriverError::Connect { url: url.to_owned(), reason: e.to_string() })?;
    Ok(ws.split())
}

/// The next text frame; `Err(Closed)` when the server closed or the stream ended.
pub async fn next_text(rx: &mut SplitStream<Ws>) -> Result<Utf8Bytes, DriverError> {
    loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(frame))) => {
                return Err(DriverError::Closed(frame.map(|f| f.reason.to_string()).unwrap_or_default()))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(DriverError::Io(e.to_string())),
            None => return Err(DriverError::Closed("end of stream".into())),
        }
    }
}
