//! Several envelopes in one bus message.
//!
//! A node publishes the signals it has queued for another node as one message when that
//! node reads batches (it says so in every envelope it sends: [`Envelope::reads_batches`]):
//! one PUBLISH, one read on the receiving node's subscriber and one dispatch for several
//! signals. A batch is a MessagePack array of binary items, each an encoded envelope, so
//! it is never mistaken for an envelope (a map); a node that does not read batches never
//! gets one.
//!
//! [`Envelope::reads_batches`]: crate::Envelope::reads_batches

use crate::envelope::EnvelopeError;

/// Encodes `envelopes` (each already encoded) as one batch message.
pub fn encode<E: AsRef<[u8]>>(envelopes: &[E]) -> Vec<u8> {
    let size: usize = envelopes.iter().map(|e| e.as_ref().len() + 5).sum();
    let mut out = Vec::with_capacity(size + 5);
    // Writing into a Vec cannot fail.
    rmp::encode::write_array_len(&mut out, envelopes.len() as u32).expect("write to a Vec");
    for envelope in envelopes {
        let envelope = envelope.as_ref();
        rmp::encode::write_bin_len(&mut out, envelope.len() as u32).expect("write to a Vec");
        out.extend_from_slice(envelope);
    }
    out
}

/// The envelopes of a bus message: itself when it is one envelope, each item when it is
/// a batch.
pub fn envelopes(message: &[u8]) -> Envelopes<'_> {
    let mut rest = message;
    match rmp::decode::read_array_len(&mut rest) {
        Ok(left) => Envelopes::Batch { rest, left },
        Err(_) => Envelopes::One(Some(message)),
    }
}

/// How many envelopes a bus message carries (1 when it is not a batch).
pub fn len(message: &[u8]) -> u64 {
    match envelopes(message) {
        Envelopes::One(_) => 1,
        Envelopes::Batch { left, .. } => u64::from(left),
    }
}

/// The first envelope of a bus message, if it has one.
pub fn first(message: &[u8]) -> Option<&[u8]> {
    envelopes(message).next().and_then(Result::ok)
}

/// Iterator over a message's envelopes. A malformed batch yields one error and ends.
pub enum Envelopes<'a> {
    One(Option<&'a [u8]>),
    Batch { rest: &'a [u8], left: u32 },
}

impl<'a> Iterator for Envelopes<'a> {
    type Item = Result<&'a [u8], EnvelopeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Envelopes::One(envelope) => envelope.take().map(Ok),
            Envelopes::Batch { left: 0, .. } => None,
            Envelopes::Batch { rest, left } => {
                let item = next_item(rest);
                *left = if item.is_ok() { *left - 1 } else { 0 };
                Some(item)
            }
        }
    }
}

fn next_item<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], EnvelopeError> {
    let truncated = EnvelopeError::Batch("a batch item is not binary or is cut short");
    let len = rmp::decode::read_bin_len(rest).map_err(|_| EnvelopeError::Batch("a batch item is not binary"))?;
    let len = len as usize;
    let (item, tail) = (rest.get(..len).ok_or(truncated)?, &rest[len..]);
    *rest = tail;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BusEvent, Envelope, EventClass, NodeId};

    fn envelope(n: u64) -> Vec<u8> {
        Envelope::new(NodeId::parse("n1").unwrap(), BusEvent::Probe { nonce: n }).sent_at(n).encode()
    }

    #[test]
    fn a_batch_gives_back_its_envelopes_in_order() {
        let items: Vec<Vec<u8>> = (1..=3).map(envelope).collect();
        let message = encode(&items);
        let got: Vec<&[u8]> = envelopes(&message).map(Result::unwrap).collect();
        assert_eq!(got, items.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(len(&message), 3);
        let decoded: Vec<u64> = got.iter().map(|e| Envelope::decode(e).unwrap().sent_us).collect();
        assert_eq!(decoded, [1, 2, 3]);
    }

    #[test]
    fn one_envelope_is_its_own_message() {
        let one = envelope(7);
        assert_eq!(envelopes(&one).map(Result::unwrap).collect::<Vec<_>>(), [one.as_slice()]);
        assert_eq!(len(&one), 1);
        assert_eq!(first(&one), Some(one.as_slice()));
    }

    #[test]
    fn a_batch_is_never_read_as_an_envelope() {
        let message = encode(&[envelope(1), envelope(2)]);
        assert!(Envelope::decode(&message).is_err());
        assert_eq!(EventClass::of_envelope(first(&message).unwrap()), EventClass::Probe);
    }

    #[test]
    fn a_cut_batch_yields_one_error_and_ends() {
        let message = encode(&[envelope(1), envelope(2)]);
        let cut = &message[..message.len() - 3];
        let got: Vec<_> = envelopes(cut).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(got[1].is_err());
        let not_binary = [0x92, 0x01, 0x02];
        let got: Vec<_> = envelopes(&not_binary).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }
}
