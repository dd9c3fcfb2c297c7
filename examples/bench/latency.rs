//! Publish → handler latency at a fixed rate with `max_in_flight` 1.
//!
//! Pacing matters at sub-millisecond intervals: tokio's timer wheel has a resolution of 1 ms,
//! so an `interval` of 0.5 ms fires in pairs, and with `max_in_flight` 1 the second message of
//! each pair waits a whole round trip behind the first. `--pacing thread` (the default) paces
//! from a plain thread sleeping to absolute deadlines (nanosleep, tens of µs of slack) and
//! hands each tick to the actix thread; `--pacing wheel` keeps the timer-wheel interval to
//! show the difference.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_nsq::{Consumer, Delivery, Producer};
use clap::ValueEnum;

use crate::{
    measure::{cpu_micros, dump_samples, now_nanos, quantile_ms},
    target::Target,
    Args, Measured,
};

/// How the publisher is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pacing {
    /// A dedicated thread sleeping to each deadline.
    Thread,
    /// `actix_rt::time::interval` (tokio's 1 ms timer wheel; bursts).
    Wheel,
}

fn sent_at(d: &Delivery) -> u64 {
    d.body()
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub(crate) async fn latency(target: &Target, topic: &str, args: &Args) -> Measured {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let recorder = samples.clone();
    let addr = &target.nsqd[0];
    let consumer = Consumer::builder(topic, "bench")
        .nsqd(addr)
        .connection(target.connection.clone())
        .max_in_flight(1)
        .handler_fn(move |d: Delivery| {
            let sent = sent_at(&d);
            let latency = now_nanos().saturating_sub(sent);
            if let Ok(mut samples) = recorder.lock() {
                samples.push((sent, latency));
            }
            std::future::ready(Ok(()))
        })
        .start()
        .expect("consumer");
    let producer = Producer::builder()
        .nsqd(addr)
        .connection(target.connection.clone())
        .start()
        .expect("producer");
    producer.ping().await.expect("connect");
    let size = args.body_size.max(8);
    // Let the consumer connect and subscribe before timing anything.
    producer
        .publish(topic, vec![0u8; size])
        .await
        .expect("warm up");
    while consumer.stats().finished < 1 {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    samples.lock().expect("samples").clear();
    let total = args.rate * args.seconds;
    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let send = |producer: &Producer| {
        let mut body = vec![0u8; size];
        body[..8].copy_from_slice(&now_nanos().to_be_bytes());
        let (producer, topic) = (producer.clone(), topic.to_owned());
        actix_rt::spawn(async move { producer.publish(&topic, body).await.expect("publish") });
    };
    let cpu = cpu_micros(target.in_process);
    let start = Instant::now();
    match args.pacing {
        Pacing::Thread => {
            let (ticks, mut tick) = tokio::sync::mpsc::unbounded_channel::<()>();
            let pacer = std::thread::spawn(move || {
                let start = Instant::now();
                for i in 0..total {
                    let deadline = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                    if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if ticks.send(()).is_err() {
                        return;
                    }
                }
            });
            while tick.recv().await.is_some() {
                send(&producer);
            }
            pacer.join().expect("pacer thread");
        }
        Pacing::Wheel => {
            let mut ticker = actix_rt::time::interval(interval);
            for _ in 0..total {
                ticker.tick().await;
                send(&producer);
            }
        }
    }
    while consumer.stats().finished < total + 1 {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_micros(target.in_process) - cpu;
    let samples = samples.lock().expect("samples").clone();
    dump_samples(args.dump_latencies.as_deref(), &samples);
    let mut samples: Vec<u64> = samples.into_iter().map(|(_, latency)| latency).collect();
    samples.sort_unstable();
    let extra = serde_json::json!({
        "rate": args.rate,
        "max_in_flight": 1,
        "pacing": format!("{:?}", args.pacing).to_lowercase(),
        "p50_ms": quantile_ms(&samples, 0.50),
        "p90_ms": quantile_ms(&samples, 0.90),
        "p99_ms": quantile_ms(&samples, 0.99),
        "max_ms": quantile_ms(&samples, 1.0),
    });
    consumer.stop().await;
    producer.stop().await;
    Measured {
        messages: total,
        elapsed,
        cpu_micros: cpu,
        extra,
    }
}
