//! A bounded chaos run through the public API only: three `TestNsqd`, a producer failing over
//! between them and retrying every numbered message until it is acknowledged, and two
//! consumers with a small `max_in_flight` (one per handler kind, each on its own channel),
//! while a seeded sequence of faults hits random nsqd: kill and restart, graceful stop and
//! restart, close-all, half-open links, refused connections and delayed frames.
//!
//! Asserted at the end: every acknowledged message was handled at least once on each channel
//! (less at most what a killed nsqd held: a SIGKILLed nsqd loses its memory queue, so that
//! count is read from it just before each kill and allowed for), Σ RDY (`stats().total_rdy`,
//! sampled every millisecond) never exceeded `max_in_flight`, no publish outlived its
//! timeout, nothing panicked, and the process's thread and fd counts came back to where they
//! started. It is alone in its test binary so that those counts are its own.
//!
//! `ACTIX_NSQ_SOAK_SEED=<u64>` replays a run (the seed is printed, and shown on failure);
//! `ACTIX_NSQ_SOAK_SECS` changes the chaos time (default 60).
#![allow(clippy::print_stdout)]

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use actix_nsq::{
    testing::TestNsqd, ConnectionConfig, Consumer, Delivery, HandlerResult, Producer,
    ReconnectPolicy,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::RwLock;

const TOPIC: &str = "soak";
const MAX_IN_FLIGHT: u32 = 3;
const PUBLISHERS: usize = 4;
/// Acknowledged but not yet handled on some channel: publishers wait above this, so the run
/// measures faults, not a backlog that takes minutes to drain.
const BACKLOG: usize = 200;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// After the chaos: time for every surviving message to be handled (in-flight messages on a
/// dead link come back after nsqd's msg_timeout).
const DRAIN: Duration = Duration::from_secs(60);
/// After everything stopped: time for threads and fds to go (tokio's idle blocking threads
/// linger 10 s).
const GRACE: Duration = Duration::from_secs(30);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .count()
}

fn threads() -> usize {
    count_entries("/proc/self/task")
}

fn fds() -> usize {
    count_entries("/proc/self/fd")
}

/// What one consumer saw.
#[derive(Default)]
struct Tally {
    handled: Mutex<HashSet<u64>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    /// Largest `total_rdy` (the consumer's own Σ RDY) seen.
    most_total_rdy: AtomicU64,
    /// Largest Σ of the RDY last sent on each connected link seen (not a snapshot: for the
    /// record only).
    most_link_rdy: AtomicU64,
    /// What killed nsqd held for this channel (queued, in flight, deferred): lost with them.
    lost_bound: AtomicUsize,
}

impl Tally {
    fn begin(&self, delivery: &Delivery) {
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most_running.fetch_max(now, SeqCst);
        let n: u64 = std::str::from_utf8(delivery.body())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a soak message: {:?}", delivery.body()));
        self.handled.lock().unwrap().insert(n);
    }

    fn end(&self) {
        self.running.fetch_sub(1, SeqCst);
    }

    fn missing(&self, acked: &[u64]) -> Vec<u64> {
        let handled = self.handled.lock().unwrap();
        acked
            .iter()
            .copied()
            .filter(|n| !handled.contains(n))
            .collect()
    }
}

/// The actor handler kind: records and finishes.
struct Recorder(Arc<Tally>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Recorder {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        self.0.begin(&delivery);
        self.0.end();
        Ok(())
    }
}

fn connection() -> ConnectionConfig {
    ConnectionConfig::new()
        // Half-open links are found by missed heartbeats: two intervals.
        .heartbeat_interval(Some(Duration::from_secs(1)))
        .reconnect(
            ReconnectPolicy::new()
                .initial_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(300))
                .healthy_after(Duration::from_secs(1)),
        )
}

fn consumer(nsqds: &[TestNsqd], channel: &str, tally: &Arc<Tally>, actor: bool) -> Consumer {
    let mut builder = Consumer::builder(TOPIC, channel)
        .connection(connection())
        .max_in_flight(MAX_IN_FLIGHT);
    for nsqd in nsqds {
        builder = builder.nsqd(nsqd.addr().to_string());
    }
    builder = if actor {
        builder.handler(Recorder(tally.clone()).start().recipient())
    } else {
        let tally = tally.clone();
        builder.handler_fn(move |d: Delivery| {
            tally.begin(&d);
            let tally = tally.clone();
            async move {
                actix_rt::time::sleep(Duration::from_millis(1)).await;
                tally.end();
                Ok(())
            }
        })
    };
    builder.start().unwrap()
}

/// Messages `nsqd` holds for `channel`: queued in the topic or the channel, in flight,
/// deferred. A kill loses them.
fn held(nsqd: &TestNsqd, channel: &str) -> usize {
    nsqd.topic_depth(TOPIC)
        + nsqd.depth(TOPIC, channel)
        + nsqd.in_flight(TOPIC, channel)
        + nsqd.deferred(TOPIC, channel)
}

fn create_channels(nsqd: &TestNsqd, channels: &[&str]) {
    for channel in channels {
        nsqd.create_channel(TOPIC, channel).unwrap();
    }
}

fn drained(nsqds: &[TestNsqd], channels: &[&str]) -> bool {
    nsqds
        .iter()
        .all(|n| channels.iter().all(|c| held(n, c) == 0))
}

/// Publishes `n` until nsqd acknowledges it; false if told to stop first. A publish may fail
/// (timeout, link lost, unknown outcome): it is sent again, so a message can arrive twice but
/// an acknowledged one was enqueued. Each attempt holds `gate` for reading, so a kill (which
/// takes it for writing) sees no publish half-done.
async fn publish_until_acked(
    producer: &Producer,
    gate: &RwLock<()>,
    n: u64,
    stop: &AtomicBool,
    hung: &AtomicUsize,
) -> bool {
    loop {
        if stop.load(SeqCst) {
            return false;
        }
        let result = {
            let _attempt = gate.read().await;
            // Bounded by request_timeout; far past it counts as hung.
            actix_rt::time::timeout(4 * REQUEST_TIMEOUT, producer.publish(TOPIC, n.to_string()))
                .await
        };
        match result {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => {}
            Err(_) => {
                hung.fetch_add(1, SeqCst);
            }
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn chaos_soak() {
    let seed = env_u64("ACTIX_NSQ_SOAK_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("ACTIX_NSQ_SOAK_SECS").unwrap_or(60);
    println!("soak: seed {seed} (ACTIX_NSQ_SOAK_SEED={seed} replays it), {secs} s of chaos");
    let panics = Arc::new(AtomicUsize::new(0));
    {
        let panics = panics.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            panics.fetch_add(1, SeqCst);
            previous(info);
        }));
    }
    let (base_threads, base_fds) = (threads(), fds());

    let nsqds: Vec<TestNsqd> = (0..3)
        .map(|_| {
            TestNsqd::builder()
                // Messages in flight on a dead link come back soon.
                .msg_timeout(Duration::from_secs(2))
                .start()
                .unwrap()
        })
        .collect();
    let channels = ["closure", "actor"];
    for nsqd in &nsqds {
        create_channels(nsqd, &channels);
    }
    let tallies: Vec<Arc<Tally>> = channels.iter().map(|_| Arc::default()).collect();
    let consumers: Vec<Consumer> = channels
        .iter()
        .zip(&tallies)
        .enumerate()
        .map(|(i, (channel, tally))| consumer(&nsqds, channel, tally, i == 1))
        .collect();
    let mut producer = Producer::builder().request_timeout(REQUEST_TIMEOUT);
    for nsqd in &nsqds {
        producer = producer.nsqd(nsqd.addr().to_string());
    }
    let producer = producer.connection(connection()).start().unwrap();

    // Σ RDY, sampled every millisecond.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (consumers, tallies, sampling) = (consumers.clone(), tallies.clone(), sampling.clone());
        actix_rt::spawn(async move {
            while sampling.load(SeqCst) {
                for (consumer, tally) in consumers.iter().zip(&tallies) {
                    let stats = consumer.stats();
                    let links = stats.connections.iter().filter(|c| c.connected);
                    let sum: u64 = links.map(|c| u64::from(c.rdy)).sum();
                    tally.most_link_rdy.fetch_max(sum, SeqCst);
                    tally.most_total_rdy.fetch_max(stats.total_rdy, SeqCst);
                }
                actix_rt::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let gate = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let hung = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (producer, gate, stop, next, acked, hung, tallies) = (
                producer.clone(),
                gate.clone(),
                stop.clone(),
                next.clone(),
                acked.clone(),
                hung.clone(),
                tallies.clone(),
            );
            actix_rt::spawn(async move {
                while !stop.load(SeqCst) {
                    let backlog = |t: &Arc<Tally>| {
                        let acked = acked.lock().unwrap().len();
                        acked.saturating_sub(t.handled.lock().unwrap().len())
                    };
                    if tallies.iter().any(|t| backlog(t) > BACKLOG) {
                        actix_rt::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let n = next.fetch_add(1, SeqCst);
                    if publish_until_acked(&producer, &gate, n, &stop, &hung).await {
                        acked.lock().unwrap().push(n);
                    }
                }
            })
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let ms =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
        actix_rt::time::sleep(ms(&mut rng, 100, 1500)).await;
        let k = rng.random_range(0..nsqds.len());
        let nsqd = &nsqds[k];
        let fault = rng.random_range(0..6);
        let pause = ms(&mut rng, 200, 2500);
        faults.push(format!("nsqd{k}:{fault}:{}ms", pause.as_millis()));
        match fault {
            0 => {
                // SIGKILL: what it held is gone; count it before, with no publish half-done.
                let no_publish = gate.write().await;
                for (channel, tally) in channels.iter().zip(&tallies) {
                    tally.lost_bound.fetch_add(held(nsqd, channel), SeqCst);
                }
                nsqd.kill().unwrap();
                actix_rt::time::sleep(pause).await;
                nsqd.restart().unwrap();
                // A channel gets only what is published after it exists (nsqd semantics): the
                // restarted, empty nsqd must have both before publishing resumes, or a message
                // acknowledged before a consumer's SUB would be missing by design.
                create_channels(nsqd, &channels);
                drop(no_publish);
            }
            1 => {
                nsqd.stop().unwrap();
                actix_rt::time::sleep(pause).await;
                nsqd.restart().unwrap();
            }
            2 => nsqd.close_all_connections().unwrap(),
            3 => {
                nsqd.set_half_open(true);
                actix_rt::time::sleep(pause).await;
                nsqd.set_half_open(false);
            }
            4 => {
                nsqd.refuse_connections(true);
                nsqd.close_all_connections().unwrap();
                actix_rt::time::sleep(pause).await;
                nsqd.refuse_connections(false);
            }
            _ => {
                nsqd.delay_frames(ms(&mut rng, 5, 300));
                actix_rt::time::sleep(pause).await;
                nsqd.delay_frames(Duration::ZERO);
            }
        }
    }

    stop.store(true, SeqCst);
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let context = format!("seed {seed}, {} acked, faults {faults:?}", acked.len());
    println!(
        "soak: {} messages acknowledged, {} faults",
        acked.len(),
        faults.len()
    );
    assert!(
        acked.len() > 100,
        "the soak published too little: {context}"
    );

    // Every acknowledged message is handled, on each channel, but what kills took.
    let deadline = Instant::now() + DRAIN;
    loop {
        let settled = drained(&nsqds, &channels)
            && tallies
                .iter()
                .all(|t| t.missing(&acked).len() <= t.lost_bound.load(SeqCst));
        if settled || Instant::now() > deadline {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    sampling.store(false, SeqCst);
    sampler.await.unwrap();
    for (channel, tally) in channels.iter().zip(&tallies) {
        let missing = tally.missing(&acked);
        let lost = tally.lost_bound.load(SeqCst);
        let (total_rdy, link_rdy) = (
            tally.most_total_rdy.load(SeqCst),
            tally.most_link_rdy.load(SeqCst),
        );
        println!(
            "soak: channel {channel}: {} handled, {} missing (killed nsqd held {lost}), most total_rdy {total_rdy}, most Σ link RDY {link_rdy}, most handlers at once {}",
            tally.handled.lock().unwrap().len(),
            missing.len(),
            tally.most_running.load(SeqCst)
        );
        assert!(
            missing.len() <= lost,
            "{channel}: {} acknowledged messages never handled (kills account for {lost}), e.g. {:?}; {context}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        // The consumer's own Σ RDY. The per-link counters are read one by one from another
        // thread, so their sum is not a snapshot: read one link before its lower is written
        // and another after the raise that waited for it, and the sum exceeds max_in_flight
        // though the wire never did. So it is printed, not asserted. Whether the wire ever
        // carries more is tests/soak_faults.rs
        // `rdy_is_lowered_on_one_link_before_it_is_raised_on_another` (and the RDY policy's
        // property (w), src/rdy/tests/props.rs).
        assert!(
            total_rdy <= u64::from(MAX_IN_FLIGHT),
            "{channel}: Σ RDY reached {total_rdy}; {context}"
        );
    }
    assert_eq!(
        hung.load(SeqCst),
        0,
        "publishes outlived 4 x request_timeout; {context}"
    );

    for consumer in &consumers {
        consumer.stop().await;
    }
    producer.stop().await;
    drop((consumers, producer, nsqds));

    // Threads and fds come back to where they started.
    let deadline = Instant::now() + GRACE;
    while (threads() > base_threads || fds() > base_fds) && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let (end_threads, end_fds) = (threads(), fds());
    println!("soak: threads {base_threads} -> {end_threads}, fds {base_fds} -> {end_fds}");
    assert!(
        end_threads <= base_threads,
        "threads {base_threads} -> {end_threads}; {context}"
    );
    assert!(
        end_fds <= base_fds,
        "fds {base_fds} -> {end_fds}; {context}"
    );
    assert_eq!(panics.load(SeqCst), 0, "something panicked; {context}");
}
