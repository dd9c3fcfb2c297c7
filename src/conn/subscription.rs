//! What a consuming connection needs beyond a producer's: the SUB, the handlers, the requeue
//! policy, and the link to the RDY coordinator.

use std::{rc::Rc, time::Duration};

use actix::Recipient;

use super::SetRdy;
use crate::{
    handler::{GiveUpHook, HandlerSink, Hooks},
    protocol::{Channel, Topic},
    rdy::{LinkId, Outcome},
};

/// The consumer's flow control, called synchronously by its connections. A consumer's
/// connections and its coordinator share one arbiter thread, so a connection can ask the RDY
/// policy and act on the answer in the same turn: RDY changes go out *before* the FIN/REQ that
/// frees a slot (nsq#404; otherwise nsqd may push a message into the gap after backoff began),
/// and no message per delivery travels to another actor.
pub(crate) trait Flow {
    /// Link `link` finished SUB; `conn` takes the RDY changes the policy makes for it later.
    /// Returns the RDY to send on it now.
    fn connected(&self, link: LinkId, conn: Recipient<SetRdy>, max_rdy: u32) -> Option<u32>;
    /// The link is gone, with its RDY and its in-flight messages.
    fn disconnected(&self, link: LinkId);
    /// The link is gone but its handlers still work on what it delivered: its in-flight
    /// messages keep their slots until each is `done` (or `disconnected` is called).
    fn lost(&self, link: LinkId);
    /// A [`SetRdy`] reached link `link`: returns the RDY to write on it now (the latest the
    /// policy decided), which the policy counts as written from here on. Slots a lower gives
    /// up are handed to other links only after this, so the RDY on the wire never adds up
    /// past `max_in_flight` while it moves between links.
    fn rdy_due(&self, link: LinkId) -> Option<u32>;
    /// A message arrived; returns a new RDY for this link, if it changes.
    fn received(&self, link: LinkId) -> Option<u32>;
    /// A message was answered; called before the FIN/REQ is written. Returns a new RDY for
    /// this link, if it changes, to be written first.
    fn done(&self, link: LinkId, outcome: Outcome) -> Option<u32>;
}

/// The consumer side of a connection.
#[derive(Clone)]
pub(crate) struct Subscription {
    pub(crate) topic: Topic,
    pub(crate) channel: Channel,
    pub(crate) handler: HandlerSink,
    pub(crate) give_up: GiveUpHook,
    /// Preprocess and validate, run before the handler.
    pub(crate) hooks: Hooks,
    /// Deliveries past this many attempts go to the give-up hook (0 = never).
    pub(crate) max_attempts: u32,
    pub(crate) default_requeue_delay: Duration,
    pub(crate) max_requeue_delay: Duration,
    pub(crate) flow: Rc<dyn Flow>,
}

impl Subscription {
    /// go-nsq `conn.go:733-743`: `min(default_requeue_delay × attempts, max_requeue_delay)`.
    pub(crate) fn requeue_delay(&self, explicit: Option<Duration>, attempts: u32) -> Duration {
        crate::delivery::requeue_delay(
            explicit,
            attempts,
            self.default_requeue_delay,
            self.max_requeue_delay,
        )
    }

    pub(crate) fn gives_up_on(&self, attempts: u32) -> bool {
        self.max_attempts > 0 && attempts > self.max_attempts
    }
}
