//! nsqlookupd's answers (`/lookup`, `/nodes`) and the decoding of nsq's two answer shapes.
//!
//! Plain types and functions: the HTTP clients and the consumer's discoverer both use them,
//! so neither depends on the other's module.

use serde::{Deserialize, Serialize};

/// One nsqd as nsqlookupd lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ProducerInfo {
    /// Address nsqlookupd saw the nsqd connect from.
    pub remote_address: String,
    /// The nsqd's hostname.
    pub hostname: String,
    /// The address clients should use (nsqd `--broadcast-address`).
    pub broadcast_address: String,
    /// nsqd's TCP port.
    pub tcp_port: u16,
    /// nsqd's HTTP port.
    pub http_port: u16,
    /// nsqd's version.
    pub version: String,
    /// nsqd `--topology-zone` (nsqlookupd after v1.3.0, for the topology-aware-consumption
    /// experiment; empty from v1.3.0 and earlier).
    pub topology_zone: String,
    /// nsqd `--topology-region` (as `topology_zone`).
    pub topology_region: String,
}

impl ProducerInfo {
    /// `broadcast_address:tcp_port`, bracketing IPv6 addresses. Empty when the entry has no
    /// usable address (a bad entry affects only itself).
    pub fn tcp_address(&self) -> Option<String> {
        join_host_port(&self.broadcast_address, self.tcp_port)
    }

    /// `broadcast_address:http_port`.
    pub fn http_address(&self) -> Option<String> {
        join_host_port(&self.broadcast_address, self.http_port)
    }
}

pub(crate) fn join_host_port(host: &str, port: u16) -> Option<String> {
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return None;
    }
    if host.contains(':') && !host.starts_with('[') {
        Some(format!("[{host}]:{port}"))
    } else {
        Some(format!("{host}:{port}"))
    }
}

/// The answer to `GET /lookup?topic=`.
///
/// Producers are decoded one by one: an entry nsqlookupd (or whatever answers in its place)
/// got wrong - a `tcp_port` of `70000`, `-1`, `"4150"`, `null` or `4150.0`, a
/// `broadcast_address` that is `null` or a number, no usable address at all - lands in
/// [`skipped`](Self::skipped) with the reason, and the other entries are still used. Only the
/// first [`SkippedProducer::MAX_LISTED`] are listed; [`skipped_count`](Self::skipped_count)
/// counts them all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "RawLookup")]
#[non_exhaustive]
pub struct LookupResponse {
    /// The topic's channels.
    pub channels: Vec<String>,
    /// The nsqd that have the topic, each with a usable TCP address.
    pub producers: Vec<ProducerInfo>,
    /// Entries that could not be used, and why: the first
    /// [`SkippedProducer::MAX_LISTED`] of them (never serialized).
    #[serde(skip)]
    pub skipped: Vec<SkippedProducer>,
    /// How many entries were skipped in all.
    #[serde(skip)]
    pub skipped_count: usize,
}

/// A `/lookup` entry that was left out because it cannot be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedProducer {
    /// The entry as it was received (compact JSON, cut to [`SkippedProducer::MAX_ENTRY`]
    /// characters).
    pub entry: String,
    /// Why it was skipped (cut to [`SkippedProducer::MAX_ENTRY`] characters too: serde's
    /// message can quote the value).
    pub reason: String,
}

impl SkippedProducer {
    /// How much of a skipped entry and its reason is kept: enough to recognise it, not a
    /// hostile answer's whole megabytes.
    pub const MAX_ENTRY: usize = 200;
    /// How many skipped entries are listed: an answer of a million `{}` must not become a
    /// million reports.
    pub const MAX_LISTED: usize = 32;

    fn new(entry: &serde_json::Value, reason: &str) -> Self {
        Self {
            entry: cut(&entry.to_string()),
            reason: cut(reason),
        }
    }
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(SkippedProducer::MAX_ENTRY) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

impl std::fmt::Display for SkippedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.entry, self.reason)
    }
}

/// The `/lookup` answer before its producers are checked one by one.
#[derive(Deserialize)]
struct RawLookup {
    #[serde(default, deserialize_with = "null_as_default")]
    channels: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    producers: Vec<serde_json::Value>,
}

impl From<RawLookup> for LookupResponse {
    fn from(raw: RawLookup) -> Self {
        let mut producers = Vec::with_capacity(raw.producers.len());
        let mut skipped = Vec::new();
        let mut skipped_count = 0;
        for entry in raw.producers {
            match decode_producer(&entry) {
                Ok(producer) => producers.push(producer),
                Err(reason) => {
                    skipped_count += 1;
                    if skipped.len() < SkippedProducer::MAX_LISTED {
                        skipped.push(SkippedProducer::new(&entry, &reason));
                    }
                }
            }
        }
        Self {
            channels: raw.channels,
            producers,
            skipped,
            skipped_count,
        }
    }
}

/// One `/lookup` entry, typed and checked: it must name a host and a TCP port that can be
/// dialled (nsqlookupd 1.3.0 `nsqlookupd/http.go` `doLookup` lists `PeerInfo` as registered by
/// each nsqd's IDENTIFY, so any other shape is a broken or impostor registry).
pub(crate) fn decode_producer(entry: &serde_json::Value) -> Result<ProducerInfo, String> {
    let object = entry
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let producer = ProducerInfo::deserialize(entry).map_err(|e| {
        // serde_json's message does not say which field: find it, one field at a time.
        let field = object.iter().find(|(name, value)| {
            let mut one = serde_json::Map::new();
            one.insert((*name).clone(), (*value).clone());
            ProducerInfo::deserialize(&serde_json::Value::Object(one)).is_err()
        });
        match field {
            Some((name, _)) => format!("{name}: {e}"),
            None => e.to_string(),
        }
    })?;
    if producer.tcp_address().is_none() {
        return Err(format!(
            "no usable TCP address (broadcast_address {:?}, tcp_port {})",
            producer.broadcast_address, producer.tcp_port
        ));
    }
    Ok(producer)
}

/// One nsqd as nsqlookupd's `/nodes` lists it: its address, and the topics it has with
/// whether each is tombstoned (`nsqlookupd/http.go`, `doNodes`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's addresses and version.
    #[serde(flatten)]
    pub producer: ProducerInfo,
    /// Parallel to [`topics`](Self::topics): true where this node is tombstoned for the topic.
    #[serde(deserialize_with = "null_as_default")]
    pub tombstones: Vec<bool>,
    /// The topics this node has registered.
    #[serde(deserialize_with = "null_as_default")]
    pub topics: Vec<String>,
}

impl NodeInfo {
    /// True when the node has `topic` and is tombstoned for it.
    pub fn is_tombstoned(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .zip(&self.tombstones)
            .any(|(t, tombstoned)| t == topic && *tombstoned)
    }
}

/// The media type nsqlookupd ≥ 1.0 answers in without the legacy wrapper.
pub(crate) const ACCEPT_V1: &str = "application/vnd.nsq; version=1.0";
/// The header that says the answer is not wrapped.
pub(crate) const CONTENT_TYPE_V1: &str = "nsq; version=1.0";

/// Go marshals a nil slice as `null`; read it as empty.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The pre-1.0 wrapper: `{"status_code": 200, "status_txt": "OK", "data": {...}}`.
#[derive(Deserialize)]
struct Legacy<T> {
    status_code: u16,
    status_txt: String,
    data: Option<T>,
}

/// Decodes an nsq HTTP answer: the object itself when nsqlookupd/nsqd sent the header
/// `X-NSQ-Content-Type: nsq; version=1.0`, otherwise the legacy wrapper (go-nsq
/// `api_request.go:34-78`). Returns `Err((status, message))` for a legacy error answer.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    v1: bool,
) -> Result<T, (u16, String)> {
    if !v1 {
        if let Ok(legacy) = serde_json::from_slice::<Legacy<T>>(body) {
            return match legacy.data {
                Some(data) if legacy.status_code == 200 => Ok(data),
                _ => Err((legacy.status_code, legacy.status_txt)),
            };
        }
    }
    serde_json::from_slice(body).map_err(|e| (0, format!("undecodable answer: {e}")))
}

/// Checks an answer that carries no data (`POST /topic/create` and the like): nothing to
/// decode, but a legacy wrapper may still report an error in its `status_code`.
pub(crate) fn decode_empty(body: &[u8], v1: bool) -> Result<(), (u16, String)> {
    if v1 {
        return Ok(());
    }
    match serde_json::from_slice::<Legacy<serde_json::Value>>(body) {
        Ok(legacy) if legacy.status_code != 200 => Err((legacy.status_code, legacy.status_txt)),
        _ => Ok(()),
    }
}

/// The error message of an nsq HTTP error answer: `{"message": "TOPIC_NOT_FOUND"}`, or the
/// legacy `status_txt`, or the body itself.
pub(crate) fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    if let Ok(m) = serde_json::from_slice::<Message>(body) {
        return m.message;
    }
    if let Ok(legacy) = serde_json::from_slice::<Legacy<serde_json::Value>>(body) {
        return legacy.status_txt;
    }
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[u8] = br#"{"channels":["c"],"producers":[{"remote_address":"127.0.0.1:5000",
        "hostname":"h","broadcast_address":"10.0.0.1","tcp_port":4150,"http_port":4151,
        "version":"1.3.0"},{"broadcast_address":"::1","tcp_port":4250}]}"#;

    #[test]
    fn decodes_v1_and_legacy() {
        let r: LookupResponse = decode(V1, true).unwrap();
        assert_eq!(
            r.producers[0].tcp_address().as_deref(),
            Some("10.0.0.1:4150")
        );
        assert_eq!(r.producers[1].tcp_address().as_deref(), Some("[::1]:4250"));
        let legacy = format!(
            r#"{{"status_code":200,"status_txt":"OK","data":{}}}"#,
            String::from_utf8_lossy(V1)
        );
        let r: LookupResponse = decode(legacy.as_bytes(), false).unwrap();
        assert_eq!(r.channels, ["c"]);
        // No header, but not wrapped either: still understood.
        let r: LookupResponse = decode(V1, false).unwrap();
        assert_eq!(r.producers.len(), 2);
    }

    #[test]
    fn legacy_errors_and_garbage() {
        let e = decode::<LookupResponse>(
            br#"{"status_code":404,"status_txt":"TOPIC_NOT_FOUND","data":null}"#,
            false,
        );
        assert_eq!(e, Err((404, "TOPIC_NOT_FOUND".into())));
        assert!(decode::<LookupResponse>(b"<html>", true).is_err());
        assert_eq!(
            error_message(br#"{"message":"TOPIC_NOT_FOUND"}"#),
            "TOPIC_NOT_FOUND"
        );
        assert_eq!(error_message(b"oops\n"), "oops");
    }

    #[test]
    fn nodes_carry_topics_and_tombstones() {
        let body = br#"{"producers":[{"remote_address":"127.0.0.1:5000","hostname":"h",
            "broadcast_address":"10.0.0.1","tcp_port":4150,"http_port":4151,"version":"1.3.0",
            "topology_zone":"z","topology_region":"r","tombstones":[false,true],
            "topics":["a","b"]},{"broadcast_address":"10.0.0.2","tombstones":null,"topics":null}]}"#;
        #[derive(Deserialize)]
        struct Nodes {
            producers: Vec<NodeInfo>,
        }
        let nodes: Nodes = decode(body, true).unwrap();
        let n = &nodes.producers[0];
        assert_eq!(n.producer.http_address().as_deref(), Some("10.0.0.1:4151"));
        assert_eq!(n.producer.topology_zone, "z");
        assert!(!n.is_tombstoned("a") && n.is_tombstoned("b") && !n.is_tombstoned("c"));
        assert!(nodes.producers[1].topics.is_empty());
        let r: LookupResponse = decode(br#"{"channels":null,"producers":null}"#, true).unwrap();
        assert_eq!(r, LookupResponse::default());
    }

    #[test]
    fn empty_answers_check_the_legacy_status() {
        assert_eq!(decode_empty(b"", true), Ok(()));
        assert_eq!(decode_empty(b"", false), Ok(()));
        let ok = br#"{"status_code":200,"status_txt":"OK","data":null}"#;
        assert_eq!(decode_empty(ok, false), Ok(()));
        let err = br#"{"status_code":500,"status_txt":"INTERNAL_ERROR","data":null}"#;
        assert_eq!(
            decode_empty(err, false),
            Err((500, "INTERNAL_ERROR".into()))
        );
    }

    #[test]
    fn one_bad_entry_is_skipped_and_the_others_used() {
        let bad_entries = [
            (r#"{"broadcast_address":"h","tcp_port":70000}"#, "tcp_port"),
            (r#"{"broadcast_address":"h","tcp_port":-1}"#, "tcp_port"),
            (r#"{"broadcast_address":"h","tcp_port":"4150"}"#, "tcp_port"),
            (r#"{"broadcast_address":"h","tcp_port":null}"#, "tcp_port"),
            (r#"{"broadcast_address":"h","tcp_port":4150.0}"#, "tcp_port"),
            (
                r#"{"broadcast_address":null,"tcp_port":4150}"#,
                "broadcast_address",
            ),
            (
                r#"{"broadcast_address":7,"tcp_port":4150}"#,
                "broadcast_address",
            ),
            (
                r#"{"broadcast_address":"","tcp_port":4150}"#,
                "no usable TCP address",
            ),
            (r#"{"broadcast_address":"h"}"#, "no usable TCP address"),
            (r#"[1,2]"#, "not a JSON object"),
            (r#""h:4150""#, "not a JSON object"),
        ];
        for (bad, why) in bad_entries {
            let body = format!(
                r#"{{"channels":["c"],"producers":[{{"broadcast_address":"a","tcp_port":1}},
                {bad},{{"broadcast_address":"b","tcp_port":2}}]}}"#
            );
            let r: LookupResponse = decode(body.as_bytes(), true).unwrap();
            let addrs: Vec<_> = r.producers.iter().filter_map(|p| p.tcp_address()).collect();
            assert_eq!(addrs, ["a:1", "b:2"], "{bad}");
            assert_eq!((r.skipped.len(), r.skipped_count), (1, 1), "{bad}");
            assert!(r.skipped[0].reason.contains(why), "{bad}: {}", r.skipped[0]);
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&r.skipped[0].entry).unwrap(),
                serde_json::from_str::<serde_json::Value>(bad).unwrap()
            );
            assert_eq!(r.channels, ["c"]);
        }
    }

    #[test]
    fn skipped_entries_are_cut_short() {
        let huge = format!(
            r#"{{"producers":[{{"broadcast_address":"{}","tcp_port":-1}}]}}"#,
            "x".repeat(100_000)
        );
        let r: LookupResponse = decode(huge.as_bytes(), true).unwrap();
        assert!(r.producers.is_empty());
        assert!(r.skipped[0].entry.len() <= SkippedProducer::MAX_ENTRY + 3);
        assert!(r.skipped[0].entry.ends_with("..."));
        // serde quotes a bad string value in its message: that is cut too.
        let huge = format!(
            r#"{{"producers":[{{"broadcast_address":"h","tcp_port":"{}"}}]}}"#,
            "9".repeat(100_000)
        );
        let r: LookupResponse = decode(huge.as_bytes(), true).unwrap();
        assert!(r.skipped[0].reason.len() <= SkippedProducer::MAX_ENTRY + 3);
    }

    #[test]
    fn a_flood_of_bad_entries_is_counted_not_listed() {
        let entries = vec!["{}"; 10_000].join(",");
        let body =
            format!(r#"{{"producers":[{entries},{{"broadcast_address":"h","tcp_port":1}}]}}"#);
        let r: LookupResponse = decode(body.as_bytes(), true).unwrap();
        assert_eq!(r.producers.len(), 1);
        assert_eq!(r.skipped.len(), SkippedProducer::MAX_LISTED);
        assert_eq!(r.skipped_count, 10_000);
    }

    #[test]
    fn bad_entries_have_no_address() {
        let p = ProducerInfo {
            broadcast_address: String::new(),
            tcp_port: 4150,
            ..Default::default()
        };
        assert_eq!(p.tcp_address(), None);
        let p = ProducerInfo {
            broadcast_address: "h".into(),
            tcp_port: 0,
            ..Default::default()
        };
        assert_eq!(p.tcp_address(), None);
    }
}
