//! Throughput of this RSMQ client against PyRSMQ 0.6.1 on the same redis-server, and of the
//! RsmqConsumer at a few concurrencies. Ignored by default; it only prints numbers:
//!
//! ```text
//! cargo test --release --all-features --test rsmq_bench -- --ignored --nocapture
//! ```
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;

use std::{path::PathBuf, time::Instant};

use actix_nsq::{
    rsmq::{QueueOptions, Rsmq, RsmqConsumer},
    Delivery,
};
use redis_server::{which, RedisServer};

const MESSAGES: usize = 10_000;
const BODY_BYTES: usize = 100;
const CONCURRENCY: usize = 32;

fn rate(count: usize, since: Instant) -> f64 {
    count as f64 / since.elapsed().as_secs_f64()
}

/// Sends, then receives and deletes, `MESSAGES` messages with `workers` concurrent callers.
async fn run_ours(rsmq: &Rsmq, queue: &str, workers: usize, checked: bool) -> (f64, f64) {
    rsmq.create_queue(queue, QueueOptions::new()).await.unwrap();
    let body = "x".repeat(BODY_BYTES);
    let per_worker = MESSAGES / workers;

    let start = Instant::now();
    let sends = (0..workers).map(|_| {
        let (rsmq, body) = (rsmq.clone(), body.clone());
        let queue = queue.to_owned();
        tokio::spawn(async move {
            for _ in 0..per_worker {
                rsmq.send_message(&queue, &body, None).await.unwrap();
            }
        })
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
    let send = rate(per_worker * workers, start);

    let start = Instant::now();
    let receives = (0..workers).map(|_| {
        let rsmq = rsmq.clone();
        let queue = queue.to_owned();
        tokio::spawn(async move {
            for _ in 0..per_worker {
                let msg = rsmq.receive_message(&queue, None).await.unwrap().unwrap();
                if checked {
                    rsmq.delete_message_checked(&queue, &msg.id, msg.rc)
                        .await
                        .unwrap();
                } else {
                    rsmq.delete_message(&queue, &msg.id).await.unwrap();
                }
            }
        })
    });
    futures_util::future::join_all(receives)
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
    (send, rate(per_worker * workers, start))
}

fn run_pyrsmq(server: &RedisServer) -> Option<(f64, f64)> {
    let python = which("python3")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/py_bench.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args([
            server.port().to_string(),
            MESSAGES.to_string(),
            BODY_BYTES.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        println!(
            "PyRSMQ run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["send_per_s"].as_f64()?,
        v["receive_delete_per_s"].as_f64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints throughput, asserts nothing"]
async fn rsmq_throughput_vs_pyrsmq() {
    let server = RedisServer::start();
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    println!("{MESSAGES} messages of {BODY_BYTES} bytes, one local redis-server; msgs/s");
    println!("{:<44} {:>10} {:>16}", "client", "send", "receive+delete");
    let rows = [
        ("actix-nsq rsmq, 1 caller, delete", 1, false),
        ("actix-nsq rsmq, 1 caller, delete_checked", 1, true),
        (
            "actix-nsq rsmq, 32 concurrent callers, delete",
            CONCURRENCY,
            false,
        ),
    ];
    for (i, (name, workers, checked)) in rows.into_iter().enumerate() {
        let (send, recv) = run_ours(&rsmq, &format!("bench{i}"), workers, checked).await;
        println!("{name:<44} {send:>10.0} {recv:>16.0}");
    }
    match run_pyrsmq(&server) {
        Some((send, recv)) => {
            println!("{:<44} {send:>10.0} {recv:>16.0}", "PyRSMQ 0.6.1, 1 caller")
        }
        None => println!("PyRSMQ 0.6.1: not available"),
    }
}

/// Fills `queue` with `MESSAGES` messages, then consumes them with an `RsmqConsumer` whose
/// handler finishes at once; msgs/s from start to the last finish.
async fn consume(rsmq: &Rsmq, queue: &str, concurrency: u32) -> f64 {
    rsmq.create_queue(queue, QueueOptions::new()).await.unwrap();
    let body = "x".repeat(BODY_BYTES);
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(CONCURRENCY) {
        let sends = chunk.iter().map(|_| rsmq.send_message(queue, &body, None));
        for sent in futures_util::future::join_all(sends).await {
            sent.unwrap();
        }
    }
    let start = Instant::now();
    let consumer = RsmqConsumer::builder(rsmq.clone(), queue)
        .concurrency(concurrency)
        .handler_fn(|_: Delivery| async { Ok(()) })
        .start()
        .unwrap();
    while consumer.stats().finished < MESSAGES as u64 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let rate = rate(MESSAGES, start);
    assert_eq!(
        consumer
            .stop_within(std::time::Duration::from_secs(5))
            .await,
        0
    );
    rate
}

#[actix_rt::test]
#[ignore = "benchmark: prints throughput, asserts nothing"]
async fn rsmq_consumer_throughput() {
    let server = RedisServer::start();
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    println!("RsmqConsumer, {MESSAGES} messages of {BODY_BYTES} bytes, handler finishes at once; one local redis-server, one actix thread");
    println!("{:<12} {:>16}", "concurrency", "receive+finish/s");
    for concurrency in [1, 8, 32, 128] {
        let rate = consume(&rsmq, &format!("consume{concurrency}"), concurrency).await;
        println!("{concurrency:<12} {rate:>16.0}");
    }
}
