//! RDY distribution over a consumer's connections: go-nsq's even split (`consumer.go:287-291`,
//! `updateRDY` `939-980`) and redistribution (`redistributeRDY` `1004-1067`), reworked so that
//! the in-flight total never exceeds `max_in_flight` and every nsqd gets RDY quickly.
//!
//! Every event recomputes the wanted RDY per connection ("targets") and moves towards them in
//! three passes: lower first (so the budget is never overdrawn, as go-nsq lowers the existing
//! connections before a new one takes its share), then close windows that would let the
//! in-flight total exceed the capacity, then raise within what is left, longest-waiting
//! connection first.
//!
//! Budget rule: a connection occupies `max(rdy, in_flight)` slots. A connection whose RDY was
//! taken back but still has messages in flight keeps occupying them, so the freed RDY is only
//! handed on once those messages are done. Whenever a window is open (`in_flight < rdy`), the
//! occupancy over all connections is at most the capacity, so nsqd can never push the
//! in-flight total past `max_in_flight`.
//!
//! Write order: only the link whose own event is being handled (the *caller*) writes its new
//! RDY at once; any other link is told through its mailbox and writes later (then reports it
//! with [`RdyPolicy::written`]). Until then nsqd still acts on the RDY it last read there, so
//! raises are granted from *claims*, not from the counts decided: a link claims
//! `max(rdy on the wire, rdy decided, in_flight)` slots, and a raise gets only
//! `capacity - Σ other claims`. A link lowered through its mailbox keeps its old claim until
//! it has written the lower; the share it gives up is granted when it does (or when messages
//! are done, or a link goes). So the RDY on the wire never adds up past the capacity. go-nsq
//! caps a raise the same way (`updateRDY`, `consumer.go:939-980`: `max_in_flight -
//! totalRdyCount`), counting a RDY at `sendRDY` (`982-1002`), which writes it at once.
//! Left open, as in go-nsq: a message nsqd sent just before it read a lower already written
//! is still on its way; it counts from its arrival (`message_received`), not before.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, Instant},
};

use rand::Rng;

mod rotation;

use super::{
    backoff::{BackoffChange, BackoffSignal, BackoffState},
    config::FlowControl,
    split::even_split,
};

/// Identifies one link (one successful handshake with one nsqd): the single id type the RDY
/// policy, the flow core and the connection actors share. A fresh id per link means a `SetRdy`
/// or an answer meant for a link that has since died cannot land on its successor. Ids are
/// handed out increasing (`conn::next_link_id`): the order of ids is the order in which the
/// remainder of an uneven split is given out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LinkId(pub(crate) u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// How a handler answered a message; drives the backoff state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// FIN (including an automatic FIN after too many attempts): one backoff level down.
    Finished,
    /// REQ; `backoff: true` (a handler failure) raises the backoff level, `false` keeps it
    /// but restarts a running backoff window.
    Requeued {
        /// Whether the requeue should slow the consumer down.
        backoff: bool,
    },
}

impl Outcome {
    fn signal(self) -> BackoffSignal {
        match self {
            Outcome::Finished => BackoffSignal::Resume,
            Outcome::Requeued { backoff: true } => BackoffSignal::Backoff,
            Outcome::Requeued { backoff: false } => BackoffSignal::Continue,
        }
    }
}

/// What the actor must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RdyAction {
    /// Write `RDY count` on the connection. Never a duplicate of the last count sent.
    SendRdy {
        /// The connection.
        conn: LinkId,
        /// The new RDY count, at most that nsqd's `max_rdy_count`.
        count: u32,
    },
    /// Call [`RdyPolicy::backoff_timer_fired`] after this long. At most one timer is
    /// outstanding at a time; nothing ever needs cancelling.
    StartBackoffTimer(Duration),
}

#[derive(Debug, Clone)]
struct Conn {
    max_rdy: u32,
    /// The last count decided (0 before any: nsqd starts a subscriber at RDY 0).
    rdy: u32,
    /// The last count written on the link. Differs from `rdy` while a change made by another
    /// link's event waits in this link's mailbox.
    wire: u32,
    in_flight: u32,
    /// Place in the round-robin queue: smaller waited longer. Renewed whenever RDY drops to 0.
    ticket: u64,
    /// When RDY last went from 0 to more.
    granted_at: Instant,
    /// The latest of: RDY granted, a message received, a message done.
    last_activity: Instant,
    /// The link died with messages still being handled: no RDY, but its in-flight messages
    /// keep their slots until they are done (see [`RdyPolicy::lost`]).
    lost: bool,
}

impl Conn {
    fn occupancy(&self) -> u64 {
        u64::from(self.rdy.max(self.in_flight))
    }

    /// The slots this link may fill before anything else is decided: what nsqd may still
    /// send on the RDY it read, what a pending change will let it send, what is in flight.
    fn claim(&self) -> u64 {
        u64::from(self.wire.max(self.rdy).max(self.in_flight))
    }

    fn window_open(&self) -> bool {
        self.in_flight < self.rdy
    }

    /// Waiting for a low-RDY slot and able to use one right away.
    fn can_take_slot(&self) -> bool {
        self.rdy == 0 && self.in_flight == 0 && self.max_rdy > 0
    }
}

/// The consumer's flow-control policy: owns `max_in_flight`, the per-connection RDY and
/// in-flight counts, and the backoff state. Pure: time comes in as `now`, randomness as `rng`.
///
/// Contract with the actor: every `message_received` is matched by one `message_done` or by
/// the connection's `disconnected`; `message_done` is called *before* the FIN/REQ is written
/// and its `SendRdy` actions are written first (nsq#404: otherwise nsqd can push a message
/// into the slot the FIN frees after backoff has begun).
#[derive(Debug)]
pub(crate) struct RdyPolicy {
    max_in_flight: u32,
    /// False while no handler can take a message: capacity 0, `max_in_flight` untouched.
    handlers_available: bool,
    redistribute_interval: Duration,
    idle_timeout: Duration,
    held_timeout: Duration,
    backoff: BackoffState,
    conns: BTreeMap<LinkId, Conn>,
    /// The RDY each link should have, as the last rebalance decided. Raises it could not
    /// grant yet (other links' claims) are granted towards these when slots are written
    /// free, without deciding the rotation again.
    targets: BTreeMap<LinkId, u32>,
    next_ticket: u64,
}

impl RdyPolicy {
    /// A policy with no connections. `flow` should have passed [`FlowControl::validate`].
    pub(crate) fn new(flow: &FlowControl) -> Self {
        Self {
            max_in_flight: flow.max_in_flight,
            handlers_available: true,
            redistribute_interval: flow.rdy_redistribute_interval,
            idle_timeout: flow.low_rdy_idle_timeout,
            held_timeout: flow.low_rdy_timeout,
            backoff: BackoffState::new(
                flow.backoff_strategy,
                flow.backoff_multiplier,
                flow.max_backoff_duration,
            ),
            conns: BTreeMap::new(),
            targets: BTreeMap::new(),
            next_ticket: 0,
        }
    }

    /// A connection finished SUB and is at RDY 0. It joins the back of the round-robin
    /// queue; in normal mode the others are lowered first and it takes what fits.
    pub(crate) fn connected(
        &mut self,
        conn: LinkId,
        max_rdy_count: u32,
        now: Instant,
    ) -> Vec<RdyAction> {
        let ticket = self.take_ticket();
        let state = Conn {
            max_rdy: max_rdy_count,
            rdy: 0,
            wire: 0,
            in_flight: 0,
            ticket,
            granted_at: now,
            last_activity: now,
            lost: false,
        };
        if self.conns.insert(conn, state).is_some() {
            tracing::warn!(%conn, "connection id reused; its previous state was dropped");
        }
        self.rebalanced(now, Some(conn))
    }

    /// A connection is gone, with its RDY and its in-flight messages (nsqd times those out).
    /// Its share goes to the others; if it held the single test RDY of a backoff, another
    /// connection gets it (go-nsq PR #106/#127).
    pub(crate) fn disconnected(&mut self, conn: LinkId, now: Instant) -> Vec<RdyAction> {
        if self.conns.remove(&conn).is_none() {
            return Vec::new();
        }
        self.rebalanced(now, None)
    }

    /// The link died but its handlers are still working on messages it delivered. Its RDY is
    /// gone (nsqd will never see another command on it), yet its in-flight messages keep
    /// occupying their slots until each is reported done, so a reconnected link cannot push
    /// the number of messages being handled past `max_in_flight`. Call
    /// [`disconnected`](Self::disconnected) once nsqd has requeued them (after `msg_timeout`),
    /// so a handler that never answers cannot hold a slot forever.
    pub(crate) fn lost(&mut self, conn: LinkId, now: Instant) -> Vec<RdyAction> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        if c.in_flight == 0 {
            return self.disconnected(conn, now);
        }
        c.rdy = 0;
        c.wire = 0;
        c.max_rdy = 0;
        c.lost = true;
        self.rebalanced(now, None)
    }

    /// Changes `max_in_flight` at once: 0 pauses (RDY 0 everywhere), any other value resumes.
    pub(crate) fn set_max_in_flight(&mut self, max_in_flight: u32, now: Instant) -> Vec<RdyAction> {
        self.max_in_flight = max_in_flight;
        self.rebalanced(now, None)
    }

    /// Whether any handler can take a message. While not, every connection gets RDY 0 and
    /// what is in flight keeps its slots; when handlers are back, the normal distribution
    /// returns. Unlike `set_max_in_flight(0)`, the user's `max_in_flight` is kept, and no
    /// outcome is counted, so backoff is not touched either.
    pub(crate) fn set_handlers_available(
        &mut self,
        available: bool,
        now: Instant,
    ) -> Vec<RdyAction> {
        if self.handlers_available == available {
            return Vec::new();
        }
        self.handlers_available = available;
        self.rebalanced(now, None)
    }

    /// A message arrived on `conn`.
    pub(crate) fn message_received(&mut self, conn: LinkId, now: Instant) -> Vec<RdyAction> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        c.in_flight = c.in_flight.saturating_add(1);
        c.last_activity = now;
        if c.in_flight <= c.rdy {
            // Inside the window: the occupancy is unchanged, so is every decision.
            return Vec::new();
        }
        // nsqd sent it before reading a lower RDY: the slot it takes must come from elsewhere.
        self.rebalanced(now, Some(conn))
    }

    /// Link `conn` wrote the RDY decided for it (see [`rdy`](Self::rdy)) after a change made
    /// by another link's event reached it through its mailbox. A lower frees the slots it
    /// gave up, so raises that waited for them are granted now. The returned `SendRdy` for
    /// `conn` itself, if any, is to be written at once, like the caller's of any event.
    pub(crate) fn written(&mut self, conn: LinkId, now: Instant) -> Vec<RdyAction> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let before = c.claim();
        c.wire = c.rdy;
        if c.claim() == before {
            return Vec::new(); // a raise written, or nothing new: no slot freed
        }
        // Only grant what waited: deciding again could take a slot from a holder just
        // because a lowered link counts as waiting again for a moment.
        let mut out = Vec::new();
        self.raise(self.capacity(), Some(conn), now, &mut out);
        out
    }

    /// A message of `conn` was answered. Call it before writing the FIN/REQ, and write the
    /// returned `SendRdy`s first.
    pub(crate) fn message_done(
        &mut self,
        conn: LinkId,
        outcome: Outcome,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<RdyAction> {
        let mut slot_freed = false;
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.in_flight == 0 {
                tracing::warn!(%conn, "message done without a message in flight");
            } else {
                let before = c.claim();
                c.in_flight -= 1;
                slot_freed = c.claim() < before;
            }
            c.last_activity = now;
            if c.lost && c.in_flight == 0 {
                self.conns.remove(&conn);
            }
        }
        // Outcomes count even if the connection is gone: they say how the handler fares.
        let change = self.backoff.signal(outcome.signal(), rng);
        let mut out = Vec::new();
        match change {
            BackoffChange::Unchanged => {
                if slot_freed || self.occupancy() > u64::from(self.capacity()) {
                    self.rebalance(now, Some(conn), &mut out);
                }
            }
            BackoffChange::Started(pause) => {
                tracing::warn!(
                    level = self.backoff.level(),
                    ?pause,
                    "backing off, RDY 0 everywhere"
                );
                self.rebalance(now, Some(conn), &mut out);
                out.push(RdyAction::StartBackoffTimer(pause));
            }
            BackoffChange::Ended => {
                tracing::info!("backoff ended, back to full RDY");
                self.rebalance(now, Some(conn), &mut out);
            }
        }
        out
    }

    /// The backoff timer fired: one connection gets RDY 1 to test the waters (or will, as
    /// soon as a connection exists, `max_in_flight` is above 0 and nothing is in flight).
    /// A spurious call, with no timer outstanding, does nothing.
    pub(crate) fn backoff_timer_fired(&mut self, now: Instant) -> Vec<RdyAction> {
        if !self.backoff.timer_fired() {
            return Vec::new();
        }
        tracing::debug!(
            level = self.backoff.level(),
            "backoff pause over, testing the waters"
        );
        self.rebalanced(now, None)
    }

    /// Periodic redistribution in low-RDY mode: connections idle or holding RDY too long give
    /// it to those that waited longest. Harmless (a no-op) in any other mode.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<RdyAction> {
        self.rebalanced(now, None)
    }

    /// How often [`tick`](Self::tick) should be called now: `Some` while connections
    /// outnumber the slots (low-RDY mode, including the single test RDY of a backoff),
    /// `None` when nothing depends on time. Ticking at this interval all the time is fine.
    pub(crate) fn tick_interval(&self) -> Option<Duration> {
        let slots = usize::try_from(self.capacity()).unwrap_or(usize::MAX);
        let live = self.conns.values().filter(|c| !c.lost).count();
        (slots > 0 && live > slots).then_some(self.redistribute_interval)
    }

    /// The RDY counts as last decided, summed.
    pub(crate) fn total_rdy(&self) -> u64 {
        self.conns.values().map(|c| u64::from(c.rdy)).sum()
    }

    /// The RDY last decided for `conn`: what it writes when its mailbox tells it RDY changed;
    /// `None` for an unknown connection.
    pub(crate) fn decided_rdy(&self, conn: LinkId) -> Option<u32> {
        self.conns.get(&conn).map(|c| c.rdy)
    }

    #[cfg(test)]
    /// The RDY last decided for `conn`; 0 for an unknown connection.
    pub(crate) fn rdy(&self, conn: LinkId) -> u32 {
        self.conns.get(&conn).map_or(0, |c| c.rdy)
    }

    #[cfg(test)]
    /// Messages of `conn` not yet answered; 0 for an unknown connection.
    pub(crate) fn in_flight(&self, conn: LinkId) -> u32 {
        self.conns.get(&conn).map_or(0, |c| c.in_flight)
    }

    /// True if any connection is at 85 % of its RDY or more (go-nsq `IsStarved`,
    /// `consumer.go:295-304`): the handlers, not nsqd, are the bottleneck.
    pub(crate) fn is_starved(&self) -> bool {
        self.conns.values().any(|c| {
            let threshold = u64::from(c.rdy) * 85 / 100;
            c.in_flight > 0 && u64::from(c.in_flight) >= threshold
        })
    }

    #[cfg(test)]
    /// True while the backoff level is above 0.
    pub(crate) fn in_backoff(&self) -> bool {
        self.backoff.in_backoff()
    }

    /// True while a backoff pause runs and every connection is held at RDY 0.
    pub(crate) fn backoff_timer_running(&self) -> bool {
        self.backoff.timer_running()
    }

    /// The backoff level; 0 when not backing off.
    pub(crate) fn backoff_level(&self) -> u32 {
        self.backoff.level()
    }

    /// The current `max_in_flight`.
    pub(crate) fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// How many messages may be in flight right now: 0 when paused, with no handler available
    /// or during a backoff pause, 1 while backoff tests the waters, otherwise `max_in_flight`.
    fn capacity(&self) -> u32 {
        if !self.handlers_available || self.backoff.timer_running() {
            0
        } else if self.backoff.in_backoff() {
            self.max_in_flight.min(1)
        } else {
            self.max_in_flight
        }
    }

    fn occupancy(&self) -> u64 {
        self.conns.values().map(Conn::occupancy).sum()
    }

    fn take_ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn claims(&self) -> u64 {
        self.conns.values().map(Conn::claim).sum()
    }

    fn rebalanced(&mut self, now: Instant, caller: Option<LinkId>) -> Vec<RdyAction> {
        let mut out = Vec::new();
        self.rebalance(now, caller, &mut out);
        out
    }

    /// `caller`: the link whose event this is, which writes its `SendRdy` at once; everyone
    /// else's goes through a mailbox and takes effect later.
    fn rebalance(&mut self, now: Instant, caller: Option<LinkId>, out: &mut Vec<RdyAction>) {
        if self.conns.is_empty() {
            return;
        }
        let capacity = self.capacity();
        let targets = self.targets(capacity, now);
        let queue = self.queue();

        // Lower in queue order, so connections released together keep their relative order.
        for &(_, id) in &queue {
            let target = targets.get(&id).copied().unwrap_or(0);
            if self.conns.get(&id).is_some_and(|c| c.rdy > target) {
                self.set_rdy(id, target, caller, now, out);
            }
        }

        // Messages in flight beyond their connection's RDY (after max_in_flight was lowered,
        // or a backoff began) may leave no room: shrink open windows, newest first, so nsqd
        // cannot push the in-flight total over the capacity meanwhile.
        let mut excess = self.occupancy().saturating_sub(u64::from(capacity));
        for &(_, id) in queue.iter().rev() {
            if excess == 0 {
                break;
            }
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            if c.window_open() {
                let cut = (c.rdy - c.in_flight).min(u32::try_from(excess).unwrap_or(u32::MAX));
                excess -= u64::from(cut);
                let count = c.rdy - cut;
                self.set_rdy(id, count, caller, now, out);
            }
        }

        // Raises granted earlier but not yet written (they wait in a mailbox) may no longer
        // fit once the capacity dropped while other links' lowers are not written either:
        // take them back, newest first. They never reached nsqd, so nothing is withdrawn
        // on the wire; they are granted again when the slots are free.
        let mut excess = self.claims().saturating_sub(u64::from(capacity));
        for &(_, id) in queue.iter().rev() {
            if excess == 0 {
                break;
            }
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            let floor = c.wire.max(c.in_flight);
            if c.rdy > floor {
                let cut = (c.rdy - floor).min(u32::try_from(excess).unwrap_or(u32::MAX));
                excess -= u64::from(cut);
                let count = c.rdy - cut;
                self.set_rdy(id, count, caller, now, out);
            }
        }

        self.targets = targets;
        self.raise(capacity, caller, now, out);
    }

    /// The links in round-robin order, longest-waiting first.
    fn queue(&self) -> Vec<(u64, LinkId)> {
        let mut queue: Vec<(u64, LinkId)> =
            self.conns.iter().map(|(id, c)| (c.ticket, *id)).collect();
        queue.sort_unstable();
        queue
    }

    /// Raises towards the targets, longest-waiting first, within the capacity the others'
    /// claims leave: a link lowered but not yet written still claims its old RDY, so the
    /// share it gives up waits until it is written.
    fn raise(
        &mut self,
        capacity: u32,
        caller: Option<LinkId>,
        now: Instant,
        out: &mut Vec<RdyAction>,
    ) {
        let mut claimed = self.claims();
        for (_, id) in self.queue() {
            let target = self.targets.get(&id).copied().unwrap_or(0);
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            if c.rdy >= target {
                continue;
            }
            let own = c.claim();
            let room = u64::from(capacity).saturating_sub(claimed - own);
            let count = target.min(u32::try_from(room).unwrap_or(u32::MAX));
            if count > c.rdy {
                claimed = claimed - own + own.max(u64::from(count));
                self.set_rdy(id, count, caller, now, out);
            }
        }
    }

    fn set_rdy(
        &mut self,
        id: LinkId,
        count: u32,
        caller: Option<LinkId>,
        now: Instant,
        out: &mut Vec<RdyAction>,
    ) {
        let ticket = self.next_ticket + 1;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.rdy == count {
            return;
        }
        if count == 0 && c.wire > 0 {
            // It had its turn: to the back of the queue. (A grant taken back before it was
            // written was no turn.)
            c.ticket = ticket;
            self.next_ticket = ticket;
        } else if c.rdy == 0 {
            c.granted_at = now;
            c.last_activity = now;
        }
        tracing::debug!(conn = %id, rdy = count, previous = c.rdy, in_flight = c.in_flight, "RDY");
        c.rdy = count;
        if caller == Some(id) {
            c.wire = count;
        }
        out.push(RdyAction::SendRdy { conn: id, count });
    }
}
