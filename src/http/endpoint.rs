//! What both HTTP clients share: the base URL, the awc client, one request with nsq's
//! content negotiation, and the mapping of every failure onto [`Error`].

use std::{fmt, io, sync::Arc, time::Duration};

use awc::error::{ConnectError, PayloadError, SendRequestError};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::lookup_response::{decode, decode_empty, error_message, ACCEPT_V1, CONTENT_TYPE_V1};
use crate::{
    error::Error,
    protocol::{Channel, Topic},
    transport::TlsConfig,
};

/// Settings both client builders carry.
#[derive(Clone)]
pub(crate) struct HttpSettings {
    pub(crate) timeout: Duration,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) max_response_size: usize,
    pub(crate) user_agent: String,
}

/// nsqadmin's `--http-client-request-timeout` default: nsq's own HTTP calls give up after 5 s.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Large enough for `/stats` of a busy nsqd with every client listed.
pub(crate) const DEFAULT_MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            tls: None,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            user_agent: concat!("actix-nsq/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            timeout,
            tls,
            max_response_size,
            user_agent,
        } = self;
        f.debug_struct("HttpSettings")
            .field("timeout", timeout)
            .field("tls", tls)
            .field("max_response_size", max_response_size)
            .field("user_agent", user_agent)
            .finish()
    }
}

impl HttpSettings {
    fn validate(&self) -> Result<(), Error> {
        if self.timeout.is_zero() {
            return Err(Error::config("timeout", "must be greater than zero"));
        }
        if self.max_response_size == 0 {
            return Err(Error::config(
                "max_response_size",
                "must be greater than zero",
            ));
        }
        if self.user_agent.contains(['\r', '\n']) {
            return Err(Error::config("user_agent", "must be one line"));
        }
        Ok(())
    }
}

/// The [`HttpSettings`] setters, written once for every client builder that keeps its
/// settings in a `settings` field: a macro rather than a trait, so that callers need no
/// import and each builder's rustdoc lists them as its own methods.
macro_rules! http_settings_setters {
    () => {
        /// Bound on each request, connecting included (default 5 s, nsqadmin's).
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.settings.timeout = timeout;
            self
        }

        /// TLS settings for `https://` addresses (default: verify against the webpki roots).
        pub fn tls(mut self, tls: $crate::TlsConfig) -> Self {
            self.settings.tls = Some(tls);
            self
        }

        /// The largest answer read (default 16 MiB); a larger one fails with
        /// [`Error::Http`](crate::Error::Http).
        pub fn max_response_size(mut self, bytes: usize) -> Self {
            self.settings.max_response_size = bytes;
            self
        }

        /// The `User-Agent` header (default `actix-nsq/<version>`).
        pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
            self.settings.user_agent = agent.into();
            self
        }
    };
}
pub(crate) use http_settings_setters;

/// Normalises an nsqd or nsqlookupd HTTP address: `http://` is added when there is no scheme,
/// a port is required, and a path prefix (a reverse proxy's) is kept without its trailing `/`.
pub(crate) fn base_url(addr: &str) -> Result<String, Error> {
    let bad = |reason: String| Error::config("base_url", reason);
    let addr = addr.trim();
    let (scheme, rest) = addr.split_once("://").unwrap_or(("http", addr));
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad(format!("{addr:?}: scheme must be http or https")));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) || path.contains(char::is_whitespace) {
        return Err(bad(format!(
            "{addr:?}: a base URL has no query or fragment"
        )));
    }
    crate::conn::validate_addr(authority).map_err(bad)?;
    Ok(format!(
        "{scheme}://{authority}{}",
        path.trim_end_matches('/')
    ))
}

/// `url` with any credentials in it (`http://user:password@host:4161`) replaced by `***`, for
/// Debug output, logs and events: the one place that decides what of a URL may be printed.
pub(crate) fn redact_credentials(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    match url[start..start + authority_len].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// Percent-encodes a query value: RFC 3986 unreserved characters pass, everything else is
/// escaped (`#` in `name#ephemeral` above all).
pub(crate) fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, part) in [key, value].into_iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in part.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// The HTTP methods nsq's APIs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
}

/// An answer of any status, its body read in full (within the size bound).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The server sent `X-NSQ-Content-Type: nsq; version=1.0`: the body is not wrapped.
    pub(crate) v1: bool,
    pub(crate) body: Bytes,
}

impl Answer {
    fn into_error(self) -> Error {
        Error::Http {
            status: self.status,
            message: error_message(&self.body),
        }
    }

    /// Decodes a JSON answer in either shape.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(&self.body, self.v1).map_err(|(status, message)| Error::Http {
            status: if status == 0 { self.status } else { status },
            message,
        })
    }

    /// Checks an answer without data.
    pub(crate) fn empty(&self) -> Result<(), Error> {
        decode_empty(&self.body, self.v1)
            .map_err(|(status, message)| Error::Http { status, message })
    }

    /// The body as text (`/ping`, `/stats` in text format).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One nsqd or nsqlookupd: where it is and the client that talks to it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    base: Arc<str>,
    client: awc::Client,
    settings: HttpSettings,
    /// What a timeout names: "nsqd HTTP request" or "nsqlookupd HTTP request".
    what: &'static str,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &redact_credentials(&self.base))
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(crate) fn new(
        addr: &str,
        settings: HttpSettings,
        what: &'static str,
    ) -> Result<Self, Error> {
        Self::at(base_url(addr)?, settings, what)
    }

    /// An endpoint at `base` (`scheme://authority[/prefix]`), which the caller has checked:
    /// the discoverer reads its addresses as go-nsq does (see
    /// [`lookup_url`](super::lookupd::lookup_url)), not as a base URL.
    pub(crate) fn at(
        base: String,
        settings: HttpSettings,
        what: &'static str,
    ) -> Result<Self, Error> {
        settings.validate()?;
        let mut connector = awc::Connector::new().timeout(settings.timeout);
        // Build TLS (and its root store, a few hundred KB) only for https endpoints.
        if base.starts_with("https://") {
            let tls = settings
                .tls
                .clone()
                .unwrap_or_default()
                .http_client_config()?;
            connector = connector.rustls_0_23(tls);
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(settings.timeout)
            .disable_redirects()
            .no_default_headers()
            .add_default_header(("User-Agent", settings.user_agent.as_str()))
            .add_default_header(("Accept", ACCEPT_V1))
            .finish();
        Ok(Self {
            base: base.into(),
            client,
            settings,
            what,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and reads the answer, whatever its status.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, Error> {
        let mut path = path.to_owned();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&encode_query(query));
        }
        self.send_to(method, &path, body, None).await
    }

    /// Sends one request to `path_and_query` (already encoded) below the base, with an
    /// `Authorization` header when one is given, and reads the answer, whatever its status.
    pub(crate) async fn send_to(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        authorization: Option<&str>,
    ) -> Result<Answer, Error> {
        let url = format!("{}{path_and_query}", self.base);
        let mut request = match method {
            Method::Get => self.client.get(&url),
            Method::Post => self.client.post(&url),
            Method::Put => self.client.put(&url),
        };
        if let Some(value) = authorization {
            request = request.insert_header(("Authorization", value));
        }
        let shown = redact_credentials(&url);
        let auth = authorization.is_some();
        tracing::debug!(url = %shown, ?method, body_len = body.len(), auth, "nsq http request");
        let sent = match method {
            Method::Get => request.send().await,
            Method::Post | Method::Put => request.send_body(body).await,
        };
        let mut response = sent.map_err(|e| self.send_error(e))?;
        let status = response.status().as_u16();
        let v1 = response
            .headers()
            .get("X-NSQ-Content-Type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == CONTENT_TYPE_V1);
        let max = self.settings.max_response_size;
        let body = response
            .body()
            .limit(max)
            .await
            .map_err(|e| self.payload_error(status, e))?;
        tracing::debug!(url = %shown, status, v1, body_len = body.len(), "nsq http answer");
        Ok(Answer { status, v1, body })
    }

    /// As [`send`](Self::send), with any status but 200 turned into [`Error::Http`] carrying
    /// nsq's message.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, Error> {
        let answer = self.send(method, path, query, body).await?;
        if answer.status != 200 {
            return Err(answer.into_error());
        }
        Ok(answer)
    }

    /// `POST path` with no body, any status but 200 an error: the admin calls of both APIs.
    pub(crate) async fn post(&self, path: &str, query: &[(&str, &str)]) -> Result<(), Error> {
        self.call(Method::Post, path, query, Bytes::new())
            .await?
            .empty()
    }

    /// `POST path?topic=`, the name checked before anything is sent.
    pub(crate) async fn post_topic(&self, path: &str, topic: &str) -> Result<(), Error> {
        let topic = Topic::new(topic)?;
        self.post(path, &[("topic", topic.as_str())]).await
    }

    /// `POST path?topic=&channel=`, both names checked before anything is sent.
    pub(crate) async fn post_channel(
        &self,
        path: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), Error> {
        let (topic, channel) = (Topic::new(topic)?, Channel::new(channel)?);
        self.post(
            path,
            &[("topic", topic.as_str()), ("channel", channel.as_str())],
        )
        .await
    }

    fn send_error(&self, e: SendRequestError) -> Error {
        match e {
            SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                Error::Timeout(self.what)
            }
            other => Error::Http {
                status: 0,
                message: other.to_string(),
            },
        }
    }

    fn payload_error(&self, status: u16, e: PayloadError) -> Error {
        match e {
            PayloadError::Overflow => Error::Http {
                status,
                message: format!(
                    "response body exceeds the limit of {} bytes",
                    self.settings.max_response_size
                ),
            },
            PayloadError::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
                Error::Timeout(self.what)
            }
            other => Error::Http {
                status,
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let cases = [
            ("http://user:pw@h:4161", "http://***@h:4161"),
            ("https://u@h:1/prefix?x=a@b", "https://***@h:1/prefix?x=a@b"),
            ("user:pw@h:1", "***@h:1"),
            ("http://h:4161/a@b", "http://h:4161/a@b"),
            ("http://h:4161", "http://h:4161"),
            ("http://a@b:c@h:1/", "http://***@h:1/"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_credentials(url), shown, "{url}");
        }
    }

    #[test]
    fn base_urls() {
        let cases = [
            ("127.0.0.1:4151", "http://127.0.0.1:4151"),
            ("http://127.0.0.1:4151/", "http://127.0.0.1:4151"),
            ("HTTPS://nsqd:4152", "https://nsqd:4152"),
            ("https://gw:443/nsqd/", "https://gw:443/nsqd"),
            ("[::1]:4151", "http://[::1]:4151"),
        ];
        for (addr, url) in cases {
            assert_eq!(base_url(addr).unwrap(), url, "{addr}");
        }
        for bad in [
            "ftp://h:1",
            "h",
            "http://h",
            "http://:1",
            "http://h:1/?x=1",
            "h:0",
            "",
        ] {
            let err = base_url(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        field: "base_url",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            encode_query(&[("topic", "t#ephemeral"), ("channel", "a b&c=d")]),
            "topic=t%23ephemeral&channel=a%20b%26c%3Dd"
        );
        assert_eq!(encode_query(&[("defer", "1500")]), "defer=1500");
    }

    #[test]
    fn settings_are_checked() {
        let zero = HttpSettings {
            timeout: Duration::ZERO,
            ..HttpSettings::default()
        };
        assert!(Endpoint::new("h:1", zero, "x").is_err());
        let header = HttpSettings {
            user_agent: "a\r\nX: y".into(),
            ..HttpSettings::default()
        };
        assert!(Endpoint::new("h:1", header, "x").is_err());
        assert!(Endpoint::new("h:1", HttpSettings::default(), "x").is_ok());
    }
}
