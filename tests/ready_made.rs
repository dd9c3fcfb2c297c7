//! The ready-made pieces against the in-process nsqd: batch handlers (closure and actor),
//! the stream adapter, give-up handlers (dead-letter included) and the low-level link.

#[path = "support/consumer.rs"]
mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    protocol::{Frame, Response},
    testing::TestNsqd,
    BatchResult, Compression, ConnectionConfig, Consumer, ConsumerBuilder, Delivery, DeliveryBatch,
    Error, GiveUpHandler, HandlerError, HandlerResult, NsqdLink, Producer,
};
use futures_util::StreamExt;
use support::{eventually, fast_reconnect, lines};

fn builder(nsqd: &TestNsqd) -> ConsumerBuilder {
    Consumer::builder("events", "tests")
        .nsqd(nsqd.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        // Failures here are the subject, not backoff: no pauses.
        .max_backoff_duration(Duration::ZERO)
}

/// Every message of `events/tests` is still somewhere: queued, deferred or in flight.
fn outstanding(nsqd: &TestNsqd) -> usize {
    nsqd.depth("events", "tests")
        + nsqd.deferred("events", "tests")
        + nsqd.in_flight("events", "tests")
}

// ---- batch handlers ----

#[actix_rt::test]
async fn batch_closure_finishes_whole_batches_and_flushes_the_rest_on_the_timer() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("events", "tests").unwrap();
    for i in 0..7 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let sizes2 = sizes.clone();
    let consumer = builder(&nsqd)
        .max_in_flight(10)
        .handler_batch(
            3,
            Duration::from_millis(300),
            move |batch: DeliveryBatch| {
                sizes2.lock().unwrap().push(batch.len());
                async { Ok(()) }
            },
        )
        .start()
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 7).await);
    let sizes = sizes.lock().unwrap().clone();
    // 7 messages in batches of at most 3: at least one batch was not full, and only the
    // timer sends those.
    assert_eq!(sizes.iter().sum::<usize>(), 7, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    assert_eq!(nsqd.requeued_count("events", "tests"), 0);
    assert_eq!(consumer.stop().await, 0);
}

/// Answers per message: bodies starting with "bad" fail (requeued for a minute), others pass.
fn judge(batch: &DeliveryBatch) -> Vec<HandlerResult> {
    batch
        .iter()
        .map(|d| {
            if d.body().starts_with(b"bad") {
                Err(HandlerError::new("bad").requeue_after(Duration::from_secs(60)))
            } else {
                Ok(())
            }
        })
        .collect()
}

async fn assert_per_message_answers(builder: ConsumerBuilder, nsqd: &TestNsqd) {
    for body in ["ok1", "bad1", "ok2", "bad2"] {
        nsqd.publish("events", body).unwrap();
    }
    let consumer = builder.max_in_flight(4).start().unwrap();
    assert!(
        eventually(
            || nsqd.finished_count("events", "tests") == 2 && nsqd.deferred("events", "tests") == 2
        )
        .await
    );
    assert_eq!(nsqd.requeued_count("events", "tests"), 2);
    assert_eq!(outstanding(nsqd), 2);
    consumer.stop().await;
}

#[actix_rt::test]
async fn batch_closure_answers_each_message_from_its_result() {
    let nsqd = TestNsqd::start().unwrap();
    let builder = builder(&nsqd).handler_batch_each(4, Duration::from_millis(200), |batch| {
        let results = judge(&batch);
        async move { results }
    });
    assert_per_message_answers(builder, &nsqd).await;
}

struct Judge;
impl Actor for Judge {
    type Context = Context<Self>;
}
impl Handler<DeliveryBatch> for Judge {
    type Result = BatchResult;
    fn handle(&mut self, batch: DeliveryBatch, _: &mut Context<Self>) -> BatchResult {
        BatchResult::Each(judge(&batch))
    }
}

#[actix_rt::test]
async fn batch_actor_answers_each_message_from_its_result() {
    let nsqd = TestNsqd::start().unwrap();
    let builder = builder(&nsqd).handler_batch_actor(
        4,
        Duration::from_millis(200),
        Judge.start().recipient(),
    );
    assert_per_message_answers(builder, &nsqd).await;
}

struct FailAll;
impl Actor for FailAll {
    type Context = Context<Self>;
}
impl Handler<DeliveryBatch> for FailAll {
    type Result = BatchResult;
    fn handle(&mut self, _: DeliveryBatch, _: &mut Context<Self>) -> BatchResult {
        BatchResult::All(Err(
            HandlerError::new("down").requeue_after(Duration::from_secs(60))
        ))
    }
}

#[actix_rt::test]
async fn batch_results_for_all_requeue_the_whole_batch_for_both_kinds() {
    for actor in [false, true] {
        let nsqd = TestNsqd::start().unwrap();
        for i in 0..3 {
            nsqd.publish("events", format!("m{i}")).unwrap();
        }
        let wait = Duration::from_millis(100);
        let builder = if actor {
            builder(&nsqd).handler_batch_actor(3, wait, FailAll.start().recipient())
        } else {
            builder(&nsqd).handler_batch(3, wait, |_batch| async {
                Err(HandlerError::new("down").requeue_after(Duration::from_secs(60)))
            })
        };
        let consumer = builder.max_in_flight(3).start().unwrap();
        assert!(
            eventually(|| nsqd.deferred("events", "tests") == 3).await,
            "actor: {actor}"
        );
        assert_eq!(nsqd.finished_count("events", "tests"), 0);
        assert_eq!(lines(&nsqd).iter().filter(|l| *l == "REQ 60000").count(), 3);
        consumer.stop().await;
    }
}

#[test]
fn a_batch_larger_than_max_in_flight_is_a_config_error_naming_both() {
    let build = |mif| {
        Consumer::builder("events", "tests")
            .nsqd("127.0.0.1:4150")
            .handler_batch(10, Duration::from_millis(100), |_b| async { Ok(()) })
            .max_in_flight(mif)
            .validate()
    };
    match build(5) {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "max_in_flight");
            assert!(reason.contains("handler_batch"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(build(10).is_ok());
}

// ---- stream adapter ----

#[actix_rt::test]
async fn stream_holds_at_most_max_in_flight_and_drop_stops_without_losing_anything() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("events", "tests").unwrap();
    for i in 0..10 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let mut stream = builder(&nsqd).max_in_flight(3).into_stream().unwrap();
    let mut held: Vec<Delivery> = Vec::new();
    for _ in 0..3 {
        held.push(
            tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Nothing more comes while three are outstanding: nsqd has exactly those in flight.
    let more = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(more.is_err(), "a fourth delivery arrived: {more:?}");
    assert_eq!(nsqd.in_flight("events", "tests"), 3);
    assert_eq!(stream.consumer().stats().in_flight, 3);

    // Answering one lets exactly one more in.
    held.remove(0).finish().unwrap();
    held.push(
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap(),
    );
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 1).await);
    assert_eq!(nsqd.in_flight("events", "tests"), 3);

    // Dropping the stream: CLS; what we still hold is answered by dropping it (requeued).
    drop(stream);
    assert!(eventually(|| lines(&nsqd).iter().any(|l| l == "CLS")).await);
    drop(held);
    assert!(eventually(|| nsqd.in_flight("events", "tests") == 0).await);
    assert_eq!(nsqd.finished_count("events", "tests"), 1);
    assert_eq!(outstanding(&nsqd), 9, "every unfinished message is back");
    assert!(
        eventually(|| nsqd.clients().is_empty()).await,
        "the consumer closed its connection"
    );
}

#[actix_rt::test]
async fn stream_stop_requeues_what_is_queued() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.create_channel("events", "tests").unwrap();
    for i in 0..4 {
        nsqd.publish("events", format!("m{i}")).unwrap();
    }
    let mut stream = builder(&nsqd).max_in_flight(4).into_stream().unwrap();
    let first = stream.next().await.unwrap();
    first.finish().unwrap();
    // The other three are queued in the stream, unread.
    assert!(eventually(|| stream.consumer().stats().in_flight == 3).await);
    assert_eq!(stream.stop().await, 0);
    assert_eq!(nsqd.finished_count("events", "tests"), 1);
    assert!(eventually(|| outstanding(&nsqd) == 3 && nsqd.in_flight("events", "tests") == 0).await);
}

#[actix_rt::test]
async fn stream_ends_once_its_consumer_stopped() {
    let nsqd = TestNsqd::start().unwrap();
    let mut stream = builder(&nsqd).max_in_flight(1).into_stream().unwrap();
    let consumer = stream.consumer().clone();
    assert_eq!(consumer.stop().await, 0);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[actix_rt::test]
async fn into_stream_refuses_a_consumer_that_has_a_handler() {
    let nsqd = TestNsqd::start().unwrap();
    let result = builder(&nsqd)
        .handler_fn(|_d| async { Ok(()) })
        .into_stream();
    assert!(
        matches!(
            result,
            Err(Error::Config {
                field: "handler",
                ..
            })
        ),
        "{result:?}"
    );
}

// ---- give-up handlers ----

#[actix_rt::test]
async fn dead_letter_requeues_while_the_publish_fails_and_moves_the_message_once_it_works() {
    let source = TestNsqd::start().unwrap();
    let dlq = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(dlq.addr().to_string())
        .connection(ConnectionConfig::new().reconnect(fast_reconnect()))
        .request_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    dlq.stop().unwrap();
    source.publish("events", "poison").unwrap();
    let consumer = builder(&source)
        .max_attempts(1)
        .default_requeue_delay(Duration::ZERO)
        .handler_fn(|_d| async { Err("always fails".into()) })
        .give_up_handler(GiveUpHandler::dead_letter(producer.clone(), "events.dead").unwrap())
        .start()
        .unwrap();
    // The handler fails once, then every give-up's publish fails: requeued, never finished.
    assert!(eventually(|| source.requeued_count("events", "tests") >= 3).await);
    assert_eq!(source.finished_count("events", "tests"), 0);
    assert_eq!(
        outstanding(&source),
        1,
        "the message is still at the source"
    );

    dlq.restart().unwrap();
    assert!(eventually(|| source.finished_count("events", "tests") == 1).await);
    assert_eq!(dlq.topic_depth("events.dead"), 1);
    let published: Vec<_> = dlq
        .commands()
        .into_iter()
        .filter(|c| c.line == "PUB events.dead")
        .collect();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].body.as_deref(), Some(&b"poison"[..]));
    assert_eq!(outstanding(&source), 0);
    consumer.stop().await;
    producer.stop().await;
}

#[actix_rt::test]
async fn ready_made_give_up_handlers_work_as_closure_and_as_actor() {
    let lines_written = Arc::new(Mutex::new(Vec::new()));
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    for actor in [false, true] {
        let nsqd = TestNsqd::start().unwrap();
        nsqd.publish("events", format!("poison-{actor}")).unwrap();
        let handler = GiveUpHandler::json_lines(Shared(lines_written.clone()));
        let builder = builder(&nsqd)
            .max_attempts(1)
            .default_requeue_delay(Duration::ZERO)
            .handler_fn(|_d| async { Err("always fails".into()) });
        let builder = if actor {
            builder.give_up(handler.start().recipient())
        } else {
            builder.give_up_fn(move |d| handler.handle(d))
        };
        let consumer = builder.start().unwrap();
        assert!(
            eventually(|| nsqd.finished_count("events", "tests") == 1).await,
            "actor: {actor}"
        );
        assert_eq!(nsqd.requeued_count("events", "tests"), 1);
        consumer.stop().await;
    }
    let text = String::from_utf8(lines_written.lock().unwrap().clone()).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0]["body"], "poison-false");
    assert_eq!(records[1]["body"], "poison-true");
    assert_eq!(records[1]["attempts"], 2);
}

// ---- the low-level link ----

async fn expect_ok(link: &mut NsqdLink) {
    loop {
        match link.next_frame().await.unwrap().unwrap() {
            Frame::Response(Response::Heartbeat) => link.nop().await.unwrap(),
            Frame::Response(Response::Ok) => return,
            other => panic!("expected OK, got {other:?}"),
        }
    }
}

async fn next_message(link: &mut NsqdLink) -> actix_nsq::protocol::Message {
    match tokio::time::timeout(Duration::from_secs(5), link.next_frame())
        .await
        .unwrap()
    {
        Some(Ok(Frame::Message(message))) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn round_trip(nsqd: &TestNsqd, config: ConnectionConfig) -> NsqdLink {
    let mut link = NsqdLink::connect(nsqd.addr().to_string(), &config)
        .await
        .unwrap();
    link.publish("events", "one").await.unwrap();
    expect_ok(&mut link).await;
    link.multi_publish("events", ["two", "three"])
        .await
        .unwrap();
    expect_ok(&mut link).await;
    link.subscribe("events", "tests").await.unwrap();
    expect_ok(&mut link).await;
    link.rdy(1).await.unwrap();
    let first = next_message(&mut link).await;
    assert_eq!(&first.body[..], b"one");
    link.touch(first.id).await.unwrap();
    link.finish(first.id).await.unwrap();
    let second = next_message(&mut link).await;
    assert_eq!((&second.body[..], second.attempts), (&b"two"[..], 1));
    link.requeue(second.id, Duration::ZERO).await.unwrap();
    // nsqd puts a message requeued without delay back behind what is queued.
    let third = next_message(&mut link).await;
    assert_eq!((&third.body[..], third.attempts), (&b"three"[..], 1));
    link.finish(third.id).await.unwrap();
    let again = next_message(&mut link).await;
    assert_eq!((&again.body[..], again.attempts), (&b"two"[..], 2));
    link.finish(again.id).await.unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "tests") == 3).await);
    link
}

#[actix_rt::test]
async fn link_speaks_every_command_over_plain_tcp_with_the_crates_validation() {
    let nsqd = TestNsqd::start().unwrap();
    // A body limit that still fits the IDENTIFY body (nsqd refuses larger ones for good).
    let config = ConnectionConfig::new().publish_limits(8, 1024);
    let mut link = round_trip(&nsqd, config).await;
    assert_eq!(link.negotiated().compression, Compression::None);
    // Over the limit or empty: refused before writing, and the connection lives on.
    assert!(matches!(
        link.publish("events", "123456789").await,
        Err(Error::InvalidBody(_))
    ));
    assert!(matches!(
        link.publish("events", "").await,
        Err(Error::InvalidBody(_))
    ));
    link.nop().await.unwrap();
    link.close().await.unwrap();
    assert_eq!(
        next_message_or_frame(&mut link).await,
        Frame::Response(Response::CloseWait)
    );
    let recorded = lines(&nsqd);
    let names: Vec<&str> = recorded
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "IDENTIFY", "PUB", "MPUB", "SUB", "RDY", "TOUCH", "FIN", "REQ", "FIN", "FIN", "NOP",
            "CLS"
        ]
    );
}

async fn next_message_or_frame(link: &mut NsqdLink) -> Frame {
    tokio::time::timeout(Duration::from_secs(5), link.next_frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[actix_rt::test]
async fn link_negotiates_tls_and_snappy() {
    let nsqd = TestNsqd::builder().tls(true).snappy(true).start().unwrap();
    let config = ConnectionConfig::new()
        .tls(TestNsqd::tls_config())
        .snappy(true);
    let link = round_trip(&nsqd, config).await;
    assert!(link.negotiated().tls);
    assert_eq!(link.negotiated().compression, Compression::Snappy);
    assert!(
        nsqd.clients().iter().any(|c| c.tls && c.snappy),
        "{:?}",
        nsqd.clients()
    );
}

#[actix_rt::test]
async fn link_negotiates_deflate_and_auth() {
    let nsqd = TestNsqd::builder()
        .deflate(true)
        .auth_secret("s3cr3t")
        .start()
        .unwrap();
    let config = ConnectionConfig::new().deflate(6).auth_secret("s3cr3t");
    let link = round_trip(&nsqd, config).await;
    assert_eq!(
        link.negotiated().compression,
        Compression::Deflate { level: 6 }
    );
    let auth = link.negotiated().auth.as_ref().expect("AUTH was required");
    assert_eq!(auth.identity, "test-identity");
    assert!(nsqd
        .clients()
        .iter()
        .any(|c| c.deflate && c.auth_identity.is_some()));
}

#[actix_rt::test]
async fn link_reports_handshake_failures() {
    // nsqd without TLS, a link that requires it.
    let nsqd = TestNsqd::start().unwrap();
    let config = ConnectionConfig::new().tls(TestNsqd::tls_config());
    let result = NsqdLink::connect(nsqd.addr().to_string(), &config).await;
    assert!(matches!(result, Err(Error::Tls { .. })), "{result:?}");
    let result = NsqdLink::connect("no port", &ConnectionConfig::new()).await;
    assert!(
        matches!(result, Err(Error::Config { field: "nsqd", .. })),
        "{result:?}"
    );
}
