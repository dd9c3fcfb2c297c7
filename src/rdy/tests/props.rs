//! Property tests over random sequences of every event: invariants after each step, and the
//! liveness bound of low-RDY mode.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{settle, MS};
use crate::rdy::{FlowControl, LinkId, Outcome, RdyAction, RdyPolicy};

#[derive(Debug, Clone)]
enum Op {
    Connect {
        max_rdy: u32,
    },
    Disconnect(usize),
    /// The link died while its handlers still work on what it delivered.
    Lose(usize),
    SetMaxInFlight(u32),
    /// Handlers gone (false) or back (true).
    HandlersAvailable(bool),
    /// nsqd delivers on this connection if its window is open (a faithful nsqd).
    Receive(usize),
    /// nsqd delivers even though RDY was lowered: it sent before reading the new RDY.
    LateReceive(usize),
    Done(usize, Outcome),
    /// A connection handles the `SetRdy` in its mailbox: it writes the RDY decided for it.
    Write(usize),
    FireTimer,
    Advance(u64),
    Tick,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Finished),
        2 => Just(Outcome::Requeued { backoff: true }),
        1 => Just(Outcome::Requeued { backoff: false }),
    ]
}

fn op(late_receives: bool) -> impl Strategy<Value = Op> {
    let late = if late_receives { 2 } else { 0 };
    prop_oneof![
        3 => (1u32..=6).prop_map(|max_rdy| Op::Connect { max_rdy }),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => any::<usize>().prop_map(Op::Lose),
        // Nested: proptest's flat union (more than ten options) rejects the weight 0 of `late`.
        2 => prop_oneof![
            prop_oneof![Just(0u32), 1u32..=12].prop_map(Op::SetMaxInFlight),
            any::<bool>().prop_map(Op::HandlersAvailable),
        ],
        8 => any::<usize>().prop_map(Op::Receive),
        late => any::<usize>().prop_map(Op::LateReceive),
        8 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Done(i, o)),
        6 => any::<usize>().prop_map(Op::Write),
        // Nested for the same reason: at most ten options per union.
        6 => prop_oneof![
            Just(Op::FireTimer),
            (1u64..=700).prop_map(Op::Advance),
            Just(Op::Tick),
        ],
    ]
}

#[derive(Debug, Default)]
struct ModelConn {
    max_rdy: u32,
    /// What the policy last decided for it.
    rdy: u32,
    /// What nsqd was last told: the caller of an event writes at once, others when they
    /// handle the `SetRdy` in their mailbox.
    wire: u32,
    /// A `SetRdy` waits in its mailbox.
    told: bool,
    in_flight: u32,
    lost: bool,
}

/// A consumer's connections as nsqd sees them, driven through the policy.
struct Model {
    policy: RdyPolicy,
    now: Instant,
    rng: StdRng,
    conns: BTreeMap<u64, ModelConn>,
    next_id: u64,
    max_in_flight: u32,
    timer: Option<Duration>,
    handlers_available: bool,
    /// Whether nsqd only ever delivers inside the RDY window.
    faithful: bool,
    /// Σ max(wire, in_flight) after the previous step.
    last_on_wire: u64,
}

impl Model {
    fn new(max_in_flight: u32, faithful: bool) -> Self {
        let flow = FlowControl::new()
            .max_in_flight(max_in_flight)
            .backoff_multiplier(10 * MS);
        Self {
            policy: RdyPolicy::new(&flow),
            now: Instant::now(),
            rng: StdRng::seed_from_u64(7),
            conns: BTreeMap::new(),
            next_id: 0,
            max_in_flight,
            timer: None,
            handlers_available: true,
            faithful,
            last_on_wire: 0,
        }
    }

    fn pick(&self, index: usize) -> Option<u64> {
        let n = self.conns.len();
        (n > 0).then(|| *self.conns.keys().nth(index % n).unwrap_or(&0))
    }

    /// `caller`: the connection whose event it was; it writes its RDY at once, the others
    /// are told through their mailboxes.
    fn apply(&mut self, actions: Vec<RdyAction>, caller: Option<u64>) -> Result<(), TestCaseError> {
        for action in actions {
            match action {
                RdyAction::SendRdy { conn, count } => {
                    let c = self.conns.get_mut(&conn.0);
                    let c = c.ok_or_else(|| TestCaseError::fail(format!("RDY to gone {conn}")))?;
                    prop_assert_ne!(c.rdy, count, "duplicate RDY {} on {}", count, conn);
                    prop_assert!(
                        count <= c.max_rdy,
                        "RDY {} over max_rdy_count {}",
                        count,
                        c.max_rdy
                    );
                    c.rdy = count;
                    if caller == Some(conn.0) {
                        c.wire = count;
                    } else {
                        c.told = true;
                    }
                }
                RdyAction::StartBackoffTimer(pause) => {
                    prop_assert!(self.timer.is_none(), "second backoff timer");
                    self.timer = Some(pause);
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let mut caller = None;
        let actions = match *op {
            Op::Connect { max_rdy } => {
                self.next_id += 1;
                let id = self.next_id;
                self.conns.insert(
                    id,
                    ModelConn {
                        max_rdy,
                        ..ModelConn::default()
                    },
                );
                caller = Some(id);
                self.policy.connected(LinkId(id), max_rdy, now)
            }
            Op::Disconnect(i) => match self.pick(i) {
                Some(id) => {
                    self.conns.remove(&id);
                    self.policy.disconnected(LinkId(id), now)
                }
                None => Vec::new(),
            },
            Op::Lose(i) => match self.pick(i) {
                Some(id) => {
                    let c = self.conns.get_mut(&id).unwrap();
                    if c.in_flight == 0 {
                        self.conns.remove(&id);
                    } else {
                        c.lost = true;
                        c.rdy = 0;
                        c.wire = 0;
                        c.told = false;
                        c.max_rdy = 0;
                    }
                    self.policy.lost(LinkId(id), now)
                }
                None => Vec::new(),
            },
            Op::SetMaxInFlight(n) => {
                self.max_in_flight = n;
                self.policy.set_max_in_flight(n, now)
            }
            Op::HandlersAvailable(available) => {
                self.handlers_available = available;
                self.policy.set_handlers_available(available, now)
            }
            Op::Receive(i) | Op::LateReceive(i) => {
                let late = matches!(op, Op::LateReceive(_));
                let Some(id) = self.pick(i) else {
                    return Ok(());
                };
                let c = self.conns.get_mut(&id).unwrap();
                if c.lost || (c.in_flight >= c.wire && !late) {
                    return Ok(());
                }
                c.in_flight += 1;
                caller = Some(id);
                let actions = self.policy.message_received(LinkId(id), now);
                if self.faithful {
                    // Above max_in_flight only while a lowered max_in_flight is not yet
                    // written everywhere (nsqd still acts on the RDY it read).
                    let total: u64 = self.conns.values().map(|c| u64::from(c.in_flight)).sum();
                    let bound = self.last_on_wire.max(u64::from(self.max_in_flight));
                    prop_assert!(total <= bound, "{} in flight > {}", total, bound);
                }
                actions
            }
            Op::Done(i, outcome) => {
                let Some(id) = self.pick(i) else {
                    return Ok(());
                };
                let c = self.conns.get_mut(&id).unwrap();
                if c.in_flight == 0 {
                    return Ok(());
                }
                c.in_flight -= 1;
                if c.lost && c.in_flight == 0 {
                    self.conns.remove(&id);
                }
                caller = Some(id);
                self.policy
                    .message_done(LinkId(id), outcome, now, &mut self.rng)
            }
            Op::Write(i) => {
                let Some(id) = self.pick(i) else {
                    return Ok(());
                };
                let c = self.conns.get_mut(&id).unwrap();
                if !std::mem::take(&mut c.told) {
                    return Ok(());
                }
                let actions = self.policy.written(LinkId(id), now);
                self.apply(actions, Some(id))?;
                // The connection writes the latest decision (`Flow::rdy_due`).
                let c = self.conns.get_mut(&id).unwrap();
                c.wire = c.rdy;
                Vec::new()
            }
            Op::FireTimer => match self.timer.take() {
                Some(pause) => {
                    self.now += pause;
                    self.policy.backoff_timer_fired(self.now)
                }
                None => Vec::new(),
            },
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                self.policy.tick(self.now)
            }
            Op::Tick => self.policy.tick(now),
        };
        self.apply(actions, caller)?;
        self.check()
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let total_rdy: u64 = self.conns.values().map(|c| u64::from(c.rdy)).sum();
        let in_flight: u64 = self.conns.values().map(|c| u64::from(c.in_flight)).sum();
        for (id, c) in &self.conns {
            prop_assert_eq!(self.policy.rdy(LinkId(*id)), c.rdy);
            prop_assert_eq!(self.policy.in_flight(LinkId(*id)), c.in_flight);
        }
        prop_assert_eq!(self.policy.total_rdy(), total_rdy);
        // (a) never more RDY in total than max_in_flight.
        prop_assert!(total_rdy <= u64::from(self.max_in_flight));
        prop_assert_eq!(self.policy.backoff_timer_running(), self.timer.is_some());

        let level = self.policy.backoff_level();
        // (f) no handler available: RDY 0 everywhere, max_in_flight kept.
        if !self.handlers_available {
            prop_assert_eq!(total_rdy, 0);
        }
        prop_assert_eq!(self.policy.max_in_flight(), self.max_in_flight);
        let capacity = match (self.timer.is_some() || !self.handlers_available, level > 0) {
            (true, _) => 0,
            (false, true) => self.max_in_flight.min(1),
            (false, false) => self.max_in_flight,
        };
        // (d) RDY 0 everywhere during the pause; at most the one test RDY until backoff ends.
        if level > 0 {
            prop_assert!(total_rdy <= 1, "{} RDY in backoff", total_rdy);
        }
        if self.timer.is_some() {
            prop_assert_eq!(total_rdy, 0);
        }
        if !self.faithful {
            return Ok(());
        }
        // (w) What nsqd may send, link by link, is max(RDY it read, in flight): its sum never
        // grows past the capacity, though links write their RDY at different times. (It may
        // stay above for a while when the capacity drops, until the lowers are written.)
        let on_wire: u64 = self
            .conns
            .values()
            .map(|c| u64::from(c.wire.max(c.in_flight)))
            .sum();
        if on_wire > self.last_on_wire {
            prop_assert!(
                on_wire <= u64::from(capacity),
                "Σ max(RDY on the wire, in flight) rose from {} to {} > capacity {}: {:?}",
                self.last_on_wire,
                on_wire,
                capacity,
                self.conns
            );
        }
        self.last_on_wire = on_wire;
        // (e) while nsqd may send anywhere, the worst case stays within the capacity.
        let occupancy: u64 = self
            .conns
            .values()
            .map(|c| u64::from(c.rdy.max(c.in_flight)))
            .sum();
        if self.conns.values().any(|c| c.in_flight < c.rdy) {
            prop_assert!(
                occupancy <= u64::from(capacity),
                "occupancy {} > {}",
                occupancy,
                capacity
            );
        }
        // Never stuck: with nothing in flight the whole capacity is handed out, so a backoff
        // always has its test RDY somewhere and a pause always ends.
        if in_flight == 0 && !self.conns.is_empty() && self.conns.values().all(|c| !c.told) {
            let caps: u64 = self
                .conns
                .values()
                .filter(|c| !c.lost)
                .map(|c| u64::from(c.max_rdy))
                .sum();
            prop_assert_eq!(total_rdy, caps.min(u64::from(capacity)));
        }
        Ok(())
    }
}

proptest! {
    /// Invariants (a)-(e) and "never stuck at RDY 0" after every event, nsqd faithful.
    #[test]
    fn invariants_hold_after_every_event(
        max_in_flight in 0u32..=10,
        ops in proptest::collection::vec(op(false), 1..250),
    ) {
        let mut model = Model::new(max_in_flight, true);
        for op in &ops {
            model.step(op)?;
        }
    }

    /// With nsqd delivering after RDY was lowered (the unavoidable race), RDY bookkeeping
    /// still holds: (a)-(d), no duplicates, no panics.
    #[test]
    fn rdy_invariants_survive_late_deliveries(
        max_in_flight in 0u32..=10,
        ops in proptest::collection::vec(op(true), 1..250),
    ) {
        let mut model = Model::new(max_in_flight, false);
        for op in &ops {
            model.step(op)?;
        }
    }
}

proptest! {
    // Each case simulates hundreds of ticks.
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// (f) Low-RDY liveness: however messages arrive, with handlers answering within
    /// `handler_ticks` ticks and no backoff, every connection gets RDY within the bound.
    #[test]
    fn every_connection_gets_rdy_within_the_bound(
        conns in 2usize..=12,
        slots_seed in any::<u32>(),
        handler_ticks in 0u32..=3,
        seed in any::<u64>(),
    ) {
        let slots = 1 + slots_seed % (conns as u32 - 1);
        check_liveness(conns, slots, handler_ticks, seed)?;
    }
}

/// The bound, in ticks, with `T` the tick, `L = ceil(low_rdy_timeout / T)` and `D` the
/// handler time in ticks: a holder gives up its slot at the latest at the L-th tick after
/// the grant; its last message is answered D ticks later, which re-grants the slot at once
/// to the longest-waiting connection that can use it. So within any L + D + 1 ticks every
/// slot is granted at least once. A waiting connection can use a slot D + 1 ticks after it
/// lost its own (its message answered), and has at most n - 1 connections ahead of it, so
/// it is served within D + 1 + ceil(n / slots) × (L + D + 1) ticks.
fn liveness_bound(conns: usize, slots: u32, handler_ticks: u32, flow: &FlowControl) -> u64 {
    let tick = flow.rdy_redistribute_interval.as_millis();
    let held = u64::try_from(flow.low_rdy_timeout.as_millis().div_ceil(tick)).unwrap();
    let d = u64::from(handler_ticks);
    let rounds = (conns as u64).div_ceil(u64::from(slots));
    d + 1 + rounds * (held + d + 1)
}

fn check_liveness(
    conns: usize,
    slots: u32,
    handler_ticks: u32,
    seed: u64,
) -> Result<(), TestCaseError> {
    let flow = FlowControl::new().max_in_flight(slots);
    let bound = liveness_bound(conns, slots, handler_ticks, &flow);
    let tick = flow.rdy_redistribute_interval;
    let mut policy = RdyPolicy::new(&flow);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = Instant::now();
    let mut rdy = vec![0u32; conns];
    // Per connection: the tick each in-flight message arrived in.
    let mut in_flight: Vec<VecDeque<u64>> = vec![VecDeque::new(); conns];
    let mut waited = vec![0u64; conns];
    // Some nsqd are busy, some idle, some alternate: "whatever the others do".
    let busy: Vec<f64> = (0..conns)
        .map(|_| [0.0, 0.3, 1.0][rng.random_range(0..3)])
        .collect();

    for i in 0..conns {
        let actions = policy.connected(LinkId(i as u64), 2500, now);
        settle(&mut policy, &mut rdy, actions, Some(i as u64), now);
    }
    let start = now;
    for t in 0..(bound * 4).max(200) {
        let interval_start = start + tick * u32::try_from(t).unwrap();
        let mut offsets: Vec<Duration> = (0..rng.random_range(0..3 * conns))
            .map(|_| Duration::from_micros(rng.random_range(0..50_000)))
            .collect();
        offsets.sort_unstable();
        for offset in offsets {
            now = interval_start + offset;
            let i = rng.random_range(0..conns);
            let arrives = rng.random_bool(busy[i]);
            if arrives && (in_flight[i].len() as u32) < rdy[i] {
                in_flight[i].push_back(t);
                let actions = policy.message_received(LinkId(i as u64), now);
                settle(&mut policy, &mut rdy, actions, Some(i as u64), now);
            } else if !in_flight[i].is_empty() && rng.random_bool(0.5) {
                in_flight[i].pop_front();
                let done = policy.message_done(LinkId(i as u64), Outcome::Finished, now, &mut rng);
                settle(&mut policy, &mut rdy, done, Some(i as u64), now);
            }
        }
        // Handlers answer within `handler_ticks` ticks.
        for (i, messages) in in_flight.iter_mut().enumerate() {
            while messages
                .front()
                .is_some_and(|arrived| t - arrived >= u64::from(handler_ticks))
            {
                messages.pop_front();
                let done = policy.message_done(LinkId(i as u64), Outcome::Finished, now, &mut rng);
                settle(&mut policy, &mut rdy, done, Some(i as u64), now);
            }
        }
        now = interval_start + tick;
        let actions = policy.tick(now);
        settle(&mut policy, &mut rdy, actions, None, now);
        prop_assert!(!policy.in_backoff());
        for i in 0..conns {
            waited[i] = if rdy[i] > 0 { 0 } else { waited[i] + 1 };
            prop_assert!(
                waited[i] <= bound,
                "conn {} waited {} ticks > bound {} ({} conns, {} slots, D {})",
                i,
                waited[i],
                bound,
                conns,
                slots,
                handler_ticks
            );
        }
    }
    Ok(())
}
