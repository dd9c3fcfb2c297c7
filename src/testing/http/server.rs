//! The accept loop and one connection: requests in order, keep-alive, bounded heads and bodies,
//! 400 on garbage. Dropping the [`serve`] future drops every connection with it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use super::{
    parse::{parse_chunked, parse_head, Framing, Refusal},
    Request, Response, Service,
};

/// Bounds and options for one server.
#[derive(Clone)]
pub(crate) struct ServerConfig {
    /// Request line plus headers.
    pub(crate) max_head: usize,
    /// Request body; larger ones get [`Service::too_large`] without being read.
    pub(crate) max_body: usize,
    /// A connection idle this long between requests is closed.
    pub(crate) idle_timeout: Duration,
    /// Serve HTTPS.
    pub(crate) tls: Option<TlsAcceptor>,
}

impl ServerConfig {
    pub(crate) fn new(max_body: usize) -> Self {
        Self {
            max_head: 64 * 1024,
            max_body,
            idle_timeout: Duration::from_secs(120),
            tls: None,
        }
    }
}

/// Serves `listener` until the future is dropped.
pub(crate) async fn serve(listener: TcpListener, service: Arc<dyn Service>, config: ServerConfig) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(accept(stream, peer, service.clone(), config.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<dyn Service>,
    config: ServerConfig,
) {
    match config.tls.clone() {
        None => serve_connection(stream, peer, service, config).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(config.idle_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => serve_connection(tls, peer, service, config).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "https handshake failed"),
                Err(_) => tracing::debug!(%peer, "https handshake timed out"),
            }
        }
    }
}

/// Reads more bytes; false at end of stream, on an error, or after the idle timeout.
async fn read_more<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, idle: Duration) -> bool {
    buf.reserve(8 * 1024);
    matches!(
        tokio::time::timeout(idle, io.read_buf(buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

async fn serve_connection<S>(
    mut io: S,
    peer: SocketAddr,
    service: Arc<dyn Service>,
    config: ServerConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let (head, used) = loop {
            match parse_head(&buf, config.max_head) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {
                    if !read_more(&mut io, &mut buf, config.idle_timeout).await {
                        return;
                    }
                }
                Err(refusal) => return refuse(&mut io, refusal, None).await,
            }
        };
        buf.advance(used);
        let request = Request::from_head(&head);
        let framing = match head.framing() {
            Ok(framing) => framing,
            Err(refusal) => return refuse(&mut io, refusal, Some((&*service, &request))).await,
        };
        if let Framing::Length(n) = framing {
            if n > config.max_body {
                let refusal = Refusal::BodyTooLarge;
                return refuse(&mut io, refusal, Some((&*service, &request))).await;
            }
        }
        if head.expects_continue()
            && io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = loop {
            let parsed = match framing {
                Framing::Length(n) => Ok((buf.len() >= n).then(|| (buf.split_to(n).freeze(), 0))),
                Framing::Chunked => parse_chunked(&buf, config.max_body),
            };
            match parsed {
                Ok(Some((body, used))) => {
                    buf.advance(used);
                    break body;
                }
                Ok(None) => {
                    if !read_more(&mut io, &mut buf, config.idle_timeout).await {
                        return;
                    }
                }
                Err(refusal) => return refuse(&mut io, refusal, Some((&*service, &request))).await,
            }
        };
        let request = Request { body, ..request };
        let keep_alive = head.keep_alive();
        tracing::debug!(%peer, method = %request.method, path = %request.path, "http request");
        let response = service.handle(request);
        if !response.delay.is_zero() {
            tokio::time::sleep(response.delay).await;
        }
        if response.hang_up {
            return;
        }
        if write(&mut io, &response, keep_alive).await.is_err() || !keep_alive {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// Answers a request that is not served and closes the connection.
async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    refusal: Refusal,
    request: Option<(&dyn Service, &Request)>,
) {
    tracing::debug!(?refusal, "http request refused");
    // Go's net/http refuses a request it cannot read with a fixed text, no Content-Length,
    // and a close (net/http/server.go, `conn.serve`: `errorHeaders` and "400 Bad Request"),
    // which is what nsqd answers to a client that speaks "  V2" to its HTTP port.
    let raw = match (refusal, request) {
        (Refusal::BodyTooLarge, Some((service, request))) => {
            let _ = write(io, &service.too_large(request), false).await;
            let _ = io.shutdown().await;
            return;
        }
        (Refusal::BodyTooLarge, None) => go_refusal("413 Request Entity Too Large", None),
        (Refusal::HeadTooLarge, _) => go_refusal("431 Request Header Fields Too Large", None),
        (Refusal::UnsupportedEncoding, _) => {
            go_refusal("501 Not Implemented", Some("Unsupported transfer encoding"))
        }
        (Refusal::Bad(_), _) => go_refusal("400 Bad Request", None),
    };
    let _ = io.write_all(raw.as_bytes()).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// A refusal as Go's net/http writes it: status line, `errorHeaders`, and the body (the
/// status itself unless given).
pub(crate) fn go_refusal(status: &str, body: Option<&str>) -> String {
    const ERROR_HEADERS: &str =
        "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n";
    format!("HTTP/1.1 {status}{ERROR_HEADERS}{}", body.unwrap_or(status))
}

async fn write<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256 + response.body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
            response.status,
            reason(response.status),
            response.body.len()
        )
        .as_bytes(),
    );
    for (name, value) in &response.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&response.body);
    io.write_all(&out).await?;
    io.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
