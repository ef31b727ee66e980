//! Opaque JSON that the cluster carries without looking inside (SDP, ICE candidates,
//! chat bodies, member metadata).
//!
//! A [`Payload`] keeps the sender's own bytes: it is never parsed into a value and
//! written again, which would reorder keys, reformat numbers and cost a copy per hop.
//! In JSON it is written out verbatim; in MessagePack (the bus) it travels as a string
//! holding that same JSON text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Wraps JSON text after checking that it is one well-formed JSON value.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// The sender's JSON text, byte for byte.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn is_object(&self) -> bool {
        self.0.get().starts_with('{')
    }

    /// `{}`: the metadata of a member that gave none.
    pub fn empty_object() -> Self {
        Self(RawValue::from_string("{}".to_owned()).expect("literal is valid JSON"))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads hold SDP and ICE data: show only their size.
        write!(f, "Payload({} bytes)", self.0.get().len())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            s.serialize_str(self.0.get())
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Box::<RawValue>::deserialize(d).map(Self)
        } else {
            let text = String::deserialize(d)?;
            Self::from_json(text).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_keeps_key_order_spacing_and_number_format() {
        let text = r#"{"z":1.50, "a":[1e3,  "x"]}"#;
        let p = Payload::from_json(text.to_owned()).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), text);
    }

    #[test]
    fn a_payload_survives_messagepack_byte_for_byte() {
        let text = r#"{"sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0","b":1.0}"#;
        let p = Payload::from_json(text.to_owned()).unwrap();
        let bytes = rmp_serde::to_vec_named(&p).unwrap();
        let back: Payload = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.get(), text);
    }

    #[test]
    fn malformed_json_is_not_a_payload() {
        assert!(Payload::from_json("{".to_owned()).is_err());
    }
}
