//! `service`: a long-running consumer as it would run in production: configured from a TOML
//! file and/or the environment, logging with `tracing`, stopping gracefully on SIGINT/SIGTERM.
//!
//! ```text
//! cargo run --example service -- --config examples/service.toml
//! ACTIX_NSQ_TOPIC=events ACTIX_NSQ_NSQD=127.0.0.1:4150 cargo run --example service
//! RUST_LOG=debug cargo run --example service -- --config examples/service.toml
//! ```
//!
//! `examples/service.toml` documents every setting. `ACTIX_NSQ_<SETTING>` variables override
//! the file (`ACTIX_NSQ_NSQD` and `ACTIX_NSQ_LOOKUPD` take comma-separated lists), so a
//! container can run with the file baked in and a few values injected. A bad setting, a
//! missing topic or an unreadable file ends the process at once with exit code 2 and a message
//! naming the setting.
//!
//! The handler actor simulates work (`work_ms`) per message. Consumer events (connections,
//! reconnects, backoff, discovery) are logged with structured fields. On SIGINT or SIGTERM the
//! consumer stops taking messages, the ones in flight are finished (within
//! `stop_timeout_secs`), and the process exits with 0. When nothing was reached within
//! `startup_timeout_secs` of starting, it exits with 1: a supervisor (systemd, Kubernetes)
//! sees the failure instead of a service that silently waits.

#[path = "common/shutdown.rs"]
mod shutdown;

use std::{
    io::{self, IsTerminal},
    path::PathBuf,
    process::ExitCode,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Actor, Context, Handler, ResponseFuture};
use actix_nsq::{ConnectionEvent, Consumer, ConsumerEvent, Delivery, HandlerResult};
use clap::Parser;
use serde::Deserialize;
use tokio::sync::Notify;

use shutdown::Shutdown;

/// A supervised NSQ consumer configured from a TOML file and ACTIX_NSQ_* variables.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file (see examples/service.toml); without it, the environment
    /// alone configures the service.
    #[arg(long, value_name = "PATH", env = "ACTIX_NSQ_CONFIG")]
    config: Option<PathBuf>,
}

/// The settings as the file and the environment give them; every one is optional there.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    topic: Option<String>,
    channel: Option<String>,
    nsqd: Option<Vec<String>>,
    lookupd: Option<Vec<String>>,
    max_in_flight: Option<u32>,
    max_attempts: Option<u32>,
    work_ms: Option<u64>,
    stop_timeout_secs: Option<u64>,
    startup_timeout_secs: Option<u64>,
}

/// The settings the service runs with.
#[derive(Debug)]
struct Config {
    topic: String,
    channel: String,
    nsqd: Vec<String>,
    lookupd: Vec<String>,
    max_in_flight: u32,
    max_attempts: u32,
    work: Duration,
    stop_timeout: Duration,
    startup_timeout: Duration,
}

/// Why the service could not start or run.
enum Failure {
    /// Exit code 2: the configuration is wrong; running again will not help.
    Config(String),
    /// Exit code 1.
    Runtime(String),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,actix_nsq=error"));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let outcome =
        load(args.config.as_ref()).and_then(|config| actix_rt::System::new().block_on(run(config)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("service: bad configuration: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("service: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the file (if any), applies the environment over it, and fills in the defaults.
fn load(path: Option<&PathBuf>) -> Result<Config, Failure> {
    let mut settings = match path {
        None => Settings::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Config(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str(&text)
                .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?
        }
    };
    override_from_env(&mut settings).map_err(Failure::Config)?;
    let topic = settings.topic.ok_or_else(|| {
        Failure::Config("no topic: set `topic` in the file or ACTIX_NSQ_TOPIC".to_owned())
    })?;
    Ok(Config {
        topic,
        channel: settings.channel.unwrap_or_else(|| "service".to_owned()),
        nsqd: settings.nsqd.unwrap_or_default(),
        lookupd: settings.lookupd.unwrap_or_default(),
        max_in_flight: settings.max_in_flight.unwrap_or(10),
        max_attempts: settings.max_attempts.unwrap_or(5),
        work: Duration::from_millis(settings.work_ms.unwrap_or(100)),
        stop_timeout: Duration::from_secs(settings.stop_timeout_secs.unwrap_or(30)),
        startup_timeout: Duration::from_secs(settings.startup_timeout_secs.unwrap_or(30)),
    })
}

fn override_from_env(settings: &mut Settings) -> Result<(), String> {
    env_value("ACTIX_NSQ_TOPIC", &mut settings.topic)?;
    env_value("ACTIX_NSQ_CHANNEL", &mut settings.channel)?;
    env_list("ACTIX_NSQ_NSQD", &mut settings.nsqd);
    env_list("ACTIX_NSQ_LOOKUPD", &mut settings.lookupd);
    env_value("ACTIX_NSQ_MAX_IN_FLIGHT", &mut settings.max_in_flight)?;
    env_value("ACTIX_NSQ_MAX_ATTEMPTS", &mut settings.max_attempts)?;
    env_value("ACTIX_NSQ_WORK_MS", &mut settings.work_ms)?;
    env_value(
        "ACTIX_NSQ_STOP_TIMEOUT_SECS",
        &mut settings.stop_timeout_secs,
    )?;
    env_value(
        "ACTIX_NSQ_STARTUP_TIMEOUT_SECS",
        &mut settings.startup_timeout_secs,
    )
}

fn env_value<T: FromStr>(name: &str, value: &mut Option<T>) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    if let Ok(text) = std::env::var(name) {
        let parsed = text
            .trim()
            .parse()
            .map_err(|e| format!("{name}={text:?}: {e}"))?;
        *value = Some(parsed);
    }
    Ok(())
}

fn env_list(name: &str, value: &mut Option<Vec<String>>) {
    if let Ok(text) = std::env::var(name) {
        let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
        *value = Some(items.map(str::to_owned).collect());
    }
}

async fn run(config: Config) -> Result<(), Failure> {
    // Before anything connects: from now on SIGTERM means a graceful stop, never a kill.
    let mut shutdown = Shutdown::listen()
        .map_err(|e| Failure::Runtime(format!("cannot listen for signals: {e}")))?;
    let reached = Arc::new(Notify::new());
    let worker = Worker { work: config.work }.start();
    let events = EventLog {
        reached: reached.clone(),
    }
    .start();
    let mut builder = Consumer::builder(&config.topic, &config.channel)
        .max_in_flight(config.max_in_flight)
        .max_attempts(config.max_attempts)
        .stop_timeout(config.stop_timeout)
        .handler(worker.recipient())
        .events(events.recipient());
    for addr in &config.nsqd {
        builder = builder.nsqd(addr);
    }
    for addr in &config.lookupd {
        builder = builder.lookupd(addr);
    }
    let consumer = builder
        .start()
        .map_err(|e| Failure::Config(e.to_string()))?;
    tracing::info!(
        topic = %config.topic,
        channel = %config.channel,
        nsqd = ?config.nsqd,
        lookupd = ?config.lookupd,
        max_in_flight = config.max_in_flight,
        "started"
    );

    let signal = tokio::select! {
        signal = shutdown.recv() => signal,
        in_time = tokio::time::timeout(config.startup_timeout, reached.notified()) => {
            if in_time.is_err() {
                consumer.stop().await;
                return Err(Failure::Runtime(format!(
                    "no nsqd or nsqlookupd reached within {:?} (the errors are logged above)",
                    config.startup_timeout
                )));
            }
            shutdown.recv().await
        }
    };

    tracing::info!(signal, "stopping: finishing the messages in flight");
    let abandoned = consumer.stop().await;
    let stats = consumer.stats();
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "stop timed out; nsqd redelivers the abandoned messages"
        );
    }
    tracing::info!(
        received = stats.received,
        finished = stats.finished,
        requeued = stats.requeued,
        abandoned,
        "stopped"
    );
    Ok(())
}

/// The handler actor. Each message "takes" `work`; the actor handles many at once (up to
/// `max_in_flight`), since its futures run concurrently.
struct Worker {
    work: Duration,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Worker {
    type Result = ResponseFuture<HandlerResult>;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> Self::Result {
        let work = self.work;
        Box::pin(async move {
            let started = Instant::now();
            actix_rt::time::sleep(work).await; // stands in for real work
            tracing::debug!(
                id = delivery.id(),
                nsqd = delivery.source(),
                attempts = delivery.attempts(),
                bytes = delivery.body().len(),
                took_ms = started.elapsed().as_millis() as u64,
                "handled"
            );
            Ok(()) // dropping `delivery` here leaves the answer to this result: FIN
        })
    }
}

/// Logs the consumer's events; tells `run` when something was reached.
struct EventLog {
    reached: Arc<Notify>,
}

impl Actor for EventLog {
    type Context = Context<Self>;
}

impl Handler<ConsumerEvent> for EventLog {
    type Result = ();

    fn handle(&mut self, event: ConsumerEvent, _: &mut Context<Self>) {
        match event {
            ConsumerEvent::Connection(event) => self.connection(event),
            ConsumerEvent::BackoffStarted { level, pause } => {
                let pause_ms = pause.as_millis() as u64;
                tracing::warn!(level, pause_ms, "handlers failing: backing off");
            }
            ConsumerEvent::BackoffLevel { level } => tracing::info!(level, "backoff level"),
            ConsumerEvent::BackoffEnded => tracing::info!("backoff ended"),
            ConsumerEvent::Discovered { lookupd, nsqd } => {
                self.reached.notify_one();
                tracing::info!(%lookupd, ?nsqd, "discovered");
            }
            ConsumerEvent::DiscoveryFailed { lookupd, error } => {
                tracing::warn!(%lookupd, %error, "discovery failed");
            }
            other => tracing::debug!(event = ?other, "consumer event"),
        }
    }
}

impl EventLog {
    fn connection(&self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Connected {
                addr, negotiated, ..
            } => {
                self.reached.notify_one();
                let compression = format!("{:?}", negotiated.compression);
                tracing::info!(nsqd = %addr, tls = negotiated.tls, compression, "connected");
            }
            ConnectionEvent::Disconnected {
                addr,
                error,
                lost_in_flight,
                ..
            } => tracing::warn!(nsqd = %addr, %error, lost_in_flight, "disconnected"),
            ConnectionEvent::Reconnecting {
                addr,
                attempt,
                delay,
                ..
            } => {
                let delay_ms = delay.as_millis() as u64;
                tracing::info!(nsqd = %addr, attempt, delay_ms, "reconnecting");
            }
            ConnectionEvent::GaveUp { addr, attempts, .. } => {
                tracing::error!(nsqd = %addr, attempts, "gave up reconnecting");
            }
            ConnectionEvent::ServerError { addr, error, .. } => {
                tracing::warn!(nsqd = %addr, %error, "nsqd error");
            }
            ConnectionEvent::HandlerFailed {
                addr,
                message_id,
                reason,
                ..
            } => tracing::error!(nsqd = %addr, message_id, reason, "handler failed; requeued"),
            ConnectionEvent::Closed {
                addr, abandoned, ..
            } => tracing::info!(nsqd = %addr, abandoned, "closed"),
            other => tracing::debug!(event = ?other, "connection event"),
        }
    }
}
