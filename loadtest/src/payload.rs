//! Realistic signal payloads with a measurement stamp inside. SDP offers and
//! answers are about 3 KB and 2.5 KB (an audio + video + data session as a browser
//! writes it); ICE candidates about 200 B. The stamp says who sent it, its sequence
//! number on that sender→receiver pair and the intended send time.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The sender's index in the scenario.
    pub src: u32,
    /// Sequence on this sender → receiver pair (0, 1, 2, ...).
    pub seq: u64,
    /// Intended send time, nanoseconds on the run's clock (`Metrics::stamp`).
    pub t: u64,
}

/// What the receiver reads: only the stamp; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Stamped {
    lt: Stamp,
}

pub fn read_stamp(data: &str) -> Option<Stamp> {
    serde_json::from_str::<Stamped>(data).ok().map(|s| s.lt)
}

/// The kind of the `seq`-th signal on a pair: the session starts with an offer (from
/// the lower index) or an answer, then trickles candidates, and renegotiates every 20.
pub fn kind_for(seq: u64, offerer: bool) -> &'static str {
    match (seq % 20, offerer) {
        (0, true) => "offer",
        (0, false) => "answer",
        _ => "candidate",
    }
}

pub fn signal_data(kind: &str, stamp: Stamp) -> String {
    let lt = serde_json::to_string(&stamp).expect("stamp serialises");
    match kind {
        "offer" | "answer" => {
            let sdp = if kind == "offer" { offer_sdp() } else { answer_sdp() };
            format!(r#"{{"lt":{lt},"type":"{kind}","sdp":"{sdp}"}}"#)
        }
        _ => format!(
            r#"{{"lt":{lt},"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.{} {} typ srflx raddr 10.0.0.5 rport 54400 generation 0 ufrag EsAw network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw"}}"#,
            stamp.seq % 250 + 1,
            40000 + stamp.seq % 20000
        ),
    }
}

/// A chat-sized broadcast body (about 120 B) with a stamp.
pub fn chat_data(stamp: Stamp) -> String {
    let lt = serde_json::to_string(&stamp).expect("stamp serialises");
    format!(r#"{{"lt":{lt},"text":"Can everyone see my screen? I am sharing the quarterly numbers now."}}"#)
}

fn offer_sdp() -> &'static str {
    static SDP: OnceLock<String> = OnceLock::new();
    SDP.get_or_init(|| sdp(true))
}

fn answer_sdp() -> &'static str {
    static SDP: OnceLock<String> = OnceLock::new();
    SDP.get_or_init(|| sdp(false))
}

/// An SDP in the shape a browser writes, JSON-escaped (`\r\n` as text).
fn sdp(offer: bool) -> String {
    let mut lines = vec![
        "v=0".to_owned(),
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1".to_owned(),
        "s=-".to_owned(),
        "t=0 0".to_owned(),
        "a=group:BUNDLE 0 1 2".to_owned(),
        "a=extmap-allow-mixed".to_owned(),
        "a=msid-semantic: WMS stream0".to_owned(),
    ];
    let setup = if offer { "actpass" } else { "active" };
    let audio_codecs: &[(u32, &str)] =
        &[(111, "opus/48000/2"), (63, "red/48000/2"), (9, "G722/8000"), (0, "PCMU/8000"), (8, "PCMA/8000")];
    let video_codecs: &[(u32, &str)] = if offer {
        &[(96, "VP8/90000"), (98, "VP9/90000"), (100, "H264/90000"), (102, "AV1/90000"), (104, "H264/90000")]
    } else {
        &[(96, "VP8/90000"), (98, "VP9/90000"), (100, "H264/90000")]
    };
    for (mid, (media, codecs)) in [("audio", audio_codecs), ("video", video_codecs)].into_iter().enumerate() {
        let pts: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
        lines.push(format!("m={media} 9 UDP/TLS/RTP/SAVPF {}", pts.join(" ")));
        lines.push("c=IN IP4 0.0.0.0".into());
        lines.push("a=rtcp:9 IN IP4 0.0.0.0".into());
        lines.push("a=ice-ufrag:EsAw".into());
        lines.push("a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1".into());
        lines.push("a=ice-options:trickle".into());
        lines.push("a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F".into());
        lines.push(format!("a=setup:{setup}"));
        lines.push(format!("a=mid:{mid}"));
        lines.push("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level".into());
        lines.push("a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".into());
        lines.push("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01".into());
        lines.push("a=sendrecv".into());
        lines.push(format!("a=msid:stream0 {media}0"));
        lines.push("a=rtcp-mux".into());
        for (pt, codec) in codecs.iter() {
            lines.push(format!("a=rtpmap:{pt} {codec}"));
            lines.push(format!("a=rtcp-fb:{pt} transport-cc"));
            if media == "video" {
                lines.push(format!("a=rtcp-fb:{pt} nack pli"));
                lines.push(format!("a=rtcp-fb:{pt} ccm fir"));
            }
        }
        lines.push(format!("a=ssrc:{} cname:4TOk42mSjXCkVIa6", 1_000_000 + mid));
    }
    lines.push("m=application 9 UDP/DTLS/SCTP webrtc-datachannel".into());
    lines.push("c=IN IP4 0.0.0.0".into());
    lines.push("a=mid:2".into());
    lines.push("a=sctp-port:5000".into());
    lines.push("a=max-message-size:262144".into());
    lines.join("\\r\\n") + "\\r\\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_realistic_sizes_and_carry_their_stamp() {
        let stamp = Stamp { src: 7, seq: 21, t: 123_456_789 };
        for (kind, lo, hi) in [("offer", 2_000, 5_000), ("answer", 2_000, 5_000), ("candidate", 150, 300)] {
            let data = signal_data(kind, stamp);
            assert!((lo..=hi).contains(&data.len()), "{kind} is {} bytes", data.len());
            let value: serde_json::Value = serde_json::from_str(&data).expect("valid JSON");
            assert!(value.is_object());
            assert_eq!(read_stamp(&data), Some(stamp));
        }
        assert_eq!(read_stamp(&chat_data(stamp)), Some(stamp));
        assert_eq!(read_stamp(r#"{"no":"stamp"}"#), None);
    }

    #[test]
    fn each_pair_starts_with_offer_or_answer_then_trickles() {
        assert_eq!(kind_for(0, true), "offer");
        assert_eq!(kind_for(0, false), "answer");
        assert_eq!(kind_for(1, true), "candidate");
        assert_eq!(kind_for(20, true), "offer");
    }
}
