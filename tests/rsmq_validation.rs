//! Every validation error of the RSMQ client, against a real redis-server: what Node rsmq
//! refuses (names, ids, ranges, sizes, missing queues) is refused, and nothing is written.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;

use std::time::Duration;

use actix_nsq::{
    rsmq::{MaxSize, QueueChanges, QueueOptions, Rsmq},
    BodyError, Error, NameKind,
};
use redis_server::RedisServer;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A server with queue `q` (maxsize 1024) holding one message; returns its id.
async fn setup() -> (RedisServer, Rsmq, String) {
    let server = RedisServer::start();
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    let options = QueueOptions::new().maxsize(MaxSize::Bytes(1024));
    rsmq.create_queue("q", options).await.unwrap();
    let id = rsmq.send_message("q", "x", None).await.unwrap();
    (server, rsmq, id)
}

/// Every key and field in the database, to show that a refused call wrote nothing.
async fn snapshot(server: &RedisServer) -> Vec<(String, redis::Value)> {
    let mut conn = server.conn().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let mut dump = Vec::new();
    for key in keys {
        let value = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        dump.push((key, value));
    }
    dump
}

fn assert_name(e: Error, expected: NameKind, input: &str) {
    assert!(
        matches!(&e, Error::InvalidName { kind, name, .. } if *kind == expected && name == input),
        "{input:?}: {e}"
    );
}

fn assert_config(e: Error, expected: &str) {
    assert!(
        matches!(&e, Error::Config { field, .. } if *field == expected),
        "{e}"
    );
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn bad_queue_names_are_refused_by_every_command() {
    let (server, rsmq, id) = setup().await;
    let before = snapshot(&server).await;
    let long = "q".repeat(161);
    for bad in ["", "a.b", "with space", "a:b", "é", long.as_str()] {
        let check = |e| assert_name(e, NameKind::Queue, bad);
        check(
            rsmq.create_queue(bad, QueueOptions::new())
                .await
                .unwrap_err(),
        );
        check(rsmq.delete_queue(bad).await.unwrap_err());
        check(rsmq.get_queue_attributes(bad).await.unwrap_err());
        let changes = QueueChanges::new().vt(secs(1));
        check(rsmq.set_queue_attributes(bad, changes).await.unwrap_err());
        check(rsmq.send_message(bad, "x", None).await.unwrap_err());
        check(rsmq.receive_message(bad, None).await.unwrap_err());
        check(rsmq.pop_message(bad).await.unwrap_err());
        check(rsmq.delete_message(bad, &id).await.unwrap_err());
        check(rsmq.delete_message_checked(bad, &id, 1).await.unwrap_err());
        check(
            rsmq.change_message_visibility(bad, &id, secs(1))
                .await
                .unwrap_err(),
        );
        let checked = rsmq
            .change_message_visibility_checked(bad, &id, 1, secs(1))
            .await;
        check(checked.unwrap_err());
        check(rsmq.subscribe(bad).await.unwrap_err());
    }
    assert_eq!(snapshot(&server).await, before);
    let longest = "q".repeat(160);
    rsmq.create_queue(&longest, QueueOptions::new())
        .await
        .unwrap();
    rsmq.delete_queue(&longest).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn bad_message_ids_are_refused() {
    let (server, rsmq, id) = setup().await;
    let before = snapshot(&server).await;
    let dashed = format!("{}-", &id[..31]);
    let longer = format!("{id}x");
    for bad in ["", &id[..31], dashed.as_str(), longer.as_str()] {
        let check = |e| assert_name(e, NameKind::MessageId, bad);
        check(rsmq.delete_message("q", bad).await.unwrap_err());
        check(rsmq.delete_message_checked("q", bad, 1).await.unwrap_err());
        check(
            rsmq.change_message_visibility("q", bad, secs(1))
                .await
                .unwrap_err(),
        );
        let checked = rsmq
            .change_message_visibility_checked("q", bad, 1, secs(1))
            .await;
        check(checked.unwrap_err());
    }
    assert_eq!(snapshot(&server).await, before);
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn durations_and_sizes_out_of_range_are_config_errors() {
    let (server, rsmq, id) = setup().await;
    let before = snapshot(&server).await;
    let sub_second = [Duration::from_millis(1500), Duration::from_millis(500)];
    for bad in sub_second.into_iter().chain([secs(10_000_000)]) {
        let create = |o: QueueOptions| rsmq.create_queue("n", o);
        assert_config(create(QueueOptions::new().vt(bad)).await.unwrap_err(), "vt");
        assert_config(
            create(QueueOptions::new().delay(bad)).await.unwrap_err(),
            "delay",
        );
        let set = |c: QueueChanges| rsmq.set_queue_attributes("q", c);
        assert_config(set(QueueChanges::new().vt(bad)).await.unwrap_err(), "vt");
        assert_config(
            set(QueueChanges::new().delay(bad)).await.unwrap_err(),
            "delay",
        );
        assert_config(
            rsmq.send_message("q", "x", Some(bad)).await.unwrap_err(),
            "delay",
        );
        assert_config(
            rsmq.receive_message("q", Some(bad)).await.unwrap_err(),
            "vt",
        );
        let change = rsmq.change_message_visibility("q", &id, bad).await;
        assert_config(change.unwrap_err(), "vt");
        let change = rsmq
            .change_message_visibility_checked("q", &id, 1, bad)
            .await;
        assert_config(change.unwrap_err(), "vt");
    }
    for bytes in [0, 1023, 65537, 65565] {
        let bad = MaxSize::Bytes(bytes);
        let create = rsmq
            .create_queue("n", QueueOptions::new().maxsize(bad))
            .await;
        assert_config(create.unwrap_err(), "maxsize");
        let set = rsmq
            .set_queue_attributes("q", QueueChanges::new().maxsize(bad))
            .await;
        assert_config(set.unwrap_err(), "maxsize");
    }
    assert_eq!(snapshot(&server).await, before);

    let largest = QueueOptions::new()
        .vt(secs(9_999_999))
        .delay(secs(9_999_999));
    rsmq.create_queue("n", largest.maxsize(MaxSize::Bytes(65536)))
        .await
        .unwrap();
    let smallest = QueueOptions::new()
        .vt(Duration::ZERO)
        .maxsize(MaxSize::Bytes(1024));
    rsmq.create_queue("m", smallest).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn bodies_over_maxsize_are_counted_in_bytes() {
    let (server, rsmq, _) = setup().await;
    let before = snapshot(&server).await;
    let too_long = |e: Error, expected: usize| {
        assert!(
            matches!(e, Error::InvalidBody(BodyError::TooLarge { size, max: 1024 }) if size == expected),
            "{e}"
        );
    };
    too_long(
        rsmq.send_message("q", &"x".repeat(1025), None)
            .await
            .unwrap_err(),
        1025,
    );
    // 342 euro signs are 342 UTF-16 units, which Node would take, but 1026 bytes.
    too_long(
        rsmq.send_message("q", &"€".repeat(342), None)
            .await
            .unwrap_err(),
        1026,
    );
    assert_eq!(snapshot(&server).await, before);
    rsmq.send_message("q", &"x".repeat(1024), None)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn missing_queues_are_queue_not_found() {
    let (server, rsmq, id) = setup().await;
    let before = snapshot(&server).await;
    let missing = "missing";
    for e in [
        rsmq.delete_queue(missing).await.unwrap_err(),
        rsmq.get_queue_attributes(missing).await.unwrap_err(),
        rsmq.set_queue_attributes(missing, QueueChanges::new().vt(secs(1)))
            .await
            .unwrap_err(),
        rsmq.send_message(missing, "x", None).await.unwrap_err(),
        rsmq.receive_message(missing, None).await.unwrap_err(),
        rsmq.pop_message(missing).await.unwrap_err(),
        rsmq.change_message_visibility(missing, &id, secs(1))
            .await
            .unwrap_err(),
        rsmq.change_message_visibility_checked(missing, &id, 1, secs(1))
            .await
            .unwrap_err(),
    ] {
        assert!(e.is_queue_not_found(), "{e}");
    }
    let e = rsmq
        .set_queue_attributes("q", QueueChanges::new())
        .await
        .unwrap_err();
    assert!(e.is_no_attribute_supplied(), "{e}");
    assert_eq!(snapshot(&server).await, before);
}
