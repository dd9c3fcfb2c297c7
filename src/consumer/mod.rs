//! [`Consumer`]: reads a topic through a channel from every nsqd that has it.
//!
//! The actor topology (see DESIGN.md): a coordinator actor, under a `Supervisor` and
//! restartable without losing state, owns one supervised [`NsqdConnection`](crate::conn) per
//! nsqd, a supervised [`LookupdDiscoverer`](crate::lookup) when nsqlookupd addresses are
//! given, and the flow core (RDY policy and consumer-wide backoff), which the connections
//! consult synchronously. The flow core reaches connections through `Recipient<SetRdy>` and
//! the coordinator through a `Recipient<FlowNotice>`, never concrete addresses. Deliveries go
//! straight from a connection to the handler actors (or closure), and answers straight back.
//! Discovery is bounded: requeries are rate-limited, an nsqd that keeps failing is held back
//! across rediscovery, and at most `max_nsqd_connections` connections are opened.

mod actor;
mod builder;
mod discovery;
mod events;
mod flow;
mod flow_settings;
mod handlers;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix::Addr;

pub use builder::ConsumerBuilder;
pub use events::ConsumerEvent;

use self::{
    actor::{
        AddNsqd, ConsumerActor, QueryLookupd, Redistribute, SetMaxInFlight, SharedConns, Stop,
    },
    flow::FlowState,
};
use crate::{
    conn::ConnectionStats,
    protocol::{Channel, Topic},
};

/// A running consumer. Cheap to clone; clones control the same consumer.
///
/// ```no_run
/// # async fn run() -> Result<(), actix_nsq::Error> {
/// use actix_nsq::{Consumer, Delivery};
///
/// let consumer = Consumer::builder("events", "indexer")
///     .nsqd("127.0.0.1:4150")
///     .max_in_flight(200)
///     .handler_fn(|delivery: Delivery| async move {
///         println!("got {} bytes", delivery.body().len());
///         Ok(()) // finishes the message; an Err requeues it with backoff
///     })
///     .start()?;
/// consumer.set_max_in_flight(0); // pause
/// consumer.set_max_in_flight(200); // resume
/// consumer.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Consumer {
    actor: Addr<ConsumerActor>,
    conns: SharedConns,
    topic: Topic,
    channel: Channel,
    stop_timeout: Duration,
    state: Arc<FlowState>,
    /// Set when a stop completed.
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .field("channel", &self.channel)
            .finish()
    }
}

/// A snapshot of a consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Every connection, up or down.
    pub connections: Vec<ConnectionStats>,
    /// The current `max_in_flight`.
    pub max_in_flight: u32,
    /// Σ RDY over the connections, as last sent (never above `max_in_flight`).
    pub total_rdy: u64,
    /// The backoff level; 0 when not backing off.
    pub backoff_level: u32,
    /// True while a backoff pause holds every connection at RDY 0.
    pub backoff_paused: bool,
    /// Messages received over all connections.
    pub received: u64,
    /// Messages finished.
    pub finished: u64,
    /// Messages requeued.
    pub requeued: u64,
    /// Messages in flight now.
    pub in_flight: u64,
}

impl Consumer {
    /// Starts configuring a consumer of `topic` through `channel`.
    pub fn builder(topic: impl Into<String>, channel: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder::new(topic, channel)
    }

    /// Starts the actors; the caller checked that an actix System runs.
    fn start(builder: ConsumerBuilder, topic: Topic, channel: Channel) -> Self {
        let conns: SharedConns = Arc::new(Mutex::new(Vec::new()));
        let stop_timeout = builder.stop_timeout;
        let state = Arc::new(FlowState::default());
        let actor = ConsumerActor::new(
            builder,
            topic.clone(),
            channel.clone(),
            conns.clone(),
            state.clone(),
        );
        Self {
            actor: actor.start(),
            conns,
            topic,
            channel,
            stop_timeout,
            state,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Changes `max_in_flight` at once: 0 pauses (RDY 0 everywhere), any other value resumes.
    pub fn set_max_in_flight(&self, n: u32) {
        self.actor.do_send(SetMaxInFlight(n));
    }

    /// Connects to another nsqd (no-op if already connected).
    pub fn connect_nsqd(&self, addr: impl Into<String>) {
        self.actor.do_send(AddNsqd(addr.into()));
    }

    /// Queries nsqlookupd now rather than at the next poll (pynsq and gnsq `query_lookupd`),
    /// e.g. when you know an nsqd was just added. Resolves once the query is sent or
    /// scheduled, not answered: what it finds arrives as [`ConsumerEvent::Discovered`] or
    /// [`ConsumerEvent::DiscoveryFailed`], and new nsqd are connected as after any poll.
    /// Resolves with `false` when there is nothing to ask (no
    /// [`lookupd`](ConsumerBuilder::lookupd) configured, or the consumer is stopping).
    ///
    /// Not subject to the limit on automatic requeries (one per 5 s, see the module docs):
    /// the query goes out at once, unless a query went out less than a second ago. Then one
    /// query is scheduled for the end of that second and further calls join it, so calling
    /// this in a loop costs nsqlookupd at most one query a second per consumer.
    pub async fn query_lookupd(&self) -> bool {
        self.actor.send(QueryLookupd).await.unwrap_or(false)
    }

    /// Redistributes RDY among the connections now instead of at the next tick of
    /// [`rdy_redistribute_interval`](crate::FlowControl::rdy_redistribute_interval) (go-nsq's
    /// `redistributeRDY`, pynsq and gnsq `redistribute_ready_state`). It only matters while
    /// connections outnumber `max_in_flight` (or a backoff holds a single RDY): connections
    /// that were idle for `low_rdy_idle_timeout`, or held their RDY for `low_rdy_timeout`, give
    /// it to those that waited longest. Otherwise every connection already holds its share
    /// and this does nothing.
    pub fn redistribute_ready_state(&self) {
        self.actor.do_send(Redistribute);
    }

    /// True until a [`stop`](Self::stop) has completed (false from then on, even if the
    /// caller stopped waiting for it), or until the consumer's actors are gone (their actix
    /// `System` stopped). While a stop runs, it is still true: messages in flight are still
    /// being answered.
    pub fn is_running(&self) -> bool {
        !self.stopped.load(Ordering::Acquire) && self.actor.connected()
    }

    /// Per-connection RDY, in flight, finished, requeued, and totals.
    pub fn stats(&self) -> ConsumerStats {
        let connections: Vec<ConnectionStats> = self
            .conns
            .lock()
            .map(|conns| conns.iter().map(|(addr, c)| c.snapshot(addr)).collect())
            .unwrap_or_default();
        ConsumerStats {
            max_in_flight: self.state.max_in_flight.load(Ordering::Relaxed),
            total_rdy: self.state.total_rdy.load(Ordering::Relaxed),
            backoff_level: self.state.backoff_level.load(Ordering::Relaxed),
            backoff_paused: self.state.backoff_paused.load(Ordering::Relaxed),
            received: connections.iter().map(|c| c.received).sum(),
            finished: connections.iter().map(|c| c.finished).sum(),
            requeued: connections.iter().map(|c| c.requeued).sum(),
            in_flight: connections.iter().map(|c| u64::from(c.in_flight)).sum(),
            connections,
        }
    }

    /// True if any connection is at 85 % of its RDY or more (go-nsq `IsStarved`): the
    /// handlers, not nsqd, are the bottleneck. Batching handlers flush on this.
    pub fn is_starved(&self) -> bool {
        self.stats()
            .connections
            .iter()
            .any(|c| c.in_flight > 0 && u64::from(c.in_flight) >= u64::from(c.rdy) * 85 / 100)
    }

    /// Stops gracefully within the configured `stop_timeout` (default 30 s): CLS to every
    /// connection, wait for CLOSE_WAIT and for every message in flight to be answered, then
    /// close. Resolves with the number of messages abandoned at the deadline (0 normally);
    /// nsqd redelivers those after their timeout.
    pub async fn stop(&self) -> u32 {
        self.stop_within(self.stop_timeout).await
    }

    /// As [`stop`](Self::stop), with an explicit deadline.
    ///
    /// The stop is under way from the first poll of the returned future: it completes even
    /// if that future is dropped then (e.g. by a `timeout` around it).
    pub async fn stop_within(&self, deadline: Duration) -> u32 {
        let (done, abandoned) = tokio::sync::oneshot::channel();
        self.actor.do_send(Stop {
            deadline,
            stopped: self.stopped.clone(),
            done,
        });
        abandoned.await.unwrap_or(0)
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests;

/// Listeners, added and removed at run time.
impl Consumer {
    /// Adds a listener of the consumer's lifecycle events (see
    /// [`ConsumerBuilder::events`]). The registry lives in the consumer's coordinator, which
    /// takes the listener in on its next turn: events from then on reach it.
    pub fn subscribe(&self, recipient: actix::Recipient<ConsumerEvent>) -> crate::ListenerId {
        self.add_listener(recipient, crate::events::Interest::Lifecycle)
    }

    /// As [`subscribe`](Self::subscribe), plus a [`ConsumerEvent::Message`] for every message
    /// (see [`ConsumerBuilder::message_events`]).
    pub fn subscribe_messages(
        &self,
        recipient: actix::Recipient<ConsumerEvent>,
    ) -> crate::ListenerId {
        self.add_listener(recipient, crate::events::Interest::Messages)
    }

    /// Removes a listener (a no-op if it is gone already). Per-message events stop being
    /// built once no listener wants them.
    pub fn unsubscribe(&self, id: crate::ListenerId) {
        self.actor.do_send(crate::events::Unsubscribe(id));
    }

    fn add_listener(
        &self,
        recipient: actix::Recipient<ConsumerEvent>,
        interest: crate::events::Interest,
    ) -> crate::ListenerId {
        let id = crate::ListenerId::next();
        self.actor.do_send(crate::events::Subscribe {
            id,
            recipient,
            interest,
        });
        id
    }
}
