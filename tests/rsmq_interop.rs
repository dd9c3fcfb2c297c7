//! Interop with Node rsmq 0.12.4 and PyRSMQ 0.6.1 on a real Redis, both directions, driven
//! through the small scripts in `tests/interop/`.
//!
//! Needs `node` with `tests/interop/node_modules` (`npm ci` there) and `python3` with
//! `pip install PyRSMQ==0.6.1`, and `redis-server`. Every test is `#[ignore]`d for that
//! reason (cargo counts it as not run); asked for with `-- --ignored` (as `.ci/run` does), a
//! missing tool fails the test instead of passing it.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use actix_nsq::{
    rsmq::{DeleteOutcome, MaxSize, Notification, QueueOptions, Rsmq, RsmqBuilder},
    BodyError, Error, NameKind,
};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis_server::{which, RedisServer};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

/// One of the other implementations, run as a script per batch of operations.
struct Driver {
    program: PathBuf,
    script: PathBuf,
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn missing(what: &str) -> ! {
    panic!("{what}: this interop test cannot run")
}

impl Driver {
    fn node() -> Self {
        let Some(program) = which("node") else {
            missing("node not found");
        };
        let package = interop_dir().join("node_modules/rsmq/package.json");
        let version = std::fs::read_to_string(&package).ok().and_then(|text| {
            serde_json::from_str::<Value>(&text).ok()?["version"]
                .as_str()
                .map(str::to_owned)
        });
        if version.as_deref() != Some("0.12.4") {
            missing("rsmq@0.12.4 not installed in tests/interop (run `npm ci` there)");
        }
        Self {
            program,
            script: interop_dir().join("node_rsmq.js"),
        }
    }

    fn python() -> Self {
        let Some(program) = which("python3") else {
            missing("python3 not found");
        };
        let version = std::process::Command::new(&program)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('PyRSMQ'))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
        if version.as_deref() != Some("0.6.1") {
            missing("PyRSMQ 0.6.1 not installed (pip install PyRSMQ==0.6.1)");
        }
        Self {
            program,
            script: interop_dir().join("py_rsmq.py"),
        }
    }

    /// Runs `ops` in order and returns one `{"ok": ..}` / `{"err": ..}` per operation.
    async fn run(&self, server: &RedisServer, options: Value, ops: Value) -> Vec<Value> {
        let out = tokio::process::Command::new(&self.program)
            .arg(&self.script)
            .arg(server.port().to_string())
            .arg(options.to_string())
            .arg(ops.to_string())
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(PATIENCE, out).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?} failed: {stderr}", self.script);
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad output ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(results.len(), ops.as_array().unwrap().len(), "{results:?}");
        results
    }
}

fn ok(result: &Value) -> &Value {
    result
        .get("ok")
        .unwrap_or_else(|| panic!("operation failed: {result}"))
}

fn err_name(result: &Value) -> &str {
    result["err"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {result}"))
}

fn start() -> RedisServer {
    RedisServer::start()
}

async fn ours(server: &RedisServer) -> Rsmq {
    Rsmq::connect(&server.url()).await.unwrap()
}

async fn zscore(server: &RedisServer, key: &str, id: &str) -> u64 {
    server.conn().await.zscore(key, id).await.unwrap()
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn node_writes_ours_reads() {
    let (node, server) = (Driver::node(), start());
    let r = node
        .run(
            &server,
            json!({}),
            json!([
                {"op": "createQueue", "args": {"qname": "nq"}},
                {"op": "sendMessage", "args": {"qname": "nq", "message": "from node"}},
                {"op": "sendMessage", "args": {"qname": "nq", "message": "ünïcode 2"}},
                {"op": "sendMessage", "args": {"qname": "nq", "message": "later", "delay": 100}},
            ]),
        )
        .await;
    assert_eq!(ok(&r[0]), 1);
    let ids: Vec<String> = r[1..]
        .iter()
        .map(|v| ok(v).as_str().unwrap().to_owned())
        .collect();
    let rsmq = ours(&server).await;
    assert_eq!(rsmq.list_queues().await.unwrap(), ["nq"]);
    let attrs = rsmq.get_queue_attributes("nq").await.unwrap();
    assert_eq!(
        (attrs.vt, attrs.delay, attrs.maxsize),
        (
            Duration::from_secs(30),
            Duration::ZERO,
            MaxSize::Bytes(65536)
        )
    );
    assert_eq!((attrs.totalsent, attrs.msgs), (3, 3));
    // Node's ZCOUNT from the start of the current second also counts just-sent messages.
    assert!((1..=3).contains(&attrs.hiddenmsgs), "{attrs:?}");

    let msg = rsmq.receive_message("nq", None).await.unwrap().unwrap();
    assert_eq!(
        (msg.id.as_str(), msg.message.as_str(), msg.rc),
        (ids[0].as_str(), "from node", 1)
    );
    assert!(msg.sent.unwrap() <= msg.fr);
    assert_eq!(
        zscore(&server, "rsmq:nq", &ids[0]).await,
        millis(msg.fr) + 30_000,
        "vt 30 is seconds"
    );
    // A message made visible again is scored "now", behind older visible ones: pop those.
    let popped = rsmq.pop_message("nq").await.unwrap().unwrap();
    assert_eq!(
        (popped.id.as_str(), popped.message.as_str()),
        (ids[1].as_str(), "ünïcode 2")
    );
    assert!(rsmq
        .change_message_visibility("nq", &ids[0], Duration::ZERO)
        .await
        .unwrap());
    let again = rsmq.receive_message("nq", None).await.unwrap().unwrap();
    assert_eq!(
        (again.id.as_str(), again.rc, again.fr),
        (ids[0].as_str(), 2, msg.fr)
    );
    assert_eq!(
        rsmq.delete_message_checked("nq", &ids[0], 2).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(rsmq.delete_message("nq", &ids[2]).await.unwrap());
    rsmq.delete_queue("nq").await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn ours_writes_node_reads() {
    let (node, server) = (Driver::node(), start());
    let rsmq = ours(&server).await;
    let options = QueueOptions::new()
        .vt(Duration::from_secs(20))
        .maxsize(MaxSize::Bytes(2048));
    rsmq.create_queue("oq", options).await.unwrap();
    let mut ids = Vec::new();
    for body in ["from rust", "second", "ünïcode"] {
        ids.push(rsmq.send_message("oq", body, None).await.unwrap());
    }
    let r = node
        .run(
            &server,
            json!({}),
            json!([
                {"op": "getQueueAttributes", "args": {"qname": "oq"}},
                {"op": "receiveMessage", "args": {"qname": "oq"}},
            ]),
        )
        .await;
    let attrs = ok(&r[0]);
    assert_eq!(
        (&attrs["vt"], &attrs["delay"], &attrs["maxsize"]),
        (&json!(20), &json!(0), &json!(2048))
    );
    assert_eq!(
        (&attrs["totalsent"], &attrs["msgs"]),
        (&json!(3), &json!(3))
    );
    let msg = ok(&r[1]);
    assert_eq!(
        (&msg["id"], &msg["message"], &msg["rc"]),
        (&json!(ids[0]), &json!("from rust"), &json!(1))
    );
    let micros = u64::from_str_radix(&ids[0][..10], 36).unwrap();
    assert_eq!(
        msg["sent"].as_f64().unwrap(),
        micros as f64 / 1000.0,
        "Node decodes our id"
    );
    let fr = msg["fr"].as_u64().unwrap();
    assert_eq!(
        zscore(&server, "rsmq:oq", &ids[0]).await,
        fr + 20_000,
        "Node reads vt 20 as seconds"
    );

    let r = node
        .run(
            &server,
            json!({}),
            json!([
                {"op": "popMessage", "args": {"qname": "oq"}},
                {"op": "receiveMessage", "args": {"qname": "oq"}},
                {"op": "changeMessageVisibility", "args": {"qname": "oq", "id": ids[0], "vt": 0}},
                {"op": "receiveMessage", "args": {"qname": "oq"}},
                {"op": "deleteMessage", "args": {"qname": "oq", "id": ids[0]}},
                {"op": "sendMessage", "args": {"qname": "oq", "message": "x".repeat(2049)}},
                {"op": "setQueueAttributes", "args": {"qname": "oq", "vt": 40, "delay": 5}},
            ]),
        )
        .await;
    assert_eq!(&ok(&r[0])["id"], &json!(ids[1]));
    assert_eq!(
        (&ok(&r[1])["id"], &ok(&r[1])["message"]),
        (&json!(ids[2]), &json!("ünïcode"))
    );
    assert_eq!(ok(&r[2]), 1);
    assert_eq!(
        (&ok(&r[3])["id"], &ok(&r[3])["rc"], &ok(&r[3])["fr"]),
        (&json!(ids[0]), &json!(2), &json!(fr))
    );
    assert_eq!(ok(&r[4]), 1);
    assert_eq!(
        err_name(&r[5]),
        "messageTooLong",
        "Node enforces the maxsize we stored"
    );
    assert_eq!(&ok(&r[6])["vt"], &json!(40));

    let attrs = rsmq.get_queue_attributes("oq").await.unwrap();
    assert_eq!(
        (attrs.vt, attrs.delay),
        (Duration::from_secs(40), Duration::from_secs(5))
    );
    assert_eq!((attrs.totalrecv, attrs.msgs), (4, 1));
    // Ours sees Node's receive of ids[2]: the receipt is rc 1.
    assert_eq!(
        rsmq.delete_message_checked("oq", &ids[2], 1).await.unwrap(),
        DeleteOutcome::Deleted
    );
}

/// Normalizes a queue hash: the message id becomes `<id>`, and times their digit count.
fn normalized(hash: BTreeMap<String, String>, id: &str) -> BTreeMap<String, String> {
    hash.into_iter()
        .map(|(field, value)| {
            let field = field.replace(id, "<id>");
            let value = match field.as_str() {
                "created" | "modified" | "<id>:fr" if value.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("<{} digits>", value.len())
                }
                _ => value,
            };
            (field, value)
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn node_and_ours_write_the_same_bytes() {
    let (node, server) = (Driver::node(), start());
    let r = node
        .run(
            &server,
            json!({}),
            json!([
                {"op": "createQueue", "args": {"qname": "byn", "maxsize": -1}},
                {"op": "sendMessage", "args": {"qname": "byn", "message": "same"}},
                {"op": "receiveMessage", "args": {"qname": "byn"}},
            ]),
        )
        .await;
    let node_id = ok(&r[1]).as_str().unwrap().to_owned();
    let rsmq = ours(&server).await;
    rsmq.create_queue("byr", QueueOptions::new().maxsize(MaxSize::Unlimited))
        .await
        .unwrap();
    let our_id = rsmq.send_message("byr", "same", None).await.unwrap();
    let our_msg = rsmq.receive_message("byr", None).await.unwrap().unwrap();

    let mut conn = server.conn().await;
    let node_hash: BTreeMap<String, String> = conn.hgetall("rsmq:byn:Q").await.unwrap();
    let our_hash: BTreeMap<String, String> = conn.hgetall("rsmq:byr:Q").await.unwrap();
    let expected = normalized(node_hash, &node_id);
    assert_eq!(normalized(our_hash, &our_id), expected);
    assert_eq!(expected["<id>:fr"], "<13 digits>");
    assert_eq!(expected["created"], "<10 digits>");
    for (key, id, fr) in [
        ("rsmq:byn", &node_id, ok(&r[2])["fr"].as_u64().unwrap()),
        ("rsmq:byr", &our_id, millis(our_msg.fr)),
    ] {
        let zset: Vec<(String, String)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(zset, [(id.clone(), (fr + 30_000).to_string())], "{key}");
        assert_eq!(id.len(), 32);
        assert!(
            id[..10]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
            "{id}"
        );
    }
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn realtime_payloads_match_node() {
    let (node, server) = (Driver::node(), start());
    let rsmq = RsmqBuilder::from_url(&server.url())
        .unwrap()
        .realtime(true)
        .build()
        .await
        .unwrap();
    rsmq.create_queue("rt", QueueOptions::new()).await.unwrap();
    let mut raw = server.client().get_async_pubsub().await.unwrap();
    raw.subscribe("rsmq:rt:rt").await.unwrap();
    let mut raw = raw.into_on_message();
    let mut notes = rsmq.subscribe("rt").await.unwrap();
    let node_send = json!([{"op": "sendMessage", "args": {"qname": "rt", "message": "n"}}]);

    node.run(&server, json!({"realtime": true}), node_send.clone())
        .await;
    rsmq.send_message("rt", "r", None).await.unwrap();
    node.run(&server, json!({"realtime": true}), node_send)
        .await;
    for expected in 1..=3u64 {
        let msg = tokio::time::timeout(PATIENCE, raw.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            msg.get_payload::<String>().unwrap(),
            expected.to_string(),
            "payload = ZCARD"
        );
        let note = tokio::time::timeout(PATIENCE, notes.next()).await.unwrap();
        assert_eq!(note, Some(Notification::Sent { msgs: expected }));
    }
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn python_writes_ours_reads() {
    let (py, server) = (Driver::python(), start());
    let r = py
        .run(
            &server,
            json!({}),
            json!([
                {"op": "createQueue", "args": {"qname": "pq"}},
                {"op": "sendMessage", "args": {"qname": "pq", "message": "from python"}},
                {"op": "sendMessage", "args": {"qname": "pq", "message": "second"}},
                {"op": "createQueue", "args": {"qname": "pf", "vt": 1.5}},
            ]),
        )
        .await;
    assert_eq!((ok(&r[0]), ok(&r[3])), (&json!(true), &json!(true)));
    let ids: Vec<String> = r[1..3]
        .iter()
        .map(|v| ok(v).as_str().unwrap().to_owned())
        .collect();
    let rsmq = ours(&server).await;
    let attrs = rsmq.get_queue_attributes("pq").await.unwrap();
    assert_eq!(
        (attrs.vt, attrs.maxsize, attrs.totalsent),
        (Duration::from_secs(30), MaxSize::Bytes(65565), 2)
    );
    assert_eq!(
        rsmq.get_queue_attributes("pf").await.unwrap().vt,
        Duration::from_secs(1),
        "\"1.5\" reads as 1"
    );

    let msg = rsmq.receive_message("pq", None).await.unwrap().unwrap();
    assert_eq!(
        (msg.id.as_str(), msg.message.as_str(), msg.rc),
        (ids[0].as_str(), "from python", 1)
    );
    assert_eq!(
        zscore(&server, "rsmq:pq", &ids[0]).await,
        millis(msg.fr) + 30_000
    );
    // Never received: Node's (and our) delete reports it; PyRSMQ's would say False.
    assert!(rsmq.delete_message("pq", &ids[1]).await.unwrap());
    assert!(rsmq
        .change_message_visibility("pq", &ids[0], Duration::ZERO)
        .await
        .unwrap());
    let again = rsmq.receive_message("pq", None).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.rc), (ids[0].as_str(), 2));
    assert_eq!(
        rsmq.delete_message_checked("pq", &ids[0], 2).await.unwrap(),
        DeleteOutcome::Deleted
    );
    // PyRSMQ's 65565-byte limit is honoured as stored.
    assert!(rsmq
        .send_message("pq", &"x".repeat(65565), None)
        .await
        .is_ok());
    let err = rsmq
        .send_message("pq", &"x".repeat(65566), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBody(BodyError::TooLarge { max: 65565, .. })
        ),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn ours_writes_python_reads() {
    let (py, server) = (Driver::python(), start());
    let rsmq = ours(&server).await;
    rsmq.create_queue("oq", QueueOptions::new().vt(Duration::from_secs(20)))
        .await
        .unwrap();
    let a = rsmq.send_message("oq", "from rust", None).await.unwrap();
    let b = rsmq.send_message("oq", "ünïcode", None).await.unwrap();
    let r = py
        .run(
            &server,
            json!({}),
            json!([
                {"op": "getQueueAttributes", "args": {"qname": "oq"}},
                {"op": "receiveMessage", "args": {"qname": "oq"}},
            ]),
        )
        .await;
    let attrs = ok(&r[0]);
    assert_eq!(
        (&attrs["vt"], &attrs["delay"], &attrs["maxsize"]),
        (&json!(20.0), &json!(0.0), &json!(65536))
    );
    assert_eq!(
        (&attrs["totalsent"], &attrs["msgs"]),
        (&json!(2), &json!(2))
    );
    let msg = ok(&r[1]);
    assert_eq!(
        (&msg["id"], &msg["message"], &msg["rc"]),
        (&json!(a), &json!("from rust"), &json!(1))
    );
    let ts = msg["ts"].as_u64().unwrap();
    assert_eq!(
        zscore(&server, "rsmq:oq", &a).await,
        ts + 20_000,
        "PyRSMQ reads vt 20 as seconds"
    );

    let r = py
        .run(
            &server,
            json!({}),
            json!([
                {"op": "popMessage", "args": {"qname": "oq"}},
                {"op": "changeMessageVisibility", "args": {"qname": "oq", "id": a, "vt": 0}},
                {"op": "receiveMessage", "args": {"qname": "oq"}},
                {"op": "deleteMessage", "args": {"qname": "oq", "id": a}},
                {"op": "setQueueAttributes", "args": {"qname": "oq", "vt": 40}},
            ]),
        )
        .await;
    assert_eq!(
        (&ok(&r[0])["id"], &ok(&r[0])["message"]),
        (&json!(b), &json!("ünïcode"))
    );
    assert_eq!(ok(&r[1]), true);
    assert_eq!((&ok(&r[2])["id"], &ok(&r[2])["rc"]), (&json!(a), &json!(2)));
    assert_eq!(
        ok(&r[3]),
        true,
        "received before, so PyRSMQ's HDEL == 3 check holds"
    );
    assert_eq!(&ok(&r[4])["vt"], &json!(40.0));
    let attrs = rsmq.get_queue_attributes("oq").await.unwrap();
    assert_eq!(
        (attrs.vt, attrs.msgs, attrs.totalrecv),
        (Duration::from_secs(40), 0, 3)
    );
}

#[tokio::test]
#[ignore = "needs redis-server, node with tests/interop/node_modules and PyRSMQ 0.6.1; run with --ignored (.ci/run does)"]
async fn python_queue_names_with_dots_are_refused_clearly() {
    let (py, server) = (Driver::python(), start());
    let r = py
        .run(
            &server,
            json!({}),
            json!([
                {"op": "createQueue", "args": {"qname": "with.dot"}},
                {"op": "sendMessage", "args": {"qname": "with.dot", "message": "m"}},
            ]),
        )
        .await;
    assert_eq!(ok(&r[0]), true);
    let rsmq = ours(&server).await;
    assert_eq!(
        rsmq.list_queues().await.unwrap(),
        ["with.dot"],
        "listed, but not addressable"
    );
    for err in [
        rsmq.get_queue_attributes("with.dot").await.unwrap_err(),
        rsmq.receive_message("with.dot", None).await.unwrap_err(),
        rsmq.send_message("with.dot", "x", None).await.unwrap_err(),
    ] {
        let Error::InvalidName {
            kind: NameKind::Queue,
            name,
            reason,
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(name, "with.dot");
        assert!(reason.contains("PyRSMQ"), "{err}");
    }
    let left: u64 = server.conn().await.zcard("rsmq:with.dot").await.unwrap();
    assert_eq!(left, 1, "nothing touched");
}
