//! The producer against the in-process nsqd: publishes, validation, pipelining, failover,
//! a server dying with publishes in flight, and graceful stop.

use std::time::Duration;

use actix_nsq::{
    testing::TestNsqd, BodyError, ConnectionConfig, Error, Producer, ReconnectPolicy, RetryPolicy,
};

const WAIT: Duration = Duration::from_secs(10);

fn lines(nsqd: &TestNsqd) -> Vec<String> {
    nsqd.commands().into_iter().map(|c| c.line).collect()
}

fn fast_reconnect() -> ConnectionConfig {
    ConnectionConfig::new()
        .reconnect(ReconnectPolicy::new().initial_delay(Duration::from_millis(20)))
}

#[actix_rt::test]
async fn publishes_pub_mpub_dpub_in_order() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .start()
        .unwrap();
    producer.publish("events", "one").await.unwrap();
    producer
        .multi_publish("events", ["two", "three"])
        .await
        .unwrap();
    producer
        .deferred_publish("events", Duration::from_millis(50), "four")
        .await
        .unwrap();
    producer.ping().await.unwrap();
    // nsqd answers NOP with nothing: wait for it to be recorded.
    assert!(nsqd.wait_for_commands_async(WAIT, |c| c.len() == 5).await);
    assert_eq!(
        lines(&nsqd),
        [
            "IDENTIFY",
            "PUB events",
            "MPUB events",
            "DPUB events 50",
            "NOP"
        ],
    );
    producer.stop().await;
    assert!(matches!(
        producer.publish("events", "late").await,
        Err(Error::Stopped)
    ));
}

#[actix_rt::test]
async fn bad_input_fails_before_anything_is_written() {
    let nsqd = TestNsqd::builder()
        .max_msg_size(100)
        .max_body_size(300)
        .start()
        .unwrap();
    let config = ConnectionConfig::new().publish_limits(100, 300);
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .connection(config)
        .start()
        .unwrap();
    producer.publish("events", "ok").await.unwrap();

    let cases = [
        producer.publish("bad topic", "x").await,
        producer.publish("events\nPUB injected", "x").await,
        producer.publish("events", "").await,
        producer.publish("events", vec![b'x'; 101]).await,
        producer.multi_publish("events", Vec::<&str>::new()).await,
        producer.multi_publish("events", ["a", ""]).await,
        producer
            .multi_publish(
                "events",
                [vec![1u8; 90], vec![1; 90], vec![1; 90], vec![1; 90]],
            )
            .await,
        producer
            .deferred_publish("events", Duration::from_secs(7200), "x")
            .await,
    ];
    for (i, result) in cases.iter().enumerate() {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_invalid_input(), "case {i}: {err}");
    }
    assert!(matches!(
        cases[3],
        Err(Error::InvalidBody(BodyError::TooLarge {
            size: 101,
            max: 100
        }))
    ));
    // The connection never saw any of it and is still the same one.
    producer.publish("events", "still fine").await.unwrap();
    assert_eq!(lines(&nsqd), ["IDENTIFY", "PUB events", "PUB events"]);
    assert_eq!(nsqd.clients().len(), 1);
}

#[actix_rt::test]
async fn server_errors_reach_the_caller() {
    let nsqd = TestNsqd::builder().max_msg_size(10).start().unwrap();
    // Our limit is looser than the server's: nsqd answers with a fatal E_BAD_MESSAGE.
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .connection(fast_reconnect())
        .start()
        .unwrap();
    let err = producer
        .publish("events", vec![b'x'; 20])
        .await
        .unwrap_err();
    match err {
        Error::Server(e) => assert_eq!(e.to_string(), "E_BAD_MESSAGE PUB message too big 20 > 10"),
        other => panic!("{other}"),
    }
    // The connection was dropped by nsqd and comes back by itself.
    producer.publish("events", "small").await.unwrap();
}

#[actix_rt::test]
async fn many_publishes_in_flight_are_pipelined() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .max_outstanding(64)
        .start()
        .unwrap();
    let publishes = (0..500).map(|i| {
        let producer = producer.clone();
        async move { producer.publish("events", format!("m{i}")).await }
    });
    for result in futures_util::future::join_all(publishes).await {
        result.unwrap();
    }
    assert_eq!(nsqd.topic_depth("events"), 500);
    assert_eq!(producer.outstanding(), 0);
}

#[actix_rt::test]
async fn a_dying_server_answers_every_caller() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .request_timeout(Duration::from_secs(3))
        .start()
        .unwrap();
    producer.publish("events", "warm up").await.unwrap();
    // Every write is held back, so 100 publishes are in flight when nsqd dies.
    nsqd.delay_frames(Duration::from_secs(60));
    let publishes: Vec<_> = (0..100)
        .map(|i| {
            let producer = producer.clone();
            actix_rt::spawn(async move { producer.publish("events", format!("m{i}")).await })
        })
        .collect();
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    nsqd.kill().unwrap();
    let mut unknown = 0;
    for publish in publishes {
        let result = actix_rt::time::timeout(WAIT, publish)
            .await
            .expect("a publish hung")
            .unwrap();
        match result {
            Err(Error::OutcomeUnknown { .. }) => unknown += 1,
            Err(Error::NotConnected | Error::Timeout(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        unknown > 0,
        "publishes written before the kill report an unknown outcome"
    );
}

#[actix_rt::test]
async fn fails_over_to_another_nsqd() {
    let first = TestNsqd::start().unwrap();
    let second = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(first.addr().to_string())
        .nsqd(second.addr().to_string())
        .connection(fast_reconnect())
        .start()
        .unwrap();
    for i in 0..10 {
        producer.publish("events", format!("m{i}")).await.unwrap();
    }
    assert_eq!(
        first.topic_depth("events") + second.topic_depth("events"),
        10
    );
    assert!(
        first.topic_depth("events") > 0 && second.topic_depth("events") > 0,
        "spread"
    );
    first.kill().unwrap();
    for i in 10..30 {
        // A publish that was written to the dying nsqd may report an unknown outcome; none may
        // be silently lost, and publishes after that go to the live one.
        match producer.publish("events", format!("m{i}")).await {
            Ok(()) | Err(Error::OutcomeUnknown { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    producer.publish("events", "after").await.unwrap();
    assert!(second.topic_depth("events") >= 11);
}

#[actix_rt::test]
async fn retry_policy_republishes_when_outcome_unknown() {
    let first = TestNsqd::start().unwrap();
    let second = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(first.addr().to_string())
        .nsqd(second.addr().to_string())
        .retry(RetryPolicy::AcceptDuplicates { attempts: 2 })
        .start()
        .unwrap();
    producer.ping().await.unwrap();
    assert!(
        first
            .wait_until_async(WAIT, |n| !n.clients().is_empty())
            .await
    );
    assert!(
        second
            .wait_until_async(WAIT, |n| !n.clients().is_empty())
            .await
    );
    first.delay_frames(Duration::from_secs(60));
    let publishes: Vec<_> = (0..20)
        .map(|i| {
            let producer = producer.clone();
            actix_rt::spawn(async move { producer.publish("events", format!("m{i}")).await })
        })
        .collect();
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    first.kill().unwrap();
    for publish in publishes {
        publish.await.unwrap().unwrap();
    }
    assert_eq!(second.topic_depth("events"), 20);
}

#[actix_rt::test]
async fn waits_for_a_connection_then_times_out() {
    let nsqd = TestNsqd::start().unwrap();
    let addr = nsqd.addr().to_string();
    nsqd.kill().unwrap();
    let producer = Producer::builder()
        .nsqd(addr)
        .connection(fast_reconnect())
        .request_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    // No connection could be made: the error says where and why (connection refused).
    let err = producer.publish("events", "x").await.unwrap_err();
    assert!(
        matches!(&err, Error::Connect { source, .. } if matches!(**source, Error::Io(_))),
        "{err}"
    );
    nsqd.restart().unwrap();
    let producer2 = producer.clone();
    let ok = async move {
        for _ in 0..50 {
            if producer2.publish("events", "x").await.is_ok() {
                return true;
            }
            // A failed attempt fails the publish at once: give the reconnect time.
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        ok.await,
        "the producer reconnects after the server comes back"
    );
}

#[actix_rt::test]
async fn invalid_configuration_names_the_field() {
    let err = Producer::builder().start().unwrap_err();
    assert!(matches!(err, Error::Config { field: "nsqd", .. }), "{err}");
    let err = Producer::builder().nsqd("localhost").start().unwrap_err();
    assert!(matches!(err, Error::Config { field: "nsqd", .. }), "{err}");
    let err = Producer::builder()
        .nsqd("h:1")
        .max_outstanding(0)
        .start()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "max_outstanding",
                ..
            }
        ),
        "{err}"
    );
}
