//! The public face of the RSMQ consumer: its handle, stats and events. The actor and its
//! documentation are in `consumer_actor.rs`, its settings in `consumer_builder.rs`, answers in
//! `consumer_answer.rs`, polling and realtime wake-ups in `consumer_wake.rs`.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use actix::{Addr, Message};

use super::consumer_actor::Stop;
pub use super::{consumer_actor::RsmqConsumer, consumer_builder::RsmqConsumerBuilder};
use crate::{delivery::Action, error::Error};

/// A running [`RsmqConsumer`]. Cheap to clone; clones control the same consumer.
///
/// The consumer keeps running until [`stop`](Self::stop) (or until the
/// [`error_backoff`](RsmqConsumerBuilder::error_backoff) policy gives up), whether or not a
/// handle is kept.
#[derive(Clone)]
pub struct RsmqConsumerHandle {
    pub(crate) addr: Addr<RsmqConsumer>,
    pub(crate) queue: Arc<str>,
    pub(crate) counters: Arc<Counters>,
}

impl fmt::Debug for RsmqConsumerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsmqConsumerHandle")
            .field("queue", &self.queue)
            .field("running", &self.is_running())
            .finish()
    }
}

impl RsmqConsumerHandle {
    /// The queue this consumer receives from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// True until the consumer has stopped.
    pub fn is_running(&self) -> bool {
        self.addr.connected()
    }

    /// The consumer's counters.
    pub fn stats(&self) -> RsmqConsumerStats {
        self.counters.snapshot()
    }

    /// Stops gracefully: receives no more, waits up to `deadline` for every outstanding
    /// delivery to be answered and for the answers' Redis calls to complete, then stops.
    /// Resolves with the number of deliveries still unanswered at the deadline (0 after a
    /// clean drain); those become visible again when their visibility timeout runs out.
    ///
    /// A message that a receive in progress brings in after the stop began is made visible
    /// again at once, not handled. Calling `stop` again, or on a stopped consumer, is harmless
    /// (a stopped consumer resolves with 0).
    pub async fn stop(&self, deadline: Duration) -> u32 {
        self.addr.send(Stop { deadline }).await.unwrap_or(0)
    }
}

/// A snapshot of a consumer's counters.
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
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) in_flight: AtomicU32,
    pub(crate) given_up: AtomicU64,
    pub(crate) extended: AtomicU64,
    pub(crate) not_owned: AtomicU64,
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

/// Something that happened to an [`RsmqConsumer`]. Subscribe with
/// [`RsmqConsumerBuilder::events`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum RsmqConsumerEvent {
    /// Receiving failed (Redis unreachable, the queue does not exist, its `vt` is 0, ...). The
    /// next attempt comes after `retry_in`.
    ReceiveFailed {
        /// What went wrong.
        error: Error,
        /// Consecutive failures so far.
        attempt: u32,
        /// When receiving is tried again.
        retry_in: Duration,
    },
    /// Receiving works again after `attempts` consecutive failures.
    Recovered {
        /// How many attempts had failed.
        attempts: u32,
    },
    /// The [`error_backoff`](RsmqConsumerBuilder::error_backoff) policy's attempts are used
    /// up: the consumer stops as if [`stop`](RsmqConsumerHandle::stop) had been called.
    GaveUp {
        /// How many attempts failed.
        attempts: u32,
        /// The last error.
        error: Error,
    },
    /// A handler panicked with the delivery (the message is requeued with the default delay),
    /// or the consumer stopped while the delivery waited for a live handler actor (it is made
    /// visible again at once, without counting a failure).
    HandlerFailed {
        /// The message id.
        id: String,
        /// The delivery's attempt (its `rc`).
        attempts: u32,
        /// [`Error::Handler`] saying what happened.
        error: Error,
    },
    /// The Redis call of an answer failed. Nothing was lost: the message becomes visible
    /// again when its visibility timeout runs out.
    AnswerFailed {
        /// The message id.
        id: String,
        /// The answer (`Touch` for an auto-extension too).
        action: Action,
        /// What went wrong.
        error: Error,
    },
    /// An answer came too late and changed nothing: the message's visibility timeout had run
    /// out (and it may have been received again since, with a higher `rc`), or it is gone.
    /// The redelivered copy is untouched; the message is, or was, processed again.
    NotOwned {
        /// The message id.
        id: String,
        /// This delivery's receipt: the receive count it was delivered with.
        rc: u64,
        /// The refused answer (`Touch` for an auto-extension too).
        action: Action,
        /// True when the message no longer exists at all (whoever received it next deleted
        /// it); false when it exists under a newer receipt or is visible again.
        gone: bool,
    },
    /// The realtime subscription could not be made; polling goes on, and subscribing is
    /// tried again after `retry_in`.
    RealtimeFailed {
        /// What went wrong.
        error: Error,
        /// When subscribing is tried again.
        retry_in: Duration,
    },
}
