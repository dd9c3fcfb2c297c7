//! The server over real sockets, spoken to byte by byte.

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use std::net::SocketAddr;

use super::*;

struct Echo;

impl Service for Echo {
    fn handle(&self, request: Request) -> Response {
        match request.path.as_str() {
            "/slow" => Response::new(200, "late").delayed(Duration::from_millis(50)),
            "/hangup" => Response::hang_up(),
            "/json" => Reply::Json(serde_json::json!({"a": 1})).v1(),
            "/err" => Reply::err(404, "TOPIC_NOT_FOUND").v1(),
            "/legacy" => Reply::err(404, "TOPIC_NOT_FOUND").legacy(),
            _ => {
                let query = request
                    .query()
                    .map(|q| q.get("x").unwrap_or("-").to_owned());
                let text = format!(
                    "{} {} x={} body={}",
                    request.method,
                    request.path,
                    query.as_deref().unwrap_or("BAD"),
                    String::from_utf8_lossy(&request.body)
                );
                Response::new(200, text)
            }
        }
    }

    fn too_large(&self, request: &Request) -> Response {
        Reply::err(413, format!("TOO_BIG {}", request.path)).v1()
    }
}

async fn start(max_body: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, Arc::new(Echo), ServerConfig::new(max_body)));
    addr
}

/// A client connection that keeps what it read past one response (pipelining).
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 1024];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Reads one response with a Content-Length body, or (Go's refusals) a body up to the
    /// close.
    async fn response(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                else {
                    assert!(head.contains("\r\nConnection: close"), "{head}");
                    let mut rest = Vec::new();
                    let _ = self.stream.read_to_end(&mut rest).await;
                    self.buf.extend_from_slice(&rest);
                    let body = String::from_utf8(self.buf[end + 4..].to_vec()).unwrap();
                    self.buf.clear();
                    return (head, body);
                };
                let len: usize = len.parse().unwrap();
                while self.buf.len() < end + 4 + len {
                    self.fill().await;
                }
                let rest = self.buf.split_off(end + 4 + len);
                let body = String::from_utf8(self.buf[end + 4..].to_vec()).unwrap();
                self.buf = rest;
                return (head, body);
            }
            self.fill().await;
        }
    }

    async fn closed(&mut self) -> bool {
        closed(&mut self.stream).await
    }
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
    matches!(read.await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn keep_alive_serves_requests_in_order() {
    let addr = start(1024).await;
    let mut s = Client::connect(addr).await;
    // Two requests in one write (pipelined), then a chunked one.
    s.stream
        .write_all(b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = s.response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "POST /a x=1 body=hi");
    assert_eq!(s.response().await.1, "GET /b x=- body=");
    s.stream
        .write_all(b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(s.response().await.1, "PUT /c x=- body=abc");
    s.stream
        .write_all(b"GET /d?x=%zz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = s.response().await;
    assert!(head.contains("Connection: close"));
    assert_eq!(body, "GET /d x=BAD body=");
    assert!(s.closed().await);
}

#[tokio::test]
async fn nsq_answer_shapes() {
    let addr = start(1024).await;
    let mut s = Client::connect(addr).await;
    s.stream
        .write_all(
            b"GET /json HTTP/1.1\r\n\r\nGET /err HTTP/1.1\r\n\r\nGET /legacy HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = s.response().await;
    assert!(
        head.contains("X-NSQ-Content-Type: nsq; version=1.0"),
        "{head}"
    );
    assert_eq!(body, r#"{"a":1}"#);
    let (head, body) = s.response().await;
    assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{head}");
    assert_eq!(body, r#"{"message":"TOPIC_NOT_FOUND"}"#);
    let (head, body) = s.response().await;
    assert!(!head.contains("X-NSQ-Content-Type"), "{head}");
    let legacy: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        legacy,
        serde_json::json!({"status_code": 404, "status_txt": "TOPIC_NOT_FOUND", "data": null})
    );
}

#[tokio::test]
async fn garbage_gets_400_and_a_close() {
    let addr = start(1024).await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"HELLO\r\n\r\n",
        b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ] {
        let mut s = Client::connect(addr).await;
        s.stream.write_all(garbage).await.unwrap();
        let (head, _) = s.response().await;
        assert!(head.starts_with("HTTP/1.1 400 "), "{garbage:?}: {head}");
        assert!(s.closed().await);
    }
    let mut s = Client::connect(addr).await;
    s.stream
        .write_all(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
        .await
        .unwrap();
    assert!(s.response().await.0.starts_with("HTTP/1.1 501 "));
}

#[tokio::test]
async fn a_non_http_line_is_answered_as_go_net_http_does() {
    // What a client speaking nsq's TCP protocol sends to nsqd's HTTP port.
    let addr = start(1024).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"  V2IDENTIFY\n\x00\x00\x00\x02{}")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    read.await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\n\r\n400 Bad Request"
    );
}

#[tokio::test]
async fn oversized_bodies_and_heads_are_refused_unread() {
    let addr = start(8).await;
    let mut s = Client::connect(addr).await;
    s.stream
        .write_all(b"POST /pub HTTP/1.1\r\nContent-Length: 9\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = s.response().await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    assert_eq!(body, r#"{"message":"TOO_BIG /pub"}"#);
    assert!(s.closed().await);
    let mut s = Client::connect(addr).await;
    s.stream
        .write_all(b"POST /mpub HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n")
        .await
        .unwrap();
    assert_eq!(s.response().await.1, r#"{"message":"TOO_BIG /mpub"}"#);
    let mut s = Client::connect(addr).await;
    let huge = format!("GET /x HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70 * 1024));
    // The server may close before reading everything; only its answer matters.
    let _ = s.stream.write_all(huge.as_bytes()).await;
    assert!(s.response().await.0.starts_with("HTTP/1.1 431 "));
}

#[tokio::test]
async fn delays_and_hang_ups() {
    let addr = start(8).await;
    let mut s = Client::connect(addr).await;
    s.stream
        .write_all(b"GET /slow HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(s.response().await.1, "late");
    s.stream
        .write_all(b"GET /hangup HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(s.closed().await);
}
