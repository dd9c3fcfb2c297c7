//! Configuration of a [`Consumer`](super::Consumer).

mod extras;

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;

use actix::Recipient;

use super::{events::ConsumerEvent, flow_settings::FlowSettings, Consumer};
use crate::{
    conn::{validate_addr, ConnectionConfig},
    delivery::Delivery,
    error::Error,
    events::Interest,
    handler::{GiveUpHook, HandlerSink, Handlers, Hooks},
    protocol::{Channel, Topic},
    rdy::{BackoffStrategy, FlowControl},
};

/// Builds a [`Consumer`]. Settings are named after go-nsq's `Config` options, with the same
/// defaults and ranges, except where the docs of a setting say otherwise and why.
#[derive(Clone)]
#[must_use = "a builder does nothing until it is used"]
pub struct ConsumerBuilder {
    pub(crate) topic: String,
    pub(crate) channel: String,
    pub(crate) nsqd: Vec<String>,
    pub(crate) lookupd: Vec<String>,
    /// The flow-control settings in effect: `flow_settings` merged.
    pub(crate) flow: FlowControl,
    pub(crate) flow_settings: FlowSettings,
    pub(crate) connection: ConnectionConfig,
    pub(crate) handlers: Handlers,
    pub(crate) give_up: GiveUpHook,
    pub(crate) max_attempts: u32,
    pub(crate) default_requeue_delay: Duration,
    pub(crate) max_requeue_delay: Duration,
    pub(crate) lookupd_poll_interval: Duration,
    pub(crate) lookupd_poll_jitter: f64,
    pub(crate) lookupd_poll_timeout: Duration,
    pub(crate) lookupd_authorization: bool,
    pub(crate) lookupd_authorization_over_http: bool,
    pub(crate) stop_timeout: Duration,
    pub(crate) listeners: Vec<(Recipient<ConsumerEvent>, Interest)>,
    pub(crate) hooks: Hooks,
    /// The consumer's name in logs; `None`: `topic/channel`.
    pub(crate) name: Option<String>,
    pub(crate) max_nsqd_connections: u32,
}

impl ConsumerBuilder {
    /// go-nsq `max_attempts`: messages delivered more often go to the give-up hook.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// go-nsq `default_requeue_delay`: scaled by the attempt count.
    pub const DEFAULT_REQUEUE_DELAY: Duration = Duration::from_secs(90);
    /// go-nsq `max_requeue_delay`.
    pub const DEFAULT_MAX_REQUEUE_DELAY: Duration = Duration::from_secs(15 * 60);
    /// go-nsq `lookupd_poll_interval`.
    pub const DEFAULT_LOOKUPD_POLL_INTERVAL: Duration = Duration::from_secs(60);
    /// go-nsq `lookupd_poll_jitter`.
    pub const DEFAULT_LOOKUPD_POLL_JITTER: f64 = 0.3;
    /// go-nsq `lookupd_poll_timeout`.
    pub const DEFAULT_LOOKUPD_POLL_TIMEOUT: Duration = Duration::from_secs(60);
    /// go-nsq's hard-coded `Stop()` cap; here it is a setting.
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

    pub(crate) fn new(topic: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            channel: channel.into(),
            nsqd: Vec::new(),
            lookupd: Vec::new(),
            flow: FlowControl::new(),
            flow_settings: FlowSettings::default(),
            connection: ConnectionConfig::new(),
            handlers: Handlers::default(),
            give_up: GiveUpHook::Log,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            default_requeue_delay: Self::DEFAULT_REQUEUE_DELAY,
            max_requeue_delay: Self::DEFAULT_MAX_REQUEUE_DELAY,
            lookupd_poll_interval: Self::DEFAULT_LOOKUPD_POLL_INTERVAL,
            lookupd_poll_jitter: Self::DEFAULT_LOOKUPD_POLL_JITTER,
            lookupd_poll_timeout: Self::DEFAULT_LOOKUPD_POLL_TIMEOUT,
            lookupd_authorization: true,
            lookupd_authorization_over_http: false,
            stop_timeout: Self::DEFAULT_STOP_TIMEOUT,
            listeners: Vec::new(),
            hooks: Hooks::default(),
            name: None,
            max_nsqd_connections: Self::DEFAULT_MAX_NSQD_CONNECTIONS,
        }
    }

    /// Adds an nsqd TCP address (`host:port`) to consume from directly. A lost connection is
    /// re-established with exponential backoff and jitter.
    pub fn nsqd(mut self, addr: impl Into<String>) -> Self {
        self.nsqd.push(addr.into());
        self
    }

    /// Adds an nsqlookupd HTTP address (`http://host:4161`, `host:4161`, or a full URL with a
    /// path) to discover the topic's nsqd from.
    pub fn lookupd(mut self, addr: impl Into<String>) -> Self {
        self.lookupd.push(addr.into());
        self
    }

    crate::handler_setters::handler_setters! {
        /// ```no_run
        /// # fn demo() -> Result<(), actix_nsq::Error> {
        /// use actix_nsq::{Consumer, Delivery};
        ///
        /// let consumer = Consumer::builder("events", "archiver")
        ///     .nsqd("127.0.0.1:4150")
        ///     .handler_blocking(4, || {
        ///         |delivery: Delivery| {
        ///             std::fs::write("/tmp/last", delivery.body())?; // blocking is fine here
        ///             Ok(())
        ///         }
        ///     })
        ///     .start()?;
        /// # Ok(()) }
        /// ```
    }

    /// go-nsq `max_attempts` (default 5, 0 = unlimited, at most 65535).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// go-nsq `default_requeue_delay` (default 90 s, at most 60 min): a failed message is
    /// requeued after `min(default_requeue_delay × attempts, max_requeue_delay)`.
    pub fn default_requeue_delay(mut self, delay: Duration) -> Self {
        self.default_requeue_delay = delay;
        self
    }

    /// go-nsq `max_requeue_delay` (default 15 min, at most 60 min).
    pub fn max_requeue_delay(mut self, delay: Duration) -> Self {
        self.max_requeue_delay = delay;
        self
    }

    /// The most messages in flight at once over all connections (go-nsq `max_in_flight`,
    /// default 1). 0 starts paused.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.flow_settings.max_in_flight = Some(n);
        self.flow = self.flow_settings.effective();
        self
    }

    /// All flow-control settings at once (RDY rotation and backoff). Settings also given on
    /// their own ([`max_in_flight`](Self::max_in_flight),
    /// [`low_rdy_idle_timeout`](Self::low_rdy_idle_timeout), ...) win over these, whether
    /// given before or after; given both ways with different values, neither of them the
    /// default, they are a contradiction that [`validate`](Self::validate) reports as
    /// [`Error::Config`] naming the setting.
    pub fn flow_control(mut self, flow: FlowControl) -> Self {
        self.flow_settings.bulk = Some(flow);
        self.flow = self.flow_settings.effective();
        self
    }

    /// How often RDY is rotated when connections outnumber `max_in_flight`; see
    /// [`FlowControl::rdy_redistribute_interval`] (default 50 ms).
    pub fn rdy_redistribute_interval(mut self, interval: Duration) -> Self {
        self.flow_settings.rdy_redistribute_interval = Some(interval);
        self.flow = self.flow_settings.effective();
        self
    }

    /// go-nsq `low_rdy_idle_timeout`; see [`FlowControl::low_rdy_idle_timeout`] (default
    /// 250 ms).
    pub fn low_rdy_idle_timeout(mut self, timeout: Duration) -> Self {
        self.flow_settings.low_rdy_idle_timeout = Some(timeout);
        self.flow = self.flow_settings.effective();
        self
    }

    /// go-nsq `low_rdy_timeout`; see [`FlowControl::low_rdy_timeout`] (default 500 ms).
    pub fn low_rdy_timeout(mut self, timeout: Duration) -> Self {
        self.flow_settings.low_rdy_timeout = Some(timeout);
        self.flow = self.flow_settings.effective();
        self
    }

    /// go-nsq `backoff_strategy` (default exponential).
    pub fn backoff_strategy(mut self, strategy: BackoffStrategy) -> Self {
        self.flow_settings.backoff_strategy = Some(strategy);
        self.flow = self.flow_settings.effective();
        self
    }

    /// go-nsq `backoff_multiplier` (default 1 s).
    pub fn backoff_multiplier(mut self, multiplier: Duration) -> Self {
        self.flow_settings.backoff_multiplier = Some(multiplier);
        self.flow = self.flow_settings.effective();
        self
    }

    /// go-nsq `max_backoff_duration` (default 2 min; 0 disables backoff).
    pub fn max_backoff_duration(mut self, max: Duration) -> Self {
        self.flow_settings.max_backoff_duration = Some(max);
        self.flow = self.flow_settings.effective();
        self
    }

    /// Connection settings: TLS, compression, AUTH, heartbeats, msg_timeout, timeouts.
    pub fn connection(mut self, config: ConnectionConfig) -> Self {
        self.connection = config;
        self
    }

    /// go-nsq `lookupd_poll_interval` (default 60 s, 10 ms..=5 min).
    pub fn lookupd_poll_interval(mut self, interval: Duration) -> Self {
        self.lookupd_poll_interval = interval;
        self
    }

    /// go-nsq `lookupd_poll_jitter` (default 0.3, 0..=1): the first poll waits a random
    /// `jitter × interval`, so a fleet restarted at once does not poll in step.
    pub fn lookupd_poll_jitter(mut self, jitter: f64) -> Self {
        self.lookupd_poll_jitter = jitter;
        self
    }

    /// go-nsq `lookupd_poll_timeout` (default 60 s): bound on one lookupd request.
    pub fn lookupd_poll_timeout(mut self, timeout: Duration) -> Self {
        self.lookupd_poll_timeout = timeout;
        self
    }

    /// Send `Authorization: Bearer <auth_secret>` to nsqlookupd when an AUTH secret is set
    /// (go-nsq's oddly named `skip_lookupd_authorization`, default true). Only to `https://`
    /// nsqlookupd unless [`lookupd_authorization_over_http`](Self::lookupd_authorization_over_http)
    /// says otherwise.
    pub fn lookupd_authorization(mut self, enabled: bool) -> Self {
        self.lookupd_authorization = enabled;
        self
    }

    /// Also send the AUTH secret to nsqlookupd over plain `http://` (default false: anyone on
    /// the path could read it and use it against nsqd). go-nsq sends it whatever the scheme;
    /// opt in only where the network is trusted, e.g. loopback or a private link.
    pub fn lookupd_authorization_over_http(mut self, enabled: bool) -> Self {
        self.lookupd_authorization_over_http = enabled;
        self
    }

    /// Deadline for [`Consumer::stop`] (default 30 s, go-nsq's fixed value).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Adds a listener of the consumer's lifecycle events: connections (including heartbeats,
    /// responses, identify and AUTH results), handlers, backoff, discovery, and the consumer's
    /// own [`Stopped`](ConsumerEvent::Stopped). Call it again for more listeners; add and
    /// remove them later with [`Consumer::subscribe`](super::Consumer::subscribe).
    pub fn events(mut self, recipient: Recipient<ConsumerEvent>) -> Self {
        self.listeners.push((recipient, Interest::Lifecycle));
        self
    }

    /// As [`events`](Self::events), plus a [`ConsumerEvent::Message`] for every message
    /// (received, finished, requeued, touched, giving up, handler failed, rejected). These
    /// are built only while such a listener exists: without one they cost nothing.
    pub fn message_events(mut self, recipient: Recipient<ConsumerEvent>) -> Self {
        self.listeners.push((recipient, Interest::Messages));
        self
    }

    /// The consumer's name in logs (pynsq/gnsq `name`; default `topic/channel`). Every log
    /// line of its actors (connections with their handler dispatch, coordinator, discoverer)
    /// is inside a tracing span with `consumer`, `topic` and `channel` fields, and `nsqd` for
    /// a connection's.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name [`name`](Self::name) set, or `topic/channel`.
    pub(crate) fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.topic, self.channel))
    }

    /// Transforms each message body before the handler sees it (pynsq `preprocess_method`):
    /// decompress, decrypt, strip an envelope. Runs on the connection's thread, so keep it
    /// quick. Applies to every handler kind; messages past `max_attempts` go to the give-up
    /// hook untransformed. A panic in it is caught and rejects the message as
    /// [`validate_with`](Self::validate_with) would.
    pub fn preprocess<F>(mut self, f: F) -> Self
    where
        F: Fn(Bytes) -> Bytes + Send + Sync + 'static,
    {
        self.hooks.preprocess = Some(Arc::new(f));
        self
    }

    /// Checks each message (after [`preprocess`](Self::preprocess)) before the handler
    /// (pynsq `validate_method`; named so as not to clash with [`validate`](Self::validate),
    /// which checks the settings). `Err(reason)` rejects it: the handler does not see it, it is
    /// finished (or, with [`give_up_rejected`](Self::give_up_rejected), handed to the give-up
    /// hook), and a [`MessageEvent::Rejected`](crate::MessageEvent::Rejected) says why.
    /// Applies to every handler kind.
    pub fn validate_with<F, E>(mut self, f: F) -> Self
    where
        F: Fn(&Delivery) -> Result<(), E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.hooks.validate = Some(Arc::new(move |d: &Delivery| {
            f(d).map_err(|e| e.to_string())
        }));
        self
    }

    /// Send messages [`validate_with`](Self::validate_with) rejects to the give-up hook
    /// ([`give_up`](Self::give_up)) instead of finishing them (default false). The hook's
    /// answer decides: `Ok` finishes, `Err` requeues.
    pub fn give_up_rejected(mut self, enabled: bool) -> Self {
        self.hooks.give_up_rejected = enabled;
        self
    }

    /// Checks every setting, naming the first invalid one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for the topic or channel, [`Error::Config`] otherwise.
    pub fn validate(&self) -> Result<(Topic, Channel), Error> {
        let topic = Topic::new(&self.topic)?;
        let channel = Channel::new(&self.channel)?;
        if self.nsqd.is_empty() && self.lookupd.is_empty() {
            return Err(Error::config(
                "nsqd",
                "give at least one nsqd or nsqlookupd address",
            ));
        }
        for addr in &self.nsqd {
            validate_addr(addr).map_err(|reason| Error::config("nsqd", reason))?;
        }
        for addr in &self.lookupd {
            crate::lookup::lookup_url(addr, &topic)
                .map_err(|reason| Error::config("lookupd", reason))?;
        }
        if let Some(problem) = self.handlers.problem() {
            return Err(Error::config("handler", problem));
        }
        if self.handlers.budget.within.is_zero() {
            return Err(Error::config(
                "handler_restarts",
                "the window must be greater than zero",
            ));
        }
        if self.max_attempts > u32::from(u16::MAX) {
            return Err(Error::config("max_attempts", "must be at most 65535"));
        }
        let hour = Duration::from_secs(3600);
        if self.default_requeue_delay > hour {
            return Err(Error::config(
                "default_requeue_delay",
                "must be at most 60 min",
            ));
        }
        if self.max_requeue_delay > hour {
            return Err(Error::config("max_requeue_delay", "must be at most 60 min"));
        }
        let poll = self.lookupd_poll_interval;
        if poll < Duration::from_millis(10) || poll > Duration::from_secs(300) {
            return Err(Error::config(
                "lookupd_poll_interval",
                "must be within 10 ms..=5 min",
            ));
        }
        if !(0.0..=1.0).contains(&self.lookupd_poll_jitter) {
            return Err(Error::config("lookupd_poll_jitter", "must be within 0..=1"));
        }
        if self.lookupd_poll_timeout.is_zero() {
            return Err(Error::config(
                "lookupd_poll_timeout",
                "must be greater than zero",
            ));
        }
        if self.connection.heartbeat().is_none() {
            return Err(Error::config(
                "heartbeat_interval",
                "nsqd refuses SUB with heartbeats disabled",
            ));
        }
        self.validate_discovery_limits()?;
        self.flow_settings.conflict()?;
        self.flow.validate()?;
        self.connection.validate()?;
        self.validate_extras()?;
        Ok((topic, channel))
    }

    /// Validates the settings and starts the consumer's actors in the current actix arbiter.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate); [`Error::NoActixSystem`] outside a running actix
    /// `System` (actors need one).
    pub fn start(self) -> Result<Consumer, Error> {
        let (topic, channel) = self.validate()?;
        crate::runtime::ensure_actix_system("a Consumer")?;
        // Start the handler actors or threads now, so that a failure is an error here.
        self.handlers.sink()?;
        Ok(Consumer::start(self, topic, channel))
    }

    /// The handlers started by [`start`](Self::start).
    pub(crate) fn handler_sink(&self) -> HandlerSink {
        self.handlers.started()
    }

    /// Used by the shared `give_up`/`give_up_fn` setters.
    fn set_give_up(&mut self, hook: GiveUpHook) {
        self.give_up = hook;
    }
}

/// Discovery limits.
impl ConsumerBuilder {
    /// 100 connections: well above the nsqd count of a topic in typical clusters (tens), and
    /// a bounded cost when nsqlookupd lists far more (each connection is an actor, a socket,
    /// a 64 KiB read buffer; 100 stay far from the common 1024 file descriptor limit). Past
    /// `max_in_flight` connections, RDY rotates among them anyway (go-nsq has no limit).
    pub const DEFAULT_MAX_NSQD_CONNECTIONS: u32 = 100;

    /// At most this many nsqd connections (1..=10 000). nsqd that nsqlookupd lists beyond it
    /// get no connection (a random choice of the listed ones does), and a
    /// [`ConsumerEvent::ConnectionLimitReached`] says so. Addresses given with
    /// [`nsqd`](Self::nsqd) always get their connection, and count toward the limit.
    pub fn max_nsqd_connections(mut self, n: u32) -> Self {
        self.max_nsqd_connections = n;
        self
    }

    fn validate_discovery_limits(&self) -> Result<(), Error> {
        if !(1..=10_000).contains(&self.max_nsqd_connections) {
            return Err(Error::config(
                "max_nsqd_connections",
                "must be within 1..=10000",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("topic", &self.topic)
            .field("channel", &self.channel)
            .field("nsqd", &self.nsqd)
            .field(
                "lookupd",
                &self
                    .lookupd
                    .iter()
                    .map(|a| crate::http::redact_credentials(a))
                    .collect::<Vec<_>>(),
            )
            .field("flow", &self.flow)
            .field("connection", &self.connection)
            .field("handler_actors", &self.handlers.actor_count())
            .field("handler_fn", &self.handlers.has_closure())
            .field("max_attempts", &self.max_attempts)
            .field("default_requeue_delay", &self.default_requeue_delay)
            .field("max_requeue_delay", &self.max_requeue_delay)
            .field("lookupd_poll_interval", &self.lookupd_poll_interval)
            .field("lookupd_poll_jitter", &self.lookupd_poll_jitter)
            .field("lookupd_poll_timeout", &self.lookupd_poll_timeout)
            .field("lookupd_authorization", &self.lookupd_authorization)
            .field(
                "lookupd_authorization_over_http",
                &self.lookupd_authorization_over_http,
            )
            .field("stop_timeout", &self.stop_timeout)
            .field("name", &self.name)
            .field("listeners", &self.listeners.len())
            .field("preprocess", &self.hooks.preprocess.is_some())
            .field("validate_with", &self.hooks.validate.is_some())
            .field("give_up_rejected", &self.hooks.give_up_rejected)
            .finish()
    }
}
