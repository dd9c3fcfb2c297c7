//! Configuration of a [`Producer`](super::Producer).

use std::{fmt, time::Duration};

use actix::Recipient;

use super::Producer;
use crate::{conn::ConnectionConfig, error::Error, ConnectionEvent};

/// What to do when a publish may have been enqueued but its answer was lost (the connection
/// died after the command was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryPolicy {
    /// Fail with [`Error::OutcomeUnknown`]: the caller decides. No duplicate is ever created by
    /// the producer. The default.
    #[default]
    Never,
    /// Publish again on another connection, up to `attempts` more times. The message may then
    /// be enqueued twice: only for consumers that de-duplicate or are idempotent.
    AcceptDuplicates {
        /// Extra attempts after the first.
        attempts: u32,
    },
}

/// Builds a [`Producer`].
#[derive(Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct ProducerBuilder {
    pub(crate) nsqd: Vec<String>,
    /// The HTTP address of each nsqd, where known (same order as `nsqd`).
    pub(crate) nsqd_http: Vec<Option<String>>,
    pub(crate) connection: ConnectionConfig,
    pub(crate) max_outstanding: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_defer: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) events: Vec<Recipient<ConnectionEvent>>,
}

impl ProducerBuilder {
    /// Publishes awaiting an answer per connection before callers wait (backpressure).
    pub const DEFAULT_MAX_OUTSTANDING: usize = 256;
    /// How long a publish may wait for a connection, a slot and nsqd's answer.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// nsqd's default `--max-req-timeout`, which also bounds DPUB delays.
    pub const DEFAULT_MAX_DEFER: Duration = Duration::from_secs(3600);

    pub(crate) fn new() -> Self {
        Self {
            nsqd: Vec::new(),
            nsqd_http: Vec::new(),
            connection: ConnectionConfig::new(),
            max_outstanding: Self::DEFAULT_MAX_OUTSTANDING,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_defer: Self::DEFAULT_MAX_DEFER,
            retry: RetryPolicy::Never,
            events: Vec::new(),
        }
    }

    /// Adds an nsqd TCP address (`host:port`). Publishes spread across all of them and fail
    /// over when one is down.
    pub fn nsqd(mut self, addr: impl Into<String>) -> Self {
        self.nsqd.push(addr.into());
        self.nsqd_http.push(None);
        self
    }

    /// Adds an nsqd by its TCP address and its HTTP address (`host:4151` or a URL). Each time
    /// the connection comes up, the producer reads the nsqd's `--max-msg-size` and
    /// `--max-body-size` from `/config/..` and refuses larger publishes before writing them,
    /// instead of learning the limits from the fatal error of a first oversized publish.
    pub fn nsqd_with_http(mut self, tcp: impl Into<String>, http: impl Into<String>) -> Self {
        self.nsqd.push(tcp.into());
        self.nsqd_http.push(Some(http.into()));
        self
    }

    /// Connection settings (TLS, compression, AUTH, timeouts, reconnects, publish limits).
    pub fn connection(mut self, config: ConnectionConfig) -> Self {
        self.connection = config;
        self
    }

    /// How many publishes may await nsqd's answer on one connection; further callers wait.
    pub fn max_outstanding(mut self, n: usize) -> Self {
        self.max_outstanding = n;
        self
    }

    /// Bound on a whole publish: waiting for a connection and a slot, and for the answer.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The largest DPUB delay accepted (nsqd's `--max-req-timeout`, 1 h by default; nsqd
    /// answers a longer one with a fatal error that drops the connection).
    pub fn max_defer(mut self, max: Duration) -> Self {
        self.max_defer = max;
        self
    }

    /// Whether to republish when the outcome of a publish is unknown.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Adds a listener of connection events: connected, disconnected, reconnecting, gave up,
    /// identify and AUTH results, heartbeats, responses, server errors, closed. Call it again
    /// for more listeners; add and remove them later with
    /// [`Producer::subscribe`](super::Producer::subscribe).
    pub fn events(mut self, recipient: Recipient<ConnectionEvent>) -> Self {
        self.events.push(recipient);
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first invalid setting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.nsqd.is_empty() {
            return Err(Error::config("nsqd", "at least one nsqd address is needed"));
        }
        for addr in &self.nsqd {
            crate::conn::validate_addr(addr).map_err(|reason| Error::config("nsqd", reason))?;
        }
        for http in self.nsqd_http.iter().flatten() {
            crate::http::endpoint_base_url(http).map_err(|e| match e {
                Error::Config { reason, .. } => Error::config("nsqd_http", reason),
                other => other,
            })?;
        }
        if self.max_outstanding == 0 {
            return Err(Error::config("max_outstanding", "must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config(
                "request_timeout",
                "must be greater than zero",
            ));
        }
        ConnectionConfig::validate_max_defer(self.max_defer)?;
        // Without heartbeats nothing proves the link alive: a producer only writes, so a
        // half-open connection (peer gone without FIN/RST) would swallow every publish until
        // request_timeout, for as long as TCP takes to give up (~15 min on Linux). nsqd
        // allows it; we refuse it rather than offer a setting that turns a dead nsqd into a
        // silent black hole.
        if self.connection.heartbeat().is_none() {
            return Err(Error::config(
                "heartbeat_interval",
                "a producer needs heartbeats to notice a dead link; use Some(1 s..=60 s)",
            ));
        }
        self.connection.validate()
    }

    /// Validates the configuration and starts one connection actor per nsqd in the current
    /// actix arbiter. Connections are made in the background; publishes wait for one (within
    /// the request timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration; [`Error::NoActixSystem`] outside a
    /// running actix `System` (actors need one).
    pub fn start(self) -> Result<Producer, Error> {
        self.validate()?;
        crate::runtime::ensure_actix_system("a Producer")?;
        Ok(Producer::start(self))
    }
}

impl fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("nsqd", &self.nsqd)
            .field(
                "nsqd_http",
                &self
                    .nsqd_http
                    .iter()
                    .map(|h| h.as_deref().map(crate::http::redact_credentials))
                    .collect::<Vec<_>>(),
            )
            .field("connection", &self.connection)
            .field("max_outstanding", &self.max_outstanding)
            .field("request_timeout", &self.request_timeout)
            .field("max_defer", &self.max_defer)
            .field("retry", &self.retry)
            .field("events", &self.events.len())
            .finish()
    }
}
