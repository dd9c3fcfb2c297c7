//! Tests of the RDY policy with an injected clock and a seeded RNG: exact command sequences in
//! the spirit of go-nsq's `mock_test.go` and pynsq's `test_backoff.py`/`test_rdy.py`, property
//! tests over random event sequences, and simulated latency bounds.

mod latency;
mod props;
mod sequences;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, SeedableRng};

use super::{FlowControl, LinkId, Outcome, RdyAction, RdyPolicy};

const MS: Duration = Duration::from_millis(1);

/// Drives a policy like the coordinator actor would, and records what each connection would
/// have seen on the wire (`RDY n`, `FIN`, `REQ`), as go-nsq's mock nsqd does.
struct Harness {
    policy: RdyPolicy,
    now: Instant,
    rng: StdRng,
    wire: BTreeMap<u64, Vec<String>>,
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
            timer: None,
        }
    }

    fn apply(&mut self, actions: Vec<RdyAction>) {
        for action in actions {
            match action {
                RdyAction::SendRdy { conn, count } => {
                    self.wire
                        .entry(conn.0)
                        .or_default()
                        .push(format!("RDY {count}"));
                }
                RdyAction::StartBackoffTimer(pause) => {
                    assert!(
                        self.timer.is_none(),
                        "a second backoff timer while one runs"
                    );
                    self.timer = Some(pause);
                }
            }
        }
    }

    fn connect(&mut self, id: u64) {
        self.connect_capped(id, 2500);
    }

    fn connect_capped(&mut self, id: u64, max_rdy: u32) {
        self.wire.insert(id, Vec::new());
        let actions = self.policy.connected(LinkId(id), max_rdy, self.now);
        self.apply(actions);
    }

    fn disconnect(&mut self, id: u64) {
        let actions = self.policy.disconnected(LinkId(id), self.now);
        self.apply(actions);
    }

    fn lose(&mut self, id: u64) {
        let actions = self.policy.lost(LinkId(id), self.now);
        self.apply(actions);
    }

    fn receive(&mut self, id: u64) {
        assert!(
            self.policy.in_flight(LinkId(id)) < self.policy.rdy(LinkId(id)),
            "nsqd would not send on conn {id}: RDY {} in flight {}",
            self.policy.rdy(LinkId(id)),
            self.policy.in_flight(LinkId(id)),
        );
        let actions = self.policy.message_received(LinkId(id), self.now);
        self.apply(actions);
    }

    fn done(&mut self, id: u64, outcome: Outcome) {
        let actions = self
            .policy
            .message_done(LinkId(id), outcome, self.now, &mut self.rng);
        self.apply(actions);
        let word = if outcome == Outcome::Finished {
            "FIN"
        } else {
            "REQ"
        };
        self.wire.entry(id).or_default().push(word.to_owned());
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
        self.apply(actions);
    }

    fn set_max_in_flight(&mut self, n: u32) {
        let actions = self.policy.set_max_in_flight(n, self.now);
        self.apply(actions);
    }

    fn set_handlers_available(&mut self, available: bool) {
        let actions = self.policy.set_handlers_available(available, self.now);
        self.apply(actions);
    }

    fn tick_after(&mut self, elapsed: Duration) {
        self.now += elapsed;
        let actions = self.policy.tick(self.now);
        self.apply(actions);
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
