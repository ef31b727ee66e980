//! coturn's redis-statsdb events, understood: channel and payload parsing, the table of
//! active allocations with their traffic, totals by realm, and the normalised event
//! `{eventType, service, details, timestamp}` that goes to the Redis Stream. Pure code:
//! the Redis side lives in `monitor.rs`.
//!
//! Channels: `turn/realm/<realm>/user/<username>/allocation/<id>/<kind>`, kind one of
//! `status`, `traffic`, `traffic/peer`, `total_traffic`, `total_traffic/peer`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{json, Value};

/// Most allocations tracked; more are counted but not listed (a bound on memory if
/// `deleted` events are missed; stale entries also expire with their lifetime).
pub const MAX_ALLOCATIONS: usize = 200_000;
/// An allocation not refreshed for its lifetime plus this is dropped.
const EXPIRY_SLACK_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Status,
    Traffic { peer: bool, total: bool },
}

/// A parsed channel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub realm: String,
    pub username: String,
    pub allocation: String,
    pub kind: Kind,
}

pub fn parse_channel(channel: &str) -> Option<Channel> {
    let rest = channel.strip_prefix("turn/realm/")?;
    let (realm, rest) = rest.split_once("/user/")?;
    let (username, rest) = rest.rsplit_once("/allocation/")?;
    let (allocation, kind) = rest.split_once('/')?;
    let kind = match kind {
        "status" => Kind::Status,
        "traffic" => Kind::Traffic { peer: false, total: false },
        "traffic/peer" => Kind::Traffic { peer: true, total: false },
        "total_traffic" => Kind::Traffic { peer: false, total: true },
        "total_traffic/peer" => Kind::Traffic { peer: true, total: true },
        _ => return None,
    };
    if realm.is_empty() || allocation.is_empty() || !allocation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Channel { realm: realm.to_owned(), username: username.to_owned(), allocation: allocation.to_owned(), kind })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    New,
    Refreshed,
    Deleted,
}

/// A `status` payload: `new lifetime=600, type=UDP, local=..., remote=..., ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub status: Status,
    pub fields: BTreeMap<String, String>,
}

pub fn parse_status(payload: &str) -> Option<StatusReport> {
    let payload = payload.trim();
    let (word, rest) = payload.split_once(' ').unwrap_or((payload, ""));
    let status = match word {
        "new" => Status::New,
        "refreshed" => Status::Refreshed,
        "deleted" => Status::Deleted,
        _ => return None,
    };
    Some(StatusReport { status, fields: pairs(rest) })
}

/// Packets and bytes, as in `rcvp=N, rcvb=N, sentp=N, sentb=N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    pub received_packets: u64,
    pub received_bytes: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        self.received_packets += other.received_packets;
        self.received_bytes += other.received_bytes;
        self.sent_packets += other.sent_packets;
        self.sent_bytes += other.sent_bytes;
    }
}

pub fn parse_traffic(payload: &str) -> Option<Traffic> {
    let f = pairs(payload);
    let n = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    Some(Traffic {
        received_packets: n("rcvp")?,
        received_bytes: n("rcvb")?,
        sent_packets: n("sentp")?,
        sent_bytes: n("sentb")?,
    })
}

fn pairs(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|p| p.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The user id inside a REST username `<expiry>:<user>` (the whole name otherwise).
fn user_of(username: &str) -> &str {
    match username.split_once(':') {
        Some((expiry, user)) if expiry.bytes().all(|b| b.is_ascii_digit()) => user,
        _ => username,
    }
}

/// One active allocation as `/api/turn/sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub id: String,
    pub realm: String,
    pub username: String,
    pub user: String,
    pub transport: Option<String>,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub lifetime_secs: u64,
    pub started_at_ms: u64,
    pub refreshed_at_ms: u64,
    /// Client side of the relay, and the peer side.
    pub traffic: Traffic,
    pub peer_traffic: Traffic,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RealmTotals {
    pub active_allocations: usize,
    pub allocations_created: u64,
    /// Ended: deleted by coturn, or expired without a refresh.
    pub allocations_deleted: u64,
    pub traffic: Traffic,
    pub peer_traffic: Traffic,
}

impl RealmTotals {
    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: &RealmTotals) {
        self.active_allocations += other.active_allocations;
        self.allocations_created += other.allocations_created;
        self.allocations_deleted += other.allocations_deleted;
        self.traffic.add(&other.traffic);
        self.peer_traffic.add(&other.peer_traffic);
    }
}

/// The live picture built from the events.
#[derive(Debug, Default)]
pub struct AllocationTable {
    allocations: HashMap<String, Allocation>,
    realms: BTreeMap<String, RealmTotals>,
    untracked: u64,
}

impl AllocationTable {
    /// Applies one event received at `now_ms`; returns the normalised event for the
    /// stream, or None for a message that is not an allocation event.
    pub fn apply(&mut self, channel: &str, payload: &str, now_ms: u64) -> Option<TurnEvent> {
        let ch = parse_channel(channel)?;
        match ch.kind {
            Kind::Status => {
                let report = parse_status(payload)?;
                let event_type = match report.status {
                    Status::New => "allocation_created",
                    Status::Refreshed => "allocation_refreshed",
                    Status::Deleted => "allocation_deleted",
                };
                self.apply_status(&ch, &report, now_ms);
                let mut details = base_details(&ch);
                for (k, v) in &report.fields {
                    details[k.as_str()] = json!(v);
                }
                Some(normalised(event_type, details, now_ms))
            }
            Kind::Traffic { peer, total } => {
                let traffic = parse_traffic(payload)?;
                if !total {
                    self.apply_traffic(&ch, &traffic, peer);
                }
                let mut details = base_details(&ch);
                details["side"] = json!(if peer { "peer" } else { "client" });
                details["scope"] = json!(if total { "total" } else { "interval" });
                details["traffic"] = json!(traffic);
                Some(normalised("allocation_traffic", details, now_ms))
            }
        }
    }

    /// Seeds the table from a `.../status` key coturn left in Redis (start-up and
    /// reconnects): no stream event, the age counts from now.
    pub fn seed(&mut self, status_key: &str, value: &str, now_ms: u64) {
        if let (Some(ch), Some(report)) = (parse_channel(status_key), parse_status(value)) {
            if ch.kind == Kind::Status
                && report.status != Status::Deleted
                && !self.allocations.contains_key(&ch.allocation)
            {
                self.apply_status(&ch, &StatusReport { status: Status::Refreshed, ..report }, now_ms);
            }
        }
    }

    fn apply_status(&mut self, ch: &Channel, report: &StatusReport, now_ms: u64) {
        let realm = self.realms.entry(ch.realm.clone()).or_default();
        if report.status == Status::Deleted {
            if self.allocations.remove(&ch.allocation).is_some() {
                realm.active_allocations = realm.active_allocations.saturating_sub(1);
                realm.allocations_deleted += 1;
            }
            return;
        }
        if report.status == Status::New {
            realm.allocations_created += 1;
        }
        let lifetime_secs = report.fields.get("lifetime").and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(a) = self.allocations.get_mut(&ch.allocation) {
            a.lifetime_secs = lifetime_secs;
            a.refreshed_at_ms = now_ms;
            return;
        }
        if self.allocations.len() >= MAX_ALLOCATIONS {
            self.untracked += 1;
            return;
        }
        realm.active_allocations += 1;
        self.allocations.insert(
            ch.allocation.clone(),
            Allocation {
                id: ch.allocation.clone(),
                realm: ch.realm.clone(),
                username: ch.username.clone(),
                user: user_of(&ch.username).to_owned(),
                transport: report.fields.get("type").cloned(),
                local: report.fields.get("local").cloned(),
                remote: report.fields.get("remote").cloned(),
                lifetime_secs,
                started_at_ms: now_ms,
                refreshed_at_ms: now_ms,
                traffic: Traffic::default(),
                peer_traffic: Traffic::default(),
            },
        );
    }

    fn apply_traffic(&mut self, ch: &Channel, traffic: &Traffic, peer: bool) {
        let realm = self.realms.entry(ch.realm.clone()).or_default();
        if peer { &mut realm.peer_traffic } else { &mut realm.traffic }.add(traffic);
        if let Some(a) = self.allocations.get_mut(&ch.allocation) {
            if peer { &mut a.peer_traffic } else { &mut a.traffic }.add(traffic);
        }
    }

    /// Drops allocations whose lifetime ran out without a refresh or delete.
    pub fn expire(&mut self, now_ms: u64) {
        let realms = &mut self.realms;
        self.allocations.retain(|_, a| {
            let alive = a.refreshed_at_ms + a.lifetime_secs * 1000 + EXPIRY_SLACK_MS > now_ms;
            if !alive {
                if let Some(r) = realms.get_mut(&a.realm) {
                    r.active_allocations = r.active_allocations.saturating_sub(1);
                    r.allocations_deleted += 1;
                }
            }
            alive
        });
    }

    /// The `limit` oldest active allocations.
    pub fn sessions(&self, limit: usize) -> Vec<Allocation> {
        let mut list: Vec<&Allocation> = self.allocations.values().collect();
        list.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        list.into_iter().take(limit).cloned().collect()
    }

    pub fn stats(&self) -> Value {
        let mut totals = RealmTotals::default();
        for r in self.realms.values() {
            totals.merge(r);
        }
        json!({
            "activeAllocations": self.allocations.len(),
            "untrackedAllocations": self.untracked,
            "totals": totals,
            "byRealm": self.realms,
        })
    }

    pub fn active(&self) -> usize {
        self.allocations.len()
    }

    /// Lists `realm` (with zero totals) before any of its events: its series then exist
    /// from the start, and "no allocations" reads as 0 rather than as no data.
    pub fn expect_realm(&mut self, realm: &str) {
        self.realms.entry(realm.to_owned()).or_default();
    }

    /// The totals of every realm seen.
    pub fn realms(&self) -> &BTreeMap<String, RealmTotals> {
        &self.realms
    }
}

fn base_details(ch: &Channel) -> Value {
    json!({
        "realm": ch.realm,
        "username": ch.username,
        "user": user_of(&ch.username),
        "allocationId": ch.allocation,
    })
}

/// A normalised allocation event: what the stream holds, one field each.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEvent {
    pub event_type: &'static str,
    pub service: &'static str,
    pub details: Value,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
}

impl TurnEvent {
    /// The service could not give a caller TURN credentials (its secret store or its
    /// provider failed): `turn_error`, with the endpoint and the error.
    pub fn turn_error(endpoint: &str, error: &str) -> TurnEvent {
        let details = json!({"endpoint": endpoint, "error": error});
        TurnEvent { event_type: "turn_error", service: "turn", details, timestamp: iso_now() }
    }

    /// The stream entry's fields.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("eventType", self.event_type.to_owned()),
            ("service", self.service.to_owned()),
            ("timestamp", self.timestamp.clone()),
            ("details", self.details.to_string()),
        ]
    }
}

fn normalised(event_type: &'static str, details: Value, now_ms: u64) -> TurnEvent {
    TurnEvent { event_type, service: "turn", details, timestamp: iso(now_ms) }
}

/// RFC 3339, UTC, milliseconds.
fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Now, as event timestamps are written.
pub fn iso_now() -> String {
    iso(crate::source::unix_now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "turn/realm/example.org/user/1700000000:alice/allocation/123456789012345678";

    #[test]
    fn channels_parse_including_rest_usernames() {
        let ch = parse_channel(&format!("{BASE}/traffic/peer")).unwrap();
        assert_eq!(ch.realm, "example.org");
        assert_eq!(ch.username, "1700000000:alice");
        assert_eq!(ch.allocation, "123456789012345678");
        assert_eq!(ch.kind, Kind::Traffic { peer: true, total: false });
        assert!(parse_channel("__XXX__").is_none());
        assert!(parse_channel(&format!("{BASE}/bogus")).is_none());
        let stun = parse_channel("turn/realm/r/user//allocation/1/traffic").unwrap();
        assert_eq!(stun.username, "");
    }

    #[test]
    fn a_whole_allocation_life() {
        let mut t = AllocationTable::default();
        let new = t
            .apply(
                &format!("{BASE}/status"),
                "new lifetime=600, type=UDP, local=127.0.0.1:50000, remote=127.0.0.1:40000, ssl=NONE, cipher=NONE",
                1_000,
            )
            .unwrap();
        assert_eq!(new.event_type, "allocation_created");
        assert_eq!(new.service, "turn");
        assert_eq!(new.details["user"], "alice");
        assert_eq!(new.details["remote"], "127.0.0.1:40000");
        assert_eq!(new.timestamp, "1970-01-01T00:00:01.000Z");
        let s = t.sessions(10);
        assert_eq!((s.len(), s[0].transport.as_deref(), s[0].lifetime_secs), (1, Some("UDP"), 600));

        t.apply(&format!("{BASE}/traffic"), "rcvp=5, rcvb=850, sentp=5, sentb=850", 2_000).unwrap();
        t.apply(&format!("{BASE}/traffic/peer"), "rcvp=5, rcvb=850, sentp=5, sentb=850", 2_000).unwrap();
        assert_eq!(t.sessions(10)[0].traffic.received_bytes, 850);
        let refreshed = t.apply(&format!("{BASE}/status"), "refreshed lifetime=0, type=UDP", 3_000).unwrap();
        assert_eq!(refreshed.event_type, "allocation_refreshed");
        let deleted = t.apply(&format!("{BASE}/status"), "deleted", 3_001).unwrap();
        assert_eq!(deleted.event_type, "allocation_deleted");
        let total = t.apply(&format!("{BASE}/total_traffic"), "rcvp=5, rcvb=850, sentp=5, sentb=850", 3_002).unwrap();
        assert_eq!(total.details["scope"], "total");

        assert!(t.sessions(10).is_empty());
        let stats = t.stats();
        assert_eq!(stats["activeAllocations"], 0);
        assert_eq!(stats["byRealm"]["example.org"]["allocationsCreated"], 1);
        // total_traffic repeats the interval reports: counted once.
        assert_eq!(stats["totals"]["traffic"]["receivedBytes"], 850);
        assert_eq!(stats["totals"]["peerTraffic"]["sentPackets"], 5);
    }

    #[test]
    fn seeded_and_expired_allocations() {
        let mut t = AllocationTable::default();
        t.seed(&format!("{BASE}/status"), "new lifetime=60, type=TCP, local=a, remote=b", 0);
        assert_eq!(t.active(), 1);
        assert_eq!(t.stats()["totals"]["allocationsCreated"], 0, "seeding is not a creation");
        t.expire(60_000 + 59_999);
        assert_eq!(t.active(), 1);
        t.expire(120_001);
        assert_eq!(t.active(), 0);
        assert_eq!(t.stats()["byRealm"]["example.org"]["activeAllocations"], 0);
    }

    #[test]
    fn garbage_payloads_are_ignored() {
        let mut t = AllocationTable::default();
        assert!(t.apply(&format!("{BASE}/status"), "exploded", 0).is_none());
        assert!(t.apply(&format!("{BASE}/traffic"), "rcvp=x", 0).is_none());
        assert!(t.apply("__XXX__", "__YYY__", 0).is_none());
        assert_eq!(t.active(), 0);
    }
}
