//! The consumer's coordinator: owns the connections and the flow core, reacts to discovery,
//! runs the backoff timer and the RDY rotation tick, and stops everything gracefully.
//!
//! It runs under a `Supervisor`. What it owns lives in fields (the flow core with its RDY
//! policy and backoff state, the connections, the discoverer), so a restart loses nothing;
//! only its context's timers die, and `started()` re-arms them: the rotation tick, and the
//! backoff timer with the time it had left. A graceful stop is for good: `started()` does
//! nothing once stopping.

use std::{
    collections::HashMap,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use actix::{
    ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    Supervised, WrapFuture,
};
use tokio::sync::oneshot;

use super::{
    discovery::{pick_within_limit, Dormant, Requery as RequeryDecision, RequeryLimiter},
    events::{ConsumerEvent, FlowNotice},
    flow::{FlowCore, FlowState},
    ConsumerBuilder,
};
use crate::{
    conn::{
        Close, ConnCounters, ConnId, ConnectionConfig, ConnectionEvent, ConnectionParams,
        NsqdConnection, Subscription,
    },
    events::{Listeners, Tap},
    lookup::{Discovered, DiscoveryConfig, LookupdDiscoverer, Requery, StopDiscovery},
    protocol::{Channel, Topic},
    runtime::start_supervised_in,
};

/// How an nsqd became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Configured with `.nsqd(..)`: reconnect forever (with backoff).
    Static,
    /// Found through nsqlookupd: reconnect a few times, then rely on rediscovery.
    Lookupd,
}

struct Conn {
    actor: Addr<NsqdConnection>,
    origin: Origin,
}

/// Connections and counters the `Consumer` handle reads for `stats()`.
pub(crate) type SharedConns = Arc<Mutex<Vec<(Arc<str>, Arc<ConnCounters>)>>>;

pub(crate) struct ConsumerActor {
    subscription: Option<Subscription>,
    static_config: Arc<ConnectionConfig>,
    lookupd_config: Arc<ConnectionConfig>,
    conns: HashMap<Arc<str>, Conn>,
    next_id: ConnId,
    builder: ConsumerBuilder,
    topic: Topic,
    channel: Channel,
    discoverer: Option<Addr<LookupdDiscoverer>>,
    /// Everyone listening to the consumer; its connections send what they observe straight
    /// to it (`tap`).
    pub(super) listeners: Listeners<ConsumerEvent>,
    tap: Rc<dyn Tap>,
    /// The consumer's name in logs.
    name: Arc<str>,
    shared: SharedConns,
    state: Arc<FlowState>,
    flow: Option<Rc<FlowCore>>,
    /// When the running backoff pause ends (re-armed after a restart).
    backoff_until: Option<Instant>,
    requeries: RequeryLimiter,
    dormant: Dormant,
    stopping: bool,
    /// Reported counts survive a restart with the actor's fields.
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::ConsumerMetrics,
    /// How often `started()` ran.
    #[cfg(test)]
    pub(super) starts: u32,
}

/// At most one requery of nsqlookupd per this long (or per poll interval, if shorter), plus
/// jitter. go-nsq requeries on every lost connection; one that cannot connect then queries in
/// a loop. 5 s still finds a moved nsqd long before the next poll (60 s by default).
const REQUERY_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// How long a lookupd-found nsqd whose connection gave up is held back the first time; the
/// hold doubles with every further give-up, up to the poll interval.
const FIRST_HOLD: Duration = Duration::from_secs(5);

/// A few attempts, then the nsqd must be rediscovered (go-nsq reconnects lookupd-found nsqd
/// only when lookupd lists them again; a lost connection triggers an immediate re-query).
const LOOKUPD_RECONNECT_ATTEMPTS: u32 = 3;

impl ConsumerActor {
    pub(crate) fn new(
        builder: ConsumerBuilder,
        topic: Topic,
        channel: Channel,
        shared: SharedConns,
        state: Arc<FlowState>,
    ) -> Self {
        let static_config = Arc::new(builder.connection.clone());
        let lookupd_reconnect = builder
            .connection
            .reconnect
            .clone()
            .max_attempts(Some(LOOKUPD_RECONNECT_ATTEMPTS));
        let lookupd_config = Arc::new(builder.connection.clone().reconnect(lookupd_reconnect));
        let requeries = RequeryLimiter::new(
            REQUERY_MIN_INTERVAL.min(builder.lookupd_poll_interval),
            builder.lookupd_poll_jitter,
        );
        let dormant = Dormant::new(FIRST_HOLD, builder.lookupd_poll_interval);
        let listeners = Listeners::default();
        for (recipient, interest) in &builder.listeners {
            listeners.subscribe(recipient.clone(), *interest);
        }
        Self {
            subscription: None,
            static_config,
            lookupd_config,
            conns: HashMap::new(),
            next_id: 0,
            listeners: listeners.clone(),
            tap: Rc::new(listeners),
            name: Arc::from(builder.display_name()),
            builder,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::ConsumerMetrics::new(&topic, &channel),
            topic,
            channel,
            discoverer: None,
            shared,
            state,
            flow: None,
            backoff_until: None,
            requeries,
            dormant,
            stopping: false,
            #[cfg(test)]
            starts: 0,
        }
    }

    /// Starts the actor under a supervisor in the current arbiter, inside its span.
    pub(crate) fn start(self) -> Addr<Self> {
        let span = self.span(None);
        start_supervised_in(span, move |_| self)
    }

    /// A span naming this consumer, and the nsqd for a connection's: every log line of its
    /// coordinator and connections (with their handler dispatch) is inside one.
    fn span(&self, nsqd: Option<&str>) -> tracing::Span {
        let (name, topic, channel) = (&*self.name, self.topic.as_str(), self.channel.as_str());
        match nsqd {
            Some(nsqd) => tracing::info_span!(parent: None, "nsq_consumer",
                consumer = %name, topic = %topic, channel = %channel, nsqd = %nsqd),
            None => tracing::info_span!(parent: None, "nsq_consumer",
                consumer = %name, topic = %topic, channel = %channel),
        }
    }

    /// Whether any handler can take a message: while `false`, RDY 0 on every link, without
    /// touching `max_in_flight` or the backoff state; `true` restores the normal distribution.
    pub(super) fn set_handlers_available(&self, available: bool) {
        if let Some(flow) = &self.flow {
            flow.set_handlers_available(available);
        }
    }

    pub(super) fn emit(&self, event: ConsumerEvent) {
        self.listeners.emit(event);
    }

    fn connect(&mut self, addr: &str, origin: Origin, ctx: &mut Context<Self>) {
        if self.stopping || self.conns.contains_key(addr) {
            return;
        }
        let Some(subscription) = self.subscription.clone() else {
            return;
        };
        let addr: Arc<str> = Arc::from(addr);
        let id = self.next_id;
        self.next_id += 1;
        let counters = Arc::new(ConnCounters::default());
        let config = match origin {
            Origin::Static => self.static_config.clone(),
            Origin::Lookupd => self.lookupd_config.clone(),
        };
        let actor = NsqdConnection::start(ConnectionParams {
            id,
            addr: addr.clone(),
            config,
            subscription: Some(subscription),
            events: Some(ctx.address().recipient()),
            tap: Some(self.tap.clone()),
            counters: counters.clone(),
            span: self.span(Some(&addr)),
        });
        if let Ok(mut shared) = self.shared.lock() {
            shared.push((addr.clone(), counters));
        }
        tracing::debug!(nsqd = %addr, conn = id, ?origin, "adding connection");
        self.conns.insert(addr, Conn { actor, origin });
    }

    /// Asks the discoverer to query now, or as soon as the requery limit allows.
    fn requery(&mut self, ctx: &mut Context<Self>) {
        if self.discoverer.is_none() {
            return;
        }
        match self.requeries.request(Instant::now(), &mut rand::rng()) {
            RequeryDecision::Now => self.send_requery(),
            RequeryDecision::After(delay) => {
                ctx.run_later(delay, |act, _| {
                    act.requeries.sent(Instant::now());
                    act.send_requery();
                });
            }
            RequeryDecision::Coalesced => {}
        }
    }

    fn send_requery(&self) {
        if let Some(discoverer) = &self.discoverer {
            discoverer.do_send(Requery);
        }
    }

    /// nsqlookupd listed `nsqd`: connect to those not connected and not held back, within
    /// `max_nsqd_connections`.
    fn discovered(&mut self, lookupd: &str, nsqd: &[String], ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.dormant
            .listed(&nsqd.iter().map(String::as_str).collect());
        let candidates: Vec<&str> = nsqd
            .iter()
            .map(String::as_str)
            .filter(|addr| !self.conns.contains_key(*addr) && self.dormant.may_connect(addr, now))
            .collect();
        let limit = self.builder.max_nsqd_connections;
        let room = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.conns.len());
        let (chosen, left_out) = pick_within_limit(candidates, room, &mut rand::rng());
        let chosen: Vec<String> = chosen.into_iter().map(str::to_owned).collect();
        for addr in &chosen {
            self.connect(addr, Origin::Lookupd, ctx);
        }
        if left_out > 0 {
            tracing::warn!(%lookupd, limit, left_out, "more nsqd listed than max_nsqd_connections");
            self.emit(ConsumerEvent::ConnectionLimitReached {
                lookupd: lookupd.to_owned(),
                limit,
                left_out,
            });
        }
    }

    fn forget(&mut self, addr: &str) {
        self.conns.remove(addr);
        if let Ok(mut shared) = self.shared.lock() {
            shared.retain(|(a, _)| &**a != addr);
        }
    }
}

impl actix::Actor for ConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        #[cfg(test)]
        {
            self.starts += 1;
        }
        if self.stopping {
            return; // stopped for good; the restarted actor ends with its last address
        }
        if self.flow.is_none() {
            self.first_start(ctx);
        }
        self.arm_timers(ctx);
    }
}

impl Supervised for ConsumerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // A scheduled requery died with the context; the next lost connection asks again.
        self.requeries.timer_lost();
        if self.stopping {
            return; // the graceful stop ended the actor; nothing is wrong
        }
        tracing::warn!(topic = %self.topic, channel = %self.channel, "consumer coordinator restarting");
    }
}

impl ConsumerActor {
    /// Creates the flow core and the subscription, connects to the configured nsqd and starts
    /// discovery: once per consumer, not per (re)start.
    fn first_start(&mut self, ctx: &mut Context<Self>) {
        let flow = Rc::new(FlowCore::new(
            &self.builder.flow,
            ctx.address().downgrade().recipient(),
            self.state.clone(),
        ));
        let handler = self.builder.handler_sink();
        handler.report_to(ctx.address().recipient());
        self.subscription = Some(Subscription {
            topic: self.topic.clone(),
            channel: self.channel.clone(),
            handler,
            give_up: self.builder.give_up.clone(),
            hooks: self.builder.hooks.clone(),
            max_attempts: self.builder.max_attempts,
            default_requeue_delay: self.builder.default_requeue_delay,
            max_requeue_delay: self.builder.max_requeue_delay,
            flow: flow.clone(),
        });
        self.flow = Some(flow);
        for addr in self.builder.nsqd.clone() {
            self.connect(&addr, Origin::Static, ctx);
        }
        if !self.builder.lookupd.is_empty() {
            let secret = self.builder.connection.auth_secret.clone();
            let config = DiscoveryConfig {
                lookupd: self.builder.lookupd.clone(),
                topic: self.topic.clone(),
                poll_interval: self.builder.lookupd_poll_interval,
                poll_jitter: self.builder.lookupd_poll_jitter,
                poll_timeout: self.builder.lookupd_poll_timeout,
                authorization: secret.filter(|_| self.builder.lookupd_authorization),
                authorization_over_http: self.builder.lookupd_authorization_over_http,
            };
            let consumer = ctx.address().recipient();
            let span = tracing::info_span!(parent: None, "nsq_discovery",
                consumer = %self.name, topic = %self.topic, channel = %self.channel);
            let discoverer =
                start_supervised_in(span, move |_| LookupdDiscoverer::new(config, consumer));
            self.discoverer = Some(discoverer);
        }
    }

    /// The context's timers: the rotation tick, and the backoff timer if a pause is running
    /// (with the time it has left, so a restart neither shortens nor extends the pause).
    fn arm_timers(&mut self, ctx: &mut Context<Self>) {
        if let Some(flow) = self.flow.clone() {
            // A no-op unless connections outnumber max_in_flight (RdyPolicy::tick_interval).
            ctx.run_interval(self.builder.flow.rdy_redistribute_interval, move |_, _| {
                flow.tick()
            });
        }
        #[cfg(feature = "metrics")]
        ctx.run_interval(crate::metrics::SAMPLE_INTERVAL, |act, _| {
            act.sample_metrics()
        });
        if let Some(until) = self.backoff_until {
            let left = until.saturating_duration_since(Instant::now());
            ctx.run_later(left, |act, _| act.backoff_timer_fired());
        }
    }

    #[cfg(feature = "metrics")]
    fn sample_metrics(&mut self) {
        let level = self
            .state
            .backoff_level
            .load(std::sync::atomic::Ordering::Relaxed);
        self.metrics.sample(&self.shared, level);
    }

    fn backoff_timer_fired(&mut self) {
        self.backoff_until = None;
        if let Some(flow) = &self.flow {
            flow.backoff_timer_fired();
        }
    }
}

impl Handler<ConnectionEvent> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, ctx: &mut Context<Self>) {
        let origin = self.conns.get(event.addr()).map(|c| c.origin);
        match &event {
            ConnectionEvent::Connected { addr, .. } => self.dormant.connected(addr),
            ConnectionEvent::Disconnected { .. } if origin == Some(Origin::Lookupd) => {
                // go-nsq consumer.go:768-773: a lost connection triggers a lookupd query, so a
                // moved nsqd is found without waiting for the poll (rate-limited here).
                self.requery(ctx);
            }
            ConnectionEvent::GaveUp { addr, .. } => {
                let addr = addr.to_string();
                self.forget(&addr);
                if origin == Some(Origin::Lookupd) {
                    let hold = self
                        .dormant
                        .gave_up(&addr, Instant::now(), &mut rand::rng());
                    tracing::info!(nsqd = %addr, ?hold, "holding back an nsqd that keeps failing");
                }
                self.requery(ctx);
            }
            _ => {}
        }
        self.emit(ConsumerEvent::Connection(event));
    }
}

impl Handler<Discovered> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, discovered: Discovered, ctx: &mut Context<Self>) {
        match discovered {
            Discovered::Producers { lookupd, nsqd } => {
                self.discovered(&lookupd, &nsqd, ctx);
                self.emit(ConsumerEvent::Discovered { lookupd, nsqd });
            }
            Discovered::Failed { lookupd, error } => {
                self.emit(ConsumerEvent::DiscoveryFailed { lookupd, error });
            }
        }
    }
}

impl Handler<FlowNotice> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, notice: FlowNotice, ctx: &mut Context<Self>) {
        match notice {
            FlowNotice::Timer(pause) => {
                let level = self.flow.as_ref().map_or(0, |f| f.backoff_level());
                self.emit(ConsumerEvent::BackoffStarted { level, pause });
                self.backoff_until = Some(Instant::now() + pause);
                ctx.run_later(pause, |act, _| act.backoff_timer_fired());
            }
            FlowNotice::Level(level) => self.emit(ConsumerEvent::BackoffLevel { level }),
            FlowNotice::Ended => self.emit(ConsumerEvent::BackoffEnded),
        }
    }
}

/// Change `max_in_flight` at once (0 pauses).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct SetMaxInFlight(pub(crate) u32);

impl Handler<SetMaxInFlight> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, SetMaxInFlight(n): SetMaxInFlight, _: &mut Context<Self>) {
        if let Some(flow) = &self.flow {
            flow.set_max_in_flight(n);
        }
    }
}

/// Connect to another nsqd at runtime (go-nsq `ConnectToNSQD`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct AddNsqd(pub(crate) String);

impl Handler<AddNsqd> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, AddNsqd(addr): AddNsqd, ctx: &mut Context<Self>) {
        self.connect(&addr, Origin::Static, ctx);
    }
}

/// Stop gracefully within `deadline`; answers on `done` with the number of abandoned
/// messages. Sent with `do_send`: actix skips a message whose `send` requester went away
/// before it was handled, and a stop, once asked for, must happen even if the caller stops
/// waiting for it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Stop {
    pub(crate) deadline: Duration,
    /// Set once the stop is complete (`Consumer::is_running`).
    pub(crate) stopped: Arc<AtomicBool>,
    pub(crate) done: oneshot::Sender<u32>,
}

impl Handler<Stop> for ConsumerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, stop: Stop, _: &mut Context<Self>) -> Self::Result {
        let Stop {
            deadline,
            stopped,
            done,
        } = stop;
        self.stopping = true;
        if let Some(discoverer) = self.discoverer.take() {
            // Its poll timer would otherwise keep it querying after the consumer is gone.
            discoverer.do_send(StopDiscovery);
        }
        if let Some(subscription) = &self.subscription {
            // Deliveries waiting for a live handler actor go back now, not at the deadline.
            subscription.handler.close();
        }
        let closes: Vec<_> = self
            .conns
            .values()
            .map(|c| c.actor.send(Close { deadline }))
            .collect();
        Box::pin(
            async move {
                let mut abandoned = 0;
                for close in closes {
                    abandoned += close.await.unwrap_or(0);
                }
                abandoned
            }
            .into_actor(self)
            .map(move |abandoned, act, ctx| {
                #[cfg(feature = "metrics")]
                act.metrics.stopped(&act.shared); // the counts since the last tick
                act.conns.clear();
                act.flow = None;
                stopped.store(true, Ordering::Release);
                // Only the first stop to complete reports it: `Stopped` is the last event.
                if act.subscription.take().is_some() {
                    tracing::info!(abandoned, "consumer stopped");
                    act.emit(ConsumerEvent::Stopped { abandoned });
                }
                ctx.stop();
                let _ = done.send(abandoned);
            }),
        )
    }
}

/// Query nsqlookupd now, at the user's request (pynsq and gnsq `query_lookupd`), within
/// `RequeryLimiter::force`'s floor. Answers whether there is a discoverer to ask.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub(crate) struct QueryLookupd;

impl Handler<QueryLookupd> for ConsumerActor {
    type Result = bool;

    fn handle(&mut self, _: QueryLookupd, ctx: &mut Context<Self>) -> bool {
        if self.discoverer.is_none() {
            return false; // no nsqlookupd configured, or stopping
        }
        match self.requeries.force(Instant::now()) {
            RequeryDecision::Now => self.send_requery(),
            RequeryDecision::After(delay) => {
                ctx.run_later(delay, |act, _| {
                    act.requeries.forced_sent(Instant::now());
                    act.send_requery();
                });
            }
            RequeryDecision::Coalesced => {}
        }
        true
    }
}

/// Run the RDY policy's redistribution now instead of at the next tick (go-nsq's
/// `redistributeRDY`, pynsq/gnsq `redistribute_ready_state`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Redistribute;

impl Handler<Redistribute> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, _: Redistribute, _: &mut Context<Self>) {
        if let Some(flow) = &self.flow {
            flow.tick();
        }
    }
}
