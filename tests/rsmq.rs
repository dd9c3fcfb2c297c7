//! The RSMQ client against a real redis-server: every command and the exact Redis layout
//! (validation errors are in `rsmq_validation.rs`).
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_nsq::{
    rsmq::{
        DeleteOutcome, MaxSize, QueueChanges, QueueOptions, Rsmq, RsmqBuilder, VisibilityOutcome,
    },
    Error,
};
use redis::AsyncCommands;
use redis_server::RedisServer;

async fn setup() -> (RedisServer, Rsmq) {
    let server = RedisServer::start();
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    (server, rsmq)
}

/// Redis TIME as a `SystemTime`.
async fn redis_now(server: &RedisServer) -> SystemTime {
    let (sec, usec): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    UNIX_EPOCH + Duration::from_secs(sec) + Duration::from_micros(usec)
}

fn within(a: SystemTime, b: SystemTime, tolerance: Duration) -> bool {
    let diff = a.duration_since(b).unwrap_or_else(|e| e.duration());
    diff <= tolerance
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn queue_lifecycle() {
    let (server, rsmq) = setup().await;
    let before = redis_now(&server).await;
    rsmq.create_queue("q1", QueueOptions::new()).await.unwrap();
    rsmq.create_queue("a-q_0", QueueOptions::new().vt(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        rsmq.list_queues().await.unwrap(),
        vec!["a-q_0".to_owned(), "q1".to_owned()]
    );

    let attrs = rsmq.get_queue_attributes("q1").await.unwrap();
    assert_eq!(attrs.vt, Duration::from_secs(30));
    assert_eq!(attrs.delay, Duration::ZERO);
    assert_eq!(attrs.maxsize, MaxSize::Bytes(65536));
    assert_eq!(
        (
            attrs.totalsent,
            attrs.totalrecv,
            attrs.msgs,
            attrs.hiddenmsgs
        ),
        (0, 0, 0, 0)
    );
    assert!(
        within(attrs.created, before, Duration::from_secs(2)),
        "{attrs:?}"
    );
    assert_eq!(attrs.created, attrs.modified);

    let err = rsmq
        .create_queue("q1", QueueOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_queue_exists(), "{err}");

    let changes = QueueChanges::new()
        .vt(Duration::from_secs(45))
        .maxsize(MaxSize::Unlimited);
    let attrs = rsmq.set_queue_attributes("q1", changes).await.unwrap();
    assert_eq!(
        (attrs.vt, attrs.delay, attrs.maxsize),
        (Duration::from_secs(45), Duration::ZERO, MaxSize::Unlimited)
    );
    let attrs = rsmq
        .set_queue_attributes("q1", QueueChanges::new().delay(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(attrs.delay, Duration::from_secs(3));
    assert!(attrs.modified >= attrs.created);

    let err = rsmq
        .set_queue_attributes("q1", QueueChanges::new())
        .await
        .unwrap_err();
    assert!(err.is_no_attribute_supplied(), "{err}");
    // Unlike PyRSMQ, a missing queue is never half-created.
    let err = rsmq
        .set_queue_attributes("nope", QueueChanges::new().vt(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(err.is_queue_not_found(), "{err}");
    let exists: bool = server.conn().await.exists("rsmq:nope:Q").await.unwrap();
    assert!(!exists);

    rsmq.send_message("q1", "x", None).await.unwrap();
    rsmq.delete_queue("q1").await.unwrap();
    assert_eq!(rsmq.list_queues().await.unwrap(), vec!["a-q_0".to_owned()]);
    let keys: Vec<String> = server.conn().await.keys("rsmq:q1*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let err = rsmq.delete_queue("q1").await.unwrap_err();
    assert!(err.is_queue_not_found(), "{err}");
    let err = rsmq.get_queue_attributes("q1").await.unwrap_err();
    assert!(err.is_queue_not_found(), "{err}");
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn raw_layout_matches_node() {
    let (server, rsmq) = setup().await;
    let mut conn = server.conn().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let hash: HashMap<String, String> = conn.hgetall("rsmq:q:Q").await.unwrap();
    assert_eq!(hash.len(), 5, "{hash:?}");
    assert_eq!(
        (
            hash["vt"].as_str(),
            hash["delay"].as_str(),
            hash["maxsize"].as_str()
        ),
        ("30", "0", "65536")
    );
    assert_eq!(hash["created"], hash["modified"]);
    assert!(hash["created"].len() == 10 && hash["created"].bytes().all(|b| b.is_ascii_digit()));
    let queues: Vec<String> = conn.smembers("rsmq:QUEUES").await.unwrap();
    assert_eq!(queues, vec!["q".to_owned()]);

    let id = rsmq.send_message("q", "hello", None).await.unwrap();
    let now = redis_now(&server).await;
    assert_eq!(id.len(), 32);
    assert!(
        id[..10]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
        "{id}"
    );
    assert!(id[10..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    let micros = u64::from_str_radix(&id[..10], 36).unwrap();
    assert!(within(
        UNIX_EPOCH + Duration::from_micros(micros),
        now,
        Duration::from_secs(1)
    ));

    let zset: Vec<(String, String)> = redis::cmd("ZRANGE")
        .arg("rsmq:q")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(zset.len(), 1);
    assert_eq!(zset[0].0, id);
    let score = &zset[0].1;
    assert!(
        score.len() == 13 && score.bytes().all(|b| b.is_ascii_digit()),
        "score {score}"
    );
    assert_eq!(
        score.parse::<u64>().unwrap(),
        micros / 1000,
        "score is the send time in ms"
    );
    let hash: HashMap<String, String> = conn.hgetall("rsmq:q:Q").await.unwrap();
    assert_eq!(hash[&id], "hello");
    assert_eq!(hash["totalsent"], "1");
    assert!(!hash.contains_key(&format!("{id}:rc")));

    let msg = rsmq
        .receive_message("q", Some(Duration::from_secs(7)))
        .await
        .unwrap()
        .unwrap();
    let hash: HashMap<String, String> = conn.hgetall("rsmq:q:Q").await.unwrap();
    assert_eq!(hash[&format!("{id}:rc")], "1");
    assert_eq!(hash["totalrecv"], "1");
    let fr = &hash[&format!("{id}:fr")];
    assert!(
        fr.len() == 13 && fr.bytes().all(|b| b.is_ascii_digit()),
        "fr {fr}"
    );
    let fr: u64 = fr.parse().unwrap();
    assert_eq!(msg.fr, UNIX_EPOCH + Duration::from_millis(fr));
    let score: String = redis::cmd("ZSCORE")
        .arg("rsmq:q")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        score,
        (fr + 7000).to_string(),
        "hidden until receive time + vt"
    );
    assert_eq!(msg.sent, Some(UNIX_EPOCH + Duration::from_micros(micros)));
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn send_receive_delete() {
    let (_server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let mut ids = Vec::new();
    for body in ["one", "two", "", "vier ünicode"] {
        ids.push(rsmq.send_message("q", body, None).await.unwrap());
    }
    let mut got = Vec::new();
    while let Some(msg) = rsmq.receive_message("q", None).await.unwrap() {
        assert_eq!(msg.rc, 1);
        // `sent` has microseconds, `fr` (Redis TIME in the script) is cut to milliseconds: a
        // receive in the same millisecond as the send reads up to 1 ms "before" it.
        assert!(
            msg.sent.unwrap() <= msg.fr + Duration::from_millis(1),
            "{msg:?}"
        );
        got.push((msg.id, msg.message));
    }
    let expected: Vec<_> = ids
        .iter()
        .cloned()
        .zip(["one", "two", "", "vier ünicode"].map(String::from))
        .collect();
    assert_eq!(got, expected, "FIFO, bodies intact");

    let attrs = rsmq.get_queue_attributes("q").await.unwrap();
    assert_eq!(
        (
            attrs.msgs,
            attrs.hiddenmsgs,
            attrs.totalsent,
            attrs.totalrecv
        ),
        (4, 4, 4, 4)
    );
    assert!(rsmq.delete_message("q", &ids[0]).await.unwrap());
    assert!(!rsmq.delete_message("q", &ids[0]).await.unwrap());
    // Never received: Node reports 1 (PyRSMQ's false negative is not copied).
    let fresh = rsmq.send_message("q", "fresh", None).await.unwrap();
    assert!(rsmq.delete_message("q", &fresh).await.unwrap());
    assert_eq!(rsmq.get_queue_attributes("q").await.unwrap().msgs, 3);
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn delay_and_visibility() {
    let (_server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new().delay(Duration::from_secs(100)))
        .await
        .unwrap();
    let delayed = rsmq.send_message("q", "later", None).await.unwrap();
    let explicit = rsmq
        .send_message("q", "later too", Some(Duration::from_secs(50)))
        .await
        .unwrap();
    assert_eq!(rsmq.receive_message("q", None).await.unwrap(), None);
    let attrs = rsmq.get_queue_attributes("q").await.unwrap();
    assert_eq!((attrs.msgs, attrs.hiddenmsgs), (2, 2));

    assert!(rsmq
        .change_message_visibility("q", &explicit, Duration::ZERO)
        .await
        .unwrap());
    let msg = rsmq.receive_message("q", None).await.unwrap().unwrap();
    assert_eq!(msg.id, explicit);
    assert_eq!(rsmq.receive_message("q", None).await.unwrap(), None);
    assert!(rsmq
        .change_message_visibility("q", &delayed, Duration::ZERO)
        .await
        .unwrap());
    assert_eq!(
        rsmq.receive_message("q", None).await.unwrap().unwrap().id,
        delayed
    );

    rsmq.delete_message("q", &delayed).await.unwrap();
    assert!(!rsmq
        .change_message_visibility("q", &delayed, Duration::ZERO)
        .await
        .unwrap());
    let zero = rsmq
        .send_message("q", "now", Some(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        rsmq.receive_message("q", None).await.unwrap().unwrap().id,
        zero
    );
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn vt_expiry_redelivers_and_stale_receipts_are_refused() {
    let (_server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let id = rsmq.send_message("q", "work", None).await.unwrap();
    let first = rsmq
        .receive_message("q", Some(Duration::from_secs(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.id.as_str(), first.rc), (id.as_str(), 1));

    // Wait for the 1 s visibility timeout to run out: events, not durations, are asserted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        if let Some(msg) = rsmq
            .receive_message("q", Some(Duration::from_secs(60)))
            .await
            .unwrap()
        {
            break msg;
        }
        assert!(tokio::time::Instant::now() < deadline, "never redelivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((second.id.as_str(), second.rc), (id.as_str(), 2));
    assert_eq!(second.fr, first.fr, "first-receive time is kept");

    // The first worker is late: its receipt no longer owns the message.
    let late = rsmq
        .change_message_visibility_checked("q", &id, first.rc, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(late, VisibilityOutcome::NotOwned);
    assert_eq!(
        rsmq.delete_message_checked("q", &id, first.rc)
            .await
            .unwrap(),
        DeleteOutcome::NotOwned
    );
    assert_eq!(
        rsmq.get_queue_attributes("q").await.unwrap().msgs,
        1,
        "still there"
    );
    // The current holder extends, then deletes.
    let extended = rsmq
        .change_message_visibility_checked("q", &id, second.rc, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(extended, VisibilityOutcome::Changed);
    assert_eq!(
        rsmq.delete_message_checked("q", &id, second.rc)
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        rsmq.delete_message_checked("q", &id, second.rc)
            .await
            .unwrap(),
        DeleteOutcome::NotFound
    );
    let gone = rsmq
        .change_message_visibility_checked("q", &id, second.rc, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gone, VisibilityOutcome::NotFound);
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn checked_ops_need_the_message_to_be_still_hidden() {
    let (_server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let id = rsmq.send_message("q", "x", None).await.unwrap();
    // Never received: no receipt can own it.
    assert_eq!(
        rsmq.delete_message_checked("q", &id, 0).await.unwrap(),
        DeleteOutcome::NotOwned
    );
    // vt 0: visible again at once, so the receipt has already lapsed although rc still matches.
    let msg = rsmq
        .receive_message("q", Some(Duration::ZERO))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rsmq.delete_message_checked("q", &id, msg.rc).await.unwrap(),
        DeleteOutcome::NotOwned
    );
    let msg = rsmq
        .receive_message("q", Some(Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.rc, 2);
    // Releasing (vt 0) with the right receipt works, and ends the hold.
    let released = rsmq
        .change_message_visibility_checked("q", &id, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(released, VisibilityOutcome::Changed);
    assert_eq!(
        rsmq.delete_message_checked("q", &id, 2).await.unwrap(),
        DeleteOutcome::NotOwned
    );
    // The plain Node delete ignores receipts.
    assert!(rsmq.delete_message("q", &id).await.unwrap());
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn pop_takes_the_message_out() {
    let (server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let a = rsmq.send_message("q", "a", None).await.unwrap();
    let b = rsmq.send_message("q", "b", None).await.unwrap();
    let before = redis_now(&server).await;
    let msg = rsmq.pop_message("q").await.unwrap().unwrap();
    assert_eq!(
        (msg.id.as_str(), msg.message.as_str(), msg.rc),
        (a.as_str(), "a", 1)
    );
    assert!(within(msg.fr, before, Duration::from_secs(2)));
    let mut conn = server.conn().await;
    let fields: Vec<String> = conn.hkeys("rsmq:q:Q").await.unwrap();
    assert!(!fields.iter().any(|f| f.starts_with(&a)), "{fields:?}");
    let ids: Vec<String> = conn.zrange("rsmq:q", 0, -1).await.unwrap();
    assert_eq!(ids, vec![b.clone()]);
    // A popped message that had been received before keeps its rc and fr.
    let received = rsmq
        .receive_message("q", Some(Duration::ZERO))
        .await
        .unwrap()
        .unwrap();
    let popped = rsmq.pop_message("q").await.unwrap().unwrap();
    assert_eq!(
        (popped.id.as_str(), popped.rc, popped.fr),
        (b.as_str(), 2, received.fr)
    );
    assert_eq!(rsmq.pop_message("q").await.unwrap(), None);
    assert_eq!(rsmq.get_queue_attributes("q").await.unwrap().totalrecv, 3);
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn builder_namespace_client_and_debug() {
    let server = RedisServer::start();
    let rsmq = RsmqBuilder::new(server.client())
        .namespace("app:jobs")
        .build()
        .await
        .unwrap();
    assert_eq!(rsmq.namespace(), "app:jobs");
    assert!(!rsmq.is_realtime());
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    rsmq.send_message("q", "x", None).await.unwrap();
    let mut keys: Vec<String> = server.conn().await.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["app:jobs:QUEUES", "app:jobs:q", "app:jobs:q:Q"]);

    let err = RsmqBuilder::new(server.client())
        .namespace("")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "namespace",
                ..
            }
        ),
        "{err}"
    );
    let err = RsmqBuilder::from_url("http://nope").unwrap_err();
    assert!(matches!(err, Error::Config { field: "url", .. }), "{err}");
    let builder = RsmqBuilder::from_url("redis://:hunter2@127.0.0.1:1/0").unwrap();
    let debug = format!("{builder:?} {rsmq:?}");
    assert!(
        !debug.contains("hunter2") && debug.contains("app:jobs"),
        "{debug}"
    );
    rsmq.quit();
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn concurrent_consumers_each_get_a_message_once() {
    let (_server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let sends = (0..200).map(|i| {
        let rsmq = rsmq.clone();
        async move {
            rsmq.send_message("q", &format!("m{i}"), None)
                .await
                .unwrap()
        }
    });
    let mut sent: Vec<String> = futures_util::future::join_all(sends).await;
    let consumers = (0..4).map(|_| {
        let rsmq = rsmq.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(msg) = rsmq.receive_message("q", None).await.unwrap() {
                assert_eq!(
                    rsmq.delete_message_checked("q", &msg.id, msg.rc)
                        .await
                        .unwrap(),
                    DeleteOutcome::Deleted
                );
                got.push(msg.id);
            }
            got
        })
    });
    let mut received: Vec<String> = Vec::new();
    for consumer in consumers {
        received.extend(consumer.await.unwrap());
    }
    sent.sort();
    received.sort();
    assert_eq!(received, sent);
    let attrs = rsmq.get_queue_attributes("q").await.unwrap();
    assert_eq!(
        (attrs.msgs, attrs.totalsent, attrs.totalrecv),
        (0, 200, 200)
    );
}
