//! The RSMQ consumer when answers come late or things fail: a late finish against a
//! redelivered copy, touch and auto-extension, realtime wake-ups, graceful stop, a panicking
//! closure, a Redis restart. Real redis-server, as `rsmq_consumer.rs`; dead, supervised and
//! blocking handlers are in `rsmq_handlers.rs`.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/rsmq_consumer.rs"]
mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_nsq::{
    rsmq::{QueueOptions, Rsmq, RsmqBuilder, RsmqConsumer, RsmqConsumerEvent},
    Action, Delivery, Error,
};
use support::*;
use tokio::{sync::mpsc, time::Instant};

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn a_late_finish_does_not_delete_the_copy_redelivered_to_another_consumer() {
    let (server, rsmq) = setup(1).await;
    let id = rsmq.send_message("q", "slow", None).await.unwrap();
    let (events_a, mut a_events) = events();
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let a = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .events(events_a)
        .handler_fn(holding(tx_a))
        .start()
        .unwrap();
    let late = recv(&mut rx_a).await;
    assert_eq!((late.id(), late.attempts()), (id.as_str(), 1));
    // A's 1 s runs out; B receives the message (and holds it for 30 s).
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let b = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .visibility_timeout(Duration::from_secs(30))
        .handler_fn(holding(tx_b))
        .start()
        .unwrap();
    let current = recv(&mut rx_b).await;
    assert_eq!((current.id(), current.attempts()), (id.as_str(), 2));

    late.finish().unwrap();
    let refused = event_where(&mut a_events, |e| {
        matches!(e, RsmqConsumerEvent::NotOwned { .. })
    })
    .await;
    let RsmqConsumerEvent::NotOwned {
        id: refused_id,
        rc,
        action,
        gone,
    } = refused
    else {
        unreachable!()
    };
    assert_eq!(
        (refused_id, rc, action, gone),
        (id.clone(), 1, Action::Finish, false)
    );
    assert_eq!((a.stats().finished, a.stats().not_owned), (0, 1));
    assert!(
        visible_in_ms(&server, &id).await.unwrap() > 10_000,
        "B's copy is still there, still hidden"
    );

    current.finish().unwrap();
    until("B finished", || b.stats().finished == 1).await;
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&a).await;
    stop(&b).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn touch_extends_the_visibility_by_vt() {
    let (server, rsmq) = setup(10).await;
    let id = rsmq.send_message("q", "long", None).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .handler_fn(holding(tx))
        .start()
        .unwrap();
    let delivery = recv(&mut rx).await;
    let before = score(&server, &id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    delivery.touch().unwrap();
    until("extended", || consumer.stats().extended == 1).await;
    let after = score(&server, &id).await.unwrap();
    assert!(
        after - before >= 1000,
        "hidden for 10 s from the touch, 1.1 s after the receive: {before} -> {after}"
    );
    assert!(visible_in_ms(&server, &id).await.unwrap() <= 10_000);
    delivery.finish().unwrap();
    until("finished", || consumer.stats().finished == 1).await;
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn auto_extend_keeps_a_slow_handlers_message_hidden_past_its_vt() {
    let (server, rsmq) = setup(3).await;
    rsmq.send_message("q", "slow", None).await.unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let consumer = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .auto_extend(true)
        .handler_fn(move |_: Delivery| {
            counted.fetch_add(1, SeqCst);
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(7)).await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    recv(&mut started).await;
    // Another worker keeps trying during the 7 s; the message must stay hidden all along.
    let thief = Rsmq::connect(&server.url()).await.unwrap();
    while consumer.stats().finished == 0 {
        let stolen = thief
            .receive_message("q", Some(Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(stolen.is_none(), "the message became visible: {stolen:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = consumer.stats();
    assert_eq!((stats.finished, stats.not_owned), (1, 0));
    assert!(stats.extended >= 2, "extended {} times", stats.extended);
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn realtime_wakes_the_consumer_long_before_its_poll_interval() {
    let (server, _) = setup(30).await;
    let sender = RsmqBuilder::new(server.client())
        .realtime(true)
        .build()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(sender.clone(), "q")
        .poll_interval(Duration::from_secs(30))
        .realtime(true)
        .handler_fn(holding(tx))
        .start()
        .unwrap();
    let mut conn = server.conn().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("rsmq:rt:q")
            .query_async(&mut conn)
            .await
            .unwrap();
        if subscribers == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the consumer find the queue empty and settle into its 30 s poll wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let id = sender.send_message("q", "now", None).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("not woken by the notification")
        .unwrap();
    assert_eq!(delivery.id(), id);
    assert!(sent.elapsed() < Duration::from_secs(10));
    delivery.finish().unwrap();
    until("finished", || consumer.stats().finished == 1).await;
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn graceful_stop_waits_for_the_handler_in_flight() {
    let (server, rsmq) = setup(30).await;
    rsmq.send_message("q", "work", None).await.unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .handler_fn(move |_: Delivery| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    recv(&mut started).await;
    assert_eq!(consumer.stop_within(Duration::from_secs(15)).await, 0);
    assert_eq!(consumer.stats().finished, 1, "the handler's Ok was applied");
    assert_eq!(zcard(&server, "q").await, 0);
    assert!(!consumer.is_running());
    rsmq.send_message("q", "after stop", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(consumer.stats().received, 1);
    assert_eq!(
        consumer.stop_within(Duration::from_secs(1)).await,
        0,
        "stopping twice"
    );
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn stop_at_the_deadline_abandons_unanswered_deliveries() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "held", None).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .handler_fn(holding(tx))
        .start()
        .unwrap();
    let held = recv(&mut rx).await;
    assert_eq!(consumer.stop_within(Duration::from_millis(300)).await, 1);
    assert!(matches!(held.finish(), Err(Error::Stopped)));
    let hidden = visible_in_ms(&server, &id).await.unwrap();
    assert!(hidden > 20_000, "it comes back after its vt, not before");
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn a_panicking_closure_handler_gets_the_message_back() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "poison", None).await.unwrap();
    let (events_tx, mut events_rx) = events();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .default_requeue_delay(Duration::from_secs(1))
        .events(events_tx)
        .handler_fn(move |delivery: Delivery| {
            seen.lock().unwrap().push(delivery.attempts());
            let first = delivery.attempts() == 1;
            async move {
                assert!(!first, "poison");
                Ok(())
            }
        })
        .start()
        .unwrap();
    let failed = event_where(&mut events_rx, |e| {
        matches!(e, RsmqConsumerEvent::HandlerFailed { .. })
    })
    .await;
    let RsmqConsumerEvent::HandlerFailed {
        id: failed_id,
        attempts: failed_attempts,
        error: Error::Handler(reason),
    } = failed
    else {
        panic!("{failed:?}")
    };
    assert_eq!((failed_id, failed_attempts), (id, 1));
    assert!(reason.contains("poison"), "{reason}");
    until("finished on the second attempt", || {
        consumer.stats().finished == 1
    })
    .await;
    assert_eq!(*attempts.lock().unwrap(), [1, 2]);
    assert_eq!(consumer.stats().requeued, 1);
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn the_consumer_recovers_when_redis_restarts() {
    let (mut server, rsmq) = setup(30).await;
    let (events_tx, mut events_rx) = events();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .events(events_tx)
        .handler_fn(move |delivery: Delivery| {
            tx.send(delivery.body().clone()).unwrap();
            async { Ok(()) }
        })
        .start()
        .unwrap();
    rsmq.send_message("q", "before", None).await.unwrap();
    assert_eq!(&recv(&mut rx).await[..], b"before");
    until("finished", || consumer.stats().finished == 1).await;

    // The new server is empty: receiving fails (connection lost, then queueNotFound).
    server.restart();
    event_where(&mut events_rx, |e| {
        matches!(e, RsmqConsumerEvent::ReceiveFailed { .. })
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    while rsmq.create_queue("q", QueueOptions::new()).await.is_err() {
        assert!(Instant::now() < deadline, "the client never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rsmq.send_message("q", "after", None).await.unwrap();
    assert_eq!(&recv(&mut rx).await[..], b"after");
    event_where(
        &mut events_rx,
        |e| matches!(e, RsmqConsumerEvent::Recovered { attempts } if *attempts >= 1),
    )
    .await;
    until("finished", || consumer.stats().finished == 2).await;
    assert!(consumer.is_running());
    stop(&consumer).await;
}
