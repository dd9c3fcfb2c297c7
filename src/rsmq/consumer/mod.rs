//! [`RsmqConsumer`]: receives from one RSMQ queue and hands every message to the crate's
//! handlers as a [`Delivery`](crate::Delivery), shaped like the NSQ [`Consumer`](crate::Consumer):
//! a handle (this module), its builder, its events, and a private actor that receives while a
//! slot is free, answers through checked Redis calls and stops gracefully.

mod actor;
mod builder;
mod events;

use std::{
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use actix::{Actor, Addr};

pub use builder::RsmqConsumerBuilder;
pub use events::RsmqConsumerEvent;

use self::actor::{RsmqConsumerActor, Stop};
use super::client::Rsmq;

/// A running RSMQ consumer. Cheap to clone; clones control the same consumer. Start one with
/// [`RsmqConsumer::builder`].
///
/// ```no_run
/// # async fn demo() -> actix_nsq::Result<()> {
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
/// let abandoned = consumer.stop().await;
/// # Ok(()) }
/// ```
///
/// The consumer keeps running until [`stop`](Self::stop) (or until the
/// [`error_backoff`](RsmqConsumerBuilder::error_backoff) policy gives up), whether or not a
/// handle is kept.
///
/// # Answers
///
/// | answer | Redis call |
/// |---|---|
/// | finish (a handler's `Ok`) | [`Rsmq::delete_message_checked`] |
/// | requeue (a handler's `Err`, or [`Delivery::requeue`](crate::Delivery::requeue)) | [`Rsmq::change_message_visibility_checked`] with the delay (0 = visible now) |
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
/// [stats](RsmqConsumerStats), never as the return value of `finish`. After the consumer has
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
/// * A handler that panics (a closure, a supervised actor, a blocking handler): the message
///   is requeued with the default delay and [`RsmqConsumerEvent::HandlerFailed`] is emitted;
///   a supervised actor or blocking handler is replaced by a fresh one
///   ([`RsmqConsumerEvent::Handler`]). The consumer lives on.
/// * No handler actor alive (actors given with [`handler`](RsmqConsumerBuilder::handler)
///   that stopped, or supervised ones past their restart budget): the consumer receives no
///   more ([`HandlerEvent::Unavailable`](crate::HandlerEvent::Unavailable)) and holds the
///   deliveries it has, touching them, until an actor is back or it stops; a stop makes them
///   visible again at once.
/// * Redis errors while receiving (Redis down, queue missing): receiving backs off
///   exponentially with jitter ([`RsmqConsumerBuilder::error_backoff`]) and goes on; the
///   connection reconnects by itself.
#[derive(Clone)]
pub struct RsmqConsumer {
    actor: Addr<RsmqConsumerActor>,
    queue: Arc<str>,
    counters: Arc<Counters>,
    stop_timeout: Duration,
}

impl fmt::Debug for RsmqConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsmqConsumer")
            .field("queue", &self.queue)
            .field("running", &self.is_running())
            .finish()
    }
}

impl RsmqConsumer {
    /// Starts configuring a consumer of `queue`, on `rsmq`'s connection.
    pub fn builder(rsmq: Rsmq, queue: impl Into<String>) -> RsmqConsumerBuilder {
        RsmqConsumerBuilder::new(rsmq, queue)
    }

    fn start(builder: RsmqConsumerBuilder) -> Self {
        let queue: Arc<str> = Arc::from(builder.queue.as_str());
        let stop_timeout = builder.stop_timeout;
        let counters = Arc::new(Counters::default());
        let actor = RsmqConsumerActor::new(builder, counters.clone()).start();
        Self {
            actor,
            queue,
            counters,
            stop_timeout,
        }
    }

    /// The queue this consumer receives from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// True until the consumer has stopped.
    pub fn is_running(&self) -> bool {
        self.actor.connected()
    }

    /// The consumer's counters.
    pub fn stats(&self) -> RsmqConsumerStats {
        self.counters.snapshot()
    }

    /// Stops gracefully within the configured
    /// [`stop_timeout`](RsmqConsumerBuilder::stop_timeout) (default 30 s): receives no more,
    /// waits for every outstanding delivery to be answered and for the answers' Redis calls to
    /// complete, then stops. Resolves with the number of deliveries still unanswered at the
    /// deadline (0 after a clean drain); those become visible again when their visibility
    /// timeout runs out.
    ///
    /// A message that a receive in progress brings in after the stop began is made visible
    /// again at once, not handled. Calling `stop` again, or on a stopped consumer, is harmless
    /// (a stopped consumer resolves with 0).
    pub async fn stop(&self) -> u32 {
        self.stop_within(self.stop_timeout).await
    }

    /// As [`stop`](Self::stop), with an explicit deadline.
    pub async fn stop_within(&self, deadline: Duration) -> u32 {
        self.actor.send(Stop { deadline }).await.unwrap_or(0)
    }
}

/// A snapshot of an RSMQ consumer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RsmqConsumerStats {
    /// Messages received (each redelivery counts again).
    pub received: u64,
    /// Messages deleted by a finish.
    pub finished: u64,
    /// Messages made visible again (or delayed) by a requeue.
    pub requeued: u64,
    /// Deliveries handed out and not yet answered; never above the concurrency.
    pub in_flight: u32,
    /// Deliveries that went to the give-up hook or dead-letter queue (past `max_attempts`).
    pub given_up: u64,
    /// Visibility extensions that took effect (touches and auto-extensions).
    pub extended: u64,
    /// Answers refused because the receipt no longer owned the message (see
    /// [`RsmqConsumerEvent::NotOwned`]).
    pub not_owned: u64,
}

/// Live counters, written by the actor and read by the handles.
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    finished: AtomicU64,
    requeued: AtomicU64,
    in_flight: AtomicU32,
    given_up: AtomicU64,
    extended: AtomicU64,
    not_owned: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RsmqConsumerStats {
        RsmqConsumerStats {
            received: self.received.load(Relaxed),
            finished: self.finished.load(Relaxed),
            requeued: self.requeued.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            given_up: self.given_up.load(Relaxed),
            extended: self.extended.load(Relaxed),
            not_owned: self.not_owned.load(Relaxed),
        }
    }
}
