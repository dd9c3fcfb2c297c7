//! The producer's small controls: `is_running`, a per-call timeout (`with_timeout`) and what
//! it means for the message, and `connect_nsqd` at run time.

use std::time::Duration;

use actix_nsq::{testing::TestNsqd, Error, Producer};

async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[actix_rt::test]
async fn is_running_until_the_stop_completes() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .start()
        .unwrap();
    let clone = producer.clone();
    producer.publish("events", "x").await.unwrap();
    assert!(producer.is_running());
    // A publish still waiting for its answer keeps the stop running.
    nsqd.delay_frames(Duration::from_millis(300));
    let publishing = producer.clone();
    let publish = actix_rt::spawn(async move { publishing.publish("events", "y").await });
    assert!(eventually(|| producer.outstanding() == 1).await);
    let stopping = producer.clone();
    let stop = actix_rt::spawn(async move { stopping.stop().await });
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert!(producer.is_running(), "the outstanding publish is answered");
    assert!(matches!(
        producer.publish("events", "z").await,
        Err(Error::Stopped)
    ));
    stop.await.unwrap();
    publish.await.unwrap().unwrap();
    assert!(!producer.is_running());
    assert!(!clone.is_running(), "clones see the same producer");
    assert_eq!(nsqd.topic_depth("events"), 2);
}

#[actix_rt::test]
async fn a_per_call_timeout_bounds_one_publish_and_says_the_outcome_is_unknown() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .start()
        .unwrap();
    producer.publish("events", "warm").await.unwrap();
    nsqd.delay_frames(Duration::from_millis(400));
    let quick = producer.with_timeout(Duration::from_millis(100));
    let err = quick.publish("events", "late").await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.outcome_unknown(), "it was written: {err}");
    // It was: nsqd has it, though the caller was told it timed out.
    assert!(eventually(|| nsqd.topic_depth("events") == 2).await);
    // The other handles keep the builder's timeout (10 s): the same delay is fine there.
    producer.multi_publish("events", ["a", "b"]).await.unwrap();
    assert_eq!(nsqd.topic_depth("events"), 4);
    // No time at all: refused before anything is written, and it says so.
    let none = producer.with_timeout(Duration::ZERO);
    let err = none.publish("events", "never").await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.outcome_unknown(), "nothing was written: {err}");
    nsqd.delay_frames(Duration::ZERO);
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(nsqd.topic_depth("events"), 4);
    producer.stop().await;
}

#[actix_rt::test]
async fn connect_nsqd_adds_an_nsqd_at_run_time() {
    let first = TestNsqd::start().unwrap();
    let second = TestNsqd::builder().max_msg_size(100).start().unwrap();
    let producer = Producer::builder()
        .nsqd(first.addr().to_string())
        .start()
        .unwrap();
    producer.publish("events", "one").await.unwrap();
    producer
        .connect_nsqd_with_http(second.addr().to_string(), second.http_url())
        .unwrap();
    // Already there: nothing new.
    producer.connect_nsqd(first.addr().to_string()).unwrap();
    producer.connect_nsqd(second.addr().to_string()).unwrap();
    assert_eq!(producer.stats().len(), 2);
    assert!(eventually(|| producer.stats().iter().all(|c| c.connected)).await);
    // Publishes spread over both, round robin.
    for i in 0..10 {
        producer.publish("events", format!("m{i}")).await.unwrap();
    }
    assert_eq!(
        first.topic_depth("events") + second.topic_depth("events"),
        11
    );
    assert!(
        second.topic_depth("events") >= 4,
        "the new nsqd takes its share"
    );
    // Its limits were read from its HTTP API, as for one given to the builder.
    assert!(
        eventually(|| producer
            .publish_limits()
            .iter()
            .any(|(addr, l)| *addr == second.addr().to_string() && l.max_msg_size == 100))
        .await
    );
    // Bad input and a stopped producer are errors.
    assert!(matches!(
        producer.connect_nsqd("no port"),
        Err(Error::Config { field: "nsqd", .. })
    ));
    assert!(matches!(
        producer.connect_nsqd_with_http(first.addr().to_string(), "ftp://x"),
        Err(Error::Config {
            field: "nsqd_http",
            ..
        })
    ));
    producer.stop().await;
    assert!(matches!(
        producer.connect_nsqd("127.0.0.1:1"),
        Err(Error::Stopped)
    ));
    assert!(eventually(|| first.clients().is_empty() && second.clients().is_empty()).await);
}

#[actix_rt::test]
async fn a_stop_whose_caller_gave_up_waiting_still_completes() {
    let nsqd = TestNsqd::start().unwrap();
    let producer = Producer::builder()
        .nsqd(nsqd.addr().to_string())
        .start()
        .unwrap();
    producer.publish("events", "x").await.unwrap();
    nsqd.delay_frames(Duration::from_millis(300));
    let publishing = producer.clone();
    let publish = actix_rt::spawn(async move { publishing.publish("events", "y").await });
    assert!(eventually(|| producer.outstanding() == 1).await);
    let waited = tokio::time::timeout(Duration::from_millis(1), producer.stop()).await;
    assert!(waited.is_err(), "the stop was still running");
    assert!(producer.is_running());
    publish.await.unwrap().unwrap();
    assert!(eventually(|| !producer.is_running()).await);
    assert!(eventually(|| nsqd.clients().is_empty()).await, "closed");
    assert_eq!(nsqd.topic_depth("events"), 2);
}
