//! Tests of the RDY policy with an injected clock and a seeded RNG: exact command sequences in
//! the spirit of go-nsq's `mock_test.go` and pynsq's `test_backoff.py`/`test_rdy.py`, property
//! tests over random event sequences, and simulated latency bounds.

mod latency;
mod props;
mod sequences;
mod write_order;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, SeedableRng};

use super::{FlowControl, LinkId, Outcome, RdyAction, RdyPolicy};

const MS: Duration = Duration::from_millis(1);

/// Drives a policy like the flow core and the connections would, and records what each
/// connection would have seen on the wire (`RDY n`, `FIN`, `REQ`), as go-nsq's mock nsqd
/// does. The link whose event it is writes its RDY at once; the others are told through
/// their mailboxes, delivered right after the event (and after the caller's FIN/REQ).
struct Harness {
    policy: RdyPolicy,
    now: Instant,
    rng: StdRng,
    wire: BTreeMap<u64, Vec<String>>,
    /// The RDY last written per connection (a connection never writes a duplicate).
    written: BTreeMap<u64, u32>,
    timer: Option<Duration>,
}

impl Harness {
    fn new(flow: FlowControl) -> Self {
        flow.validate().unwrap();
        Self {
            policy: RdyPolicy::new(&flow),
            now: Instant::now(),
            rng: StdRng::seed_from_u64(42),
            wire: BTreeMap::new(),
            written: BTreeMap::new(),
            timer: None,
        }
    }

    /// Writes `RDY count` on `id` unless it is already what nsqd has.
    fn write_rdy(&mut self, id: u64, count: u32) {
        if self.written.insert(id, count).unwrap_or(0) != count {
            self.wire
                .entry(id)
                .or_default()
                .push(format!("RDY {count}"));
        }
    }

    /// Carries out `actions` and delivers the mailbox messages they send.
    fn apply(&mut self, actions: Vec<RdyAction>, caller: Option<u64>) {
        let told = self.apply_now(actions, caller);
        self.deliver(told);
    }

    /// Writes the caller's RDY; returns the other connections told that theirs changed.
    fn apply_now(&mut self, actions: Vec<RdyAction>, caller: Option<u64>) -> Vec<u64> {
        let mut told = Vec::new();
        for action in actions {
            match action {
                RdyAction::SendRdy { conn, count } if Some(conn.0) == caller => {
                    self.write_rdy(conn.0, count);
                }
                RdyAction::SendRdy { conn, .. } => told.push(conn.0),
                RdyAction::StartBackoffTimer(pause) => {
                    assert!(
                        self.timer.is_none(),
                        "a second backoff timer while one runs"
                    );
                    self.timer = Some(pause);
                }
            }
        }
        told
    }

    /// Each told connection writes the RDY decided for it now, as a connection handling
    /// `SetRdy` does (`Flow::rdy_due`).
    fn deliver(&mut self, mut told: Vec<u64>) {
        while !told.is_empty() {
            let id = told.remove(0);
            let actions = self.policy.written(LinkId(id), self.now);
            let more = self.apply_now(actions, Some(id));
            if let Some(count) = self.policy.decided_rdy(LinkId(id)) {
                self.write_rdy(id, count);
            }
            told.extend(more);
        }
    }

    fn connect(&mut self, id: u64) {
        self.connect_capped(id, 2500);
    }

    fn connect_capped(&mut self, id: u64, max_rdy: u32) {
        self.wire.insert(id, Vec::new());
        self.written.insert(id, 0);
        let actions = self.policy.connected(LinkId(id), max_rdy, self.now);
        self.apply(actions, Some(id));
    }

    fn disconnect(&mut self, id: u64) {
        self.written.remove(&id);
        let actions = self.policy.disconnected(LinkId(id), self.now);
        self.apply(actions, None);
    }

    fn lose(&mut self, id: u64) {
        self.written.remove(&id);
        let actions = self.policy.lost(LinkId(id), self.now);
        self.apply(actions, None);
    }

    fn receive(&mut self, id: u64) {
        let rdy = self.written.get(&id).copied().unwrap_or(0);
        assert!(
            self.policy.in_flight(LinkId(id)) < rdy,
            "nsqd would not send on conn {id}: RDY {rdy} in flight {}",
            self.policy.in_flight(LinkId(id)),
        );
        let actions = self.policy.message_received(LinkId(id), self.now);
        self.apply(actions, Some(id));
    }

    fn done(&mut self, id: u64, outcome: Outcome) {
        let actions = self
            .policy
            .message_done(LinkId(id), outcome, self.now, &mut self.rng);
        // The RDY change first, then the FIN/REQ (nsq#404), then the other links' mailboxes.
        let told = self.apply_now(actions, Some(id));
        let word = if outcome == Outcome::Finished {
            "FIN"
        } else {
            "REQ"
        };
        self.wire.entry(id).or_default().push(word.to_owned());
        self.deliver(told);
    }

    fn finish(&mut self, id: u64) {
        self.done(id, Outcome::Finished);
    }

    fn fail(&mut self, id: u64) {
        self.done(id, Outcome::Requeued { backoff: true });
    }

    fn requeue_no_backoff(&mut self, id: u64) {
        self.done(id, Outcome::Requeued { backoff: false });
    }

    /// Lets the pending backoff timer run out and fire.
    fn fire(&mut self) {
        let pause = self.timer.take().expect("no backoff timer running");
        self.now += pause;
        let actions = self.policy.backoff_timer_fired(self.now);
        self.apply(actions, None);
    }

    fn set_max_in_flight(&mut self, n: u32) {
        let actions = self.policy.set_max_in_flight(n, self.now);
        self.apply(actions, None);
    }

    fn set_handlers_available(&mut self, available: bool) {
        let actions = self.policy.set_handlers_available(available, self.now);
        self.apply(actions, None);
    }

    fn tick_after(&mut self, elapsed: Duration) {
        self.now += elapsed;
        let actions = self.policy.tick(self.now);
        self.apply(actions, None);
    }

    fn wire(&self, id: u64) -> Vec<&str> {
        self.wire
            .get(&id)
            .map(|w| w.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn rdy(&self, id: u64) -> u32 {
        self.policy.rdy(LinkId(id))
    }

    fn rdys(&self, ids: impl IntoIterator<Item = u64>) -> Vec<u32> {
        ids.into_iter().map(|id| self.rdy(id)).collect()
    }
}

/// For simulations that track only the RDY per connection (indexed by id): writes the
/// caller's at once, then lets every told connection write its own (`Flow::rdy_due`), as the
/// flow core and the connections' mailboxes do.
fn settle(
    policy: &mut RdyPolicy,
    rdy: &mut [u32],
    actions: Vec<RdyAction>,
    caller: Option<u64>,
    now: Instant,
) {
    let mut pending = vec![(actions, caller)];
    while let Some((actions, caller)) = pending.pop() {
        for action in actions {
            if let RdyAction::SendRdy { conn, count } = action {
                let i = usize::try_from(conn.0).expect("small ids");
                if Some(conn.0) == caller {
                    rdy[i] = count;
                } else {
                    let more = policy.written(conn, now);
                    rdy[i] = policy.rdy(conn);
                    pending.push((more, Some(conn.0)));
                }
            }
        }
    }
}
