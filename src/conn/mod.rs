//! `NsqdConnection`: one supervised actor per nsqd.
//!
//! One reconnect path. `started()` connects; the handshake runs as a spawned future; on
//! success the link's [`driver`] is spawned (it reads frames, drains answers and writes, in
//! that order, so a message finished synchronously leaves as a FIN in the same write). When
//! the link dies (EOF, I/O error, fatal `E_*`, missed heartbeats, protocol violation),
//! `drop_link` cancels everything that belongs to the link and calls `schedule_reconnect`,
//! the function a failed connect calls too: it backs off exponentially with jitter, or gives
//! up when the policy's attempts run out, telling the owner. A lost link does not stop the
//! actor; only a close does, and its `Supervisor` then restarts it in the `Closed` phase,
//! where it does nothing and ends with its last address.

mod close;
mod config;
mod driver;
mod frames;
mod handling;
mod lifecycle;
mod messages;
mod responder;
mod stats;
mod subscription;
#[cfg(all(test, feature = "testing"))]
mod tests;
mod writer;

use std::{
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::{
    Actor, AsyncContext, Context, Handler, Recipient, ResponseFuture, SpawnHandle, Supervised,
};
use tokio::sync::{mpsc, oneshot};

pub(crate) use config::validate_addr;
pub use config::ConnectionConfig;
pub(crate) use messages::{Close, Ping, Publish, SetRdy};
pub use messages::{ConnId, ConnectionEvent};
pub(crate) use stats::ConnCounters;
pub use stats::ConnectionStats;
pub(crate) use subscription::{Flow, Subscription};

use self::{
    handling::{FailureReporter, Handling},
    responder::{Answer, NsqResponder},
    writer::Writer,
};
use crate::{
    error::Error,
    events::{MessageEvent, Tap},
    protocol::Command,
    rdy::LinkId,
    retry::ReconnectBackoff,
};

/// Read buffer size: large reads amortise syscalls when nsqd streams messages.
const READ_CAPACITY: usize = 64 * 1024;

/// A fresh link id, unique in the process and increasing (see [`LinkId`]).
pub(crate) fn next_link_id() -> LinkId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    LinkId(NEXT.fetch_add(1, Relaxed))
}

/// Sends a per-message event, built only if a listener asked for them: on the hot path this
/// is one atomic load when nobody did. A free function, so callers can hold other fields.
#[inline]
fn tap_message(tap: &Option<Rc<dyn Tap>>, event: impl FnOnce() -> MessageEvent) {
    if let Some(tap) = tap.as_ref().filter(|t| t.wants_messages()) {
        tap.message(event());
    }
}

/// Where the actor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to (re)connect, or handshaking.
    Connecting,
    /// The link is up.
    Connected,
    /// CLS sent (or a producer draining); waiting for in-flight messages to be answered.
    Closing,
    /// Closed on request; stays down.
    Closed,
    /// The reconnect policy gave up; stays down.
    GaveUp,
}

/// Something waiting for nsqd's next response, in the order the commands were written.
enum Waiter {
    Publish(oneshot::Sender<Result<(), Error>>),
    CloseWait,
}

/// Everything that belongs to one established link and dies with it. Dropping a link cancels
/// its driver (read stream, answers-then-write pass, write half) and its liveness interval and
/// kills its responder, whose later answers then fail with `ConnectionLost`.
struct Link {
    /// Tags this link's answers, and is the id the consumer's flow policy knows it by.
    id: LinkId,
    writer: Writer,
    /// The spawned [`driver::LinkDriver`].
    driver: SpawnHandle,
    /// The heartbeat check, when heartbeats are on.
    liveness: Option<SpawnHandle>,
    max_rdy: u32,
    rdy: u32,
    /// The highest RDY sent on this link: the most messages an honest nsqd can have in flight
    /// on it (see `frames::on_message`).
    rdy_ceiling: u32,
    in_flight: u32,
    last_frame: Instant,
    connected_at: Instant,
    heartbeat: Option<Duration>,
    responder: Arc<NsqResponder>,
    close_wait_seen: bool,
    /// Whether the consumer's flow policy steers this link (consumers, until closed).
    in_flow: bool,
    /// nsqd's message timeout for this link: after it, nsqd has requeued what is in flight.
    msg_timeout: Duration,
}

/// A lost link whose in-flight messages still hold flow-control slots.
struct LostLink {
    /// Its messages still unanswered.
    in_flight: u32,
    /// When nsqd has requeued them all (`msg_timeout` + 1 s after the loss).
    forget_at: Instant,
    /// The timer that releases the slots then.
    timer: SpawnHandle,
}

/// An in-progress graceful close.
struct Closing {
    done: Vec<oneshot::Sender<u32>>,
    deadline: Option<SpawnHandle>,
    abandoned: u32,
}

/// One connection to one nsqd. See the module docs.
///
/// What survives a lost link (the actor's lifetime): the answers channel, the handler futures
/// (a reconnect never cancels a handler), the counters, the reconnect backoff, the lost links
/// whose slots wait for their handlers or for `msg_timeout`, the close in progress, and the
/// background driver. What belongs to one link: everything in [`Link`], plus the waiters for
/// its responses (failed when it drops: nsqd answers each link's commands on that link only).
pub(crate) struct NsqdConnection {
    id: ConnId,
    addr: Arc<str>,
    config: Arc<ConnectionConfig>,
    subscription: Option<Subscription>,
    events: Option<Recipient<ConnectionEvent>>,
    /// The owner's listeners, for what goes to them directly (see [`crate::events`]).
    tap: Option<Rc<dyn Tap>>,
    phase: Phase,
    link: Option<Link>,
    waiters: VecDeque<Waiter>,
    reconnect: ReconnectBackoff,
    closing: Option<Closing>,
    counters: Arc<ConnCounters>,
    /// Answers from deliveries, for every link this actor has had, so answers for a lost link
    /// still release flow-control slots.
    answers_tx: mpsc::UnboundedSender<Answer>,
    answers: mpsc::UnboundedReceiver<Answer>,
    lost_links: HashMap<LinkId, LostLink>,
    /// Handler futures, driven by [`driver::Background`].
    handling: Handling,
    /// Whether [`driver::Background`] is spawned.
    background: bool,
    failures: Option<Rc<FailureReporter>>,
    /// Handler time and give-ups of a consuming connection.
    #[cfg(feature = "metrics")]
    metrics: Option<Rc<crate::metrics::HandlerMetrics>>,
    /// How often `started()` ran: once, unless something genuinely stopped the actor.
    #[cfg(test)]
    starts: u32,
}

/// How to start a connection.
pub(crate) struct ConnectionParams {
    pub(crate) id: ConnId,
    pub(crate) addr: Arc<str>,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) subscription: Option<Subscription>,
    pub(crate) events: Option<Recipient<ConnectionEvent>>,
    /// The owner's listeners: per-message events, heartbeats, responses, handshake results.
    pub(crate) tap: Option<Rc<dyn Tap>>,
    pub(crate) counters: Arc<ConnCounters>,
    /// Every log line of the actor is inside it (consumer name, topic, channel, nsqd).
    pub(crate) span: tracing::Span,
}

impl NsqdConnection {
    /// Starts the actor under a `Supervisor` in the current arbiter.
    pub(crate) fn start(params: ConnectionParams) -> actix::Addr<Self> {
        let span = params.span.clone();
        crate::runtime::start_supervised_in(span, move |_| Self::new(params))
    }

    fn new(params: ConnectionParams) -> Self {
        let reconnect = ReconnectBackoff::new(params.config.reconnect.clone());
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let failures = (params.events.is_some() || params.tap.is_some()).then(|| {
            Rc::new(FailureReporter {
                id: params.id,
                addr: params.addr.clone(),
                events: params.events.clone(),
                tap: params.tap.clone(),
            })
        });
        Self {
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::HandlerMetrics::for_connection(
                params.subscription.as_ref(),
                &params.addr,
            ),
            id: params.id,
            addr: params.addr,
            config: params.config,
            subscription: params.subscription,
            events: params.events,
            tap: params.tap,
            phase: Phase::Connecting,
            link: None,
            waiters: VecDeque::new(),
            reconnect,
            closing: None,
            counters: params.counters,
            answers_tx,
            answers,
            lost_links: HashMap::new(),
            handling: Handling::default(),
            background: false,
            failures,
            #[cfg(test)]
            starts: 0,
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
    }

    /// Sends a connection event straight to the listeners, built only if anyone listens.
    fn tap_connection(&self, event: impl FnOnce() -> ConnectionEvent) {
        if let Some(tap) = self.tap.as_ref().filter(|t| t.wants_any()) {
            tap.connection(event());
        }
    }

    /// Whether `link` is the current link (a driver stops once its link is not).
    fn is_current(&self, link: LinkId) -> bool {
        self.link.as_ref().is_some_and(|l| l.id == link)
    }

    fn write(&mut self, command: &Command, ctx: &mut Context<Self>) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Err(Error::NotConnected);
        };
        let result = link.writer.write(command);
        if let Err(Error::InvalidBody(_)) = &result {
            return result; // rejected before writing; the link is fine
        }
        if let Err(error) = result {
            self.drop_link(error.clone(), ctx);
            return Err(error);
        }
        Ok(())
    }

    fn set_rdy(&mut self, count: u32, ctx: &mut Context<Self>) {
        let Some(link) = &mut self.link else { return };
        if self.phase != Phase::Connected {
            return; // nsqd ignores RDY while closing
        }
        let count = count.min(link.max_rdy);
        if count == link.rdy {
            return; // never a duplicate RDY (go-nsq#282)
        }
        link.rdy = count;
        link.rdy_ceiling = link.rdy_ceiling.max(count);
        self.counters.rdy.store(count, Relaxed);
        tracing::debug!(nsqd = %self.addr, conn = self.id, rdy = count, "RDY");
        let _ = self.write(&Command::Rdy(count), ctx);
    }

    /// Spawns the background driver unless it runs already.
    fn ensure_background(&mut self, ctx: &mut Context<Self>) {
        if !self.background {
            self.background = true;
            ctx.spawn(driver::Background);
        }
    }
}

impl Actor for NsqdConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        #[cfg(test)]
        {
            self.starts += 1;
        }
        match self.phase {
            Phase::Connecting => {
                self.ensure_background(ctx);
                self.connect(ctx);
            }
            // Restarted after a close: stay down, end with the last address.
            Phase::Connected | Phase::Closing | Phase::Closed | Phase::GaveUp => {}
        }
    }
}

impl Supervised for NsqdConnection {
    /// Only a close stops the actor (a lost link does not), but whatever stopped it, the
    /// context's futures and timers are gone: the link with them, so it is released; lost links
    /// get their release timers back; the background driver is spawned again by `started()`.
    fn restarting(&mut self, ctx: &mut Self::Context) {
        self.background = false;
        if let Some(link) = self.link.take() {
            self.release_link(link, ctx);
        }
        let now = Instant::now();
        let lost: Vec<(LinkId, u32, Instant)> = self
            .lost_links
            .iter()
            .map(|(id, lost)| (*id, lost.in_flight, lost.forget_at))
            .collect();
        for (id, in_flight, forget_at) in lost {
            self.arm_forget(id, in_flight, forget_at.saturating_duration_since(now), ctx);
        }
        if let Some(closing) = self.closing.take() {
            for done in closing.done {
                let _ = done.send(closing.abandoned);
            }
        }
        if matches!(self.phase, Phase::Connected | Phase::Closing) {
            self.phase = Phase::Connecting;
        }
        self.counters.connected.store(false, Relaxed);
        self.counters.rdy.store(0, Relaxed);
        self.counters.in_flight.store(0, Relaxed);
        self.fail_waiters(&Error::NotConnected);
    }
}

impl Handler<SetRdy> for NsqdConnection {
    type Result = ();

    fn handle(&mut self, SetRdy { link }: SetRdy, ctx: &mut Self::Context) {
        if !self
            .link
            .as_ref()
            .is_some_and(|l| l.in_flow && l.id == link)
        {
            return;
        }
        let due = self.subscription.as_ref().map(|s| s.flow.clone());
        if let Some(count) = due.and_then(|flow| flow.rdy_due(link)) {
            self.set_rdy(count, ctx);
        }
    }
}

impl Handler<Publish> for NsqdConnection {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, Publish(command): Publish, ctx: &mut Self::Context) -> Self::Result {
        let result = match self.phase {
            Phase::Connected => self.write(&command, ctx),
            Phase::Closing | Phase::Closed => Err(Error::Stopped),
            Phase::Connecting | Phase::GaveUp => Err(Error::NotConnected),
        };
        if let Err(error) = result {
            return Box::pin(async move { Err(error) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(Waiter::Publish(tx));
        let addr = self.addr.clone();
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(Error::OutcomeUnknown {
                    addr: addr.to_string(),
                })
            })
        })
    }
}

impl Handler<Ping> for NsqdConnection {
    type Result = Result<(), Error>;

    fn handle(&mut self, _: Ping, ctx: &mut Self::Context) -> Self::Result {
        match self.phase {
            Phase::Connected => self.write(&Command::Nop, ctx),
            Phase::Closing | Phase::Closed => Err(Error::Stopped),
            Phase::Connecting | Phase::GaveUp => Err(Error::NotConnected),
        }
    }
}

impl Handler<Close> for NsqdConnection {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, close: Close, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.begin_close(close.deadline, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(0) })
    }
}
