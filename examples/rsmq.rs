//! Quickstart for the RSMQ transport: create a queue, send messages, consume them with a
//! handler actor, exactly as an NSQ consumer would.
//!
//! ```text
//! cargo run --features rsmq --example rsmq -- --messages 5000 --concurrency 16
//! cargo run --features rsmq --example rsmq -- --redis-url redis://127.0.0.1:6379/0
//! ```
//!
//! Without `--redis-url` it starts a throwaway `redis-server` (no persistence) on a free
//! loopback port and stops it at the end. `RUST_LOG=actix_nsq=debug` shows what the consumer
//! does.

#![allow(clippy::print_stdout)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::{Actor, Context, Handler};
use actix_nsq::{
    rsmq::{QueueOptions, Rsmq, RsmqConsumer, RsmqConsumerEvent},
    Delivery, HandlerResult,
};
use clap::Parser;

/// Send messages to an RSMQ queue and consume them with a handler actor.
#[derive(Debug, Parser)]
struct Args {
    /// Redis to use; default: a throwaway redis-server on a free port.
    #[arg(long)]
    redis_url: Option<String>,
    /// The queue (deleted and created again).
    #[arg(long, default_value = "quickstart")]
    queue: String,
    /// How many messages to send and consume.
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Deliveries outstanding at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
}

/// The handler: any actix actor that handles `Delivery`. `Ok` deletes the message, `Err`
/// makes it visible again after a delay.
struct Worker {
    bytes: Arc<AtomicU64>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Worker {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        let job: serde_json::Value = serde_json::from_slice(delivery.body())?;
        if job["n"].as_u64().is_none() {
            return Err("a job without a number".into());
        }
        self.bytes.fetch_add(delivery.body().len() as u64, Relaxed);
        Ok(())
    }
}

/// Prints what goes wrong (Redis down, late answers, ...); the consumer keeps going.
struct Reporter;

impl Actor for Reporter {
    type Context = Context<Self>;
}

impl Handler<RsmqConsumerEvent> for Reporter {
    type Result = ();

    fn handle(&mut self, event: RsmqConsumerEvent, _: &mut Context<Self>) {
        println!("\nevent: {event:?}");
    }
}

/// A `redis-server` child process, killed (by its PID) when dropped.
struct ThrowawayRedis {
    child: Child,
    dir: PathBuf,
}

impl ThrowawayRedis {
    fn start() -> Result<(Self, String), String> {
        let binary = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("redis-server"))
                    .find(|p| p.is_file())
            })
            .ok_or("no --redis-url given and redis-server is not on PATH: install Redis, or pass --redis-url redis://host:6379/0")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("actix-nsq-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
        let server = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            if Instant::now() > deadline {
                return Err(format!("redis-server did not answer on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("started a throwaway redis-server on 127.0.0.1:{port}");
        Ok((server, format!("redis://127.0.0.1:{port}/0")))
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn rate(count: u64, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}

async fn run(args: Args, url: &str) -> actix_nsq::Result<()> {
    let rsmq = Rsmq::connect(url).await?;
    let _ = rsmq.delete_queue(&args.queue).await;
    rsmq.create_queue(&args.queue, QueueOptions::new()).await?;

    let started = Instant::now();
    let mut sends = Vec::new();
    for n in 0..args.messages {
        let (rsmq, queue) = (rsmq.clone(), args.queue.clone());
        sends.push(async move {
            let body = serde_json::json!({ "n": n, "task": "resize" }).to_string();
            rsmq.send_message(&queue, &body, None).await
        });
        if sends.len() == 64 {
            for sent in futures_util::future::join_all(sends.drain(..)).await {
                sent?;
            }
        }
    }
    for sent in futures_util::future::join_all(sends).await {
        sent?;
    }
    let send_took = started.elapsed();
    println!(
        "sent {} messages in {send_took:.2?} ({:.0} msg/s)",
        args.messages,
        rate(args.messages, send_took)
    );

    let bytes = Arc::new(AtomicU64::new(0));
    let worker = Worker {
        bytes: bytes.clone(),
    }
    .start();
    let started = Instant::now();
    let consumer = RsmqConsumer::builder(rsmq.clone(), &args.queue)
        .concurrency(args.concurrency)
        .handler(worker.recipient())
        .events(Reporter.start().recipient())
        .stop_timeout(Duration::from_secs(5))
        .start()?;
    loop {
        let stats = consumer.stats();
        print!(
            "\rconsumed {:>7}/{}  in flight {:>4}  requeued {}",
            stats.finished, args.messages, stats.in_flight, stats.requeued
        );
        let _ = std::io::stdout().flush();
        if stats.finished >= args.messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consume_took = started.elapsed();
    let abandoned = consumer.stop().await;
    let stats = consumer.stats();
    println!();
    println!(
        "consumed {} messages ({} bytes) in {consume_took:.2?} ({:.0} msg/s) with concurrency {}",
        stats.finished,
        bytes.load(Relaxed),
        rate(stats.finished, consume_took),
        args.concurrency
    );
    println!(
        "received {}, finished {}, requeued {}, given up {}, abandoned at stop {abandoned}",
        stats.received, stats.finished, stats.requeued, stats.given_up
    );
    rsmq.delete_queue(&args.queue).await?;
    Ok(())
}

#[actix_rt::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "actix_nsq=warn".into()),
        )
        .init();
    let args = Args::parse();
    let (_server, url) = match args.redis_url.clone() {
        Some(url) => (None, url),
        None => match ThrowawayRedis::start() {
            Ok((server, url)) => (Some(server), url),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    match run(args, &url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
