//! `NsqdConnection`: one supervised actor per nsqd.
//!
//! Lifecycle: `started()` schedules a connect without blocking the mailbox; the handshake runs
//! as a spawned future; on success the read half becomes a stream of frames and the write half
//! a [`Writer`]. When the link dies (EOF, I/O error, fatal `E_*`, missed heartbeats, protocol
//! violation) the actor stops and its `Supervisor` restarts it: `restarting()` fails every
//! pending waiter, and the spawned read/write futures die with the old context, so nothing of
//! the old link survives. Reconnects back off exponentially with jitter; when the policy's
//! attempts run out the actor tells its owner and stays down.

mod close;
mod config;
mod frames;
mod handling;
mod lifecycle;
mod messages;
mod responder;
mod stats;
mod subscription;
mod writer;

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use actix::{
    Actor, AsyncContext, Context, Handler, Message, Recipient, ResponseFuture, SpawnHandle,
    Supervised, Supervisor,
};
use tokio::sync::{mpsc, oneshot};

pub(crate) use config::validate_addr;
pub use config::ConnectionConfig;
pub(crate) use messages::{Close, Ping, Publish, SetRdy};
pub use messages::{ConnId, ConnectionEvent};
pub(crate) use stats::ConnCounters;
pub use stats::ConnectionStats;
pub(crate) use subscription::{Flow, LinkId, Subscription};

use self::{
    handling::{DriveHandlers, FailureReporter, Handling},
    responder::{Answer, NsqResponder},
    writer::{Writer, WriterOwner},
};
use crate::{error::Error, protocol::Command, retry::ReconnectBackoff};

/// Read buffer size: large reads amortise syscalls when nsqd streams messages.
const READ_CAPACITY: usize = 64 * 1024;

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

/// The state of one established link.
struct Link {
    writer: Writer,
    max_rdy: u32,
    rdy: u32,
    in_flight: u32,
    last_frame: std::time::Instant,
    connected_at: std::time::Instant,
    heartbeat: Option<Duration>,
    responder: Arc<NsqResponder>,
    close_wait_seen: bool,
    /// The id the consumer's flow policy knows this link by (consumers only).
    flow_link: Option<LinkId>,
    /// Which link of this actor it is: answers carry it, so late ones are told apart.
    gen: u64,
    /// nsqd's message timeout for this link: after it, nsqd has requeued what is in flight.
    msg_timeout: Duration,
}

/// An in-progress graceful close.
struct Closing {
    done: Vec<oneshot::Sender<u32>>,
    deadline: Option<SpawnHandle>,
    abandoned: u32,
}

/// One connection to one nsqd. See the module docs.
pub(crate) struct NsqdConnection {
    id: ConnId,
    addr: Arc<str>,
    config: Arc<ConnectionConfig>,
    subscription: Option<Subscription>,
    events: Option<Recipient<ConnectionEvent>>,
    phase: Phase,
    link: Option<Link>,
    waiters: VecDeque<Waiter>,
    reconnect: ReconnectBackoff,
    /// Delay before the next connect attempt; zero for the first.
    next_delay: Duration,
    closing: Option<Closing>,
    counters: Arc<ConnCounters>,
    /// Answers from deliveries, for every link this actor has had. The receiver lives as long
    /// as the actor (not the link) so answers for a lost link still release flow-control
    /// slots; it is re-attached as a stream on every (re)start.
    answers_tx: mpsc::UnboundedSender<Answer>,
    answers: Rc<RefCell<mpsc::UnboundedReceiver<Answer>>>,
    link_gen: u64,
    /// Lost links whose in-flight messages still hold flow-control slots, by generation.
    lost_links: HashMap<u64, LinkId>,
    /// Handler futures; they outlive restarts (see `handling`).
    handling: Rc<RefCell<Handling>>,
    failures: Option<Rc<FailureReporter>>,
}

/// How to start a connection.
pub(crate) struct ConnectionParams {
    pub(crate) id: ConnId,
    pub(crate) addr: Arc<str>,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) subscription: Option<Subscription>,
    pub(crate) events: Option<Recipient<ConnectionEvent>>,
    pub(crate) counters: Arc<ConnCounters>,
}

impl NsqdConnection {
    /// Starts the actor under a `Supervisor` in the current arbiter.
    pub(crate) fn start(params: ConnectionParams) -> actix::Addr<Self> {
        Supervisor::start(move |_| Self::new(params))
    }

    fn new(params: ConnectionParams) -> Self {
        let reconnect = ReconnectBackoff::new(params.config.reconnect.clone());
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let failures = params.events.clone().map(|events| {
            Rc::new(FailureReporter {
                id: params.id,
                addr: params.addr.clone(),
                events,
            })
        });
        Self {
            id: params.id,
            addr: params.addr,
            config: params.config,
            subscription: params.subscription,
            events: params.events,
            phase: Phase::Connecting,
            link: None,
            waiters: VecDeque::new(),
            reconnect,
            next_delay: Duration::ZERO,
            closing: None,
            counters: params.counters,
            answers_tx,
            answers: Rc::new(RefCell::new(answers)),
            link_gen: 0,
            lost_links: HashMap::new(),
            handling: Rc::default(),
            failures,
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
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
        self.counters.rdy.store(count, Relaxed);
        tracing::debug!(nsqd = %self.addr, conn = self.id, rdy = count, "RDY");
        let _ = self.write(&Command::Rdy(count), ctx);
    }
}

impl Actor for NsqdConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.spawn(DriveHandlers(self.handling.clone()));
        let answers = self.answers.clone();
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| {
            answers.borrow_mut().poll_recv(cx)
        }));
        match self.phase {
            Phase::Connecting => {
                let delay = std::mem::take(&mut self.next_delay);
                if delay.is_zero() {
                    self.connect(ctx);
                } else {
                    ctx.run_later(delay, |act, ctx| act.connect(ctx));
                }
            }
            Phase::Connected | Phase::Closing | Phase::Closed | Phase::GaveUp => {}
        }
    }
}

impl Supervised for NsqdConnection {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        // The old context's streams and futures are gone; so is everything tied to the link.
        if let Some(link) = self.link.take() {
            self.release_link(&link, ctx);
        }
        self.counters.connected.store(false, Relaxed);
        self.counters.rdy.store(0, Relaxed);
        self.counters.in_flight.store(0, Relaxed);
        self.fail_waiters(&Error::Disconnected);
    }
}

impl WriterOwner for NsqdConnection {
    fn write_failed(&mut self, error: std::io::Error, ctx: &mut Self::Context) {
        self.drop_link(error.into(), ctx);
    }

    fn write_closed(&mut self, ctx: &mut Self::Context) {
        self.closed(ctx);
    }
}

impl Handler<SetRdy> for NsqdConnection {
    type Result = ();

    fn handle(&mut self, SetRdy { link, count }: SetRdy, ctx: &mut Self::Context) {
        if self.link.as_ref().and_then(|l| l.flow_link) == Some(link) {
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

/// A lost link's `msg_timeout` has passed: nsqd has requeued whatever it still had in flight,
/// so its flow-control slots are released even if its handlers never answer.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct ForgetLink(u64);

impl Handler<ForgetLink> for NsqdConnection {
    type Result = ();

    fn handle(&mut self, ForgetLink(gen): ForgetLink, _: &mut Self::Context) {
        if let (Some(flow_link), Some(subscription)) =
            (self.lost_links.remove(&gen), &self.subscription)
        {
            subscription.flow.disconnected(flow_link);
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
