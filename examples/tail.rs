//! `tail`: prints the messages of NSQ topics, one per line, as nsq's `nsq_tail` does.
//!
//! ```text
//! cargo run --example tail -- --topic events
//! cargo run --example tail -- --topic events --lookupd-http-address 127.0.0.1:4161 -n 10
//! cargo run --example tail -- --topic events --nsqd-tcp-address nsqd:4150 --tls --snappy
//! ```
//!
//! It reads through an ephemeral channel (`tail<random>#ephemeral`, which nsqd deletes when
//! its last reader leaves) unless `--channel` names one, and writes each body as it is,
//! followed by a newline. With `-n N` it stops after N messages; messages delivered past the
//! N-th go back to nsqd unprinted. Ctrl-C or SIGTERM stops it gracefully.
//!
//! When nothing can be reached at start-up (every nsqd refused, every nsqlookupd failed), it
//! exits with the reasons rather than retrying silently. Once something was reached, lost
//! connections are re-established in the background, with a note on stderr.

#[path = "common/connection.rs"]
mod connection;
#[path = "common/shutdown.rs"]
mod shutdown;

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, Write},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::{Actor, Context, Handler};
use actix_nsq::{
    ConnectionEvent, Consumer, ConsumerBuilder, ConsumerEvent, Delivery, HandlerError,
    HandlerResult,
};
use clap::Parser;
use tokio::sync::mpsc;

use connection::ConnectionArgs;
use shutdown::Shutdown;

const DEFAULT_NSQD: &str = "127.0.0.1:4150";

/// Print the messages of NSQ topics, one per line (like nsq_tail).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The topic to read (may be given several times).
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// The channel to read through [default: tail<random>#ephemeral].
    #[arg(long)]
    channel: Option<String>,
    /// An nsqd TCP address to read from (may be given several times) [default: 127.0.0.1:4150
    /// when no --lookupd-http-address is given].
    #[arg(long = "nsqd-tcp-address", value_name = "HOST:PORT")]
    nsqd: Vec<String>,
    /// An nsqlookupd HTTP address to discover the topic's nsqd from (may be given several
    /// times).
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd: Vec<String>,
    /// Stop after printing this many messages (0: run until interrupted).
    #[arg(short = 'n', long = "n", value_name = "N", default_value_t = 0)]
    count: u64,
    /// Messages in flight at once (lowered to -n when that is smaller).
    #[arg(long, default_value_t = 200)]
    max_in_flight: u32,
    /// Print the topic name and " | " before each message.
    #[arg(long)]
    print_topic: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[actix_rt::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.nsqd.is_empty() && args.lookupd.is_empty() {
        args.nsqd.push(DEFAULT_NSQD.to_owned());
    }
    init_tracing();
    let result = run(args).await;
    let flushed = io::stdout().flush();
    match result.and_then(|()| flushed.or_else(ignore_broken_pipe)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tail: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Library logs go to stderr, errors only unless `RUST_LOG` says otherwise: `tail` reports
/// connection trouble itself.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(filter)
        .init();
}

async fn run(args: Args) -> Result<(), String> {
    // Before anything connects: a signal from now on stops tail gracefully.
    let mut shutdown = Shutdown::listen().map_err(|e| format!("cannot listen for signals: {e}"))?;
    let user_agent = format!("actix-nsq-tail/{}", env!("CARGO_PKG_VERSION"));
    let config = args
        .connection
        .config(&user_agent)
        .map_err(|e| e.to_string())?;
    let channel = args.channel.clone().unwrap_or_else(ephemeral_channel);
    let max_in_flight = match u32::try_from(args.count) {
        Ok(0) => args.max_in_flight,
        Ok(count) => args.max_in_flight.min(count),
        Err(_) => args.max_in_flight,
    };

    let (done_tx, mut done) = mpsc::unbounded_channel();
    let printer = Arc::new(Printer::new(args.count, args.print_topic, done_tx));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let forward = Forward(events_tx).start().recipient();

    let mut builders = Vec::new();
    for topic in &args.topic {
        let mut builder = Consumer::builder(topic, &channel)
            .max_in_flight(max_in_flight)
            .connection(config.clone())
            .events(forward.clone());
        for addr in &args.nsqd {
            builder = builder.nsqd(addr);
        }
        for addr in &args.lookupd {
            builder = builder.lookupd(addr);
        }
        let printer = printer.clone();
        let name: Arc<str> = topic.as_str().into();
        let builder = builder.handler_fn(move |delivery: Delivery| {
            let result = printer.print(&name, &delivery);
            async move { result }
        });
        builder.validate().map_err(|e| e.to_string())?;
        builders.push(builder);
    }
    let consumers: Vec<Consumer> = builders
        .into_iter()
        .map(ConsumerBuilder::start)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;

    let mut startup = Startup::new(&args.nsqd, args.lookupd.len());
    let outcome = loop {
        tokio::select! {
            _ = shutdown.recv() => break Ok(()),
            Some(finished) = done.recv() => break finished,
            Some(event) = events.recv() => {
                if let Err(unreachable) = startup.observe(&event) {
                    break Err(unreachable);
                }
            }
        }
    };
    for consumer in &consumers {
        consumer.stop().await;
    }
    outcome
}

/// `nsq_tail`'s default channel: ephemeral, so nsqd forgets it when tail leaves.
fn ephemeral_channel() -> String {
    format!("tail{:06}#ephemeral", rand::random_range(0..1_000_000u32))
}

fn ignore_broken_pipe(error: io::Error) -> Result<(), String> {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Ok(()) // the reader went away (`tail ... | head`): nothing left to do
    } else {
        Err(format!("writing to stdout: {error}"))
    }
}

/// Writes the bodies, counts them against `-n`, and says when tail is done.
struct Printer {
    limit: u64,
    shown: AtomicU64,
    print_topic: bool,
    stdout_failed: AtomicBool,
    done: mpsc::UnboundedSender<Result<(), String>>,
}

impl Printer {
    fn new(limit: u64, print_topic: bool, done: mpsc::UnboundedSender<Result<(), String>>) -> Self {
        Self {
            limit,
            shown: AtomicU64::new(0),
            print_topic,
            stdout_failed: AtomicBool::new(false),
            done,
        }
    }

    fn print(&self, topic: &str, delivery: &Delivery) -> HandlerResult {
        if self.stdout_failed.load(Ordering::Relaxed) {
            return Err(not_printed());
        }
        let position = self.shown.fetch_add(1, Ordering::Relaxed) + 1;
        if self.limit > 0 && position > self.limit {
            return Err(not_printed());
        }
        if let Err(error) = self.write(topic, delivery.body()) {
            self.stdout_failed.store(true, Ordering::Relaxed);
            let _ = self.done.send(ignore_broken_pipe(error));
            return Err(not_printed());
        }
        if position == self.limit {
            let _ = self.done.send(Ok(()));
        }
        Ok(())
    }

    fn write(&self, topic: &str, body: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if self.print_topic {
            out.write_all(topic.as_bytes())?;
            out.write_all(b" | ")?;
        }
        out.write_all(body)?;
        out.write_all(b"\n")
    }
}

/// A message tail will not print goes straight back to nsqd, for another reader.
fn not_printed() -> HandlerError {
    HandlerError::new("not printed")
        .requeue_after(Duration::ZERO)
        .without_backoff()
}

/// Hands the consumers' events to the main loop.
struct Forward(mpsc::UnboundedSender<ConsumerEvent>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<ConsumerEvent> for Forward {
    type Result = ();

    fn handle(&mut self, event: ConsumerEvent, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

/// Tells "nothing is reachable" from "not yet": tail gives up only when every source it was
/// given (each nsqd, each nsqlookupd) failed before any of them worked.
struct Startup {
    reached: bool,
    nsqd: HashSet<String>,
    lookupd: usize,
    failed_nsqd: BTreeMap<String, String>,
    failed_lookupd: BTreeMap<String, String>,
}

impl Startup {
    fn new(nsqd: &[String], lookupd: usize) -> Self {
        Self {
            reached: false,
            nsqd: nsqd.iter().cloned().collect(),
            lookupd,
            failed_nsqd: BTreeMap::new(),
            failed_lookupd: BTreeMap::new(),
        }
    }

    /// Notes an event; `Err` with the reasons once every source has failed.
    fn observe(&mut self, event: &ConsumerEvent) -> Result<(), String> {
        match event {
            ConsumerEvent::Connection(ConnectionEvent::Connected { .. }) => self.reached = true,
            ConsumerEvent::Discovered { lookupd, nsqd } => {
                if nsqd.is_empty() && !self.reached {
                    eprintln!("tail: {lookupd} knows no nsqd with this topic yet; waiting");
                }
                self.reached = true;
            }
            ConsumerEvent::Connection(ConnectionEvent::Disconnected { addr, error, .. }) => {
                if !self.reached && self.nsqd.contains(&**addr) {
                    self.failed_nsqd.insert(addr.to_string(), error.to_string());
                } else {
                    eprintln!("tail: {addr}: {error}; reconnecting");
                }
            }
            ConsumerEvent::Connection(ConnectionEvent::ServerError { addr, error, .. }) => {
                eprintln!("tail: {addr}: {error}");
            }
            ConsumerEvent::DiscoveryFailed { lookupd, error } => {
                if self.reached {
                    eprintln!("tail: {lookupd}: {error}; keeping the connections it found");
                } else {
                    self.failed_lookupd
                        .insert(lookupd.clone(), error.to_string());
                }
            }
            _ => {}
        }
        let all_failed =
            self.failed_nsqd.len() == self.nsqd.len() && self.failed_lookupd.len() >= self.lookupd;
        if self.reached || !all_failed {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .failed_nsqd
            .iter()
            .chain(&self.failed_lookupd)
            .map(|(source, error)| format!("\n  {source}: {error}"))
            .collect();
        Err(format!(
            "cannot reach any nsqd or nsqlookupd:{}",
            reasons.concat()
        ))
    }
}
