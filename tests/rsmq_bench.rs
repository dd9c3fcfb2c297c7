//! RSMQ throughput on one local `redis-server`: this client's send, receive+delete and
//! `RsmqConsumer` against Node rsmq 0.12.4 and PyRSMQ 0.6.1, each with 1, 8 and 64 concurrent
//! callers, and what Redis itself spends per message. Ignored by default; it prints one JSON
//! line per measurement and asserts nothing about speed:
//!
//! ```text
//! cargo test --release --all-features --test rsmq_bench -- --ignored --nocapture
//! ACTIX_NSQ_RSMQ_BENCH_ROUNDS=3 ACTIX_NSQ_RSMQ_BENCH_MESSAGES=20000 cargo test ...
//! ```
//!
//! Node rsmq runs its callers as concurrent promises on one connection, PyRSMQ as threads with
//! a connection each: how their users scale them. Needs `redis-server`, `node` with `rsmq`
//! resolvable from `tests/interop` (`npm ci` there, or `NODE_PATH`) and `python3` with
//! PyRSMQ 0.6.1, as `.ci/run` installs them; a missing one fails the run rather than leaving a
//! comparison out.
//!
//! Redis's cost per message comes from `INFO cpu` (user+sys CPU of the server, so
//! 1e6 / `redis_cpu_us_per_msg` is what one Redis core allows) and `INFO commandstats` (calls
//! and µs spent executing commands), reset before each measurement.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use actix_nsq::{
    rsmq::{QueueOptions, Rsmq, RsmqConsumer},
    Delivery,
};
use redis::aio::MultiplexedConnection;
use redis_server::{which, RedisServer};
use serde_json::{json, Value};

const BODY_BYTES: usize = 100;
const CALLERS: [usize; 3] = [1, 8, 64];

fn env_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User+sys CPU of this process, µs (Linux /proc; USER_HZ 100).
fn own_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks as f64 * 10_000.0
}

/// The numeric value of `field` in an `INFO` answer.
fn info_field(info: &str, field: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Redis's own counters around one measurement.
struct RedisMeter {
    conn: MultiplexedConnection,
    cpu_s: f64,
}

impl RedisMeter {
    async fn start(server: &RedisServer) -> Self {
        let mut conn = server.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
        let cpu_s = Self::cpu_s(&mut conn).await;
        Self { conn, cpu_s }
    }

    async fn cpu_s(conn: &mut MultiplexedConnection) -> f64 {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(conn)
            .await
            .unwrap();
        info_field(&info, "used_cpu_user") + info_field(&info, "used_cpu_sys")
    }

    /// Per message: server CPU µs, commands executed, and µs spent executing them (the
    /// meter's own INFO and CONFIG calls left out).
    async fn per_message(mut self, messages: usize) -> Value {
        let cpu_s = Self::cpu_s(&mut self.conn).await - self.cpu_s;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await
            .unwrap();
        let (mut calls, mut usec) = (0.0, 0.0);
        for line in stats.lines() {
            let Some((name, values)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            if name == "info" || name.starts_with("config") {
                continue;
            }
            for kv in values.split(',') {
                match kv.split_once('=') {
                    Some(("calls", v)) => calls += v.parse::<f64>().unwrap_or(0.0),
                    Some(("usec", v)) => usec += v.parse::<f64>().unwrap_or(0.0),
                    _ => {}
                }
            }
        }
        let n = messages as f64;
        json!({
            "redis_cpu_us_per_msg": round2(cpu_s * 1e6 / n),
            "redis_calls_per_msg": round2(calls / n),
            "redis_exec_us_per_msg": round2(usec / n),
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Prints one measurement as a JSON line.
fn report(client: &str, workload: &str, callers: usize, run: &Run, redis: Value) {
    let mut line = json!({
        "client": client,
        "workload": workload,
        "callers": callers,
        "messages": run.messages,
        "body_bytes": BODY_BYTES,
        "seconds": (run.seconds * 1000.0).round() / 1000.0,
        "msgs_per_sec": (run.messages as f64 / run.seconds).round(),
        "client_cpu_us_per_msg": round2(run.cpu_us / run.messages as f64),
    });
    if let (Some(line), Some(redis)) = (line.as_object_mut(), redis.as_object()) {
        line.extend(redis.clone());
    }
    println!("{line}");
}

/// What one measured phase did.
struct Run {
    messages: usize,
    seconds: f64,
    cpu_us: f64,
}

/// `messages` one-at-a-time calls of `op` spread over `callers` concurrent loops.
async fn ours(rsmq: &Rsmq, queue: &str, op: &str, callers: usize, messages: usize) -> Run {
    let per = messages / callers;
    let body = "x".repeat(BODY_BYTES);
    let cpu = own_cpu_us();
    let start = Instant::now();
    let loops = (0..callers).map(|_| async {
        for _ in 0..per {
            if op == "send" {
                rsmq.send_message(queue, &body, None).await.unwrap();
            } else {
                let msg = rsmq.receive_message(queue, None).await.unwrap().unwrap();
                rsmq.delete_message(queue, &msg.id).await.unwrap();
            }
        }
    });
    futures_util::future::join_all(loops).await;
    Run {
        messages: per * callers,
        seconds: start.elapsed().as_secs_f64(),
        cpu_us: own_cpu_us() - cpu,
    }
}

/// An `RsmqConsumer` with `concurrency` receives at once and a handler that finishes at once,
/// from start to the last finish of `messages` waiting messages.
async fn ours_consumer(rsmq: &Rsmq, queue: &str, concurrency: usize, messages: usize) -> Run {
    let cpu = own_cpu_us();
    let start = Instant::now();
    let consumer = RsmqConsumer::builder(rsmq.clone(), queue)
        .concurrency(u32::try_from(concurrency).unwrap())
        .handler_fn(|_: Delivery| async { Ok(()) })
        .start()
        .unwrap();
    while consumer.stats().finished < messages as u64 {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    let run = Run {
        messages,
        seconds: start.elapsed().as_secs_f64(),
        cpu_us: own_cpu_us() - cpu,
    };
    assert_eq!(consumer.stop_within(Duration::from_secs(5)).await, 0);
    run
}

/// A peer client's driver script in tests/interop.
struct Driver {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
    /// Share of the message count it gets (PyRSMQ is slow enough that fewer suffice).
    divisor: usize,
}

impl Driver {
    fn find(name: &'static str, program: &str, script: &str, divisor: usize) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop")
            .join(script);
        let program = which(program).unwrap_or_else(|| {
            panic!("{program} not found on PATH: rsmq_bench compares against {name} (see .ci/run)")
        });
        Self {
            name,
            program,
            script,
            divisor,
        }
    }

    fn run(&self, port: u16, queue: &str, op: &str, callers: usize, messages: usize) -> Run {
        let out = Command::new(&self.program)
            .current_dir(self.script.parent().unwrap())
            .arg(&self.script)
            .args([&port.to_string(), queue, op])
            .args([messages, BODY_BYTES, callers].map(|n| n.to_string()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {op} with {callers} callers failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        Run {
            messages: usize::try_from(v["messages"].as_u64().unwrap()).unwrap(),
            seconds: v["seconds"].as_f64().unwrap(),
            cpu_us: v["cpu_us"].as_f64().unwrap(),
        }
    }
}

#[actix_rt::test]
#[ignore = "benchmark: prints throughput, asserts nothing about speed"]
async fn rsmq_throughput() {
    let server = RedisServer::start();
    let messages = env_or("ACTIX_NSQ_RSMQ_BENCH_MESSAGES", 10_000);
    let rounds = env_or("ACTIX_NSQ_RSMQ_BENCH_ROUNDS", 1);
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    let drivers = [
        Driver::find("node rsmq 0.12.4", "node", "node_bench.js", 1),
        Driver::find("PyRSMQ 0.6.1", "python3", "py_bench.py", 4),
    ];
    let body = "x".repeat(BODY_BYTES);
    for round in 0..rounds {
        for callers in CALLERS {
            // Interleaved: every client at this concurrency before the next one.
            let queue = format!("r{round}c{callers}ours");
            rsmq.create_queue(&queue, QueueOptions::new())
                .await
                .unwrap();
            for op in ["send", "receive_delete"] {
                let meter = RedisMeter::start(&server).await;
                let run = ours(&rsmq, &queue, op, callers, messages).await;
                let redis = meter.per_message(run.messages).await;
                report("actix-nsq rsmq", op, callers, &run, redis);
            }
            for (i, driver) in drivers.iter().enumerate() {
                let queue = format!("r{round}c{callers}peer{i}");
                rsmq.create_queue(&queue, QueueOptions::new())
                    .await
                    .unwrap();
                for op in ["send", "receive_delete"] {
                    let meter = RedisMeter::start(&server).await;
                    let count = (messages / driver.divisor).max(callers);
                    let run = driver.run(server.port(), &queue, op, callers, count);
                    let redis = meter.per_message(run.messages).await;
                    report(driver.name, op, callers, &run, redis);
                }
            }
            // The consumer drains a queue filled (untimed) by 64 concurrent sends.
            let queue = format!("r{round}c{callers}consumer");
            rsmq.create_queue(&queue, QueueOptions::new())
                .await
                .unwrap();
            let sends = (0..64).map(|_| async {
                for _ in 0..messages / 64 {
                    rsmq.send_message(&queue, &body, None).await.unwrap();
                }
            });
            futures_util::future::join_all(sends).await;
            let filled = messages / 64 * 64;
            let meter = RedisMeter::start(&server).await;
            let run = ours_consumer(&rsmq, &queue, callers, filled).await;
            let redis = meter.per_message(run.messages).await;
            report("actix-nsq RsmqConsumer", "consume", callers, &run, redis);
        }
    }
}
