//! Hardening against bad input and misuse (issue 10): one bad nsqlookupd entry does not blank
//! discovery, errors name the nsqd and arrive at once, `start()` outside a System is an error,
//! secrets stay off plain HTTP and out of logs, and learned server limits.

#[path = "support/consumer.rs"]
mod support;

use actix_nsq::{
    testing::{TestLookupd, TestNsqd},
    Consumer, ConsumerEvent, Error,
};
use support::{eventually, Events};

#[actix_rt::test]
async fn one_bad_lookupd_entry_is_skipped_and_reported_the_others_consumed() {
    let nsqd = TestNsqd::start().unwrap();
    let lookupd = TestLookupd::start().unwrap();
    let port = nsqd.addr().port();
    // A good entry between two that nsqlookupd would never send.
    lookupd.set_lookup_answer(Some(format!(
        r#"{{"channels":[],"producers":[
            {{"broadcast_address":"127.0.0.1","tcp_port":70000,"http_port":1}},
            {{"broadcast_address":"127.0.0.1","tcp_port":{port},"http_port":1}},
            {{"broadcast_address":null,"tcp_port":{port}}}]}}"#
    )));
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .lookupd(lookupd.url())
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    nsqd.publish("events", "found").unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    let skipped = events.all().into_iter().find_map(|e| match e {
        ConsumerEvent::DiscoveryFailed {
            error: Error::SkippedProducers { skipped },
            ..
        } => Some(skipped),
        _ => None,
    });
    let skipped = skipped.expect("an event lists the skipped entries");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].reason.starts_with("tcp_port"), "{skipped:?}");
    assert!(
        skipped[1].reason.starts_with("broadcast_address"),
        "{skipped:?}"
    );
    assert!(events.any(|e| matches!(
        e,
        ConsumerEvent::Discovered { nsqd: found, .. } if found == &[nsqd.addr().to_string()]
    )));
    consumer.stop().await;
}
