//! `GET /stats` (`nsqd/http.go` `doStats` and `printStats`, `nsqd/stats.go` `GetStats`): the
//! same filters, the same JSON (Go's `null` for nil lists included) and the same text layout.
//!
//! The test nsqd has no disk queue (`backend_depth` is 0), no e2e latency percentiles, no Go
//! runtime (memory figures are 0) and does not track producers (`producers` is `null`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{
    broker::{Broker, ClientEntry},
    options::NSQD_VERSION,
    record::{ChannelSnapshot, ClientState, TopicSnapshot},
    server::Shared,
};
use crate::testing::http::{Query, Reply};

/// nsqd's `boolParams`; anything else (or nothing) means the default, true.
fn flag(value: Option<&str>) -> bool {
    !matches!(value, Some("false" | "0"))
}

/// Go's `time.Duration.String()` for durations of a second or more, else milliseconds.
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = format!("{}.{:09}", secs % 60, d.subsec_nanos());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `time.RFC3339` in UTC, from Unix seconds (Howard Hinnant's `civil_from_days`).
fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

fn state_number(state: ClientState) -> i32 {
    // nsqd/client_v2.go: stateInit, stateDisconnected, stateConnected, stateSubscribed,
    // stateClosing.
    match state {
        ClientState::Init => 0,
        ClientState::Subscribed => 3,
        _ => 4,
    }
}

fn client_json(c: &ClientEntry) -> Value {
    let i = &c.info;
    let mut v = json!({
        "client_id": i.client_id,
        "hostname": i.hostname,
        "version": "V2",
        "remote_address": i.remote_addr.to_string(),
        "state": state_number(i.state),
        "ready_count": i.rdy,
        "in_flight_count": i.in_flight,
        "message_count": i.message_count,
        "finish_count": i.finish_count,
        "requeue_count": i.requeue_count,
        "connect_ts": c.connected_at,
        "sample_rate": c.sample_rate,
        "deflate": false,
        "snappy": false,
        "user_agent": i.user_agent,
        "tls": false,
        "tls_cipher_suite": "",
        "tls_version": "",
        "tls_negotiated_protocol": "",
        "tls_negotiated_protocol_is_mutual": false,
    });
    if let Some(identity) = &i.auth_identity {
        v["authed"] = json!(true);
        v["auth_identity"] = json!(identity);
    }
    v
}

fn client_line(c: &ClientEntry) -> String {
    let i = &c.info;
    let connected = Duration::from_secs((unix_now() - c.connected_at).max(0).unsigned_abs());
    let id = format!("{}:{} {}", i.hostname, i.remote_addr.port(), i.user_agent);
    format!(
        "[V2 {id:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}",
        state_number(i.state),
        i.in_flight,
        i.rdy,
        i.finish_count,
        i.requeue_count,
        i.message_count,
        go_duration(connected)
    )
}

const NO_LATENCY: fn() -> Value = || json!({ "count": 0, "percentiles": null });

fn channel_json(broker: &Broker, c: &ChannelSnapshot, include_clients: bool) -> Value {
    let clients = include_clients.then(|| {
        let found = c.clients.iter().filter_map(|id| broker.client(*id));
        found.map(client_json).collect::<Vec<_>>()
    });
    json!({
        "channel_name": c.name,
        "depth": c.depth,
        "backend_depth": 0,
        "in_flight_count": c.in_flight,
        "deferred_count": c.deferred,
        "message_count": c.message_count,
        "requeue_count": c.requeued_count,
        "timeout_count": c.timed_out_count,
        "client_count": c.clients.len(),
        "clients": clients,
        "paused": c.paused,
        "e2e_processing_latency": NO_LATENCY(),
    })
}

/// `GetStats(topic, channel, includeClients)`: `None` for a topic that does not exist (nsqd
/// then answers `"topics": null`).
fn select(broker: &Broker, topic: &str, channel: &str) -> Option<Vec<TopicSnapshot>> {
    let topics = if topic.is_empty() {
        broker.stats()
    } else {
        vec![broker.topic_stats(topic)?]
    };
    let topics = topics.into_iter().filter_map(|mut t| {
        if !channel.is_empty() {
            t.channels.retain(|c| c.name == channel);
            if t.channels.is_empty() {
                return None;
            }
        }
        Some(t)
    });
    Some(topics.collect())
}

pub(super) fn stats(shared: &Shared, query: &Query, start_time: i64) -> Reply {
    let topic = query.get("topic").unwrap_or_default();
    let channel = query.get("channel").unwrap_or_default();
    let include_clients = flag(query.get("include_clients"));
    let include_mem = flag(query.get("include_mem"));
    let broker = shared.broker();
    let topics = select(&broker, topic, channel);
    if query.get("format") != Some("json") {
        let uptime = Duration::from_secs((unix_now() - start_time).max(0).unsigned_abs());
        let text = text(
            &broker,
            topics.unwrap_or_default(),
            include_clients,
            include_mem,
            start_time,
            uptime,
        );
        return Reply::Text(text);
    }
    let topics = topics.map(|topics| {
        let json: Vec<Value> = topics
            .iter()
            .map(|t| {
                let channels: Vec<Value> = t
                    .channels
                    .iter()
                    .map(|c| channel_json(&broker, c, include_clients))
                    .collect();
                json!({
                    "topic_name": t.name,
                    "channels": channels,
                    "depth": t.depth,
                    "backend_depth": 0,
                    "message_count": t.message_count,
                    "message_bytes": t.message_bytes,
                    "paused": t.paused,
                    "e2e_processing_latency": NO_LATENCY(),
                })
            })
            .collect();
        json
    });
    let mut answer = json!({
        "version": NSQD_VERSION,
        "health": "OK",
        "start_time": start_time,
        "topics": topics,
        "producers": null,
    });
    if include_mem {
        answer["memory"] = json!({
            "heap_objects": 0, "heap_idle_bytes": 0, "heap_in_use_bytes": 0,
            "heap_released_bytes": 0, "gc_pause_usec_100": 0, "gc_pause_usec_99": 0,
            "gc_pause_usec_95": 0, "next_gc_bytes": 0, "gc_total_runs": 0,
        });
    }
    Reply::Json(answer)
}

/// `printStats`.
fn text(
    broker: &Broker,
    topics: Vec<TopicSnapshot>,
    include_clients: bool,
    include_mem: bool,
    start_time: i64,
    uptime: Duration,
) -> String {
    let mut w = format!("nsqd v{NSQD_VERSION} (built w/actix-nsq test nsqd)\n");
    w += &format!("start_time {}\n", rfc3339(start_time));
    w += &format!("uptime {}\n", go_duration(uptime));
    w += "\nHealth: OK\n";
    if include_mem {
        w += "\nMemory:\n";
        for name in [
            "heap_objects",
            "heap_idle_bytes",
            "heap_in_use_bytes",
            "heap_released_bytes",
            "gc_pause_usec_100",
            "gc_pause_usec_99",
            "gc_pause_usec_95",
            "next_gc_bytes",
            "gc_total_runs",
        ] {
            w += &format!("   {name:<25}\t0\n");
        }
    }
    w += if topics.is_empty() {
        "\nTopics: None\n"
    } else {
        "\nTopics:"
    };
    for t in &topics {
        let paused = if t.paused { "*P " } else { "   " };
        w += &format!(
            "\n{paused}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: \n",
            t.name, t.depth, 0, t.message_count
        );
        for c in &t.channels {
            let paused = if c.paused { "   *P " } else { "      " };
            w += &format!(
                "{paused}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: \n",
                c.name, c.depth, 0, c.in_flight, c.deferred, c.requeued_count, c.timed_out_count, c.message_count
            );
            if include_clients {
                for client in c.clients.iter().filter_map(|id| broker.client(*id)) {
                    w += &format!("        {}\n", client_line(client));
                }
            }
        }
    }
    w += "\nProducers: None\n";
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(65)), "1m5s");
        assert_eq!(go_duration(Duration::from_secs(3600 + 120 + 3)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
    }

    #[test]
    fn start_time_is_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn flags_default_to_true() {
        assert!(flag(None) && flag(Some("")) && flag(Some("true")) && flag(Some("yes")));
        assert!(!flag(Some("false")) && !flag(Some("0")));
    }
}
