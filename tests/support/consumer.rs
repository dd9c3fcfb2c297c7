//! Helpers shared by the consumer tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use actix_nsq::{
    testing::{TestLookupd, TestNsqd},
    ConsumerEvent, ReconnectPolicy,
};

pub const WAIT: Duration = Duration::from_secs(15);

/// The command lines nsqd recorded, without message ids (`FIN`, `REQ <delay>`, `TOUCH`), so
/// sequences can be compared exactly.
pub fn lines(nsqd: &TestNsqd) -> Vec<String> {
    nsqd.commands()
        .into_iter()
        .map(|c| {
            let words: Vec<&str> = c.line.split(' ').collect();
            match words.as_slice() {
                ["FIN", _] => "FIN".to_owned(),
                ["TOUCH", _] => "TOUCH".to_owned(),
                ["REQ", _, delay] => format!("REQ {delay}"),
                _ => c.line.clone(),
            }
        })
        .collect()
}

/// How many `/lookup` queries the test nsqlookupd has answered.
pub fn lookups(lookupd: &TestLookupd) -> usize {
    lookupd
        .requests()
        .iter()
        .filter(|r| r.contains("/lookup"))
        .count()
}

/// Polls until `pred` holds or the deadline passes.
pub async fn eventually(mut pred: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if pred() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    pred()
}

pub fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
}

/// Records a consumer's events.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<ConsumerEvent>>>);

pub struct EventSink(Events);

impl Actor for EventSink {
    type Context = Context<Self>;
}

impl Handler<ConsumerEvent> for EventSink {
    type Result = ();
    fn handle(&mut self, event: ConsumerEvent, _: &mut Context<Self>) {
        self.0 .0.lock().unwrap().push(event);
    }
}

impl Events {
    pub fn recipient(&self) -> Recipient<ConsumerEvent> {
        EventSink(self.clone()).start().recipient()
    }

    pub fn all(&self) -> Vec<ConsumerEvent> {
        self.0.lock().unwrap().clone()
    }

    pub fn any(&self, pred: impl Fn(&ConsumerEvent) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(pred)
    }
}
