//! `actix_web`: an actix-web service that publishes to NSQ from its HTTP handlers and consumes
//! with a handler actor, everything in one actix `System`.
//!
//! ```text
//! cargo run --example actix_web                      # with an in-process nsqd
//! cargo run --example actix_web -- --nsqd-tcp-address 127.0.0.1:4150 --bind 0.0.0.0:8080
//!
//! curl -i -X POST --data 'hello' http://127.0.0.1:8080/publish/events
//! curl http://127.0.0.1:8080/stats
//! cargo run --example actix_web --features metrics   # adds GET /metrics
//! ```
//!
//! * `POST /publish/{topic}` publishes the request body and answers `202 Accepted`, or the
//!   error as JSON (`{"error": "..."}`) with a 4xx status for a bad request (invalid topic,
//!   empty or oversized body) and a 5xx status when nsqd cannot take it.
//! * `GET /stats` shows what the handler actor counted and the consumer's and producer's
//!   connection stats.
//! * `GET /metrics` (built with `--features metrics`): the crate's metrics (messages, handler
//!   time, RDY, in flight, backoff, reconnects, publish latency and errors, labelled by topic,
//!   channel and nsqd) in the Prometheus text format, rendered by `metrics-exporter-prometheus`
//!   installed as the global recorder (without its own HTTP listener: actix-web serves it).
//!
//! The producer and the consumer are cheap to clone and `Send`: actix-web's workers (one
//! thread each) share them through `web::Data`, while their actors and the handler actor run
//! on the main arbiter. Without `--nsqd-tcp-address` the crate's in-process test nsqd is
//! started, so the example runs on its own. SIGINT or SIGTERM stops the HTTP server
//! gracefully, then the consumer (finishing what is in flight) and the producer.

use std::{process::ExitCode, time::Duration};

use actix::{Actor, Addr, Context, Handler, Message, MessageResult};
use actix_nsq::{
    testing::TestNsqd, BodyError, Consumer, ConsumerStats, Delivery, Error, HandlerResult, Producer,
};
use actix_web::{
    get,
    http::StatusCode,
    post,
    web::{self, Data},
    App, HttpResponse, HttpServer,
};
use clap::Parser;
use serde_json::json;

/// nsqd's default `--max-msg-size`: larger bodies are refused before they are read in full.
const MAX_BODY: usize = 1024 * 1024;
/// How long a publish may wait for nsqd; also bounds the reachability check at start-up.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// An actix-web service that publishes to NSQ over HTTP and consumes with an actor.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where the HTTP server listens (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// An nsqd TCP address (may be given several times) [default: an in-process nsqd].
    #[arg(long = "nsqd-tcp-address", value_name = "HOST:PORT")]
    nsqd: Vec<String>,
    /// The topic the handler actor consumes.
    #[arg(long, default_value = "events")]
    topic: String,
    /// The channel it consumes through.
    #[arg(long, default_value = "actix_web")]
    channel: String,
    /// Messages in flight at once.
    #[arg(long, default_value_t = 32)]
    max_in_flight: u32,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("actix_web: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    // Before the producer and consumer start: they register their metrics with the recorder
    // installed when they start.
    #[cfg(feature = "metrics")]
    let prometheus = prometheus::install()?;
    let (_local_nsqd, nsqd) = if args.nsqd.is_empty() {
        let local = TestNsqd::start().map_err(|e| format!("starting the in-process nsqd: {e}"))?;
        let addr = local.addr().to_string();
        tracing::info!(nsqd = %addr, "no --nsqd-tcp-address: using an in-process nsqd");
        (Some(local), vec![addr])
    } else {
        (None, args.nsqd.clone())
    };

    let mut producer = Producer::builder().request_timeout(PUBLISH_TIMEOUT);
    for addr in &nsqd {
        producer = producer.nsqd(addr);
    }
    let producer = producer.start().map_err(|e| e.to_string())?;
    // Better to refuse to start than to answer every request with 503.
    if let Err(error) = producer.ping().await {
        producer.stop().await;
        return Err(format!(
            "cannot reach nsqd at {}: {error} (the connection errors are logged above)",
            nsqd.join(", ")
        ));
    }

    let counter = Counter::default().start();
    let mut consumer = Consumer::builder(&args.topic, &args.channel)
        .max_in_flight(args.max_in_flight)
        .handler(counter.clone().recipient());
    for addr in &nsqd {
        consumer = consumer.nsqd(addr);
    }
    let consumer = consumer.start().map_err(|e| e.to_string())?;

    let state = Data::new(AppState {
        producer: producer.clone(),
        consumer: consumer.clone(),
        counter,
        #[cfg(feature = "metrics")]
        prometheus,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(post_publish)
            .service(get_stats)
            .configure(prometheus::routes)
    })
    .bind(&args.bind)
    .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    let served = server.run().await;

    let abandoned = consumer.stop().await;
    producer.stop().await;
    tracing::info!(abandoned, "stopped");
    served.map_err(|e| format!("http server: {e}"))
}

/// What the HTTP handlers share.
struct AppState {
    producer: Producer,
    consumer: Consumer,
    counter: Addr<Counter>,
    #[cfg(feature = "metrics")]
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

#[post("/publish/{topic}")]
async fn post_publish(
    state: Data<AppState>,
    topic: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    let body = match body.to_bytes_limited(MAX_BODY).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => return error_response(StatusCode::BAD_REQUEST, error),
        Err(_) => {
            let too_large = format!("the body exceeds {MAX_BODY} bytes");
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, too_large);
        }
    };
    let bytes = body.len();
    match state.producer.publish(topic.as_str(), body).await {
        Ok(()) => HttpResponse::Accepted().json(json!({ "topic": *topic, "bytes": bytes })),
        Err(error) => error_response(status_for(&error), error),
    }
}

/// 4xx for what the client can fix, 5xx for what nsqd (or the way to it) did.
fn status_for(error: &Error) -> StatusCode {
    match error {
        Error::InvalidName { .. } => StatusCode::BAD_REQUEST,
        Error::InvalidBody(BodyError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::InvalidBody(_) => StatusCode::BAD_REQUEST,
        Error::NotConnected | Error::Timeout(_) | Error::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        // OutcomeUnknown: the message may have been enqueued; the client decides whether to
        // send it again.
        Error::Server(_) | Error::OutcomeUnknown { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(status: StatusCode, error: impl ToString) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": error.to_string() }))
}

#[get("/stats")]
async fn get_stats(state: Data<AppState>) -> HttpResponse {
    let counts = match state.counter.send(GetCounts).await {
        Ok(counts) => counts,
        Err(error) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, error),
    };
    let consumer = &state.consumer;
    let producer: Vec<_> = state
        .producer
        .stats()
        .iter()
        .map(|c| json!({ "addr": c.addr, "connected": c.connected, "reconnects": c.reconnects }))
        .collect();
    HttpResponse::Ok().json(json!({
        "handled": { "messages": counts.messages, "bytes": counts.bytes },
        "consumer": consumer_json(consumer, &consumer.stats()),
        "producer": producer,
    }))
}

fn consumer_json(consumer: &Consumer, stats: &ConsumerStats) -> serde_json::Value {
    let connections: Vec<_> = stats
        .connections
        .iter()
        .map(|c| {
            json!({
                "addr": c.addr,
                "connected": c.connected,
                "rdy": c.rdy,
                "in_flight": c.in_flight,
                "received": c.received,
                "finished": c.finished,
                "requeued": c.requeued,
                "reconnects": c.reconnects,
            })
        })
        .collect();
    json!({
        "topic": consumer.topic().as_str(),
        "channel": consumer.channel().as_str(),
        "received": stats.received,
        "finished": stats.finished,
        "requeued": stats.requeued,
        "in_flight": stats.in_flight,
        "max_in_flight": stats.max_in_flight,
        "total_rdy": stats.total_rdy,
        "backoff_level": stats.backoff_level,
        "connections": connections,
    })
}

/// The handler actor: counts what it consumes.
#[derive(Debug, Default)]
struct Counter {
    counts: Counts,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    messages: u64,
    bytes: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Counter {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        self.counts.messages += 1;
        self.counts.bytes += delivery.body().len() as u64;
        Ok(())
    }
}

struct GetCounts;

impl Message for GetCounts {
    type Result = Counts;
}

impl Handler<GetCounts> for Counter {
    type Result = MessageResult<GetCounts>;

    fn handle(&mut self, _: GetCounts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counts)
    }
}

/// `GET /metrics` with the `metrics` feature; nothing without it.
mod prometheus {
    use actix_web::web::ServiceConfig;

    #[cfg(feature = "metrics")]
    pub(super) fn install() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("installing the Prometheus recorder: {e}"))?;
        actix_nsq::metrics::describe();
        // Without the exporter's own listener, its upkeep (draining histogram samples into
        // summaries) is ours to run.
        let upkeep = handle.clone();
        actix_rt::spawn(async move {
            let mut tick = actix_rt::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(handle)
    }

    #[cfg(feature = "metrics")]
    #[actix_web::get("/metrics")]
    async fn get_metrics(state: actix_web::web::Data<super::AppState>) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(state.prometheus.render())
    }

    #[cfg(feature = "metrics")]
    pub(super) fn routes(config: &mut ServiceConfig) {
        config.service(get_metrics);
    }

    #[cfg(not(feature = "metrics"))]
    pub(super) fn routes(_: &mut ServiceConfig) {}
}
