//! The consumer against the in-process nsqd, asserting the exact command sequence nsqd saw
//! (as go-nsq's mock tests do).

#[path = "support/consumer.rs"]
mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    testing::TestNsqd, ConnectionConfig, Consumer, ConsumerEvent, Delivery, HandlerError,
    HandlerResult,
};
use support::{eventually, fast_reconnect, lines, Events, WAIT};

fn builder(nsqd: &TestNsqd) -> actix_nsq::ConsumerBuilder {
    Consumer::builder("events", "tests")
        .nsqd(nsqd.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
}

#[actix_rt::test]
async fn consumes_and_finishes_with_the_expected_commands() {
    let nsqd = TestNsqd::start().unwrap();
    for i in 0..3 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(5)
        .handler_fn(move |d: Delivery| {
            seen2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(d.body()).into_owned());
            async { Ok(()) }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 3).await);
    assert_eq!(
        lines(&nsqd),
        ["IDENTIFY", "SUB events tests", "RDY 5", "FIN", "FIN", "FIN"]
    );
    let mut bodies = seen.lock().unwrap().clone();
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.finished, stats.in_flight), (3, 3, 0));
    assert_eq!(stats.connections[0].rdy, 5);
    assert_eq!(stats.total_rdy, 5);
    assert_eq!(consumer.stop().await, 0);
    assert!(lines(&nsqd).ends_with(&["CLS".to_owned()]));
}

#[actix_rt::test]
async fn backoff_sequence_matches_go_nsq() {
    // go-nsq TestConsumerBackoff: a failure sends RDY 0, the pause passes, RDY 1 tests the
    // waters, the success that follows restores the full RDY.
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "good").unwrap();
    nsqd.publish("events", "bad").unwrap();
    let events = Events::default();
    let consumer = builder(&nsqd)
        .max_in_flight(5)
        .backoff_multiplier(Duration::from_millis(20))
        .default_requeue_delay(Duration::ZERO)
        .events(events.recipient())
        .handler_fn(|d: Delivery| async move {
            if d.body() == "bad" && d.attempts() == 1 {
                Err("first attempt fails".into())
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 2).await);
    assert_eq!(
        lines(&nsqd),
        [
            "IDENTIFY",
            "SUB events tests",
            "RDY 5",
            "FIN",
            "RDY 0",
            "REQ 0",
            "RDY 1",
            "RDY 5",
            "FIN"
        ]
    );
    assert!(events.any(|e| matches!(e, ConsumerEvent::BackoffStarted { level: 1, .. })));
    assert!(eventually(|| events.any(|e| matches!(e, ConsumerEvent::BackoffEnded))).await);
    assert_eq!(consumer.stats().backoff_level, 0);
    consumer.stop().await;
}

#[actix_rt::test]
async fn requeue_without_backoff_keeps_rdy() {
    // go-nsq TestConsumerRequeueNoBackoff: REQ without backoff outside a backoff window changes
    // nothing about RDY.
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "again").unwrap();
    let consumer = builder(&nsqd)
        .max_in_flight(5)
        .handler_fn(|d: Delivery| async move {
            if d.attempts() == 1 {
                Err(HandlerError::new("not yet")
                    .requeue_after(Duration::ZERO)
                    .without_backoff())
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(
        lines(&nsqd),
        ["IDENTIFY", "SUB events tests", "RDY 5", "REQ 0", "FIN"]
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn pause_and_resume() {
    // go-nsq TestConsumerPause: RDY 5, then 0, then 5 again.
    let nsqd = TestNsqd::start().unwrap();
    let consumer = builder(&nsqd)
        .max_in_flight(5)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| lines(&nsqd).len() == 3).await);
    consumer.set_max_in_flight(0);
    assert!(eventually(|| lines(&nsqd).len() == 4).await);
    nsqd.publish("events", "while paused").unwrap();
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        nsqd.depth("events", "tests"),
        1,
        "nothing is delivered while paused"
    );
    consumer.set_max_in_flight(5);
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(
        lines(&nsqd),
        [
            "IDENTIFY",
            "SUB events tests",
            "RDY 5",
            "RDY 0",
            "RDY 5",
            "FIN"
        ]
    );
    consumer.stop().await;
}

/// A handler actor with a counter, answering through its result.
struct Counter(Arc<AtomicUsize>);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Counter {
    type Result = HandlerResult;
    fn handle(&mut self, d: Delivery, _: &mut Context<Self>) -> HandlerResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        if d.body().is_empty() {
            return Err("empty".into());
        }
        Ok(())
    }
}

#[actix_rt::test]
async fn several_handler_actors_share_the_work() {
    let nsqd = TestNsqd::start().unwrap();
    for i in 0..200 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let counts: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut b = builder(&nsqd).max_in_flight(50);
    for count in &counts {
        b = b.handler(Counter(count.clone()).start().recipient());
    }
    let consumer = b.start().unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 200).await);
    for count in &counts {
        assert!(count.load(Ordering::SeqCst) > 30, "every actor got a share");
    }
    consumer.stop().await;
}

#[actix_rt::test]
async fn kept_deliveries_are_answered_later_and_touched() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "slow").unwrap();
    let consumer = builder(&nsqd)
        .max_in_flight(1)
        .handler_fn(|d: Delivery| {
            // Move the delivery into a task: the handler's own result no longer answers it.
            actix_rt::spawn(async move {
                d.touch().unwrap();
                actix_rt::time::sleep(Duration::from_millis(50)).await;
                d.finish().unwrap();
            });
            async { Ok(()) }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(
        lines(&nsqd),
        ["IDENTIFY", "SUB events tests", "RDY 1", "TOUCH", "FIN"]
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn dropped_deliveries_are_requeued_at_once() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "dropped").unwrap();
    let consumer = builder(&nsqd)
        .max_in_flight(1)
        .max_backoff_duration(Duration::ZERO)
        .handler_fn(|d: Delivery| {
            if d.attempts() == 1 {
                // Kept past the handler (whose Ok is then ignored), dropped unanswered later.
                actix_rt::spawn(async move {
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                    drop(d)
                });
            } else {
                d.finish().unwrap();
            }
            async { Ok(()) }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(
        lines(&nsqd),
        ["IDENTIFY", "SUB events tests", "RDY 1", "REQ 0", "FIN"]
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn a_panicking_handler_requeues_and_the_consumer_lives_on() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "poison").unwrap();
    let events = Events::default();
    let consumer = builder(&nsqd)
        .events(events.recipient())
        .max_in_flight(1)
        .default_requeue_delay(Duration::ZERO)
        .max_backoff_duration(Duration::ZERO)
        .handler_fn(|d: Delivery| async move {
            if d.attempts() == 1 {
                panic!("poison message");
            }
            Ok(())
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(
        lines(&nsqd),
        ["IDENTIFY", "SUB events tests", "RDY 1", "REQ 0", "FIN"]
    );
    let reported = |e: &ConsumerEvent| {
        matches!(e, ConsumerEvent::Connection(actix_nsq::ConnectionEvent::HandlerFailed { reason, .. })
            if reason == "handler panicked: poison message")
    };
    assert!(
        eventually(|| events.any(reported)).await,
        "{:?}",
        events.all()
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn messages_past_max_attempts_go_to_the_give_up_hook() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "always fails").unwrap();
    let given_up = Arc::new(Mutex::new(Vec::new()));
    let given_up2 = given_up.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(1)
        .max_attempts(2)
        .default_requeue_delay(Duration::ZERO)
        .max_backoff_duration(Duration::ZERO)
        .handler_fn(|_| async { Err("broken".into()) })
        .give_up_fn(move |d: Delivery| {
            given_up2.lock().unwrap().push(d.attempts());
            async { Ok(()) }
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(*given_up.lock().unwrap(), [3]);
    assert_eq!(
        lines(&nsqd),
        [
            "IDENTIFY",
            "SUB events tests",
            "RDY 1",
            "REQ 0",
            "REQ 0",
            "FIN"
        ]
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn default_requeue_delay_scales_with_attempts() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "x").unwrap();
    let consumer = builder(&nsqd)
        .max_in_flight(1)
        .default_requeue_delay(Duration::from_secs(90))
        .max_requeue_delay(Duration::from_secs(900))
        .max_backoff_duration(Duration::ZERO)
        .handler_fn(|_| async { Err("later".into()) })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.requeued_count("events", "tests") == 1).await);
    assert_eq!(lines(&nsqd)[3], "REQ 90000");
    consumer.stop().await;
}

#[actix_rt::test]
async fn graceful_stop_finishes_in_flight_work() {
    let nsqd = TestNsqd::start().unwrap();
    for i in 0..3 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let started = Arc::new(AtomicUsize::new(0));
    let started2 = started.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(3)
        .handler_fn(move |_| {
            started2.fetch_add(1, Ordering::SeqCst);
            async {
                actix_rt::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    assert!(eventually(|| started.load(Ordering::SeqCst) == 3).await);
    assert_eq!(consumer.stop().await, 0, "nothing abandoned");
    // The FINs were flushed before stop() resolved; nsqd processes them on its own thread.
    assert!(
        eventually(|| nsqd.finished_count("events", "tests") == 3).await,
        "{:?}",
        lines(&nsqd)
    );
    let lines = lines(&nsqd);
    let cls = lines.iter().position(|l| l == "CLS").unwrap();
    assert_eq!(
        lines[cls + 1..],
        ["FIN", "FIN", "FIN"],
        "answers after CLS: {lines:?}"
    );
}

#[actix_rt::test]
async fn stop_deadline_abandons_stuck_work() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "stuck").unwrap();
    let consumer = builder(&nsqd)
        .max_in_flight(1)
        .handler_fn(|_| async {
            actix_rt::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.in_flight("events", "tests") == 1).await);
    let abandoned = actix_rt::time::timeout(WAIT, consumer.stop_within(Duration::from_millis(200)))
        .await
        .expect("stop must respect its deadline");
    assert_eq!(abandoned, 1);
}

#[actix_rt::test]
async fn invalid_configuration_names_the_field() {
    let nsqd = TestNsqd::start().unwrap();
    let cases = [
        (
            builder(&nsqd)
                .handler_fn(|_| async { Ok(()) })
                .max_attempts(70_000),
            "max_attempts",
        ),
        (builder(&nsqd), "handler"),
        (
            Consumer::builder("events", "tests").handler_fn(|_| async { Ok(()) }),
            "nsqd",
        ),
        (
            builder(&nsqd)
                .handler_fn(|_| async { Ok(()) })
                .lookupd_poll_jitter(2.0),
            "lookupd_poll_jitter",
        ),
        (
            builder(&nsqd)
                .handler_fn(|_| async { Ok(()) })
                .connection(ConnectionConfig::new().heartbeat_interval(None)),
            "heartbeat_interval",
        ),
        (
            builder(&nsqd)
                .handler_fn(|_| async { Ok(()) })
                .max_backoff_duration(Duration::from_secs(7200)),
            "max_backoff_duration",
        ),
    ];
    for (b, field) in cases {
        match b.start() {
            Err(actix_nsq::Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let bad_topic = Consumer::builder("bad topic", "c")
        .nsqd("h:1")
        .handler_fn(|_| async { Ok(()) });
    assert!(matches!(
        bad_topic.start(),
        Err(actix_nsq::Error::InvalidName { .. })
    ));
}
