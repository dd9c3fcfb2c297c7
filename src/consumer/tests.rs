//! The coordinator under its supervisor, against the in-process nsqd.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::{ActorContext, Context, Handler, Message};

use super::{actor::ConsumerActor, Consumer};
use crate::{testing::TestNsqd, ReconnectPolicy};

/// Makes the coordinator stop as if it had failed; answers how often `started()` ran.
#[derive(Message)]
#[rtype(result = "u32")]
struct Crash;

impl Handler<Crash> for ConsumerActor {
    type Result = u32;

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) -> u32 {
        ctx.stop();
        self.starts
    }
}

/// How often `started()` ran.
#[derive(Message)]
#[rtype(result = "u32")]
struct Starts;

impl Handler<Starts> for ConsumerActor {
    type Result = u32;

    fn handle(&mut self, _: Starts, _: &mut Context<Self>) -> u32 {
        self.starts
    }
}

async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// ΣRDY at nsqd, as its clients last set it.
fn total_rdy(nsqd: &TestNsqd) -> i64 {
    nsqd.clients().iter().map(|c| c.rdy).sum()
}

#[actix_rt::test]
async fn the_coordinator_restarts_mid_stream_without_losing_anything() {
    const MESSAGES: u64 = 300;
    const MAX_IN_FLIGHT: u32 = 3;
    let nsqd = [TestNsqd::start().unwrap(), TestNsqd::start().unwrap()];
    for i in 0..MESSAGES {
        nsqd[(i % 2) as usize]
            .publish("events", format!("m{i}"))
            .unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd[0].addr().to_string())
        .nsqd(nsqd[1].addr().to_string())
        .max_in_flight(MAX_IN_FLIGHT)
        .connection(crate::ConnectionConfig::new().reconnect(ReconnectPolicy::new()))
        .handler_fn(move |_| {
            let h = h.clone();
            async move {
                actix_rt::time::sleep(Duration::from_millis(2)).await;
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .unwrap();
    let finished = || {
        nsqd.iter()
            .map(|n| n.finished_count("events", "c"))
            .sum::<u64>()
    };
    assert!(eventually(|| finished() >= MESSAGES / 4).await);
    assert_eq!(consumer.actor.send(Crash).await.unwrap(), 1);
    let mut rdy_peak = 0;
    assert!(
        eventually(|| {
            rdy_peak = rdy_peak.max(total_rdy(&nsqd[0]) + total_rdy(&nsqd[1]));
            finished() == MESSAGES
        })
        .await,
        "finished {} of {MESSAGES}",
        finished()
    );
    assert_eq!(consumer.actor.send(Starts).await.unwrap(), 2, "restarted");
    assert!(rdy_peak <= i64::from(MAX_IN_FLIGHT), "ΣRDY {rdy_peak}");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        MESSAGES,
        "each exactly once"
    );
    // The restarted coordinator still steers the links: pause and resume reach nsqd.
    consumer.set_max_in_flight(0);
    assert!(eventually(|| total_rdy(&nsqd[0]) + total_rdy(&nsqd[1]) == 0).await);
    consumer.set_max_in_flight(MAX_IN_FLIGHT);
    assert!(eventually(|| total_rdy(&nsqd[0]) + total_rdy(&nsqd[1]) > 0).await);
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn a_backoff_pause_survives_a_restart_of_the_coordinator() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.publish("events", "fails once").unwrap();
    let attempts = Arc::new(AtomicU64::new(0));
    let a = attempts.clone();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .max_in_flight(4)
        .backoff_multiplier(Duration::from_millis(300))
        .default_requeue_delay(Duration::ZERO)
        .handler_fn(move |_| {
            let first = a.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err("once".into())
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .unwrap();
    let rdy_lines = || {
        nsqd.commands()
            .into_iter()
            .filter(|c| c.line.starts_with("RDY"))
            .map(|c| c.line)
            .collect::<Vec<_>>()
    };
    assert!(eventually(|| rdy_lines().ends_with(&["RDY 0".to_owned()])).await);
    // Mid-pause: the timer dies with the context and must come back with the time it had left.
    assert_eq!(consumer.actor.send(Crash).await.unwrap(), 1);
    assert!(
        eventually(|| nsqd.finished_count("events", "c") == 1).await,
        "{:?}",
        rdy_lines()
    );
    assert_eq!(rdy_lines(), ["RDY 4", "RDY 0", "RDY 1", "RDY 4"]);
    assert_eq!(consumer.stop().await, 0);
}

#[actix_rt::test]
async fn no_handler_available_pauses_without_touching_max_in_flight() {
    let nsqd = TestNsqd::start().unwrap();
    let consumer = Consumer::builder("events", "c")
        .nsqd(nsqd.addr().to_string())
        .max_in_flight(5)
        .handler_fn(|_| async { Ok(()) })
        .start()
        .unwrap();
    assert!(eventually(|| total_rdy(&nsqd) == 5).await);
    consumer
        .actor
        .send(crate::HandlerEvent::Unavailable)
        .await
        .unwrap();
    assert!(eventually(|| total_rdy(&nsqd) == 0).await);
    assert_eq!(
        consumer.stats().max_in_flight,
        5,
        "the user's setting is kept"
    );
    nsqd.publish("events", "waits").unwrap();
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        nsqd.finished_count("events", "c"),
        0,
        "nothing taken while paused"
    );
    consumer
        .actor
        .send(crate::HandlerEvent::Available)
        .await
        .unwrap();
    assert!(eventually(|| nsqd.finished_count("events", "c") == 1).await);
    assert_eq!(total_rdy(&nsqd), 5);
    assert_eq!(consumer.stop().await, 0);
}

#[test]
fn flow_settings_do_not_depend_on_the_order_of_the_calls() {
    use crate::{BackoffStrategy, Error, FlowControl};
    let bulk = FlowControl::new()
        .low_rdy_idle_timeout(Duration::from_millis(700))
        .backoff_strategy(BackoffStrategy::FullJitter);
    let builder = || {
        Consumer::builder("events", "c")
            .nsqd("127.0.0.1:4150")
            .handler_fn(|_| async { Ok(()) })
    };
    let setters_first = builder()
        .max_in_flight(32)
        .max_backoff_duration(Duration::from_secs(30))
        .flow_control(bulk.clone());
    let bulk_first = builder()
        .flow_control(bulk)
        .max_in_flight(32)
        .max_backoff_duration(Duration::from_secs(30));
    for b in [&setters_first, &bulk_first] {
        b.validate().unwrap();
        assert_eq!(b.flow.max_in_flight, 32);
        assert_eq!(b.flow.max_backoff_duration, Duration::from_secs(30));
        assert_eq!(b.flow.low_rdy_idle_timeout, Duration::from_millis(700));
        assert_eq!(b.flow.backoff_strategy, BackoffStrategy::FullJitter);
    }
    // Reachable without flow_control() at all.
    let own = builder()
        .rdy_redistribute_interval(Duration::from_millis(20))
        .low_rdy_idle_timeout(Duration::from_millis(40))
        .low_rdy_timeout(Duration::from_millis(80));
    own.validate().unwrap();
    assert_eq!(
        own.flow.rdy_redistribute_interval,
        Duration::from_millis(20)
    );
    assert_eq!(own.flow.low_rdy_idle_timeout, Duration::from_millis(40));
    assert_eq!(own.flow.low_rdy_timeout, Duration::from_millis(80));
    assert_eq!(own.flow.max_in_flight, 1);
    // Changed both ways to different values: an error naming the setting, either order.
    let contradictions = [
        builder()
            .max_in_flight(32)
            .flow_control(FlowControl::new().max_in_flight(8)),
        builder()
            .flow_control(FlowControl::new().max_in_flight(8))
            .max_in_flight(32),
    ];
    for b in contradictions {
        match b.validate() {
            Err(Error::Config { field, .. }) => assert_eq!(field, "max_in_flight"),
            other => panic!("{other:?}"),
        }
    }
}
