//! The `metrics` feature against the in-process nsqd: what consumers and producers record,
//! with which labels, read back from `metrics-util`'s `DebuggingRecorder`, installed for the
//! test's thread only (`metrics::with_local_recorder`), so tests do not see each other.

use std::{
    collections::HashMap,
    net::TcpListener,
    time::{Duration, Instant},
};

use actix::prelude::*;
use actix_nsq::{
    metrics as names, testing::TestNsqd, Consumer, ConsumerBuilder, Delivery, Error, HandlerError,
    HandlerResult, Producer,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

const WAIT: Duration = Duration::from_secs(15);
const TOPIC: &str = "measured";
const CHANNEL: &str = "metrics";
const GOOD: u64 = 10;

/// `name{label="value",...}` with the labels sorted, for every metric recorded.
fn recorded(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={:?}", l.key(), l.value()))
                .collect();
            labels.sort();
            (
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            )
        })
        .collect()
}

/// Adds a later snapshot to `totals` (the recorder resets counters and gauges on each).
fn merge(totals: &mut HashMap<String, DebugValue>, later: HashMap<String, DebugValue>) {
    for (key, value) in later {
        match (totals.get_mut(&key), value) {
            (Some(DebugValue::Counter(total)), DebugValue::Counter(n)) => *total += n,
            (Some(DebugValue::Histogram(all)), DebugValue::Histogram(more)) => all.extend(more),
            (_, value) => {
                totals.insert(key, value);
            }
        }
    }
}

fn counter(values: &HashMap<String, DebugValue>, key: &str) -> u64 {
    match values.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{key}: {other:?}; recorded: {:#?}", values.keys()),
    }
}

fn gauge(values: &HashMap<String, DebugValue>, key: &str) -> f64 {
    match values.get(key) {
        Some(DebugValue::Gauge(n)) => n.into_inner(),
        other => panic!("{key}: {other:?}; recorded: {:#?}", values.keys()),
    }
}

fn histogram(values: &HashMap<String, DebugValue>, key: &str) -> Vec<f64> {
    match values.get(key) {
        Some(DebugValue::Histogram(samples)) => samples.iter().map(|s| s.into_inner()).collect(),
        other => panic!("{key}: {other:?}; recorded: {:#?}", values.keys()),
    }
}

/// Runs `test` in a fresh actix System with `recorder` as this thread's recorder.
fn with_recorder<F: std::future::Future<Output = ()>>(recorder: &DebuggingRecorder, test: F) {
    metrics::with_local_recorder(recorder, || actix_rt::System::new().block_on(test));
}

async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// "poison" fails every time, without backoff or delay, so that after `max_attempts` (2) it
/// goes to the give-up hook (the default one logs and finishes it); the rest succeed.
fn handle(delivery: &Delivery) -> HandlerResult {
    if delivery.body() == "poison" {
        return Err(HandlerError::new("poison")
            .requeue_after(Duration::ZERO)
            .without_backoff());
    }
    Ok(())
}

struct Handler;

impl Actor for Handler {
    type Context = Context<Self>;
}

impl actix::Handler<Delivery> for Handler {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        handle(&delivery)
    }
}

/// Publishes `GOOD` messages and a poison one through a producer, consumes them with the
/// handler `with_handler` installs, stops, and checks every consumer metric and the publish
/// latency, with their labels.
fn consume_and_check(with_handler: fn(ConsumerBuilder) -> ConsumerBuilder) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    let conn = format!("{{channel=\"{CHANNEL}\",nsqd=\"{addr}\",topic=\"{TOPIC}\"}}");
    let at = |name: &str| format!("{name}{conn}");
    let mut values = HashMap::new();
    with_recorder(&recorder, async {
        let producer = Producer::builder().nsqd(&addr).start().unwrap();
        for i in 0..GOOD {
            producer.publish(TOPIC, format!("m{i}")).await.unwrap();
        }
        producer.publish(TOPIC, "poison").await.unwrap();
        let consumer = with_handler(Consumer::builder(TOPIC, CHANNEL))
            .nsqd(&addr)
            .max_in_flight(5)
            .max_attempts(2)
            .start()
            .unwrap();
        let settled = eventually(|| {
            let stats = consumer.stats();
            stats.finished == GOOD + 1 && stats.requeued == 2
        })
        .await;
        assert!(settled, "{:?}", consumer.stats());
        // While it runs, the sampler shows the connection's RDY (all of max_in_flight).
        let rdy_shown = eventually(|| {
            let now = recorded(&snapshotter);
            let rdy_is_5 = now.get(&at(names::RDY)) == Some(&DebugValue::Gauge(5.0.into()));
            merge(&mut values, now);
            rdy_is_5
        })
        .await;
        assert!(rdy_shown, "{values:#?}");
        assert_eq!(consumer.stop().await, 0);
        producer.stop().await;
    });

    merge(&mut values, recorded(&snapshotter));
    // The poison message came three times: two failures (REQ), then the give-up (FIN).
    assert_eq!(counter(&values, &at(names::MESSAGES_RECEIVED)), GOOD + 3);
    assert_eq!(counter(&values, &at(names::MESSAGES_FINISHED)), GOOD + 1);
    assert_eq!(counter(&values, &at(names::MESSAGES_REQUEUED)), 2);
    assert_eq!(counter(&values, &at(names::MESSAGES_GIVEN_UP)), 1);
    assert_eq!(counter(&values, &at(names::RECONNECTS)), 0);
    // The handler ran for every delivery but the given-up one.
    let handler_times = histogram(&values, &at(names::HANDLER_SECONDS));
    assert_eq!(handler_times.len() as u64, GOOD + 2);
    assert!(handler_times
        .iter()
        .all(|s| (0.0..WAIT.as_secs_f64()).contains(s)));
    // Stopped: nothing in flight, no RDY out.
    assert_eq!(gauge(&values, &at(names::IN_FLIGHT)), 0.0);
    assert_eq!(gauge(&values, &at(names::RDY)), 0.0);
    let consumer = format!(
        "{}{{channel=\"{CHANNEL}\",topic=\"{TOPIC}\"}}",
        names::BACKOFF_LEVEL
    );
    assert_eq!(gauge(&values, &consumer), 0.0);

    let publish = format!(
        "{}{{nsqd=\"{addr}\",topic=\"{TOPIC}\"}}",
        names::PUBLISH_SECONDS
    );
    assert_eq!(histogram(&values, &publish).len() as u64, GOOD + 1);
    assert!(
        !values.keys().any(|k| k.starts_with(names::PUBLISH_ERRORS)),
        "no publish failed: {values:#?}"
    );
}

#[test]
fn a_closure_handler_is_measured_per_connection() {
    consume_and_check(|builder| builder.handler_fn(|d: Delivery| async move { handle(&d) }));
}

#[test]
fn an_actor_handler_is_measured_per_connection() {
    consume_and_check(|builder| builder.handler(Handler.start().recipient()));
}

#[test]
fn publish_errors_are_counted_by_nsqd_and_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    // A port nothing listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut unrouted = None;
    with_recorder(&recorder, async {
        // Past nsqd's --max-req-timeout (1 h): nsqd answers E_INVALID (and closes the link).
        let producer = Producer::builder()
            .nsqd(&addr)
            .max_defer(Duration::from_secs(7200))
            .start()
            .unwrap();
        producer.publish(TOPIC, "fine").await.unwrap();
        let refused = producer
            .deferred_publish(TOPIC, Duration::from_secs(3601), "too late")
            .await;
        assert!(matches!(refused, Err(Error::Server(_))), "{refused:?}");
        producer.stop().await;

        let nowhere = Producer::builder()
            .nsqd(closed.to_string())
            .request_timeout(Duration::from_secs(5))
            .start()
            .unwrap();
        unrouted = Some(nowhere.publish(TOPIC, "lost").await);
        nowhere.stop().await;
    });

    let values = recorded(&snapshotter);
    let on_nsqd =
        |name: &str, extra: &str| format!("{name}{{{extra}nsqd=\"{addr}\",topic=\"{TOPIC}\"}}");
    // nsqd answered both publishes: both have a latency.
    assert_eq!(
        histogram(&values, &on_nsqd(names::PUBLISH_SECONDS, "")).len(),
        2
    );
    assert_eq!(
        counter(
            &values,
            &on_nsqd(names::PUBLISH_ERRORS, "error=\"server\",")
        ),
        1
    );
    // E_INVALID is fatal: nsqd closed the link, and the producer reconnected.
    let reconnects = format!("{}{{nsqd=\"{addr}\"}}", names::PRODUCER_RECONNECTS);
    assert_eq!(counter(&values, &reconnects), 1);
    // Nothing reached an nsqd: counted under nsqd="none", with why.
    let unrouted = unrouted.expect("the publish ran");
    assert!(
        matches!(unrouted, Err(Error::Connect { .. })),
        "{unrouted:?}"
    );
    let none = format!(
        "{}{{error=\"connect\",nsqd=\"none\",topic=\"{TOPIC}\"}}",
        names::PUBLISH_ERRORS
    );
    assert_eq!(counter(&values, &none), 1);
    let errors: Vec<_> = values
        .keys()
        .filter(|k| k.starts_with(names::PUBLISH_ERRORS))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn describe_gives_every_metric_a_help_text() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        names::describe();
        // The debugging recorder lists a description with a metric that was registered.
        for name in [
            names::MESSAGES_RECEIVED,
            names::MESSAGES_FINISHED,
            names::MESSAGES_REQUEUED,
            names::MESSAGES_GIVEN_UP,
            names::RECONNECTS,
            names::PRODUCER_RECONNECTS,
            names::PUBLISH_ERRORS,
        ] {
            metrics::counter!(name).increment(1);
        }
        for name in [names::RDY, names::IN_FLIGHT, names::BACKOFF_LEVEL] {
            metrics::gauge!(name).set(1.0);
        }
        for name in [names::HANDLER_SECONDS, names::PUBLISH_SECONDS] {
            metrics::histogram!(name).record(1.0);
        }
    });
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(snapshot.len(), 12);
    for (key, unit, description, _) in snapshot {
        let name = key.key().name();
        assert!(description.is_some_and(|d| !d.is_empty()), "{name}");
        let seconds = name.ends_with("_seconds");
        let expected = if seconds {
            metrics::Unit::Seconds
        } else {
            metrics::Unit::Count
        };
        assert_eq!(unit, Some(expected), "{name}");
    }
}
