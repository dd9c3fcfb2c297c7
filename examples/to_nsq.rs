//! `to_nsq`: publishes the lines of stdin to an NSQ topic, as nsq's `to_nsq` does, in MPUB
//! batches.
//!
//! ```text
//! seq 1000 | cargo run --example to_nsq -- --topic events
//! cargo run --example to_nsq -- --topic events --nsqd-tcp-address a:4150 \
//!     --nsqd-tcp-address b:4150 --rate 500 --failed-file unsent.txt < events.log
//! ```
//!
//! Lines are collected into batches of `--batch-size`; a batch that is not full is sent
//! `--linger` ms after its first line arrived. Empty lines are skipped (nsqd refuses empty
//! messages). Batches spread over the nsqd given, moving on when one is down; nsq's `to_nsq`
//! publishes every line to every nsqd instead.
//!
//! Nothing is lost silently. A batch that fails is retried with growing pauses, up to
//! `--retries` times; a batch whose fate is unknown (the connection died before nsqd answered)
//! is retried too, so a line may arrive twice but is never dropped. A line nsqd can never take
//! (too large) goes to `--failed-file` (or stderr) with the reason. When a batch still fails
//! after its retries, nsqd is taken to be unreachable: that batch and every line read after it
//! go to the failed file, which can be fed back later (`to_nsq ... < unsent.txt`). The summary
//! on stderr counts what was published and what failed; the exit code is 1 when anything did.
//!
//! Ctrl-C or SIGTERM stops reading: what was read is published (or written to the failed
//! file), and the summary says after which input line reading stopped.

#[path = "common/connection.rs"]
mod connection;
#[path = "common/shutdown.rs"]
mod shutdown;

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::{Actor, Context, Handler};
use actix_nsq::{ConnectionEvent, Error, Producer, Topic};
use bytes::Bytes;
use clap::Parser;
use tokio::{
    sync::mpsc,
    time::{sleep, sleep_until, Instant},
};
use tokio_util::sync::CancellationToken;

use connection::ConnectionArgs;
use shutdown::Shutdown;

/// The pause before the first retry of a batch; each next one doubles, up to the maximum.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Publish the lines of stdin to an NSQ topic (like to_nsq), in MPUB batches.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The topic to publish to.
    #[arg(long)]
    topic: String,
    /// An nsqd TCP address to publish to (may be given several times; batches spread over them).
    #[arg(
        long = "nsqd-tcp-address",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:4150"
    )]
    nsqd: Vec<String>,
    /// Lines per MPUB.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Milliseconds a batch that is not full waits for more lines before it is sent.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    linger: u64,
    /// At most this many lines per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Retries of a failed batch before nsqd is taken to be unreachable.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Milliseconds one publish may take, waiting for a connection included.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    publish_timeout: u64,
    /// Append lines that could not be published to this file [default: stderr].
    #[arg(long, value_name = "PATH")]
    failed_file: Option<PathBuf>,
    /// The byte that ends a line.
    #[arg(long, default_value = "\n", value_parser = single_byte)]
    delimiter: u8,
    #[command(flatten)]
    connection: ConnectionArgs,
}

fn single_byte(text: &str) -> Result<u8, String> {
    match text.as_bytes() {
        [byte] => Ok(*byte),
        _ => Err("must be a single byte".to_owned()),
    }
}

#[actix_rt::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(filter)
        .init();
    match run(args).await {
        Ok(summary) => {
            eprintln!("to_nsq: {summary}");
            if summary.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("to_nsq: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<Summary, String> {
    let interrupted = CancellationToken::new();
    let mut shutdown = Shutdown::listen().map_err(|e| format!("cannot listen for signals: {e}"))?;
    let on_signal = interrupted.clone();
    actix_rt::spawn(async move {
        let signal = shutdown.recv().await;
        eprintln!("to_nsq: {signal}: publishing what was read, then stopping");
        on_signal.cancel();
    });

    let topic = Topic::new(&args.topic).map_err(|e| e.to_string())?;
    let failed = FailedLines::open(args.failed_file.as_ref(), args.delimiter)?;
    let user_agent = format!("actix-nsq-to_nsq/{}", env!("CARGO_PKG_VERSION"));
    let config = args
        .connection
        .config(&user_agent)
        .map_err(|e| e.to_string())?;
    let last_error = Arc::new(Mutex::new(None));
    let mut builder = Producer::builder()
        .connection(config)
        .request_timeout(Duration::from_millis(args.publish_timeout))
        .events(LastError(last_error.clone()).start().recipient());
    for addr in &args.nsqd {
        builder = builder.nsqd(addr);
    }
    let producer = builder.start().map_err(|e| e.to_string())?;

    let batch_size = args.batch_size as usize;
    let (lines_tx, mut lines) = mpsc::channel(batch_size);
    let delimiter = args.delimiter;
    std::thread::spawn(move || read_lines(delimiter, &lines_tx));

    let mut out = Publisher {
        producer: producer.clone(),
        topic,
        retries: args.retries,
        last_error,
        interrupted: interrupted.clone(),
        failed,
        summary: Summary::default(),
        unreachable: false,
    };
    let mut pace = Pace::new(args.rate);
    let linger = Duration::from_millis(args.linger);
    let mut batch: Vec<Bytes> = Vec::with_capacity(batch_size);
    let mut send_by = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = interrupted.cancelled() => break,
            () = sleep_until(send_by), if !batch.is_empty() => {
                out.flush(std::mem::take(&mut batch)).await?;
            }
            line = lines.recv() => match line {
                None => break,
                Some(Err(error)) => {
                    eprintln!("to_nsq: reading stdin: {error}");
                    out.summary.unreadable = true;
                    break;
                }
                Some(Ok(line)) => {
                    out.summary.read += 1;
                    if line.is_empty() {
                        out.summary.skipped += 1;
                        continue;
                    }
                    let on_time = pace.wait(&interrupted).await;
                    if batch.is_empty() {
                        send_by = Instant::now() + linger;
                    }
                    batch.push(Bytes::from(line)); // read, so published or kept as failed
                    if !on_time {
                        break;
                    }
                    if batch.len() >= batch_size {
                        out.flush(std::mem::take(&mut batch)).await?;
                    }
                }
            },
        }
    }
    out.flush(batch).await?;
    producer.stop().await;
    out.summary.interrupted = interrupted.is_cancelled();
    Ok(out.summary)
}

/// Reads stdin on its own thread (std's stdin blocks) and hands over lines without their
/// delimiter. The bounded channel holds the reader back while publishing lags.
fn read_lines(delimiter: u8, lines: &mpsc::Sender<io::Result<Vec<u8>>>) {
    let mut input = BufReader::new(io::stdin());
    loop {
        let mut line = Vec::new();
        match input.read_until(delimiter, &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&delimiter) {
                    line.pop();
                }
                if lines.blocking_send(Ok(line)).is_err() {
                    return; // to_nsq is stopping
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                let _ = lines.blocking_send(Err(error));
                return;
            }
        }
    }
}

/// What became of the input.
#[derive(Debug, Default)]
struct Summary {
    read: u64,
    skipped: u64,
    published: u64,
    failed: u64,
    interrupted: bool,
    /// Reading stdin failed: the input was not read to its end.
    unreadable: bool,
}

impl Summary {
    fn is_success(&self) -> bool {
        self.failed == 0 && !self.unreadable
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "published {}, failed {}", self.published, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", skipped {} empty", self.skipped)?;
        }
        if self.interrupted || self.unreadable {
            write!(f, "; stopped after input line {}", self.read)?;
        }
        Ok(())
    }
}

/// Publishes batches with retries, and accounts for every line.
struct Publisher {
    producer: Producer,
    topic: Topic,
    retries: u32,
    last_error: Arc<Mutex<Option<(String, String)>>>,
    interrupted: CancellationToken,
    failed: FailedLines,
    summary: Summary,
    /// Set once a batch failed after all its retries: the rest goes to the failed file.
    unreachable: bool,
}

impl Publisher {
    /// Publishes `lines`; whatever cannot be published goes to the failed file.
    async fn flush(&mut self, lines: Vec<Bytes>) -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        match self.publish(&lines).await {
            // MPUB is all or nothing: one line nsqd cannot take spoils the batch, so the
            // lines go one by one and only that one fails.
            Err(Error::InvalidBody(_)) if lines.len() > 1 => {
                for line in lines.chunks(1) {
                    let result = self.publish(line).await;
                    self.settle(result, line)?;
                }
                Ok(())
            }
            result => self.settle(result, &lines),
        }
    }

    fn settle(&mut self, result: Result<(), Error>, lines: &[Bytes]) -> Result<(), String> {
        let count = lines.len() as u64;
        match result {
            Ok(()) => {
                self.summary.published += count;
                return Ok(());
            }
            Err(_) if self.unreachable => {}
            Err(error @ (Error::InvalidBody(_) | Error::InvalidName { .. })) => {
                eprintln!("to_nsq: {count} line(s) cannot be published: {error}");
            }
            Err(Error::Stopped) => {
                eprintln!(
                    "to_nsq: interrupted while retrying: {count} line(s) go to {}",
                    self.failed.name()
                );
            }
            Err(error) => {
                self.unreachable = true;
                eprintln!(
                    "to_nsq: giving up on nsqd after {} attempts: {error}{}; unpublished lines \
                     go to {}",
                    self.retries + 1,
                    self.cause(&error),
                    self.failed.name()
                );
            }
        }
        self.summary.failed += count;
        self.failed.write(lines)
    }

    /// One batch (MPUB, or PUB for a single line), retrying failures that may pass.
    async fn publish(&self, lines: &[Bytes]) -> Result<(), Error> {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempt = 0;
        loop {
            if self.unreachable || (self.interrupted.is_cancelled() && attempt > 0) {
                return Err(Error::Stopped);
            }
            let result = match lines {
                [line] => self.producer.publish(&self.topic, line.clone()).await,
                _ => {
                    self.producer
                        .multi_publish(&self.topic, lines.iter().cloned())
                        .await
                }
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(error @ (Error::InvalidBody(_) | Error::InvalidName { .. })) => {
                    return Err(error)
                }
                Err(error) if attempt >= self.retries => return Err(error),
                Err(error) => error,
            };
            attempt += 1;
            eprintln!(
                "to_nsq: publishing {} line(s) failed: {error}{}; retry {attempt} of {} in {pause:?}",
                lines.len(),
                self.cause(&error),
                self.retries
            );
            tokio::select! {
                () = sleep(pause) => {}
                () = self.interrupted.cancelled() => return Err(Error::Stopped),
            }
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    /// Which nsqd a connection failure came from, or why no connection was up.
    fn cause(&self, error: &Error) -> String {
        let last = self.last_error.lock().ok().and_then(|last| last.clone());
        match last {
            Some((addr, last)) if last == error.to_string() => format!(" (nsqd {addr})"),
            Some((addr, last)) if matches!(error, Error::NotConnected | Error::Timeout(_)) => {
                format!(" (last connection error: {addr}: {last})")
            }
            _ => String::new(),
        }
    }
}

/// Keeps the producer's latest connection failure (nsqd address, error), to say where
/// publishing fails.
struct LastError(Arc<Mutex<Option<(String, String)>>>);

impl Actor for LastError {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for LastError {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
        if let ConnectionEvent::Disconnected { addr, error, .. } = event {
            if let Ok(mut last) = self.0.lock() {
                *last = Some((addr.to_string(), error.to_string()));
            }
        }
    }
}

/// Where unpublished lines go, each followed by the delimiter, so that they can be replayed.
struct FailedLines {
    sink: Sink,
    delimiter: u8,
}

enum Sink {
    File(PathBuf, BufWriter<File>),
    Stderr,
}

impl FailedLines {
    /// Opens the file at once (appending), so that a bad path fails before anything is read.
    fn open(path: Option<&PathBuf>, delimiter: u8) -> Result<Self, String> {
        let sink = match path {
            None => Sink::Stderr,
            Some(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(|file| Sink::File(path.clone(), BufWriter::new(file)))
                .map_err(|e| format!("cannot open the failed file {}: {e}", path.display()))?,
        };
        Ok(Self { sink, delimiter })
    }

    fn name(&self) -> String {
        match &self.sink {
            Sink::File(path, _) => path.display().to_string(),
            Sink::Stderr => "stderr".to_owned(),
        }
    }

    fn write(&mut self, lines: &[Bytes]) -> Result<(), String> {
        let delimiter = self.delimiter;
        let written = match &mut self.sink {
            Sink::File(_, file) => write_lines(file, lines, delimiter).and_then(|()| file.flush()),
            Sink::Stderr => write_lines(&mut io::stderr().lock(), lines, delimiter),
        };
        written.map_err(|e| format!("cannot write unpublished lines to {}: {e}", self.name()))
    }
}

fn write_lines(out: &mut impl Write, lines: &[Bytes], delimiter: u8) -> io::Result<()> {
    for line in lines {
        out.write_all(line)?;
        out.write_all(&[delimiter])?;
    }
    Ok(())
}

/// Spaces lines out to `--rate` per second.
struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    fn new(rate: u32) -> Self {
        Self {
            interval: (rate > 0).then(|| Duration::from_secs(1) / rate),
            next: Instant::now(),
        }
    }

    /// Waits for the next line's turn; false when interrupted first.
    async fn wait(&mut self, interrupted: &CancellationToken) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        tokio::select! {
            () = sleep_until(self.next) => {}
            () = interrupted.cancelled() => return false,
        }
        self.next = self.next.max(Instant::now()) + interval;
        true
    }
}
