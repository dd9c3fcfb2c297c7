//! The consumer's small controls: `is_running`, a forced nsqlookupd query,
//! `redistribute_ready_state`, and the backoff events they sit beside.

#[path = "support/consumer.rs"]
mod support;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix_nsq::{
    testing::{TestLookupd, TestNsqd},
    Consumer, ConsumerEvent,
};
use support::{eventually, lookups, Events};

/// A consumer of one message on `nsqd` whose handler takes 300 ms.
fn slow_consumer(nsqd: &TestNsqd) -> Consumer {
    nsqd.publish("events", "slow").unwrap();
    Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .handler_fn(|_| async {
            actix_rt::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        })
        .start()
        .unwrap()
}

#[actix_rt::test]
async fn is_running_until_the_stop_completes() {
    let nsqd = TestNsqd::start().unwrap();
    let consumer = slow_consumer(&nsqd);
    let clone = consumer.clone();
    assert!(consumer.is_running());
    assert!(eventually(|| consumer.stats().in_flight == 1).await);
    let stopping = consumer.clone();
    let stop = actix_rt::spawn(async move { stopping.stop().await });
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert!(
        consumer.is_running(),
        "still answering the message in flight"
    );
    assert_eq!(stop.await.unwrap(), 0);
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    assert!(!consumer.is_running());
    assert!(!clone.is_running(), "clones see the same consumer");
}

#[actix_rt::test]
async fn a_stop_whose_caller_gave_up_waiting_still_ends_is_running() {
    let nsqd = TestNsqd::start().unwrap();
    let consumer = slow_consumer(&nsqd);
    assert!(eventually(|| consumer.stats().in_flight == 1).await);
    // The caller stops waiting while the message in flight is still being handled.
    let waited = tokio::time::timeout(Duration::from_millis(1), consumer.stop()).await;
    assert!(waited.is_err(), "the stop was still running");
    assert!(consumer.is_running());
    assert!(eventually(|| !consumer.is_running()).await);
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    assert!(eventually(|| nsqd.clients().is_empty()).await);
}

#[actix_rt::test]
async fn query_lookupd_finds_a_new_nsqd_before_the_next_poll_and_never_storms() {
    let lookupd = TestLookupd::start().unwrap();
    let first = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    first.create_topic("events").unwrap();
    assert!(eventually(|| lookupd.producers("events").len() == 1).await);
    let consumer = Consumer::builder("events", "c")
        .lookupd(lookupd.url())
        .lookupd_poll_interval(Duration::from_secs(300))
        .lookupd_poll_jitter(0.0)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| first.clients().len() == 1).await);
    // The start-up queries are over; the next poll is 5 min away.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let second = TestNsqd::builder().lookupd(&lookupd).start().unwrap();
    second.create_topic("events").unwrap();
    assert!(eventually(|| lookupd.producers("events").len() == 2).await);
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(second.clients().is_empty(), "not found without a query");

    lookupd.clear_requests();
    assert!(consumer.query_lookupd().await);
    assert!(eventually(|| second.clients().len() == 1).await);
    assert_eq!(consumer.stats().connections.len(), 2);

    // Code calling it in a loop: the one just sent, one at the end of its second, no more.
    lookupd.clear_requests();
    for _ in 0..50 {
        assert!(consumer.query_lookupd().await);
    }
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let queries = lookups(&lookupd);
    assert!((1..=2).contains(&queries), "{queries} lookups for 50 calls");
    assert_eq!(consumer.stop().await, 0);
    assert!(
        !consumer.query_lookupd().await,
        "nothing to ask once stopped"
    );
}

#[actix_rt::test]
async fn query_lookupd_without_lookupd_says_so() {
    let nsqd = TestNsqd::start().unwrap();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(!consumer.query_lookupd().await);
    assert_eq!(consumer.stop().await, 0);
}

/// ΣRDY at nsqd, as its clients last set it.
fn rdy(nsqd: &TestNsqd) -> i64 {
    nsqd.clients().iter().map(|c| c.rdy).sum()
}

#[actix_rt::test]
async fn redistribute_ready_state_rotates_rdy_at_once_not_at_the_next_tick() {
    let nsqd = [TestNsqd::start().unwrap(), TestNsqd::start().unwrap()];
    let started = Instant::now();
    // One slot for two connections; ticks every 5 s, the first 5 s after the start. A holder
    // gives its slot away once it held it 10 ms, but only at a tick.
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd[0].addr().to_string())
        .nsqd(nsqd[1].addr().to_string())
        .max_in_flight(1)
        .rdy_redistribute_interval(Duration::from_secs(5))
        .low_rdy_idle_timeout(Duration::from_secs(300))
        .low_rdy_timeout(Duration::from_millis(10))
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(
        eventually(
            || nsqd.iter().all(|n| n.clients().len() == 1) && rdy(&nsqd[0]) + rdy(&nsqd[1]) == 1
        )
        .await
    );
    // Past the RDY changes of the second connection's arrival.
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rdy(&nsqd[0]) + rdy(&nsqd[1]), 1);
    // A message on the nsqd without RDY waits for the next tick...
    let waiting = if rdy(&nsqd[0]) == 0 { 0 } else { 1 };
    nsqd[waiting].publish("events", "waits").unwrap();
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(nsqd[waiting].finished_count("events", "c"), 0);
    // ... unless the RDY is redistributed now.
    consumer.redistribute_ready_state();
    assert!(eventually(|| nsqd[waiting].finished_count("events", "c") == 1).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(4500),
        "{elapsed:?}: the tick did it, not redistribute_ready_state"
    );
    assert_eq!((rdy(&nsqd[waiting]), rdy(&nsqd[1 - waiting])), (1, 0));
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn backoff_level_is_sent_when_the_level_rises_and_when_it_falls() {
    let nsqd = TestNsqd::start().unwrap();
    for i in 0..4 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let events = Events::default();
    // Fails twice, then succeeds: the level goes 1, 2, then 1, 0.
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .backoff_multiplier(Duration::from_millis(20))
        .default_requeue_delay(Duration::ZERO)
        .events(events.recipient())
        .handler_fn(move |_| {
            let failing = c.fetch_add(1, Ordering::SeqCst) < 2;
            async move {
                if failing {
                    Err("down".into())
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| events.any(|e| matches!(e, ConsumerEvent::BackoffEnded))).await);
    let backoff: Vec<String> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            ConsumerEvent::BackoffStarted { level, .. } => Some(format!("started {level}")),
            ConsumerEvent::BackoffLevel { level } => Some(format!("level {level}")),
            ConsumerEvent::BackoffEnded => Some("ended".to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        backoff,
        [
            "started 1",
            "level 1",
            "started 2",
            "level 2",
            "started 1",
            "level 1",
            "ended"
        ]
    );
    assert_eq!(consumer.stop().await, 0);
}
