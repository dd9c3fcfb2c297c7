//! A raw, blocking NSQ client for driving the test nsqd byte by byte, like nsqd's own
//! `protocol_v2_test.go` does with `net.Conn`, upgraded to TLS, snappy or deflate on demand
//! (see `layers.rs`).

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use actix_nsq::protocol::{
    Command, ErrorCode, Frame, Message, MessageId, NsqCodec, Response, Topic, MAGIC_V2,
};
use bytes::{BufMut, Bytes, BytesMut};
use rustls::ClientConnection;
use serde_json::{json, Value};
use tokio_util::codec::Decoder;

use crate::layers::{self, Layers};

/// Generous: assertions wait for events, never for a tight duration.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct Raw {
    stream: TcpStream,
    /// Frame bytes: what came out of the layers, not yet decoded.
    buf: BytesMut,
    codec: NsqCodec,
    pub(crate) layers: Layers,
}

/// What a read produced.
#[derive(Debug)]
pub(crate) enum Got {
    Frame(Frame),
    Eof,
    Nothing,
    /// A layer refused what arrived (a TLS alert, corrupt compression).
    Broken(String),
}

impl Raw {
    /// Connects and sends the magic.
    pub(crate) fn connect(addr: SocketAddr) -> Self {
        let mut raw = Self::connect_without_magic(addr);
        raw.send_bytes(MAGIC_V2);
        raw
    }

    pub(crate) fn connect_without_magic(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            codec: NsqCodec::default(),
            layers: Layers::default(),
        }
    }

    /// Sends frame bytes through the layers.
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) {
        let wire = self.layers.encode(bytes);
        self.stream.write_all(&wire).unwrap();
    }

    /// Sends bytes straight to the socket, past the layers.
    pub(crate) fn send_wire(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The TLS handshake, after an IDENTIFY reply that granted `tls_v1`.
    pub(crate) fn upgrade_tls(&mut self, client_cert: bool) -> Result<(), String> {
        self.finish_tls(layers::tls_client(client_cert))
    }

    /// Completes a TLS handshake whose ClientHello may already have been sent; bytes read
    /// past the last frame are the server's side of the handshake.
    pub(crate) fn finish_tls(&mut self, mut tls: ClientConnection) -> Result<(), String> {
        let leftover = self.buf.split();
        let mut leftover = &leftover[..];
        while !leftover.is_empty() {
            tls.read_tls(&mut leftover)
                .map_err(|e| format!("tls: {e}"))?;
            tls.process_new_packets().map_err(|e| format!("tls: {e}"))?;
        }
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut self.stream)
                .map_err(|e| format!("tls: {e}"))?;
        }
        // When the leftover held the server's whole flight, the handshake finished above
        // with our Finished still queued.
        while tls.wants_write() {
            tls.write_tls(&mut self.stream)
                .map_err(|e| format!("tls: {e}"))?;
        }
        let plain = layers::drain_plaintext(&mut tls)?;
        self.layers.tls = Some(tls);
        self.layers.decompress(&plain, &mut self.buf)
    }

    /// Snappy from here on; bytes already read past the last frame are snappy's.
    pub(crate) fn upgrade_snappy(&mut self) {
        let leftover = self.buf.split();
        self.layers.start_snappy();
        self.layers.decompress(&leftover, &mut self.buf).unwrap();
    }

    /// Deflate from here on; bytes already read past the last frame are deflate's.
    pub(crate) fn upgrade_deflate(&mut self) {
        let leftover = self.buf.split();
        self.layers.start_deflate();
        self.layers.decompress(&leftover, &mut self.buf).unwrap();
    }

    /// Reads from the socket, without decoding frames, until `done` holds for what was
    /// read. Before any upgrade that is the bytes as they came over the wire.
    pub(crate) fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.buf) {
            assert!(
                Instant::now() < deadline,
                "still waiting after {:?}",
                self.buf
            );
            match self.read_once(deadline) {
                Some(Ok(())) => {}
                other => panic!("got {other:?}, still waiting after {:?}", self.buf),
            }
        }
    }

    /// Bytes read past the last decoded frame.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Reads until the server closes the connection; returns what came meanwhile (through
    /// the layers), undecoded.
    pub(crate) fn read_to_eof(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "connection still open");
            match self.read_once(deadline) {
                Some(Ok(())) => {}
                Some(Err(e)) => panic!("{e}"),
                None => return self.buf.split().to_vec(),
            }
        }
    }

    /// One read from the socket through the layers before `deadline` (nothing read once it
    /// passed): `None` on EOF.
    fn read_once(&mut self, deadline: Instant) -> Option<Result<(), String>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Ok(()));
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => Some(self.layers.decode(&chunk[..n], &mut self.buf).map(|reply| {
                if !reply.is_empty() {
                    let _ = self.stream.write_all(&reply);
                }
            })),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Some(Ok(()))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    pub(crate) fn send(&mut self, command: &Command) {
        self.send_bytes(&command.to_bytes());
    }

    /// A command line, then optionally a body with its size.
    pub(crate) fn send_line(&mut self, line: &str, body: Option<&[u8]>) {
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(line.as_bytes());
        bytes.put_u8(b'\n');
        if let Some(body) = body {
            bytes.put_u32(body.len() as u32);
            bytes.extend_from_slice(body);
        }
        self.send_bytes(&bytes);
    }

    /// The next frame or EOF within `wait`; `Nothing` if neither came.
    pub(crate) fn read_within(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return Got::Frame(frame);
            }
            if Instant::now() >= deadline {
                return Got::Nothing;
            }
            match self.read_once(deadline) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Got::Broken(e),
                None => return Got::Eof,
            }
        }
    }

    /// The next frame, heartbeats included.
    pub(crate) fn frame(&mut self) -> Frame {
        match self.read_within(PATIENCE) {
            Got::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame that is not a heartbeat.
    pub(crate) fn next(&mut self) -> Frame {
        loop {
            match self.frame() {
                Frame::Response(Response::Heartbeat) => continue,
                frame => return frame,
            }
        }
    }

    pub(crate) fn expect_ok(&mut self) {
        assert_eq!(self.next(), Frame::Response(Response::Ok));
    }

    /// The next frame must be an error; returns its wire text (`E_CODE description`).
    pub(crate) fn error(&mut self) -> String {
        match self.next() {
            Frame::Error(e) => e.to_wire(),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    /// A fatal error: its text, then the server closes the connection.
    pub(crate) fn fatal(&mut self) -> String {
        let text = self.error();
        self.expect_closed();
        text
    }

    pub(crate) fn message(&mut self) -> Message {
        match self.next() {
            Frame::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub(crate) fn data(&mut self) -> Value {
        json_of(self.next())
    }

    /// Reads (skipping heartbeats) until the server closes the connection.
    pub(crate) fn expect_closed(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.read_within(deadline - Instant::now()) {
                Got::Eof => return,
                Got::Frame(Frame::Response(Response::Heartbeat)) => {}
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }
        panic!("connection still open");
    }

    /// No frame other than heartbeats arrives within `wait`, and the connection stays open.
    pub(crate) fn expect_quiet(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            match self.read_within(deadline.saturating_duration_since(Instant::now())) {
                Got::Nothing => return,
                Got::Frame(Frame::Response(Response::Heartbeat)) => {}
                other => panic!("expected nothing, got {other:?}"),
            }
        }
    }

    /// IDENTIFY with `client_id: "test"` and `feature_negotiation: true` plus `extra`, as
    /// nsqd's test helper does; returns the reply frame.
    pub(crate) fn identify_with(&mut self, extra: Value) -> Frame {
        let mut body = json!({"client_id": "test", "feature_negotiation": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.send_line("IDENTIFY", Some(&serde_json::to_vec(&body).unwrap()));
        self.next()
    }

    /// IDENTIFY with defaults; returns the negotiated JSON.
    pub(crate) fn identify(&mut self) -> Value {
        json_of(self.identify_with(json!({})))
    }

    pub(crate) fn sub(&mut self, topic: &str, channel: &str) {
        self.send_line(&format!("SUB {topic} {channel}"), None);
        self.expect_ok();
    }

    pub(crate) fn rdy(&mut self, count: u32) {
        self.send(&Command::Rdy(count));
    }

    pub(crate) fn fin(&mut self, id: MessageId) {
        self.send(&Command::Fin(id));
    }

    pub(crate) fn publish(&mut self, topic: &str, body: &[u8]) {
        let topic = Topic::new(topic).unwrap();
        let body = actix_nsq::protocol::Body::new(Bytes::copy_from_slice(body)).unwrap();
        self.send(&Command::Pub { topic, body });
    }
}

/// A consumer connection: IDENTIFY (with `extra`), SUB, RDY.
pub(crate) fn consumer(addr: SocketAddr, topic: &str, channel: &str, rdy: u32) -> Raw {
    let mut raw = Raw::connect(addr);
    raw.identify();
    raw.sub(topic, channel);
    if rdy > 0 {
        raw.rdy(rdy);
    }
    raw
}

/// The JSON of a response frame.
pub(crate) fn json_of(frame: Frame) -> Value {
    match frame {
        Frame::Response(Response::Data(data)) => serde_json::from_slice(&data).unwrap(),
        other => panic!("expected a JSON response, got {other:?}"),
    }
}

/// The code of an error text.
pub(crate) fn code(text: &str) -> ErrorCode {
    ErrorCode::parse(text.split(' ').next().unwrap())
}
