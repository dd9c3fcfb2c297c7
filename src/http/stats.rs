//! nsqd's `/info` and `/stats` answers, field for field (`nsqd/http.go` `doInfo` and
//! `doStats`, `nsqd/stats.go`, `nsqd/client_v2.go` `ClientV2Stats`).
//!
//! Every struct takes missing fields as their default, so older and newer nsqd versions
//! decode, and Go's `null` for an empty list reads as an empty `Vec`.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer, Serialize};

use super::lookup_response::null_as_default;

/// Go's `time.Duration` in JSON: an integer count of nanoseconds.
fn nanos<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let n = Option::<i64>::deserialize(deserializer)?.unwrap_or_default();
    Ok(Duration::from_nanos(n.max(0).unsigned_abs()))
}

fn to_nanos<S: serde::Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_i64(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The answer to nsqd's `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NsqdInfo {
    /// nsqd's version, e.g. `1.3.0`.
    pub version: String,
    /// `--broadcast-address`: the address nsqd registers with nsqlookupd.
    pub broadcast_address: String,
    /// The host's name.
    pub hostname: String,
    /// The HTTP port (-1 when listening on a Unix socket).
    pub http_port: i32,
    /// The TCP port (-1 when listening on a Unix socket).
    pub tcp_port: i32,
    /// When nsqd started, in Unix seconds.
    pub start_time: i64,
    /// `--max-heartbeat-interval`.
    #[serde(deserialize_with = "nanos", serialize_with = "to_nanos")]
    pub max_heartbeat_interval: Duration,
    /// `--max-output-buffer-size`.
    pub max_output_buffer_size: i64,
    /// `--max-output-buffer-timeout`.
    #[serde(deserialize_with = "nanos", serialize_with = "to_nanos")]
    pub max_output_buffer_timeout: Duration,
    /// `--max-deflate-level`.
    pub max_deflate_level: i32,
    /// `--topology-zone` (nsq ≥ 1.3).
    pub topology_zone: String,
    /// `--topology-region` (nsq ≥ 1.3).
    pub topology_region: String,
}

/// The answer to `GET /stats?format=json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NsqdStats {
    /// nsqd's version.
    pub version: String,
    /// `OK`, or `NOK - <error>` when nsqd cannot write to disk.
    pub health: String,
    /// When nsqd started, in Unix seconds.
    pub start_time: i64,
    /// The topics (filtered as asked), by name.
    #[serde(deserialize_with = "null_as_default")]
    pub topics: Vec<TopicStats>,
    /// Go runtime memory statistics (when asked for with `include_mem`).
    pub memory: Option<MemStats>,
    /// Clients that published over TCP (when asked for with `include_clients`).
    #[serde(deserialize_with = "null_as_default")]
    pub producers: Vec<ClientStats>,
}

impl NsqdStats {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicStats> {
        self.topics.iter().find(|t| t.topic_name == name)
    }
}

/// One topic in `/stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic's name.
    pub topic_name: String,
    /// Its channels, by name.
    #[serde(deserialize_with = "null_as_default")]
    pub channels: Vec<ChannelStats>,
    /// Messages held by the topic (in memory and on disk) because it has no channel yet or is
    /// paused.
    pub depth: i64,
    /// Of those, the messages on disk.
    pub backend_depth: i64,
    /// Messages published to the topic.
    pub message_count: u64,
    /// Bytes published to the topic.
    pub message_bytes: u64,
    /// A paused topic holds messages instead of passing them to its channels.
    pub paused: bool,
    /// End-to-end processing latency over the topic's channels (`--e2e-processing-latency-*`).
    pub e2e_processing_latency: Option<LatencyStats>,
}

impl TopicStats {
    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&ChannelStats> {
        self.channels.iter().find(|c| c.channel_name == name)
    }
}

/// One channel in `/stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ChannelStats {
    /// The channel's name.
    pub channel_name: String,
    /// Messages queued (in memory and on disk).
    pub depth: i64,
    /// Of those, the messages on disk.
    pub backend_depth: i64,
    /// Messages delivered and not yet answered.
    pub in_flight_count: i64,
    /// Messages waiting for their delay (DPUB, or REQ with a delay).
    pub deferred_count: i64,
    /// Messages the channel received from its topic.
    pub message_count: u64,
    /// Messages delivered to a consumer in the same zone (nsq ≥ 1.3, topology-aware delivery).
    pub zone_local_msg_count: u64,
    /// Messages delivered to a consumer in the same region (nsq ≥ 1.3).
    pub region_local_msg_count: u64,
    /// Messages delivered to a consumer elsewhere (nsq ≥ 1.3).
    pub global_msg_count: u64,
    /// Messages requeued.
    pub requeue_count: u64,
    /// Messages whose `msg_timeout` expired.
    pub timeout_count: u64,
    /// Subscribed clients, counted even when not listed.
    pub client_count: i64,
    /// Subscribed clients (when asked for with `include_clients`).
    #[serde(deserialize_with = "null_as_default")]
    pub clients: Vec<ClientStats>,
    /// A paused channel delivers nothing.
    pub paused: bool,
    /// End-to-end processing latency (`--e2e-processing-latency-*`).
    pub e2e_processing_latency: Option<LatencyStats>,
}

/// One client connection in `/stats` (`ClientV2Stats`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ClientStats {
    /// `client_id` from IDENTIFY.
    pub client_id: String,
    /// `hostname` from IDENTIFY.
    pub hostname: String,
    /// The protocol, `V2`.
    pub version: String,
    /// The client's `ip:port`.
    pub remote_address: String,
    /// nsqd's client state: 0 init, 1 disconnected, 2 connected, 3 subscribed, 4 closing.
    pub state: i32,
    /// The client's last RDY.
    pub ready_count: i64,
    /// Messages in flight to it.
    pub in_flight_count: i64,
    /// Messages delivered to it.
    pub message_count: u64,
    /// Of those, delivered within its zone (nsq ≥ 1.3).
    pub zone_local_msg_count: u64,
    /// Of those, delivered within its region (nsq ≥ 1.3).
    pub region_local_msg_count: u64,
    /// Of those, delivered across regions (nsq ≥ 1.3).
    pub global_msg_count: u64,
    /// Messages it finished.
    pub finish_count: u64,
    /// Messages it requeued.
    pub requeue_count: u64,
    /// When it connected, in Unix seconds.
    #[serde(rename = "connect_ts")]
    pub connect_time: i64,
    /// `sample_rate` from IDENTIFY.
    pub sample_rate: i32,
    /// Whether the connection is deflate-compressed.
    pub deflate: bool,
    /// Whether the connection is snappy-compressed.
    pub snappy: bool,
    /// `user_agent` from IDENTIFY.
    pub user_agent: String,
    /// Whether AUTH succeeded.
    pub authed: bool,
    /// The identity the auth server returned.
    pub auth_identity: String,
    /// The identity URL the auth server returned.
    pub auth_identity_url: String,
    /// `topology_zone` from IDENTIFY (nsq ≥ 1.3).
    pub topology_zone: String,
    /// `topology_region` from IDENTIFY (nsq ≥ 1.3).
    pub topology_region: String,
    /// For producers: messages published per topic.
    #[serde(deserialize_with = "null_as_default")]
    pub pub_counts: Vec<PubCount>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The TLS cipher suite.
    pub tls_cipher_suite: String,
    /// The TLS version.
    pub tls_version: String,
    /// The ALPN protocol.
    pub tls_negotiated_protocol: String,
    /// Whether ALPN was mutual.
    pub tls_negotiated_protocol_is_mutual: bool,
}

/// Messages one producer published to one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PubCount {
    /// The topic.
    pub topic: String,
    /// How many messages.
    pub count: u64,
}

/// A latency summary (`internal/quantile` `Result`): each percentile is a map with
/// `quantile` (e.g. 0.99) and `value` (nanoseconds).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Samples in the window.
    pub count: i64,
    /// The percentiles.
    #[serde(deserialize_with = "null_as_default")]
    pub percentiles: Vec<BTreeMap<String, f64>>,
}

/// Go runtime memory statistics in `/stats` (`include_mem`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MemStats {
    /// Live heap objects.
    pub heap_objects: u64,
    /// Idle heap bytes.
    pub heap_idle_bytes: u64,
    /// Heap bytes in use.
    pub heap_in_use_bytes: u64,
    /// Heap bytes returned to the OS.
    pub heap_released_bytes: u64,
    /// Longest GC pause, µs.
    pub gc_pause_usec_100: u64,
    /// 99th percentile GC pause, µs.
    pub gc_pause_usec_99: u64,
    /// 95th percentile GC pause, µs.
    pub gc_pause_usec_95: u64,
    /// Heap size that triggers the next GC.
    pub next_gc_bytes: u64,
    /// GC runs so far.
    pub gc_total_runs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nsqd_1_3_stats() {
        // Trimmed from a real nsqd 1.3.0 `/stats?format=json`.
        let body = br#"{"version":"1.3.0","health":"OK","start_time":1700000000,
          "topics":[{"topic_name":"t","channels":[{"channel_name":"c","depth":2,
          "backend_depth":0,"in_flight_count":1,"deferred_count":0,"message_count":3,
          "requeue_count":0,"timeout_count":0,"client_count":1,"clients":[{"client_id":"w",
          "hostname":"h","version":"V2","remote_address":"127.0.0.1:5","state":3,
          "ready_count":5,"in_flight_count":1,"message_count":1,"finish_count":0,
          "requeue_count":0,"connect_ts":1700000001,"sample_rate":0,"deflate":false,
          "snappy":true,"user_agent":"go-nsq/1.1.0","tls":false,"tls_cipher_suite":"",
          "tls_version":"","tls_negotiated_protocol":"",
          "tls_negotiated_protocol_is_mutual":false,"topology_zone":"","topology_region":""}],
          "paused":false,"e2e_processing_latency":{"count":0,"percentiles":null}}],
          "depth":0,"backend_depth":0,"message_count":3,"message_bytes":15,"paused":false,
          "e2e_processing_latency":{"count":0,"percentiles":null}}],
          "memory":{"heap_objects":1,"gc_total_runs":2},"producers":null}"#;
        let stats: NsqdStats = serde_json::from_slice(body).unwrap();
        let c = stats.topic("t").unwrap().channel("c").unwrap();
        assert_eq!((c.depth, c.in_flight_count, c.client_count), (2, 1, 1));
        assert_eq!(c.clients[0].connect_time, 1_700_000_001);
        assert!(c.clients[0].snappy);
        assert_eq!(stats.memory.unwrap().gc_total_runs, 2);
        assert!(stats.producers.is_empty());
        assert_eq!(stats.topics[0].message_bytes, 15);
    }

    #[test]
    fn info_durations_are_nanoseconds() {
        let body = br#"{"version":"1.3.0","tcp_port":-1,"max_heartbeat_interval":60000000000,
            "max_output_buffer_timeout":30000000000}"#;
        let info: NsqdInfo = serde_json::from_slice(body).unwrap();
        assert_eq!(info.max_heartbeat_interval, Duration::from_secs(60));
        assert_eq!(info.max_output_buffer_timeout, Duration::from_secs(30));
        assert_eq!(info.tcp_port, -1);
        let again: NsqdInfo = serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(again, info);
    }
}
