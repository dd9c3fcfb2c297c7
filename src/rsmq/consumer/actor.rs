//! The consumer actor: receives while a slot is free, dispatches to the handlers, backs off
//! on Redis errors, and stops gracefully. Its impl goes on in two child modules, which see its
//! private state: answers and auto-extension in `answer`, waking up after an empty receive
//! (poll timer, realtime notifications) in `wake`.

mod answer;
mod wake;

use std::{
    collections::HashMap,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, UNIX_EPOCH},
};

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message,
    Recipient, ResponseFuture, SpawnHandle,
};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use self::answer::{Answer, Receipt};
use super::{Counters, RsmqConsumerBuilder, RsmqConsumerEvent};
use crate::{
    delivery::{Delivery, DeliveryId, Meta},
    error::{Error, Result},
    handler::{GiveUpHook, Handled, HandlerEvent, HandlerSink},
    retry::{ReconnectBackoff, ReconnectPolicy},
    rsmq::{client::Rsmq, types::RsmqMessage},
};

/// How long the consumer drains when the error backoff gives up.
const GIVE_UP_DRAIN: Duration = Duration::from_secs(30);

/// The settings the actor reads after start.
struct Settings {
    concurrency: usize,
    auto_extend: bool,
    max_attempts: u32,
    poll_interval: Duration,
    realtime: bool,
    default_requeue_delay: Duration,
    max_requeue_delay: Duration,
}

/// What the last receives said about the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Supply {
    /// Found empty: receive again on the poll timer or a notification.
    Empty,
    /// Woken up (or just started): probe with one receive at a time.
    Unknown,
    /// The last receive found a message: receive into every free slot.
    Flowing,
}

/// A delivery handed out and not yet answered.
struct InFlight {
    id: Arc<str>,
    rc: u64,
    attempts: u32,
    /// The auto-extension timer.
    extender: Option<SpawnHandle>,
}

/// Receives from one RSMQ queue for an [`RsmqConsumer`](super::RsmqConsumer) handle, which
/// documents the behaviour.
pub(super) struct RsmqConsumerActor {
    rsmq: Rsmq,
    queue: Arc<str>,
    /// `rsmq:{queue}`, each delivery's source.
    source: Arc<str>,
    settings: Settings,
    handler: HandlerSink,
    give_up: GiveUpHook,
    events: Option<Recipient<RsmqConsumerEvent>>,
    counters: Arc<Counters>,
    answers: mpsc::UnboundedSender<Answer>,
    answers_rx: Option<mpsc::UnboundedReceiver<Answer>>,
    /// The visibility timeout in seconds: configured, or the queue's once read.
    vt: Option<u64>,
    in_flight: HashMap<u64, InFlight>,
    next_token: u64,
    /// Receives (and the queue read) in progress.
    receiving: usize,
    supply: Supply,
    poll_timer: Option<SpawnHandle>,
    backoff: ReconnectBackoff,
    backing_off: bool,
    realtime_backoff: ReconnectBackoff,
    /// Answer calls to Redis in progress.
    pending_calls: usize,
    /// No handler actor is alive: receive no more until one is back.
    handlers_unavailable: bool,
    /// Set once stopping: who waits for the drain.
    stopping: Option<Vec<oneshot::Sender<u32>>>,
}

impl RsmqConsumerActor {
    pub(super) fn new(builder: RsmqConsumerBuilder, counters: Arc<Counters>) -> Self {
        let (answers, answers_rx) = mpsc::unbounded_channel();
        let queue: Arc<str> = Arc::from(builder.queue.as_str());
        let vt = builder.visibility_timeout.map(|vt| vt.as_secs());
        let realtime_policy = ReconnectPolicy::new()
            .initial_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(30));
        Self {
            source: Arc::from(format!("rsmq:{queue}")),
            handler: builder.handler_sink(),
            give_up: builder.give_up_hook(),
            settings: Settings {
                concurrency: builder.concurrency as usize,
                auto_extend: builder.auto_extend,
                max_attempts: builder.max_attempts,
                poll_interval: builder.poll_interval,
                realtime: builder.realtime,
                default_requeue_delay: builder.default_requeue_delay,
                max_requeue_delay: builder.max_requeue_delay,
            },
            backoff: ReconnectBackoff::new(builder.error_backoff.clone()),
            realtime_backoff: ReconnectBackoff::new(realtime_policy),
            events: builder.events,
            rsmq: builder.rsmq,
            queue,
            counters,
            answers,
            answers_rx: Some(answers_rx),
            vt,
            in_flight: HashMap::new(),
            next_token: 0,
            receiving: 0,
            supply: Supply::Unknown,
            poll_timer: None,
            backing_off: false,
            pending_calls: 0,
            handlers_unavailable: false,
            stopping: None,
        }
    }

    fn emit(&self, event: RsmqConsumerEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
    }

    fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// Starts receives into the free slots, as many as the supply warrants.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.is_stopping() || self.backing_off || self.handlers_unavailable {
            return;
        }
        let Some(vt) = self.vt else {
            if self.receiving == 0 {
                self.read_queue_vt(ctx);
            }
            return;
        };
        let allowed = match self.supply {
            Supply::Empty => 0,
            Supply::Unknown => 1,
            Supply::Flowing => self.settings.concurrency,
        };
        while self.receiving < allowed
            && self.in_flight.len() + self.receiving < self.settings.concurrency
        {
            self.receiving += 1;
            let (rsmq, queue) = (self.rsmq.clone(), self.queue.clone());
            let receive = async move {
                rsmq.receive_message(&queue, Some(Duration::from_secs(vt)))
                    .await
            };
            ctx.spawn(wrap_future(receive).map(|result, act: &mut Self, ctx| {
                act.receiving -= 1;
                act.on_received(result, ctx);
            }));
        }
    }

    /// Reads the queue's `vt` (the default visibility timeout), which auto-extension and
    /// touches need; it is then passed explicitly on every receive.
    fn read_queue_vt(&mut self, ctx: &mut Context<Self>) {
        self.receiving += 1;
        let (rsmq, queue) = (self.rsmq.clone(), self.queue.clone());
        let read = async move { rsmq.get_queue_attributes(&queue).await };
        ctx.spawn(wrap_future(read).map(|result, act: &mut Self, ctx| {
            act.receiving -= 1;
            match result {
                Ok(attributes) if attributes.vt.is_zero() => act.on_receive_error(
                    Error::config(
                        "visibility_timeout",
                        "the queue's vt is 0; set visibility_timeout or the queue's vt",
                    ),
                    ctx,
                ),
                Ok(attributes) => {
                    act.vt = Some(attributes.vt.as_secs());
                    act.fill(ctx);
                }
                Err(error) => act.on_receive_error(error, ctx),
            }
        }));
    }

    fn on_received(&mut self, result: Result<Option<RsmqMessage>>, ctx: &mut Context<Self>) {
        match result {
            Ok(found) => {
                if self.backoff.attempts() > 0 {
                    let attempts = self.backoff.attempts();
                    tracing::info!(queue = %self.queue, attempts, "rsmq receiving again");
                    self.emit(RsmqConsumerEvent::Recovered { attempts });
                    self.backoff.reset();
                }
                match found {
                    Some(message) if self.is_stopping() => self.release(message, ctx),
                    Some(message) => {
                        self.supply = Supply::Flowing;
                        self.deliver(message, ctx);
                    }
                    None => {
                        self.supply = Supply::Empty;
                        self.arm_poll(ctx);
                    }
                }
            }
            Err(error) => self.on_receive_error(error, ctx),
        }
        self.fill(ctx);
        self.check_drained(ctx);
    }

    fn on_receive_error(&mut self, error: Error, ctx: &mut Context<Self>) {
        if self.is_stopping() || self.backing_off {
            tracing::debug!(queue = %self.queue, %error, "rsmq receive failed");
            self.check_drained(ctx);
            return;
        }
        let Some(retry_in) = self.backoff.next_delay(&mut rand::rng()) else {
            let attempts = self.backoff.attempts();
            tracing::error!(queue = %self.queue, %error, attempts, "rsmq receiving gave up; stopping");
            self.emit(RsmqConsumerEvent::GaveUp { attempts, error });
            self.begin_stop(GIVE_UP_DRAIN, None, ctx);
            return;
        };
        let attempt = self.backoff.attempts();
        tracing::warn!(queue = %self.queue, %error, attempt, ?retry_in, "rsmq receive failed; backing off");
        self.emit(RsmqConsumerEvent::ReceiveFailed {
            error,
            attempt,
            retry_in,
        });
        self.backing_off = true;
        ctx.run_later(retry_in, |act, ctx| {
            act.backing_off = false;
            act.supply = Supply::Unknown;
            act.fill(ctx);
        });
    }

    /// Wraps a received message in a [`Delivery`] and hands it to the handler (or, past
    /// `max_attempts`, to the give-up hook).
    fn deliver(&mut self, message: RsmqMessage, ctx: &mut Context<Self>) {
        let RsmqMessage {
            id,
            message: body,
            rc,
            fr,
            sent,
            ..
        } = message;
        let token = self.next_token;
        self.next_token += 1;
        let id: Arc<str> = Arc::from(id);
        let attempts = u32::try_from(rc).unwrap_or(u32::MAX);
        let accepted = sent.unwrap_or(fr).duration_since(UNIX_EPOCH);
        let meta = Meta {
            id: DeliveryId::Text(id.clone()),
            body: Bytes::from(body),
            attempts,
            timestamp_nanos: accepted
                .ok()
                .and_then(|d| i64::try_from(d.as_nanos()).ok())
                .unwrap_or(0),
            source: self.source.clone(),
        };
        let receipt = Arc::new(Receipt {
            token,
            answers: self.answers.clone(),
        });
        let (delivery, watch) = Delivery::new(meta, receipt);
        let extender = self.start_extender(token, ctx);
        self.in_flight.insert(
            token,
            InFlight {
                id,
                rc,
                attempts,
                extender,
            },
        );
        self.counters.received.fetch_add(1, Relaxed);
        self.counters.in_flight.fetch_add(1, Relaxed);
        let give_up = self.settings.max_attempts > 0 && rc > u64::from(self.settings.max_attempts);
        let handled = if give_up {
            self.counters.given_up.fetch_add(1, Relaxed);
            self.give_up.dispatch(delivery)
        } else {
            self.handler.dispatch(delivery)
        };
        ctx.spawn(wrap_future(handled).map(move |handled, act: &mut Self, _| {
            act.report_handler_failure(watch.meta(), &handled);
            crate::handler::settle(&watch, &handled, give_up);
        }));
    }

    fn report_handler_failure(&self, meta: &Meta, handled: &Handled) {
        let reason = match handled {
            Handled::Panicked(panic) => format!("handler panicked: {panic}"),
            Handled::Gone => {
                "no live handler took the message; released it without counting a failure"
                    .to_owned()
            }
            Handled::Returned(_) => return,
        };
        self.emit(RsmqConsumerEvent::HandlerFailed {
            id: meta.id.as_str().to_owned(),
            attempts: meta.attempts,
            error: Error::Handler(reason),
        });
    }

    /// Makes a message received after the stop began visible again at once.
    fn release(&mut self, message: RsmqMessage, ctx: &mut Context<Self>) {
        self.counters.received.fetch_add(1, Relaxed);
        let token = self.next_token;
        self.next_token += 1;
        let entry = InFlight {
            id: Arc::from(message.id),
            rc: message.rc,
            attempts: u32::try_from(message.rc).unwrap_or(u32::MAX),
            extender: None,
        };
        self.counters.in_flight.fetch_add(1, Relaxed);
        self.in_flight.insert(token, entry);
        let now = crate::delivery::Action::Requeue {
            delay: Some(Duration::ZERO),
            backoff: false,
        };
        self.on_answer(Answer { token, action: now }, ctx);
    }

    fn begin_stop(
        &mut self,
        deadline: Duration,
        waiter: Option<oneshot::Sender<u32>>,
        ctx: &mut Context<Self>,
    ) {
        if self.stopping.is_none() {
            tracing::info!(queue = %self.queue, in_flight = self.in_flight.len(), ?deadline, "rsmq consumer stopping");
            self.stopping = Some(Vec::new());
            if let Some(timer) = self.poll_timer.take() {
                ctx.cancel_future(timer);
            }
            // Deliveries waiting for a live handler actor go back at once (`Handled::Gone`).
            self.handler.close();
        }
        if let (Some(waiters), Some(waiter)) = (&mut self.stopping, waiter) {
            waiters.push(waiter);
        }
        ctx.run_later(deadline, |act, ctx| act.finish_stop(ctx));
        self.check_drained(ctx);
    }

    /// Stops once nothing is outstanding: no delivery unanswered, no Redis call pending.
    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        if self.is_stopping()
            && self.in_flight.is_empty()
            && self.pending_calls == 0
            && self.receiving == 0
        {
            self.finish_stop(ctx);
        }
    }

    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(waiters) = self.stopping.as_mut().map(std::mem::take) else {
            return;
        };
        let abandoned = u32::try_from(self.in_flight.len()).unwrap_or(u32::MAX);
        if abandoned > 0 || self.pending_calls > 0 {
            tracing::warn!(queue = %self.queue, abandoned, pending_calls = self.pending_calls, "rsmq consumer stopped with deliveries outstanding; they become visible after their vt");
        } else {
            tracing::info!(queue = %self.queue, "rsmq consumer stopped");
        }
        for waiter in waiters {
            let _ = waiter.send(abandoned);
        }
        ctx.stop();
    }
}

impl Actor for RsmqConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.handler.report_to(ctx.address().recipient());
        if let Some(mut rx) = self.answers_rx.take() {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        }
        tracing::debug!(queue = %self.queue, concurrency = self.settings.concurrency, realtime = self.settings.realtime, "rsmq consumer started");
        if self.settings.realtime {
            self.subscribe(ctx);
        }
        self.fill(ctx);
    }
}

/// Stop gracefully within `deadline`; resolves with the number of abandoned deliveries.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "u32")]
pub(super) struct Stop {
    pub(super) deadline: Duration,
}

impl Handler<Stop> for RsmqConsumerActor {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, Stop { deadline }: Stop, ctx: &mut Context<Self>) -> Self::Result {
        // Deliveries waiting for a live handler actor go back now, not at the deadline.
        self.handler.close();
        let (tx, rx) = oneshot::channel();
        self.begin_stop(deadline, Some(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(0) })
    }
}

/// Handler supervision, as the NSQ consumer does it (`consumer/handlers.rs`): report it, and
/// receive nothing while no handler actor is alive.
impl Handler<HandlerEvent> for RsmqConsumerActor {
    type Result = ();

    fn handle(&mut self, event: HandlerEvent, ctx: &mut Context<Self>) {
        match event {
            HandlerEvent::Unavailable => self.handlers_unavailable = true,
            HandlerEvent::Available => {
                self.handlers_unavailable = false;
                self.supply = Supply::Unknown;
                self.fill(ctx);
            }
            _ => {}
        }
        self.emit(RsmqConsumerEvent::Handler(event));
    }
}
