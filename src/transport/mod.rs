//! STUB (replaced by the transport branch): the API the connection actor builds against.
#![allow(missing_docs, dead_code, unreachable_pub, clippy::todo)]
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;
use crate::protocol::{AuthResponse, Channel, IdentifyRequest, IdentifyResponse, Topic};

pub(crate) trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}
pub(crate) type BoxedStream = Box<dyn AsyncStream>;

#[derive(Clone, Debug, Default)]
pub struct TlsConfig {}

#[derive(Clone)]
pub struct Secret(pub(crate) String);
impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn new(s: String) -> Self {
        Self(s)
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    Deflate { level: u32 },
}

#[derive(Debug, Clone)]
pub struct Negotiated {
    pub identify: IdentifyResponse,
    pub auth: Option<AuthResponse>,
    pub tls: bool,
    pub compression: Compression,
}

pub(crate) struct HandshakeConfig {
    pub identify: IdentifyRequest,
    pub tls: Option<TlsConfig>,
    pub auth_secret: Option<Secret>,
    pub subscribe: Option<(Topic, Channel)>,
    pub timeout: Duration,
    pub max_frame_len: usize,
}

pub(crate) struct Established {
    pub stream: BoxedStream,
    pub read_buf: BytesMut,
    pub negotiated: Negotiated,
}

pub(crate) async fn connect(_addr: &str, _cfg: &HandshakeConfig) -> Result<Established, Error> {
    todo!()
}

pub(crate) fn default_http_tls() -> Result<std::sync::Arc<rustls::ClientConfig>, Error> {
    todo!()
}
