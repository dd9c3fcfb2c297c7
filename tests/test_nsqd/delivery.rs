//! How messages move: topics copy to every channel, a channel's consumers share it, RDY is a
//! window, pausing, sampling, ephemeral cleanup and the HTTP-like administration.

use std::time::Duration;

use actix_nsq::{protocol::Command, testing::TestNsqd};
use serde_json::json;

use crate::raw::{consumer, json_of, Raw, PATIENCE};

#[test]
fn multiple_consumer_v2_every_channel_gets_a_copy() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("multi", "ch1").unwrap();
    nsqd.create_channel("multi", "ch2").unwrap();
    let id = nsqd.publish("multi", "test body").unwrap();
    for channel in ["ch1", "ch2"] {
        let msg = consumer(nsqd.addr(), "multi", channel, 1).message();
        assert_eq!(
            (msg.id, &msg.body[..], msg.attempts),
            (id, &b"test body"[..], 1)
        );
    }
}

#[test]
fn consumers_of_one_channel_share_its_messages() {
    let nsqd = TestNsqd::start().unwrap();
    let mut a = consumer(nsqd.addr(), "shared", "ch", 1);
    let mut b = consumer(nsqd.addr(), "shared", "ch", 1);
    nsqd.publish("shared", "one").unwrap();
    nsqd.publish("shared", "two").unwrap();
    let (ma, mb) = (a.message(), b.message());
    assert_ne!(ma.id, mb.id);
    a.expect_quiet(Duration::from_millis(100));
    b.expect_quiet(Duration::from_millis(100));
}

#[test]
fn a_topic_without_channels_holds_its_messages() {
    let nsqd = TestNsqd::start().unwrap();
    for body in ["1", "2", "3"] {
        nsqd.publish("held", body).unwrap();
    }
    assert_eq!(nsqd.topic_depth("held"), 3);
    let mut c = consumer(nsqd.addr(), "held", "late", 3);
    let bodies: Vec<_> = (0..3).map(|_| c.message().body).collect();
    assert_eq!(bodies, ["1", "2", "3"]);
    assert_eq!(nsqd.topic_depth("held"), 0);
}

#[test]
fn rdy_is_a_window_not_a_counter() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "window", "ch", 2);
    for i in 0..5 {
        nsqd.publish("window", format!("m{i}")).unwrap();
    }
    let (first, _second) = (c.message(), c.message());
    c.expect_quiet(Duration::from_millis(150));
    assert_eq!(
        (nsqd.in_flight("window", "ch"), nsqd.depth("window", "ch")),
        (2, 3)
    );
    c.fin(first.id);
    assert_eq!(c.message().body, "m2");
    assert_eq!(nsqd.clients()[0].in_flight, 2);
}

#[test]
fn pausing_a_channel_stops_delivery() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "pause", "ch", 1);
    nsqd.publish("pause", "test body").unwrap();
    let msg = c.message();
    c.fin(msg.id);
    c.rdy(1);
    assert!(nsqd.pause_channel("pause", "ch"));
    nsqd.publish("pause", "test body2").unwrap();
    c.expect_quiet(Duration::from_millis(150));
    assert_eq!(nsqd.depth("pause", "ch"), 1);
    assert!(nsqd.channel_stats("pause", "ch").unwrap().paused);
    assert!(nsqd.unpause_channel("pause", "ch"));
    assert_eq!(c.message().body, "test body2");
}

#[test]
fn pausing_a_topic_holds_messages_for_its_channels() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "tpause", "ch", 1);
    assert!(nsqd.pause_topic("tpause"));
    nsqd.publish("tpause", "held").unwrap();
    c.expect_quiet(Duration::from_millis(100));
    assert_eq!(
        (nsqd.topic_depth("tpause"), nsqd.depth("tpause", "ch")),
        (1, 0)
    );
    assert!(nsqd.unpause_topic("tpause"));
    assert_eq!(c.message().body, "held");
}

#[test]
fn publishes_are_answered_in_order() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.publish("order", b"1");
    c.send_line(
        "MPUB order",
        Some(&[0, 0, 0, 2, 0, 0, 0, 1, b'2', 0, 0, 0, 1, b'3']),
    );
    c.send_line("DPUB order 0", Some(b"4"));
    c.send(&Command::Nop);
    c.publish("order", b"5");
    for _ in 0..4 {
        c.expect_ok();
    }
    let mut consumer = consumer(nsqd.addr(), "order", "ch", 10);
    let bodies: Vec<_> = (0..5).map(|_| consumer.message().body).collect();
    assert_eq!(bodies, ["1", "2", "3", "4", "5"]);
}

#[test]
fn ephemeral_channels_and_topics_go_with_their_last_client() {
    let nsqd = TestNsqd::start().unwrap();
    let a = consumer(nsqd.addr(), "durable", "tmp#ephemeral", 0);
    let b = consumer(nsqd.addr(), "gone#ephemeral", "tmp#ephemeral", 0);
    let c = consumer(nsqd.addr(), "durable", "tmp#ephemeral", 0);
    assert_eq!(nsqd.channels("durable"), ["tmp#ephemeral"]);
    drop(a);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        nsqd.channels("durable"),
        ["tmp#ephemeral"],
        "one client is left"
    );
    drop((b, c));
    assert!(nsqd.wait_until(PATIENCE, |n| n.topics() == ["durable"]
        && n.channels("durable").is_empty()));
}

#[test]
fn administration_mirrors_nsqd_http() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_topic("admin").unwrap();
    nsqd.create_channel("admin", "ch").unwrap();
    assert!(nsqd.create_topic("bad name").is_err());
    assert!(nsqd.publish("admin", "").is_err());
    nsqd.publish_deferred("admin", "later", Duration::from_secs(60))
        .unwrap();
    nsqd.publish("admin", "now").unwrap();
    assert_eq!(
        (nsqd.depth("admin", "ch"), nsqd.deferred("admin", "ch")),
        (1, 1)
    );
    assert!(nsqd.empty_channel("admin", "ch"));
    assert_eq!(
        (nsqd.depth("admin", "ch"), nsqd.deferred("admin", "ch")),
        (0, 0)
    );
    let mut c = consumer(nsqd.addr(), "admin", "ch", 1);
    assert!(nsqd.delete_channel("admin", "ch"));
    c.expect_closed();
    assert!(!nsqd.delete_channel("admin", "ch"));
    assert!(nsqd.delete_topic("admin"));
    assert!(nsqd.topics().is_empty());
}

#[test]
fn sample_rate_drops_what_it_skips() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    assert_eq!(
        json_of(c.identify_with(json!({"sample_rate": 1})))["sample_rate"],
        1
    );
    c.sub("sampled", "ch");
    c.rdy(200);
    for i in 0..200 {
        nsqd.publish("sampled", format!("{i}")).unwrap();
    }
    assert!(nsqd.wait_until(PATIENCE, |n| n.depth("sampled", "ch") == 0));
    // nsqd delivers when rand(100) <= sample_rate: about 2 in 100; the rest are dropped.
    let delivered = nsqd.in_flight("sampled", "ch");
    assert!(delivered < 100, "{delivered} of 200 delivered");
    assert_eq!(nsqd.clients()[0].message_count, delivered as u64);
}
