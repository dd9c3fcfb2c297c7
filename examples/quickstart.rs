//! The README's first command: publish a batch, consume it with a handler actor, and show
//! what happened.
//!
//! ```text
//! cargo run --example quickstart                          # starts an in-process test nsqd
//! cargo run --example quickstart -- --nsqd-tcp-address 127.0.0.1:4150
//! cargo run --example quickstart -- --lookupd-http-address http://127.0.0.1:4161 \
//!                                   --nsqd-tcp-address 127.0.0.1:4150
//! ```

use std::{
    io::Write,
    process::ExitCode,
    time::{Duration, Instant},
};

use actix::prelude::*;
use actix_nsq::{
    testing::TestNsqd, ConnectionEvent, Consumer, ConsumerEvent, Delivery, HandlerError,
    HandlerResult, Producer,
};
use clap::Parser;
use futures_util::{stream, StreamExt};

#[derive(Parser, Debug)]
#[command(about = "Publish a batch to NSQ and consume it with an actix handler actor")]
struct Args {
    /// nsqd TCP address to publish to (and consume from, unless --lookupd-http-address is
    /// given). Without it an in-process test nsqd is started.
    #[arg(long)]
    nsqd_tcp_address: Option<String>,
    /// nsqlookupd HTTP address to discover nsqd through (for the consumer).
    #[arg(long)]
    lookupd_http_address: Option<String>,
    /// Topic to use.
    #[arg(long, default_value = "quickstart")]
    topic: String,
    /// Channel to consume through.
    #[arg(long, default_value = "quickstart")]
    channel: String,
    /// How many messages to publish and consume.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// The consumer's max_in_flight.
    #[arg(long, default_value_t = 200)]
    max_in_flight: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// The handler actor: checks each body, and asks for one redelivery of every 1000th message
/// (without backoff) to show requeueing at work.
struct Indexer {
    handled: u64,
    redelivered: u64,
}

impl Actor for Indexer {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Indexer {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        let body = std::str::from_utf8(delivery.body()).map_err(HandlerError::new)?;
        let n: u64 = body
            .strip_prefix("message ")
            .unwrap_or("")
            .parse()
            .map_err(HandlerError::new)?;
        if n.is_multiple_of(1000) && delivery.attempts() == 1 {
            let again = HandlerError::new("not yet")
                .requeue_after(Duration::ZERO)
                .without_backoff();
            return Err(again);
        }
        if delivery.attempts() > 1 {
            self.redelivered += 1;
        }
        self.handled += 1;
        Ok(())
    }
}

/// Asks the handler how many messages it handled.
#[derive(Message)]
#[rtype(result = "(u64, u64)")]
struct Count;

impl Handler<Count> for Indexer {
    type Result = MessageResult<Count>;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.handled, self.redelivered))
    }
}

/// Prints connection trouble as it happens.
struct EventLog;

impl Actor for EventLog {
    type Context = Context<Self>;
}

impl Handler<ConsumerEvent> for EventLog {
    type Result = ();
    fn handle(&mut self, event: ConsumerEvent, _: &mut Context<Self>) {
        match event {
            ConsumerEvent::Connection(ConnectionEvent::Connected {
                addr, negotiated, ..
            }) => {
                eprintln!(
                    "consumer connected to {addr} (tls: {}, compression: {:?}, max RDY {})",
                    negotiated.tls, negotiated.compression, negotiated.identify.max_rdy_count
                );
            }
            ConsumerEvent::Connection(ConnectionEvent::Disconnected { addr, error, .. }) => {
                eprintln!("\rconsumer lost {addr}: {error}");
            }
            ConsumerEvent::DiscoveryFailed { lookupd, error } => {
                eprintln!("\rdiscovery via {lookupd} failed: {error}")
            }
            _ => {}
        }
    }
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn run(args: Args) -> Result<(), String> {
    let _server;
    let nsqd = match &args.nsqd_tcp_address {
        Some(addr) => addr.clone(),
        None => {
            let server = TestNsqd::builder()
                .record_commands(false)
                .start()
                .map_err(|e| format!("could not start the in-process nsqd: {e}"))?;
            let addr = server.addr().to_string();
            println!("started an in-process test nsqd on {addr} (pass --nsqd-tcp-address for a real one)");
            _server = server;
            addr
        }
    };
    let producer = Producer::builder()
        .nsqd(&nsqd)
        .request_timeout(Duration::from_secs(5))
        .start()
        .map_err(|e| e.to_string())?;
    producer
        .ping()
        .await
        .map_err(|e| format!("could not reach nsqd at {nsqd}: {e}"))?;

    let started = Instant::now();
    let batches: Vec<Vec<String>> = (0..args.messages)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|chunk| chunk.iter().map(|n| format!("message {n}")).collect())
        .collect();
    let failures: Vec<_> = stream::iter(batches)
        .map(|batch| {
            let producer = producer.clone();
            let topic = args.topic.clone();
            async move { producer.multi_publish(&topic, batch).await }
        })
        .buffer_unordered(16)
        .filter_map(|result| async move { result.err() })
        .collect()
        .await;
    if let Some(error) = failures.first() {
        return Err(format!(
            "publishing failed ({} batches): {error}",
            failures.len()
        ));
    }
    let published_in = started.elapsed();
    println!(
        "published {} messages to {:?} in {:.2?} ({:.0} msgs/s, MPUB batches of 100)",
        args.messages,
        args.topic,
        published_in,
        rate(args.messages, published_in)
    );

    let indexer = Indexer {
        handled: 0,
        redelivered: 0,
    }
    .start();
    let mut builder = Consumer::builder(&args.topic, &args.channel)
        .max_in_flight(args.max_in_flight)
        .handler(indexer.clone().recipient())
        .events(EventLog.start().recipient());
    builder = match &args.lookupd_http_address {
        Some(lookupd) => builder.lookupd(lookupd),
        None => builder.nsqd(&nsqd),
    };
    let consumer = builder.start().map_err(|e| e.to_string())?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    loop {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        let (handled, _) = indexer.send(Count).await.map_err(|e| e.to_string())?;
        eprint!(
            "\rconsumed {handled:>9} / {}  {:>9.0} msgs/s ",
            args.messages,
            rate(handled, started.elapsed())
        );
        let _ = std::io::stderr().flush();
        if handled >= args.messages {
            break;
        }
        if Instant::now() > deadline {
            eprintln!();
            return Err(format!(
                "timed out after {}s with {handled} messages consumed",
                args.timeout
            ));
        }
    }
    eprintln!();
    let consumed_in = started.elapsed();
    let stats = consumer.stats();
    let abandoned = consumer.stop().await;
    producer.stop().await;
    let (handled, redelivered) = indexer.send(Count).await.map_err(|e| e.to_string())?;
    println!(
        "consumed {handled} messages in {consumed_in:.2?} ({:.0} msgs/s) with max_in_flight {}",
        rate(handled, consumed_in),
        args.max_in_flight
    );
    println!(
        "  {} finished, {} requeued once and redelivered ({} handled on a second attempt)",
        stats.finished, stats.requeued, redelivered
    );
    for c in &stats.connections {
        println!(
            "  nsqd {}: received {}, finished {}, requeued {}, RDY {}",
            c.addr, c.received, c.finished, c.requeued, c.rdy
        );
    }
    println!("stopped gracefully ({abandoned} messages abandoned)");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match actix_rt::System::new().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
