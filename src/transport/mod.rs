//! The transport layer: a socket becomes a byte stream, and the handshake upgrades it.
//!
//! Stream wrappers ([`Rewind`], TLS, [`SnappyStream`], [`DeflateStream`]) know nothing about
//! frames and work on either end of a connection, so the in-process test nsqd uses them too.
//! The handshake speaks frames through `crate::protocol` and upgrades in nsqd's order: TLS,
//! then snappy or deflate (`nsqd/protocol_v2.go`, `IDENTIFY`).

// Tests may unwrap (house rules); the non-test build of this module is still linted for it.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod crc32c;
mod deflate;
mod dial;
#[cfg(test)]
mod fake_nsqd;
mod handshake;
mod io_util;
mod rewind;
mod snappy;
#[cfg(test)]
mod test_io;
mod tls;

use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use dial::Dialer;
pub(crate) use handshake::{connect, Established, HandshakeConfig};
pub use handshake::{Compression, Negotiated, Secret};
#[cfg(any(test, feature = "testing"))]
pub(crate) use tls::server_acceptor;
pub use tls::TlsConfig;

pub(crate) use deflate::DeflateStream;
pub(crate) use rewind::Rewind;
pub(crate) use snappy::SnappyStream;

/// A byte stream the connection can own: TCP, TLS over TCP, compression over either.
pub(crate) trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// The stream a finished handshake hands over, whatever layers it has.
pub(crate) type BoxedStream = Box<dyn AsyncStream>;
