//! Helpers for the RSMQ consumer tests: a queue on a throwaway redis-server, waiting, raw
//! Redis reads, an event collector and handler actors.

#![allow(dead_code, clippy::print_stdout)]

use std::time::Duration;

use actix::{Actor, ActorContext, Context, Handler, Message, Recipient};
use actix_nsq::{
    rsmq::{QueueOptions, Rsmq, RsmqConsumer, RsmqConsumerEvent},
    Delivery, HandlerResult,
};
use redis::AsyncCommands;
use tokio::{sync::mpsc, time::Instant};

use crate::redis_server::RedisServer;

/// Generous: the machine is shared and small.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);
pub(crate) const FAST_POLL: Duration = Duration::from_millis(50);

/// A redis-server with queue `q` (visibility timeout `vt` seconds).
pub(crate) async fn setup(vt: u64) -> (RedisServer, Rsmq) {
    let server = RedisServer::start();
    let rsmq = Rsmq::connect(&server.url()).await.unwrap();
    create(&rsmq, "q", vt).await;
    (server, rsmq)
}

/// Creates `queue` with a visibility timeout of `vt` seconds.
pub(crate) async fn create(rsmq: &Rsmq, queue: &str, vt: u64) {
    let options = QueueOptions::new().vt(Duration::from_secs(vt));
    rsmq.create_queue(queue, options).await.unwrap();
}

/// Waits until `done` holds, polling; fails the test after [`PATIENCE`].
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next item, or a failed test after [`PATIENCE`].
pub(crate) async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

/// Messages (visible or hidden) in the queue's sorted set.
pub(crate) async fn zcard(server: &RedisServer, queue: &str) -> u64 {
    server
        .conn()
        .await
        .zcard(format!("rsmq:{queue}"))
        .await
        .unwrap()
}

/// When (epoch ms) a message becomes visible; `None` if it is gone.
pub(crate) async fn score(server: &RedisServer, id: &str) -> Option<i64> {
    server.conn().await.zscore("rsmq:q", id).await.unwrap()
}

/// How far in the future (ms, Redis clock) a message becomes visible; `None` if it is gone.
pub(crate) async fn visible_in_ms(server: &RedisServer, id: &str) -> Option<i64> {
    let score = score(server, id).await?;
    let (sec, usec): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    Some(score - (sec * 1000 + usec / 1000))
}

/// Collects a consumer's events.
pub(crate) struct Events(pub(crate) mpsc::UnboundedSender<RsmqConsumerEvent>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<RsmqConsumerEvent> for Events {
    type Result = ();

    fn handle(&mut self, event: RsmqConsumerEvent, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

/// An event recipient for a consumer, and the receiving end.
pub(crate) fn events() -> (
    Recipient<RsmqConsumerEvent>,
    mpsc::UnboundedReceiver<RsmqConsumerEvent>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Events(tx).start().recipient(), rx)
}

/// The next event `matches` accepts, skipping others.
pub(crate) async fn event_where(
    rx: &mut mpsc::UnboundedReceiver<RsmqConsumerEvent>,
    matches: impl Fn(&RsmqConsumerEvent) -> bool,
) -> RsmqConsumerEvent {
    loop {
        let event = recv(rx).await;
        if matches(&event) {
            return event;
        }
    }
}

/// A closure handler that hands every delivery to the test, unanswered.
pub(crate) fn holding(
    tx: mpsc::UnboundedSender<Delivery>,
) -> impl Fn(Delivery) -> std::future::Ready<HandlerResult> + Send + Sync + 'static {
    move |delivery| {
        let _ = tx.send(delivery);
        std::future::ready(Ok(()))
    }
}

/// A handler actor: reports `(worker, body, attempts)` and finishes.
pub(crate) struct Worker {
    pub(crate) name: usize,
    pub(crate) seen: mpsc::UnboundedSender<(usize, String, u32)>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Worker {
    type Result = HandlerResult;

    fn handle(&mut self, delivery: Delivery, _: &mut Context<Self>) -> HandlerResult {
        let body = String::from_utf8(delivery.body().to_vec()).unwrap();
        let _ = self.seen.send((self.name, body, delivery.attempts()));
        Ok(())
    }
}

/// Stops a [`Worker`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Halt;

impl Handler<Halt> for Worker {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Stops a consumer, expecting a clean drain.
pub(crate) async fn stop(consumer: &RsmqConsumer) {
    assert_eq!(consumer.stop_within(Duration::from_secs(10)).await, 0);
}
