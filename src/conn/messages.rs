//! Messages in and out of an [`NsqdConnection`](super::NsqdConnection).
//!
//! Commands are imperative (`SetRdy`, `Publish`, `Close`); events are past tense
//! (`ConnectionEvent::Connected`, `Disconnected`, ...). Owners receive events through a
//! `Recipient`, so a test can stand in for the owner.

use std::{sync::Arc, time::Duration};

use actix::Message;

use crate::{
    error::Error,
    protocol::{AuthResponse, Command, IdentifyResponse},
    transport::Negotiated,
};

/// Identifies one connection within its consumer or producer.
pub type ConnId = u64;

/// Something that happened to a connection.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The handshake (and SUB, for consumers) succeeded; the connection is ready.
    Connected {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// What nsqd agreed to.
        negotiated: Box<Negotiated>,
    },
    /// The connection was lost or a connection attempt failed.
    Disconnected {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// Why.
        error: Error,
        /// Messages delivered on the lost link that had not been answered; nsqd redelivers
        /// them after their timeout.
        lost_in_flight: u32,
    },
    /// Another attempt will be made after `delay`.
    Reconnecting {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// Consecutive failed attempts so far.
        attempt: u32,
        /// When the next attempt starts.
        delay: Duration,
    },
    /// The reconnect policy's attempts are used up: the connection stays down.
    GaveUp {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// How many attempts were made.
        attempts: u32,
    },
    /// nsqd sent a non-fatal error (`E_FIN_FAILED`, `E_REQ_FAILED`, `E_TOUCH_FAILED`); the
    /// connection stays up.
    ServerError {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The error.
        error: Error,
    },
    /// A handler panicked with the message (it is requeued with backoff, the consumer carries
    /// on), or the consumer stopped while the message waited for a live handler actor (it is
    /// released at once, without counting a failure).
    HandlerFailed {
        /// Which connection delivered the message.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        message_id: String,
        /// What happened.
        reason: String,
    },
    /// nsqd sent a heartbeat, which the connection answered with `NOP` (pynsq `heartbeat`).
    /// Sent straight to listeners; the owner does not see it.
    Heartbeat {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
    },
    /// nsqd answered a command with a response frame: `OK` (a publish succeeded) or
    /// `CLOSE_WAIT` (a close began) (gnsq `on_response`, pynsq `response`). Sent straight to
    /// listeners. Error frames are [`ServerError`](Self::ServerError) when the connection stays
    /// up and [`Disconnected`](Self::Disconnected) (with [`Error::Server`]) when nsqd closes it.
    Response {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The response, as nsqd sent it.
        response: &'static str,
    },
    /// nsqd answered IDENTIFY (pynsq `identify_response`); sent before
    /// [`Connected`](Self::Connected), straight to listeners.
    Identified {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// nsqd's reply.
        identify: Box<IdentifyResponse>,
    },
    /// nsqd accepted AUTH (gnsq `on_auth`, pynsq `auth_response`); sent before
    /// [`Connected`](Self::Connected), straight to listeners. A refused AUTH is a
    /// [`Disconnected`](Self::Disconnected) with the server's error.
    Authenticated {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// nsqd's reply (identity and permission count).
        auth: Box<AuthResponse>,
    },
    /// The connection was closed on request (graceful stop).
    Closed {
        /// Which connection.
        id: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// Messages still unanswered when the deadline passed (0 after a clean drain).
        abandoned: u32,
    },
}

impl ConnectionEvent {
    /// The connection the event is about.
    pub fn id(&self) -> ConnId {
        match self {
            ConnectionEvent::Connected { id, .. }
            | ConnectionEvent::Disconnected { id, .. }
            | ConnectionEvent::Reconnecting { id, .. }
            | ConnectionEvent::GaveUp { id, .. }
            | ConnectionEvent::ServerError { id, .. }
            | ConnectionEvent::HandlerFailed { id, .. }
            | ConnectionEvent::Heartbeat { id, .. }
            | ConnectionEvent::Response { id, .. }
            | ConnectionEvent::Identified { id, .. }
            | ConnectionEvent::Authenticated { id, .. }
            | ConnectionEvent::Closed { id, .. } => *id,
        }
    }

    /// The nsqd address the event is about.
    pub fn addr(&self) -> &str {
        match self {
            ConnectionEvent::Connected { addr, .. }
            | ConnectionEvent::Disconnected { addr, .. }
            | ConnectionEvent::Reconnecting { addr, .. }
            | ConnectionEvent::GaveUp { addr, .. }
            | ConnectionEvent::ServerError { addr, .. }
            | ConnectionEvent::HandlerFailed { addr, .. }
            | ConnectionEvent::Heartbeat { addr, .. }
            | ConnectionEvent::Response { addr, .. }
            | ConnectionEvent::Identified { addr, .. }
            | ConnectionEvent::Authenticated { addr, .. }
            | ConnectionEvent::Closed { addr, .. } => addr,
        }
    }
}

/// The flow policy changed the RDY of link `link` (the number of messages nsqd may have in
/// flight on it) while handling another link's event: ask it for the count
/// ([`Flow::rdy_due`](super::Flow::rdy_due)) and write it. The count is asked for, not
/// carried, so a stale one never reaches the wire and the policy knows when the change is
/// there (it hands out what a lower frees only then). Clamped to nsqd's `max_rdy_count`; a
/// value equal to the current one sends nothing. Ignored when the link is no longer the
/// connection's current one.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct SetRdy {
    pub(crate) link: crate::rdy::LinkId,
}

/// Write a command that nsqd answers with `OK` or an error (PUB, MPUB, DPUB), and wait for
/// the answer. Responses are matched to requests in order: nsqd answers in order.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct Publish(pub(crate) Command);

/// Write a NOP: succeeds when the connection is up and the write was queued.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct Ping;

/// Close gracefully: CLS (for consumers), wait for `CLOSE_WAIT` and for every message in flight
/// to be answered (and every pending publish to be answered), then close, all within
/// `deadline`. Resolves with the number of messages abandoned at the deadline.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "u32")]
pub(crate) struct Close {
    pub(crate) deadline: Duration,
}
