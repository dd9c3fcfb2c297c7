//! nsqlookupd's `/lookup` answer, in both shapes it has had.

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
    /// nsqd `--topology-zone` (nsq ≥ 1.3; empty before).
    pub topology_zone: String,
    /// nsqd `--topology-region` (nsq ≥ 1.3; empty before).
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LookupResponse {
    /// The topic's channels.
    #[serde(deserialize_with = "null_as_default")]
    pub channels: Vec<String>,
    /// The nsqd that have the topic.
    #[serde(deserialize_with = "null_as_default")]
    pub producers: Vec<ProducerInfo>,
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
