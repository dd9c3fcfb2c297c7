//! Helpers for the conformance tests that run the same input against a real nsqd (given by
//! `ACTIX_NSQ_LIVE_NSQD`) and the in-process `TestNsqd`, and compare what each answered.
#![allow(dead_code, unreachable_pub)]

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    protocol::{Frame, IdentifyRequest, NsqCodec, Response, MAGIC_V2},
    testing::TestNsqd,
};
use futures_util::StreamExt;
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_util::codec::Framed;

/// `host:port` of a real nsqd's TCP listener.
pub const LIVE_NSQD: &str = "ACTIX_NSQ_LIVE_NSQD";
/// `host:port` of the same nsqd's HTTP listener (optional: topics are deleted through it).
pub const LIVE_NSQD_HTTP: &str = "ACTIX_NSQ_LIVE_NSQD_HTTP";

/// How long a connection must stay silent before a transcript is considered complete. nsqd
/// buffers message frames for up to `output_buffer_timeout` (250 ms by default), so this
/// must be well above that.
pub const QUIET: Duration = Duration::from_millis(700);
/// Bound on anything that should happen "soon" (connects, redeliveries).
pub const WAIT: Duration = Duration::from_secs(15);

/// One server under test.
pub struct Target {
    /// `real nsqd` or `test nsqd`.
    pub name: &'static str,
    /// TCP `host:port`.
    pub tcp: String,
    http: Option<String>,
    topics: Mutex<Vec<String>>,
    _nsqd: Option<TestNsqd>,
}

impl Target {
    /// Registers a topic for deletion when the target is dropped, and returns it.
    pub fn topic(&self, name: &str) -> String {
        self.topics.lock().unwrap().push(name.to_owned());
        name.to_owned()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let Some(http) = &self.http else { return };
        for topic in self.topics.lock().unwrap().iter() {
            // Best effort: a topic that was never created answers 404.
            let _ = http_post(http, &format!("/topic/delete?topic={topic}"));
        }
    }
}

/// The real nsqd and a fresh `TestNsqd`, in that order. Panics when `ACTIX_NSQ_LIVE_NSQD` is
/// not set: the tests are `#[ignore]`d for that reason, and one asked to run must not pass
/// without having compared anything.
pub fn targets() -> [Target; 2] {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Ok(tcp) = std::env::var(LIVE_NSQD) else {
        panic!("set {LIVE_NSQD}=host:port of a real nsqd (v1.3.0) to run the live tests");
    };
    let nsqd = TestNsqd::start().unwrap();
    let real = Target {
        name: "real nsqd",
        tcp,
        http: std::env::var(LIVE_NSQD_HTTP).ok(),
        topics: Mutex::new(Vec::new()),
        _nsqd: None,
    };
    let test = Target {
        name: "test nsqd",
        tcp: nsqd.addr().to_string(),
        http: None,
        topics: Mutex::new(Vec::new()),
        _nsqd: Some(nsqd),
    };
    [real, test]
}

/// A topic or channel name unique to this run: nsqd keeps state between runs.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

/// A minimal HTTP/1.0 POST; returns the status line.
pub fn http_post(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply.lines().next().unwrap_or_default().to_owned())
}

// ---- raw protocol -------------------------------------------------------------------------

/// What a read saw.
#[derive(Debug)]
pub enum Seen {
    Frame(Frame),
    /// EOF: nsqd closed the connection.
    Closed,
    /// Reset or another I/O or decoding error.
    Broken(String),
    /// Nothing arrived in time.
    Silent,
}

/// A raw connection speaking through `NsqCodec`.
pub struct Wire {
    framed: Framed<TcpStream, NsqCodec>,
}

impl Wire {
    /// Connects without sending anything.
    pub async fn connect(addr: &str) -> Wire {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Wire {
            framed: Framed::new(stream, NsqCodec::default()),
        }
    }

    /// Connects and sends the `  V2` magic.
    pub async fn v2(addr: &str) -> Wire {
        let mut wire = Self::connect(addr).await;
        wire.send(MAGIC_V2).await;
        wire
    }

    /// Writes bytes as they are: nothing is validated.
    pub async fn send(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        // The peer may already have closed after a fatal error; what it sent is still read.
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
    }

    /// The next frame, or why there is none within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Seen {
        match tokio::time::timeout(wait, self.framed.next()).await {
            Err(_) => Seen::Silent,
            Ok(None) => Seen::Closed,
            Ok(Some(Ok(frame))) => Seen::Frame(frame),
            Ok(Some(Err(e))) => Seen::Broken(e.to_string()),
        }
    }

    /// The next frame, which must arrive within [`WAIT`].
    pub async fn frame(&mut self) -> Frame {
        match self.next(WAIT).await {
            Seen::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The bytes that arrive until the connection stays [`QUIET`] or closes, starting with
    /// any the codec already read but did not decode (for looking past an upgrade).
    pub async fn raw_bytes(self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let parts = self.framed.into_parts();
        let mut bytes = parts.read_buf.to_vec();
        let mut stream = parts.io;
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(QUIET, stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    }

    /// Everything that arrives until the connection closes or stays [`QUIET`], rendered,
    /// ending with `<closed>`, `<broken: ...>` or `<open>`.
    pub async fn transcript(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.next(QUIET).await {
                Seen::Frame(frame) => seen.push(render(&frame)),
                Seen::Closed => {
                    seen.push("<closed>".to_owned());
                    return seen;
                }
                Seen::Broken(e) => {
                    seen.push(format!("<broken: {e}>"));
                    return seen;
                }
                Seen::Silent => {
                    seen.push("<open>".to_owned());
                    return seen;
                }
            }
        }
    }
}

/// A frame as text: responses and errors as nsqd wrote them, messages without their id and
/// timestamp (which differ between servers), JSON with its `version` value blanked.
pub fn render(frame: &Frame) -> String {
    match frame {
        Frame::Response(Response::Data(data)) => blank_version(&String::from_utf8_lossy(data)),
        Frame::Response(response) => String::from_utf8_lossy(response.as_bytes()).into_owned(),
        Frame::Error(error) => error.to_wire(),
        Frame::Message(m) => format!(
            "MSG attempts={} body={}",
            m.attempts,
            String::from_utf8_lossy(&m.body)
        ),
        other => format!("{other:?}"),
    }
}

/// Replaces the value of `"version":"..."` with `*`, keeping everything else byte for byte.
pub fn blank_version(json: &str) -> String {
    const KEY: &str = "\"version\":\"";
    let Some(start) = json.find(KEY).map(|at| at + KEY.len()) else {
        return json.to_owned();
    };
    match json[start..].find('"') {
        Some(len) => format!("{}*{}", &json[..start], &json[start + len..]),
        None => json.to_owned(),
    }
}

/// A command line.
pub fn line(text: &str) -> Vec<u8> {
    format!("{text}\n").into_bytes()
}

/// A big-endian size or count, as nsqd reads them (`readLen`).
pub fn size(n: i32) -> [u8; 4] {
    n.to_be_bytes()
}

/// A command line followed by a sized body.
pub fn with_body(text: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = line(text);
    bytes.extend_from_slice(&size(body.len() as i32));
    bytes.extend_from_slice(body);
    bytes
}

/// IDENTIFY with our defaults, changed by `f`, as `Command::Identify` encodes it.
pub fn identify_with(f: impl FnOnce(&mut IdentifyRequest)) -> Vec<u8> {
    let mut request = IdentifyRequest::default();
    f(&mut request);
    actix_nsq::protocol::Command::Identify(Box::new(request))
        .to_bytes()
        .to_vec()
}

/// Writes `bytes` in one go on a fresh V2 connection, then reads the transcript.
pub async fn run(addr: &str, bytes: &[u8]) -> Vec<String> {
    let mut wire = Wire::v2(addr).await;
    wire.send(bytes).await;
    wire.transcript().await
}

/// The bytes of a script: commands separated by `;`, `$t` standing for `topic`. Each command
/// is a line (sent with `\n`) and then its binary items: `<size N>` a 4-byte size or count,
/// `<body TEXT>` a size and TEXT, `<bytes N>` a size and N bytes of `x`, `<json k=v ...>` a
/// size and our default IDENTIFY JSON with those fields set (values are JSON).
pub fn script(topic: &str, text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for command in text.replace("$t", topic).split(';') {
        let command = command.trim_start();
        let (text, mut items) = command.split_once('<').unwrap_or((command, ""));
        bytes.extend_from_slice(text.strip_suffix(' ').unwrap_or(text).as_bytes());
        bytes.push(b'\n');
        while let Some((item, rest)) = items.split_once('>') {
            bytes.extend_from_slice(&script_item(item));
            items = rest.split_once('<').map_or("", |(_, next)| next);
        }
    }
    bytes
}

fn script_item(item: &str) -> Vec<u8> {
    let (kind, arg) = item.split_once(' ').unwrap_or((item, ""));
    let sized = |body: &[u8]| [&size(body.len() as i32)[..], body].concat();
    match kind {
        "size" => size(arg.parse().unwrap()).to_vec(),
        "body" => sized(arg.as_bytes()),
        "bytes" => sized(&vec![b'x'; arg.parse().unwrap()]),
        "json" => {
            let mut json = serde_json::to_value(IdentifyRequest::default()).unwrap();
            for field in arg.split_whitespace() {
                let (key, value) = field.split_once('=').unwrap();
                json[key] = serde_json::from_str(value).unwrap();
            }
            sized(&serde_json::to_vec(&json).unwrap())
        }
        other => panic!("unknown script item <{other}>"),
    }
}

/// Cases named by their scripts.
pub fn scripts(topic: &str, texts: &[&str]) -> Vec<(String, Vec<u8>)> {
    texts
        .iter()
        .map(|text| (text.replace("$t", "<t>"), script(topic, text)))
        .collect()
}

// ---- comparison ---------------------------------------------------------------------------

/// One input and what each server answered.
pub struct Row {
    pub case: String,
    pub real: Vec<String>,
    pub test: Vec<String>,
}

/// Runs every case on both targets (cases concurrently) and returns what each answered.
pub async fn compare(targets: &[Target; 2], cases: &[(String, Vec<u8>)]) -> Vec<Row> {
    let runs = cases.iter().map(|(case, bytes)| async move {
        let (real, test) = tokio::join!(run(&targets[0].tcp, bytes), run(&targets[1].tcp, bytes));
        Row {
            case: case.clone(),
            real,
            test,
        }
    });
    futures_util::future::join_all(runs).await
}

/// Prints every row as a table, then fails listing the rows where the servers differ.
pub fn assert_same(rows: &[Row]) {
    let table = table(rows);
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
    }
    let differing: Vec<&Row> = rows.iter().filter(|r| r.real != r.test).collect();
    assert!(
        differing.is_empty(),
        "the test nsqd differs from the real nsqd:\n{}",
        self::table_of(&differing)
    );
}

/// The rows as a markdown table: input | real nsqd | test nsqd.
pub fn table(rows: &[Row]) -> String {
    table_of(&rows.iter().collect::<Vec<_>>())
}

fn table_of(rows: &[&Row]) -> String {
    let mut out = String::from("| input | real nsqd | test nsqd | same |\n|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.case,
            row.real.join(" ⏎ "),
            row.test.join(" ⏎ "),
            if row.real == row.test { "yes" } else { "NO" }
        );
    }
    out
}

// ---- public API ---------------------------------------------------------------------------

/// Records the events (or anything else) an actor sends to a recipient.
pub struct Recorder<M>(Arc<Mutex<Vec<M>>>);

impl<M> Clone for Recorder<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M> Default for Recorder<M> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<M> Actor for Recorder<M>
where
    M: Unpin + 'static,
{
    type Context = Context<Self>;
}

impl<M> Handler<M> for Recorder<M>
where
    M: Message<Result = ()> + Send + Unpin + 'static,
{
    type Result = ();
    fn handle(&mut self, event: M, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(event);
    }
}

impl<M> Recorder<M>
where
    M: Message<Result = ()> + Send + Clone + Unpin + 'static,
{
    pub fn recipient(&self) -> Recipient<M> {
        self.clone().start().recipient()
    }

    pub fn all(&self) -> Vec<M> {
        self.0.lock().unwrap().clone()
    }
}

/// Polls until `pred` holds or [`WAIT`] passes.
pub async fn eventually(mut pred: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if pred() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    pred()
}

/// A topic name unique to this run, deleted from the real nsqd afterwards.
pub fn topic(targets: &[Target; 2], prefix: &str) -> String {
    let name = unique(prefix);
    for target in targets {
        target.topic(&name);
    }
    name
}

/// Runs a scripted exchange (given the TCP address) on both servers at once.
pub async fn both<F, Fut>(targets: &[Target; 2], case: &str, script: F) -> Row
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let (real, test) = tokio::join!(
        script(targets[0].tcp.clone()),
        script(targets[1].tcp.clone())
    );
    Row {
        case: case.to_owned(),
        real,
        test,
    }
}

/// Publishes one message over its own connection and waits for the `OK`.
pub async fn publish(addr: &str, topic: &str, body: &str) {
    let mut wire = Wire::v2(addr).await;
    wire.send(&with_body(&format!("PUB {topic}"), body.as_bytes()))
        .await;
    assert_eq!(render(&wire.frame().await), "OK", "PUB {topic} on {addr}");
}

/// The id of a message frame.
pub fn message_id(frame: &Frame) -> actix_nsq::protocol::MessageId {
    match frame {
        Frame::Message(m) => m.id,
        other => panic!("expected a message, got {other:?}"),
    }
}
