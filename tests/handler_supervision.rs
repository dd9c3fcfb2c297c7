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

/// Six messages waiting on a test nsqd, and what the consumer's handlers and hooks saw.
struct Run {
    nsqd: TestNsqd,
    seen: Seen,
    gave_up: Arc<AtomicUsize>,
    events: Events,
}

impl Run {
    fn new() -> Self {
        let nsqd = TestNsqd::start().unwrap();
        for i in 0..6 {
            nsqd.publish("events", format!("m{i}")).unwrap();
        }
        Self {
            nsqd,
            seen: Arc::default(),
            gave_up: Arc::default(),
            events: Events::default(),
        }
    }

    /// All six may be in flight at once (so all sit in a handler actor's mailbox when it
    /// panics), and `max_attempts` is one more than the poison message needs: a message that
    /// burned an attempt without a handler seeing it would reach the give-up hook.
    fn builder(&self) -> actix_nsq::ConsumerBuilder {
        let gave_up = self.gave_up.clone();
        Consumer::builder("events", "tests")
            .nsqd(self.nsqd.addr().to_string())
            .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
            .backoff_multiplier(Duration::from_millis(10))
            .default_requeue_delay(Duration::ZERO)
            .max_attempts(2)
            .max_in_flight(6)
            .events(self.events.recipient())
            .give_up_fn(move |_d: Delivery| {
                gave_up.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok(()))
            })
    }

    /// Records a successful delivery; panics on the first attempt of `m0`.
    fn handle(seen: &Seen, d: &Delivery, poison: bool) {
        if poison && body(d) == "m0" && d.attempts() == 1 {
            panic!("poison m0");
        }
        seen.lock().unwrap().insert(body(d), d.attempts());
    }

    /// Every message handled and finished; `m0` on `m0_attempt`, every other on its first
    /// attempt; `requeued` REQs on the wire; nothing given up.
    async fn expect_all_handled(&self, m0_attempt: u32, requeued: usize) {
        let seen = &self.seen;
        assert!(
            eventually(|| seen.lock().unwrap().len() == 6).await,
            "{seen:?}"
        );
        assert!(eventually(|| self.nsqd.finished_count("events", "tests") == 6).await);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen["m0"], m0_attempt, "{seen:?}");
        assert!(
            seen.iter()
                .filter(|(b, _)| *b != "m0")
                .all(|(_, a)| *a == 1),
            "{seen:?}"
        );
        assert_eq!(self.gave_up.load(Ordering::SeqCst), 0);
        let requeues = lines(&self.nsqd)
            .iter()
            .filter(|l| l.starts_with("REQ"))
            .count();
        assert_eq!(requeues, requeued, "{:?}", lines(&self.nsqd));
    }

    fn saw(&self, event: HandlerEvent) -> bool {
        self.events
            .any(|e| matches!(e, ConsumerEvent::Handler(h) if *h == event))
    }
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(d.body()).into_owned()
}

/// A handler actor; panics on the first attempt of `m0` when `poison`, stops itself (a
/// graceful stop, after answering) on `m0` when `quit`.
struct Indexer {
    seen: Seen,
    poison: bool,
    quit: bool,
}

impl Actor for Indexer {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Indexer {
    type Result = HandlerResult;

    fn handle(&mut self, d: Delivery, ctx: &mut Context<Self>) -> HandlerResult {
        Run::handle(&self.seen, &d, self.poison);
        if self.quit && body(&d) == "m0" {
            ctx.stop();
        }
        Ok(())
    }
}

#[actix_rt::test]
async fn a_panicking_handler_actor_is_restarted_and_only_its_message_counts() {
    let run = Run::new();
    let seen = run.seen.clone();
    let consumer = run
        .builder()
        .handler_actors(1, move || Indexer {
            seen: seen.clone(),
            poison: true,
            quit: false,
        })
        .start()
        .unwrap();
    // The poison message failed once and succeeded on its second attempt; the five queued
    // behind it in the dead actor's mailbox went to its successor on their first attempt.
    run.expect_all_handled(2, 1).await;
    assert!(run.saw(HandlerEvent::Restarted {
        slot: 0,
        restarts: 1
    }));
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn a_panicking_handler_closure_requeues_only_its_message() {
    let run = Run::new();
    let seen = run.seen.clone();
    let consumer = run
        .builder()
        .handler_fn(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                Run::handle(&seen, &d, true);
                Ok(())
            }
        })
        .start()
        .unwrap();
    run.expect_all_handled(2, 1).await;
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn an_actor_that_stops_is_restarted_and_its_mailbox_goes_to_the_successor() {
    let run = Run::new();
    let seen = run.seen.clone();
    let consumer = run
        .builder()
        .handler_actors(1, move || Indexer {
            seen: seen.clone(),
            poison: false,
            quit: true,
        })
        .start()
        .unwrap();
    // A stop is no failure: nothing requeued, every message handled on its first attempt.
    run.expect_all_handled(1, 0).await;
    assert!(run.saw(HandlerEvent::Restarted {
        slot: 0,
        restarts: 1
    }));
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn a_dead_actor_without_factory_pauses_the_consumer_and_burns_nothing() {
    let run = Run::new();
    let indexer = Indexer {
        seen: run.seen.clone(),
        poison: true,
        quit: false,
    }
    .start();
    let consumer = run.builder().handler(indexer.recipient()).start().unwrap();
    assert!(eventually(|| run.saw(HandlerEvent::Unavailable)).await);
    assert!(run.saw(HandlerEvent::Stopped { slot: 0 }));
    // The consumer takes nothing more while no handler is alive: RDY 0, and it stays there
    // (past the poison message's backoff, which would otherwise restore it).
    assert!(
        eventually(|| consumer.stats().total_rdy == 0).await,
        "{:?}",
        consumer.stats()
    );
    for _ in 0..20 {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(consumer.stats().total_rdy, 0, "{:?}", consumer.stats());
    }
    // Stopping releases what it held: REQ without backoff, nothing finished or given up.
    consumer.stop_within(Duration::from_secs(5)).await;
    let nsqd = &run.nsqd;
    assert_eq!(nsqd.finished_count("events", "tests"), 0);
    assert_eq!(run.gave_up.load(Ordering::SeqCst), 0);
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

/// One message on a test nsqd that drops clients after two missed 1 s heartbeats.
fn heartbeat_builder(nsqd: &TestNsqd, events: &Events) -> actix_nsq::ConsumerBuilder {
    nsqd.publish("events", "slow").unwrap();
    Consumer::builder("events", "tests")
        .nsqd(nsqd.addr().to_string())
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
    let run = Run::new();
    let seen = run.seen.clone();
    let consumer = run
        .builder()
        .handler_blocking(2, move || {
            let seen = seen.clone();
            move |d: Delivery| -> HandlerResult {
                Run::handle(&seen, &d, true);
                Ok(())
            }
        })
        .start()
        .unwrap();
    run.expect_all_handled(2, 1).await;
    assert!(run.events.any(|e| matches!(
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
