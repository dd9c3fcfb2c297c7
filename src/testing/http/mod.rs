//! A small HTTP/1.1 server for the test nsqd and nsqlookupd, and nsq's ways of answering.
//!
//! Hand-rolled on tokio (the crate has no HTTP server dependency): keep-alive,
//! `Content-Length` and `chunked` request bodies, `Expect: 100-continue`, bounded heads and
//! bodies, 400 on garbage, optional HTTPS with the test certificate. Handlers are synchronous
//! and answer at once; a [`Response`] can ask to be delayed or to hang up instead, which is
//! how the servers inject faults.
//!
//! nsq's answers (`internal/http_api/api_response.go`) come in three shapes, built by
//! [`Reply::v1`], [`Reply::legacy`] and [`Reply::plain`].

mod parse;
mod server;

use std::time::Duration;

use bytes::Bytes;

pub(crate) use parse::{parse_query, Query};
pub(crate) use server::{serve, ServerConfig};

use parse::Head;

/// One request, its body read in full.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path without the query.
    pub(crate) path: String,
    /// The raw query string (after `?`), empty when there is none.
    pub(crate) raw_query: String,
    pub(crate) body: Bytes,
}

impl Request {
    fn from_head(head: &Head) -> Self {
        let (path, raw_query) = head
            .target
            .split_once('?')
            .unwrap_or((head.target.as_str(), ""));
        Self {
            method: head.method.clone(),
            path: path.to_owned(),
            raw_query: raw_query.to_owned(),
            body: Bytes::new(),
        }
    }

    /// The query as Go's `url.ParseQuery` reads it; `None` when it is malformed.
    pub(crate) fn query(&self) -> Option<Query> {
        parse_query(&self.raw_query)
    }

    /// The request line, for the servers' request logs.
    pub(crate) fn line(&self) -> String {
        if self.raw_query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.raw_query)
        }
    }
}

/// An answer; `Content-Length` is added when it is written.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
    /// Wait this long before writing (a slow server).
    pub(crate) delay: Duration,
    /// Close the connection instead of answering.
    pub(crate) hang_up: bool,
}

impl Response {
    pub(crate) fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            hang_up: false,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub(crate) fn hang_up() -> Self {
        Self {
            hang_up: true,
            ..Self::new(0, Bytes::new())
        }
    }
}

/// What a server does with requests.
pub(crate) trait Service: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Response;

    /// The answer to a request whose body is over the server's bound; it was not read, and
    /// the connection closes after the answer.
    fn too_large(&self, _request: &Request) -> Response {
        Response::new(413, "Request Entity Too Large")
    }
}

/// What an nsq handler returns: data, or an error status with its text (`http_api.Err`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// No data: an empty body.
    Empty,
    /// Text written as it is (`"OK"` from `/pub`).
    Text(String),
    /// A value sent as JSON.
    Json(serde_json::Value),
    /// An error: status and nsq's message.
    Err(u16, String),
}

const JSON: &str = "application/json; charset=utf-8";

impl Reply {
    pub(crate) fn err(status: u16, message: impl Into<String>) -> Self {
        Reply::Err(status, message.into())
    }

    /// `http_api.V1`: data as it is, errors as `{"message": ...}`, and the header that says
    /// the answer is not wrapped.
    pub(crate) fn v1(self) -> Response {
        let response = match self {
            Reply::Empty => Response::new(200, Bytes::new()),
            Reply::Text(text) => Response::new(200, text),
            Reply::Json(value) => {
                Response::new(200, value.to_string()).header("Content-Type", JSON)
            }
            Reply::Err(status, message) => {
                let body = serde_json::json!({ "message": message }).to_string();
                Response::new(status, body).header("Content-Type", JSON)
            }
        };
        response.header("X-NSQ-Content-Type", "nsq; version=1.0")
    }

    /// The pre-1.0 `http_api.Respond`: `{"status_code", "status_txt", "data"}` for data and
    /// errors alike, with the status repeated as the HTTP status; text as it is.
    pub(crate) fn legacy(self) -> Response {
        let (status, text, data) = match self {
            Reply::Text(text) => return Response::new(200, text),
            Reply::Empty => (200, "OK".to_owned(), serde_json::Value::Null),
            Reply::Json(value) => (200, "OK".to_owned(), value),
            Reply::Err(status, message) => (status, message, serde_json::Value::Null),
        };
        let body = serde_json::json!({ "status_code": status, "status_txt": text, "data": data });
        Response::new(status, body.to_string()).header("Content-Type", JSON)
    }

    /// `http_api.PlainText` (`/ping`): the text or error text, no nsq header.
    pub(crate) fn plain(self) -> Response {
        match self {
            Reply::Empty => Response::new(200, Bytes::new()),
            Reply::Text(text) => Response::new(200, text),
            Reply::Json(value) => Response::new(200, value.to_string()),
            Reply::Err(status, message) => Response::new(status, message),
        }
        .header("Content-Type", "text/plain; charset=utf-8")
    }
}

/// The HTTPS acceptor with the test server certificate (`src/testing/certs`).
pub(crate) fn test_tls_acceptor() -> Result<tokio_rustls::TlsAcceptor, crate::Error> {
    crate::transport::server_acceptor(
        include_bytes!("../certs/server.pem"),
        include_bytes!("../certs/server.key"),
        None,
    )
}

#[cfg(test)]
mod tests;
