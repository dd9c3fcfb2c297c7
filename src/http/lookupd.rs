//! [`LookupdHttpClient`]: nsqlookupd's HTTP API (`nsqlookupd/http.go`), typed.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    endpoint::{http_settings_setters, redact_credentials, Answer, Endpoint, HttpSettings, Method},
    lookup_response::{error_message, null_as_default, LookupResponse, NodeInfo},
};
use crate::{error::Error, protocol::Topic};

/// What a timeout names.
const WHAT: &str = "nsqlookupd HTTP request";

/// The answer to nsqlookupd's `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LookupdInfo {
    /// nsqlookupd's version, e.g. `1.3.0`.
    pub version: String,
}

#[derive(Deserialize)]
struct Topics {
    #[serde(default, deserialize_with = "null_as_default")]
    topics: Vec<String>,
}

#[derive(Deserialize)]
struct Channels {
    #[serde(default, deserialize_with = "null_as_default")]
    channels: Vec<String>,
}

#[derive(Deserialize)]
struct Nodes {
    #[serde(default, deserialize_with = "null_as_default")]
    producers: Vec<NodeInfo>,
}

/// Configures a [`LookupdHttpClient`].
#[derive(Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct LookupdHttpClientBuilder {
    base_url: String,
    settings: HttpSettings,
}

impl fmt::Debug for LookupdHttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupdHttpClientBuilder")
            .field("base_url", &redact_credentials(&self.base_url))
            .field("settings", &self.settings)
            .finish()
    }
}

impl LookupdHttpClientBuilder {
    http_settings_setters!();

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an address that is not `[http[s]://]host:port[/prefix]` or a
    /// zero timeout or size; [`Error::Tls`] when the TLS settings cannot be built.
    pub fn build(self) -> Result<LookupdHttpClient, Error> {
        Ok(LookupdHttpClient {
            endpoint: Endpoint::new(&self.base_url, self.settings, WHAT)?,
        })
    }
}

/// A client for nsqlookupd's HTTP API (default port 4161): discovery and the registration
/// database — gnsq's `LookupdClient`, typed.
///
/// Errors, timeouts and threading are as for [`NsqdHttpClient`](super::NsqdHttpClient): nsq's
/// refusals are [`Error::Http`] with its status and message, no answer in time is
/// [`Error::Timeout`], and the client is `!Send` (run it inside an actix `System` or a tokio
/// `LocalSet`). Answers in the pre-1.0 `{"status_code", "status_txt", "data"}` wrapper are
/// understood too.
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::LookupdHttpClient;
///
/// let lookupd = LookupdHttpClient::new("http://127.0.0.1:4161")?;
/// for producer in lookupd.lookup("events").await?.producers {
///     println!("{:?}", producer.tcp_address());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LookupdHttpClient {
    endpoint: Endpoint,
}

impl fmt::Debug for LookupdHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupdHttpClient")
            .field("base_url", &redact_credentials(self.endpoint.base()))
            .finish_non_exhaustive()
    }
}

impl LookupdHttpClient {
    /// A client with default settings for `http://host:4161` or `host:port`.
    ///
    /// # Errors
    ///
    /// As [`LookupdHttpClientBuilder::build`].
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A builder with default settings.
    pub fn builder(base_url: impl Into<String>) -> LookupdHttpClientBuilder {
        LookupdHttpClientBuilder {
            base_url: base_url.into(),
            settings: HttpSettings::default(),
        }
    }

    /// The normalised base URL, e.g. `http://127.0.0.1:4161`.
    pub fn base_url(&self) -> &str {
        self.endpoint.base()
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Answer, Error> {
        self.endpoint
            .call(Method::Get, path, params, Bytes::new())
            .await
    }

    /// `GET /ping`: Ok when nsqlookupd answers `200 OK`.
    ///
    /// # Errors
    ///
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn ping(&self) -> Result<(), Error> {
        self.get("/ping", &[]).await.map(drop)
    }

    /// `GET /info`: nsqlookupd's version.
    ///
    /// # Errors
    ///
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn info(&self) -> Result<LookupdInfo, Error> {
        self.get("/info", &[]).await?.json()
    }

    /// `GET /lookup?topic=`: the topic's channels and the active, untombstoned nsqd that have
    /// it. A topic nsqlookupd has never heard of (`404 TOPIC_NOT_FOUND`) gives an empty
    /// answer, not an error: to a consumer it means "no producers yet". An entry that cannot
    /// be connected to (a `tcp_port` that is not a port, ...) does not spoil the answer: it is
    /// listed in [`LookupResponse::skipped`] with the reason.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`] for any other error status or an undecodable
    /// answer; [`Error::Timeout`].
    pub async fn lookup(&self, topic: impl AsRef<str>) -> Result<LookupResponse, Error> {
        let topic = Topic::new(topic.as_ref())?;
        let answer = self
            .endpoint
            .send(
                Method::Get,
                "/lookup",
                &[("topic", topic.as_str())],
                Bytes::new(),
            )
            .await?;
        lookup_answer(&answer)
    }

    /// The discoverer's client for one nsqlookupd address as go-nsq reads it (see
    /// [`lookup_url`]), and the path and query its lookups go to: the address's own path
    /// (`/lookup` when it has none) and query, with `topic=` added.
    pub(crate) fn for_discovery(
        addr: &str,
        topic: &Topic,
        settings: HttpSettings,
    ) -> Result<(Self, String), Error> {
        let url = lookup_url(addr, topic).map_err(|reason| Error::config("lookupd", reason))?;
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
        let split = rest.find('/').unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(split);
        let endpoint = Endpoint::at(format!("{scheme}://{authority}"), settings, WHAT)?;
        Ok((Self { endpoint }, path_and_query.to_owned()))
    }

    /// `GET <path_and_query>` as [`lookup`](Self::lookup) reads it, with `authorization` sent
    /// as the `Authorization` header: the discoverer's one request.
    pub(crate) async fn lookup_at(
        &self,
        path_and_query: &str,
        authorization: Option<&str>,
    ) -> Result<LookupResponse, Error> {
        let answer = self
            .endpoint
            .send_to(Method::Get, path_and_query, Bytes::new(), authorization)
            .await?;
        lookup_answer(&answer)
    }

    /// `GET /topics`: every topic registered.
    ///
    /// # Errors
    ///
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn topics(&self) -> Result<Vec<String>, Error> {
        let topics: Topics = self.get("/topics", &[]).await?.json()?;
        Ok(topics.topics)
    }

    /// `GET /channels?topic=`: the topic's channels (empty for an unknown topic).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`], [`Error::Timeout`].
    pub async fn channels(&self, topic: impl AsRef<str>) -> Result<Vec<String>, Error> {
        let topic = Topic::new(topic.as_ref())?;
        let answer = self.get("/channels", &[("topic", topic.as_str())]).await?;
        Ok(answer.json::<Channels>()?.channels)
    }

    /// `GET /nodes`: every active nsqd, with its topics and per-topic tombstones.
    ///
    /// # Errors
    ///
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        let nodes: Nodes = self.get("/nodes", &[]).await?.json()?;
        Ok(nodes.producers)
    }

    /// `POST /topic/create`: adds a topic to the registry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`], [`Error::Timeout`].
    pub async fn create_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/create", topic.as_ref())
            .await
    }

    /// `POST /topic/delete`: removes a topic and its channels from the registry (nsqd that
    /// still have it register it again).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`], [`Error::Timeout`].
    pub async fn delete_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/delete", topic.as_ref())
            .await
    }

    /// `POST /channel/create`: adds a channel (and its topic) to the registry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`], [`Error::Timeout`].
    pub async fn create_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/create", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `POST /channel/delete`: removes a channel from the registry.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] `404 CHANNEL_NOT_FOUND`; as [`create_channel`](Self::create_channel).
    pub async fn delete_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/delete", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `POST /topic/tombstone?topic=&node=`: hides one nsqd from `/lookup` for the topic for
    /// nsqlookupd's `--tombstone-lifetime`, so consumers stop connecting to it before the
    /// topic is deleted there. `node` is the nsqd's `broadcast_address:http_port`
    /// ([`ProducerInfo::http_address`](crate::ProducerInfo::http_address)); IPv6 brackets are
    /// removed, since nsqlookupd compares against the bare `address:port`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Config`] when `node` is not `host:port`;
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn tombstone_topic_producer(
        &self,
        topic: impl AsRef<str>,
        node: &str,
    ) -> Result<(), Error> {
        let topic = Topic::new(topic.as_ref())?;
        crate::conn::validate_addr(node).map_err(|reason| Error::config("node", reason))?;
        let node = node.replace(['[', ']'], "");
        let params = [("topic", topic.as_str()), ("node", node.as_str())];
        self.endpoint.post("/topic/tombstone", &params).await
    }
}

/// A `/lookup` answer: the producers on 200; none yet for `404 TOPIC_NOT_FOUND` (in either
/// answer shape); [`Error::Http`] with nsq's message for any other status.
fn lookup_answer(answer: &Answer) -> Result<LookupResponse, Error> {
    match answer.status {
        200 => match answer.json() {
            Err(Error::Http {
                status: 404,
                message,
            }) if message == "TOPIC_NOT_FOUND" => Ok(LookupResponse::default()),
            other => other,
        },
        404 if error_message(&answer.body) == "TOPIC_NOT_FOUND" => Ok(LookupResponse::default()),
        status => Err(Error::Http {
            status,
            message: error_message(&answer.body),
        }),
    }
}

/// Builds the lookup URL for an nsqlookupd address as go-nsq's `buildLookupAddr` does
/// (`consumer.go:1210-1233`): `http://` is added when there is no scheme, a port is required,
/// an empty path becomes `/lookup`, and `topic=` is added to the query.
pub(crate) fn lookup_url(addr: &str, topic: &Topic) -> Result<String, String> {
    let (scheme, rest) = addr.split_once("://").unwrap_or(("http", addr));
    if scheme != "http" && scheme != "https" {
        return Err(format!("{addr:?}: scheme must be http or https"));
    }
    let (authority, path_and_query) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        // Only the host and port: the credentials must not reach errors or logs.
        let shown = redact_credentials(addr);
        crate::conn::validate_addr(authority.rsplit('@').next().unwrap_or_default())
            .map_err(|_| format!("nsqlookupd address {shown:?} is not [scheme://]host:port"))?;
    } else {
        crate::conn::validate_addr(authority).map_err(|e| format!("nsqlookupd address {e}"))?;
    }
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let path = if path.is_empty() || path == "/" {
        "/lookup"
    } else {
        path
    };
    // Topic names are [.a-zA-Z0-9_-] plus an optional #ephemeral; only '#' needs escaping.
    let topic = topic.as_str().replace('#', "%23");
    let sep = if query.is_empty() { "" } else { "&" };
    Ok(format!(
        "{scheme}://{authority}{path}?{query}{sep}topic={topic}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_an_address_stay_out_of_errors() {
        let t = Topic::new("events").unwrap();
        let err = lookup_url("http://user:hunter2@h:99999", &t).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(
            lookup_url("http://user:hunter2@h:1", &t).unwrap(),
            "http://user:hunter2@h:1/lookup?topic=events"
        );
    }

    #[test]
    fn builds_urls_like_go_nsq() {
        let t = Topic::new("events").unwrap();
        let cases = [
            (
                "127.0.0.1:4161",
                "http://127.0.0.1:4161/lookup?topic=events",
            ),
            (
                "http://127.0.0.1:4161",
                "http://127.0.0.1:4161/lookup?topic=events",
            ),
            (
                "http://127.0.0.1:4161/",
                "http://127.0.0.1:4161/lookup?topic=events",
            ),
            (
                "https://lookupd:4161/custom",
                "https://lookupd:4161/custom?topic=events",
            ),
            (
                "http://h:1/lookup?x=1",
                "http://h:1/lookup?x=1&topic=events",
            ),
        ];
        for (addr, url) in cases {
            assert_eq!(lookup_url(addr, &t).unwrap(), url);
        }
        let eph = Topic::new("t#ephemeral").unwrap();
        assert_eq!(
            lookup_url("h:1", &eph).unwrap(),
            "http://h:1/lookup?topic=t%23ephemeral"
        );
        for bad in ["ftp://h:1", "http://h", "h", "http://:1", ""] {
            assert!(lookup_url(bad, &t).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovery_keeps_the_addresss_own_path_and_query() {
        let t = Topic::new("events").unwrap();
        let cases = [
            (
                "127.0.0.1:4161",
                "http://127.0.0.1:4161",
                "/lookup?topic=events",
            ),
            (
                "https://gw:443/custom",
                "https://gw:443",
                "/custom?topic=events",
            ),
            ("http://h:1/l?x=1", "http://h:1", "/l?x=1&topic=events"),
            ("http://u:pw@h:1", "http://u:pw@h:1", "/lookup?topic=events"),
        ];
        for (addr, base, path) in cases {
            let (client, at) =
                LookupdHttpClient::for_discovery(addr, &t, HttpSettings::default()).unwrap();
            assert_eq!((client.base_url(), at.as_str()), (base, path), "{addr}");
        }
        let err = LookupdHttpClient::for_discovery("h", &t, HttpSettings::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "lookupd",
                    ..
                }
            ),
            "{err}"
        );
    }
}
