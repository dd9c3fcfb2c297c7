//! End-to-end benchmarks: consume, publish and latency, one JSON line per workload.
//!
//! ```text
//! cargo run --release --example bench                       # in-process test nsqd
//! cargo run --release --example bench -- --nsqd-tcp-address 127.0.0.1:4150
//! cargo run --release --example bench -- --workload consume-2500 --messages 1000000
//! ```
//!
//! Each workload runs in a fresh child process so that CPU time and peak RSS belong to it
//! alone. CPU is user+sys time: of the whole process against a real nsqd, of the client's own
//! thread (the actix system thread, which runs connections and handlers) against the
//! in-process nsqd, whose server threads would otherwise be counted. Peak RSS is the process's
//! high-water mark; against the in-process nsqd it includes the server's queued messages, so
//! only the real-nsqd figure describes the client. Linux only (reads /proc).

use std::{
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_nsq::{testing::TestNsqd, Consumer, Delivery, Producer};
use clap::Parser;
use futures_util::{stream, StreamExt};

const WORKLOADS: [&str; 7] = [
    "consume-2500",
    "consume-1",
    "publish-awaited",
    "publish-128",
    "mpub-100",
    "latency",
    "raw-baseline",
];

#[derive(Parser, Debug, Clone)]
#[command(about = "End-to-end benchmarks of actix-nsq against a real or in-process nsqd")]
struct Args {
    /// A real nsqd's TCP address; without it the in-process test nsqd is used.
    #[arg(long)]
    nsqd_tcp_address: Option<String>,
    /// The real nsqd's HTTP address, to delete the benchmark topics afterwards.
    #[arg(long)]
    nsqd_http_address: Option<String>,
    /// Run only this workload (in this process). One of: consume-2500, consume-1,
    /// publish-awaited, publish-128, mpub-100, latency.
    #[arg(long)]
    workload: Option<String>,
    /// Messages for the throughput workloads (scaled down for the slow ones).
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body_size: usize,
    /// Publish rate of the latency workload, messages per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Duration of the latency workload, seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The consume workloads add a listener of per-message events (the cost of events).
    #[arg(long)]
    message_listener: bool,
}

/// Set from `--message-listener` for the consume workloads.
static MESSAGE_LISTENER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Counts the events it gets: a listener doing the least a real one would.
struct CountEvents(u64);

impl actix::Actor for CountEvents {
    type Context = actix::Context<Self>;
}

impl actix::Handler<actix_nsq::ConsumerEvent> for CountEvents {
    type Result = ();
    fn handle(&mut self, _: actix_nsq::ConsumerEvent, _: &mut Self::Context) {
        self.0 += 1;
    }
}

/// CPU time of the process, or of the calling thread, from /proc, in microseconds.
fn cpu_micros(thread_only: bool) -> u64 {
    let path = if thread_only {
        "/proc/thread-self/stat"
    } else {
        "/proc/self/stat"
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks * 10_000 // USER_HZ is 100 on Linux
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

struct Target {
    tcp: String,
    in_process: bool,
    _server: Option<TestNsqd>,
}

fn target(args: &Args) -> Target {
    match &args.nsqd_tcp_address {
        Some(addr) => Target {
            tcp: addr.clone(),
            in_process: false,
            _server: None,
        },
        None => {
            let server = TestNsqd::builder()
                .record_commands(false)
                .start()
                .expect("start the in-process nsqd");
            Target {
                tcp: server.addr().to_string(),
                in_process: true,
                _server: Some(server),
            }
        }
    }
}

fn topic(workload: &str) -> String {
    format!("bench-{workload}-{}", std::process::id())
}

async fn prefill(addr: &str, topic: &str, messages: u64, body: &[u8]) {
    let producer = Producer::builder().nsqd(addr).start().expect("producer");
    let batch: Vec<Vec<u8>> = (0..100).map(|_| body.to_vec()).collect();
    let batches = messages / 100;
    stream::iter(0..batches)
        .for_each_concurrent(16, |_| {
            let (producer, batch) = (producer.clone(), batch.clone());
            async move { producer.multi_publish(topic, batch).await.expect("prefill") }
        })
        .await;
    producer.stop().await;
}

struct Measured {
    messages: u64,
    elapsed: Duration,
    cpu_micros: u64,
    extra: serde_json::Value,
}

async fn consume(
    target: &Target,
    workload: &str,
    max_in_flight: u32,
    messages: u64,
    body: &[u8],
) -> Measured {
    let topic = topic(workload);
    prefill(&target.tcp, &topic, messages, body).await;
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let cpu = cpu_micros(target.in_process);
    let start = Instant::now();
    let mut builder = Consumer::builder(&topic, "bench")
        .nsqd(&target.tcp)
        .max_in_flight(max_in_flight)
        .handler_fn(move |_d: Delivery| {
            counter.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(()))
        });
    let listener = MESSAGE_LISTENER.load(Ordering::Relaxed);
    if listener {
        use actix::Actor;
        builder = builder.message_events(CountEvents(0).start().recipient());
    }
    let consumer = builder.start().expect("consumer");
    while consumer.stats().finished < messages {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_micros(target.in_process) - cpu;
    consumer.stop().await;
    Measured {
        messages,
        elapsed,
        cpu_micros: cpu,
        extra: serde_json::json!({"max_in_flight": max_in_flight, "message_listener": listener}),
    }
}

async fn publish(
    target: &Target,
    workload: &str,
    concurrency: usize,
    batch: usize,
    messages: u64,
    body: &[u8],
) -> Measured {
    let topic = topic(workload);
    let producer = Producer::builder()
        .nsqd(&target.tcp)
        .max_outstanding(concurrency.max(1))
        .start()
        .expect("producer");
    producer.ping().await.expect("connect");
    let cpu = cpu_micros(target.in_process);
    let start = Instant::now();
    let calls = messages / batch as u64;
    let bodies: Vec<Vec<u8>> = (0..batch).map(|_| body.to_vec()).collect();
    stream::iter(0..calls)
        .for_each_concurrent(concurrency, |_| {
            let (producer, topic, bodies) = (producer.clone(), topic.clone(), bodies.clone());
            async move {
                if batch == 1 {
                    producer
                        .publish(&topic, bodies[0].clone())
                        .await
                        .expect("publish");
                } else {
                    producer.multi_publish(&topic, bodies).await.expect("mpub");
                }
            }
        })
        .await;
    let elapsed = start.elapsed();
    let cpu = cpu_micros(target.in_process) - cpu;
    producer.stop().await;
    let extra = serde_json::json!({"concurrency": concurrency, "batch": batch});
    Measured {
        messages: calls * batch as u64,
        elapsed,
        cpu_micros: cpu,
        extra,
    }
}

fn now_nanos() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(0)
}

async fn latency(target: &Target, args: &Args) -> Measured {
    let topic = topic("latency");
    let samples = Arc::new(Mutex::new(Vec::new()));
    let recorder = samples.clone();
    let consumer = Consumer::builder(&topic, "bench")
        .nsqd(&target.tcp)
        .max_in_flight(1)
        .handler_fn(move |d: Delivery| {
            let sent = d
                .body()
                .get(..8)
                .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
            recorder
                .lock()
                .unwrap()
                .push(now_nanos().saturating_sub(sent));
            std::future::ready(Ok(()))
        })
        .start()
        .expect("consumer");
    let producer = Producer::builder()
        .nsqd(&target.tcp)
        .start()
        .expect("producer");
    producer.ping().await.expect("connect");
    // Let the consumer connect and subscribe before timing anything.
    producer
        .publish(&topic, vec![0u8; args.body_size.max(8)])
        .await
        .expect("warm up");
    while consumer.stats().finished < 1 {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    samples.lock().unwrap().clear();
    let total = args.rate * args.seconds;
    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let mut ticker = actix_rt::time::interval(interval);
    let cpu = cpu_micros(target.in_process);
    let start = Instant::now();
    for _ in 0..total {
        ticker.tick().await;
        let mut body = vec![0u8; args.body_size.max(8)];
        body[..8].copy_from_slice(&now_nanos().to_be_bytes());
        let producer = producer.clone();
        let topic = topic.clone();
        actix_rt::spawn(async move { producer.publish(&topic, body).await.expect("publish") });
    }
    while consumer.stats().finished < total + 1 {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_micros(target.in_process) - cpu;
    let mut samples = samples.lock().unwrap().clone();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e6
    };
    let extra = serde_json::json!({"rate": args.rate, "max_in_flight": 1, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)});
    consumer.stop().await;
    producer.stop().await;
    Measured {
        messages: total,
        elapsed,
        cpu_micros: cpu,
        extra,
    }
}

/// Deletes the benchmark's topic on a real nsqd, so runs do not pile messages up in it.
async fn delete_topic(args: &Args, topic: &str) {
    let Some(http) = &args.nsqd_http_address else {
        return;
    };
    match actix_nsq::NsqdHttpClient::new(http) {
        Ok(client) => {
            if let Err(error) = client.delete_topic(topic).await {
                eprintln!("could not delete topic {topic}: {error}");
            }
        }
        Err(error) => eprintln!("bad --nsqd-http-address {http}: {error}"),
    }
}

fn run_one(args: &Args, workload: &str) {
    let system = actix_rt::System::new();
    MESSAGE_LISTENER.store(args.message_listener, Ordering::Relaxed);
    let target = target(args);
    let body = vec![b'x'; args.body_size];
    let m = args.messages;
    let measured = system.block_on(async {
        match workload {
            "consume-2500" => consume(&target, workload, 2500, m, &body).await,
            "consume-1" => consume(&target, workload, 1, (m / 25).max(100), &body).await,
            "publish-awaited" => publish(&target, workload, 1, 1, (m / 25).max(100), &body).await,
            "publish-128" => publish(&target, workload, 128, 1, m / 2, &body).await,
            "mpub-100" => publish(&target, workload, 1, 100, m * 2, &body).await,
            "latency" => latency(&target, args).await,
            other => panic!("unknown workload {other}; known: {WORKLOADS:?}"),
        }
    });
    // Before the clean-up below, whose HTTP client is not part of the workload.
    let peak_rss = peak_rss_mb();
    system.block_on(delete_topic(args, &topic(workload)));
    let secs = measured.elapsed.as_secs_f64();
    let mut line = serde_json::json!({
        "client": "actix-nsq",
        "workload": workload,
        "server": if target.in_process { "in-process".to_owned() } else { target.tcp.clone() },
        "messages": measured.messages,
        "body_bytes": args.body_size,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "msgs_per_sec": (measured.messages as f64 / secs).round(),
        "cpu_us_per_msg": (measured.cpu_micros as f64 / measured.messages as f64 * 1000.0).round() / 1000.0,
        "cpu_scope": if target.in_process { "client thread" } else { "process" },
        "peak_rss_mb": (peak_rss * 10.0).round() / 10.0,
    });
    if let (Some(line), Some(extra)) = (line.as_object_mut(), measured.extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
}

fn main() {
    let args = Args::parse();
    if let Some(workload) = &args.workload {
        run_one(&args, workload);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for workload in WORKLOADS.iter().filter(|w| **w != "raw-baseline") {
        let mut child = Command::new(&exe);
        child
            .args(std::env::args().skip(1))
            .args(["--workload", workload]);
        let status = child.status().expect("run workload");
        if !status.success() {
            eprintln!("workload {workload} failed: {status}");
        }
    }
}
