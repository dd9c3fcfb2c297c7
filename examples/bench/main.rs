//! End-to-end benchmarks: consume, publish, latency, many nsqd and memory, over plain TCP or
//! TLS with snappy or deflate; one JSON line per workload.
//!
//! ```text
//! cargo run --release --example bench                       # in-process test nsqd
//! cargo run --release --example bench -- --nsqd-tcp-address 127.0.0.1:4150
//! cargo run --release --example bench -- --workload consume-2500 --messages 1000000
//! cargo run --release --example bench -- --tls --deflate 6  # TLS 1.3 + deflate level 6
//! cargo run --release --example bench -- --workload many-nsqd \
//!     --nsqd-tcp-address 127.0.0.1:4150,127.0.0.1:4152,127.0.0.1:4154,127.0.0.1:4156 \
//!     --lookupd-http-address 127.0.0.1:4161
//! ```
//!
//! Each workload runs in a fresh child process so that CPU time and peak RSS belong to it
//! alone. CPU is user+sys time: of the whole process against a real nsqd, of the client's own
//! thread (the actix system thread, which runs connections and handlers) against the
//! in-process nsqd, whose server threads would otherwise be counted. Peak RSS is the process's
//! high-water mark (for the consume workloads, from after the pre-fill); against the
//! in-process nsqd it includes the server's queued messages, so only the real-nsqd figure
//! describes the client. Linux only (reads /proc).

mod latency;
mod measure;
mod nsq;
mod raw;
mod target;

use std::{path::PathBuf, process::Command, time::Duration};

use clap::Parser;

use crate::{
    latency::Pacing,
    measure::peak_rss_bytes,
    nsq::ConsumeSpec,
    target::{target, transport_label, Target},
};

/// Every workload, in the order a plain run goes through them.
const WORKLOADS: [&str; 8] = [
    "consume-2500",
    "consume-1",
    "publish-awaited",
    "publish-128",
    "mpub-100",
    "latency",
    "many-nsqd",
    "memory",
];

/// Workloads run only when asked for with `--workload`.
const EXTRA_WORKLOADS: [&str; 2] = [
    // The round-trip workloads by a minimal blocking client outside the crate: the floors.
    "latency-raw",
    "publish-raw",
];

#[derive(Parser, Debug, Clone)]
#[command(about = "End-to-end benchmarks of actix-nsq against a real or in-process nsqd")]
pub(crate) struct Args {
    /// Real nsqd TCP addresses (comma-separated); without them in-process test servers are
    /// used. Workloads with one nsqd use the first.
    #[arg(long, value_delimiter = ',')]
    nsqd_tcp_address: Vec<String>,
    /// The real nsqd's HTTP addresses, to delete the benchmark topics afterwards.
    #[arg(long, value_delimiter = ',')]
    nsqd_http_address: Vec<String>,
    /// A real nsqlookupd's HTTP address, for many-nsqd to find the nsqd through.
    #[arg(long)]
    lookupd_http_address: Option<String>,
    /// Run only this workload (in this process). One of: consume-2500, consume-1,
    /// publish-awaited, publish-128, mpub-100, latency, many-nsqd, memory, and latency-raw
    /// and publish-raw (the floors of latency and publish-awaited, by a minimal blocking
    /// client; plain TCP only).
    #[arg(long)]
    workload: Option<String>,
    /// Messages for the throughput workloads (scaled down for the slow ones; many-nsqd puts
    /// a tenth of it on each nsqd).
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body_size: usize,
    /// Upgrade every connection to TLS (nsqd's `--tls-cert`/`--tls-key`).
    #[arg(long)]
    tls: bool,
    /// The CA to trust for TLS (PEM); by default the crate's test CA, which signed
    /// `src/testing/certs/server.pem`.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Snappy compression.
    #[arg(long)]
    snappy: bool,
    /// Deflate compression at this level (1-9).
    #[arg(long, conflicts_with = "snappy")]
    deflate: Option<u32>,
    /// Publish rate of the latency workload, messages per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Duration of the latency workload, seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Write each latency sample (`sent_ns latency_ns` per line) to this file.
    #[arg(long)]
    dump_latencies: Option<PathBuf>,
    /// How the latency workload paces its publishes.
    #[arg(long, value_enum, default_value_t = Pacing::Thread)]
    pacing: Pacing,
    /// Messages in flight for the memory workload (`max_in_flight`; a real nsqd needs
    /// `--max-rdy-count` at least this).
    #[arg(long, default_value_t = 10_000)]
    in_flight: u32,
    /// How long the memory workload's handler holds each message, milliseconds.
    #[arg(long, default_value_t = 1_000)]
    hold_ms: u64,
    /// The consume workloads add a listener of per-message events (the cost of events).
    #[arg(long)]
    message_listener: bool,
}

/// What one workload did.
pub(crate) struct Measured {
    pub(crate) messages: u64,
    pub(crate) elapsed: Duration,
    pub(crate) cpu_micros: u64,
    pub(crate) extra: serde_json::Value,
}

fn topic(workload: &str) -> String {
    format!("bench-{workload}-{}", std::process::id())
}

/// Deletes the benchmark's topic on every real nsqd, so runs do not pile messages up.
async fn delete_topic(target: &Target, topic: &str) {
    for http in &target.http {
        match actix_nsq::NsqdHttpClient::new(http) {
            Ok(client) => {
                if let Err(error) = client.delete_topic(topic).await {
                    eprintln!("could not delete topic {topic} on {http}: {error}");
                }
            }
            Err(error) => eprintln!("bad --nsqd-http-address {http}: {error}"),
        }
    }
}

fn run_one(args: &Args, workload: &str) {
    let system = actix_rt::System::new();
    let (nsqd_count, max_rdy) = match workload {
        "many-nsqd" => (4, 2500),
        "memory" => (1, args.in_flight),
        _ => (1, 2500),
    };
    let target = target(args, nsqd_count, max_rdy);
    if workload.ends_with("-raw") {
        assert!(
            !args.tls && !args.snappy && args.deflate.is_none(),
            "{workload} speaks plain TCP only"
        );
    }
    let body = vec![b'x'; args.body_size];
    let m = args.messages;
    let topic = topic(workload);
    let consume = |max_in_flight, per_nsqd, discover, hold| ConsumeSpec {
        max_in_flight,
        per_nsqd,
        discover,
        hold,
        message_listener: args.message_listener,
    };
    let measured = system.block_on(async {
        match workload {
            "consume-2500" => {
                let spec = consume(2500, m, false, None);
                nsq::consume(&target, &topic, &spec, &body).await
            }
            "consume-1" => {
                let spec = consume(1, (m / 25).max(100), false, None);
                nsq::consume(&target, &topic, &spec, &body).await
            }
            "publish-awaited" => {
                nsq::publish(&target, &topic, 1, 1, (m / 25).max(100), &body).await
            }
            "publish-128" => nsq::publish(&target, &topic, 128, 1, m / 2, &body).await,
            "mpub-100" => nsq::publish(&target, &topic, 1, 100, m * 2, &body).await,
            "latency" => latency::latency(&target, &topic, args).await,
            "latency-raw" => raw::latency(&target.nsqd[0], &topic, args),
            "publish-raw" => {
                raw::publish_awaited(&target.nsqd[0], &topic, (m / 25).max(100), args.body_size)
            }
            "many-nsqd" => {
                let spec = consume(2500, (m / 10).max(100), true, None);
                nsq::consume(&target, &topic, &spec, &body).await
            }
            "memory" => {
                let per_nsqd = 3 * u64::from(args.in_flight);
                let hold = Some(Duration::from_millis(args.hold_ms));
                let spec = consume(args.in_flight, per_nsqd, false, hold);
                nsq::consume(&target, &topic, &spec, &body).await
            }
            other => panic!("unknown workload {other}; known: {WORKLOADS:?} {EXTRA_WORKLOADS:?}"),
        }
    });
    // Before the clean-up below, whose HTTP client is not part of the workload.
    let peak_rss = peak_rss_bytes() as f64 / 1048576.0;
    system.block_on(delete_topic(&target, &topic));
    let secs = measured.elapsed.as_secs_f64();
    let server = if target.in_process {
        "in-process".to_owned()
    } else {
        target.nsqd.join(",")
    };
    let (client, cpu_scope) = match (workload, target.in_process) {
        ("latency-raw" | "publish-raw", _) => ("raw blocking client", "process"),
        (_, true) => ("actix-nsq", "client thread"),
        (_, false) => ("actix-nsq", "process"),
    };
    let mut line = serde_json::json!({
        "client": client,
        "workload": workload,
        "server": server,
        "transport": transport_label(args),
        "messages": measured.messages,
        "body_bytes": args.body_size,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "msgs_per_sec": (measured.messages as f64 / secs).round(),
        "cpu_us_per_msg": (measured.cpu_micros as f64 / measured.messages as f64 * 1000.0).round() / 1000.0,
        "cpu_scope": cpu_scope,
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
    for workload in WORKLOADS {
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
