//! The RSMQ consumer against a real redis-server: handler actors and closures, what each
//! answer does to the Redis layout, the concurrency bound, the give-up paths, the settings.
//! Late answers, auto-extension, realtime, stop and failures are in `rsmq_consumer_faults.rs`.
#![cfg(feature = "rsmq")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/rsmq_consumer.rs"]
mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use actix::{Actor, Context, Handler};
use actix_nsq::{rsmq::RsmqConsumer, Delivery, Error, GiveUp, HandlerError, HandlerResult};
use redis::AsyncCommands;
use support::*;
use tokio::{sync::mpsc, time::Instant};

/// A give-up hook actor: reports the attempts and finishes.
struct Graveyard(mpsc::UnboundedSender<(String, u32)>);

impl Actor for Graveyard {
    type Context = Context<Self>;
}

impl Handler<GiveUp> for Graveyard {
    type Result = HandlerResult;

    fn handle(&mut self, GiveUp(delivery): GiveUp, _: &mut Context<Self>) -> HandlerResult {
        let _ = self.0.send((delivery.id().to_owned(), delivery.attempts()));
        Ok(())
    }
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn closure_handler_gets_the_message_and_finish_deletes_it() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "hello", None).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .handler_fn(move |delivery: Delivery| {
            let tx = tx.clone();
            async move {
                let seen = (
                    delivery.id().to_owned(),
                    delivery.body().clone(),
                    delivery.attempts(),
                    delivery.source().to_owned(),
                    delivery.timestamp(),
                    delivery.nsq_id().is_none(),
                );
                tx.send(seen).unwrap();
                Ok(())
            }
        })
        .start()
        .unwrap();
    let (got_id, body, attempts, source, timestamp, not_nsq) = recv(&mut rx).await;
    assert_eq!((got_id.as_str(), &body[..]), (id.as_str(), &b"hello"[..]));
    assert_eq!((attempts, source.as_str(), not_nsq), (1, "rsmq:q", true));
    let age = SystemTime::now()
        .duration_since(timestamp)
        .unwrap_or_else(|e| e.duration());
    assert!(age < Duration::from_secs(60), "timestamp is the send time");
    until("finished", || consumer.stats().finished == 1).await;
    assert_eq!(zcard(&server, "q").await, 0);
    let fields: Vec<String> = server.conn().await.hkeys("rsmq:q:Q").await.unwrap();
    assert!(
        fields.iter().all(|f| !f.starts_with(&id)),
        "body, rc and fr are gone: {fields:?}"
    );
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.requeued, stats.in_flight), (1, 0, 0));
    stop(&consumer).await;
    assert!(!consumer.is_running());
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn handler_actors_share_the_work() {
    let (server, rsmq) = setup(30).await;
    for i in 0..10 {
        rsmq.send_message("q", &format!("m{i}"), None)
            .await
            .unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut builder = RsmqConsumer::builder(rsmq, "q")
        .concurrency(4)
        .poll_interval(FAST_POLL);
    for name in 0..2 {
        let worker = Worker {
            name,
            seen: tx.clone(),
        };
        builder = builder.handler(worker.start().recipient());
    }
    let consumer = builder.start().unwrap();
    let mut bodies = Vec::new();
    let mut per_worker = [0; 2];
    for _ in 0..10 {
        let (worker, body, attempts) = recv(&mut rx).await;
        assert_eq!(attempts, 1);
        per_worker[worker] += 1;
        bodies.push(body);
    }
    bodies.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    assert_eq!(per_worker, [5, 5], "round robin over live actors");
    until("all finished", || consumer.stats().finished == 10).await;
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn err_requeues_with_the_default_delay_times_attempts_or_the_explicit_one() {
    let (server, rsmq) = setup(30).await;
    let scaled = rsmq.send_message("q", "scaled", None).await.unwrap();
    let explicit = rsmq.send_message("q", "explicit", None).await.unwrap();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .default_requeue_delay(Duration::from_secs(3))
        .max_requeue_delay(Duration::from_secs(100))
        .handler_fn(|delivery: Delivery| async move {
            if &delivery.body()[..] == b"explicit" {
                Err(HandlerError::new("later").requeue_after(Duration::from_secs(40)))
            } else {
                Err("boom".into())
            }
        })
        .start()
        .unwrap();
    // "scaled" fails at attempt 1 (3 s), then, redelivered, at attempt 2 (6 s).
    until("three requeues", || consumer.stats().requeued == 3).await;
    let in_ms = visible_in_ms(&server, &scaled).await.unwrap();
    assert!((3_000..=6_000).contains(&in_ms), "{in_ms} ms, not 2 × 3 s");
    let in_ms = visible_in_ms(&server, &explicit).await.unwrap();
    assert!((30_000..=40_000).contains(&in_ms), "{in_ms} ms, not 40 s");
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.finished, stats.in_flight), (3, 0, 0));
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn explicit_requeue_now_redelivers_with_rc_plus_one() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "again", None).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .handler_fn(move |delivery: Delivery| {
            log.lock()
                .unwrap()
                .push((delivery.id().to_owned(), delivery.attempts()));
            if delivery.attempts() == 1 {
                delivery.requeue(Some(Duration::ZERO)).unwrap();
            }
            // The explicit answer wins over this Ok.
            async { Ok(()) }
        })
        .start()
        .unwrap();
    until("finished", || consumer.stats().finished == 1).await;
    assert_eq!(*seen.lock().unwrap(), [(id.clone(), 1), (id, 2)]);
    assert_eq!(consumer.stats().requeued, 1);
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn never_more_outstanding_than_the_concurrency() {
    let (server, rsmq) = setup(30).await;
    for i in 0..12 {
        rsmq.send_message("q", &i.to_string(), None).await.unwrap();
    }
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, p) = (now.clone(), peak.clone());
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .concurrency(3)
        .poll_interval(FAST_POLL)
        .handler_fn(move |_: Delivery| {
            let (now, peak) = (n.clone(), p.clone());
            async move {
                peak.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                now.fetch_sub(1, SeqCst);
                Ok(())
            }
        })
        .start()
        .unwrap();
    let mut stats_peak = 0;
    let deadline = Instant::now() + PATIENCE;
    while consumer.stats().finished < 12 {
        assert!(Instant::now() < deadline, "timed out");
        stats_peak = stats_peak.max(consumer.stats().in_flight);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(peak.load(SeqCst), 3, "handlers running at once");
    assert!(stats_peak <= 3, "in flight peaked at {stats_peak}");
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn past_max_attempts_the_give_up_hook_gets_it() {
    let (server, rsmq) = setup(30).await;
    let id = rsmq.send_message("q", "poison", None).await.unwrap();
    let (tx, mut handled) = mpsc::unbounded_channel();
    let (dead, mut buried) = mpsc::unbounded_channel();
    let consumer = RsmqConsumer::builder(rsmq, "q")
        .poll_interval(FAST_POLL)
        .max_attempts(2)
        .give_up(Graveyard(dead).start().recipient())
        .handler_fn(move |delivery: Delivery| {
            tx.send(delivery.attempts()).unwrap();
            async { Err(HandlerError::new("still broken").requeue_after(Duration::ZERO)) }
        })
        .start()
        .unwrap();
    assert_eq!((recv(&mut handled).await, recv(&mut handled).await), (1, 2));
    assert_eq!(recv(&mut buried).await, (id, 3));
    until("finished", || consumer.stats().finished == 1).await;
    assert!(
        handled.try_recv().is_err(),
        "the handler never saw attempt 3"
    );
    let stats = consumer.stats();
    assert_eq!((stats.given_up, stats.requeued), (1, 2));
    assert_eq!(zcard(&server, "q").await, 0);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn past_max_attempts_the_message_moves_to_the_dead_letter_queue() {
    let (server, rsmq) = setup(30).await;
    create(&rsmq, "dead", 30).await;
    let id = rsmq.send_message("q", "poison body", None).await.unwrap();
    let consumer = RsmqConsumer::builder(rsmq.clone(), "q")
        .poll_interval(FAST_POLL)
        .max_attempts(1)
        .dead_letter_queue("dead")
        .handler_fn(|_: Delivery| async {
            Err(HandlerError::new("broken").requeue_after(Duration::ZERO))
        })
        .start()
        .unwrap();
    until("finished", || consumer.stats().finished == 1).await;
    assert_eq!(consumer.stats().given_up, 1);
    assert_eq!(zcard(&server, "q").await, 0);
    let fields: Vec<String> = server.conn().await.hkeys("rsmq:q:Q").await.unwrap();
    assert!(fields.iter().all(|f| !f.starts_with(&id)), "{fields:?}");
    let moved = rsmq.receive_message("dead", None).await.unwrap().unwrap();
    assert_eq!((moved.message.as_str(), moved.rc), ("poison body", 1));
    assert_ne!(moved.id, id);
    stop(&consumer).await;
}

#[actix_rt::test]
#[ignore = "needs redis-server on PATH; run with --ignored (.ci/run does)"]
async fn the_builder_names_the_bad_setting() {
    let (_server, rsmq) = setup(30).await;
    let ok = || RsmqConsumer::builder(rsmq.clone(), "q").handler_fn(|_: Delivery| async { Ok(()) });
    let field = |result: actix_nsq::Result<()>| match result {
        Err(Error::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert!(ok().validate().is_ok());
    let no_handler = RsmqConsumer::builder(rsmq.clone(), "q").validate();
    assert_eq!(field(no_handler), "handler");
    assert_eq!(field(ok().concurrency(0).validate()), "concurrency");
    assert_eq!(field(ok().concurrency(2501).validate()), "concurrency");
    let half = Duration::from_millis(1500);
    assert_eq!(
        field(ok().visibility_timeout(half).validate()),
        "visibility_timeout"
    );
    assert_eq!(
        field(ok().visibility_timeout(Duration::ZERO).validate()),
        "visibility_timeout"
    );
    assert_eq!(
        field(ok().poll_interval(Duration::from_millis(1)).validate()),
        "poll_interval"
    );
    assert_eq!(
        field(ok().dead_letter_queue("q").validate()),
        "dead_letter_queue"
    );
    assert!(matches!(
        ok().dead_letter_queue("bad.name").validate(),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        RsmqConsumer::builder(rsmq, "bad name")
            .handler_fn(|_: Delivery| async { Ok(()) })
            .start(),
        Err(Error::InvalidName { .. })
    ));
}
