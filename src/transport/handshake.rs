//! The client side of nsqd's connection handshake.
//!
//! The order is nsqd's (`nsqd/protocol_v2.go`, `IDENTIFY` and `AUTH`):
//!
//! 1. the magic `"  V2"` and IDENTIFY; nsqd answers with JSON (or `OK` without feature
//!    negotiation);
//! 2. if that reply says `tls_v1`, the TLS handshake, then an `OK` read through TLS;
//! 3. if it says `snappy` or `deflate`, the compressed stream, then an `OK` read through it;
//! 4. AUTH, only when it says `auth_required` (AUTH to an nsqd without auth is a fatal
//!    `E_AUTH_DISABLED`);
//! 5. SUB, for a consumer.
//!
//! Bytes read past a reply belong to the next layer: they are handed to it through
//! [`Rewind`], and those past the last reply go back to the caller in
//! [`Established::read_buf`].

use std::{fmt, io, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::codec::Decoder;

use super::{BoxedStream, DeflateStream, Dialer, Rewind, SnappyStream, TlsConfig};
use crate::{
    error::{Error, ProtocolError, Result},
    protocol::{
        AuthResponse, Channel, Command, Frame, IdentifyRequest, IdentifyResponse, NsqCodec,
        Response, Topic, MAGIC_V2,
    },
};

/// How long dialling plus the whole handshake may take in the transport tests.
#[cfg(test)]
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much to read from the socket at once during the handshake.
const READ_SIZE: usize = 4096;

/// A secret sent to nsqd with AUTH. Its `Debug` prints `***`, so it can sit in a logged
/// configuration.
///
/// ```
/// let secret = actix_nsq::Secret::new("s3cr3t");
/// assert_eq!(format!("{secret:?}"), "***");
/// ```
#[derive(Clone)]
pub struct Secret {
    secret: Bytes,
}

impl Secret {
    /// Wraps the secret as given to nsqd's auth server (`--auth-http-address`).
    pub fn new(secret: impl Into<Bytes>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    pub(crate) fn expose(&self) -> &Bytes {
        &self.secret
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self::new(secret.to_owned())
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What the handshake sends and how long it may take.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeConfig {
    /// Sent as is, except `tls_v1`, which follows `tls`.
    pub(crate) identify: IdentifyRequest,
    /// Upgrade to TLS; the handshake fails when nsqd does not offer it.
    pub(crate) tls: Option<TlsConfig>,
    /// Sent with AUTH when nsqd requires it.
    pub(crate) auth_secret: Option<Secret>,
    /// Subscribe at the end of the handshake.
    pub(crate) subscribe: Option<(Topic, Channel)>,
    /// Bounds dialling plus the whole handshake.
    pub(crate) timeout: Duration,
    /// The largest frame accepted from nsqd.
    pub(crate) max_frame_len: usize,
    /// Opens the stream instead of a TCP dial (`testing::MockNsqd`); `None` dials TCP.
    pub(crate) dialer: Option<Dialer>,
}

#[cfg(test)]
impl HandshakeConfig {
    /// A plain handshake: no TLS, no AUTH secret, no SUB, default timeout and frame bound.
    pub(crate) fn new(identify: IdentifyRequest) -> Self {
        Self {
            identify,
            tls: None,
            auth_secret: None,
            subscribe: None,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_len: crate::protocol::DEFAULT_MAX_FRAME_LEN,
            dialer: None,
        }
    }
}

/// The compression a connection runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Uncompressed.
    None,
    /// Snappy, framing format.
    Snappy,
    /// Raw deflate at this level (what nsqd granted: at most its `--max-deflate-level`).
    Deflate {
        /// 1 (fastest) to 9 (smallest).
        level: u32,
    },
}

/// What a connection's handshake settled with nsqd.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated {
    /// nsqd's IDENTIFY reply (the legacy defaults when it answered a plain `OK`).
    pub identify: IdentifyResponse,
    /// nsqd's AUTH reply, when it required AUTH.
    pub auth: Option<AuthResponse>,
    /// The connection runs over TLS.
    pub tls: bool,
    /// The compression in effect.
    pub compression: Compression,
}

/// A connection that finished its handshake.
pub(crate) struct Established {
    /// The stream with every negotiated layer.
    pub(crate) stream: BoxedStream,
    /// Bytes already read past the last reply; the caller's frame reader starts with them.
    pub(crate) read_buf: BytesMut,
    /// What was negotiated.
    pub(crate) negotiated: Negotiated,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("read_buf", &self.read_buf.len())
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}

/// Resolves and dials `addr` (`host:port`, `[v6]:port`) with `TCP_NODELAY` (or opens the
/// stream with `cfg.dialer`), then runs the handshake, all within `cfg.timeout`.
///
/// # Errors
///
/// [`Error::Timeout`]`("handshake")` when the deadline passes; otherwise as [`handshake`].
pub(crate) async fn connect(addr: &str, cfg: &HandshakeConfig) -> Result<Established> {
    let host = host_of(addr)?;
    let dial_and_handshake = async {
        let stream: BoxedStream = match &cfg.dialer {
            Some(dialer) => dialer.dial(addr).await?,
            None => Box::new(dial(addr).await?),
        };
        run(stream, host, cfg).await
    };
    match tokio::time::timeout(cfg.timeout, dial_and_handshake).await {
        Err(_) => Err(Error::Timeout("handshake")),
        // The codec spots "HTTP" where a frame size should be; only here is the address known.
        Ok(Err(Error::Protocol(ProtocolError::LooksLikeHttp))) => {
            Err(ProtocolError::HttpPort { addr: addr.into() }.into())
        }
        Ok(result) => result,
    }
}

/// Runs the handshake over an established stream to `host` (the name TLS verifies unless
/// the [`TlsConfig`] overrides it), within `cfg.timeout`.
///
/// # Errors
///
/// [`Error::Server`] for an `E_*` reply, [`Error::Tls`] when TLS was asked for and nsqd
/// does not offer it or the TLS handshake fails, [`Error::Auth`] when nsqd requires AUTH and
/// no secret is configured, [`Error::Protocol`] for a reply out of place, [`Error::Io`],
/// [`Error::Timeout`]`("handshake")`.
// Over any stream: the transport tests use it with in-memory pipes; `connect` dials TCP.
#[cfg(test)]
pub(crate) async fn handshake<S: super::AsyncStream>(
    stream: S,
    host: &str,
    cfg: &HandshakeConfig,
) -> Result<Established> {
    tokio::time::timeout(cfg.timeout, run(Box::new(stream), host, cfg))
        .await
        .map_err(|_| Error::Timeout("handshake"))?
}

fn host_of(addr: &str) -> Result<&str> {
    let bad = || Error::config("addr", format!("{addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

async fn dial(addr: &str) -> Result<TcpStream> {
    let mut last_error = None;
    for socket_addr in tokio::net::lookup_host(addr).await? {
        match TcpStream::connect(socket_addr).await {
            Ok(stream) => {
                // The connection writes each batch of commands and flushes; without
                // TCP_NODELAY, Nagle would hold a lone FIN or RDY back for an ACK.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => {
                tracing::debug!(nsqd = %addr, %socket_addr, error = %e, "connect failed");
                last_error = Some(e);
            }
        }
    }
    let e = last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolved to no address"),
        )
    });
    Err(e.into())
}

async fn run(stream: BoxedStream, host: &str, cfg: &HandshakeConfig) -> Result<Established> {
    let codec = NsqCodec::new(cfg.max_frame_len);
    let mut wire = Wire::new(stream, codec.clone());

    let mut hello = BytesMut::from(&MAGIC_V2[..]);
    Command::Identify(Box::new(identify_request(cfg)?)).encode(&mut hello);
    wire.write(&hello).await?;
    let identify = match wire.reply("IDENTIFY").await? {
        Response::Ok => IdentifyResponse::parse(b"OK")?,
        Response::Data(data) => parse_identify(&data)?,
        other => return Err(unexpected("IDENTIFY", &other)),
    };
    tracing::debug!(
        nsqd = %host, version = %identify.version, tls = identify.tls_v1, snappy = identify.snappy,
        deflate = identify.deflate, auth_required = identify.auth_required, "IDENTIFY answered"
    );

    let tls = match (&cfg.tls, identify.tls_v1) {
        (Some(_), false) => {
            // go-nsq goes on in plaintext here; a client that asked for TLS must not.
            return Err(Error::tls(format!(
                "server does not offer TLS: nsqd at {host} answered IDENTIFY with tls_v1 false \
                 (is it running with --tls-cert and --tls-key?)"
            )));
        }
        (None, true) => {
            return Err(ProtocolError::Handshake("nsqd upgrades to TLS unasked".into()).into());
        }
        (Some(tls), true) => {
            wire = upgrade_tls(wire, tls, host).await?;
            true
        }
        (None, false) => false,
    };

    let compression = match (identify.snappy, identify.deflate) {
        (true, true) => {
            return Err(
                ProtocolError::Handshake("nsqd enabled both snappy and deflate".into()).into(),
            );
        }
        (true, false) => {
            wire = wire.upgrade(|s| Box::new(SnappyStream::new(s)));
            wire.expect_ok("snappy upgrade").await?;
            Compression::Snappy
        }
        (false, true) => {
            let level = deflate_level(&identify, &cfg.identify);
            wire = wire.upgrade(|s| Box::new(DeflateStream::new(s, level)));
            wire.expect_ok("deflate upgrade").await?;
            Compression::Deflate { level }
        }
        (false, false) => Compression::None,
    };

    let auth = if identify.auth_required {
        Some(authenticate(&mut wire, cfg).await?)
    } else {
        None
    };

    if let Some((topic, channel)) = &cfg.subscribe {
        wire.write_command(&Command::Sub {
            topic: topic.clone(),
            channel: channel.clone(),
        })
        .await?;
        wire.expect_ok("SUB").await?;
    }

    tracing::debug!(nsqd = %host, tls, ?compression, auth = auth.is_some(), "handshake done");
    Ok(Established {
        stream: wire.stream,
        read_buf: wire.buf,
        negotiated: Negotiated {
            identify,
            auth,
            tls,
            compression,
        },
    })
}

/// nsqd answers IDENTIFY with a JSON object (`nsqd/protocol_v2.go` `IDENTIFY`, an
/// `identifyResponse` struct) when features are negotiated. serde reads a JSON array into a
/// struct positionally, so `[]` would pass as "all defaults"; anything but an object is not
/// nsqd and is refused.
fn parse_identify(data: &[u8]) -> Result<IdentifyResponse> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        let text: String = String::from_utf8_lossy(data).chars().take(100).collect();
        return Err(ProtocolError::IdentifyNotObject(text).into());
    }
    IdentifyResponse::parse(data)
}

fn identify_request(cfg: &HandshakeConfig) -> Result<IdentifyRequest> {
    let mut identify = cfg.identify.clone();
    identify.tls_v1 = cfg.tls.is_some();
    if identify.tls_v1 {
        // nsqd ignores tls_v1 unless features are negotiated, and would answer a bare `OK`.
        identify.feature_negotiation = true;
    }
    identify.validate()?;
    Ok(identify)
}

/// The level nsqd granted (it clamps the request to `--max-deflate-level`), else the one
/// asked for.
fn deflate_level(granted: &IdentifyResponse, asked: &IdentifyRequest) -> u32 {
    [granted.deflate_level, asked.deflate_level]
        .into_iter()
        .find_map(|level| u32::try_from(level).ok().filter(|l| (1..=9).contains(l)))
        .unwrap_or(6)
}

async fn upgrade_tls(wire: Wire, tls: &TlsConfig, host: &str) -> Result<Wire> {
    let connector = tls.connector()?;
    let name = tls.server_name_for(host)?;
    let codec = wire.codec.clone();
    let stream = connector
        .connect(name, wire.into_stream())
        .await
        .map_err(|e| Error::tls_caused(format_args!("handshake with nsqd at {host} failed"), e))?;
    let mut wire = Wire::new(Box::new(stream), codec);
    match wire.expect_ok("TLS upgrade").await {
        // With TLS 1.3 the server judges the client certificate after the client finished:
        // a refusal arrives as an alert on this first read.
        Err(Error::Io(e)) => Err(Error::tls_caused(
            format_args!("first read over TLS from {host}"),
            e,
        )),
        other => other,
    }?;
    Ok(wire)
}

async fn authenticate(wire: &mut Wire, cfg: &HandshakeConfig) -> Result<AuthResponse> {
    let secret = cfg
        .auth_secret
        .as_ref()
        .ok_or_else(|| Error::Auth("server requires AUTH and no secret is configured".into()))?;
    if secret.expose().is_empty() {
        // nsqd refuses an empty body with a fatal E_BAD_BODY.
        return Err(Error::config("auth_secret", "is empty"));
    }
    wire.write_command(&Command::Auth(secret.expose().clone()))
        .await?;
    match wire.reply("AUTH").await? {
        Response::Data(data) => AuthResponse::parse(&data),
        other => Err(unexpected("AUTH", &other)),
    }
}

fn unexpected(step: &str, response: &Response) -> Error {
    let text = String::from_utf8_lossy(response.as_bytes());
    ProtocolError::Handshake(format!("{step} answered {text:?}")).into()
}

/// The stream of one handshake step with the bytes read from it so far.
struct Wire {
    stream: BoxedStream,
    buf: BytesMut,
    codec: NsqCodec,
}

impl Wire {
    fn new(stream: BoxedStream, codec: NsqCodec) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            codec,
        }
    }

    /// The stream for the next layer, handing it whatever was read past the last reply.
    fn into_stream(self) -> BoxedStream {
        if self.buf.is_empty() {
            self.stream
        } else {
            Box::new(Rewind::new(self.buf, self.stream))
        }
    }

    fn upgrade(self, wrap: impl FnOnce(BoxedStream) -> BoxedStream) -> Self {
        let codec = self.codec.clone();
        Self::new(wrap(self.into_stream()), codec)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn write_command(&mut self, command: &Command) -> Result<()> {
        let mut bytes = BytesMut::new();
        command.encode(&mut bytes);
        self.write(&bytes).await
    }

    /// The next response, answering heartbeats on the way: nsqd drops a client that leaves
    /// two unanswered, handshake or not.
    async fn reply(&mut self, step: &str) -> Result<Response> {
        loop {
            while let Some(frame) = self.codec.decode(&mut self.buf)? {
                match frame {
                    Frame::Response(Response::Heartbeat) => {
                        tracing::trace!(step, "heartbeat during the handshake");
                        self.write_command(&Command::Nop).await?;
                    }
                    Frame::Response(response) => return Ok(response),
                    Frame::Error(e) => return Err(Error::Server(e)),
                    Frame::Message(_) => {
                        return Err(ProtocolError::Handshake(format!(
                            "a message arrived before the {step} reply"
                        ))
                        .into());
                    }
                }
            }
            self.buf.reserve(READ_SIZE);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                if !self.buf.is_empty() {
                    return Err(ProtocolError::Truncated(self.buf.len()).into());
                }
                let message = format!("nsqd closed the connection before the {step} reply");
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message).into());
            }
        }
    }

    async fn expect_ok(&mut self, step: &str) -> Result<()> {
        match self.reply(step).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(step, &other)),
        }
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
