//! A raw, blocking NSQ client for driving the test nsqd byte by byte, like nsqd's own
//! `protocol_v2_test.go` does with `net.Conn`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use actix_nsq::protocol::{
    Command, ErrorCode, Frame, Message, MessageId, NsqCodec, Response, Topic, MAGIC_V2,
};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};
use tokio_util::codec::Decoder;

/// Generous: assertions wait for events, never for a tight duration.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    codec: NsqCodec,
}

/// What a read produced.
#[derive(Debug)]
pub(crate) enum Got {
    Frame(Frame),
    Eof,
    Nothing,
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
        }
    }

    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
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
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Nothing;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Got::Eof,
                Err(e) => panic!("read failed: {e}"),
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
