//! Exact command sequences: go-nsq's `mock_test.go` consumer tests and pynsq's RDY and
//! backoff tests, replayed against the pure policy.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::{Harness, MS};
use crate::rdy::{FlowControl, LinkId, RdyAction};

fn go_nsq_config(max_in_flight: u32) -> FlowControl {
    FlowControl::new()
        .max_in_flight(max_in_flight)
        .backoff_multiplier(10 * MS)
}

/// go-nsq `TestConsumerBackoff`.
#[test]
fn consumer_backoff() {
    let mut h = Harness::new(go_nsq_config(5));
    h.connect(1);
    for _ in 0..3 {
        h.receive(1);
        h.finish(1);
    }
    h.receive(1);
    h.fail(1);
    assert_eq!((h.timer, h.policy.backoff_level()), (Some(20 * MS), 1));
    h.fire();
    h.receive(1);
    h.fail(1);
    assert_eq!((h.timer, h.policy.backoff_level()), (Some(40 * MS), 2));
    h.fire();
    h.receive(1);
    h.finish(1);
    assert_eq!((h.timer, h.policy.backoff_level()), (Some(20 * MS), 1));
    h.fire();
    h.receive(1);
    h.finish(1);
    assert_eq!((h.timer, h.policy.backoff_level()), (None, 0));
    h.receive(1);
    h.finish(1);
    assert_eq!(
        h.wire(1),
        [
            "RDY 5", "FIN", "FIN", "FIN", "RDY 0", "REQ", "RDY 1", "RDY 0", "REQ", "RDY 1",
            "RDY 0", "FIN", "RDY 1", "RDY 5", "FIN", "FIN",
        ]
    );
}

/// go-nsq `TestConsumerRequeueNoBackoff`: a requeue without backoff keeps the level but
/// restarts the window.
#[test]
fn consumer_requeue_no_backoff() {
    let mut h = Harness::new(go_nsq_config(1));
    h.connect(1);
    h.receive(1);
    h.fail(1);
    h.fire();
    h.receive(1);
    h.requeue_no_backoff(1);
    assert_eq!((h.timer, h.policy.backoff_level()), (Some(20 * MS), 1));
    h.fire();
    h.receive(1);
    h.finish(1);
    assert!(!h.policy.in_backoff());
    assert_eq!(
        h.wire(1),
        ["RDY 1", "RDY 0", "REQ", "RDY 1", "RDY 0", "REQ", "RDY 1", "FIN"]
    );
}

/// go-nsq `TestConsumerBackoffDisconnect`: the connection holding the test RDY dies; its
/// replacement gets RDY 1 at once, then the full share after a success.
#[test]
fn consumer_backoff_disconnect() {
    let mut h = Harness::new(go_nsq_config(5));
    h.connect(1);
    h.receive(1);
    h.finish(1);
    h.receive(1);
    h.fail(1);
    h.fire();
    h.receive(1);
    h.fail(1);
    h.fire();
    h.receive(1);
    h.finish(1);
    h.fire();
    assert_eq!(
        h.wire(1),
        [
            "RDY 5", "FIN", "RDY 0", "REQ", "RDY 1", "RDY 0", "REQ", "RDY 1", "RDY 0", "FIN",
            "RDY 1"
        ]
    );
    h.disconnect(1);
    assert_eq!(h.policy.total_rdy(), 0);

    h.connect(2);
    h.receive(2);
    h.finish(2);
    h.receive(2);
    h.finish(2);
    assert_eq!(h.wire(2), ["RDY 1", "RDY 5", "FIN", "FIN"]);
}

/// A connection leaves during the backoff pause and a new one joins: it stays at RDY 0 until
/// the timer fires, then gets the test RDY, then its full share.
#[test]
fn backoff_disconnect_and_join_during_the_pause() {
    let mut h = Harness::new(go_nsq_config(5));
    h.connect(1);
    h.receive(1);
    h.fail(1);
    h.disconnect(1);
    h.connect(2);
    assert_eq!(
        h.wire(2),
        Vec::<&str>::new(),
        "nothing while the timer runs"
    );
    h.fire();
    assert_eq!(h.wire(2), ["RDY 1"]);
    h.receive(2);
    h.finish(2);
    assert_eq!(h.wire(2), ["RDY 1", "RDY 5", "FIN"]);
}

/// pynsq `test_backoff_conns_disconnect`, go-nsq PR #106/#127: whenever the connection
/// holding the test RDY goes away, another one gets it at once; a consumer in backoff never
/// sits at RDY 0 with nothing in flight.
#[test]
fn test_rdy_survives_its_holder_disconnecting() {
    let mut h = Harness::new(go_nsq_config(5));
    for id in 1..=3 {
        h.connect(id);
    }
    h.receive(1);
    h.fail(1);
    h.fire();
    let mut left: Vec<u64> = vec![1, 2, 3];
    while left.len() > 1 {
        let holders: Vec<u64> = left.iter().copied().filter(|id| h.rdy(*id) > 0).collect();
        assert_eq!(holders.len(), 1, "exactly one test RDY among {left:?}");
        h.disconnect(holders[0]);
        left.retain(|id| *id != holders[0]);
    }
    assert_eq!(h.rdy(left[0]), 1);
    h.disconnect(left[0]);
    h.connect(4);
    assert_eq!(h.wire(4), ["RDY 1"]);
    assert_eq!(h.policy.backoff_level(), 1);
}

/// With nobody to test the waters when the timer fires, the test RDY goes to the first
/// connection that appears (go-nsq re-arms a 1 s timer instead).
#[test]
fn backoff_fires_with_no_connection() {
    let mut h = Harness::new(go_nsq_config(5));
    h.connect(1);
    h.receive(1);
    h.fail(1);
    h.disconnect(1);
    h.fire();
    assert_eq!(h.timer, None);
    h.connect(2);
    assert_eq!(h.wire(2), ["RDY 1"]);
}

/// go-nsq `TestConsumerPause`.
#[test]
fn consumer_pause() {
    let mut h = Harness::new(go_nsq_config(5));
    h.connect(1);
    h.receive(1);
    h.finish(1);
    h.set_max_in_flight(0);
    h.set_max_in_flight(5);
    assert_eq!(h.wire(1), ["RDY 5", "FIN", "RDY 0", "RDY 5"]);
}

/// go-nsq `ConnectToNSQD`: a new connection first lowers the existing ones, then takes what
/// fits. The remainder of an uneven split goes to the oldest connections.
#[test]
fn new_connection_throttles_down_existing_ones() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(5));
    h.connect(1);
    h.connect(2);
    assert_eq!(h.wire(1), ["RDY 5", "RDY 3"]);
    assert_eq!(h.wire(2), ["RDY 2"]);
    h.connect(3);
    assert_eq!(h.rdys([1, 2, 3]), [2, 2, 1]);
    h.disconnect(1);
    assert_eq!(h.rdys([2, 3]), [3, 2], "the others get the share back");
}

/// With the old connection's messages still in flight, the new one waits for them instead of
/// pushing the in-flight total over `max_in_flight`.
#[test]
fn new_connection_waits_for_in_flight_slots() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(4));
    h.connect(1);
    for _ in 0..4 {
        h.receive(1);
    }
    h.connect(2);
    assert_eq!(h.rdys([1, 2]), [2, 0]);
    h.finish(1);
    assert_eq!(h.rdys([1, 2]), [2, 1]);
    h.finish(1);
    assert_eq!(h.rdys([1, 2]), [2, 2]);
    assert_eq!(h.wire(2), ["RDY 1", "RDY 2"]);
}

/// nsqd's `max_rdy_count` caps a connection; the others take what it cannot.
#[test]
fn max_rdy_count_caps_and_the_rest_goes_elsewhere() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(100));
    h.connect_capped(1, 10);
    h.connect_capped(2, 2500);
    h.connect_capped(3, 30);
    assert_eq!(h.rdys([1, 2, 3]), [10, 60, 30]);
}

/// pynsq `test_rdy_set_max_in_flight`: after messages flow, the whole new budget is in use.
#[test]
fn max_in_flight_changes() {
    for (old, new) in [(8, 12), (3, 12), (2, 3), (12, 8), (12, 3), (3, 2)] {
        let mut h = Harness::new(FlowControl::new().max_in_flight(old));
        for id in 1..=4 {
            h.connect(id);
        }
        for id in 1..=4 {
            if h.rdy(id) > 0 {
                h.receive(id);
                h.finish(id);
            }
        }
        h.set_max_in_flight(new);
        assert!(h.policy.total_rdy() <= u64::from(new));
        h.tick_after(Duration::from_secs(1));
        assert_eq!(h.policy.total_rdy(), u64::from(new), "{old} -> {new}");
    }
}

/// pynsq `test_rdy_disable_enable`: pausing holds everything at 0, even new connections.
#[test]
fn pause_holds_new_connections_and_resume_gives_full_shares() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(10));
    for id in 1..=4 {
        h.connect(id);
    }
    h.receive(1);
    h.set_max_in_flight(0);
    h.connect(5);
    h.finish(1);
    assert_eq!(h.policy.total_rdy(), 0);
    h.set_max_in_flight(10);
    assert_eq!(h.rdys(1..=5), [2, 2, 2, 2, 2]);
}

/// pynsq `test_rdy_disable_enable_in_backoff`: paused when the timer fires, the test RDY
/// waits for the resume.
#[test]
fn pause_during_backoff() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(10));
    h.connect(1);
    h.connect(2);
    h.receive(1);
    h.set_max_in_flight(0);
    h.fail(1);
    h.fire();
    assert_eq!(h.policy.total_rdy(), 0);
    h.set_max_in_flight(10);
    assert_eq!(h.policy.total_rdy(), 1);
}

/// pynsq `test_rdy_complete_backoff`: after backoff, the whole budget comes back.
#[test]
fn complete_backoff_restores_the_budget() {
    for (conns, max_in_flight) in [(5, 10), (5, 4)] {
        let mut h = Harness::new(FlowControl::new().max_in_flight(max_in_flight));
        for id in 1..=conns {
            h.connect(id);
        }
        h.receive(1);
        h.fail(1);
        assert_eq!(h.policy.total_rdy(), 0);
        h.fire();
        assert_eq!(h.policy.total_rdy(), 1);
        let probe = (1..=conns).find(|id| h.rdy(*id) == 1).unwrap();
        h.receive(probe);
        h.finish(probe);
        assert_eq!(h.policy.total_rdy(), u64::from(max_in_flight));
    }
}

/// pynsq `test_rdy_redistribution_idle_conns_lose_rdy` (with our timeouts).
#[test]
fn idle_connections_lose_rdy_to_waiting_ones() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(2));
    for id in 1..=3 {
        h.connect(id);
    }
    assert_eq!(h.rdys(1..=3), [1, 1, 0]);
    h.receive(1);
    h.finish(1);
    h.tick_after(240 * MS);
    assert_eq!(h.rdys(1..=3), [1, 1, 0], "not idle yet");
    h.tick_after(20 * MS);
    // Both were idle for 250 ms, but one waiting connection needs only one slot: the
    // longest holder (the older one, on a tie) gives way.
    assert_eq!(h.rdys(1..=3), [0, 1, 1]);
}

/// pynsq `test_rdy_redistribution_doesnt_reallocate_rdy_in_use`: a connection that gave up
/// RDY keeps its slot until its message is done.
#[test]
fn released_slot_waits_for_the_message_in_flight() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(1));
    h.connect(1);
    h.connect(2);
    h.receive(1);
    h.tick_after(Duration::from_secs(1));
    // Conn 1 held its RDY past low_rdy_timeout and gives it up, but its message is in flight.
    assert_eq!(h.rdys([1, 2]), [0, 0]);
    h.finish(1);
    assert_eq!(h.rdys([1, 2]), [0, 1]);
    assert_eq!(h.wire(1), ["RDY 1", "RDY 0", "FIN"]);
}

/// pynsq `test_rdy_redistribution_idle_conns_lose_rdy_in_backoff` and
/// `..._doesnt_reallocate_rdy_in_use_in_backoff`: the test RDY moves off an idle connection,
/// but not while another message is still in flight.
#[test]
fn test_rdy_moves_off_idle_connections() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(2));
    for id in 1..=3 {
        h.connect(id);
    }
    h.receive(1);
    h.fail(1);
    h.fire();
    let probe = (1..=3).find(|id| h.rdy(*id) == 1).unwrap();
    h.tick_after(300 * MS);
    let next = (1..=3).find(|id| h.rdy(*id) == 1).unwrap();
    assert_ne!(probe, next);
    assert_eq!(h.policy.total_rdy(), 1);

    let mut h = Harness::new(FlowControl::new().max_in_flight(2));
    for id in 1..=3 {
        h.connect(id);
    }
    h.receive(1);
    h.receive(2);
    h.fail(1);
    h.fire();
    assert_eq!(
        h.policy.total_rdy(),
        0,
        "conn 2's message takes the only backoff slot"
    );
    h.tick_after(300 * MS);
    assert_eq!(h.policy.total_rdy(), 0);
    h.finish(2);
    assert_eq!(
        h.policy.total_rdy(),
        2,
        "its success ends backoff: both slots are back"
    );
}

/// pynsq `test_backoff_many_conns`: 5 connections, random failures and successes on the
/// connection holding the test RDY; every failure or success is RDY 0 (only where RDY was
/// not already 0) and a pause; at the end every connection is back to its share.
#[test]
fn backoff_many_conns() {
    let mut h = Harness::new(go_nsq_config(5).max_backoff_duration(Duration::from_secs(120)));
    for id in 1..=5 {
        h.connect(id);
    }
    assert_eq!(h.rdys(1..=5), [1, 1, 1, 1, 1]);
    let mut coin = rand::rngs::StdRng::seed_from_u64(3);
    let mut level = 0u32;
    let mut probe = 1;
    for round in 0..200 {
        let draining = round >= 50;
        if draining && level == 0 {
            break;
        }
        if draining && coin.random_bool(0.2) {
            // Force the probe idle: the test RDY moves on round-robin.
            h.tick_after(300 * MS);
            let holders: Vec<u64> = (1..=5).filter(|id| h.rdy(*id) > 0).collect();
            assert_eq!(holders.len(), 1);
            assert_ne!(holders[0], probe);
            probe = holders[0];
            continue;
        }
        let before: Vec<u32> = h.rdys(1..=5);
        let sent_before = h.wire.values().map(Vec::len).sum::<usize>();
        h.receive(probe);
        let fail = !draining && (level < 2 || coin.random_bool(0.7));
        if fail {
            h.fail(probe);
            level = (level + 1).min(13); // 10 ms × 2^14 > 120 s
        } else {
            h.finish(probe);
            level -= 1;
        }
        assert_eq!(h.policy.backoff_level(), level);
        let sent = h.wire.values().map(Vec::len).sum::<usize>() - sent_before;
        if level == 0 {
            assert_eq!(h.rdys(1..=5), [1, 1, 1, 1, 1]);
            // RDY 1 where RDY was 0 (every conn but the probe), then the FIN.
            assert_eq!(sent, 4 + 1);
            break;
        }
        assert_eq!(h.rdys(1..=5), [0; 5], "RDY 0 everywhere during the pause");
        assert_eq!(
            sent,
            before.iter().filter(|r| **r > 0).count() + 1,
            "no duplicate RDY 0"
        );
        h.fire();
        let holders: Vec<u64> = (1..=5).filter(|id| h.rdy(*id) > 0).collect();
        assert_eq!(holders.len(), 1, "exactly one test RDY");
        probe = holders[0];
    }
    assert_eq!(level, 0, "the drain must end backoff");
    for id in 1..=5 {
        assert_no_duplicate_rdy(&h.wire(id));
    }
}

fn assert_no_duplicate_rdy(wire: &[&str]) {
    let rdys: Vec<&&str> = wire.iter().filter(|w| w.starts_with("RDY")).collect();
    assert_ne!(
        rdys.first(),
        Some(&&"RDY 0"),
        "nsqd starts at RDY 0: {wire:?}"
    );
    assert!(
        rdys.windows(2).all(|w| w[0] != w[1]),
        "duplicate RDY in {wire:?}"
    );
}

#[test]
fn starved_and_tick_interval() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(20));
    h.connect(1);
    assert!(!h.policy.is_starved());
    for _ in 0..16 {
        h.receive(1);
    }
    assert!(!h.policy.is_starved(), "16 < 85% of 20");
    h.receive(1);
    assert!(h.policy.is_starved());
    assert_eq!(h.policy.tick_interval(), None, "normal mode needs no ticks");

    h.set_max_in_flight(1);
    h.connect(2);
    assert_eq!(
        h.policy.tick_interval(),
        Some(FlowControl::DEFAULT_RDY_REDISTRIBUTE_INTERVAL)
    );
    h.set_max_in_flight(0);
    assert_eq!(h.policy.tick_interval(), None);
}

#[test]
fn spurious_timer_and_unknown_connections_are_ignored() {
    let mut h = Harness::new(FlowControl::new().max_in_flight(3));
    assert_eq!(h.policy.backoff_timer_fired(h.now), []);
    assert_eq!(h.policy.message_received(LinkId(9), h.now), []);
    assert_eq!(h.policy.disconnected(LinkId(9), h.now), []);
    h.connect(1);
    assert_eq!(
        h.policy.connected(LinkId(1), 2500, h.now),
        [RdyAction::SendRdy {
            conn: LinkId(1),
            count: 3
        }]
    );
}

/// A link dies while two of its messages are still being handled: the reconnected link gets
/// RDY only as those handlers finish, so no more than `max_in_flight` messages are ever being
/// handled at once (go-nsq hands the new link its full share at once).
#[test]
fn lost_link_keeps_its_slots_until_its_handlers_finish() {
    let mut h = Harness::new(go_nsq_config(2));
    h.connect(1);
    h.receive(1);
    h.receive(1);
    h.lose(1);
    h.connect(2);
    assert!(h.wire(2).is_empty(), "no slot free yet: {:?}", h.wire(2));
    h.finish(1);
    assert_eq!(h.wire(2), ["RDY 1"]);
    h.finish(1);
    assert_eq!(h.wire(2), ["RDY 1", "RDY 2"]);
    assert_eq!(
        h.wire(1),
        ["RDY 2", "FIN", "FIN"],
        "nothing is sent to the lost link"
    );
    assert_eq!(h.policy.total_rdy(), 2);
}

/// Handlers that never answer hold a lost link's slots only until `disconnected`, which the
/// actor calls once nsqd has requeued those messages (after `msg_timeout`).
#[test]
fn disconnected_releases_a_lost_links_slots() {
    let mut h = Harness::new(go_nsq_config(3));
    h.connect(1);
    h.receive(1);
    h.lose(1);
    h.connect(2);
    assert_eq!(h.wire(2), ["RDY 2"]);
    h.disconnect(1);
    assert_eq!(h.wire(2), ["RDY 2", "RDY 3"]);
}

/// No handler alive: RDY 0 everywhere while `max_in_flight` stays the user's, what is in
/// flight keeps its slots, and the normal split returns with the handlers.
#[test]
fn no_handler_available_pauses_without_touching_max_in_flight() {
    let mut h = Harness::new(go_nsq_config(4));
    h.connect(1);
    h.connect(2);
    h.receive(1);
    h.set_handlers_available(false);
    assert_eq!(h.rdys([1, 2]), [0, 0]);
    assert_eq!(h.policy.max_in_flight(), 4);
    assert_eq!(
        h.policy.tick_interval(),
        None,
        "nothing to rotate while paused"
    );
    h.connect(3);
    assert_eq!(h.rdy(3), 0, "a new link waits too");
    h.set_handlers_available(false);
    h.finish(1);
    assert_eq!(h.rdys([1, 2, 3]), [0, 0, 0]);
    assert_eq!(h.policy.backoff_level(), 0, "pausing is not a failure");
    h.set_handlers_available(true);
    assert_eq!(h.rdys([1, 2, 3]).iter().sum::<u32>(), 4);
    assert!(h.rdys([1, 2, 3]).iter().all(|&r| r >= 1));
    assert_eq!(h.wire(2), ["RDY 2", "RDY 0", "RDY 1"]);
}
