//! The soak's companions (issue 10.13): single faults pinned down one at a time. A producer on
//! a half-open link, a producer whose stream from nsqd goes out of step (unsolicited
//! responses), a consumer whose nsqlookupd goes down or slow, and whether a consumer ever
//! lets the RDY on the wire add up past `max_in_flight` while it moves RDY between links.

#[path = "support/consumer.rs"]
mod support;

use std::time::{Duration, Instant};

use actix_nsq::{
    protocol::{Frame, Response},
    testing::{LookupFault, TestLookupd, TestNsqd},
    ConnectionConfig, Consumer, Delivery, Error, Producer,
};
use support::{eventually, fast_reconnect, lines};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

fn producer(nsqd: &TestNsqd) -> Producer {
    Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .request_timeout(REQUEST_TIMEOUT)
        .connection(
            ConnectionConfig::new()
                .heartbeat_interval(Some(Duration::from_secs(1)))
                .reconnect(fast_reconnect()),
        )
        .start()
        .unwrap()
}

fn identifies(nsqd: &TestNsqd) -> usize {
    lines(nsqd)
        .iter()
        .filter(|l| l.starts_with("IDENTIFY"))
        .count()
}

/// Publishes until one is acknowledged (a link being replaced refuses a few); the error of
/// the last failure if none is within `within`.
async fn publish_soon(producer: &Producer, body: &str, within: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + within;
    loop {
        match producer.publish("events", body.to_owned()).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => actix_rt::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[actix_rt::test]
async fn a_half_open_link_fails_the_publish_in_time_and_the_producer_recovers() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = producer(&nsqd);
    producer.publish("events", "before").await.unwrap();
    // nsqd goes silent on the link without closing it: nothing read, nothing written.
    nsqd.set_half_open(true);
    let started = Instant::now();
    let err = actix_rt::time::timeout(10 * REQUEST_TIMEOUT, producer.publish("events", "during"))
        .await
        .expect("a publish on a half-open link must not hang")
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(_) | Error::OutcomeUnknown { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    // Missed heartbeats give the link up; the new one is served (half-open applies to the
    // links that existed).
    publish_soon(&producer, "after", Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(identifies(&nsqd), 2, "{:?}", lines(&nsqd));
    nsqd.set_half_open(false);
    producer.stop().await;
}

#[actix_rt::test]
async fn an_unsolicited_ok_resets_the_producer_link() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = producer(&nsqd);
    producer.publish("events", "first").await.unwrap();
    let client = nsqd.clients()[0].id;
    // An OK nobody asked for: the stream is out of step, no later answer can be trusted to
    // belong to its publish.
    assert!(nsqd.send_frame(client, Frame::Response(Response::Ok)));
    assert!(
        eventually(|| nsqd.client(client).is_none()).await,
        "the producer kept a link whose answers are out of step"
    );
    publish_soon(&producer, "second", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(identifies(&nsqd), 2, "{:?}", lines(&nsqd));
    assert_eq!(nsqd.topic_depth("events"), 2);
    producer.stop().await;
}

#[actix_rt::test]
async fn an_unsolicited_response_fails_the_waiting_publish_with_a_typed_error() {
    for (name, frame) in [
        ("CLOSE_WAIT", Frame::Response(Response::CloseWait)),
        ("JSON", Frame::Response(Response::Data("{}".into()))),
    ] {
        let nsqd = TestNsqd::start().unwrap();
        let producer = producer(&nsqd);
        producer.publish("events", "first").await.unwrap();
        let client = nsqd.clients()[0].id;
        // nsqd stops reading and writing, a publish is written and waits, the stray frame is
        // queued ahead of its answer; waking up writes the stray frame first.
        nsqd.set_half_open(true);
        let waiting = {
            let producer = producer.clone();
            actix_rt::spawn(async move { producer.publish("events", "waiting").await })
        };
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert!(nsqd.send_frame(client, frame));
        nsqd.set_half_open(false);
        let err = actix_rt::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting publish hung")
            .unwrap()
            .unwrap_err();
        // The publish was written: whether nsqd took it is unknown, and said so.
        assert!(
            matches!(err, Error::OutcomeUnknown { .. }),
            "{name}: {err:?}"
        );
        assert!(
            eventually(|| nsqd.client(client).is_none()).await,
            "{name}: the link was kept"
        );
        publish_soon(&producer, "after", Duration::from_secs(10))
            .await
            .unwrap();
        producer.stop().await;
    }
}

/// A consumer whose nsqlookupd stops answering well (down, slow past the poll timeout,
/// hanging up, 500) keeps the connections it has: lookupd is for discovery, not liveness.
#[actix_rt::test]
async fn an_nsqlookupd_that_is_down_or_slow_keeps_the_existing_connections() {
    for fault in ["down", "slow", "hang up", "500"] {
        let mut lookupd = Some(TestLookupd::start().unwrap());
        let nsqd = TestNsqd::builder()
            .lookupd(lookupd.as_ref().unwrap())
            .start()
            .unwrap();
        nsqd.create_topic("events").unwrap();
        let (handled_tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
        let consumer = Consumer::builder("events", "c")
            .lookupd(lookupd.as_ref().unwrap().url())
            .lookupd_poll_interval(Duration::from_millis(100))
            .lookupd_poll_timeout(Duration::from_millis(300))
            .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
            .handler_fn(move |d: Delivery| {
                let _ = handled_tx.send(d.body().clone());
                async { Ok(()) }
            })
            .start()
            .unwrap();
        assert!(
            eventually(|| lines(&nsqd).iter().any(|l| l.starts_with("RDY"))).await,
            "{fault}: never subscribed"
        );
        let client = nsqd.clients()[0].id;
        match fault {
            "down" => {
                let addr = lookupd.as_ref().unwrap().http_addr();
                drop(lookupd.take());
                assert!(
                    std::net::TcpStream::connect(addr).is_err(),
                    "lookupd still up"
                );
            }
            "slow" => lookupd
                .as_ref()
                .unwrap()
                .set_lookup_fault(Some(LookupFault::Slow(Duration::from_secs(2)))),
            "hang up" => lookupd
                .as_ref()
                .unwrap()
                .set_lookup_fault(Some(LookupFault::HangUp)),
            _ => lookupd
                .as_ref()
                .unwrap()
                .set_lookup_fault(Some(LookupFault::Status(500))),
        }
        // Many poll intervals and timeouts go by.
        actix_rt::time::sleep(Duration::from_secs(2)).await;
        assert!(
            nsqd.client(client).is_some(),
            "{fault}: the connection was dropped"
        );
        assert_eq!(identifies(&nsqd), 1, "{fault}: {:?}", lines(&nsqd));
        assert!(
            consumer.stats().connections.iter().all(|c| c.connected),
            "{fault}: {:?}",
            consumer.stats()
        );
        nsqd.publish("events", "still served").unwrap();
        let body = actix_rt::time::timeout(Duration::from_secs(10), handled.recv())
            .await
            .unwrap_or_else(|_| panic!("{fault}: nothing handled"));
        assert_eq!(body.as_deref(), Some(&b"still served"[..]), "{fault}");
        consumer.stop().await;
    }
}

/// Moving RDY from one link to another must lower the first before raising the second, or
/// nsqd may send more than `max_in_flight` at once (go-nsq `updateRDY` caps a raise by what
/// the others hold as sent). One nsqd under two names gives two links whose commands land in
/// one log, in the order nsqd read them; Σ RDY is replayed from it.
#[actix_rt::test]
async fn rdy_is_lowered_on_one_link_before_it_is_raised_on_another() {
    const MAX_IN_FLIGHT: u32 = 2;
    let nsqd = TestNsqd::start().unwrap();
    let port = nsqd.addr().port();
    let consumer = Consumer::builder("events", "c")
        .nsqd(format!("127.0.0.1:{port}"))
        .max_in_flight(MAX_IN_FLIGHT)
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| lines(&nsqd).contains(&"RDY 2".to_owned())).await);
    consumer.connect_nsqd(format!("localhost:{port}"));
    assert!(eventually(|| nsqd.clients().len() == 2).await);
    // Let the redistribution settle.
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let mut rdy = std::collections::HashMap::new();
    let mut most = 0;
    for command in nsqd.commands() {
        if let Some(count) = command.line.strip_prefix("RDY ") {
            rdy.insert(command.client, count.parse::<u32>().unwrap());
            most = most.max(rdy.values().sum::<u32>());
        }
    }
    assert!(
        most <= MAX_IN_FLIGHT,
        "Σ RDY on the wire reached {most}: {:?}",
        lines(&nsqd)
    );
    // And the move completed: each link ends with its share.
    let mut shares: Vec<u32> = rdy.into_values().collect();
    shares.sort_unstable();
    assert_eq!(shares, [1, 1], "{:?}", lines(&nsqd));
    consumer.stop().await;
}
