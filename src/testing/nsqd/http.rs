//! nsqd's HTTP API (`nsqd/http.go`): the same routes, parameters, checks in the same order,
//! status codes and messages, over the test nsqd's broker.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, Bytes};
use serde_json::{json, Value};

use super::{http_stats, options::NSQD_VERSION, server::Shared};
use crate::{
    protocol::{Channel, Topic},
    testing::http::{Query, Reply, Request, Response, Service},
};

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ping"),
    ("GET", "/info"),
    ("POST", "/pub"),
    ("POST", "/mpub"),
    ("GET", "/stats"),
    ("POST", "/topic/create"),
    ("POST", "/topic/delete"),
    ("POST", "/topic/empty"),
    ("POST", "/topic/pause"),
    ("POST", "/topic/unpause"),
    ("POST", "/channel/create"),
    ("POST", "/channel/delete"),
    ("POST", "/channel/empty"),
    ("POST", "/channel/pause"),
    ("POST", "/channel/unpause"),
];

/// What `PUT /config/:opt` can change.
struct LiveConfig {
    nsqlookupd_tcp_addresses: Value,
    /// `lg.LogLevel`: 1 debug, 2 info, 3 warn, 4 error, 5 fatal.
    log_level: i64,
}

pub(crate) struct NsqdApi {
    shared: Arc<Shared>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    start_time: SystemTime,
    live: Mutex<LiveConfig>,
}

type Handled = Result<Reply, Reply>;

fn err(status: u16, message: &str) -> Reply {
    Reply::err(status, message)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl NsqdApi {
    pub(crate) fn new(shared: Arc<Shared>, tcp_addr: SocketAddr, http_addr: SocketAddr) -> Self {
        Self {
            shared,
            tcp_addr,
            http_addr,
            start_time: SystemTime::now(),
            live: Mutex::new(LiveConfig {
                nsqlookupd_tcp_addresses: json!([]),
                log_level: 2,
            }),
        }
    }

    /// The largest request body the HTTP server reads.
    pub(crate) fn max_body(shared: &Shared) -> usize {
        let max = shared.opts.max_msg_size.max(shared.opts.max_body_size);
        usize::try_from(max).unwrap_or(usize::MAX)
    }

    fn start_unix(&self) -> i64 {
        let since = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    }

    fn route(&self, request: &Request) -> Handled {
        let (method, path) = (request.method.as_str(), request.path.as_str());
        if let Some(opt) = path.strip_prefix("/config/") {
            return match method {
                "GET" | "PUT" => self.config(method, opt, &request.body),
                _ => Err(err(405, "METHOD_NOT_ALLOWED")),
            };
        }
        if !ROUTES.contains(&(method, path)) {
            let known = ROUTES.iter().any(|(_, p)| *p == path);
            return Err(err(
                if known { 405 } else { 404 },
                if known {
                    "METHOD_NOT_ALLOWED"
                } else {
                    "NOT_FOUND"
                },
            ));
        }
        if path == "/info" {
            return Ok(self.info());
        }
        if path == "/pub" {
            return self.publish(request);
        }
        let query = request.query().ok_or_else(|| err(400, "INVALID_REQUEST"))?;
        match path {
            "/mpub" => self.mpub(&query, &request.body),
            "/stats" => Ok(http_stats::stats(&self.shared, &query, self.start_unix())),
            "/topic/create" => new_topic(&query).map(|t| {
                self.shared.broker().create_topic(&t);
                Reply::Empty
            }),
            "/topic/delete" => {
                let topic = need_topic(&query)?;
                let deleted = self.shared.broker().delete_topic(topic);
                found(deleted, "TOPIC_NOT_FOUND")
            }
            "/topic/empty" => {
                let topic = need_topic(&query)?;
                Topic::new(topic).map_err(|_| err(400, "INVALID_TOPIC"))?;
                found(self.shared.broker().empty_topic(topic), "TOPIC_NOT_FOUND")
            }
            "/topic/pause" | "/topic/unpause" => {
                let topic = need_topic(&query)?;
                let paused = path.ends_with("/pause");
                let done = self
                    .shared
                    .broker()
                    .set_topic_paused(topic, paused, Instant::now());
                found(done, "TOPIC_NOT_FOUND")
            }
            _ => self.channel_action(path, &query),
        }
    }

    fn info(&self) -> Reply {
        let o = &self.shared.opts;
        Reply::Json(json!({
            "version": NSQD_VERSION,
            "broadcast_address": self.tcp_addr.ip().to_string(),
            "hostname": gethostname::gethostname().to_string_lossy(),
            "http_port": self.http_addr.port(),
            "tcp_port": self.tcp_addr.port(),
            "start_time": self.start_unix(),
            "max_heartbeat_interval": nanos(o.max_heartbeat_interval),
            "max_output_buffer_size": o.max_output_buffer_size,
            "max_output_buffer_timeout": nanos(o.max_output_buffer_timeout),
            "max_deflate_level": o.max_deflate_level,
        }))
    }

    /// `doPUB`: body checks first, then the topic (created here), then the defer.
    fn publish(&self, request: &Request) -> Handled {
        let body = &request.body;
        if i64::try_from(body.len()).unwrap_or(i64::MAX) > self.shared.opts.max_msg_size {
            return Err(err(413, "MSG_TOO_BIG"));
        }
        if body.is_empty() {
            return Err(err(400, "MSG_EMPTY"));
        }
        let query = request.query().ok_or_else(|| err(400, "INVALID_REQUEST"))?;
        let topic = self.get_topic(&query)?;
        let mut delay = Duration::ZERO;
        if let Some(ms) = query.get("defer") {
            let ms: i64 = ms.parse().map_err(|_| err(400, "INVALID_DEFER"))?;
            delay = Duration::from_millis(ms.unsigned_abs());
            if ms < 0 || delay > self.shared.opts.max_req_timeout {
                return Err(err(400, "INVALID_DEFER"));
            }
        }
        let broker = &mut self.shared.broker();
        broker.publish(&topic, vec![body.clone()], delay, Instant::now());
        Ok(Reply::Text("OK".into()))
    }

    /// `getTopicFromQuery`: validates the name and creates the topic.
    fn get_topic(&self, query: &Query) -> Result<Topic, Reply> {
        let topic = new_topic(query)?;
        self.shared.broker().create_topic(&topic);
        Ok(topic)
    }

    /// `doMPUB`: the topic first (created even if the body is then refused), then the body.
    fn mpub(&self, query: &Query, body: &Bytes) -> Handled {
        let o = &self.shared.opts;
        if i64::try_from(body.len()).unwrap_or(i64::MAX) > o.max_body_size {
            return Err(err(413, "BODY_TOO_BIG"));
        }
        let topic = self.get_topic(query)?;
        // Text mode is the default, but an unrecognised value means binary.
        let binary = query
            .get("binary")
            .is_some_and(|v| !matches!(v, "false" | "0"));
        let messages = if binary {
            read_mpub(body.clone(), o.max_msg_size, o.max_body_size)
                .map_err(|code| err(413, code))?
        } else {
            let mut messages = Vec::new();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if i64::try_from(line.len()).unwrap_or(i64::MAX) > o.max_msg_size {
                    return Err(err(413, "MSG_TOO_BIG"));
                }
                messages.push(body.slice_ref(line));
            }
            messages
        };
        let broker = &mut self.shared.broker();
        broker.publish(&topic, messages, Duration::ZERO, Instant::now());
        Ok(Reply::Text("OK".into()))
    }

    /// `getExistingTopicFromQuery` and the channel handlers.
    fn channel_action(&self, path: &str, query: &Query) -> Handled {
        let topic = need_topic(query)?;
        let topic = Topic::new(topic).map_err(|_| err(400, "INVALID_ARG_TOPIC"))?;
        let channel = query
            .get("channel")
            .ok_or_else(|| err(400, "MISSING_ARG_CHANNEL"))?;
        let channel = Channel::new(channel).map_err(|_| err(400, "INVALID_ARG_CHANNEL"))?;
        let now = Instant::now();
        let mut broker = self.shared.broker();
        if broker.topic_stats(&topic).is_none() {
            return Err(err(404, "TOPIC_NOT_FOUND"));
        }
        let done = match path {
            "/channel/create" => {
                broker.create_channel(&topic, &channel, now);
                true
            }
            "/channel/delete" => broker.delete_channel(&topic, &channel),
            "/channel/empty" => broker.empty_channel(&topic, &channel, now),
            "/channel/pause" => broker.set_channel_paused(&topic, &channel, true, now),
            "/channel/unpause" => broker.set_channel_paused(&topic, &channel, false, now),
            _ => return Err(err(404, "NOT_FOUND")),
        };
        found(done, "CHANNEL_NOT_FOUND")
    }

    /// `doConfig`.
    fn config(&self, method: &str, opt: &str, body: &Bytes) -> Handled {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if method == "PUT" {
            let too_big =
                i64::try_from(body.len()).unwrap_or(i64::MAX) > self.shared.opts.max_msg_size;
            if body.is_empty() || too_big {
                return Err(err(413, "INVALID_VALUE"));
            }
            match opt {
                "nsqlookupd_tcp_addresses" => {
                    let list: Option<Vec<String>> =
                        serde_json::from_slice(body).map_err(|_| err(400, "INVALID_VALUE"))?;
                    live.nsqlookupd_tcp_addresses = json!(list);
                }
                "log_level" => {
                    let level = String::from_utf8_lossy(body).to_ascii_lowercase();
                    let levels = ["debug", "info", "warn", "error", "fatal"];
                    let Some(i) = levels.iter().position(|l| *l == level) else {
                        return Err(err(400, "INVALID_VALUE"));
                    };
                    live.log_level = i64::try_from(i).unwrap_or_default() + 1;
                }
                _ => return Err(err(400, "INVALID_OPTION")),
            }
        }
        let o = &self.shared.opts;
        let value = match opt {
            "nsqlookupd_tcp_addresses" => live.nsqlookupd_tcp_addresses.clone(),
            "log_level" => json!(live.log_level),
            "tcp_address" => json!(self.tcp_addr.to_string()),
            "http_address" => json!(self.http_addr.to_string()),
            "broadcast_address" => json!(self.tcp_addr.ip().to_string()),
            "max_rdy_count" => json!(o.max_rdy_count),
            "max_msg_size" => json!(o.max_msg_size),
            "max_body_size" => json!(o.max_body_size),
            "msg_timeout" => json!(nanos(o.msg_timeout)),
            "max_msg_timeout" => json!(nanos(o.max_msg_timeout)),
            "max_req_timeout" => json!(nanos(o.max_req_timeout)),
            "max_heartbeat_interval" => json!(nanos(o.max_heartbeat_interval)),
            "max_output_buffer_size" => json!(o.max_output_buffer_size),
            "max_output_buffer_timeout" => json!(nanos(o.max_output_buffer_timeout)),
            "min_output_buffer_timeout" => json!(nanos(o.min_output_buffer_timeout)),
            "output_buffer_timeout" => json!(nanos(o.output_buffer_timeout)),
            "max_channel_consumers" => json!(o.max_channel_consumers),
            "max_deflate_level" => json!(o.max_deflate_level),
            "snappy" => json!(o.snappy),
            "deflate" => json!(o.deflate),
            _ => return Err(err(400, "INVALID_OPTION")),
        };
        Ok(Reply::Json(value))
    }
}

fn need_topic(query: &Query) -> Result<&str, Reply> {
    query
        .get("topic")
        .ok_or_else(|| err(400, "MISSING_ARG_TOPIC"))
}

fn new_topic(query: &Query) -> Result<Topic, Reply> {
    Topic::new(need_topic(query)?).map_err(|_| err(400, "INVALID_TOPIC"))
}

fn found(done: bool, missing: &str) -> Handled {
    if done {
        Ok(Reply::Empty)
    } else {
        Err(err(404, missing))
    }
}

/// `readMPUB` over a body in memory; errors are the `E_*` code without its `E_`. Bytes after
/// the last message are ignored, as nsqd never reads them.
fn read_mpub(mut body: Bytes, max_msg: i64, max_body: i64) -> Result<Vec<Bytes>, &'static str> {
    let read_len = |body: &mut Bytes| (body.remaining() >= 4).then(|| body.get_i32());
    let count = read_len(&mut body).ok_or("BAD_BODY")?;
    // 4 bytes of count, then at least 4 bytes of size and 1 byte per message.
    if count <= 0 || i64::from(count) > (max_body - 4) / 5 {
        return Err("BAD_BODY");
    }
    let mut messages = Vec::new();
    for _ in 0..count {
        let size = read_len(&mut body).ok_or("BAD_MESSAGE")?;
        if size <= 0 || i64::from(size) > max_msg {
            return Err("BAD_MESSAGE");
        }
        let size = size.unsigned_abs() as usize;
        if body.remaining() < size {
            return Err("BAD_MESSAGE");
        }
        messages.push(body.split_to(size));
    }
    Ok(messages)
}

impl Service for NsqdApi {
    fn handle(&self, request: Request) -> Response {
        if self.shared.opts.tls_required {
            // nsqd's plain HTTP listener refuses everything under --tls-required; the test
            // nsqd has no HTTPS listener, hence port 0.
            let body = json!({ "message": "TLS_REQUIRED", "https_port": 0 }).to_string();
            return Response::new(403, body)
                .header("X-NSQ-Content-Type", "nsq; version=1.0")
                .header("Content-Type", "application/json; charset=utf-8");
        }
        if (request.method.as_str(), request.path.as_str()) == ("GET", "/ping") {
            return Reply::Text("OK".into()).plain();
        }
        match self.route(&request) {
            Ok(reply) | Err(reply) => reply.v1(),
        }
    }

    fn too_large(&self, request: &Request) -> Response {
        let message = match request.path.as_str() {
            "/pub" => "MSG_TOO_BIG",
            "/mpub" => "BODY_TOO_BIG",
            p if p.starts_with("/config/") => "INVALID_VALUE",
            _ => "BODY_TOO_BIG",
        };
        Reply::err(413, message).v1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpub(parts: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&i32::try_from(parts.len()).unwrap().to_be_bytes());
        for p in parts {
            out.extend_from_slice(&i32::try_from(p.len()).unwrap().to_be_bytes());
            out.extend_from_slice(p);
        }
        Bytes::from(out)
    }

    #[test]
    fn binary_mpub_is_read_like_nsqd() {
        let ok = read_mpub(mpub(&[b"ab", b"c"]), 10, 100).unwrap();
        assert_eq!(ok, [Bytes::from("ab"), Bytes::from("c")]);
        assert_eq!(
            read_mpub(Bytes::from_static(b"\0\0"), 10, 100),
            Err("BAD_BODY")
        );
        assert_eq!(read_mpub(mpub(&[]), 10, 100), Err("BAD_BODY"));
        // (max_body - 4) / 5 messages at most.
        assert_eq!(
            read_mpub(mpub(&[b"a", b"b", b"c"]), 10, 13),
            Err("BAD_BODY")
        );
        assert_eq!(read_mpub(mpub(&[b"a", b""]), 10, 100), Err("BAD_MESSAGE"));
        assert_eq!(read_mpub(mpub(&[b"abc"]), 2, 100), Err("BAD_MESSAGE"));
        let mut short = mpub(&[b"abc"]).to_vec();
        short.pop();
        assert_eq!(read_mpub(Bytes::from(short), 10, 100), Err("BAD_MESSAGE"));
    }
}
