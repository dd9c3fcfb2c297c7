//! Hardening against bad input and misuse (issue 10): one bad nsqlookupd entry does not blank
//! discovery, errors name the nsqd and arrive at once, `start()` outside a System is an error,
//! secrets stay off plain HTTP and out of logs, and learned server limits.

#[path = "support/consumer.rs"]
mod support;

use std::time::{Duration, Instant};

use actix_nsq::{
    testing::{TestLookupd, TestNsqd},
    Consumer, ConsumerEvent, Error, Producer, ProtocolError,
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

#[actix_rt::test]
async fn a_closed_port_fails_a_publish_at_once_naming_the_nsqd() {
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    nsqd.kill().unwrap();
    let producer = Producer::builder()
        .nsqd(&addr)
        .request_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let started = Instant::now();
    let err = producer.publish("events", "x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    match &err {
        Error::Connect { addr: a, source } => {
            assert_eq!(a, &addr);
            assert!(matches!(**source, Error::Io(_)), "{err}");
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("refused"), "{text}");
}

#[actix_rt::test]
async fn nsqds_http_port_is_named_as_such_at_once() {
    let nsqd = TestNsqd::start().unwrap();
    let http = nsqd.http_addr().to_string();
    let producer = Producer::builder()
        .nsqd(&http)
        .request_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let started = Instant::now();
    let err = producer.publish("events", "x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    match &err {
        Error::Connect { source, .. } => assert!(
            matches!(&**source, Error::Protocol(ProtocolError::HttpPort { addr }) if *addr == http),
            "{err}"
        ),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("HTTP port"), "{err}");
}
