//! [`Producer`]: publishes over TCP to one or more nsqd.
//!
//! Each nsqd gets one supervised [`NsqdConnection`](crate::conn). Publishes are pipelined:
//! many callers can have commands in flight on one connection, and nsqd's answers are matched
//! to them in order. A per-connection bound on outstanding publishes makes callers wait rather
//! than grow memory. Publishes spread round-robin over the connections that are up and fail over
//! when one is down. A publish whose connection died after it was written fails with
//! [`Error::OutcomeUnknown`] (it may have been enqueued); it is retried only under
//! [`RetryPolicy::AcceptDuplicates`].

mod builder;
mod limits;
mod relay;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use actix::{Actor, Addr, MailboxError};
use bytes::Bytes;
use tokio::{
    sync::{oneshot, Notify, Semaphore},
    time::{timeout_at, Instant},
};

pub use builder::{ProducerBuilder, RetryPolicy};

use self::{
    limits::ServerLimits,
    relay::{EventRelay, Health, Healths, StopAll, Track},
};
use crate::{
    conn::{
        validate_addr, ConnCounters, ConnectionConfig, ConnectionParams, ConnectionStats,
        NsqdConnection, Ping, Publish,
    },
    error::{BodyError, Error, PUBLISH_NOT_SENT},
    protocol::{Batch, Body, Command, PublishLimits, Topic},
};

/// Anything that names a topic: `&str`, `String`, or an already validated [`Topic`].
pub trait IntoTopic {
    /// Validates (if needed) and converts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name nsqd would reject.
    fn into_topic(self) -> Result<Topic, Error>;
}

impl IntoTopic for Topic {
    fn into_topic(self) -> Result<Topic, Error> {
        Ok(self)
    }
}
impl IntoTopic for &Topic {
    fn into_topic(self) -> Result<Topic, Error> {
        Ok(self.clone())
    }
}
impl IntoTopic for &str {
    fn into_topic(self) -> Result<Topic, Error> {
        Topic::new(self)
    }
}
impl IntoTopic for String {
    fn into_topic(self) -> Result<Topic, Error> {
        Topic::new(self)
    }
}
impl IntoTopic for &String {
    fn into_topic(self) -> Result<Topic, Error> {
        Topic::new(self)
    }
}

struct Slot {
    addr: Arc<str>,
    actor: Addr<NsqdConnection>,
    counters: Arc<ConnCounters>,
    permits: Arc<Semaphore>,
    /// This nsqd's publish limits, lowered by what its errors or its HTTP API said.
    limits: Arc<ServerLimits>,
}

struct Inner {
    /// One per nsqd, in connection id order; grows with `connect_nsqd`, never shrinks.
    slots: RwLock<Vec<Arc<Slot>>>,
    config: Arc<ConnectionConfig>,
    next: AtomicUsize,
    max_defer: Duration,
    max_outstanding: usize,
    retry: RetryPolicy,
    limits: PublishLimits,
    stopped: AtomicBool,
    /// Set when a stop completed.
    stop_done: Arc<AtomicBool>,
    /// Notified whenever a connection's health changes.
    changed: Arc<Notify>,
    healths: Healths,
    last_error: Arc<Mutex<Option<Error>>>,
    relay: Addr<EventRelay>,
    /// The producer's listeners: each connection reports what it observes straight to them.
    listeners: crate::events::Listeners<crate::ConnectionEvent>,
}

/// Publishes to nsqd. Cheap to clone; clones share the connections. See the module docs.
///
/// ```no_run
/// # async fn run() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::Producer;
///
/// let producer = Producer::builder().nsqd("127.0.0.1:4150").start()?;
/// producer.publish("events", "hello").await?;
/// producer.multi_publish("events", ["a", "b", "c"]).await?;
/// producer.deferred_publish("events", std::time::Duration::from_secs(5), "later").await?;
/// producer.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    /// This handle's bound on a whole publish (see [`with_timeout`](Self::with_timeout)).
    timeout: Duration,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<Arc<str>> = self.slots().iter().map(|s| s.addr.clone()).collect();
        f.debug_struct("Producer")
            .field("nsqd", &addrs)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Producer {
    /// Starts configuring a producer.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::new()
    }

    fn start(builder: ProducerBuilder) -> Self {
        let changed = Arc::new(Notify::new());
        let healths: Healths = Arc::new(Mutex::new(Vec::new()));
        let last_error = Arc::new(Mutex::new(None));
        let relay = EventRelay::new(
            changed.clone(),
            healths.clone(),
            last_error.clone(),
            builder.events.clone(),
        );
        let listeners = relay.listeners();
        let relay = relay.start();
        let producer = Self {
            inner: Arc::new(Inner {
                slots: RwLock::new(Vec::new()),
                config: Arc::new(builder.connection.clone()),
                next: AtomicUsize::new(0),
                max_defer: builder.max_defer,
                max_outstanding: builder.max_outstanding,
                retry: builder.retry,
                limits: builder.connection.publish_limits,
                stopped: AtomicBool::new(false),
                stop_done: Arc::new(AtomicBool::new(false)),
                changed,
                healths,
                last_error,
                relay,
                listeners,
            }),
            timeout: builder.request_timeout,
        };
        for (tcp, http) in builder.nsqd.iter().zip(&builder.nsqd_http) {
            producer.add_slot(tcp, http.clone());
        }
        producer
    }

    /// Starts a connection to `addr` (in the current arbiter) unless there is one already.
    /// Health, relay entry and slot are added under the slots' write lock, so the connection
    /// id, the index of all three, is the same.
    fn add_slot(&self, addr: &str, http: Option<String>) {
        let mut slots = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
        if slots.iter().any(|s| &*s.addr == addr) {
            return;
        }
        let id = slots.len() as u64;
        if let Ok(mut healths) = self.inner.healths.lock() {
            healths.push(Health::Starting);
        }
        let limits = Arc::new(ServerLimits::new(self.inner.limits));
        // Before the connection starts: its first event finds the entry.
        self.inner.relay.do_send(Track {
            id,
            http,
            limits: limits.clone(),
        });
        let addr: Arc<str> = Arc::from(addr);
        let counters = Arc::new(ConnCounters::default());
        let actor = NsqdConnection::start(ConnectionParams {
            id,
            addr: addr.clone(),
            config: self.inner.config.clone(),
            subscription: None,
            events: Some(self.inner.relay.clone().recipient()),
            tap: Some(std::rc::Rc::new(self.inner.listeners.clone())),
            counters: counters.clone(),
            span: tracing::info_span!(parent: None, "nsq_producer", nsqd = %addr),
        });
        slots.push(Arc::new(Slot {
            addr,
            actor,
            counters,
            permits: Arc::new(Semaphore::new(self.inner.max_outstanding)),
            limits,
        }));
    }

    /// The connections now.
    fn slots(&self) -> Vec<Arc<Slot>> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connects to another nsqd at run time (gnsq `connect_to_nsqd`; go-nsq has one
    /// producer per nsqd). Publishes spread over it as soon as it is up, as over those given
    /// to the builder. Nothing happens if the producer already has that address.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an address that is not `host:port`; [`Error::Stopped`] after
    /// [`stop`](Self::stop); [`Error::NoActixSystem`] outside a running actix `System` (the
    /// connection is an actor, started on the calling thread's arbiter).
    #[doc(alias = "connect_to_nsqd")]
    pub fn connect_nsqd(&self, addr: impl Into<String>) -> Result<(), Error> {
        self.connect(addr.into(), None)
    }

    /// As [`connect_nsqd`](Self::connect_nsqd), with the nsqd's HTTP address to read its
    /// publish limits from (as [`ProducerBuilder::nsqd_with_http`]).
    ///
    /// # Errors
    ///
    /// As [`connect_nsqd`](Self::connect_nsqd); [`Error::Config`] for a bad HTTP address.
    pub fn connect_nsqd_with_http(
        &self,
        tcp: impl Into<String>,
        http: impl Into<String>,
    ) -> Result<(), Error> {
        let http = http.into();
        crate::http::endpoint_base_url(&http).map_err(|e| match e {
            Error::Config { reason, .. } => Error::config("nsqd_http", reason),
            other => other,
        })?;
        self.connect(tcp.into(), Some(http))
    }

    fn connect(&self, addr: String, http: Option<String>) -> Result<(), Error> {
        validate_addr(&addr).map_err(|reason| Error::config("nsqd", reason))?;
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        crate::runtime::ensure_actix_system("a Producer connection")?;
        self.add_slot(&addr, http);
        // Publishes waiting for a connection look again (and see the new one once it is up).
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// A handle to the same producer whose publishes (and pings) are bounded by `timeout`
    /// instead of the builder's [`request_timeout`](ProducerBuilder::request_timeout): gnsq's
    /// per-call `timeout`. Cheap (one `Arc`); the connections, the stop and the statistics
    /// are shared with every other handle.
    ///
    /// ```no_run
    /// # async fn run(producer: actix_nsq::Producer) -> Result<(), actix_nsq::Error> {
    /// use std::time::Duration;
    ///
    /// let quick = producer.with_timeout(Duration::from_millis(250));
    /// quick.publish("events", "must be fast").await?;
    /// producer.publish("events", "may take the default 10 s").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// What a timeout means for the message depends on when it struck, and the error says
    /// which ([`Error::outcome_unknown`]):
    /// * waiting for a connection: the last connection error, else [`Error::NotConnected`];
    ///   waiting for a publish slot (too many publishes outstanding), or with no time left
    ///   to send: [`Error::Timeout`] with `outcome_unknown()` false. Nothing was written.
    /// * waiting for nsqd's answer: [`Error::Timeout`] with `outcome_unknown()` true. The
    ///   publish was handed to its connection and may have been enqueued; it is not retried,
    ///   whatever the [`RetryPolicy`], as the time is up.
    pub fn with_timeout(&self, timeout: Duration) -> Producer {
        Producer {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// True until a [`stop`](Self::stop) has completed (false from then on, even if the
    /// caller stopped waiting for it), or until the producer's actors are gone (their actix
    /// `System` stopped). While a stop runs it is still true, though new publishes already
    /// fail with [`Error::Stopped`].
    pub fn is_running(&self) -> bool {
        !self.inner.stop_done.load(Ordering::Acquire) && self.inner.relay.connected()
    }

    /// Publishes one message (PUB) and waits for nsqd's `OK`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]/[`Error::InvalidBody`] before anything is sent (bad topic, empty
    /// or oversized body); [`Error::Server`] if nsqd refused it; [`Error::Connect`] (naming
    /// the nsqd and the cause) as soon as every nsqd's latest connection attempt has failed;
    /// [`Error::Timeout`], or the last connection error (else [`Error::NotConnected`]), when
    /// no nsqd could take it in time; [`Error::OutcomeUnknown`] when the connection died
    /// before nsqd answered; [`Error::Stopped`] after `stop()`.
    pub async fn publish(
        &self,
        topic: impl IntoTopic,
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let command = Command::Pub {
            topic: topic.into_topic()?,
            body: Body::new(body)?,
        };
        self.send(command).await
    }

    /// Publishes several messages in one MPUB and waits for nsqd's `OK` (all or nothing).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish); also [`BodyError::NoMessages`] for an empty batch and
    /// [`BodyError::BatchTooLarge`] over nsqd's `--max-body-size`.
    pub async fn multi_publish<I, B>(&self, topic: impl IntoTopic, bodies: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let command = Command::Mpub {
            topic: topic.into_topic()?,
            bodies: Batch::new(bodies)?,
        };
        self.send(command).await
    }

    /// Publishes a message that becomes deliverable after `delay` (DPUB).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish); also [`BodyError::DeferOutOfRange`] past `max_defer`.
    pub async fn deferred_publish(
        &self,
        topic: impl IntoTopic,
        delay: Duration,
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        if delay > self.inner.max_defer {
            let max_ms = u64::try_from(self.inner.max_defer.as_millis()).unwrap_or(u64::MAX);
            return Err(BodyError::DeferOutOfRange {
                ms: delay.as_millis(),
                max_ms,
            }
            .into());
        }
        let command = Command::Dpub {
            topic: topic.into_topic()?,
            delay,
            body: Body::new(body)?,
        };
        self.send(command).await
    }

    /// Checks that a connection is up and can be written to (sends a NOP; nsqd does not answer
    /// NOPs, so this proves the write path, not a round trip).
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] / [`Error::Timeout`] when no connection came up in time.
    pub async fn ping(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.timeout;
        let slot = self.connected_slot(deadline, &Command::Nop).await?;
        slot.actor.send(Ping).await.map_err(mailbox)?
    }

    /// Stops the producer: new publishes fail with [`Error::Stopped`], publishes already
    /// written are answered (within 10 s), then the connections close.
    pub async fn stop(&self) {
        self.stop_within(Duration::from_secs(10)).await;
    }

    /// As [`stop`](Self::stop), with a deadline for outstanding publishes.
    ///
    /// The stop is under way from the first poll of the returned future: it completes even
    /// if that future is dropped then (e.g. by a `timeout` around it).
    pub async fn stop_within(&self, deadline: Duration) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let (done, finished) = oneshot::channel();
        self.inner.relay.do_send(StopAll {
            conns: self.slots().iter().map(|s| s.actor.clone()).collect(),
            deadline,
            stopped: self.inner.stop_done.clone(),
            done,
        });
        let _ = finished.await;
    }

    /// A snapshot of every connection.
    pub fn stats(&self) -> Vec<ConnectionStats> {
        self.slots()
            .iter()
            .map(|s| s.counters.snapshot(&s.addr))
            .collect()
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        if self.inner.stopped.load(Relaxed) {
            return Err(Error::Stopped);
        }
        // Checked here too so that the caller gets the error at once and no connection ever
        // draws nsqd's fatal E_BAD_MESSAGE / E_BAD_BODY.
        self.inner.limits.check(&command)?;
        let deadline = Instant::now() + self.timeout;
        let mut retries = match self.inner.retry {
            RetryPolicy::Never => 0,
            RetryPolicy::AcceptDuplicates { attempts } => attempts,
        };
        loop {
            let slot = self.connected_slot(deadline, &command).await;
            #[cfg(feature = "metrics")]
            crate::metrics::publish_unrouted(&command, &slot);
            let slot = slot?;
            let permit = timeout_at(deadline, slot.permits.clone().acquire_owned())
                .await
                .map_err(|_| Error::Timeout(PUBLISH_NOT_SENT))?
                .map_err(|_| Error::Stopped)?;
            if Instant::now() >= deadline {
                // No time left to wait for an answer: do not write what cannot be confirmed.
                return Err(Error::Timeout(PUBLISH_NOT_SENT));
            }
            #[cfg(feature = "metrics")]
            let started = std::time::Instant::now();
            let answer = timeout_at(deadline, slot.actor.send(Publish(command.clone()))).await;
            #[cfg(feature = "metrics")]
            crate::metrics::publish_answered(&slot.addr, &command, started, &answer);
            drop(permit);
            match answer {
                // Handed to the connection: it may be written, and enqueued, or (if the
                // connection had not taken it from its mailbox yet) dropped unwritten, as actix
                // skips a message whose sender went away. Unknown either way.
                Err(_) => return Err(Error::Timeout("waiting for nsqd to answer the publish")),
                Ok(Err(MailboxError::Closed | MailboxError::Timeout)) => continue,
                Ok(Ok(Ok(()))) => return Ok(()),
                // Not written: safe to try another connection.
                Ok(Ok(Err(Error::NotConnected))) => continue,
                Ok(Ok(Err(error @ Error::OutcomeUnknown { .. }))) => {
                    if retries == 0 {
                        return Err(error);
                    }
                    retries -= 1;
                    tracing::debug!(%error, retries, "retrying publish; it may be duplicated");
                }
                Ok(Ok(Err(error))) => {
                    self.learn_limit(&slot, &error);
                    return Err(error);
                }
            }
        }
    }

    /// After nsqd refused a publish as too big (fatal: it cost the connection), remembers the
    /// limit it stated so that the next such publish is refused before it is written.
    fn learn_limit(&self, slot: &Slot, error: &Error) {
        let Error::Server(server_error) = error else {
            return;
        };
        if let Some(learned) = limits::learn(server_error) {
            if slot.limits.lower(learned) {
                tracing::warn!(nsqd = %slot.addr, ?learned, limits = ?slot.limits.get(),
                    "nsqd refused a publish as too big; its limit is now checked before writing");
            }
        }
    }

    /// The next connection that is up, round robin; waits for one until `deadline`, unless
    /// every connection's latest attempt failed: then the error names the nsqd and the cause
    /// at once.
    ///
    /// Connections whose nsqd is known to refuse `command` as too big are passed over; when
    /// every connection that is up would refuse it, so does this (nothing is written).
    async fn connected_slot(
        &self,
        deadline: Instant,
        command: &Command,
    ) -> Result<Arc<Slot>, Error> {
        // Refused everywhere, up or not: no need to wait for a connection to say so.
        if let Some(Err(error)) = self
            .slots()
            .iter()
            .map(|s| s.limits.check(command))
            .reduce(|a, b| a.or(b))
        {
            return Err(error);
        }
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Read again each time: connect_nsqd may have added one.
            let slots = self.slots();
            let start = self.inner.next.fetch_add(1, Relaxed);
            let mut refused = None;
            let up = (0..slots.len())
                .map(|i| &slots[(start + i) % slots.len()])
                .filter(|s| s.counters.connected.load(Relaxed))
                .find(|s| match s.limits.check(command) {
                    Ok(()) => true,
                    Err(error) => {
                        refused.get_or_insert(error);
                        false
                    }
                });
            if let Some(slot) = up {
                return Ok(slot.clone());
            }
            if let Some(error) = refused {
                return Err(error);
            }
            if self.inner.stopped.load(Relaxed) {
                return Err(Error::Stopped);
            }
            if let Some(error) = self.all_failed() {
                return Err(error);
            }
            if timeout_at(deadline, notified).await.is_err() {
                // Say why no connection is up, if a connection attempt said so.
                let last = self.inner.last_error.lock().ok().and_then(|e| e.clone());
                return Err(last.unwrap_or(Error::NotConnected));
            }
        }
    }

    /// When no connection can be waited for (each one's latest attempt failed), the most
    /// recent failure.
    fn all_failed(&self) -> Option<Error> {
        let healths = self.inner.healths.lock().ok()?;
        let all_failed = healths.iter().all(|h| matches!(h, Health::Failed(_)));
        if !all_failed {
            return None;
        }
        let last = self.inner.last_error.lock().ok().and_then(|e| e.clone());
        last.or_else(|| match healths.first() {
            Some(Health::Failed(error)) => Some(error.clone()),
            _ => None,
        })
    }

    /// The publish limits checked before writing, per nsqd: the configured ones, lowered by
    /// what each nsqd stated (in a "too big" refusal, or in its HTTP `/config` when its
    /// address was given with [`ProducerBuilder::nsqd_with_http`]).
    pub fn publish_limits(&self) -> Vec<(String, PublishLimits)> {
        self.slots()
            .iter()
            .map(|s| (s.addr.to_string(), s.limits.get()))
            .collect()
    }

    /// Publishes awaiting an answer, across all connections.
    pub fn outstanding(&self) -> usize {
        self.slots()
            .iter()
            .map(|s| self.inner.max_outstanding - s.permits.available_permits())
            .sum()
    }
}

fn mailbox(_: MailboxError) -> Error {
    Error::NotConnected
}

/// Listeners, added and removed at run time.
impl Producer {
    /// Adds a listener of connection events (see
    /// [`ProducerBuilder::events`](ProducerBuilder::events)). The registry lives in the
    /// producer's event actor, which takes the listener in on its next turn: events from then
    /// on reach it.
    pub fn subscribe(
        &self,
        recipient: actix::Recipient<crate::ConnectionEvent>,
    ) -> crate::ListenerId {
        let id = crate::ListenerId::next();
        self.inner.relay.do_send(crate::events::Subscribe {
            id,
            recipient,
            interest: crate::events::Interest::Lifecycle,
        });
        id
    }

    /// Removes a listener (a no-op if it is gone already).
    pub fn unsubscribe(&self, id: crate::ListenerId) {
        self.inner.relay.do_send(crate::events::Unsubscribe(id));
    }
}
