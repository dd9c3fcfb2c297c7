//! Lifecycle events for any number of listeners, added and removed at run time.
//!
//! A consumer (or producer) owns one [`Listeners`] registry, shared with its connections. Each
//! listener is an actix `Recipient` and says whether it wants per-message events
//! ([`MessageEvent`]). Connections check one atomic flag before building a per-message event,
//! so with no such listener the hot path costs a relaxed load: no allocation, no clone of the
//! message's body or address.
//!
//! The seed libraries' callbacks map onto these events (gnsq `on_message`, `on_finish`,
//! `on_requeue`, `on_giving_up`, `on_exception`, `on_response`, `on_error`, `on_auth`,
//! `on_close`; pynsq `message`, `heartbeat`, `identify_response`, `auth_response`,
//! `response`): see [`MessageEvent`], [`ConnectionEvent`](crate::ConnectionEvent) and
//! [`ConsumerEvent`](crate::ConsumerEvent). Rust has no signals; an actor mailbox per
//! listener is the idiomatic equivalent, and a slow listener only grows its own mailbox.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, RwLock,
    },
    time::Duration,
};

use actix::Recipient;
use bytes::Bytes;

use crate::{conn::ConnId, protocol::MessageId};

/// Names one listener of a consumer or producer, to
/// [`unsubscribe`](crate::Consumer::unsubscribe) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u64);

impl ListenerId {
    /// A fresh id, unique in the process: the handle can hand it out before the registry,
    /// which lives in an actor, has seen the listener.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

/// Which events a listener gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Connection, handler, backoff, discovery and close events.
    Lifecycle,
    /// All of those, and a [`MessageEvent`] for every message.
    Messages,
}

/// Something that happened to one message on an nsqd connection. Sent only to listeners that
/// asked for them ([`ConsumerBuilder::message_events`](crate::ConsumerBuilder::message_events),
/// [`Consumer::subscribe_messages`](crate::Consumer::subscribe_messages)), wrapped in
/// [`ConsumerEvent::Message`](crate::ConsumerEvent::Message).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MessageEvent {
    /// nsqd delivered a message (gnsq `on_message`, pynsq `message`). `body` shares the read
    /// buffer: holding it holds that buffer, not a copy.
    Received {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
        /// Deliveries so far, this one included.
        attempts: u32,
        /// The body as nsqd sent it (before any [`preprocess`](crate::ConsumerBuilder::preprocess)).
        body: Bytes,
    },
    /// `FIN` was written for the message (gnsq `on_finish`).
    Finished {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
    },
    /// `REQ` was written for the message (gnsq `on_requeue`).
    Requeued {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
        /// The delay sent with the `REQ`.
        delay: Duration,
        /// Whether it counted toward the consumer's backoff.
        backoff: bool,
    },
    /// `TOUCH` was written for the message.
    Touched {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
    },
    /// The message is past `max_attempts` and goes to the give-up hook instead of the handler
    /// (gnsq `on_giving_up`).
    GivingUp {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
        /// Deliveries so far.
        attempts: u32,
    },
    /// The handler (or give-up hook) returned `Err`, or panicked (gnsq `on_exception`).
    HandlerFailed {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
        /// The error, or the panic message.
        error: String,
        /// True for a panic (also reported as
        /// [`ConnectionEvent::HandlerFailed`](crate::ConnectionEvent::HandlerFailed)).
        panicked: bool,
    },
    /// The [`validate`](crate::ConsumerBuilder::validate_with) hook rejected the message: the
    /// handler did not see it; it was finished, or handed to the give-up hook.
    Rejected {
        /// Which connection.
        conn: ConnId,
        /// The nsqd address.
        addr: Arc<str>,
        /// The message id.
        id: MessageId,
        /// What the hook said.
        reason: String,
        /// True when it went to the give-up hook rather than being finished.
        given_up: bool,
    },
}

struct Entry<E: actix::Message<Result = ()> + Send> {
    id: ListenerId,
    recipient: Recipient<E>,
    interest: Interest,
}

struct Inner<E: actix::Message<Result = ()> + Send> {
    entries: RwLock<Vec<Entry<E>>>,
    /// Whether any listener wants per-message events: the one check on the hot path.
    messages: AtomicBool,
    /// Whether there is any listener at all.
    any: AtomicBool,
}

/// The listeners of one consumer or producer. Cheap to clone; clones share the registry.
pub(crate) struct Listeners<E: actix::Message<Result = ()> + Send> {
    inner: Arc<Inner<E>>,
}

impl<E: actix::Message<Result = ()> + Send> Clone for Listeners<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E: actix::Message<Result = ()> + Send> Default for Listeners<E> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(Vec::new()),
                messages: AtomicBool::new(false),
                any: AtomicBool::new(false),
            }),
        }
    }
}

impl<E: actix::Message<Result = ()> + Send + Clone + 'static> Listeners<E> {
    /// Adds a listener.
    pub(crate) fn subscribe(&self, recipient: Recipient<E>, interest: Interest) -> ListenerId {
        let id = ListenerId::next();
        self.add(id, recipient, interest);
        id
    }

    /// Adds a listener under an id made with [`ListenerId::next`].
    pub(crate) fn add(&self, id: ListenerId, recipient: Recipient<E>, interest: Interest) {
        if let Ok(mut entries) = self.inner.entries.write() {
            entries.push(Entry {
                id,
                recipient,
                interest,
            });
            self.refresh(&entries);
        }
    }

    /// Removes a listener; false if it was not (or no longer) subscribed.
    pub(crate) fn unsubscribe(&self, id: ListenerId) -> bool {
        let Ok(mut entries) = self.inner.entries.write() else {
            return false;
        };
        let before = entries.len();
        entries.retain(|e| e.id != id);
        self.refresh(&entries);
        entries.len() != before
    }

    fn refresh(&self, entries: &[Entry<E>]) {
        let messages = entries.iter().any(|e| e.interest == Interest::Messages);
        self.inner.messages.store(messages, Relaxed);
        self.inner.any.store(!entries.is_empty(), Relaxed);
    }

    /// Whether any listener wants per-message events. Check before building one.
    #[inline]
    pub(crate) fn wants_messages(&self) -> bool {
        self.inner.messages.load(Relaxed)
    }

    /// Whether there is any listener.
    #[inline]
    pub(crate) fn wants_any(&self) -> bool {
        self.inner.any.load(Relaxed)
    }

    /// How many listeners there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.entries.read().map_or(0, |e| e.len())
    }

    /// Sends a lifecycle event to every listener.
    pub(crate) fn emit(&self, event: E) {
        self.send(event, |_| true);
    }

    /// Sends a per-message event to the listeners that asked for them.
    pub(crate) fn emit_message(&self, event: E) {
        self.send(event, |e| e.interest == Interest::Messages);
    }

    fn send(&self, event: E, to: impl Fn(&Entry<E>) -> bool) {
        let Ok(entries) = self.inner.entries.read() else {
            return;
        };
        let mut targets = entries.iter().filter(|e| to(e)).peekable();
        while let Some(entry) = targets.next() {
            // The last one gets the event itself: one listener, no clone.
            if targets.peek().is_none() {
                entry.recipient.do_send(event);
                return;
            }
            entry.recipient.do_send(event.clone());
        }
    }
}

/// Where a connection sends what it observes directly, without its owner in between: events
/// about messages, heartbeats, responses and the handshake's results.
pub(crate) trait Tap {
    /// Whether per-message events are wanted now (an atomic load).
    fn wants_messages(&self) -> bool;
    /// Whether anyone listens at all (an atomic load).
    fn wants_any(&self) -> bool;
    /// A per-message event.
    fn message(&self, event: MessageEvent);
    /// A connection event the owner does not act on.
    fn connection(&self, event: crate::ConnectionEvent);
}

impl Tap for Listeners<crate::ConsumerEvent> {
    fn wants_messages(&self) -> bool {
        Listeners::wants_messages(self)
    }

    fn wants_any(&self) -> bool {
        Listeners::wants_any(self)
    }

    fn message(&self, event: MessageEvent) {
        self.emit_message(crate::ConsumerEvent::Message(event));
    }

    fn connection(&self, event: crate::ConnectionEvent) {
        self.emit(crate::ConsumerEvent::Connection(event));
    }
}

impl Tap for Listeners<crate::ConnectionEvent> {
    fn wants_messages(&self) -> bool {
        false // a producer's connections carry no messages
    }

    fn wants_any(&self) -> bool {
        Listeners::wants_any(self)
    }

    fn message(&self, _: MessageEvent) {}

    fn connection(&self, event: crate::ConnectionEvent) {
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use actix::{Actor, Context, Handler, Message};

    use super::*;

    #[derive(Debug, Clone, Message)]
    #[rtype(result = "()")]
    struct Ping(u32);

    struct Sink(Arc<Mutex<Vec<u32>>>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Ping> for Sink {
        type Result = ();
        fn handle(&mut self, Ping(n): Ping, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(n);
        }
    }

    fn sink() -> (Recipient<Ping>, Arc<Mutex<Vec<u32>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (Sink(seen.clone()).start().recipient(), seen)
    }

    async fn settle() {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    #[actix_rt::test]
    async fn message_flag_follows_the_listeners_interest() {
        let listeners = Listeners::<Ping>::default();
        assert!(!listeners.wants_messages());
        let (a, _) = sink();
        let (b, _) = sink();
        let lifecycle = listeners.subscribe(a, Interest::Lifecycle);
        assert!(!listeners.wants_messages());
        let messages = listeners.subscribe(b, Interest::Messages);
        assert!(listeners.wants_messages());
        assert_ne!(lifecycle, messages);
        assert!(listeners.unsubscribe(messages));
        assert!(!listeners.wants_messages());
        assert!(!listeners.unsubscribe(messages), "already gone");
        assert_eq!(listeners.len(), 1);
    }

    #[actix_rt::test]
    async fn events_reach_every_listener_and_message_events_only_those_who_asked() {
        let listeners = Listeners::<Ping>::default();
        let (a, seen_a) = sink();
        let (b, seen_b) = sink();
        listeners.subscribe(a, Interest::Lifecycle);
        let id_b = listeners.subscribe(b, Interest::Messages);
        listeners.emit(Ping(1));
        listeners.emit_message(Ping(2));
        settle().await;
        assert_eq!(*seen_a.lock().unwrap(), [1]);
        assert_eq!(*seen_b.lock().unwrap(), [1, 2]);
        listeners.unsubscribe(id_b);
        listeners.emit(Ping(3));
        settle().await;
        assert_eq!(*seen_a.lock().unwrap(), [1, 3]);
        assert_eq!(
            *seen_b.lock().unwrap(),
            [1, 2],
            "unsubscribed: nothing more"
        );
    }
}

/// Add a listener to a running consumer or producer (handled by the actor owning the registry).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Subscribe<E: actix::Message<Result = ()> + Send> {
    pub(crate) id: ListenerId,
    pub(crate) recipient: Recipient<E>,
    pub(crate) interest: Interest,
}

/// Remove a listener.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe(pub(crate) ListenerId);
