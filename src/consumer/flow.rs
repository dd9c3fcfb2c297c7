//! The consumer's flow-control core: the pure RDY policy plus the addresses of the links it
//! steers. Shared (`Rc`) by the consumer actor and its connections, which all run on one
//! arbiter thread; see [`Flow`](crate::conn::Flow) for why connections call it directly.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Instant,
};

use actix::{Addr, WeakAddr};
use rand::{rngs::SmallRng, SeedableRng};

use super::{actor::ConsumerActor, events::FlowNotice};
use crate::{
    conn::{Flow, LinkId, NsqdConnection, SetRdy},
    rdy::{ConnId, FlowControl, Outcome, RdyAction, RdyPolicy},
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
    links: RefCell<HashMap<LinkId, WeakAddr<NsqdConnection>>>,
    next_link: Cell<LinkId>,
    rng: RefCell<SmallRng>,
    consumer: WeakAddr<ConsumerActor>,
    backoff_level: Cell<u32>,
}

impl FlowCore {
    pub(crate) fn new(
        flow: &FlowControl,
        consumer: WeakAddr<ConsumerActor>,
        state: Arc<FlowState>,
    ) -> Self {
        state.max_in_flight.store(flow.max_in_flight, Relaxed);
        Self {
            policy: RefCell::new(RdyPolicy::new(flow)),
            state,
            links: RefCell::default(),
            next_link: Cell::new(1),
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
    fn apply(&self, actions: Vec<RdyAction>, caller: Option<LinkId>) -> Option<u32> {
        let mut own = None;
        for action in actions {
            match action {
                RdyAction::SendRdy { conn, count } if Some(conn.0) == caller => own = Some(count),
                RdyAction::SendRdy { conn, count } => {
                    let link = self.links.borrow().get(&conn.0).and_then(WeakAddr::upgrade);
                    if let Some(addr) = link {
                        addr.do_send(SetRdy {
                            link: conn.0,
                            count,
                        });
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
    fn connected(&self, conn: Addr<NsqdConnection>, max_rdy: u32) -> (LinkId, Option<u32>) {
        let link = self.next_link.get();
        self.next_link.set(link + 1);
        self.links.borrow_mut().insert(link, conn.downgrade());
        let actions = self
            .policy
            .borrow_mut()
            .connected(ConnId(link), max_rdy, Instant::now());
        (link, self.apply(actions, Some(link)))
    }

    fn disconnected(&self, link: LinkId) {
        self.links.borrow_mut().remove(&link);
        let actions = self
            .policy
            .borrow_mut()
            .disconnected(ConnId(link), Instant::now());
        self.apply(actions, None);
    }

    fn lost(&self, link: LinkId) {
        self.links.borrow_mut().remove(&link);
        let actions = self.policy.borrow_mut().lost(ConnId(link), Instant::now());
        self.apply(actions, None);
    }

    fn received(&self, link: LinkId) -> Option<u32> {
        let actions = self
            .policy
            .borrow_mut()
            .message_received(ConnId(link), Instant::now());
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
                .message_done(ConnId(link), outcome, Instant::now(), &mut *rng)
        };
        if actions.is_empty() && self.policy.borrow().backoff_level() == self.backoff_level.get() {
            return None; // the common case: nothing to send, backoff unchanged
        }
        self.apply(actions, Some(link))
    }
}
