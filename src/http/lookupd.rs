//! [`LookupdHttpClient`]: nsqlookupd's HTTP API (`nsqlookupd/http.go`), typed.

use std::{fmt, time::Duration};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::endpoint::{redact_credentials, Answer, Endpoint, HttpSettings, Method};
use crate::{
    error::Error,
    lookup::{null_as_default, LookupResponse, NodeInfo},
    protocol::{Channel, Topic},
    transport::TlsConfig,
};

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
    /// Bound on each request, connecting included (default 5 s, nsqadmin's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// TLS settings for `https://` addresses (default: verify against the webpki roots).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.settings.tls = Some(tls);
        self
    }

    /// The largest answer read (default 16 MiB); a larger one fails with [`Error::Http`].
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.settings.max_response_size = bytes;
        self
    }

    /// The `User-Agent` header (default `actix-nsq/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.settings.user_agent = agent.into();
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an address that is not `[http[s]://]host:port[/prefix]` or a
    /// zero timeout or size; [`Error::Tls`] when the TLS settings cannot be built.
    pub fn build(self) -> Result<LookupdHttpClient, Error> {
        Ok(LookupdHttpClient {
            endpoint: Endpoint::new(&self.base_url, self.settings, "nsqlookupd HTTP request")?,
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

    async fn post(&self, path: &str, params: &[(&str, &str)]) -> Result<(), Error> {
        self.endpoint
            .call(Method::Post, path, params, Bytes::new())
            .await?
            .empty()
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
        match answer.status {
            200 => match answer.json() {
                Err(Error::Http {
                    status: 404,
                    message,
                }) if message == "TOPIC_NOT_FOUND" => Ok(LookupResponse::default()),
                other => other,
            },
            404 if crate::lookup::error_message(&answer.body) == "TOPIC_NOT_FOUND" => {
                Ok(LookupResponse::default())
            }
            status => Err(Error::Http {
                status,
                message: crate::lookup::error_message(&answer.body),
            }),
        }
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
        let topic = Topic::new(topic.as_ref())?;
        self.post("/topic/create", &[("topic", topic.as_str())])
            .await
    }

    /// `POST /topic/delete`: removes a topic and its channels from the registry (nsqd that
    /// still have it register it again).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`], [`Error::Timeout`].
    pub async fn delete_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        let topic = Topic::new(topic.as_ref())?;
        self.post("/topic/delete", &[("topic", topic.as_str())])
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
        let (topic, channel) = (Topic::new(topic.as_ref())?, Channel::new(channel.as_ref())?);
        let params = [("topic", topic.as_str()), ("channel", channel.as_str())];
        self.post("/channel/create", &params).await
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
        let (topic, channel) = (Topic::new(topic.as_ref())?, Channel::new(channel.as_ref())?);
        let params = [("topic", topic.as_str()), ("channel", channel.as_str())];
        self.post("/channel/delete", &params).await
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
        self.post("/topic/tombstone", &params).await
    }
}
