//! Bounds the consumer keeps whatever the servers do: a server that ignores RDY cannot run
//! more handlers than `max_in_flight`.

#[path = "support/consumer.rs"]
mod support;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::{Actor, Context, Handler, ResponseFuture};
use actix_nsq::{
    protocol::{Frame, Message, MessageId},
    testing::TestNsqd,
    ConnectionConfig, ConnectionEvent, Consumer, ConsumerBuilder, ConsumerEvent, Delivery,
    HandlerResult,
};
use support::{eventually, fast_reconnect, lines, Events};

/// Handlers running now, and the most ever seen at once.
#[derive(Clone, Default)]
struct Running {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    handled: Arc<AtomicUsize>,
    /// While set, handlers do not finish (they wait for it to clear).
    held: Arc<AtomicBool>,
}

impl Running {
    async fn handle(self) -> HandlerResult {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.handled.fetch_add(1, Ordering::SeqCst);
        while self.held.load(Ordering::SeqCst) {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// An actor handler that runs its deliveries concurrently (one future each).
struct Concurrent(Running);

impl Actor for Concurrent {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Concurrent {
    type Result = ResponseFuture<HandlerResult>;

    fn handle(&mut self, _: Delivery, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.0.clone().handle())
    }
}

fn unsolicited(i: usize) -> Frame {
    let mut id = *b"0000000000000000";
    id[10..].copy_from_slice(format!("{i:06}").as_bytes());
    Frame::Message(Message::new(
        MessageId::new(id).unwrap(),
        0,
        1,
        format!("m{i}").into(),
    ))
}

async fn a_server_ignoring_rdy_runs_at_most_max_in_flight_handlers(
    with_handler: impl FnOnce(ConsumerBuilder, Running) -> ConsumerBuilder,
) {
    let nsqd = TestNsqd::start().unwrap();
    let events = Events::default();
    let running = Running::default();
    let builder = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .max_in_flight(1)
        .events(events.recipient());
    let consumer = with_handler(builder, running.clone()).start().unwrap();
    assert!(
        eventually(|| nsqd.clients().len() == 1 && lines(&nsqd).contains(&"RDY 1".into())).await
    );
    let client = nsqd.clients()[0].id;
    // 500 messages the consumer never asked for (RDY 1), all at once.
    for i in 0..500 {
        if !nsqd.send_frame(client, unsolicited(i)) {
            break; // the consumer reset the link
        }
    }
    let reset = || {
        events.any(|e| {
            matches!(e, ConsumerEvent::Connection(ConnectionEvent::Disconnected { error, .. })
                if error.to_string().contains("beyond RDY"))
        })
    };
    assert!(eventually(reset).await, "the violation resets the link");
    assert!(eventually(|| running.now.load(Ordering::SeqCst) == 0).await);
    assert_eq!(
        running.peak.load(Ordering::SeqCst),
        1,
        "never more than max_in_flight"
    );
    assert_eq!(
        running.handled.load(Ordering::SeqCst),
        1,
        "only the message RDY allowed"
    );
    // The consumer carries on with an honest server.
    nsqd.publish("events", "honest").unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    consumer.stop().await;
}

#[actix_rt::test]
async fn a_server_ignoring_rdy_runs_at_most_max_in_flight_closures() {
    a_server_ignoring_rdy_runs_at_most_max_in_flight_handlers(|builder, running| {
        builder.handler_fn(move |_| running.clone().handle())
    })
    .await;
}

#[actix_rt::test]
async fn a_server_ignoring_rdy_runs_at_most_max_in_flight_actors() {
    a_server_ignoring_rdy_runs_at_most_max_in_flight_handlers(|builder, running| {
        builder.handler(Concurrent(running).start().recipient())
    })
    .await;
}

/// Two nsqd, max_in_flight 3. The first link has RDY 3 and three handlers busy when the second
/// nsqd is added: its share (RDY 1) may only be granted once the first link has written its
/// lower RDY 2 and one of its three messages is done, or nsqd could run a fourth handler (it
/// did: the new link's own RDY 1 went out at once, the old link's lower later, through its
/// mailbox). Handlers are held while the second link connects, so no FIN is in flight then.
async fn two_nsqd_never_run_more_than_max_in_flight_handlers(
    with_handler: impl FnOnce(ConsumerBuilder, Running) -> ConsumerBuilder,
) {
    const MAX_IN_FLIGHT: usize = 3;
    const EACH: u64 = 15;
    let (first, second) = (TestNsqd::start().unwrap(), TestNsqd::start().unwrap());
    for i in 0..EACH {
        first.publish("events", format!("a{i}")).unwrap();
        second.publish("events", format!("b{i}")).unwrap();
    }
    let running = Running::default();
    running.held.store(true, Ordering::SeqCst);
    let builder = Consumer::builder("events", "c")
        .nsqd(first.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .max_in_flight(MAX_IN_FLIGHT as u32);
    let consumer = with_handler(builder, running.clone()).start().unwrap();
    assert!(eventually(|| running.now.load(Ordering::SeqCst) == MAX_IN_FLIGHT).await);

    consumer.connect_nsqd(second.addr().to_string());
    assert!(eventually(|| second.clients().len() == 1).await);
    // Give a wrongly granted RDY time to bring a message to a fourth handler.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(running.now.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    assert!(
        !lines(&second)
            .iter()
            .any(|l| l.starts_with("RDY") && l != "RDY 0"),
        "the second link got RDY while the first still had 3 handlers: {:?}",
        lines(&second)
    );

    running.held.store(false, Ordering::SeqCst);
    let all_done = || {
        first.finished_count("events", "c") == EACH && second.finished_count("events", "c") == EACH
    };
    assert!(eventually(all_done).await, "both nsqd served");
    assert!(lines(&second).contains(&"RDY 1".to_owned()));
    assert_eq!(
        running.peak.load(Ordering::SeqCst),
        MAX_IN_FLIGHT,
        "handlers at once: never more than max_in_flight (and it was reached)"
    );
    consumer.stop().await;
}

#[actix_rt::test]
async fn two_nsqd_never_run_more_than_max_in_flight_closures() {
    two_nsqd_never_run_more_than_max_in_flight_handlers(|builder, running| {
        builder.handler_fn(move |_| running.clone().handle())
    })
    .await;
}

#[actix_rt::test]
async fn two_nsqd_never_run_more_than_max_in_flight_actors() {
    two_nsqd_never_run_more_than_max_in_flight_handlers(|builder, running| {
        builder.handler(Concurrent(running).start().recipient())
    })
    .await;
}
