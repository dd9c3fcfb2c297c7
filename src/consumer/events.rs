//! What a consumer reports.

use std::time::Duration;

use actix::Message;

use crate::{conn::ConnectionEvent, error::Error, events::MessageEvent, handler::HandlerEvent};

/// Something that happened to a consumer. Listen with
/// [`ConsumerBuilder::events`](super::ConsumerBuilder::events) or
/// [`Consumer::subscribe`](super::Consumer::subscribe) (any number of listeners), and with
/// the `message_events`/`subscribe_messages` variants for [`Message`](Self::Message) too.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// A connection event: identify and AUTH results, connected, heartbeat, response,
    /// disconnected, reconnecting, gave up, a non-fatal server error, a handler failure,
    /// closed.
    Connection(ConnectionEvent),
    /// A backoff pause began: every connection went to RDY 0 for `pause`, after which one
    /// connection gets RDY 1 to test the waters. Sent when a failure raised the level, and
    /// also when a success lowered it but not to 0 (go-nsq `consumer.go:802-855` keeps
    /// backing off, with the shorter pause of the lower level).
    BackoffStarted {
        /// The backoff level, now (each failure steps it up by one, each success down by one).
        level: u32,
        /// How long RDY stays at 0.
        pause: Duration,
    },
    /// The backoff level changed and is still above 0: after every failure that raised it
    /// (from 0 too) and every success that lowered it, right after the
    /// [`BackoffStarted`](Self::BackoffStarted) of the pause that change began. Outcomes
    /// during a pause change nothing (go-nsq `consumer.go:806-811`), so no event either; a
    /// level that falls to 0 sends [`BackoffEnded`](Self::BackoffEnded) instead.
    BackoffLevel {
        /// The new level (1 or more).
        level: u32,
    },
    /// Backoff is over: every connection is back to its full RDY share.
    BackoffEnded,
    /// Something happened to one message; only for listeners that asked for message events.
    Message(MessageEvent),
    /// The consumer stopped (gnsq `on_close`): every connection closed, `abandoned` messages
    /// were still unanswered at the deadline. The last event of a consumer.
    Stopped {
        /// Messages unanswered at the stop deadline (nsqd redelivers them).
        abandoned: u32,
    },
    /// An nsqlookupd query failed; existing connections are kept. Also sent, with
    /// [`Error::SkippedProducers`], right after [`Discovered`](Self::Discovered) when the
    /// answer listed entries that cannot be connected to: those were skipped, the others
    /// connected.
    DiscoveryFailed {
        /// The nsqlookupd that failed.
        lookupd: String,
        /// What went wrong.
        error: Error,
    },
    /// nsqlookupd listed these nsqd for the topic (after a successful query).
    Discovered {
        /// The nsqlookupd that answered.
        lookupd: String,
        /// `host:port` of every nsqd it lists.
        nsqd: Vec<String>,
    },
    /// A handler was restarted, or handlers became unavailable (the consumer pauses) or
    /// available again (it resumes).
    Handler(HandlerEvent),
    /// nsqlookupd listed more nsqd than
    /// [`max_nsqd_connections`](super::ConsumerBuilder::max_nsqd_connections) allows: a
    /// random choice of them got a connection, `left_out` did not (a fleet of consumers
    /// covers them between it).
    ConnectionLimitReached {
        /// The nsqlookupd whose answer hit the limit.
        lookupd: String,
        /// The limit.
        limit: u32,
        /// How many listed nsqd got no connection.
        left_out: usize,
    },
}

/// What the flow core tells the consumer actor (it cannot act on timers or events itself).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) enum FlowNotice {
    /// Start the backoff timer.
    Timer(Duration),
    /// The backoff level changed.
    Level(u32),
    /// Backoff is over.
    Ended,
}
