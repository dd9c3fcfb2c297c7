//! What an RSMQ consumer reports.

use std::time::Duration;

use actix::Message;

use crate::{delivery::Action, error::Error, handler::HandlerEvent};

/// Something that happened to an [`RsmqConsumer`](super::RsmqConsumer). Subscribe with
/// [`RsmqConsumerBuilder::events`](super::RsmqConsumerBuilder::events).
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
    /// The [`error_backoff`](super::RsmqConsumerBuilder::error_backoff) policy's attempts are
    /// used up: the consumer stops as if [`stop`](super::RsmqConsumer::stop) had been called.
    GaveUp {
        /// How many attempts failed.
        attempts: u32,
        /// The last error.
        error: Error,
    },
    /// A handler panicked, or no handler saw the delivery (the consumer stopped while it
    /// waited for a live handler actor): the message is requeued, with the default delay after
    /// a panic, at once otherwise.
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
    /// A handler was restarted, or handler actors became unavailable (the consumer receives
    /// no more) or available again (it receives again).
    Handler(HandlerEvent),
}
