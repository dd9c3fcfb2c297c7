//! The server end's frames through the real connection actors, refused dials, a producer's
//! publishes and error answers, and the IDENTIFY reply compared with TestNsqd's.

use std::{sync::Mutex, time::Duration};

use actix_nsq::{
    protocol::{Batch, Body, Command, ErrorCode},
    testing::{MockNsqd, TestNsqd, TestNsqdBuilder},
    ConnectionConfig, ConnectionEvent, ConsumerEvent, Error, Producer, Topic,
};
use tokio::time::Instant;

use crate::{accept, builder, closed, collect, connection_events, next};

/// The mock's frames reach the real connection actor: a heartbeat is answered with NOP, a
/// non-fatal error is reported and the link stays, a fatal one closes it (nsqd closes after
/// it) and the consumer reconnects and subscribes again.
#[actix_rt::test]
async fn heartbeats_and_error_frames() {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let (events, seen) = collect::<ConsumerEvent>();
    let _consumer = builder(&nsqd)
        .max_in_flight(1)
        .events(events)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(1));

    link.heartbeat();
    assert_eq!(next(&mut link).await, Command::Nop);

    link.error(
        ErrorCode::FinFailed,
        "FIN 00000000000000ff failed ID not in flight",
    );
    link.heartbeat();
    assert_eq!(next(&mut link).await, Command::Nop, "still up");
    assert!(connection_events(&seen).iter().any(|e| matches!(
        e,
        ConnectionEvent::ServerError { error: Error::Server(s), .. } if s.code == ErrorCode::FinFailed
    )));

    link.error(ErrorCode::Invalid, "cannot FIN in current state");
    closed(&mut link).await;
    let mut relink = accept(&nsqd).await;
    assert_eq!(relink.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut relink).await, Command::Rdy(1));
    assert!(connection_events(&seen).iter().any(|e| matches!(
        e,
        ConnectionEvent::Disconnected { error: Error::Server(s), .. } if s.code == ErrorCode::Invalid
    )));
}

/// A down nsqd: refused dials are retried after the reconnect policy's delays, which pass
/// on the paused clock exactly as the events announce them.
#[actix_rt::test]
async fn refused_connections_are_retried_after_the_announced_delays() {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    nsqd.refuse_connections(2);
    let (events, seen) = collect::<ConsumerEvent>();
    let started = Instant::now();
    let _consumer = builder(&nsqd)
        .events(events)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    let mut link = accept(&nsqd).await;
    let waited = started.elapsed();
    assert_eq!(nsqd.dials(), 3);
    let delays: Vec<(u32, Duration)> = connection_events(&seen)
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Reconnecting { attempt, delay, .. } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    assert_eq!(
        delays
            .iter()
            .map(|(attempt, _)| *attempt)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let announced: Duration = delays.iter().map(|(_, delay)| *delay).sum();
    assert!(
        announced <= waited && waited <= announced + Duration::from_millis(2),
        "waited {waited:?}, announced {announced:?}"
    );
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
}

/// A producer's publishes arrive as typed commands; an error frame fails the publish it
/// answers (and, being fatal for nsqd, closes the link, after which the producer
/// reconnects); a held publish waits for the test's answer.
#[actix_rt::test]
async fn producer_publishes_and_error_answers() {
    tokio::time::pause();
    let nsqd = MockNsqd::new();
    let producer = Producer::builder()
        .nsqd(nsqd.addr())
        .connection(nsqd.connection_config(ConnectionConfig::new()))
        .start()
        .unwrap();
    let topic = Topic::new("events").unwrap();
    let body = |b: &str| Body::new(b.to_owned()).unwrap();

    producer.publish("events", "one").await.unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(
        next(&mut link).await,
        Command::Pub {
            topic: topic.clone(),
            body: body("one")
        }
    );
    producer
        .multi_publish("events", ["two", "three"])
        .await
        .unwrap();
    assert_eq!(
        next(&mut link).await,
        Command::Mpub {
            topic: topic.clone(),
            bodies: Batch::new(["two", "three"]).unwrap()
        }
    );
    producer
        .deferred_publish("events", Duration::from_millis(1500), "four")
        .await
        .unwrap();
    assert_eq!(
        next(&mut link).await,
        Command::Dpub {
            topic: topic.clone(),
            delay: Duration::from_millis(1500),
            body: body("four")
        }
    );

    link.fail_next_publish(ErrorCode::PubFailed, "PUB failed topic is exiting");
    match producer.publish("events", "five").await {
        Err(Error::Server(e)) => {
            assert_eq!(e.code, ErrorCode::PubFailed);
            assert_eq!(e.message, "PUB failed topic is exiting");
        }
        other => panic!("expected E_PUB_FAILED, got {other:?}"),
    }
    assert_eq!(link.next_line().await.unwrap(), "PUB events");
    closed(&mut link).await;

    // The producer reconnects; a held publish waits for the test to answer it.
    let mut relink = accept(&nsqd).await;
    relink.hold_publishes(true);
    let pending = {
        let producer = producer.clone();
        actix_rt::spawn(async move { producer.publish("events", "six").await })
    };
    assert_eq!(relink.next_line().await.unwrap(), "PUB events");
    assert!(!pending.is_finished());
    relink.respond_ok();
    pending.await.unwrap().unwrap();
    producer.stop().await;
    closed(&mut relink).await;
}

/// The mock answers IDENTIFY exactly as TestNsqd (nsqd v1.3.0) does: the client negotiates
/// the same settings with both. (TestNsqd listens on 127.0.0.1:0; real time here.)
#[actix_rt::test]
async fn identify_is_answered_as_test_nsqd_answers_it() {
    let config = ConnectionConfig::new()
        .heartbeat_interval(Some(Duration::from_secs(5)))
        .msg_timeout(Some(Duration::from_secs(30)))
        .output_buffer_size(Some(4096))
        .sample_rate(10);
    let negotiated = |events: &Mutex<Vec<ConnectionEvent>>| {
        events.lock().unwrap().iter().find_map(|e| match e {
            ConnectionEvent::Connected { negotiated, .. } => Some(negotiated.clone()),
            _ => None,
        })
    };

    let nsqd = TestNsqd::start().unwrap();
    let (events, real) = collect::<ConnectionEvent>();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .connection(config.clone())
        .events(events)
        .start()
        .unwrap();
    producer.ping().await.unwrap();
    producer.stop().await;

    let mock = MockNsqd::new();
    let (events, mocked) = collect::<ConnectionEvent>();
    let producer = Producer::builder()
        .nsqd(mock.addr())
        .connection(mock.connection_config(config))
        .events(events)
        .start()
        .unwrap();
    producer.ping().await.unwrap();
    let link = accept(&mock).await;
    assert_eq!(link.identify().sample_rate, 10);
    producer.stop().await;

    let (real, mocked) = (negotiated(&real).unwrap(), negotiated(&mocked).unwrap());
    assert_eq!(real, mocked);
    assert_eq!(mocked.identify.msg_timeout, 30_000);
    assert_eq!(mocked.identify.sample_rate, 10);
}

/// The mock takes TestNsqd's settings: a consumer wanting more than nsqd's `max_rdy_count`
/// is held to it, as against nsqd.
#[actix_rt::test]
async fn rdy_is_capped_by_the_mocks_max_rdy_count() {
    tokio::time::pause();
    let nsqd = MockNsqd::with_options(TestNsqdBuilder::new().max_rdy_count(100)).unwrap();
    let _consumer = builder(&nsqd)
        .max_in_flight(500)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    let mut link = accept(&nsqd).await;
    assert_eq!(link.next_line().await.unwrap(), "SUB events tests");
    assert_eq!(next(&mut link).await, Command::Rdy(100));

    assert!(matches!(
        MockNsqd::with_options(TestNsqdBuilder::new().tls(true)),
        Err(Error::Config { field: "tls", .. })
    ));
}
