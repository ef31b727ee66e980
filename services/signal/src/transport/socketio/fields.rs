//! Reading Socket.IO event arguments leniently (the clients of the systems we replace
//! spell the same field several ways) and writing event frames.

use std::collections::HashMap;

use axum::extract::ws::Utf8Bytes;
use protocol::socketio::encode_event;
use serde_json::value::RawValue;

/// An event's object argument: its fields as the sender's JSON text, not copied.
pub(super) struct Fields<'a>(HashMap<String, &'a RawValue>);

impl<'a> Fields<'a> {
    /// The argument as an object; None for anything else (missing, null, a string, a
    /// number, an array).
    pub(super) fn of(arg: Option<&'a RawValue>) -> Option<Self> {
        let text = arg?.get();
        if !text.starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok().map(Fields)
    }

    /// The first of `names` present and not null.
    pub(super) fn raw(&self, names: &[&str]) -> Option<&'a RawValue> {
        names.iter().filter_map(|n| self.0.get(*n)).copied().find(|v| v.get() != "null")
    }

    /// The first of `names` present, if it is a string (Err when it is something else).
    pub(super) fn string(&self, names: &[&str]) -> Result<Option<String>, ()> {
        match self.raw(names) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| ()),
        }
    }

    /// The first of `names` present, if it is a string with more than blanks in it.
    pub(super) fn text(&self, names: &[&str]) -> Option<String> {
        self.string(names).ok().flatten().filter(|t| !t.trim().is_empty())
    }

    /// The first of `names` present, if it is a boolean.
    pub(super) fn boolean(&self, names: &[&str]) -> Option<bool> {
        self.raw(names).and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

/// A JSON string literal.
pub(super) fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// An Engine.IO message carrying a Socket.IO EVENT with one JSON argument.
pub(super) fn event_frame(namespace: &str, name: &str, arg: &str) -> Utf8Bytes {
    let mut frame = String::with_capacity(1 + namespace.len() + name.len() + arg.len() + 8);
    frame.push('4');
    frame.push_str(&encode_event(namespace, name, &[arg]));
    Utf8Bytes::from(frame)
}

/// An Engine.IO message carrying a Socket.IO ACK with one JSON argument.
pub(super) fn ack_frame(namespace: &str, ack: u64, arg: &str) -> Utf8Bytes {
    let payload = format!("[{arg}]");
    let sio = protocol::socketio::encode_sio(protocol::socketio::SioType::Ack, namespace, Some(ack), Some(&payload));
    Utf8Bytes::from(format!("4{sio}"))
}

/// At most `max` characters of client text, for echoing it in an error.
pub(super) fn shown(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn only_objects_have_fields_and_the_first_spelling_present_wins() {
        for not_object in ["null", "\"room\"", "42", "[1,2]", "true"] {
            assert!(Fields::of(Some(&raw(not_object))).is_none(), "{not_object}");
        }
        assert!(Fields::of(None).is_none());
        let arg = raw(r#"{"roomId":null,"meetingId":"m1","sdp":{"type":"offer"},"audio":true,"n":3}"#);
        let fields = Fields::of(Some(&arg)).unwrap();
        assert_eq!(fields.string(&["roomId", "meetingId"]), Ok(Some("m1".to_owned())));
        assert_eq!(fields.string(&["n"]), Err(()));
        assert_eq!(fields.string(&["absent"]), Ok(None));
        let blank = raw(r#"{"a":"  ","b":7,"c":"x"}"#);
        let blank = Fields::of(Some(&blank)).unwrap();
        assert_eq!((blank.text(&["a"]), blank.text(&["b"]), blank.text(&["c"])), (None, None, Some("x".to_owned())));
        assert_eq!(fields.raw(&["offer", "sdp"]).unwrap().get(), r#"{"type":"offer"}"#);
        assert_eq!(fields.boolean(&["audio"]), Some(true));
        assert_eq!(fields.boolean(&["n"]), None);
    }

    #[test]
    fn frames_are_engine_io_messages() {
        assert_eq!(event_frame("/", "user-left", r#"{"userId":"a"}"#).as_str(), r#"42["user-left",{"userId":"a"}]"#);
        assert_eq!(event_frame("/meetings", "x", "{}").as_str(), r#"42/meetings,["x",{}]"#);
        assert_eq!(ack_frame("/", 7, r#"{"ok":true}"#).as_str(), r#"437[{"ok":true}]"#);
    }
}
