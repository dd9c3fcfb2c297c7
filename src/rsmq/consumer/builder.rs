//! Configuration of an [`RsmqConsumer`].

use std::{fmt, sync::Arc, time::Duration};

use actix::Recipient;

use super::{RsmqConsumer, RsmqConsumerEvent};
use crate::{
    delivery::Delivery,
    error::{BodyError, Error, Result},
    handler::{GiveUpHook, HandlerSink, Handlers},
    retry::ReconnectPolicy,
    rsmq::{client::Rsmq, validate},
};

/// What happens to messages received more than `max_attempts` times.
#[derive(Clone)]
enum GiveUpTarget {
    Hook(GiveUpHook),
    DeadLetter(String),
}

/// Builds an [`RsmqConsumer`]. Setting names follow the NSQ
/// [`ConsumerBuilder`](crate::ConsumerBuilder) where the meaning is the same.
#[derive(Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RsmqConsumerBuilder {
    pub(super) rsmq: Rsmq,
    pub(super) queue: String,
    handlers: Handlers,
    pub(super) concurrency: u32,
    pub(super) visibility_timeout: Option<Duration>,
    pub(super) auto_extend: bool,
    pub(super) max_attempts: u32,
    give_up: GiveUpTarget,
    pub(super) poll_interval: Duration,
    pub(super) realtime: bool,
    pub(super) default_requeue_delay: Duration,
    pub(super) max_requeue_delay: Duration,
    pub(super) error_backoff: ReconnectPolicy,
    pub(super) stop_timeout: Duration,
    pub(super) events: Option<Recipient<RsmqConsumerEvent>>,
}

impl RsmqConsumerBuilder {
    /// One delivery at a time, as NSQ's `max_in_flight` default.
    pub const DEFAULT_CONCURRENCY: u32 = 1;
    /// go-nsq's `max_attempts`: messages received more often go to the give-up hook.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// How often an empty queue is polled again (each wait varies by ±[`POLL_JITTER`]).
    ///
    /// [`POLL_JITTER`]: Self::POLL_JITTER
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
    /// The relative spread of the poll interval, so a fleet started at once does not poll in
    /// step.
    pub const POLL_JITTER: f64 = 0.1;
    /// go-nsq's `default_requeue_delay`, scaled by the attempt count.
    pub const DEFAULT_REQUEUE_DELAY: Duration = Duration::from_secs(90);
    /// go-nsq's `max_requeue_delay`.
    pub const DEFAULT_MAX_REQUEUE_DELAY: Duration = Duration::from_secs(15 * 60);
    /// The most deliveries outstanding at once that [`concurrency`](Self::concurrency)
    /// accepts (nsqd's default `max_rdy_count`).
    pub const MAX_CONCURRENCY: u32 = 2500;
    /// The backoff of receives after Redis errors: from 100 ms, doubling, up to 10 s, with
    /// equal jitter, forever.
    pub const DEFAULT_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);
    /// As [`ConsumerBuilder::DEFAULT_STOP_TIMEOUT`](crate::ConsumerBuilder::DEFAULT_STOP_TIMEOUT).
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

    pub(super) fn new(rsmq: Rsmq, queue: impl Into<String>) -> Self {
        Self {
            rsmq,
            queue: queue.into(),
            handlers: Handlers::default(),
            concurrency: Self::DEFAULT_CONCURRENCY,
            visibility_timeout: None,
            auto_extend: false,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            give_up: GiveUpTarget::Hook(GiveUpHook::Log),
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            realtime: false,
            default_requeue_delay: Self::DEFAULT_REQUEUE_DELAY,
            max_requeue_delay: Self::DEFAULT_MAX_REQUEUE_DELAY,
            error_backoff: ReconnectPolicy::new().max_delay(Self::DEFAULT_ERROR_BACKOFF_MAX),
            stop_timeout: Self::DEFAULT_STOP_TIMEOUT,
            events: None,
        }
    }

    crate::handler_setters::handler_setters! {
        /// ```no_run
        /// # async fn demo() -> actix_nsq::Result<()> {
        /// use actix_nsq::{rsmq::{Rsmq, RsmqConsumer}, Delivery};
        ///
        /// let rsmq = Rsmq::connect("redis://127.0.0.1:6379/0").await?;
        /// let consumer = RsmqConsumer::builder(rsmq, "jobs")
        ///     .handler_blocking(4, || {
        ///         |delivery: Delivery| {
        ///             std::fs::write("/tmp/last", delivery.body())?; // blocking is fine here
        ///             Ok(())
        ///         }
        ///     })
        ///     .start()?;
        /// # Ok(()) }
        /// ```
    }

    /// The most deliveries outstanding (handed out, not yet answered) at once, like NSQ's
    /// `max_in_flight` (default 1, at most [`MAX_CONCURRENCY`](Self::MAX_CONCURRENCY)).
    /// The consumer receives only while a slot is free.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// How long a received message stays hidden (whole seconds, 1 s..=9 999 999 s). Default:
    /// the queue's `vt`, read when the consumer starts.
    pub fn visibility_timeout(mut self, vt: Duration) -> Self {
        self.visibility_timeout = Some(vt);
        self
    }

    /// While a delivery is unanswered, extend its visibility by `vt` every `vt / 2`, so a
    /// slow handler keeps its message (default off). The extension is checked like every
    /// answer; it stops when the answer comes or the message is no longer ours.
    pub fn auto_extend(mut self, enabled: bool) -> Self {
        self.auto_extend = enabled;
        self
    }

    /// Messages received more than this many times (their `rc`) go to the give-up hook or
    /// dead-letter queue instead of the handler (default 5, 0 = unlimited).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Moves messages past `max_attempts` to another RSMQ queue (which must exist): the body
    /// is sent there, with that queue's default delay, then the message is deleted here. If
    /// the send fails the message is requeued and tried again. Replaces a give-up hook.
    pub fn dead_letter_queue(mut self, queue: impl Into<String>) -> Self {
        self.give_up = GiveUpTarget::DeadLetter(queue.into());
        self
    }

    /// How long to wait before receiving again after the queue was found empty (default 1 s,
    /// ±10 % jitter; 10 ms..=1 h). With [`realtime`](Self::realtime) this is the fallback.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Subscribe to the queue's realtime channel (`{ns}:rt:{qname}`) and receive at once when
    /// a message is sent (default off). Only senders with realtime on publish (Node rsmq and
    /// this crate can, PyRSMQ cannot), so polling goes on as the fallback.
    pub fn realtime(mut self, enabled: bool) -> Self {
        self.realtime = enabled;
        self
    }

    /// go-nsq's `default_requeue_delay` (default 90 s): a requeue without an explicit delay
    /// waits `min(default_requeue_delay × attempts, max_requeue_delay)`.
    pub fn default_requeue_delay(mut self, delay: Duration) -> Self {
        self.default_requeue_delay = delay;
        self
    }

    /// go-nsq's `max_requeue_delay` (default 15 min).
    pub fn max_requeue_delay(mut self, delay: Duration) -> Self {
        self.max_requeue_delay = delay;
        self
    }

    /// How receiving backs off after Redis errors (default: from 100 ms, doubling up to 10 s,
    /// with jitter, forever). With `max_attempts` set, the consumer stops after that many
    /// consecutive failures and emits [`RsmqConsumerEvent::GaveUp`].
    pub fn error_backoff(mut self, policy: ReconnectPolicy) -> Self {
        self.error_backoff = policy;
        self
    }

    /// Deadline for [`RsmqConsumer::stop`] (default 30 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Receives the consumer's events: errors, recoveries, late answers, handler restarts.
    pub fn events(mut self, recipient: Recipient<RsmqConsumerEvent>) -> Self {
        self.events = Some(recipient);
        self
    }

    /// Checks every setting, naming the first invalid one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for the queue or dead-letter queue name, [`Error::Config`]
    /// otherwise.
    pub fn validate(&self) -> Result<()> {
        validate::queue_name(&self.queue)?;
        if let Some(problem) = self.handlers.problem() {
            return Err(Error::config("handler", problem));
        }
        if self.handlers.budget.within.is_zero() {
            return Err(Error::config(
                "handler_restarts",
                "the window must be greater than zero",
            ));
        }
        if !(1..=Self::MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::config(
                "concurrency",
                format!("must be within 1..={}", Self::MAX_CONCURRENCY),
            ));
        }
        if let Some(vt) = self.visibility_timeout {
            if validate::whole_seconds("visibility_timeout", vt)? == 0 {
                return Err(Error::config(
                    "visibility_timeout",
                    "must be at least 1 s: a message received with vt 0 is visible again at once",
                ));
            }
        }
        let poll = self.poll_interval;
        if poll < Duration::from_millis(10) || poll > Duration::from_secs(3600) {
            return Err(Error::config("poll_interval", "must be within 10 ms..=1 h"));
        }
        let max = Duration::from_secs(validate::MAX_SECONDS);
        if self.default_requeue_delay > max {
            return Err(Error::config(
                "default_requeue_delay",
                "must be at most 9 999 999 s",
            ));
        }
        if self.max_requeue_delay > max {
            return Err(Error::config(
                "max_requeue_delay",
                "must be at most 9 999 999 s",
            ));
        }
        if let GiveUpTarget::DeadLetter(dlq) = &self.give_up {
            validate::queue_name(dlq)?;
            if *dlq == self.queue {
                return Err(Error::config(
                    "dead_letter_queue",
                    "must differ from the queue consumed",
                ));
            }
        }
        self.error_backoff.validate()
    }

    /// Validates the settings and starts the consumer actor in the current actix arbiter.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate); [`Error::NoActixSystem`](crate::Error::NoActixSystem)
    /// outside a running actix `System` (actors need one).
    pub fn start(self) -> Result<RsmqConsumer> {
        self.validate()?;
        crate::runtime::ensure_actix_system("an RsmqConsumer")?;
        // Start the handler actors or threads now, so that a failure is an error here.
        self.handlers.sink()?;
        Ok(RsmqConsumer::start(self))
    }

    /// The handlers started by [`start`](Self::start).
    pub(super) fn handler_sink(&self) -> HandlerSink {
        self.handlers.started()
    }

    /// Used by the shared `give_up`/`give_up_fn` setters; replaces a dead-letter queue.
    fn set_give_up(&mut self, hook: GiveUpHook) {
        self.give_up = GiveUpTarget::Hook(hook);
    }

    pub(super) fn give_up_hook(&self) -> GiveUpHook {
        match &self.give_up {
            GiveUpTarget::Hook(hook) => hook.clone(),
            GiveUpTarget::DeadLetter(dlq) => dead_letter(self.rsmq.clone(), Arc::from(&**dlq)),
        }
    }
}

/// A give-up hook that sends the body to `dlq`; its `Ok` then deletes the original through
/// the usual checked finish, its `Err` requeues it.
fn dead_letter(rsmq: Rsmq, dlq: Arc<str>) -> GiveUpHook {
    GiveUpHook::closure(move |delivery: Delivery| {
        let (rsmq, dlq) = (rsmq.clone(), dlq.clone());
        async move {
            let body = std::str::from_utf8(delivery.body()).map_err(|_| BodyError::NotUtf8)?;
            let id = match rsmq.send_message(&dlq, body, None).await {
                Ok(id) => id,
                Err(error) => {
                    // Louder than a handler failure: the queue may be missing or misnamed.
                    tracing::warn!(source = delivery.source(), id = delivery.id(), dead_letter_queue = &*dlq, %error, "could not move message to the dead-letter queue; requeueing");
                    return Err(error.into());
                }
            };
            tracing::warn!(
                source = delivery.source(),
                id = delivery.id(),
                attempts = delivery.attempts(),
                dead_letter_queue = &*dlq,
                dead_letter_id = id,
                "giving up on message after too many attempts; moved to the dead-letter queue"
            );
            Ok(())
        }
    })
}

impl fmt::Debug for RsmqConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let give_up = match &self.give_up {
            GiveUpTarget::Hook(GiveUpHook::Log) => "log and delete".to_owned(),
            GiveUpTarget::Hook(_) => "hook".to_owned(),
            GiveUpTarget::DeadLetter(dlq) => format!("dead-letter queue {dlq:?}"),
        };
        f.debug_struct("RsmqConsumerBuilder")
            .field("rsmq", &self.rsmq)
            .field("queue", &self.queue)
            .field("handler_actors", &self.handlers.actor_count())
            .field("handler_fn", &self.handlers.has_closure())
            .field("concurrency", &self.concurrency)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("auto_extend", &self.auto_extend)
            .field("max_attempts", &self.max_attempts)
            .field("give_up", &give_up)
            .field("poll_interval", &self.poll_interval)
            .field("realtime", &self.realtime)
            .field("default_requeue_delay", &self.default_requeue_delay)
            .field("max_requeue_delay", &self.max_requeue_delay)
            .field("error_backoff", &self.error_backoff)
            .field("stop_timeout", &self.stop_timeout)
            .field("events", &self.events.is_some())
            .finish()
    }
}
