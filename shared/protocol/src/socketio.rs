//! Engine.IO v4 and Socket.IO v5 packets (what socket.io-client 4.x speaks), as text.
//! The Socket.IO dialect frames them itself rather than through socketioxide, which
//! could not meet the memory budget per connection (docs/architecture.md).
//!
//! Engine.IO: one packet per WebSocket frame, a one-digit type then its data; over HTTP
//! long-polling, several packets in one body separated by `\x1e`.
//! Socket.IO, inside an Engine.IO `message`:
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`.
//! Decoding borrows from the frame and never copies the payload: an event's arguments
//! stay the sender's JSON text, as every payload in the cluster does.

use serde_json::value::RawValue;

/// Why a packet could not be read. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PacketError(pub &'static str);

/// An Engine.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioPacket<'a> {
    /// Sent by the server first: the session's handshake JSON.
    Open(&'a str),
    Close,
    Ping(&'a str),
    Pong(&'a str),
    /// Carries one Socket.IO packet.
    Message(&'a str),
    Upgrade,
    Noop,
}

impl<'a> EioPacket<'a> {
    pub fn decode(text: &'a str) -> Result<Self, PacketError> {
        let Some(&first) = text.as_bytes().first() else { return Err(PacketError("empty Engine.IO packet")) };
        if first == b'b' {
            return Err(PacketError("binary Engine.IO packets are not supported"));
        }
        if !first.is_ascii_digit() {
            return Err(PacketError("not an Engine.IO packet"));
        }
        // The type is one ASCII digit, so the data starts at a character boundary.
        let data = &text[1..];
        Ok(match first {
            b'0' => EioPacket::Open(data),
            b'1' => EioPacket::Close,
            b'2' => EioPacket::Ping(data),
            b'3' => EioPacket::Pong(data),
            b'4' => EioPacket::Message(data),
            b'5' => EioPacket::Upgrade,
            b'6' => EioPacket::Noop,
            _ => return Err(PacketError("not an Engine.IO packet")),
        })
    }

    pub fn encode(&self) -> String {
        match self {
            EioPacket::Open(data) => format!("0{data}"),
            EioPacket::Close => "1".into(),
            EioPacket::Ping(data) => format!("2{data}"),
            EioPacket::Pong(data) => format!("3{data}"),
            EioPacket::Message(data) => format!("4{data}"),
            EioPacket::Upgrade => "5".into(),
            EioPacket::Noop => "6".into(),
        }
    }
}

/// Separates the packets of one long-polling body.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// The packets of a long-polling body.
pub fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split(RECORD_SEPARATOR)
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
}

impl SioType {
    fn digit(self) -> char {
        match self {
            SioType::Connect => '0',
            SioType::Disconnect => '1',
            SioType::Event => '2',
            SioType::Ack => '3',
            SioType::ConnectError => '4',
        }
    }
}

/// A Socket.IO packet, borrowed from its frame.
#[derive(Debug, Clone, Copy)]
pub struct SioPacket<'a> {
    pub ty: SioType,
    /// `/` unless the packet names another.
    pub namespace: &'a str,
    pub ack: Option<u64>,
    pub payload: Option<&'a RawValue>,
}

/// Longest namespace accepted (the dialect serves `/` and `/meetings`).
const NAMESPACE_MAX: usize = 64;

impl<'a> SioPacket<'a> {
    pub fn decode(text: &'a str) -> Result<Self, PacketError> {
        let ty = match text.as_bytes().first() {
            Some(b'0') => SioType::Connect,
            Some(b'1') => SioType::Disconnect,
            Some(b'2') => SioType::Event,
            Some(b'3') => SioType::Ack,
            Some(b'4') => SioType::ConnectError,
            Some(b'5' | b'6') => return Err(PacketError("binary Socket.IO packets are not supported")),
            _ => return Err(PacketError("not a Socket.IO packet")),
        };
        let mut rest = &text[1..];
        let mut namespace = "/";
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            namespace = &rest[..end];
            if namespace.len() > NAMESPACE_MAX {
                return Err(PacketError("namespace too long"));
            }
            rest = rest.get(end + 1..).unwrap_or("");
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack = match digits {
            0 => None,
            _ => Some(rest[..digits].parse().map_err(|_| PacketError("ack id out of range"))?),
        };
        rest = &rest[digits..];
        let payload = match rest {
            "" => None,
            json => Some(serde_json::from_str(json).map_err(|_| PacketError("payload is not JSON"))?),
        };
        Ok(Self { ty, namespace, ack, payload })
    }

    /// The event name and the arguments' JSON texts, for an EVENT whose payload is
    /// `["name", arg, ...]`.
    pub fn event(&self) -> Result<(String, Vec<&'a RawValue>), PacketError> {
        let Some(payload) = self.payload else { return Err(PacketError("event without a payload")) };
        let mut parts: Vec<&'a RawValue> =
            serde_json::from_str(payload.get()).map_err(|_| PacketError("event payload is not an array"))?;
        if parts.is_empty() {
            return Err(PacketError("event without a name"));
        }
        let name: String =
            serde_json::from_str(parts.remove(0).get()).map_err(|_| PacketError("event name is not a string"))?;
        Ok((name, parts))
    }
}

/// Writes a Socket.IO packet; `payload` is JSON text.
pub fn encode_sio(ty: SioType, namespace: &str, ack: Option<u64>, payload: Option<&str>) -> String {
    let mut out = String::with_capacity(8 + namespace.len() + payload.map_or(0, str::len));
    out.push(ty.digit());
    if namespace != "/" {
        out.push_str(namespace);
        out.push(',');
    }
    if let Some(ack) = ack {
        out.push_str(&ack.to_string());
    }
    if let Some(payload) = payload {
        out.push_str(payload);
    }
    out
}

/// Writes an EVENT: `["name", arg...]` from the arguments' JSON texts.
pub fn encode_event(namespace: &str, name: &str, args: &[&str]) -> String {
    let mut payload = format!("[{}", serde_json::to_string(name).expect("a string serialises"));
    for arg in args {
        payload.push(',');
        payload.push_str(arg);
    }
    payload.push(']');
    encode_sio(SioType::Event, namespace, None, Some(&payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_packets_read_and_write_as_the_protocol_shows() {
        assert_eq!(EioPacket::decode("2").unwrap(), EioPacket::Ping(""));
        assert_eq!(EioPacket::decode("3probe").unwrap(), EioPacket::Pong("probe"));
        assert_eq!(EioPacket::decode(r#"42["hi"]"#).unwrap(), EioPacket::Message(r#"2["hi"]"#));
        assert_eq!(EioPacket::decode("5").unwrap(), EioPacket::Upgrade);
        for packet in [EioPacket::Open(r#"{"sid":"x"}"#), EioPacket::Close, EioPacket::Message("40"), EioPacket::Noop] {
            assert_eq!(EioPacket::decode(&packet.encode()).unwrap(), packet);
        }
        assert!(EioPacket::decode("").is_err());
        assert!(EioPacket::decode("9").is_err());
        assert!(EioPacket::decode("bAQID").is_err());
        assert!(EioPacket::decode("é4").is_err(), "a multi-byte first character is refused, not sliced");
        let body = format!("4hello{RECORD_SEPARATOR}2{RECORD_SEPARATOR}4bye");
        assert_eq!(split_payload(&body).collect::<Vec<_>>(), ["4hello", "2", "4bye"]);
    }

    #[test]
    fn socket_io_packets_carry_namespace_ack_and_payload() {
        let p = SioPacket::decode(r#"2/admin,456["project:delete",123]"#).unwrap();
        assert_eq!((p.ty, p.namespace, p.ack), (SioType::Event, "/admin", Some(456)));
        let (name, args) = p.event().unwrap();
        assert_eq!((name.as_str(), args.len(), args[0].get()), ("project:delete", 1, "123"));

        let p = SioPacket::decode(r#"0/meetings,{"token":"abc"}"#).unwrap();
        assert_eq!(
            (p.ty, p.namespace, p.payload.unwrap().get()),
            (SioType::Connect, "/meetings", r#"{"token":"abc"}"#)
        );
        let p = SioPacket::decode("0").unwrap();
        assert_eq!((p.namespace, p.ack, p.payload.is_none()), ("/", None, true));
        let p = SioPacket::decode("1/admin,").unwrap();
        assert_eq!((p.ty, p.namespace), (SioType::Disconnect, "/admin"));
        let p = SioPacket::decode("3/admin,456[]").unwrap();
        assert_eq!((p.ty, p.ack, p.payload.unwrap().get()), (SioType::Ack, Some(456), "[]"));
    }

    #[test]
    fn an_event_keeps_its_arguments_byte_for_byte_and_encodes_back() {
        let text = r#"2["offer",{"targetUserId":"a", "offer":{"sdp":"v=0\r\n","n":1.50}}]"#;
        let p = SioPacket::decode(text).unwrap();
        let (name, args) = p.event().unwrap();
        assert_eq!(name, "offer");
        assert_eq!(args[0].get(), r#"{"targetUserId":"a", "offer":{"sdp":"v=0\r\n","n":1.50}}"#);
        assert_eq!(encode_event("/", &name, &[args[0].get()]), format!(r#"2["offer",{}]"#, args[0].get()));
        assert_eq!(encode_event("/meetings", "meeting-ended", &[]), r#"2/meetings,["meeting-ended"]"#);
        assert_eq!(encode_sio(SioType::Connect, "/", None, Some(r#"{"sid":"s"}"#)), r#"0{"sid":"s"}"#);
        assert_eq!(encode_sio(SioType::Ack, "/m", Some(7), Some("[null]")), "3/m,7[null]");
    }

    #[test]
    fn hostile_packets_are_refused_with_a_reason_never_a_panic() {
        for bad in [
            "",
            "9",
            "5-1[\"bin\",{\"_placeholder\":true,\"num\":0}]",
            "2[not json",
            "299999999999999999999999[\"x\"]",
            "é",
        ] {
            assert!(SioPacket::decode(bad).is_err(), "{bad:?}");
        }
        let long = format!("2/{},[\"x\"]", "n".repeat(100));
        assert!(SioPacket::decode(&long).is_err());
        for not_event in ["2", "2[]", "2[1]", "2{}"] {
            assert!(SioPacket::decode(not_event).map(|p| p.event().is_err()).unwrap_or(true), "{not_event:?}");
        }
    }
}
