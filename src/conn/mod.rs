//! `NsqdConnection`: one supervised actor per nsqd.
//!
//! Lifecycle: `started()` schedules a connect without blocking the mailbox; the handshake runs
//! as a spawned future; on success the read half becomes a stream of frames and the write half
//! a [`Writer`]. When the link dies (EOF, I/O error, fatal `E_*`, missed heartbeats, protocol
//! violation) the actor stops and its `Supervisor` restarts it: `restarting()` fails every
//! pending waiter, and the spawned read/write futures die with the old context, so nothing of
//! the old link survives. Reconnects back off exponentially with jitter; when the policy's
//! attempts run out the actor tells its owner and stays down.

mod config;
mod frames;
mod messages;
mod responder;
mod stats;
mod subscription;
mod writer;

use std::{collections::VecDeque, sync::Arc, time::Duration};

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler,
    Recipient, ResponseFuture, SpawnHandle, Supervised, Supervisor,
};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

pub(crate) use config::validate_addr;
pub use config::ConnectionConfig;
pub(crate) use messages::{Close, Ping, Publish, SetRdy};
pub use messages::{ConnId, ConnectionEvent};
pub(crate) use stats::ConnCounters;
pub use stats::ConnectionStats;
pub(crate) use subscription::{Flow, LinkId, Subscription};

use self::{
    responder::NsqResponder,
    writer::{Writer, WriterOwner},
};
use crate::{
    error::Error,
    protocol::{Command, NsqCodec},
    retry::ReconnectBackoff,
    transport::{self, Established},
};

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
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connecting {
            return;
        }
        let subscribe = self
            .subscription
            .as_ref()
            .map(|s| (s.topic.clone(), s.channel.clone()));
        let handshake = self.config.handshake(subscribe);
        let addr = self.addr.clone();
        tracing::debug!(nsqd = %self.addr, conn = self.id, "connecting");
        let fut = wrap_future(async move { transport::connect(&addr, &handshake).await });
        ctx.spawn(fut.map(|result, act: &mut Self, ctx| match result {
            Ok(established) => act.on_established(established, ctx),
            Err(error) => act.on_connect_failed(error, ctx),
        }));
    }

    fn on_established(&mut self, established: Established, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connecting {
            return; // closed while handshaking
        }
        let Established {
            stream,
            read_buf,
            negotiated,
        } = established;
        let (read, write) = tokio::io::split(stream);
        let codec =
            NsqCodec::new(self.config.max_frame_len).with_limits(self.config.publish_limits);
        let mut frames = FramedRead::with_capacity(read, codec.clone(), READ_CAPACITY);
        frames.read_buffer_mut().extend_from_slice(&read_buf);
        ctx.add_stream(frames);
        let (responder, answers) = NsqResponder::channel(self.addr.clone());
        ctx.add_stream(tokio_stream_from(answers));
        let writer = Writer::start::<Self, _>(write, codec, ctx);
        let max_rdy = u32::try_from(negotiated.identify.max_rdy_count).unwrap_or(u32::MAX);
        let now = std::time::Instant::now();
        let heartbeat = self.config.heartbeat();
        self.link = Some(Link {
            writer,
            max_rdy,
            rdy: 0,
            in_flight: 0,
            last_frame: now,
            connected_at: now,
            heartbeat,
            responder,
            close_wait_seen: false,
            flow_link: None,
        });
        self.phase = Phase::Connected;
        self.counters
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .max_rdy
            .store(max_rdy, std::sync::atomic::Ordering::Relaxed);
        if let Some(interval) = heartbeat {
            // nsqd drops a client after 2 × heartbeat of silence; we do the same to nsqd, so a
            // half-open link (peer gone without FIN/RST) cannot hang the consumer.
            ctx.run_interval(interval / 2, |act, ctx| act.check_liveness(ctx));
        }
        if let Some(subscription) = &self.subscription {
            let (link_id, rdy) = subscription.flow.connected(ctx.address(), max_rdy);
            if let Some(link) = &mut self.link {
                link.flow_link = Some(link_id);
            }
            if let Some(count) = rdy {
                self.set_rdy(count, ctx);
            }
        }
        tracing::info!(nsqd = %self.addr, conn = self.id, tls = negotiated.tls,
            compression = ?negotiated.compression, max_rdy, "connected");
        self.emit(ConnectionEvent::Connected {
            id: self.id,
            addr: self.addr.clone(),
            negotiated: Box::new(negotiated),
        });
    }

    fn on_connect_failed(&mut self, error: Error, ctx: &mut Context<Self>) {
        tracing::warn!(nsqd = %self.addr, conn = self.id, %error, "connect failed");
        self.emit(ConnectionEvent::Disconnected {
            id: self.id,
            addr: self.addr.clone(),
            error,
            lost_in_flight: 0,
        });
        self.schedule_reconnect(ctx);
    }

    /// Picks the next delay and reconnects after it, or gives up.
    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Connecting {
            return;
        }
        match self.reconnect.next_delay(&mut rand::rng()) {
            Some(delay) => {
                self.emit(ConnectionEvent::Reconnecting {
                    id: self.id,
                    addr: self.addr.clone(),
                    attempt: self.reconnect.attempts(),
                    delay,
                });
                ctx.run_later(delay, |act, ctx| act.connect(ctx));
            }
            None => self.give_up(),
        }
    }

    /// Drops the link because of `error`; the supervisor restarts the actor.
    fn drop_link(&mut self, error: Error, ctx: &mut Context<Self>) {
        let Some(link) = self.link.take() else { return };
        let lost_in_flight = link.in_flight;
        self.leave_flow(&link);
        if self.phase == Phase::Closing {
            // nsqd closed on us while we drained; treat as closed.
            self.finish_close(lost_in_flight, ctx);
            return;
        }
        tracing::warn!(nsqd = %self.addr, conn = self.id, %error, lost_in_flight, "connection lost");
        self.fail_waiters(&error);
        // A link that stayed up for a while resets the backoff: this is a new failure episode.
        self.reconnect.connection_ended(link.connected_at.elapsed());
        self.emit(ConnectionEvent::Disconnected {
            id: self.id,
            addr: self.addr.clone(),
            error,
            lost_in_flight,
        });
        self.counters
            .reconnects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.phase = Phase::Connecting;
        match self.reconnect.next_delay(&mut rand::rng()) {
            Some(delay) => {
                self.next_delay = delay;
                self.emit(ConnectionEvent::Reconnecting {
                    id: self.id,
                    addr: self.addr.clone(),
                    attempt: self.reconnect.attempts(),
                    delay,
                });
            }
            None => self.give_up(),
        }
        // The supervisor restarts the actor; started() reconnects after next_delay.
        ctx.stop();
    }

    fn give_up(&mut self) {
        let attempts = self.reconnect.attempts();
        tracing::error!(nsqd = %self.addr, conn = self.id, attempts, "giving up reconnecting");
        self.phase = Phase::GaveUp;
        self.emit(ConnectionEvent::GaveUp {
            id: self.id,
            addr: self.addr.clone(),
            attempts,
        });
    }

    /// Tells the flow policy the link is gone (its RDY and in-flight messages with it).
    fn leave_flow(&self, link: &Link) {
        if let (Some(subscription), Some(id)) = (&self.subscription, link.flow_link) {
            subscription.flow.disconnected(id);
        }
    }

    fn fail_waiters(&mut self, error: &Error) {
        let addr = self.addr.to_string();
        for waiter in self.waiters.drain(..) {
            if let Waiter::Publish(tx) = waiter {
                // Written but unanswered: nsqd may or may not have the message.
                let _ = tx.send(Err(match error {
                    Error::Stopped => Error::Stopped,
                    _ => Error::OutcomeUnknown { addr: addr.clone() },
                }));
            }
        }
    }

    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else { return };
        let Some(interval) = link.heartbeat else {
            return;
        };
        if link.last_frame.elapsed() > interval * 2 {
            self.drop_link(
                Error::Timeout("no frame from nsqd within two heartbeat intervals"),
                ctx,
            );
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
        self.counters
            .rdy
            .store(count, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(nsqd = %self.addr, conn = self.id, rdy = count, "RDY");
        let _ = self.write(&Command::Rdy(count), ctx);
    }

    /// Starts a graceful close; `done` resolves with the number of abandoned messages.
    fn begin_close(
        &mut self,
        deadline: Duration,
        done: oneshot::Sender<u32>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(closing) = &mut self.closing {
            closing.done.push(done);
            return;
        }
        self.closing = Some(Closing {
            done: vec![done],
            deadline: None,
            abandoned: 0,
        });
        match self.phase {
            Phase::Connected => {
                self.phase = Phase::Closing;
                if self.subscription.is_some() {
                    // CLS: nsqd stops delivering and answers CLOSE_WAIT, but still takes
                    // FIN/REQ/TOUCH for the messages in flight (protocol_v2.go CLS).
                    self.waiters.push_back(Waiter::CloseWait);
                    let _ = self.write(&Command::Cls, ctx);
                } else if let Some(link) = &mut self.link {
                    link.close_wait_seen = true;
                }
                let handle = ctx.run_later(deadline, |act, ctx| {
                    let abandoned = act.link.as_ref().map_or(0, |l| l.in_flight);
                    act.finish_close(abandoned, ctx);
                });
                if let Some(closing) = &mut self.closing {
                    closing.deadline = Some(handle);
                }
                self.maybe_finish_close(ctx);
            }
            Phase::Connecting | Phase::Closing | Phase::Closed | Phase::GaveUp => {
                self.finish_close(0, ctx)
            }
        }
    }

    /// Finishes the close once CLOSE_WAIT has arrived, nothing is in flight and no publish is
    /// waiting for its answer.
    fn maybe_finish_close(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Closing {
            return;
        }
        let Some(link) = &self.link else { return };
        let publishes_pending = self.waiters.iter().any(|w| matches!(w, Waiter::Publish(_)));
        if link.close_wait_seen && link.in_flight == 0 && !publishes_pending {
            self.finish_close(0, ctx);
        }
    }

    fn finish_close(&mut self, abandoned: u32, ctx: &mut Context<Self>) {
        self.phase = Phase::Closed;
        self.counters
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.fail_waiters(&Error::Stopped);
        if let Some(closing) = &mut self.closing {
            if let Some(handle) = closing.deadline.take() {
                ctx.cancel_future(handle);
            }
            closing.abandoned = abandoned;
        }
        tracing::info!(nsqd = %self.addr, conn = self.id, abandoned, "closed");
        self.emit(ConnectionEvent::Closed {
            id: self.id,
            addr: self.addr.clone(),
            abandoned,
        });
        if let Some(link) = &self.link {
            self.leave_flow(link);
        }
        match &mut self.link {
            // Flush what is buffered (the last FINs) and shut the write side down before the
            // close resolves (see write_closed); a peer that stops reading gets 1 s.
            Some(link) => {
                link.flow_link = None;
                link.writer.close();
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.closed(ctx));
            }
            None => self.closed(ctx),
        }
    }

    /// The close is complete: tell whoever waits for it, and stop (for good: `started()`
    /// does nothing in the `Closed` phase).
    fn closed(&mut self, ctx: &mut Context<Self>) {
        if let Some(closing) = self.closing.take() {
            for done in closing.done {
                let _ = done.send(closing.abandoned);
            }
        }
        ctx.stop();
    }
}

/// An `UnboundedReceiver` as a `Stream` (tokio-stream's wrapper, without the dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

impl Actor for NsqdConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
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
    fn restarting(&mut self, _: &mut Self::Context) {
        // The old context's streams and futures are gone; so is everything tied to the link.
        if let Some(link) = self.link.take() {
            self.leave_flow(&link);
        }
        self.counters
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .rdy
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .in_flight
            .store(0, std::sync::atomic::Ordering::Relaxed);
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

impl Handler<Close> for NsqdConnection {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, close: Close, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.begin_close(close.deadline, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(0) })
    }
}
