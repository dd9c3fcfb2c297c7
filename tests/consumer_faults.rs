//! The consumer when things go wrong: lost and half-open links, servers that lie, die and come
//! back, late answers, and a multi-nsqd run with a server killed and restarted mid-way.

#[path = "support/consumer.rs"]
mod support;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_nsq::{
    protocol::{ErrorCode, Frame, ServerError},
    testing::TestNsqd,
    ConnectionConfig, ConnectionEvent, Consumer, ConsumerEvent, Delivery, Error, ReconnectPolicy,
};
use support::{eventually, fast_reconnect, lines, Events};

fn config() -> ConnectionConfig {
    ConnectionConfig::new().reconnect(fast_reconnect())
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.as_str() == what).count()
}

fn connection_event(events: &Events, pred: impl Fn(&ConnectionEvent) -> bool) -> bool {
    events.any(|e| matches!(e, ConsumerEvent::Connection(c) if pred(c)))
}

#[actix_rt::test]
async fn reconnects_after_the_connection_is_closed() {
    let nsqd = TestNsqd::start().unwrap();
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(config())
        .max_in_flight(4)
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| count(&lines(&nsqd), "RDY 4") == 1).await);
    nsqd.close_all_connections().unwrap();
    assert!(
        eventually(|| count(&lines(&nsqd), "RDY 4") == 2).await,
        "{:?}",
        lines(&nsqd)
    );
    nsqd.publish("events", "after").unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    assert_eq!(count(&lines(&nsqd), "IDENTIFY"), 2);
    assert!(connection_event(&events, |e| matches!(
        e,
        ConnectionEvent::Disconnected { .. }
    )));
    assert!(connection_event(&events, |e| matches!(
        e,
        ConnectionEvent::Reconnecting { .. }
    )));
    consumer.stop().await;
}

#[actix_rt::test]
async fn a_silent_server_is_detected_by_missed_heartbeats() {
    // A message handed to the dead connection is requeued after msg_timeout, as nsqd does.
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_millis(500))
        .start()
        .unwrap();
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(config().heartbeat_interval(Some(Duration::from_secs(1))))
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| count(&lines(&nsqd), "RDY 1") == 1).await);
    nsqd.set_half_open(true);
    let timed_out = || {
        connection_event(&events, |e| {
            matches!(
                e,
                ConnectionEvent::Disconnected {
                    error: Error::Timeout(_),
                    ..
                }
            )
        })
    };
    assert!(
        eventually(timed_out).await,
        "half-open link detected: {:?}",
        events.all()
    );
    // Unfreezing lets the server notice the old socket is gone (a frozen server connection
    // would otherwise still hold the channel's messages); consumption resumes on the new one.
    nsqd.set_half_open(false);
    assert!(
        eventually(|| nsqd.clients().len() == 1).await,
        "{:?} {:?}",
        nsqd.clients(),
        lines(&nsqd)
    );
    nsqd.publish("events", "after").unwrap();
    assert!(
        eventually(|| nsqd.finished_count("events", "c") == 1).await,
        "depth {} in flight {} stats {:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        nsqd.depth("events", "c"),
        nsqd.in_flight("events", "c"),
        nsqd.channel_stats("events", "c"),
        lines(&nsqd),
        nsqd.clients(),
        consumer.stats(),
        events.all()
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn non_fatal_errors_keep_the_link_and_fatal_ones_reset_it() {
    let nsqd = TestNsqd::start().unwrap();
    let events = Events::default();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(config())
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.clients().len() == 1 && count(&lines(&nsqd), "RDY 1") == 1).await);
    let client = nsqd.clients()[0].id;
    let fin_failed = ServerError::new(
        ErrorCode::FinFailed,
        "FIN 0123456789abcdef failed ID not in flight",
    );
    assert!(nsqd.send_frame(client, Frame::Error(fin_failed)));
    assert!(
        eventually(|| connection_event(&events, |e| matches!(
            e,
            ConnectionEvent::ServerError { .. }
        )))
        .await
    );
    nsqd.publish("events", "still up").unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    assert_eq!(count(&lines(&nsqd), "IDENTIFY"), 1, "the link stayed up");

    let invalid = ServerError::new(ErrorCode::Invalid, "something fatal");
    assert!(nsqd.send_frame(client, Frame::Error(invalid)));
    assert!(
        eventually(|| count(&lines(&nsqd), "IDENTIFY") == 2).await,
        "fatal error resets the link"
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn garbage_from_the_server_resets_the_link() {
    let nsqd = TestNsqd::start().unwrap();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(config())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| count(&lines(&nsqd), "RDY 1") == 1).await);
    let client = nsqd.clients()[0].id;
    // An unknown frame type, then a message whose id would inject a command if echoed.
    assert!(nsqd.send_raw(client, &b"\x00\x00\x00\x06\x00\x00\x00\x09hi"[..]));
    assert!(eventually(|| count(&lines(&nsqd), "IDENTIFY") == 2).await);
    let client = nsqd.clients().into_iter().map(|c| c.id).max().unwrap();
    let mut bad_id = vec![0, 0, 0, 31, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    bad_id.extend_from_slice(b"0123\nCLS\n89abcdex");
    assert!(nsqd.send_raw(client, bad_id));
    assert!(eventually(|| count(&lines(&nsqd), "IDENTIFY") == 3).await);
    assert_eq!(count(&lines(&nsqd), "CLS"), 0, "nothing was injected");
    nsqd.publish("events", "fine").unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    consumer.stop().await;
}

#[actix_rt::test]
async fn answers_after_the_link_died_are_reported_as_lost() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "kept").unwrap();
    let kept: Arc<Mutex<Option<Delivery>>> = Arc::default();
    let kept2 = kept.clone();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(config())
        .handler_fn(move |d: Delivery| {
            kept2.lock().unwrap().get_or_insert(d);
            async { Ok(()) }
        })
        .start()
        .unwrap();
    assert!(eventually(|| kept.lock().unwrap().is_some()).await);
    nsqd.close_all_connections().unwrap();
    assert!(eventually(|| count(&lines(&nsqd), "IDENTIFY") == 2).await);
    let delivery = kept.lock().unwrap().take().unwrap();
    assert!(matches!(
        delivery.finish(),
        Err(Error::ConnectionLost { .. })
    ));
    consumer.stop().await;
}

#[actix_rt::test]
async fn a_late_finish_after_msg_timeout_is_a_non_fatal_error() {
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    nsqd.publish("events", "slow").unwrap();
    let events = Events::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(config())
        .max_in_flight(2)
        .events(events.recipient())
        .handler_fn(move |d: Delivery| {
            let n = seen2.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // Slower than msg_timeout: nsqd redelivers, and this FIN comes too late.
                    actix_rt::time::sleep(Duration::from_millis(800)).await;
                }
                drop(d);
                Ok(())
            }
        })
        .start()
        .unwrap();
    let fin_failed = || {
        connection_event(
            &events,
            |e| matches!(e, ConnectionEvent::ServerError { error: Error::Server(s), .. } if s.code == ErrorCode::FinFailed),
        )
    };
    assert!(eventually(fin_failed).await, "{:?}", events.all());
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    assert_eq!(
        count(&lines(&nsqd), "IDENTIFY"),
        1,
        "E_FIN_FAILED does not reset the link"
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn gives_up_on_an_unreachable_nsqd() {
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    nsqd.kill().unwrap();
    let events = Events::default();
    let policy = ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(10))
        .max_attempts(Some(2));
    let consumer = Consumer::builder("events", "c")
        .nsqd(addr)
        .connection(ConnectionConfig::new().reconnect(policy))
        .events(events.recipient())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    let gave_up = || connection_event(&events, |e| matches!(e, ConnectionEvent::GaveUp { .. }));
    assert!(eventually(gave_up).await, "{:?}", events.all());
    consumer.stop().await;
}

#[actix_rt::test]
async fn three_nsqd_one_killed_and_restarted_nothing_lost() {
    const PER_NSQD: usize = 100;
    let nsqds: Vec<TestNsqd> = (0..3).map(|_| TestNsqd::start().unwrap()).collect();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (seen2, running2, most2) = (seen.clone(), running.clone(), most.clone());
    let mut builder = Consumer::builder("events", "c")
        .connection(config())
        // Fewer slots than connections: RDY rotates between the three nsqd.
        .max_in_flight(2)
        .handler_fn(move |d: Delivery| {
            let now = running2.fetch_add(1, Ordering::SeqCst) + 1;
            most2.fetch_max(now, Ordering::SeqCst);
            seen2.lock().unwrap().insert(String::from_utf8_lossy(d.body()).into_owned());
            let running = running2.clone();
            async move {
                actix_rt::time::sleep(Duration::from_millis(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        });
    for nsqd in &nsqds {
        builder = builder.nsqd(nsqd.addr().to_string());
    }
    let consumer = builder.start().unwrap();
    let max_total_rdy = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (consumer, max_total_rdy) = (consumer.clone(), max_total_rdy.clone());
        actix_rt::spawn(async move {
            loop {
                let rdy = usize::try_from(consumer.stats().total_rdy).unwrap();
                max_total_rdy.fetch_max(rdy, Ordering::SeqCst);
                actix_rt::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    for i in 0..PER_NSQD {
        for (n, nsqd) in nsqds.iter().enumerate() {
            nsqd.publish("events", format!("{n}-{i}")).unwrap();
        }
        if i == PER_NSQD / 2 {
            // Graceful nsqd exit keeps in-flight and queued messages; a restart brings them back.
            nsqds[1].stop().unwrap();
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            nsqds[1].restart().unwrap();
        }
    }
    let all = 3 * PER_NSQD;
    let done = eventually(|| seen.lock().unwrap().len() == all).await;
    assert!(done, "handled {} of {all}", seen.lock().unwrap().len());
    sampler.abort();
    assert!(
        max_total_rdy.load(Ordering::SeqCst) <= 2,
        "Σ RDY never exceeds max_in_flight"
    );
    // A message nsqd sent just before it read a lowered RDY can still arrive: at most one such
    // message per connection whose RDY just went to 0 in low-RDY mode.
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 2 + 3, "{most} handlers at once");
    consumer.stop().await;
}

#[actix_rt::test]
async fn every_nsqd_is_served_when_connections_outnumber_max_in_flight() {
    let nsqds: Vec<TestNsqd> = (0..6).map(|_| TestNsqd::start().unwrap()).collect();
    let mut builder = Consumer::builder("events", "c")
        .connection(config())
        .max_in_flight(1)
        .handler_fn(|_| async { Ok(()) });
    for nsqd in &nsqds {
        builder = builder.nsqd(nsqd.addr().to_string());
        nsqd.publish("events", "one").unwrap();
    }
    let consumer = builder.start().unwrap();
    for nsqd in &nsqds {
        assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    }
    let stats = consumer.stats();
    assert!(stats.total_rdy <= 1, "{stats:?}");
    consumer.stop().await;
}
