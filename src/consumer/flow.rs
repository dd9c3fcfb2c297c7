//! The consumer's flow-control core: the pure RDY policy plus the recipients of the links it
//! steers. Shared (`Rc`) by the consumer actor and its connections, which all run on one
//! arbiter thread; see [`Flow`](crate::conn::Flow) for why connections call it directly. It
//! knows connections only as `Recipient<SetRdy>` and the consumer only as
//! `Recipient<FlowNotice>`, so anything can stand in for either.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Instant,
};

use actix::{Recipient, WeakRecipient};
use rand::{rngs::SmallRng, SeedableRng};

use super::events::FlowNotice;
use crate::{
    conn::{Flow, SetRdy},
    rdy::{FlowControl, LinkId, Outcome, RdyAction, RdyPolicy},
};

/// What the flow core publishes for [`Consumer::stats`](super::Consumer::stats), readable from
/// any thread.
#[derive(Debug, Default)]
pub(crate) struct FlowState {
    pub(crate) max_in_flight: AtomicU32,
    pub(crate) total_rdy: AtomicU64,
    pub(crate) backoff_level: AtomicU32,
    pub(crate) backoff_paused: AtomicBool,
    pub(crate) starved: AtomicBool,
}

pub(crate) struct FlowCore {
    policy: RefCell<RdyPolicy>,
    state: Arc<FlowState>,
    links: RefCell<HashMap<LinkId, WeakRecipient<SetRdy>>>,
    rng: RefCell<SmallRng>,
    consumer: WeakRecipient<FlowNotice>,
    backoff_level: Cell<u32>,
}

impl FlowCore {
    pub(crate) fn new(
        flow: &FlowControl,
        consumer: WeakRecipient<FlowNotice>,
        state: Arc<FlowState>,
    ) -> Self {
        state.max_in_flight.store(flow.max_in_flight, Relaxed);
        Self {
            policy: RefCell::new(RdyPolicy::new(flow)),
            state,
            links: RefCell::default(),
            rng: RefCell::new(SmallRng::from_rng(&mut rand::rng())),
            consumer,
            backoff_level: Cell::new(0),
        }
    }

    pub(crate) fn set_max_in_flight(&self, max_in_flight: u32) {
        let actions = self
            .policy
            .borrow_mut()
            .set_max_in_flight(max_in_flight, Instant::now());
        self.apply(actions, None);
    }

    /// While `false`, RDY 0 on every link without touching `max_in_flight`; `true` restores
    /// the normal distribution (see `RdyPolicy::set_handlers_available`).
    pub(crate) fn set_handlers_available(&self, available: bool) {
        let actions = self
            .policy
            .borrow_mut()
            .set_handlers_available(available, Instant::now());
        self.apply(actions, None);
    }

    pub(crate) fn backoff_timer_fired(&self) {
        let actions = self.policy.borrow_mut().backoff_timer_fired(Instant::now());
        self.apply(actions, None);
    }

    pub(crate) fn tick(&self) {
        let mut policy = self.policy.borrow_mut();
        if policy.tick_interval().is_none() {
            return;
        }
        let actions = policy.tick(Instant::now());
        drop(policy);
        self.apply(actions, None);
    }

    pub(crate) fn backoff_level(&self) -> u32 {
        self.policy.borrow().backoff_level()
    }

    /// Carries out the policy's actions; returns the RDY for the calling link, if any, for it
    /// to write itself (it is inside its own handler and must write before its FIN/REQ).
    /// Other links are only told that their RDY changed: each asks for the count when it
    /// handles the message ([`Flow::rdy_due`]), so it writes the latest decision, and the
    /// policy learns when the change is on the wire.
    fn apply(&self, actions: Vec<RdyAction>, caller: Option<LinkId>) -> Option<u32> {
        let mut own = None;
        for action in actions {
            match action {
                RdyAction::SendRdy { conn, count } if Some(conn) == caller => own = Some(count),
                RdyAction::SendRdy { conn, .. } => {
                    let link = self.links.borrow().get(&conn).and_then(|l| l.upgrade());
                    if let Some(recipient) = link {
                        recipient.do_send(SetRdy { link: conn });
                    }
                }
                RdyAction::StartBackoffTimer(pause) => self.notify(FlowNotice::Timer(pause)),
            }
        }
        self.track_backoff();
        own
    }

    fn track_backoff(&self) {
        let policy = self.policy.borrow();
        let level = policy.backoff_level();
        self.state
            .max_in_flight
            .store(policy.max_in_flight(), Relaxed);
        self.state.total_rdy.store(policy.total_rdy(), Relaxed);
        self.state.backoff_level.store(level, Relaxed);
        self.state
            .backoff_paused
            .store(policy.backoff_timer_running(), Relaxed);
        self.state.starved.store(policy.is_starved(), Relaxed);
        drop(policy);
        let previous = self.backoff_level.replace(level);
        if previous > 0 && level == 0 {
            self.notify(FlowNotice::Ended);
        } else if level != previous {
            self.notify(FlowNotice::Level(level));
        }
    }

    fn notify(&self, notice: FlowNotice) {
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.do_send(notice);
        }
    }
}

impl Flow for FlowCore {
    fn connected(&self, link: LinkId, conn: Recipient<SetRdy>, max_rdy: u32) -> Option<u32> {
        self.links.borrow_mut().insert(link, conn.downgrade());
        let actions = self
            .policy
            .borrow_mut()
            .connected(link, max_rdy, Instant::now());
        self.apply(actions, Some(link))
    }

    fn disconnected(&self, link: LinkId) {
        self.links.borrow_mut().remove(&link);
        let actions = self.policy.borrow_mut().disconnected(link, Instant::now());
        self.apply(actions, None);
    }

    fn lost(&self, link: LinkId) {
        self.links.borrow_mut().remove(&link);
        let actions = self.policy.borrow_mut().lost(link, Instant::now());
        self.apply(actions, None);
    }

    fn rdy_due(&self, link: LinkId) -> Option<u32> {
        let actions = self.policy.borrow_mut().written(link, Instant::now());
        self.apply(actions, Some(link));
        // The latest decision, whether or not this turn changed it again.
        self.policy.borrow().decided_rdy(link)
    }

    fn received(&self, link: LinkId) -> Option<u32> {
        let actions = self
            .policy
            .borrow_mut()
            .message_received(link, Instant::now());
        if actions.is_empty() {
            return None; // the common case: inside the window, nothing changes
        }
        self.apply(actions, Some(link))
    }

    fn done(&self, link: LinkId, outcome: Outcome) -> Option<u32> {
        let actions = {
            let mut rng = self.rng.borrow_mut();
            self.policy
                .borrow_mut()
                .message_done(link, outcome, Instant::now(), &mut *rng)
        };
        if actions.is_empty() && self.policy.borrow().backoff_level() == self.backoff_level.get() {
            return None; // the common case: nothing to send, backoff unchanged
        }
        self.apply(actions, Some(link))
    }
}
