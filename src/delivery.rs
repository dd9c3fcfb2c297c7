//! [`Delivery`]: a message handed to a handler, and the means to answer it. The contract is
//! transport-neutral: NSQ and RSMQ messages both arrive as a `Delivery`.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;

use crate::error::Error;

/// An answer to a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// The message was handled: delete it (NSQ `FIN`, RSMQ delete).
    Finish,
    /// Put the message back (NSQ `REQ`, RSMQ change visibility).
    Requeue {
        /// `None`: the default delay, `min(default_requeue_delay × attempts, max_requeue_delay)`.
        delay: Option<Duration>,
        /// Whether the failure counts toward the consumer's backoff.
        backoff: bool,
    },
    /// Still working on it: extend the message's timeout (NSQ `TOUCH`, RSMQ visibility).
    Touch,
}

/// The transport side of a delivery: where answers go.
pub(crate) trait Respond: Send + Sync + 'static {
    /// Sends `action` for the message described by `meta`. Called at most once with a final
    /// action (finish/requeue) per delivery; touch may come several times before that.
    fn respond(&self, meta: &Meta, action: Action) -> Result<(), Error>;
}

/// A message id: NSQ's 16 bytes inline (no allocation per message), or RSMQ's text id.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum DeliveryId {
    Nsq(crate::protocol::MessageId),
    // Built by the RSMQ consumer and the testing mocks.
    #[cfg_attr(
        not(any(feature = "rsmq", feature = "testing", test)),
        allow(dead_code)
    )]
    Text(Arc<str>),
}

impl DeliveryId {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            DeliveryId::Nsq(id) => id.as_str(),
            DeliveryId::Text(id) => id,
        }
    }
}

/// What a delivery says about its message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) id: DeliveryId,
    pub(crate) body: Bytes,
    pub(crate) attempts: u32,
    /// When the queue accepted the message, in nanoseconds since the Unix epoch.
    pub(crate) timestamp_nanos: i64,
    /// Where it came from: an nsqd address or an RSMQ queue.
    pub(crate) source: Arc<str>,
}

const RESPONDED: u8 = 1;
const DROPPED: u8 = 2;
const RESULT_SEEN: u8 = 4;
/// Dropped by the unwind of the handler actor it was sent to, before anything else of that actor
/// incarnation: it is the message the handler was working on when it panicked.
const PANIC_VICTIM: u8 = 8;

struct Shared {
    state: AtomicU8,
    meta: Meta,
    responder: Arc<dyn Respond>,
}

impl Shared {
    fn respond(&self, action: Action) -> Result<(), Error> {
        if action == Action::Touch {
            if self.state.load(Ordering::Acquire) & RESPONDED != 0 {
                return Ok(());
            }
            return self.responder.respond(&self.meta, action);
        }
        if self.state.fetch_or(RESPONDED, Ordering::AcqRel) & RESPONDED != 0 {
            return Ok(()); // answering twice is a no-op
        }
        self.responder.respond(&self.meta, action)
    }
}

/// A message delivered to a handler, and the means to answer it. NSQ and RSMQ messages both
/// arrive as a `Delivery`, so a handler does not need to know which queue it came from.
///
/// Who answers:
///
/// * If the handler consumes the `Delivery` (it is dropped by the time the handler's result
///   arrives), the **result decides**: `Ok` finishes the message, `Err` requeues it (with the
///   default delay and backoff, unless the [`HandlerError`] says otherwise).
/// * If the handler kept it alive (moved it into a task, another actor, a batch), whoever holds
///   it answers with [`finish`](Delivery::finish), [`requeue`](Delivery::requeue) or
///   [`touch`](Delivery::touch). The handler's result is then ignored.
/// * A `Delivery` dropped without an answer after that is requeued at once (counted as a
///   failure for backoff): it never waits out the server's message timeout.
/// * Answering twice is a no-op. Answering after the connection that delivered the message died
///   returns [`Error::ConnectionLost`]: the server redelivers the message after its timeout.
///   (RSMQ: answering after the consumer stopped returns [`Error::Stopped`]; the message
///   becomes visible again after its visibility timeout.)
///
/// Not `Clone`: it is a unique ticket for one answer. Move it wherever the work happens.
#[must_use = "a Delivery dropped without an answer is requeued"]
pub struct Delivery {
    shared: Arc<Shared>,
    /// Set when the delivery is sent to a supervised handler actor: that actor incarnation's
    /// "a panic already claimed its victim" flag (see [`Revive`]).
    incarnation: Option<Arc<AtomicBool>>,
}

impl Delivery {
    pub(crate) fn new(meta: Meta, responder: Arc<dyn Respond>) -> (Self, Watch) {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(0),
            meta,
            responder,
        });
        (
            Self {
                shared: shared.clone(),
                incarnation: None,
            },
            Watch { shared },
        )
    }

    /// The message id: 16 characters for NSQ, 32 for RSMQ.
    pub fn id(&self) -> &str {
        self.shared.meta.id.as_str()
    }

    /// The body (shares the read buffer; cloning it is cheap).
    pub fn body(&self) -> &Bytes {
        &self.shared.meta.body
    }

    /// How many times the message has been delivered, this time included.
    pub fn attempts(&self) -> u32 {
        self.shared.meta.attempts
    }

    /// When the queue accepted the message.
    pub fn timestamp(&self) -> SystemTime {
        let nanos = u64::try_from(self.shared.meta.timestamp_nanos).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// Where the message came from: the nsqd address (`host:port`) or `rsmq:<queue>`.
    pub fn source(&self) -> &str {
        &self.shared.meta.source
    }

    /// The NSQ message id, when the message came from nsqd.
    pub fn nsq_id(&self) -> Option<&crate::protocol::MessageId> {
        match &self.shared.meta.id {
            DeliveryId::Nsq(id) => Some(id),
            DeliveryId::Text(_) => None,
        }
    }

    /// True once finish or requeue has been called.
    pub fn is_answered(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) & RESPONDED != 0
    }

    /// Marks the message handled.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] when the connection that delivered it is gone.
    pub fn finish(&self) -> Result<(), Error> {
        self.shared.respond(Action::Finish)
    }

    /// Puts the message back, to be redelivered after `delay` (`None`: the default,
    /// `min(default_requeue_delay × attempts, max_requeue_delay)`). Counts as a failure for the
    /// consumer's backoff.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] when the connection that delivered it is gone.
    pub fn requeue(&self, delay: Option<Duration>) -> Result<(), Error> {
        self.shared.respond(Action::Requeue {
            delay,
            backoff: true,
        })
    }

    /// Puts the message back without counting a failure (go-nsq `RequeueWithoutBackoff`): for
    /// "not now" rather than "this failed".
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] when the connection that delivered it is gone.
    pub fn requeue_without_backoff(&self, delay: Option<Duration>) -> Result<(), Error> {
        self.shared.respond(Action::Requeue {
            delay,
            backoff: false,
        })
    }

    /// Resets the message's timeout on the server: for handlers that need longer than
    /// `msg_timeout`. nsqd bounds the total by its `--max-msg-timeout`. A no-op once answered.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] when the connection that delivered it is gone.
    pub fn touch(&self) -> Result<(), Error> {
        self.shared.respond(Action::Touch)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // A handler actor that panics drops the delivery it is handling first (it is in the
        // handler's frame), then its mailbox, all in one unwind: the first delivery an
        // incarnation drops while panicking is the one its handler saw.
        if let Some(incarnation) = &self.incarnation {
            if std::thread::panicking() && !incarnation.swap(true, Ordering::AcqRel) {
                self.shared.state.fetch_or(PANIC_VICTIM, Ordering::AcqRel);
            }
        }
        let previous = self.shared.state.fetch_or(DROPPED, Ordering::AcqRel);
        // The dispatcher already saw the handler's result and left the answer to the holder of
        // this Delivery, who dropped it unanswered: requeue now rather than after msg_timeout.
        if previous & RESULT_SEEN != 0
            && previous & RESPONDED == 0
            && self.shared.state.fetch_or(RESPONDED, Ordering::AcqRel) & RESPONDED == 0
        {
            {
                let action = Action::Requeue {
                    delay: Some(Duration::ZERO),
                    backoff: true,
                };
                if let Err(error) = self.shared.responder.respond(&self.shared.meta, action) {
                    tracing::debug!(id = self.shared.meta.id.as_str(), %error, "requeue of dropped delivery failed");
                }
            }
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id())
            .field("attempts", &self.attempts())
            .field("source", &self.source())
            .field("body_len", &self.body().len())
            .field("answered", &self.is_answered())
            .finish()
    }
}

/// The actor dispatcher's hold on a delivery it sent: when the handler actor stopped before
/// taking it (its mailbox was dropped), the same message is revived for another handler, so a
/// message no handler saw never counts as a failed attempt.
pub(crate) struct Revive {
    shared: Arc<Shared>,
}

impl Revive {
    /// Binds `delivery` to the handler actor incarnation it is about to be sent to.
    pub(crate) fn bind(mut delivery: Delivery, incarnation: Arc<AtomicBool>) -> (Delivery, Self) {
        delivery.incarnation = Some(incarnation);
        let shared = delivery.shared.clone();
        (delivery, Self { shared })
    }

    /// True if the delivery died with its handler: the handler saw it and panicked.
    pub(crate) fn was_seen(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) & (PANIC_VICTIM | RESPONDED) != 0
    }

    /// The delivery again, for another handler: only when it was dropped unseen and unanswered.
    pub(crate) fn revive(&self) -> Option<Delivery> {
        let state = self.shared.state.load(Ordering::Acquire);
        if state & (PANIC_VICTIM | RESPONDED | RESULT_SEEN) != 0 || state & DROPPED == 0 {
            return None;
        }
        self.shared.state.fetch_and(!DROPPED, Ordering::AcqRel);
        Some(Delivery {
            shared: self.shared.clone(),
            incarnation: None,
        })
    }

    /// Extends the message's timeout while it waits for a handler.
    pub(crate) fn touch(&self) -> Result<(), Error> {
        self.shared.respond(Action::Touch)
    }
}

/// The dispatcher's side of a delivery: applies the handler's result when the handler
/// consumed the delivery.
pub(crate) struct Watch {
    shared: Arc<Shared>,
}

/// What happened when the dispatcher applied a handler's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The result was turned into this action.
    Sent(Action),
    /// Someone had already answered.
    AlreadyAnswered,
    /// The delivery is still alive somewhere: its holder answers.
    LeftToHolder,
}

impl Watch {
    /// Applies the handler's outcome: `Ok(action)` for the action the result implies.
    pub(crate) fn apply(&self, action: Action) -> Result<Applied, Error> {
        let previous = self.shared.state.fetch_or(RESULT_SEEN, Ordering::AcqRel);
        if previous & RESPONDED != 0 {
            return Ok(Applied::AlreadyAnswered);
        }
        if previous & DROPPED == 0 {
            return Ok(Applied::LeftToHolder);
        }
        if self.shared.state.fetch_or(RESPONDED, Ordering::AcqRel) & RESPONDED != 0 {
            return Ok(Applied::AlreadyAnswered);
        }
        self.shared.responder.respond(&self.shared.meta, action)?;
        Ok(Applied::Sent(action))
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.shared.meta
    }
}

/// Why a handler failed: any error, plus how to requeue the message.
///
/// Build it from any error with `?` or `.into()`; adjust with [`requeue_after`]
/// (custom delay) or [`without_backoff`] (do not count toward backoff).
///
/// [`requeue_after`]: HandlerError::requeue_after
/// [`without_backoff`]: HandlerError::without_backoff
pub struct HandlerError {
    source: Box<dyn std::error::Error + Send + Sync>,
    delay: Option<Duration>,
    backoff: bool,
}

impl HandlerError {
    /// A failure with this error, the default requeue delay and backoff.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: error.into(),
            delay: None,
            backoff: true,
        }
    }

    /// Requeue after `delay` instead of the default.
    pub fn requeue_after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Do not count this failure toward the consumer's backoff.
    pub fn without_backoff(mut self) -> Self {
        self.backoff = false;
        self
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    pub(crate) fn action(&self) -> Action {
        Action::Requeue {
            delay: self.delay,
            backoff: self.backoff,
        }
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("source", &self.source)
            .field("delay", &self.delay)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// What a handler returns for a [`Delivery`]: `Ok` finishes, `Err` requeues.
pub type HandlerResult = Result<(), HandlerError>;

impl actix::Message for Delivery {
    type Result = HandlerResult;
}

/// go-nsq `conn.go:733-743`: a requeue without an explicit delay waits
/// `min(default × attempts, max)`.
pub(crate) fn requeue_delay(
    explicit: Option<Duration>,
    attempts: u32,
    default: Duration,
    max: Duration,
) -> Duration {
    explicit.unwrap_or_else(|| default.saturating_mul(attempts).min(max))
}

/// The action a handler's result implies.
pub(crate) fn action_for(result: &HandlerResult) -> Action {
    match result {
        Ok(()) => Action::Finish,
        Err(e) => e.action(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Action>>, bool);

    impl Respond for Recorder {
        fn respond(&self, _: &Meta, action: Action) -> Result<(), Error> {
            if self.1 {
                return Err(Error::ConnectionLost { addr: "x".into() });
            }
            self.0.lock().unwrap().push(action);
            Ok(())
        }
    }

    fn meta() -> Meta {
        Meta {
            id: DeliveryId::Text("0123456789abcdef".into()),
            body: Bytes::from_static(b"hi"),
            attempts: 1,
            timestamp_nanos: 0,
            source: "127.0.0.1:4150".into(),
        }
    }

    fn delivery() -> (Delivery, Watch, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        let (d, w) = Delivery::new(meta(), rec.clone());
        (d, w, rec)
    }

    fn actions(rec: &Recorder) -> Vec<Action> {
        rec.0.lock().unwrap().clone()
    }

    const REQ: Action = Action::Requeue {
        delay: None,
        backoff: true,
    };
    const REQ_NOW: Action = Action::Requeue {
        delay: Some(Duration::ZERO),
        backoff: true,
    };

    #[test]
    fn consumed_delivery_takes_the_result() {
        let (d, w, rec) = delivery();
        drop(d);
        assert_eq!(
            w.apply(Action::Finish).unwrap(),
            Applied::Sent(Action::Finish)
        );
        assert_eq!(actions(&rec), [Action::Finish]);
    }

    #[test]
    fn explicit_answer_wins_and_twice_is_a_noop() {
        let (d, w, rec) = delivery();
        d.touch().unwrap();
        d.requeue(None).unwrap();
        d.finish().unwrap();
        assert!(d.is_answered());
        drop(d);
        assert_eq!(w.apply(Action::Finish).unwrap(), Applied::AlreadyAnswered);
        assert_eq!(actions(&rec), [Action::Touch, REQ]);
    }

    #[test]
    fn kept_delivery_is_left_to_its_holder() {
        let (d, w, rec) = delivery();
        assert_eq!(w.apply(Action::Finish).unwrap(), Applied::LeftToHolder);
        assert!(actions(&rec).is_empty());
        d.finish().unwrap();
        assert_eq!(actions(&rec), [Action::Finish]);
    }

    #[test]
    fn kept_then_dropped_unanswered_is_requeued_at_once() {
        let (d, w, rec) = delivery();
        assert_eq!(w.apply(Action::Finish).unwrap(), Applied::LeftToHolder);
        drop(d);
        assert_eq!(actions(&rec), [REQ_NOW]);
    }

    #[test]
    fn touch_after_answer_is_a_noop() {
        let (d, _w, rec) = delivery();
        d.finish().unwrap();
        d.touch().unwrap();
        assert_eq!(actions(&rec), [Action::Finish]);
    }

    #[test]
    fn lost_connection_is_reported() {
        let rec = Arc::new(Recorder(Mutex::default(), true));
        let (d, _w) = Delivery::new(meta(), rec);
        assert!(matches!(d.finish(), Err(Error::ConnectionLost { .. })));
    }

    #[test]
    fn handler_errors_carry_requeue_hints() {
        let e: HandlerError = "boom".into();
        assert_eq!(action_for(&Err(e)), REQ);
        let e = HandlerError::new("later")
            .requeue_after(Duration::from_secs(3))
            .without_backoff();
        assert_eq!(
            action_for(&Err(e)),
            Action::Requeue {
                delay: Some(Duration::from_secs(3)),
                backoff: false
            }
        );
        assert_eq!(action_for(&Ok(())), Action::Finish);
    }

    #[test]
    fn concurrent_drop_and_result_answer_exactly_once() {
        for _ in 0..200 {
            let (d, w, rec) = delivery();
            let t = std::thread::spawn(move || drop(d));
            let applied = w.apply(Action::Finish).unwrap();
            t.join().unwrap();
            let got = actions(&rec);
            assert_eq!(got.len(), 1, "{applied:?} {got:?}");
        }
    }
}
