//! The user's handler, as an actor and as a closure, inside a real consumer: backoff,
//! give-up, a lost connection, a graceful stop.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    protocol::{Command, MessageId},
    testing::MockNsqd,
    ConsumerBuilder, Delivery, Error, GiveUp, HandlerResult,
};
use tokio::{sync::mpsc, time::Instant};

use crate::{accept, assert_pause, builder, closed, next, req};

/// The user's handler: indexes bodies; a body starting with "bad" fails its first two
/// attempts.
#[derive(Clone, Default)]
struct Index(Arc<Mutex<Vec<String>>>);

impl Index {
    fn handle(&self, d: &Delivery) -> HandlerResult {
        let body = String::from_utf8_lossy(d.body()).into_owned();
        if body.starts_with("bad") && d.attempts() < 3 {
            return Err(format!("cannot index {body} yet").into());
        }
        self.0.lock().unwrap().push(body);
        Ok(())
    }

    fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The same handler as an actor, as users write theirs.
struct Indexer(Index);

impl Actor for Indexer {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Indexer {
    type Result = HandlerResult;

    fn handle(&mut self, d: Delivery, _: &mut Context<Self>) -> HandlerResult {
        self.0.handle(&d)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Actor,
    Closure,
}

fn with_index(builder: ConsumerBuilder, kind: Kind, index: &Index) -> ConsumerBuilder {
    match kind {
        Kind::Actor => builder.handler(Indexer(index.clone()).start().recipient()),
        Kind::Closure => {
            let index = index.clone();
            builder.handler_fn(move |d: Delivery| {
                let result = index.handle(&d);
                async move { result }
            })
        }
    }
}

/// One test per handler kind: every promise about handlers holds for both.
macro_rules! both_kinds {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[actix_rt::test]
            async fn actor() {
                super::$scenario(super::Kind::Actor).await;
            }

            #[actix_rt::test]
            async fn closure() {
                super::$scenario(super::Kind::Closure).await;
            }
        }
    )*};
}

both_kinds!(
    backoff_sequence,
    give_up_after_max_attempts,
    disconnect_mid_message,
    graceful_stop_drains,
    stop_deadline_abandons,
);

/// go-nsq `TestConsumerBackoff` with the user's handler: each failure sends RDY 0 before its
/// REQ (nsq#404), the pause doubles per level, RDY 1 tests the waters, successes step the
/// level back down and restore the full RDY.
async fn backoff_sequence(kind: Kind) {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let index = Index::default();
    let second = Duration::from_secs(1);
    let consumer = with_index(builder(&nsqd), kind, &index)
        .max_in_flight(5)
        .backoff_multiplier(second)
        .start()
        .unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(5));

    let ok = link.send_message("ok-1");
    assert_eq!(next(&mut link).await, Command::Fin(ok));

    // Attempt 1 fails: backoff level 1, requeued after default_requeue_delay × 1 (90 s).
    let bad = link.send_message("bad");
    assert_eq!(next(&mut link).await, Command::Rdy(0));
    assert_eq!(next(&mut link).await, req(bad, Duration::from_secs(90)));
    let paused = Instant::now();
    assert_eq!(next(&mut link).await, Command::Rdy(1));
    assert_pause(paused.elapsed(), 2 * second); // level 1: multiplier × 2

    // Attempt 2 fails: level 2, twice the pause.
    link.send_message_with(bad, 2, "bad");
    assert_eq!(next(&mut link).await, Command::Rdy(0));
    assert_eq!(next(&mut link).await, req(bad, Duration::from_secs(180)));
    let paused = Instant::now();
    assert_eq!(next(&mut link).await, Command::Rdy(1));
    assert_pause(paused.elapsed(), 4 * second); // level 2: multiplier × 4

    // Attempt 3 succeeds: level 1 again, so RDY 0 and another (shorter) pause.
    link.send_message_with(bad, 3, "bad");
    assert_eq!(next(&mut link).await, Command::Rdy(0));
    assert_eq!(next(&mut link).await, Command::Fin(bad));
    let paused = Instant::now();
    assert_eq!(next(&mut link).await, Command::Rdy(1));
    assert_pause(paused.elapsed(), 2 * second);

    // A success at level 1 ends the backoff: the full RDY, then the FIN.
    let ok = link.send_message("ok-2");
    assert_eq!(next(&mut link).await, Command::Rdy(5));
    assert_eq!(next(&mut link).await, Command::Fin(ok));

    assert_eq!(index.bodies(), ["ok-1", "bad", "ok-2"]);
    assert_eq!(consumer.stats().backoff_level, 0);
    assert_eq!(link.in_flight(), 0);
}

/// The give-up hook, as an actor.
struct DeadLetters(Arc<Mutex<Vec<(String, u32)>>>);

impl Actor for DeadLetters {
    type Context = Context<Self>;
}

impl Handler<GiveUp> for DeadLetters {
    type Result = HandlerResult;

    fn handle(&mut self, GiveUp(d): GiveUp, _: &mut Context<Self>) -> HandlerResult {
        self.0
            .lock()
            .unwrap()
            .push((String::from_utf8_lossy(d.body()).into_owned(), d.attempts()));
        Ok(())
    }
}

/// A message delivered more than `max_attempts` times goes to the give-up hook, never to
/// the handler, and is finished after the hook answers `Ok`: no REQ, no backoff.
async fn give_up_after_max_attempts(kind: Kind) {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let index = Index::default();
    let dead = Arc::new(Mutex::new(Vec::new()));
    let builder = with_index(builder(&nsqd), kind, &index)
        .max_in_flight(1)
        .max_attempts(2);
    let builder = match kind {
        Kind::Actor => builder.give_up(DeadLetters(dead.clone()).start().recipient()),
        Kind::Closure => {
            let dead = dead.clone();
            builder.give_up_fn(move |d: Delivery| {
                dead.lock()
                    .unwrap()
                    .push((String::from_utf8_lossy(d.body()).into_owned(), d.attempts()));
                async { Ok(()) }
            })
        }
    };
    let consumer = builder.start().unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(1));

    // Attempt 2 of 2 still goes to the handler (which fails it: "bad" needs 3 attempts).
    let poison = link.send_message_with(
        MessageId::new(*b"00000000000000aa").unwrap(),
        2,
        "bad poison",
    );
    assert_eq!(next(&mut link).await, Command::Rdy(0));
    assert_eq!(next(&mut link).await, req(poison, Duration::from_secs(180)));
    assert_eq!(next(&mut link).await, Command::Rdy(1));
    assert!(dead.lock().unwrap().is_empty());

    // Attempt 3 is past max_attempts: the hook gets it, then it is finished.
    link.send_message_with(poison, 3, "bad poison");
    let fin = next(&mut link).await;
    assert_eq!(
        *dead.lock().unwrap(),
        [("bad poison".to_owned(), 3)],
        "the hook ran before the FIN"
    );
    assert_eq!(fin, Command::Fin(poison));
    assert!(index.bodies().is_empty(), "the handler never saw it");

    // Nothing else: the give-up did not back the consumer off (no RDY change, no REQ).
    let ok = link.send_message("fine");
    assert_eq!(next(&mut link).await, Command::Fin(ok));
    assert_eq!(index.bodies(), ["fine"]);
    assert_eq!(link.rdy(), 1);
    assert_eq!(consumer.stats().backoff_level, 0);
}

/// A handler that hands every delivery to the test instead of answering it.
struct Forwarder(mpsc::UnboundedSender<Delivery>);

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Forwarder {
    type Result = HandlerResult;

    fn handle(&mut self, d: Delivery, _: &mut Context<Self>) -> HandlerResult {
        // Kept alive elsewhere: whoever holds it answers, the result here is ignored.
        let _ = self.0.send(d);
        Ok(())
    }
}

fn forwarding(
    builder: ConsumerBuilder,
    kind: Kind,
) -> (ConsumerBuilder, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = match kind {
        Kind::Actor => builder.handler(Forwarder(tx).start().recipient()),
        Kind::Closure => builder.handler_fn(move |d: Delivery| {
            let _ = tx.send(d);
            async { Ok(()) }
        }),
    };
    (builder, rx)
}

/// nsqd goes away while a message is being handled: its answer fails with
/// `ConnectionLost` (nsqd redelivers it after its timeout), the consumer reconnects and
/// subscribes again, and the new link gets its RDY.
async fn disconnect_mid_message(kind: Kind) {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let (builder, mut deliveries) = forwarding(builder(&nsqd).max_in_flight(5), kind);
    let consumer = builder.start().unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(5));

    let id = link.send_message("in flight");
    let delivery = deliveries.recv().await.unwrap();
    assert_eq!(delivery.nsq_id(), Some(&id));
    link.disconnect();
    closed(&mut link).await;

    let mut relink = accept(&nsqd).await;
    assert_eq!(relink.number(), 2);
    assert_eq!(relink.next_line().await.unwrap(), "SUB events tests");
    let rdy = next(&mut relink).await;

    // The held message keeps its flow-control slot while its handler still runs, so the new
    // link starts one short of max_in_flight ...
    assert_eq!(rdy, Command::Rdy(4));
    assert!(link.is_closed());

    // ... and answering it fails: the link that delivered it is gone.
    assert!(matches!(
        delivery.finish(),
        Err(Error::ConnectionLost { .. })
    ));
    // The slot is free again at once.
    let answered = Instant::now();
    assert_eq!(next(&mut relink).await, Command::Rdy(5));
    assert_eq!(answered.elapsed(), Duration::ZERO);

    // The new link works as the old one did.
    let id = relink.send_message("after");
    let after = deliveries.recv().await.unwrap();
    after.finish().unwrap();
    assert_eq!(next(&mut relink).await, Command::Fin(id));
    assert_eq!(nsqd.dials(), 2);
    assert_eq!(consumer.stats().finished, 1);
}

/// A handler that takes `duration` per message.
struct Slow(Duration);

impl Actor for Slow {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Slow {
    type Result = ResponseFuture<HandlerResult>;

    fn handle(&mut self, _: Delivery, _: &mut Context<Self>) -> Self::Result {
        let duration = self.0;
        Box::pin(async move {
            tokio::time::sleep(duration).await;
            Ok(())
        })
    }
}

/// `stop()`: CLS, nsqd's CLOSE_WAIT, the message in flight is handled to the end and
/// finished, and only then does the connection close.
fn slow(builder: ConsumerBuilder, kind: Kind, work: Duration) -> ConsumerBuilder {
    match kind {
        Kind::Actor => builder.handler(Slow(work).start().recipient()),
        Kind::Closure => builder.handler_fn(move |_| async move {
            tokio::time::sleep(work).await;
            Ok(())
        }),
    }
}

async fn graceful_stop_drains(kind: Kind) {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let work = Duration::from_secs(7);
    let consumer = slow(builder(&nsqd).max_in_flight(5), kind, work)
        .start()
        .unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(5));

    let id = link.send_message("long job");
    // Let the handler start before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopping = Instant::now();
    let stop = actix_rt::spawn(async move { consumer.stop().await });
    // CLS at once; the mock answers CLOSE_WAIT as nsqd does ...
    assert_eq!(next(&mut link).await, Command::Cls);
    assert_eq!(stopping.elapsed(), Duration::ZERO);
    // ... the handler runs to its end and the message is finished ...
    assert_eq!(next(&mut link).await, Command::Fin(id));
    assert_eq!(stopping.elapsed(), work - Duration::from_secs(1));
    // ... and only then does the client close the connection.
    closed(&mut link).await;
    assert_eq!(stop.await.unwrap(), 0, "nothing abandoned");
    assert_eq!(
        link.lines(),
        ["SUB events tests", "RDY 5", "CLS", "FIN 0000000000000001"]
    );
}

/// A handler still running at the stop deadline: its message is abandoned (counted in
/// `stop`'s result, never finished; nsqd redelivers it after its timeout) and the
/// connection closes at the deadline.
async fn stop_deadline_abandons(kind: Kind) {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let consumer = slow(
        builder(&nsqd).max_in_flight(5),
        kind,
        Duration::from_secs(600),
    )
    .start()
    .unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(5));
    link.send_message("endless job");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let deadline = Duration::from_secs(5);
    let stopping = Instant::now();
    let stop = actix_rt::spawn(async move { consumer.stop_within(deadline).await });
    assert_eq!(next(&mut link).await, Command::Cls);
    closed(&mut link).await;
    assert_pause(stopping.elapsed(), deadline);
    assert_eq!(stop.await.unwrap(), 1, "one message abandoned");
    assert_eq!(link.in_flight(), 1, "never answered");
}
