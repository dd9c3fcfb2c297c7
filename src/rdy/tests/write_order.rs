//! RDY moving between links while only the link whose event it is writes at once: a raise is
//! granted only from slots whose lower is already on the wire and whose messages are done.

use std::time::Instant;

use rand::{rngs::StdRng, SeedableRng};

use crate::rdy::{FlowControl, LinkId, Outcome, RdyAction, RdyPolicy};

fn rdy(conn: u64, count: u32) -> RdyAction {
    RdyAction::SendRdy {
        conn: LinkId(conn),
        count,
    }
}

fn policy(max_in_flight: u32) -> RdyPolicy {
    RdyPolicy::new(&FlowControl::new().max_in_flight(max_in_flight))
}

/// The bug seen on the wire: `RDY 2` on link 1, `RDY 1` on the new link 2 (its own, written
/// at once), then `RDY 1` on link 1 (through its mailbox): Σ 3 with max_in_flight 2.
#[test]
fn a_new_link_waits_until_the_old_one_wrote_its_lower() {
    let now = Instant::now();
    let mut p = policy(2);
    assert_eq!(p.connected(LinkId(1), 2500, now), [rdy(1, 2)]);
    // Link 2's event: only link 1's lower, for its mailbox; nothing for link 2 to write.
    assert_eq!(p.connected(LinkId(2), 2500, now), [rdy(1, 1)]);
    assert_eq!(p.rdy(LinkId(2)), 0);
    // Unrelated events meanwhile grant nothing: link 1 may still fill RDY 2.
    assert_eq!(p.tick(now), []);
    // Link 1 wrote RDY 1: its slot goes to link 2 (through link 2's mailbox).
    assert_eq!(p.written(LinkId(1), now), [rdy(2, 1)]);
    assert_eq!(
        p.written(LinkId(2), now),
        [],
        "a raise written frees nothing"
    );
    assert_eq!((p.rdy(LinkId(1)), p.rdy(LinkId(2))), (1, 1));
}

/// Two nsqd, max_in_flight 3: link 1 had RDY 3 and 3 messages in flight when link 2 came. Its
/// lower to 2 is written, but 3 handlers still run: link 2 gets its slot only when one is done.
#[test]
fn a_lowered_link_keeps_its_slots_until_its_messages_are_done() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    let mut p = policy(3);
    assert_eq!(p.connected(LinkId(1), 2500, now), [rdy(1, 3)]);
    for _ in 0..3 {
        assert_eq!(p.message_received(LinkId(1), now), []);
    }
    assert_eq!(p.connected(LinkId(2), 2500, now), [rdy(1, 2)]);
    assert_eq!(p.written(LinkId(1), now), [], "3 in flight on link 1");
    // The answer on link 1 frees the slot; link 1 writes nothing new, link 2 is told.
    assert_eq!(
        p.message_done(LinkId(1), Outcome::Finished, now, &mut rng),
        [rdy(2, 1)]
    );
}

/// A raise told to a link but not yet written is taken back when the capacity drops, so it
/// cannot reach the wire beside lowers that are not written yet either.
#[test]
fn an_unwritten_raise_is_taken_back_when_the_capacity_drops() {
    let now = Instant::now();
    let mut p = policy(4);
    assert_eq!(p.connected(LinkId(1), 2500, now), [rdy(1, 4)]);
    assert_eq!(p.connected(LinkId(2), 2500, now), [rdy(1, 2)]);
    assert_eq!(p.written(LinkId(1), now), [rdy(2, 2)]);
    // Before link 2 handles its mailbox, max_in_flight drops to 2: link 1 still has RDY 2 on
    // the wire until it writes its 1, so link 2 may not have any yet.
    assert_eq!(
        p.set_max_in_flight(2, now),
        [rdy(1, 1), rdy(2, 1), rdy(2, 0)]
    );
    // Link 2 handles its mailbox: RDY 0, which it already has (it writes nothing).
    assert_eq!(p.written(LinkId(2), now), []);
    // Link 1 writes its 1: link 2 gets the other slot.
    assert_eq!(p.written(LinkId(1), now), [rdy(2, 1)]);
    assert_eq!((p.rdy(LinkId(1)), p.rdy(LinkId(2))), (1, 1));
}
