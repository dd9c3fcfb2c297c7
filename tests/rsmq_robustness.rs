//! The RSMQ client when things go wrong or others wrote the data: NOSCRIPT, phantom ids,
//! legacy ids, floats in the hash, dropped connections, a restarted server; plus realtime
//! notifications, unix sockets and an actix System.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;

use std::time::Duration;

use actix_nsq::{
    rsmq::{
        DeleteOutcome, MaxSize, Notification, QueueChanges, QueueOptions, Rsmq, RsmqBuilder,
        VisibilityOutcome,
    },
    Error, NameKind,
};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis_server::RedisServer;

const PATIENCE: Duration = Duration::from_secs(30);

async fn setup() -> (RedisServer, Rsmq) {
    let server = RedisServer::start();
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    (server, rsmq)
}

async fn raw(server: &RedisServer, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut server.conn().await).await.unwrap()
}

async fn script_flush(server: &RedisServer) {
    raw(server, &["SCRIPT", "FLUSH"]).await;
}

/// Retries `op` until it succeeds: the first command after a dropped connection may fail.
async fn eventually<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = actix_nsq::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn every_script_survives_script_flush() {
    let (server, rsmq) = setup().await;
    let d = Duration::from_secs;
    script_flush(&server).await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    script_flush(&server).await;
    rsmq.set_queue_attributes("q", QueueChanges::new().vt(d(40)))
        .await
        .unwrap();
    script_flush(&server).await;
    assert_eq!(rsmq.get_queue_attributes("q").await.unwrap().vt, d(40));
    let id = rsmq.send_message("q", "a", None).await.unwrap();
    rsmq.send_message("q", "b", None).await.unwrap();
    script_flush(&server).await;
    let msg = rsmq.receive_message("q", None).await.unwrap().unwrap();
    assert_eq!(msg.id, id);
    script_flush(&server).await;
    let changed = rsmq
        .change_message_visibility_checked("q", &id, 1, d(50))
        .await
        .unwrap();
    assert_eq!(changed, VisibilityOutcome::Changed);
    script_flush(&server).await;
    assert!(rsmq
        .change_message_visibility("q", &id, d(60))
        .await
        .unwrap());
    script_flush(&server).await;
    assert_eq!(
        rsmq.delete_message_checked("q", &id, 1).await.unwrap(),
        DeleteOutcome::Deleted
    );
    script_flush(&server).await;
    assert_eq!(rsmq.pop_message("q").await.unwrap().unwrap().message, "b");
    // Each call above after a flush got NOSCRIPT and healed itself (errorstats: Redis 6.2+):
    // one per call, two for set_queue_attributes (its script, then the attributes one).
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    if let Some(count) = info.split("errorstat_NOSCRIPT:count=").nth(1) {
        let count: u64 = count
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(count, 9, "{info}");
    }
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn phantom_ids_do_not_stall_the_queue() {
    let (server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    // Ids in the ZSET whose body is gone, as a half-finished delete by another client leaves.
    let phantom_a = "0000000000phantomAAAAAAAAAAAAAAA";
    let phantom_b = "0000000001phantomBBBBBBBBBBBBBBB";
    raw(&server, &["ZADD", "rsmq:q", "1", phantom_a, "2", phantom_b]).await;
    raw(
        &server,
        &["HSET", "rsmq:q:Q", &format!("{phantom_a}:rc"), "3"],
    )
    .await;
    let real = rsmq.send_message("q", "real", None).await.unwrap();

    let msg = rsmq.receive_message("q", None).await.unwrap().unwrap();
    assert_eq!(
        (msg.id.as_str(), msg.message.as_str()),
        (real.as_str(), "real")
    );
    let ids: Vec<String> = server.conn().await.zrange("rsmq:q", 0, -1).await.unwrap();
    assert_eq!(ids, vec![real.clone()], "phantoms removed in the same call");
    let fields: Vec<String> = server.conn().await.hkeys("rsmq:q:Q").await.unwrap();
    assert!(!fields.iter().any(|f| f.contains("phantom")), "{fields:?}");
    assert_eq!(
        rsmq.get_queue_attributes("q").await.unwrap().totalrecv,
        1,
        "phantoms not counted"
    );

    raw(&server, &["ZADD", "rsmq:q", "1", phantom_a]).await;
    let second = rsmq.send_message("q", "second", None).await.unwrap();
    assert_eq!(rsmq.pop_message("q").await.unwrap().unwrap().id, second);
    raw(&server, &["ZADD", "rsmq:q", "1", phantom_b]).await;
    assert_eq!(
        rsmq.pop_message("q").await.unwrap(),
        None,
        "a queue of phantoms is empty"
    );
    let left: u64 = server.conn().await.zcard("rsmq:q").await.unwrap();
    assert_eq!(left, 1, "only the hidden real message remains");
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn legacy_30_char_ids_are_received_not_addressed() {
    let (server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    // rsmq_async 8..=15: base36 of epoch ms (8 chars) + 22 random.
    let legacy = "lxd3k2p0AbCdEfGhIjKlMnOpQrStUv";
    raw(&server, &["ZADD", "rsmq:q", "1000", legacy]).await;
    raw(&server, &["HSET", "rsmq:q:Q", legacy, "old"]).await;
    let msg = rsmq
        .receive_message("q", Some(Duration::ZERO))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (msg.id.as_str(), msg.message.as_str(), msg.rc),
        (legacy, "old", 1)
    );
    assert!(
        msg.sent.is_some(),
        "decodes to something, like Node, without failing"
    );
    let err = rsmq.delete_message("q", legacy).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidName {
                kind: NameKind::MessageId,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(rsmq.pop_message("q").await.unwrap().unwrap().id, legacy);
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn values_written_by_others_are_read_leniently() {
    let (server, rsmq) = setup().await;
    // PyRSMQ can store floats for vt/delay and 65565 for maxsize.
    raw(
        &server,
        &[
            "HSET",
            "rsmq:py:Q",
            "vt",
            "1.5",
            "delay",
            "2.0",
            "maxsize",
            "65565",
        ],
    )
    .await;
    raw(
        &server,
        &[
            "HSET",
            "rsmq:py:Q",
            "created",
            "1718000000",
            "modified",
            "1718000000",
        ],
    )
    .await;
    let attrs = rsmq.get_queue_attributes("py").await.unwrap();
    assert_eq!(
        (attrs.vt, attrs.delay),
        (Duration::from_secs(1), Duration::from_secs(2))
    );
    assert_eq!(attrs.maxsize, MaxSize::Bytes(65565));
    let id = rsmq
        .send_message("py", &"x".repeat(65565), Some(Duration::ZERO))
        .await
        .unwrap();
    let msg = rsmq.receive_message("py", None).await.unwrap().unwrap();
    let score: u64 = server.conn().await.zscore("rsmq:py", &id).await.unwrap();
    let fr = msg
        .fr
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(score, fr + 1000, "queue vt 1.5 reads as 1 s, like parseInt");

    // A queue exists only with vt, delay and maxsize all set.
    raw(&server, &["HSET", "rsmq:half:Q", "vt", "30", "delay", "0"]).await;
    for err in [
        rsmq.get_queue_attributes("half").await.unwrap_err(),
        rsmq.send_message("half", "x", None).await.unwrap_err(),
        rsmq.receive_message("half", None).await.unwrap_err(),
    ] {
        assert!(err.is_queue_not_found(), "{err}");
    }
    // createQueue completes it, as Node's does, and still reports queueExists.
    let err = rsmq
        .create_queue("half", QueueOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_queue_exists(), "{err}");
    assert_eq!(
        rsmq.get_queue_attributes("half").await.unwrap().maxsize,
        MaxSize::Bytes(65536)
    );

    raw(
        &server,
        &[
            "HSET",
            "rsmq:bad:Q",
            "vt",
            "soon",
            "delay",
            "0",
            "maxsize",
            "-1",
        ],
    )
    .await;
    let err = rsmq.receive_message("bad", None).await.unwrap_err();
    assert!(err.is_invalid_stored_value(), "{err}");
    assert!(rsmq
        .receive_message("bad", Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn realtime_publishes_the_message_count() {
    let server = RedisServer::start();
    let quiet = Rsmq::connect(&server.url()).await.unwrap();
    let loud = RsmqBuilder::from_url(&server.url())
        .unwrap()
        .realtime(true)
        .build()
        .await
        .unwrap();
    assert!(loud.is_realtime());
    quiet.create_queue("q", QueueOptions::new()).await.unwrap();

    let mut raw_sub = server.client().get_async_pubsub().await.unwrap();
    raw_sub.subscribe("rsmq:rt:q").await.unwrap();
    let mut raw_sub = raw_sub.into_on_message();
    let mut ours = quiet.subscribe("q").await.unwrap();
    assert_eq!(ours.queue(), "q");

    // The non-realtime send publishes nothing, so the first payload is the realtime one: 2.
    quiet.send_message("q", "silent", None).await.unwrap();
    loud.send_message("q", "one", None).await.unwrap();
    loud.send_message("q", "two", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    for expected in [2u64, 3] {
        let msg = tokio::time::timeout(PATIENCE, raw_sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_channel_name(), "rsmq:rt:q");
        assert_eq!(msg.get_payload::<String>().unwrap(), expected.to_string());
        let note = tokio::time::timeout(PATIENCE, ours.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(note, Notification::Sent { msgs: expected });
    }
    let zcard: u64 = server.conn().await.zcard("rsmq:q").await.unwrap();
    assert_eq!(zcard, 3);
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn notifications_resubscribe_after_a_disconnect() {
    let server = RedisServer::start();
    let rsmq = RsmqBuilder::from_url(&server.url())
        .unwrap()
        .realtime(true)
        .build()
        .await
        .unwrap();
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let mut notes = rsmq.subscribe("q").await.unwrap();
    raw(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    let next = tokio::time::timeout(PATIENCE, notes.next()).await.unwrap();
    assert_eq!(next, Some(Notification::Resubscribed));
    rsmq.send_message("q", "x", None).await.unwrap();
    let next = tokio::time::timeout(PATIENCE, notes.next()).await.unwrap();
    assert_eq!(next, Some(Notification::Sent { msgs: 1 }));
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn reconnects_after_killed_connections_and_a_restart() {
    let (mut server, rsmq) = setup().await;
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    raw(&server, &["CLIENT", "KILL", "TYPE", "normal"]).await;
    let id = eventually(|| rsmq.send_message("q", "after kill", None)).await;
    assert_eq!(
        rsmq.receive_message("q", None).await.unwrap().unwrap().id,
        id
    );

    // A restarted server is empty and has no scripts loaded.
    server.restart();
    let err = eventually(|| async {
        match rsmq.get_queue_attributes("q").await {
            Err(e @ Error::Redis { .. }) => Err(e),
            other => Ok(other),
        }
    })
    .await
    .unwrap_err();
    assert!(err.is_queue_not_found(), "{err}");
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    rsmq.send_message("q", "fresh", None).await.unwrap();
    assert_eq!(
        rsmq.receive_message("q", None)
            .await
            .unwrap()
            .unwrap()
            .message,
        "fresh"
    );
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn unix_socket_url() {
    let server = RedisServer::start_unix();
    assert!(
        server.url().starts_with("redis+unix:///"),
        "{}",
        server.url()
    );
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let id = rsmq.send_message("q", "over a socket", None).await.unwrap();
    let msg = rsmq.pop_message("q").await.unwrap().unwrap();
    assert_eq!((msg.id, msg.message.as_str()), (id, "over a socket"));
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn works_inside_an_actix_system() {
    let server = RedisServer::start();
    let rsmq = RsmqBuilder::from_url(&server.url())
        .unwrap()
        .realtime(true)
        .build()
        .await
        .unwrap();
    rsmq.create_queue("q", QueueOptions::new()).await.unwrap();
    let mut notes = rsmq.subscribe("q").await.unwrap();
    let handle = actix_rt::spawn({
        let rsmq = rsmq.clone();
        async move {
            rsmq.send_message("q", "from an actix task", None)
                .await
                .unwrap()
        }
    });
    let id = handle.await.unwrap();
    let note = tokio::time::timeout(PATIENCE, notes.next()).await.unwrap();
    assert_eq!(note, Some(Notification::Sent { msgs: 1 }));
    let msg = rsmq.receive_message("q", None).await.unwrap().unwrap();
    assert_eq!(msg.id, id);
    assert_eq!(
        rsmq.delete_message_checked("q", &id, msg.rc).await.unwrap(),
        DeleteOutcome::Deleted
    );
}
