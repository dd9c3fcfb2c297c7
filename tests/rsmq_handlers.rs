//! Every handler kind of the shared builder setters, on the RSMQ consumer: a dead actor it did
//! not start (pause, hold, release on stop), supervised actors (restart after a panic), actors on
//! another arbiter, blocking handlers (replaced after a panic), the closure give-up hook and the
//! restart budget's validation. Real redis-server, as `rsmq_consumer.rs`.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/rsmq_consumer.rs"]
mod support;

use std::time::Duration;

use actix::{Actor, Context, Handler};
use actix_nsq::{
    rsmq::{RsmqConsumer, RsmqConsumerEvent},
    Delivery, Error, HandlerError, HandlerEvent, HandlerResult,
};
use support::*;
use tokio::sync::mpsc;

/// Panics on a message's first attempt, finishes it on a later one; reports every delivery.
struct Fragile(mpsc::UnboundedSender<(String, u32)>);

impl Actor for Fragile {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Fragile {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        let body = String::from_utf8(delivery.body().to_vec()).unwrap();
        let _ = self.0.send((body, delivery.attempts()));
        assert!(delivery.attempts() > 1, "first attempt");
        Ok(())
    }
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn a_dead_handler_actor_pauses_receiving_and_stop_releases_its_message() {
    let (server, rsmq) = setup(30).await;
    let first = rsmq.send_message("q", "orphan", None).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let worker = Worker { name: 0, seen: tx }.start();
    worker.send(Halt).await.unwrap();
    let recipient = worker.recipient();
    until("actor stopped", || !recipient.connected()).await;
    let (events_tx, mut events_rx) = events();
    let consumer = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .concurrency(4)
        .events(events_tx)
        .handler(recipient)
        .start()
        .unwrap();
    let stopped = event_where(&mut events_rx, |e| {
        matches!(e, RsmqConsumerEvent::Handler(_))
    })
    .await;
    assert!(
        matches!(
            stopped,
            RsmqConsumerEvent::Handler(HandlerEvent::Stopped { slot: 0 })
        ),
        "{stopped:?}"
    );
    let unavailable = event_where(&mut events_rx, |e| {
        matches!(e, RsmqConsumerEvent::Handler(_))
    })
    .await;
    assert!(
        matches!(
            unavailable,
            RsmqConsumerEvent::Handler(HandlerEvent::Unavailable)
        ),
        "{unavailable:?}"
    );
    // Paused: a second message stays in the queue, though three slots are free.
    let second = rsmq.send_message("q", "waits", None).await.unwrap();
    tokio::time::sleep(FAST_POLL * 10).await;
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.in_flight), (1, 1), "{stats:?}");
    assert_eq!(
        visible_in_ms(&server, &second).await.map(|ms| ms <= 0),
        Some(true)
    );
    // Held, hidden for its vt; the stop gives it back at once, as no handler saw it.
    assert!(visible_in_ms(&server, &first).await.unwrap() > 20_000);
    stop(&consumer).await;
    assert!(visible_in_ms(&server, &first).await.unwrap() <= 0);
    let stats = consumer.stats();
    assert_eq!((stats.requeued, stats.finished, stats.in_flight), (1, 0, 0));
    // Both are visible: the held one (received once) and the one never received.
    let mut left = Vec::new();
    while let Some(message) = rsmq.receive_message("q", None).await.unwrap() {
        left.push((message.id, message.rc));
    }
    left.sort_by_key(|(_, rc)| *rc);
    assert_eq!(left, [(second, 1), (first, 2)]);
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn a_panicking_supervised_actor_is_restarted_and_only_its_message_counts() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "poison", None).await.unwrap();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let (events_tx, mut events_rx) = events();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .default_requeue_delay(Duration::from_secs(1))
        .events(events_tx)
        .handler_actors(1, move || Fragile(tx.clone()))
        .start()
        .unwrap();
    assert_eq!(recv(&mut seen).await, ("poison".to_owned(), 1));
    let restarted = event_where(&mut events_rx, |e| {
        matches!(
            e,
            RsmqConsumerEvent::Handler(HandlerEvent::Restarted { .. })
        )
    })
    .await;
    assert!(
        matches!(
            restarted,
            RsmqConsumerEvent::Handler(HandlerEvent::Restarted {
                slot: 0,
                restarts: 1
            })
        ),
        "{restarted:?}"
    );
    // The panic is a failed attempt: requeued with the default delay, then the fresh actor
    // finishes it.
    assert_eq!(recv(&mut seen).await, ("poison".to_owned(), 2));
    until("finished", || consumer.stats().finished == 1).await;
    assert_eq!(consumer.stats().requeued, 1);
    assert_eq!(score(&server, &id).await, None);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn actors_on_another_arbiter_handle_the_messages() {
    let (server, rsmq) = setup(30).await;
    for body in ["a", "b", "c"] {
        rsmq.send_message("q", body, None).await.unwrap();
    }
    let arbiter = actix::Arbiter::new();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .concurrency(3)
        .handler_actors_on(arbiter.handle(), 2, move || Worker {
            name: 0,
            seen: tx.clone(),
        })
        .start()
        .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.push(recv(&mut seen).await.1);
    }
    bodies.sort();
    assert_eq!(bodies, ["a", "b", "c"]);
    until("finished", || consumer.stats().finished == 3).await;
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
    arbiter.stop();
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn a_panicking_blocking_handler_is_replaced_and_the_message_comes_back() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "poison", None).await.unwrap();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let (events_tx, mut events_rx) = events();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .default_requeue_delay(Duration::from_secs(1))
        .events(events_tx)
        .handler_blocking(1, move || {
            let tx = tx.clone();
            move |delivery: Delivery| -> HandlerResult {
                // Blocking is allowed here: the consumer's thread goes on.
                std::thread::sleep(Duration::from_millis(20));
                tx.send(delivery.attempts()).unwrap();
                assert!(delivery.attempts() > 1, "first attempt");
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert_eq!(recv(&mut seen).await, 1);
    // The failure and the replacement are reported in no fixed order.
    let (mut failed, mut restarted) = (None, None);
    while failed.is_none() || restarted.is_none() {
        match recv(&mut events_rx).await {
            RsmqConsumerEvent::HandlerFailed {
                id: i,
                attempts,
                error,
            } => {
                assert!(matches!(error, Error::Handler(_)), "{error:?}");
                failed = Some((i, attempts));
            }
            RsmqConsumerEvent::Handler(event) => restarted = Some(event),
            _ => {}
        }
    }
    assert_eq!(failed, Some((id, 1)));
    assert!(
        matches!(restarted, Some(HandlerEvent::Restarted { slot: 0, .. })),
        "{restarted:?}"
    );
    assert_eq!(recv(&mut seen).await, 2);
    until("finished", || consumer.stats().finished == 1).await;
    assert_eq!(consumer.stats().requeued, 1);
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn past_max_attempts_the_give_up_closure_gets_it() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "poison", None).await.unwrap();
    let (dead, mut buried) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .max_attempts(1)
        .give_up_fn(move |delivery: Delivery| {
            dead.send((delivery.id().to_owned(), delivery.attempts()))
                .unwrap();
            async { Ok(()) }
        })
        .handler_fn(|_: Delivery| async {
            Err(HandlerError::new("broken").requeue_after(Duration::ZERO))
        })
        .start()
        .unwrap();
    assert_eq!(recv(&mut buried).await, (id, 2));
    until("finished", || consumer.stats().finished == 1).await;
    let stats = consumer.stats();
    assert_eq!((stats.given_up, stats.requeued), (1, 1));
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn one_kind_of_handler_and_a_restart_window() {
    let (_server, rsmq) = setup(30).await;
    let field = |result: actix_nsq::Result<()>| match result {
        Err(Error::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let two_kinds = RsmqConsumer::builder(rsmq.clone(), "q")
        .handler_fn(|_: Delivery| async { Ok(()) })
        .handler_blocking(1, || |_: Delivery| Ok(()));
    assert_eq!(field(two_kinds.validate()), "handler");
    let no_threads =
        RsmqConsumer::builder(rsmq.clone(), "q").handler_blocking(0, || |_: Delivery| Ok(()));
    assert_eq!(field(no_threads.validate()), "handler");
    let window = RsmqConsumer::builder(rsmq.clone(), "q")
        .handler_actors(1, || Worker {
            name: 0,
            seen: mpsc::unbounded_channel().0,
        })
        .handler_restarts(3, Duration::ZERO);
    assert_eq!(field(window.validate()), "handler_restarts");
    let fine = RsmqConsumer::builder(rsmq, "q")
        .handler_blocking(2, || |_: Delivery| Ok(()))
        .handler_restarts(3, Duration::from_secs(1));
    assert!(fine.validate().is_ok());
}
