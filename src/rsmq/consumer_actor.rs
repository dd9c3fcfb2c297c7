//! The consumer actor: receives while a slot is free, dispatches to the handlers, backs off
//! on Redis errors, and stops gracefully. Waking up after an empty receive is in
//! `consumer_wake.rs`, answers in `consumer_answer.rs`.

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

use super::{
    client::Rsmq,
    consumer::{Counters, RsmqConsumerEvent},
    consumer_answer::{Answer, Receipt},
    consumer_builder::RsmqConsumerBuilder,
    types::RsmqMessage,
};
use crate::{
    delivery::{Delivery, DeliveryId, Meta},
    error::{Error, Result},
    handler::{GiveUpHook, Handled, HandlerSink},
    retry::{ReconnectBackoff, ReconnectPolicy},
};

/// How long the consumer drains when the error backoff gives up.
const GIVE_UP_DRAIN: Duration = Duration::from_secs(30);

/// The settings the actor reads after start.
pub(crate) struct Settings {
    pub(crate) concurrency: usize,
    pub(crate) auto_extend: bool,
    pub(crate) max_attempts: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) realtime: bool,
    pub(crate) default_requeue_delay: Duration,
    pub(crate) max_requeue_delay: Duration,
}

/// What the last receives said about the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Supply {
    /// Found empty: receive again on the poll timer or a notification.
    Empty,
    /// Woken up (or just started): probe with one receive at a time.
    Unknown,
    /// The last receive found a message: receive into every free slot.
    Flowing,
}

/// A delivery handed out and not yet answered.
pub(crate) struct InFlight {
    pub(crate) id: Arc<str>,
    pub(crate) rc: u64,
    pub(crate) attempts: u32,
    /// The auto-extension timer.
    pub(crate) extender: Option<SpawnHandle>,
}

/// Receives from one RSMQ queue and hands every message to the crate's handlers as a
/// [`Delivery`]. Start one with [`RsmqConsumer::builder`]; see the
/// [`RsmqConsumerHandle`](super::RsmqConsumerHandle) it returns for stats and stop.
///
/// ```no_run
/// # async fn demo() -> actix_nsq::Result<()> {
/// use std::time::Duration;
/// use actix_nsq::{rsmq::{Rsmq, RsmqConsumer}, Delivery};
///
/// let rsmq = Rsmq::connect("redis://127.0.0.1:6379/0").await?;
/// let consumer = RsmqConsumer::builder(rsmq, "jobs")
///     .concurrency(16)
///     .realtime(true)
///     .handler_fn(|delivery: Delivery| async move {
///         println!("{} bytes, attempt {}", delivery.body().len(), delivery.attempts());
///         Ok(()) // deletes the message; an Err makes it visible again after a delay
///     })
///     .start()?;
/// // ... later:
/// let abandoned = consumer.stop(Duration::from_secs(30)).await;
/// # Ok(()) }
/// ```
///
/// # Answers
///
/// | answer | Redis call |
/// |---|---|
/// | finish (a handler's `Ok`) | [`Rsmq::delete_message_checked`] |
/// | requeue (a handler's `Err`, or [`Delivery::requeue`]) | [`Rsmq::change_message_visibility_checked`] with the delay (0 = visible now) |
/// | touch | the same, with the visibility timeout |
///
/// A requeue without an explicit delay waits `min(default_requeue_delay × attempts,
/// max_requeue_delay)`, as NSQ does; `attempts` is the receive count `rc`. RSMQ keeps whole
/// seconds, so a delay with a fraction is rounded **up** to the next second (never shorter
/// than asked). RSMQ has no consumer-wide backoff:
/// [`requeue_without_backoff`](crate::Delivery::requeue_without_backoff) acts as `requeue`.
///
/// Answering is synchronous, as for NSQ: the answer is queued to the consumer actor, which
/// makes the Redis call. Its outcome arrives as an [`RsmqConsumerEvent`] and in the
/// [stats](super::RsmqConsumerStats), never as the return value of `finish`. After the consumer has
/// stopped, answers return [`Error::Stopped`](crate::Error::Stopped).
///
/// # Guarantees
///
/// Delivery is **at least once**. A message is hidden for the visibility timeout `vt` when it
/// is received; if it is not deleted in time it is delivered again, to this or another
/// consumer, with `rc + 1`.
///
/// Every answer carries the receive count as a receipt, and Redis checks it in the same Lua
/// script that acts: an answer acts only while the stored `rc` is still this delivery's and the
/// message is still hidden. So a **late answer never touches a redelivered copy**: a finish
/// after the `vt` ran out deletes nothing, whether or not another consumer has received the
/// message since, and is reported as [`RsmqConsumerEvent::NotOwned`]. The message is then
/// processed again. With [`auto_extend`](RsmqConsumerBuilder::auto_extend) the consumer
/// keeps unanswered messages hidden, so this happens only when the consumer cannot reach
/// Redis (or is stalled) for longer than `vt / 2`.
///
/// A message is never deleted before its handler succeeded (or the give-up path finished it),
/// and a Redis error on an answer loses nothing: the message comes back after its `vt`.
/// Messages moved to a [dead-letter queue](RsmqConsumerBuilder::dead_letter_queue) are sent
/// there first and deleted after (checked, like every finish), so a crash in between, or a
/// `vt` that runs out during the move, leaves a copy in both queues.
///
/// # Failures
///
/// * A dropped, unanswered [`Delivery`](crate::Delivery) is made visible again at once.
/// * A closure handler that panics, or handler actors that have all stopped: the message is
///   requeued with the default delay and [`RsmqConsumerEvent::HandlerFailed`] is emitted. The
///   consumer lives on.
/// * Redis errors while receiving (Redis down, queue missing): receiving backs off
///   exponentially with jitter ([`RsmqConsumerBuilder::error_backoff`]) and goes on; the
///   connection reconnects by itself.
pub struct RsmqConsumer {
    pub(crate) rsmq: Rsmq,
    pub(crate) queue: Arc<str>,
    /// `rsmq:{queue}`, each delivery's source.
    source: Arc<str>,
    pub(crate) settings: Settings,
    handler: HandlerSink,
    give_up: GiveUpHook,
    events: Option<Recipient<RsmqConsumerEvent>>,
    pub(crate) counters: Arc<Counters>,
    answers: mpsc::UnboundedSender<Answer>,
    answers_rx: Option<mpsc::UnboundedReceiver<Answer>>,
    /// The visibility timeout in seconds: configured, or the queue's once read.
    pub(crate) vt: Option<u64>,
    pub(crate) in_flight: HashMap<u64, InFlight>,
    next_token: u64,
    /// Receives (and the queue read) in progress.
    receiving: usize,
    pub(crate) supply: Supply,
    pub(crate) poll_timer: Option<SpawnHandle>,
    backoff: ReconnectBackoff,
    backing_off: bool,
    pub(crate) realtime_backoff: ReconnectBackoff,
    /// Answer calls to Redis in progress.
    pub(crate) pending_calls: usize,
    /// Set once stopping: who waits for the drain.
    stopping: Option<Vec<oneshot::Sender<u32>>>,
}

impl RsmqConsumer {
    /// Starts configuring a consumer of `queue`, on `rsmq`'s connection.
    pub fn builder(rsmq: Rsmq, queue: impl Into<String>) -> RsmqConsumerBuilder {
        RsmqConsumerBuilder::new(rsmq, queue)
    }

    pub(crate) fn new(builder: RsmqConsumerBuilder, counters: Arc<Counters>) -> Self {
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
            stopping: None,
        }
    }

    pub(crate) fn emit(&self, event: RsmqConsumerEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// Starts receives into the free slots, as many as the supply warrants.
    pub(crate) fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.is_stopping() || self.backing_off {
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
        }
        if let (Some(waiters), Some(waiter)) = (&mut self.stopping, waiter) {
            waiters.push(waiter);
        }
        ctx.run_later(deadline, |act, ctx| act.finish_stop(ctx));
        self.check_drained(ctx);
    }

    /// Stops once nothing is outstanding: no delivery unanswered, no Redis call pending.
    pub(crate) fn check_drained(&mut self, ctx: &mut Context<Self>) {
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

impl Actor for RsmqConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
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
pub(crate) struct Stop {
    pub(crate) deadline: Duration,
}

impl Handler<Stop> for RsmqConsumer {
    type Result = ResponseFuture<u32>;

    fn handle(&mut self, Stop { deadline }: Stop, ctx: &mut Context<Self>) -> Self::Result {
        // Deliveries waiting for a live handler actor go back now, not at the deadline.
        self.handler.close();
        let (tx, rx) = oneshot::channel();
        self.begin_stop(deadline, Some(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(0) })
    }
}
