//! Lifecycle events (any number of listeners, added and removed at run time) and the hooks
//! that run before the handler, against the in-process nsqd. Every promise about handlers is
//! checked with both kinds: an actor (`.handler(recipient)`) and a closure (`.handler_fn`).

#[path = "support/consumer.rs"]
mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    testing::TestNsqd, ConnectionConfig, ConnectionEvent, Consumer, ConsumerBuilder, ConsumerEvent,
    Delivery, HandlerResult, MessageEvent, Producer,
};
use support::{eventually, fast_reconnect, Events};

const TOPIC: &str = "events";
const CHANNEL: &str = "listen";

fn builder(nsqd: &TestNsqd) -> ConsumerBuilder {
    Consumer::builder(TOPIC, CHANNEL)
        .nsqd(nsqd.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .max_in_flight(5)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Actor,
    Closure,
}

/// What the handlers of these tests do: `ok` finishes, `fail` returns `Err`, `touch` touches
/// then finishes. Records the bodies it saw.
fn handle(seen: &Mutex<Vec<String>>, d: &Delivery) -> HandlerResult {
    let body = String::from_utf8_lossy(d.body()).into_owned();
    seen.lock().unwrap().push(body.clone());
    match body.as_str() {
        "fail" => Err("nope".into()),
        "touch" => {
            d.touch().map_err(actix_nsq::HandlerError::new)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

struct Recorder(Arc<Mutex<Vec<String>>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Recorder {
    type Result = HandlerResult;
    fn handle(&mut self, d: Delivery, _: &mut Context<Self>) -> HandlerResult {
        handle(&self.0, &d)
    }
}

fn with_handler(
    builder: ConsumerBuilder,
    kind: Kind,
    seen: &Arc<Mutex<Vec<String>>>,
) -> ConsumerBuilder {
    let seen = seen.clone();
    match kind {
        Kind::Actor => builder.handler(Recorder(seen).start().recipient()),
        Kind::Closure => builder.handler_fn(move |d: Delivery| {
            let result = handle(&seen, &d);
            async move { result }
        }),
    }
}

fn message_events(events: &Events) -> Vec<MessageEvent> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn count(events: &[MessageEvent], pred: impl Fn(&MessageEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

async fn every_message_outcome_is_an_event(kind: Kind) {
    let nsqd = TestNsqd::start().unwrap();
    for body in ["ok", "fail", "touch"] {
        nsqd.publish(TOPIC, body).unwrap();
    }
    let (all, lifecycle) = (Events::default(), Events::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = with_handler(builder(&nsqd), kind, &seen)
        .max_attempts(1)
        .default_requeue_delay(Duration::ZERO)
        .max_backoff_duration(Duration::ZERO)
        .message_events(all.recipient())
        .events(lifecycle.recipient())
        .start()
        .unwrap();
    // ok, touch, and the failed one once it came back past max_attempts (the give-up hook's
    // default logs and finishes it).
    assert!(eventually(|| nsqd.finished_count(TOPIC, CHANNEL) == 3).await);
    assert!(
        eventually(|| count(&message_events(&all), |e| matches!(
            e,
            MessageEvent::Finished { .. }
        )) == 3)
        .await,
        "{kind:?}: {:#?}",
        all.all()
    );
    let events = message_events(&all);
    assert_eq!(
        count(&events, |e| matches!(e, MessageEvent::Received { .. })),
        4,
        "{events:#?}"
    );
    let received: Vec<(String, u32)> = events
        .iter()
        .filter_map(|e| match e {
            MessageEvent::Received {
                body,
                attempts,
                addr,
                ..
            } => {
                assert_eq!(&**addr, nsqd.addr().to_string());
                Some((String::from_utf8_lossy(body).into_owned(), *attempts))
            }
            _ => None,
        })
        .collect();
    assert!(received.contains(&("fail".to_owned(), 2)), "{received:?}");
    assert_eq!(
        count(&events, |e| matches!(
            e,
            MessageEvent::Requeued { delay, backoff: true, .. } if delay.is_zero()
        )),
        1,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, |e| matches!(e, MessageEvent::Touched { .. })),
        1
    );
    assert_eq!(
        count(&events, |e| matches!(
            e,
            MessageEvent::HandlerFailed { error, panicked: false, .. } if error == "nope"
        )),
        1,
        "an Err result is a failure event, not only a panic: {events:#?}"
    );
    assert_eq!(
        count(&events, |e| matches!(
            e,
            MessageEvent::GivingUp { attempts: 2, .. }
        )),
        1
    );
    // Per message: received comes first, its answer after.
    let finished_first = events
        .iter()
        .position(|e| matches!(e, MessageEvent::Finished { .. }));
    let received_first = events
        .iter()
        .position(|e| matches!(e, MessageEvent::Received { .. }));
    assert!(received_first < finished_first);
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "the handler saw ok, fail, touch once each"
    );
    // A lifecycle listener gets no per-message events, but the connection's.
    assert!(message_events(&lifecycle).is_empty());
    assert!(lifecycle.any(|e| matches!(
        e,
        ConsumerEvent::Connection(ConnectionEvent::Connected { .. })
    )));
    assert!(lifecycle.any(|e| matches!(
        e,
        ConsumerEvent::Connection(ConnectionEvent::Identified { .. })
    )));
    consumer.stop().await;
}

#[actix_rt::test]
async fn message_events_cover_every_outcome_with_an_actor_handler() {
    every_message_outcome_is_an_event(Kind::Actor).await;
}

#[actix_rt::test]
async fn message_events_cover_every_outcome_with_a_closure_handler() {
    every_message_outcome_is_an_event(Kind::Closure).await;
}

#[actix_rt::test]
async fn a_panicking_closure_is_a_failure_event() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish(TOPIC, "boom").unwrap();
    let all = Events::default();
    let consumer = builder(&nsqd)
        .max_backoff_duration(Duration::ZERO)
        .message_events(all.recipient())
        .handler_fn(|_d: Delivery| async { panic!("poison") })
        .start()
        .unwrap();
    assert!(
        eventually(|| message_events(&all).iter().any(|e| matches!(
            e,
            MessageEvent::HandlerFailed { error, panicked: true, .. } if error == "poison"
        )))
        .await
    );
    consumer.stop_within(Duration::from_millis(200)).await;
}

#[actix_rt::test]
async fn listeners_come_and_go_at_run_time() {
    let nsqd = TestNsqd::start().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = with_handler(builder(&nsqd), Kind::Closure, &seen)
        .start()
        .unwrap();
    let (a, b) = (Events::default(), Events::default());
    let id_a = consumer.subscribe_messages(a.recipient());
    let id_b = consumer.subscribe(b.recipient());
    assert_ne!(id_a, id_b);
    // The coordinator takes the listeners in on its next turn.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    nsqd.publish(TOPIC, "first").unwrap();
    assert!(
        eventually(|| count(&message_events(&a), |e| matches!(
            e,
            MessageEvent::Finished { .. }
        )) == 1)
        .await
    );
    assert!(
        message_events(&b).is_empty(),
        "b did not ask for message events"
    );

    consumer.unsubscribe(id_a);
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    nsqd.publish(TOPIC, "second").unwrap();
    assert!(eventually(|| nsqd.finished_count(TOPIC, CHANNEL) == 2).await);
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        count(&message_events(&a), |e| matches!(
            e,
            MessageEvent::Received { .. }
        )),
        1,
        "unsubscribed: nothing about the second message"
    );
    assert_eq!(consumer.stop().await, 0);
    // The one still subscribed hears the consumer stop, last.
    assert!(eventually(|| b.any(|e| matches!(e, ConsumerEvent::Stopped { abandoned: 0 }))).await);
    assert!(matches!(
        b.all().last(),
        Some(ConsumerEvent::Stopped { .. })
    ));
    assert!(!a.any(|e| matches!(e, ConsumerEvent::Stopped { .. })));
}

#[actix_rt::test]
async fn heartbeats_responses_and_close_are_events() {
    let nsqd = TestNsqd::start().unwrap();
    let events = Events::default();
    let consumer = Consumer::builder(TOPIC, CHANNEL)
        .nsqd(nsqd.addr().to_string())
        .connection(ConnectionConfig::new().heartbeat_interval(Some(Duration::from_secs(1))))
        .events(events.recipient())
        .handler_fn(|_d: Delivery| async { Ok(()) })
        .start()
        .unwrap();
    assert!(
        eventually(|| events.any(|e| matches!(
            e,
            ConsumerEvent::Connection(ConnectionEvent::Heartbeat { .. })
        )))
        .await
    );
    consumer.stop().await;
    assert!(eventually(|| events.any(|e| matches!(e, ConsumerEvent::Stopped { .. }))).await);
    let all = events.all();
    let position = |pred: &dyn Fn(&ConsumerEvent) -> bool| all.iter().position(pred);
    let identified = position(
        &|e| matches!(e, ConsumerEvent::Connection(ConnectionEvent::Identified { identify, .. }) if !identify.version.is_empty()),
    );
    let connected = position(&|e| {
        matches!(
            e,
            ConsumerEvent::Connection(ConnectionEvent::Connected { .. })
        )
    });
    let close_wait = position(&|e| {
        matches!(
            e,
            ConsumerEvent::Connection(ConnectionEvent::Response {
                response: "CLOSE_WAIT",
                ..
            })
        )
    });
    let closed =
        position(&|e| matches!(e, ConsumerEvent::Connection(ConnectionEvent::Closed { .. })));
    assert!(identified.is_some() && connected.is_some(), "{all:#?}");
    assert!(close_wait.is_some() && closed.is_some(), "{all:#?}");
    assert!(matches!(
        all.last(),
        Some(ConsumerEvent::Stopped { abandoned: 0 })
    ));
}

/// Records a producer's events.
#[derive(Clone, Default)]
struct ConnEvents(Arc<Mutex<Vec<ConnectionEvent>>>);

struct ConnSink(ConnEvents);

impl Actor for ConnSink {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for ConnSink {
    type Result = ();
    fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
        self.0 .0.lock().unwrap().push(event);
    }
}

impl ConnEvents {
    fn recipient(&self) -> Recipient<ConnectionEvent> {
        ConnSink(self.clone()).start().recipient()
    }

    fn oks(&self) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| matches!(e, ConnectionEvent::Response { response: "OK", .. }))
            .count()
    }
}

#[actix_rt::test]
async fn producer_listeners_come_and_go_and_see_responses() {
    let nsqd = TestNsqd::start().unwrap();
    let (first, second) = (ConnEvents::default(), ConnEvents::default());
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .events(first.recipient())
        .start()
        .unwrap();
    let id = producer.subscribe(second.recipient());
    producer.publish(TOPIC, "one").await.unwrap();
    assert!(eventually(|| first.oks() == 1 && second.oks() == 1).await);
    assert!(first
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, ConnectionEvent::Identified { .. })));
    producer.unsubscribe(id);
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    producer.publish(TOPIC, "two").await.unwrap();
    assert!(eventually(|| first.oks() == 2).await);
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(second.oks(), 1, "unsubscribed");
    producer.stop().await;
}

async fn hooks_run_before_the_handler(kind: Kind) {
    let nsqd = TestNsqd::start().unwrap();
    for body in ["good", "bad"] {
        nsqd.publish(TOPIC, body).unwrap();
    }
    let events = Events::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = with_handler(builder(&nsqd), kind, &seen)
        .preprocess(|body| bytes::Bytes::from(body.to_ascii_uppercase()))
        .validate_with(|d: &Delivery| {
            if d.body().starts_with(b"BAD") {
                Err(format!("{} is bad", String::from_utf8_lossy(d.body())))
            } else {
                Ok(())
            }
        })
        .message_events(events.recipient())
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count(TOPIC, CHANNEL) == 2).await);
    assert_eq!(
        *seen.lock().unwrap(),
        ["GOOD"],
        "{kind:?}: transformed, and the rejected one never reached the handler"
    );
    assert!(
        eventually(|| message_events(&events).iter().any(|e| matches!(
            e,
            MessageEvent::Rejected { reason, given_up: false, .. } if reason == "BAD is bad"
        )))
        .await
    );
    // The Received event shows the body as nsqd sent it.
    assert!(message_events(&events)
        .iter()
        .any(|e| matches!(e, MessageEvent::Received { body, .. } if &body[..] == b"bad")));
    assert_eq!(nsqd.requeued_count(TOPIC, CHANNEL), 0);
    consumer.stop().await;
}

#[actix_rt::test]
async fn preprocess_and_validate_with_an_actor_handler() {
    hooks_run_before_the_handler(Kind::Actor).await;
}

#[actix_rt::test]
async fn preprocess_and_validate_with_a_closure_handler() {
    hooks_run_before_the_handler(Kind::Closure).await;
}

async fn rejected_messages_can_go_to_the_give_up_hook(kind: Kind) {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish(TOPIC, "bad").unwrap();
    nsqd.publish(TOPIC, "fine").unwrap();
    let events = Events::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let given_up = Arc::new(Mutex::new(Vec::new()));
    let given_up2 = given_up.clone();
    let consumer = with_handler(builder(&nsqd), kind, &seen)
        .validate_with(|d: &Delivery| {
            if &d.body()[..] == b"bad" {
                Err("no")
            } else {
                Ok(())
            }
        })
        .give_up_rejected(true)
        .give_up_fn(move |d: Delivery| {
            given_up2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(d.body()).into_owned());
            async { Ok(()) }
        })
        .message_events(events.recipient())
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count(TOPIC, CHANNEL) == 2).await);
    assert_eq!(*given_up.lock().unwrap(), ["bad"], "{kind:?}");
    assert_eq!(*seen.lock().unwrap(), ["fine"], "{kind:?}");
    assert!(
        eventually(|| message_events(&events).iter().any(|e| matches!(
            e,
            MessageEvent::Rejected { reason, given_up: true, .. } if reason == "no"
        )))
        .await
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn rejected_to_the_give_up_hook_with_an_actor_handler() {
    rejected_messages_can_go_to_the_give_up_hook(Kind::Actor).await;
}

#[actix_rt::test]
async fn rejected_to_the_give_up_hook_with_a_closure_handler() {
    rejected_messages_can_go_to_the_give_up_hook(Kind::Closure).await;
}
