//! The throughput workloads: consume a pre-filled topic (from one nsqd, or from several found
//! through nsqlookupd), publish, and hold many messages in flight.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use actix_nsq::{Consumer, Delivery, LookupdHttpClient, Producer};
use futures_util::{stream, StreamExt};

use crate::{
    measure::{cpu_micros, peak_rss_bytes, reset_peak_rss, rss_bytes},
    target::Target,
    Measured,
};

/// Puts `messages` bodies on `topic` at `addr` in MPUB batches of 100, 16 batches at a time.
async fn prefill(target: &Target, addr: &str, topic: &str, messages: u64, body: &[u8]) {
    let producer = Producer::builder()
        .nsqd(addr)
        .connection(target.connection.clone())
        .start()
        .expect("producer");
    let batch: Vec<Vec<u8>> = (0..100).map(|_| body.to_vec()).collect();
    stream::iter(0..messages.div_ceil(100))
        .for_each_concurrent(16, |_| {
            let (producer, batch) = (producer.clone(), batch.clone());
            async move { producer.multi_publish(topic, batch).await.expect("prefill") }
        })
        .await;
    producer.stop().await;
}

/// Waits until nsqlookupd lists every nsqd for `topic`, so that the consumer's first lookup
/// finds them all (nsqd registers a topic with nsqlookupd asynchronously).
async fn await_lookupd(lookupd: &str, topic: &str, nsqd: usize) {
    let client = LookupdHttpClient::new(lookupd).expect("--lookupd-http-address");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = client.lookup(topic).await.map_or(0, |r| r.producers.len());
        if found >= nsqd {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nsqlookupd lists {found} of {nsqd} nsqd for {topic}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One consume workload.
pub(crate) struct ConsumeSpec {
    pub(crate) max_in_flight: u32,
    /// Messages waiting on each nsqd before the consumer starts.
    pub(crate) per_nsqd: u64,
    /// Find the nsqd through nsqlookupd instead of connecting to them directly.
    pub(crate) discover: bool,
    /// How long the handler holds each message before finishing it (`None`: at once).
    pub(crate) hold: Option<Duration>,
    /// Add a listener of per-message events (the cost of events).
    pub(crate) message_listener: bool,
}

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

/// Pre-fills `topic` on every nsqd, then consumes it all with one consumer; reports the time
/// each nsqd was drained, and with a hold, the memory each in-flight message costs.
pub(crate) async fn consume(
    target: &Target,
    topic: &str,
    spec: &ConsumeSpec,
    body: &[u8],
) -> Measured {
    for addr in &target.nsqd {
        prefill(target, addr, topic, spec.per_nsqd, body).await;
    }
    let mut builder = Consumer::builder(topic, "bench")
        .max_in_flight(spec.max_in_flight)
        .connection(target.connection.clone());
    match (&target.lookupd, spec.discover) {
        (Some(lookupd), true) => {
            await_lookupd(lookupd, topic, target.nsqd.len()).await;
            builder = builder.lookupd(lookupd);
        }
        _ => {
            for addr in &target.nsqd {
                builder = builder.nsqd(addr);
            }
        }
    }
    builder = match spec.hold {
        Some(hold) => builder.handler_fn(move |_d: Delivery| async move {
            actix_rt::time::sleep(hold).await;
            Ok(())
        }),
        None => builder.handler_fn(|_d: Delivery| std::future::ready(Ok(()))),
    };
    if spec.message_listener {
        use actix::Actor;
        builder = builder.message_events(CountEvents(0).start().recipient());
    }
    let total = spec.per_nsqd * target.nsqd.len() as u64;
    reset_peak_rss();
    let rss_before = rss_bytes();
    let cpu = cpu_micros(target.in_process);
    let start = Instant::now();
    let consumer = builder.start().expect("consumer");
    let mut drained: BTreeMap<String, f64> = BTreeMap::new();
    let mut most_in_flight = 0;
    loop {
        let stats = consumer.stats();
        most_in_flight = most_in_flight.max(stats.in_flight);
        for conn in &stats.connections {
            if conn.finished >= spec.per_nsqd && !drained.contains_key(&conn.addr) {
                drained.insert(conn.addr.clone(), start.elapsed().as_secs_f64());
            }
        }
        if stats.finished >= total {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_micros(target.in_process) - cpu;
    let peak = peak_rss_bytes();
    consumer.stop().await;
    let mut extra = serde_json::json!({
        "max_in_flight": spec.max_in_flight,
        "message_listener": spec.message_listener,
    });
    if target.nsqd.len() > 1 {
        let round = |s: f64| (s * 1000.0).round() / 1000.0;
        extra["nsqd"] = target.nsqd.len().into();
        extra["discovered"] = spec.discover.into();
        let finish: serde_json::Map<String, serde_json::Value> = drained
            .into_iter()
            .map(|(addr, secs)| (addr, round(secs).into()))
            .collect();
        extra["per_nsqd_finish_s"] = finish.into();
    }
    if let Some(hold) = spec.hold {
        extra["hold_ms"] = (hold.as_millis() as u64).into();
        extra["most_in_flight"] = most_in_flight.into();
        extra["rss_before_mb"] = ((rss_before as f64 / 1048576.0 * 10.0).round() / 10.0).into();
        extra["bytes_per_in_flight"] =
            (peak.saturating_sub(rss_before) / u64::from(spec.max_in_flight.max(1))).into();
    }
    Measured {
        messages: total,
        elapsed,
        cpu_micros: cpu,
        extra,
    }
}

/// Publishes `messages` bodies to `topic` with `concurrency` calls outstanding, `batch`
/// bodies per call (1: PUB, more: MPUB).
pub(crate) async fn publish(
    target: &Target,
    topic: &str,
    concurrency: usize,
    batch: usize,
    messages: u64,
    body: &[u8],
) -> Measured {
    let producer = Producer::builder()
        .nsqd(&target.nsqd[0])
        .connection(target.connection.clone())
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
            let (producer, bodies) = (producer.clone(), bodies.clone());
            async move {
                if batch == 1 {
                    let body = bodies.into_iter().next().unwrap_or_default();
                    producer.publish(topic, body).await.expect("publish");
                } else {
                    producer.multi_publish(topic, bodies).await.expect("mpub");
                }
            }
        })
        .await;
    let elapsed = start.elapsed();
    let cpu = cpu_micros(target.in_process) - cpu;
    producer.stop().await;
    Measured {
        messages: calls * batch as u64,
        elapsed,
        cpu_micros: cpu,
        extra: serde_json::json!({"concurrency": concurrency, "batch": batch}),
    }
}
