//! The server end of one connection, scripted step by step by the handshake tests.

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Decoder;

use super::{BoxedStream, Rewind};
use crate::protocol::{Frame, IdentifyRequest, Inbound, Response, ServerCodec, MAGIC_V2};

pub(crate) struct ServerConn {
    stream: BoxedStream,
    buf: BytesMut,
    codec: ServerCodec,
}

impl ServerConn {
    /// Accepts one client and checks its magic.
    pub(crate) async fn accept(listener: &TcpListener) -> Self {
        let (tcp, _) = listener.accept().await.unwrap();
        Self::start(Box::new(tcp)).await
    }

    /// Takes over a client's stream and checks its magic.
    pub(crate) async fn start(stream: BoxedStream) -> Self {
        let mut conn = Self {
            stream,
            buf: BytesMut::new(),
            codec: ServerCodec::default(),
        };
        assert_eq!(conn.raw(4).await, MAGIC_V2);
        conn
    }

    async fn fill(&mut self) -> usize {
        self.buf.reserve(4096);
        self.stream.read_buf(&mut self.buf).await.unwrap()
    }

    async fn next(&mut self) -> Inbound {
        loop {
            if let Some(item) = self.codec.decode(&mut self.buf).unwrap() {
                return item;
            }
            assert!(self.fill().await > 0, "client closed the connection");
        }
    }

    /// The next command line.
    pub(crate) async fn line(&mut self) -> Bytes {
        match self.next().await {
            Inbound::Line(line) => line,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    /// A size-prefixed body.
    pub(crate) async fn body(&mut self) -> Bytes {
        self.codec.read_body_size();
        let Inbound::BodySize(size) = self.next().await else {
            panic!("expected a size")
        };
        self.codec.read_body(usize::try_from(size).unwrap());
        let Inbound::Body(body) = self.next().await else {
            panic!("expected a body")
        };
        body
    }

    /// Reads IDENTIFY and its JSON body.
    pub(crate) async fn identify(&mut self) -> IdentifyRequest {
        assert_eq!(&self.line().await[..], b"IDENTIFY");
        serde_json::from_slice(&self.body().await).unwrap()
    }

    /// Exactly `n` raw bytes.
    pub(crate) async fn raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await > 0, "client closed the connection");
        }
        self.buf.split_to(n).to_vec()
    }

    /// Everything the client sends until it closes.
    pub(crate) async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        self.buf.split().to_vec()
    }

    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub(crate) async fn send(&mut self, frame: Frame) {
        self.send_bytes(&frame.to_bytes()).await;
    }

    pub(crate) async fn send_ok(&mut self) {
        self.send(Frame::Response(Response::Ok)).await;
    }

    pub(crate) async fn send_json(&mut self, json: serde_json::Value) {
        let data = Bytes::from(serde_json::to_vec(&json).unwrap());
        self.send(Frame::Response(Response::Data(data))).await;
    }

    /// Wraps the stream in another layer, which first reads what was already buffered.
    pub(crate) fn upgrade(self, wrap: impl FnOnce(BoxedStream) -> BoxedStream) -> Self {
        let base: BoxedStream = Box::new(Rewind::new(self.buf, self.stream));
        Self {
            stream: wrap(base),
            buf: BytesMut::new(),
            codec: self.codec,
        }
    }

    pub(crate) async fn upgrade_tls(self, acceptor: &TlsAcceptor) -> std::io::Result<Self> {
        let base = Rewind::new(self.buf, self.stream);
        let tls = acceptor.accept(base).await?;
        Ok(Self {
            stream: Box::new(tls),
            buf: BytesMut::new(),
            codec: self.codec,
        })
    }
}

/// A listener on an ephemeral local port and its `host:port`.
pub(crate) async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}
