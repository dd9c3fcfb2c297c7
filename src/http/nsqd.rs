//! [`NsqdHttpClient`]: nsqd's HTTP API (`nsqd/http.go`), typed.

use std::{fmt, time::Duration};

use bytes::Bytes;

use super::{
    endpoint::{http_settings_setters, redact_credentials, Endpoint, HttpSettings, Method},
    mpub::{encode_binary, encode_lines, MpubMode},
    stats::{NsqdInfo, NsqdStats},
};
use crate::{
    error::{BodyError, Error},
    protocol::{Batch, Body, Channel, PublishLimits, Topic},
};

/// Filters for [`NsqdHttpClient::stats`]. By default, as in nsqd, everything is included.
///
/// ```
/// use actix_nsq::http::StatsQuery;
/// let query = StatsQuery::new().topic("events").include_clients(false);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    topic: Option<String>,
    channel: Option<String>,
    include_clients: bool,
    include_mem: bool,
}

impl Default for StatsQuery {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsQuery {
    /// Every topic and channel, with clients and memory statistics.
    pub fn new() -> Self {
        Self {
            topic: None,
            channel: None,
            include_clients: true,
            include_mem: true,
        }
    }

    /// Only this topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Only this channel (of every topic that has it, unless [`topic`](Self::topic) is set).
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// List each channel's clients and the producers (default true; a busy nsqd's answer is
    /// much smaller without them).
    pub fn include_clients(mut self, include: bool) -> Self {
        self.include_clients = include;
        self
    }

    /// Include Go memory statistics (default true).
    pub fn include_mem(mut self, include: bool) -> Self {
        self.include_mem = include;
        self
    }

    fn params(&self, json: bool) -> Result<Vec<(&'static str, String)>, Error> {
        let mut params = Vec::with_capacity(5);
        if json {
            params.push(("format", "json".to_owned()));
        }
        if let Some(topic) = &self.topic {
            params.push(("topic", Topic::new(topic)?.to_string()));
        }
        if let Some(channel) = &self.channel {
            params.push(("channel", Channel::new(channel)?.to_string()));
        }
        params.push(("include_clients", self.include_clients.to_string()));
        params.push(("include_mem", self.include_mem.to_string()));
        Ok(params)
    }
}

/// Configures an [`NsqdHttpClient`].
#[derive(Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct NsqdHttpClientBuilder {
    base_url: String,
    settings: HttpSettings,
    limits: PublishLimits,
    max_defer: Duration,
}

impl NsqdHttpClientBuilder {
    /// nsqd's `--max-req-timeout` default: the longest `/pub?defer=` it accepts.
    pub const DEFAULT_MAX_DEFER: Duration = Duration::from_secs(60 * 60);

    http_settings_setters!();

    /// The server's `--max-msg-size` and `--max-body-size` (default nsqd's: 1 MiB, 5 MiB):
    /// larger publishes fail before anything is sent.
    pub fn publish_limits(mut self, limits: PublishLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The server's `--max-req-timeout` (default 1 h): longer defers fail before anything is
    /// sent.
    pub fn max_defer(mut self, max: Duration) -> Self {
        self.max_defer = max;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an address that is not `[http[s]://]host:port[/prefix]`, a
    /// zero timeout or size, publish limits with the message limit above the body limit, or
    /// a `max_defer` nsqd cannot represent; [`Error::Tls`] when the TLS settings cannot be
    /// built.
    pub fn build(self) -> Result<NsqdHttpClient, Error> {
        crate::ConnectionConfig::validate_publish_limits(self.limits)?;
        crate::ConnectionConfig::validate_max_defer(self.max_defer)?;
        Ok(NsqdHttpClient {
            endpoint: Endpoint::new(&self.base_url, self.settings, "nsqd HTTP request")?,
            limits: self.limits,
            max_defer: self.max_defer,
        })
    }
}

impl fmt::Debug for NsqdHttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            base_url,
            settings,
            limits,
            max_defer,
        } = self;
        f.debug_struct("NsqdHttpClientBuilder")
            .field("base_url", &redact_credentials(base_url))
            .field("settings", settings)
            .field("limits", limits)
            .field("max_defer", max_defer)
            .finish()
    }
}

/// A client for nsqd's HTTP API (default port 4151): publishing, topic and channel
/// administration, stats and runtime configuration — gnsq's `NsqdHTTPClient`, typed.
///
/// Names and bodies are checked before anything is sent, so a call nsqd would reject fails
/// with [`Error::InvalidName`] or [`Error::InvalidBody`]. nsqd's own refusals arrive as
/// [`Error::Http`] with its status and message (`404 TOPIC_NOT_FOUND`, `400 INVALID_DEFER`);
/// no answer within the timeout is [`Error::Timeout`]; a refused or broken connection is
/// [`Error::Http`] with status 0.
///
/// The client is built on awc, whose clients are tied to their thread: it is `!Send`, and its
/// futures must run inside an actix `System` (or a tokio `LocalSet`). Clone it freely; clones
/// share one connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::{http::MpubMode, NsqdHttpClient};
///
/// let nsqd = NsqdHttpClient::new("http://127.0.0.1:4151")?;
/// nsqd.publish("events", "hello", None).await?;
/// nsqd.multi_publish("events", ["a", "b"], MpubMode::Binary).await?;
/// let depth = nsqd.stats(&Default::default()).await?.topic("events").map(|t| t.depth);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NsqdHttpClient {
    endpoint: Endpoint,
    limits: PublishLimits,
    max_defer: Duration,
}

impl fmt::Debug for NsqdHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsqdHttpClient")
            .field("base_url", &redact_credentials(self.endpoint.base()))
            .finish_non_exhaustive()
    }
}

fn topic(name: &str) -> Result<Topic, Error> {
    Topic::new(name)
}

impl NsqdHttpClient {
    /// A client with default settings for `http://host:4151`, `https://host:4152`, or
    /// `host:port` (plain HTTP).
    ///
    /// # Errors
    ///
    /// As [`NsqdHttpClientBuilder::build`].
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A builder with default settings.
    pub fn builder(base_url: impl Into<String>) -> NsqdHttpClientBuilder {
        NsqdHttpClientBuilder {
            base_url: base_url.into(),
            settings: HttpSettings::default(),
            limits: PublishLimits::NSQD_DEFAULT,
            max_defer: NsqdHttpClientBuilder::DEFAULT_MAX_DEFER,
        }
    }

    /// The normalised base URL, e.g. `http://127.0.0.1:4151`.
    pub fn base_url(&self) -> &str {
        self.endpoint.base()
    }

    /// `GET /ping`: Ok when nsqd answers `200 OK`.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] with status 500 and nsqd's health text when it is unhealthy.
    pub async fn ping(&self) -> Result<(), Error> {
        self.endpoint
            .call(Method::Get, "/ping", &[], Bytes::new())
            .await
            .map(drop)
    }

    /// `GET /info`: version, ports and limits.
    ///
    /// # Errors
    ///
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn info(&self) -> Result<NsqdInfo, Error> {
        let answer = self.endpoint.call(Method::Get, "/info", &[], Bytes::new());
        answer.await?.json()
    }

    /// `GET /stats?format=json` with the given filters. A topic or channel that does not
    /// exist gives an empty list, not an error (as in nsqd).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a filter that cannot name a topic or channel;
    /// [`Error::Http`], [`Error::Timeout`].
    pub async fn stats(&self, query: &StatsQuery) -> Result<NsqdStats, Error> {
        let params = query.params(true)?;
        self.get_with(&params, "/stats").await?.json()
    }

    /// `GET /stats` in nsqd's text format, for people.
    ///
    /// # Errors
    ///
    /// As [`stats`](Self::stats).
    pub async fn stats_text(&self, query: &StatsQuery) -> Result<String, Error> {
        let params = query.params(false)?;
        Ok(self.get_with(&params, "/stats").await?.text())
    }

    async fn get_with(
        &self,
        params: &[(&'static str, String)],
        path: &str,
    ) -> Result<super::endpoint::Answer, Error> {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.endpoint
            .call(Method::Get, path, &params, Bytes::new())
            .await
    }

    /// `POST /pub?topic=[&defer=ms]`: publishes one message, delivered after `defer` if given
    /// (nsqd counts whole milliseconds).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidBody`] (empty, over `max_msg_size`, defer
    /// over `max_defer`) before sending; [`Error::Http`], [`Error::Timeout`] after. A timeout
    /// leaves the outcome unknown: the message may have been published.
    pub async fn publish(
        &self,
        topic: impl AsRef<str>,
        body: impl Into<Bytes>,
        defer: Option<Duration>,
    ) -> Result<(), Error> {
        let topic = self::topic(topic.as_ref())?;
        let body = Body::new(body)?;
        body.check_max(self.limits.max_msg_size)?;
        let mut params = vec![("topic", topic.as_str().to_owned())];
        if let Some(defer) = defer {
            if defer > self.max_defer {
                return Err(BodyError::DeferOutOfRange {
                    ms: defer.as_millis(),
                    max_ms: u64::try_from(self.max_defer.as_millis()).unwrap_or(u64::MAX),
                }
                .into());
            }
            params.push(("defer", defer.as_millis().to_string()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.endpoint
            .call(Method::Post, "/pub", &params, body.into_bytes())
            .await?
            .empty()
    }

    /// `POST /mpub?topic=[&binary=true]`: publishes several messages at once, encoded as
    /// `mode` says.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBody`] for no messages, an empty one, one over `max_msg_size`, a body
    /// over `max_body_size`, or (newline mode) a message containing `\n`
    /// ([`BodyError::ContainsNewline`], inside [`BodyError::InBatch`]); otherwise as
    /// [`publish`](Self::publish).
    pub async fn multi_publish<I, B>(
        &self,
        topic: impl AsRef<str>,
        bodies: I,
        mode: MpubMode,
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let topic = self::topic(topic.as_ref())?;
        let batch = Batch::new(bodies)?;
        let body = match mode {
            MpubMode::Binary => {
                batch.check_max(self.limits.max_msg_size, self.limits.max_body_size)?;
                encode_binary(&batch)
            }
            MpubMode::Newline => encode_lines(&batch, self.limits)?,
        };
        let mut params = vec![("topic", topic.as_str())];
        if mode == MpubMode::Binary {
            params.push(("binary", "true"));
        }
        self.endpoint
            .call(Method::Post, "/mpub", &params, body)
            .await?
            .empty()
    }

    /// `POST /topic/create`: creates a topic (nothing happens if it exists).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`], [`Error::Timeout`].
    pub async fn create_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/create", topic.as_ref())
            .await
    }

    /// `POST /topic/delete`: deletes a topic, its channels and messages.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] `404 TOPIC_NOT_FOUND`; as [`create_topic`](Self::create_topic).
    pub async fn delete_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/delete", topic.as_ref())
            .await
    }

    /// `POST /topic/empty`: drops the messages the topic holds (not its channels').
    ///
    /// # Errors
    ///
    /// As [`delete_topic`](Self::delete_topic).
    pub async fn empty_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/empty", topic.as_ref())
            .await
    }

    /// `POST /topic/pause`: the topic holds new messages instead of passing them on.
    ///
    /// # Errors
    ///
    /// As [`delete_topic`](Self::delete_topic).
    pub async fn pause_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/pause", topic.as_ref())
            .await
    }

    /// `POST /topic/unpause`.
    ///
    /// # Errors
    ///
    /// As [`delete_topic`](Self::delete_topic).
    pub async fn unpause_topic(&self, topic: impl AsRef<str>) -> Result<(), Error> {
        self.endpoint
            .post_topic("/topic/unpause", topic.as_ref())
            .await
    }

    /// `POST /channel/create`: creates a channel of an existing topic.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Http`] `404 TOPIC_NOT_FOUND`, [`Error::Timeout`].
    pub async fn create_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/create", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `POST /channel/delete`.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] `404 TOPIC_NOT_FOUND` or `404 CHANNEL_NOT_FOUND`; as
    /// [`create_channel`](Self::create_channel).
    pub async fn delete_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/delete", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `POST /channel/empty`: drops the channel's queued, in-flight and deferred messages.
    ///
    /// # Errors
    ///
    /// As [`delete_channel`](Self::delete_channel).
    pub async fn empty_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/empty", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `POST /channel/pause`: the channel delivers nothing until unpaused.
    ///
    /// # Errors
    ///
    /// As [`delete_channel`](Self::delete_channel).
    pub async fn pause_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/pause", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `POST /channel/unpause`.
    ///
    /// # Errors
    ///
    /// As [`delete_channel`](Self::delete_channel).
    pub async fn unpause_channel(
        &self,
        topic: impl AsRef<str>,
        channel: impl AsRef<str>,
    ) -> Result<(), Error> {
        self.endpoint
            .post_channel("/channel/unpause", topic.as_ref(), channel.as_ref())
            .await
    }

    /// `GET /config/:opt`: one of nsqd's options by its config name (`max_msg_size`,
    /// `nsqlookupd_tcp_addresses`, ...), as nsqd encodes it (durations in nanoseconds).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a name that is not `[a-z0-9_]+`; [`Error::Http`] `400
    /// INVALID_OPTION` for one nsqd does not know.
    pub async fn config_get(&self, opt: &str) -> Result<serde_json::Value, Error> {
        let path = config_path(opt)?;
        let answer = self.endpoint.call(Method::Get, &path, &[], Bytes::new());
        answer.await?.json()
    }

    /// `PUT /config/:opt`: changes an option at runtime and returns its new value. nsqd
    /// supports `nsqlookupd_tcp_addresses` (a JSON list, e.g. `["10.0.0.1:4160"]`) and
    /// `log_level` (`debug`, `info`, `warn`, `error`, `fatal`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad name or an empty value; [`Error::Http`] `400
    /// INVALID_OPTION` or `400 INVALID_VALUE` from nsqd.
    pub async fn config_set(
        &self,
        opt: &str,
        value: impl Into<Bytes>,
    ) -> Result<serde_json::Value, Error> {
        let path = config_path(opt)?;
        let value = value.into();
        if value.is_empty() {
            return Err(Error::config("value", "must not be empty"));
        }
        let answer = self.endpoint.call(Method::Put, &path, &[], value);
        answer.await?.json()
    }
}

fn config_path(opt: &str) -> Result<String, Error> {
    let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    if opt.is_empty() || opt.len() > 64 || !opt.bytes().all(valid) {
        return Err(Error::config(
            "opt",
            format!("{opt:?} is not an nsqd option name"),
        ));
    }
    Ok(format!("/config/{opt}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_params_follow_nsqd() {
        let q = StatsQuery::new().topic("t").channel("c").include_mem(false);
        let params = q.params(true).unwrap();
        let expected = [
            ("format", "json"),
            ("topic", "t"),
            ("channel", "c"),
            ("include_clients", "true"),
            ("include_mem", "false"),
        ];
        let got: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, expected);
        assert!(StatsQuery::new().topic("bad topic").params(true).is_err());
    }

    #[test]
    fn config_names() {
        assert_eq!(config_path("log_level").unwrap(), "/config/log_level");
        for bad in ["", "Log", "a/b", "a b", "../x"] {
            assert!(config_path(bad).is_err(), "{bad}");
        }
    }
}
