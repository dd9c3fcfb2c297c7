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
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use actix::{Actor, Addr, MailboxError};
use bytes::Bytes;
use tokio::{
    sync::{Notify, Semaphore},
    time::{timeout_at, Instant},
};

pub use builder::{ProducerBuilder, RetryPolicy};

use self::{
    limits::ServerLimits,
    relay::{EventRelay, Health, Healths},
};
use crate::{
    conn::{Close, ConnCounters, ConnectionParams, ConnectionStats, NsqdConnection, Ping, Publish},
    error::{BodyError, Error},
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
    slots: Vec<Slot>,
    next: AtomicUsize,
    request_timeout: Duration,
    max_defer: Duration,
    max_outstanding: usize,
    retry: RetryPolicy,
    limits: PublishLimits,
    stopped: AtomicBool,
    /// Notified whenever a connection's health changes.
    changed: Arc<Notify>,
    healths: Healths,
    last_error: Arc<Mutex<Option<Error>>>,
    _relay: Addr<EventRelay>,
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
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<&str> = self.inner.slots.iter().map(|s| &*s.addr).collect();
        f.debug_struct("Producer").field("nsqd", &addrs).finish()
    }
}

impl Producer {
    /// Starts configuring a producer.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::new()
    }

    fn start(builder: ProducerBuilder) -> Self {
        let changed = Arc::new(Notify::new());
        let healths: Healths = Arc::new(Mutex::new(vec![Health::Starting; builder.nsqd.len()]));
        let last_error = Arc::new(Mutex::new(None));
        let limits: Vec<Arc<ServerLimits>> = builder
            .nsqd
            .iter()
            .map(|_| Arc::new(ServerLimits::new(builder.connection.publish_limits)))
            .collect();
        let learn_from: Vec<_> = builder
            .nsqd_http
            .iter()
            .cloned()
            .zip(limits.iter().cloned())
            .collect();
        let relay = EventRelay::new(
            changed.clone(),
            healths.clone(),
            last_error.clone(),
            builder.events.clone(),
        )
        .learn_limits_from(learn_from);
        let tap: std::rc::Rc<dyn crate::events::Tap> = std::rc::Rc::new(relay.listeners());
        let relay = relay.start();
        let config = Arc::new(builder.connection.clone());
        let slots = builder
            .nsqd
            .iter()
            .enumerate()
            .map(|(id, addr)| {
                let addr: Arc<str> = Arc::from(addr.as_str());
                let counters = Arc::new(ConnCounters::default());
                let actor = NsqdConnection::start(ConnectionParams {
                    id: id as u64,
                    addr: addr.clone(),
                    config: config.clone(),
                    subscription: None,
                    events: Some(relay.clone().recipient()),
                    tap: Some(tap.clone()),
                    counters: counters.clone(),
                    span: tracing::info_span!(parent: None, "nsq_producer", nsqd = %addr),
                });
                Slot {
                    addr,
                    actor,
                    counters,
                    permits: Arc::new(Semaphore::new(builder.max_outstanding)),
                    limits: limits[id].clone(),
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                slots,
                next: AtomicUsize::new(0),
                request_timeout: builder.request_timeout,
                max_defer: builder.max_defer,
                max_outstanding: builder.max_outstanding,
                retry: builder.retry,
                limits: builder.connection.publish_limits,
                stopped: AtomicBool::new(false),
                changed,
                healths,
                last_error,
                _relay: relay,
            }),
        }
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
        let deadline = Instant::now() + self.inner.request_timeout;
        let slot = self.connected_slot(deadline, &Command::Nop).await?;
        slot.actor.send(Ping).await.map_err(mailbox)?
    }

    /// Stops the producer: new publishes fail with [`Error::Stopped`], publishes already
    /// written are answered (within 10 s), then the connections close.
    pub async fn stop(&self) {
        self.stop_within(Duration::from_secs(10)).await;
    }

    /// As [`stop`](Self::stop), with a deadline for outstanding publishes.
    pub async fn stop_within(&self, deadline: Duration) {
        self.inner.stopped.store(true, Relaxed);
        let closes = self
            .inner
            .slots
            .iter()
            .map(|slot| slot.actor.send(Close { deadline }));
        for close in closes {
            let _ = close.await;
        }
    }

    /// A snapshot of every connection.
    pub fn stats(&self) -> Vec<ConnectionStats> {
        self.inner
            .slots
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
        let deadline = Instant::now() + self.inner.request_timeout;
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
                .map_err(|_| Error::Timeout("waiting for a publish slot"))?
                .map_err(|_| Error::Stopped)?;
            #[cfg(feature = "metrics")]
            let started = std::time::Instant::now();
            let answer = timeout_at(deadline, slot.actor.send(Publish(command.clone()))).await;
            #[cfg(feature = "metrics")]
            crate::metrics::publish_answered(&slot.addr, &command, started, &answer);
            drop(permit);
            match answer {
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
                    self.learn_limit(slot, &error);
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
    async fn connected_slot(&self, deadline: Instant, command: &Command) -> Result<&Slot, Error> {
        let slots = &self.inner.slots;
        // Refused everywhere, up or not: no need to wait for a connection to say so.
        if let Some(Err(error)) = slots
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
                return Ok(slot);
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
        self.inner
            .slots
            .iter()
            .map(|s| (s.addr.to_string(), s.limits.get()))
            .collect()
    }

    /// Publishes awaiting an answer, across all connections.
    pub fn outstanding(&self) -> usize {
        self.inner
            .slots
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
        self.inner._relay.do_send(crate::events::Subscribe {
            id,
            recipient,
            interest: crate::events::Interest::Lifecycle,
        });
        id
    }

    /// Removes a listener (a no-op if it is gone already).
    pub fn unsubscribe(&self, id: crate::ListenerId) {
        self.inner._relay.do_send(crate::events::Unsubscribe(id));
    }
}
