//! What the test nsqd shows a test: the commands clients sent, the clients, and per-channel stats.

use std::{fmt, net::SocketAddr};

use bytes::Bytes;

/// Identifies one client connection to the test nsqd. Ids grow from 1 and are never reused,
/// not even across [`stop`](super::TestNsqd::stop) and [`kill`](super::TestNsqd::kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// One command a client sent, as nsqd read it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedCommand {
    /// The connection it came in on.
    pub client: ClientId,
    /// The command line without its newline, e.g. `"RDY 5"`, `"FIN 0a1b2c3d4e5f6789"`,
    /// `"PUB events"` (bytes that are not UTF-8 are replaced).
    pub line: String,
    /// The body of IDENTIFY (its JSON), AUTH, PUB, DPUB and MPUB (the whole MPUB body,
    /// count and sizes included). `None` when the command has none or was rejected before
    /// its body was read.
    pub body: Option<Bytes>,
}

impl RecordedCommand {
    /// The command name: the first word of the line.
    pub fn name(&self) -> &str {
        self.line.split(' ').next().unwrap_or_default()
    }

    /// The words after the name.
    pub fn params(&self) -> Vec<&str> {
        self.line.split(' ').skip(1).collect()
    }

    /// The body parsed as JSON (for IDENTIFY), or `None` when there is no body or it is not
    /// JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        self.body
            .as_ref()
            .and_then(|b| serde_json::from_slice(b).ok())
    }
}

impl fmt::Debug for RecordedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RecordedCommand");
        s.field("client", &self.client.0).field("line", &self.line);
        match (&self.body, self.name()) {
            (Some(body), "IDENTIFY") => s.field("body", &String::from_utf8_lossy(body)),
            (Some(body), _) => s.field("body_len", &body.len()),
            (None, _) => &mut s,
        };
        s.finish()
    }
}

/// A client's state, as `nsqd/client_v2.go` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientState {
    /// Connected; may IDENTIFY, AUTH, publish and SUB (nsqd `stateInit`).
    Init,
    /// After SUB: RDY, FIN, REQ, TOUCH and CLS are allowed (`stateSubscribed`).
    Subscribed,
    /// After CLS: RDY is ignored, FIN/REQ/TOUCH still work (`stateClosing`).
    Closing,
}

/// A connected client, as nsqd's `/stats` would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The connection.
    pub id: ClientId,
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// `client_id` from IDENTIFY (the remote IP until then, as nsqd does).
    pub client_id: String,
    /// `hostname` from IDENTIFY (the remote IP until then).
    pub hostname: String,
    /// `user_agent` from IDENTIFY (empty until then).
    pub user_agent: String,
    /// Where the client is in the protocol.
    pub state: ClientState,
    /// The topic and channel it subscribed to.
    pub subscription: Option<(String, String)>,
    /// The last RDY count.
    pub rdy: i64,
    /// Messages delivered to it and not yet answered or timed out.
    pub in_flight: i64,
    /// Messages delivered to it.
    pub message_count: u64,
    /// Messages it finished.
    pub finish_count: u64,
    /// Messages it requeued.
    pub requeue_count: u64,
    /// The message timeout in force for it.
    pub msg_timeout: std::time::Duration,
    /// The identity AUTH gave it.
    pub auth_identity: Option<String>,
    /// The connection was upgraded to TLS after IDENTIFY.
    pub tls: bool,
    /// The connection was upgraded to snappy compression after IDENTIFY.
    pub snappy: bool,
    /// The connection was upgraded to deflate compression after IDENTIFY.
    pub deflate: bool,
    /// The deflate level granted (the requested one clamped to `--max-deflate-level`);
    /// 0 without deflate.
    pub deflate_level: u32,
}

/// A snapshot of one of [`TestNsqd`](super::TestNsqd)'s channels: exact counters read from the
/// fake's own state, for assertions (per-channel FIN and REQ counts, the subscribed client
/// ids), not nsqd's `/stats` document. That document, as the fake serves it over HTTP, is read
/// with [`NsqdHttpClient::stats`](crate::NsqdHttpClient::stats) into
/// [`http::ChannelStats`](crate::http::ChannelStats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelSnapshot {
    /// The channel's name.
    pub name: String,
    /// Messages waiting to be delivered (not in flight, not deferred).
    pub depth: usize,
    /// Messages delivered and not yet answered.
    pub in_flight: usize,
    /// Messages waiting for their delay (DPUB, or REQ with a delay).
    pub deferred: usize,
    /// Messages the channel received from its topic.
    pub message_count: u64,
    /// Messages finished with FIN.
    pub finished_count: u64,
    /// Messages requeued with REQ.
    pub requeued_count: u64,
    /// Messages whose `msg_timeout` expired.
    pub timed_out_count: u64,
    /// The subscribed clients.
    pub clients: Vec<ClientId>,
    /// A paused channel delivers nothing.
    pub paused: bool,
}

/// A snapshot of one of [`TestNsqd`](super::TestNsqd)'s topics and its channels (see
/// [`ChannelSnapshot`]; the `/stats` document's type is
/// [`http::TopicStats`](crate::http::TopicStats)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSnapshot {
    /// The topic's name.
    pub name: String,
    /// Messages the topic holds because it has no channel yet or is paused.
    pub depth: usize,
    /// Messages published to the topic.
    pub message_count: u64,
    /// Bytes published to the topic.
    pub message_bytes: u64,
    /// A paused topic holds messages instead of passing them to its channels.
    pub paused: bool,
    /// Its channels, by name.
    pub channels: Vec<ChannelSnapshot>,
}
