//! Consuming through the upgrades: a message as large as nsqd allows and many small ones
//! arrive intact over TLS plus compression, read by the raw client and by [`Consumer`].

use std::{collections::HashSet, time::Duration};

use actix_nsq::{
    testing::{ClientInfo, TestNsqd},
    ConnectionConfig, Consumer, Delivery,
};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::raw::{json_of, Raw, PATIENCE};

const BIG: usize = 1024 * 1024;
const SMALL: usize = 1000;

/// What gets published: one 1 MiB message (nsqd's default `--max-msg-size`) with a
/// recognisable pattern, then `SMALL` numbered ones.
fn bodies() -> Vec<Bytes> {
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    let mut bodies = vec![Bytes::from(big)];
    bodies.extend((0..SMALL).map(|i| Bytes::from(format!("small message {i}"))));
    bodies
}

fn publish_all(nsqd: &TestNsqd, topic: &str) -> Vec<Bytes> {
    nsqd.create_channel(topic, "ch").unwrap();
    let bodies = bodies();
    for body in &bodies {
        nsqd.publish(topic, body.clone()).unwrap();
    }
    bodies
}

/// A raw consumer upgraded as `features` asks (`tls_v1`, `snappy`, `deflate`).
fn upgraded_consumer(nsqd: &TestNsqd, features: Value, topic: &str) -> Raw {
    let mut raw = Raw::connect(nsqd.addr());
    let mut extra = features.clone();
    extra["output_buffer_size"] = json!(64 * 1024);
    let reply = json_of(raw.identify_with(extra));
    if features["tls_v1"] == true {
        assert_eq!(reply["tls_v1"], true);
        raw.upgrade_tls(false).unwrap();
        raw.expect_ok();
    }
    if features["snappy"] == true {
        assert_eq!(reply["snappy"], true);
        raw.upgrade_snappy();
        raw.expect_ok();
    }
    if features["deflate"] == true {
        assert_eq!(reply["deflate"], true);
        raw.upgrade_deflate();
        raw.expect_ok();
    }
    raw.sub(topic, "ch");
    raw
}

fn raw_receives_everything(features: Value) {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let expected = publish_all(&nsqd, "large");
    let mut raw = upgraded_consumer(&nsqd, features, "large");
    raw.rdy(100);
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let message = raw.message();
        raw.fin(message.id);
        got.push(message.body);
    }
    // One channel, one consumer: nsqd's order is publication order.
    assert_eq!(got.len(), expected.len());
    assert_eq!(got[0].len(), BIG);
    assert!(got == expected, "bodies differ");
    let total = expected.len() as u64;
    assert!(nsqd.wait_until(PATIENCE, |n| n.finished_count("large", "ch") == total));
}

#[test]
fn raw_over_tls_and_snappy() {
    raw_receives_everything(json!({"tls_v1": true, "snappy": true}));
}

#[test]
fn raw_over_tls_and_deflate() {
    raw_receives_everything(json!({"tls_v1": true, "deflate": true, "deflate_level": 9}));
}

#[test]
fn raw_over_snappy_alone() {
    raw_receives_everything(json!({"snappy": true}));
}

/// A [`Consumer`] with `config` gets every message once and finishes it.
async fn consumer_receives_everything(config: ConnectionConfig) -> ClientInfo {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let expected = publish_all(&nsqd, "consumed");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::builder("consumed", "ch")
        .nsqd(nsqd.addr().to_string())
        .connection(config)
        .max_in_flight(200)
        .handler_fn(move |delivery: Delivery| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(delivery.body().clone());
                Ok(())
            }
        })
        .start()
        .unwrap();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let body = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} messages", got.len()))
            .unwrap();
        got.push(body);
    }
    assert_eq!(got.iter().filter(|b| b.len() == BIG).count(), 1);
    // Handlers run concurrently: compare as sets (the bodies are all distinct).
    let got: HashSet<Bytes> = got.into_iter().collect();
    let expected: HashSet<Bytes> = expected.into_iter().collect();
    assert!(got == expected, "bodies differ");
    let total = expected.len() as u64;
    let finished = nsqd
        .wait_until_async(PATIENCE, |n| n.finished_count("consumed", "ch") == total)
        .await;
    assert!(finished);
    let info = nsqd.clients().into_iter().next().unwrap();
    consumer.stop_within(Duration::from_secs(5)).await;
    info
}

#[actix_rt::test]
async fn consumer_over_tls_and_snappy() {
    let config = ConnectionConfig::new()
        .tls(TestNsqd::tls_config())
        .snappy(true);
    let info = consumer_receives_everything(config).await;
    assert!(info.tls && info.snappy);
}

#[actix_rt::test]
async fn consumer_over_tls_and_deflate() {
    let config = ConnectionConfig::new()
        .tls(TestNsqd::tls_config())
        .deflate(6);
    let info = consumer_receives_everything(config).await;
    assert!(info.tls && info.deflate);
    assert_eq!(info.deflate_level, 6);
}
