//! What a consuming connection needs beyond a producer's: the SUB, the handlers, the requeue
//! policy, and the link to the RDY coordinator.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use actix::Recipient;

use super::MessageOutcome;
use crate::{
    handler::{GiveUpHook, HandlerSink},
    protocol::{Channel, Topic},
};

/// Flags the RDY coordinator publishes so that connections can act on a handler's result in
/// the same turn, before the FIN/REQ is written (nsq#404: lower RDY *before* the command that
/// frees a slot, or nsqd may push another message into the gap once backoff has begun).
#[derive(Debug, Default)]
pub(crate) struct BackoffSignals {
    /// A failure (REQ with backoff) will put every connection at RDY 0.
    failure_pauses: AtomicBool,
    /// A requeue without backoff will too (the consumer is already backing off).
    continue_pauses: AtomicBool,
    /// The coordinator wants every received and finished message reported (low-RDY mode,
    /// backoff), not only failures.
    report_all: AtomicBool,
}

impl BackoffSignals {
    pub(crate) fn set(&self, failure_pauses: bool, continue_pauses: bool, report_all: bool) {
        self.failure_pauses.store(failure_pauses, Relaxed);
        self.continue_pauses.store(continue_pauses, Relaxed);
        self.report_all.store(report_all, Relaxed);
    }

    pub(crate) fn pauses(&self, backoff: bool) -> bool {
        if backoff {
            self.failure_pauses.load(Relaxed)
        } else {
            self.continue_pauses.load(Relaxed)
        }
    }

    pub(crate) fn report_all(&self) -> bool {
        self.report_all.load(Relaxed)
    }
}

/// The consumer side of a connection.
#[derive(Clone)]
pub(crate) struct Subscription {
    pub(crate) topic: Topic,
    pub(crate) channel: Channel,
    pub(crate) handler: HandlerSink,
    pub(crate) give_up: GiveUpHook,
    /// Deliveries past this many attempts go to the give-up hook (0 = never).
    pub(crate) max_attempts: u32,
    pub(crate) default_requeue_delay: Duration,
    pub(crate) max_requeue_delay: Duration,
    pub(crate) coordinator: Option<Recipient<MessageOutcome>>,
    pub(crate) signals: Arc<BackoffSignals>,
}

impl Subscription {
    /// go-nsq `conn.go:733-743`: `min(default_requeue_delay × attempts, max_requeue_delay)`.
    pub(crate) fn requeue_delay(&self, explicit: Option<Duration>, attempts: u32) -> Duration {
        explicit.unwrap_or_else(|| {
            self.default_requeue_delay
                .saturating_mul(attempts)
                .min(self.max_requeue_delay)
        })
    }

    pub(crate) fn gives_up_on(&self, attempts: u32) -> bool {
        self.max_attempts > 0 && attempts > self.max_attempts
    }
}
