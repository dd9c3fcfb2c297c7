//! Handler supervision against the in-process nsqd: handler actors restarted from their
//! factory, nothing a handler never saw counted as an attempt, a consumer that pauses while no
//! handler is alive, and blocking handlers that cannot starve a connection. Each promise is
//! checked for actors and for closures (or blocking handlers, the closure kind for blocking
//! work).

#[path = "support/consumer.rs"]
mod support;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    testing::TestNsqd, ConnectionConfig, Consumer, ConsumerEvent, Delivery, HandlerEvent,
    HandlerResult,
};
use support::{eventually, fast_reconnect, lines, Events};

/// Bodies handled successfully, with the attempt that succeeded.
type Seen = Arc<Mutex<BTreeMap<String, u32>>>;

fn builder(nsqd: &TestNsqd) -> actix_nsq::ConsumerBuilder {
    Consumer::builder("events", "tests")
        .nsqd(nsqd.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .backoff_multiplier(Duration::from_millis(10))
        .default_requeue_delay(Duration::ZERO)
        // One failure more than the poison message needs: a message that burned an attempt
        // without a handler seeing it would reach the give-up hook.
        .max_attempts(2)
}

fn publish_six(nsqd: &TestNsqd) {
    for i in 0..6 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(d.body()).into_owned()
}

fn requeues(nsqd: &TestNsqd) -> usize {
    lines(nsqd).iter().filter(|l| l.starts_with("REQ")).count()
}

/// Panics on the first attempt of `m0`; handles everything else.
struct Indexer {
    seen: Seen,
}

impl Actor for Indexer {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Indexer {
    type Result = HandlerResult;

    fn handle(&mut self, d: Delivery, _: &mut Context<Self>) -> HandlerResult {
        if body(&d) == "m0" && d.attempts() == 1 {
            panic!("poison m0");
        }
        self.seen.lock().unwrap().insert(body(&d), d.attempts());
        Ok(())
    }
}

fn counting_give_up(
    gave_up: &Arc<AtomicUsize>,
) -> impl Fn(Delivery) -> std::future::Ready<HandlerResult> {
    let gave_up = gave_up.clone();
    move |_d: Delivery| {
        gave_up.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

fn expect_all_six(seen: &Seen) -> bool {
    seen.lock().unwrap().len() == 6
}

#[actix_rt::test]
async fn a_panicking_handler_actor_is_restarted_and_only_its_message_counts() {
    let nsqd = TestNsqd::start().unwrap();
    publish_six(&nsqd);
    let seen: Seen = Arc::default();
    let gave_up = Arc::new(AtomicUsize::new(0));
    let events = Events::default();
    let seen2 = seen.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(6) // all six sit in the actor's mailbox when it panics
        .events(events.recipient())
        .give_up_fn(counting_give_up(&gave_up))
        .handler_actors(1, move || Indexer { seen: seen2.clone() })
        .start()
        .unwrap();
    assert!(eventually(|| expect_all_six(&seen)).await, "{seen:?}");
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 6).await);
    // The poison message failed once and succeeded on its second attempt; every other message
    // was handled on its first delivery, none was given up.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen["m0"], 2);
    assert!(
        seen.iter()
            .filter(|(b, _)| *b != "m0")
            .all(|(_, a)| *a == 1),
        "{seen:?}"
    );
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    assert_eq!(requeues(&nsqd), 1, "{:?}", lines(&nsqd));
    assert!(events.any(|e| matches!(
        e,
        ConsumerEvent::Handler(HandlerEvent::Restarted {
            slot: 0,
            restarts: 1
        })
    )));
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn a_panicking_handler_closure_requeues_only_its_message() {
    let nsqd = TestNsqd::start().unwrap();
    publish_six(&nsqd);
    let seen: Seen = Arc::default();
    let gave_up = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(6)
        .give_up_fn(counting_give_up(&gave_up))
        .handler_fn(move |d: Delivery| {
            let seen = seen2.clone();
            async move {
                if body(&d) == "m0" && d.attempts() == 1 {
                    panic!("poison m0");
                }
                seen.lock().unwrap().insert(body(&d), d.attempts());
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| expect_all_six(&seen)).await, "{seen:?}");
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 6).await);
    assert_eq!(seen.lock().unwrap()["m0"], 2);
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    assert_eq!(requeues(&nsqd), 1, "{:?}", lines(&nsqd));
    assert_eq!(consumer.stop().await, 0);
}

/// Stops itself (a graceful stop, not a panic) when it sees `stop`, before answering it.
struct Quitter {
    seen: Seen,
}

impl Actor for Quitter {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Quitter {
    type Result = HandlerResult;

    fn handle(&mut self, d: Delivery, ctx: &mut Context<Self>) -> HandlerResult {
        self.seen.lock().unwrap().insert(body(&d), d.attempts());
        if body(&d) == "m0" {
            ctx.stop();
        }
        Ok(())
    }
}

#[actix_rt::test]
async fn an_actor_that_stops_is_restarted_and_its_mailbox_goes_to_the_successor() {
    let nsqd = TestNsqd::start().unwrap();
    publish_six(&nsqd);
    let seen: Seen = Arc::default();
    let gave_up = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(6)
        .give_up_fn(counting_give_up(&gave_up))
        .handler_actors(1, move || Quitter {
            seen: seen2.clone(),
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 6).await);
    // A stop is no failure: nothing requeued, every message handled on its first attempt.
    assert_eq!(requeues(&nsqd), 0, "{:?}", lines(&nsqd));
    assert!(seen.lock().unwrap().values().all(|a| *a == 1));
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn a_dead_actor_without_factory_pauses_the_consumer_and_burns_nothing() {
    let nsqd = TestNsqd::start().unwrap();
    publish_six(&nsqd);
    let seen: Seen = Arc::default();
    let gave_up = Arc::new(AtomicUsize::new(0));
    let events = Events::default();
    let indexer = Indexer { seen: seen.clone() }.start();
    let consumer = builder(&nsqd)
        .max_in_flight(6)
        .events(events.recipient())
        .give_up_fn(counting_give_up(&gave_up))
        .handler(indexer.recipient())
        .start()
        .unwrap();
    assert!(
        eventually(
            || events.any(|e| matches!(e, ConsumerEvent::Handler(HandlerEvent::Unavailable)))
        )
        .await
    );
    assert!(events.any(|e| matches!(e, ConsumerEvent::Handler(HandlerEvent::Stopped { slot: 0 }))));
    // The consumer takes nothing more while no handler is alive.
    assert!(
        eventually(|| consumer.stats().total_rdy == 0).await,
        "{:?}",
        consumer.stats()
    );
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    // Stopping releases what it held: REQ without backoff, nothing finished or given up.
    consumer.stop_within(Duration::from_secs(5)).await;
    assert_eq!(nsqd.finished_count("events", "tests"), 0);
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    assert_eq!(
        nsqd.depth("events", "tests") + nsqd.deferred("events", "tests"),
        6
    );
}

/// Blocks its thread for `hold`, then finishes the message.
struct Sleeper {
    hold: Duration,
}

impl Actor for Sleeper {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Sleeper {
    type Result = HandlerResult;

    fn handle(&mut self, _d: Delivery, _: &mut Context<Self>) -> HandlerResult {
        std::thread::sleep(self.hold);
        Ok(())
    }
}

const HEARTBEAT: Duration = Duration::from_secs(1);

fn heartbeat_builder(nsqd: &TestNsqd, events: &Events) -> actix_nsq::ConsumerBuilder {
    builder(nsqd)
        .connection(
            ConnectionConfig::new()
                .reconnect(fast_reconnect())
                .heartbeat_interval(Some(HEARTBEAT)),
        )
        .events(events.recipient())
}

fn disconnects(events: &Events) -> usize {
    events
        .all()
        .iter()
        .filter(|e| matches!(e, ConsumerEvent::Connection(c) if matches!(c, actix_nsq::ConnectionEvent::Disconnected { .. })))
        .count()
}

#[actix_rt::test]
async fn a_blocking_handler_keeps_its_link_and_finishes() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "slow").unwrap();
    let events = Events::default();
    let consumer = heartbeat_builder(&nsqd, &events)
        .handler_blocking(1, || {
            |_d: Delivery| {
                std::thread::sleep(HEARTBEAT * 3);
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(nsqd.timed_out_count("events", "tests"), 0);
    assert_eq!(disconnects(&events), 0, "{:?}", events.all());
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn a_blocking_actor_on_its_own_arbiter_keeps_the_link_and_finishes() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "slow").unwrap();
    let events = Events::default();
    let arbiter = Arbiter::new();
    let consumer = heartbeat_builder(&nsqd, &events)
        .handler_actors_on(arbiter.handle(), 1, || Sleeper {
            hold: HEARTBEAT * 3,
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(nsqd.timed_out_count("events", "tests"), 0);
    assert_eq!(disconnects(&events), 0, "{:?}", events.all());
    assert_eq!(consumer.stop().await, 0);
    arbiter.stop();
}

#[actix_rt::test]
async fn a_panicking_blocking_handler_is_replaced_and_only_its_message_counts() {
    let nsqd = TestNsqd::start().unwrap();
    publish_six(&nsqd);
    let seen: Seen = Arc::default();
    let gave_up = Arc::new(AtomicUsize::new(0));
    let events = Events::default();
    let seen2 = seen.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(6)
        .events(events.recipient())
        .give_up_fn(counting_give_up(&gave_up))
        .handler_blocking(2, move || {
            let seen = seen2.clone();
            move |d: Delivery| -> HandlerResult {
                if body(&d) == "m0" && d.attempts() == 1 {
                    panic!("poison m0");
                }
                seen.lock().unwrap().insert(body(&d), d.attempts());
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| expect_all_six(&seen)).await, "{seen:?}");
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 6).await);
    assert_eq!(seen.lock().unwrap()["m0"], 2);
    assert_eq!(requeues(&nsqd), 1, "{:?}", lines(&nsqd));
    assert_eq!(gave_up.load(Ordering::SeqCst), 0);
    assert!(events.any(|e| matches!(
        e,
        ConsumerEvent::Handler(HandlerEvent::Restarted { restarts: 1, .. })
    )));
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn one_kind_of_handler_at_a_time() {
    let error = Consumer::builder("events", "tests")
        .nsqd("127.0.0.1:4150")
        .handler_fn(|_d: Delivery| async { Ok(()) })
        .handler_blocking(1, || |_d: Delivery| Ok(()))
        .start()
        .unwrap_err();
    assert!(error.to_string().contains("handler"), "{error}");
}
