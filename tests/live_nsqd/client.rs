//! Our `Producer` and `Consumer` against both servers: compression upgrades, AUTH, heartbeats
//! and message timeouts, compared by what each side negotiated and delivered.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_nsq::{ConnectionConfig, ConnectionEvent, Consumer, ConsumerEvent, Delivery, Producer};

use crate::support::{assert_same, both, eventually, publish, topic, Recorder, Row, Target};

/// What each connection negotiated, as its `Connected` events tell: compression, AUTH, and
/// the IDENTIFY reply (version blanked).
fn negotiated(events: &[ConnectionEvent]) -> String {
    let mut seen: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Connected { negotiated, .. } => {
                let mut identify = negotiated.identify.clone();
                identify.version = "*".to_owned();
                Some(format!(
                    "{:?} tls={} auth={:?} {identify:?}",
                    negotiated.compression, negotiated.tls, negotiated.auth
                ))
            }
            _ => None,
        })
        .collect();
    seen.dedup();
    seen.join("; ")
}

fn consumer_connection_events(events: &Recorder<ConsumerEvent>) -> Vec<ConnectionEvent> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ConsumerEvent::Connection(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// 20 PUBs and an MPUB of 20 through our producer, consumed through our consumer, both with
/// `config`: what each negotiated and whether every message arrived once.
async fn client_roundtrip(addr: String, topic: String, config: ConnectionConfig) -> Vec<String> {
    let producer_events = Recorder::<ConnectionEvent>::default();
    let producer = Producer::builder()
        .nsqd(addr.clone())
        .connection(config.clone())
        .events(producer_events.recipient())
        .start()
        .unwrap();
    for i in 0..20 {
        producer
            .publish(topic.as_str(), format!("m{i}"))
            .await
            .unwrap();
    }
    producer
        .multi_publish(topic.as_str(), (20..40).map(|i| format!("m{i}")))
        .await
        .unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    let consumer_events = Recorder::<ConsumerEvent>::default();
    let consumer = Consumer::builder(topic.as_str(), "ch")
        .nsqd(addr)
        .connection(config)
        .max_in_flight(10)
        .events(consumer_events.recipient())
        .handler_fn(move |d: Delivery| {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(d.body()).into_owned());
            async { Ok(()) }
        })
        .start()
        .unwrap();
    eventually(|| bodies.lock().unwrap().len() >= 40).await;
    consumer.stop().await;
    producer.stop().await;
    let mut bodies = bodies.lock().unwrap().clone();
    bodies.sort();
    let received = bodies.len();
    bodies.dedup();
    vec![
        format!("producer: {}", negotiated(&producer_events.all())),
        format!(
            "consumer: {}",
            negotiated(&consumer_connection_events(&consumer_events))
        ),
        format!("received {received}, distinct {}", bodies.len()),
    ]
}

async fn roundtrip_rows(targets: &[Target; 2], configs: Vec<(&str, ConnectionConfig)>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (case, config) in configs {
        let t = topic(targets, "live_client");
        rows.push(
            both(targets, case, |addr| {
                client_roundtrip(addr, t.clone(), config.clone())
            })
            .await,
        );
    }
    rows
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn snappy_upgrade_through_our_client() {
    let targets = live_targets!();
    let rows = roundtrip_rows(
        &targets,
        vec![("snappy", ConnectionConfig::new().snappy(true))],
    )
    .await;
    assert_same(&rows);
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn deflate_upgrade_through_our_client() {
    let targets = live_targets!();
    let rows = roundtrip_rows(
        &targets,
        vec![
            ("deflate level 3", ConnectionConfig::new().deflate(3)),
            (
                "deflate level 9 (nsqd caps at 6)",
                ConnectionConfig::new().deflate(9),
            ),
        ],
    )
    .await;
    assert_same(&rows);
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn auth_secret_is_not_sent_to_an_nsqd_without_auth() {
    let targets = live_targets!();
    let rows = roundtrip_rows(
        &targets,
        vec![(
            "plain, auth_secret set",
            ConnectionConfig::new().auth_secret("secret"),
        )],
    )
    .await;
    assert_same(&rows);
}

/// A consumer with 1 s heartbeats stays connected through several of them, then consumes.
async fn client_heartbeats(addr: String, topic: String) -> Vec<String> {
    let received = Arc::new(Mutex::new(0u32));
    let count = received.clone();
    let config = ConnectionConfig::new().heartbeat_interval(Some(Duration::from_secs(1)));
    let consumer = Consumer::builder(topic.as_str(), "ch")
        .nsqd(addr.clone())
        .connection(config)
        .handler_fn(move |_| {
            *count.lock().unwrap() += 1;
            async { Ok(()) }
        })
        .start()
        .unwrap();
    eventually(|| consumer.stats().connections.iter().any(|c| c.connected)).await;
    actix_rt::time::sleep(Duration::from_millis(3500)).await;
    publish(&addr, &topic, "after heartbeats").await;
    eventually(|| *received.lock().unwrap() == 1).await;
    let stats = consumer.stats();
    consumer.stop().await;
    let conn = &stats.connections[0];
    vec![format!(
        "received {}, connected {}, reconnects {}",
        received.lock().unwrap(),
        conn.connected,
        conn.reconnects
    )]
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn our_consumer_answers_heartbeats() {
    let targets = live_targets!();
    let t = topic(&targets, "live_client_hb");
    let row = both(
        &targets,
        "consumer, heartbeat_interval 1 s, 3.5 s idle",
        |addr| client_heartbeats(addr, t.clone()),
    )
    .await;
    assert_same(&[row]);
}

/// A handler that takes 8 s on attempt 1 with msg_timeout 1 s: nsqd redelivers (attempt 2,
/// finished at once), and the late FIN of attempt 1 draws a non-fatal `E_FIN_FAILED`. 8 s,
/// because nsqd only starts scanning a new channel for timeouts at its next channel refresh
/// (`--queue-scan-refresh-interval`, 5 s).
async fn client_msg_timeout(addr: String, topic: String) -> Vec<String> {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let events = Recorder::<ConsumerEvent>::default();
    let config = ConnectionConfig::new().msg_timeout(Some(Duration::from_secs(1)));
    let consumer = Consumer::builder(topic.as_str(), "ch")
        .nsqd(addr.clone())
        .connection(config)
        .events(events.recipient())
        .handler_fn(move |d: Delivery| {
            seen.lock().unwrap().push(d.attempts());
            async move {
                if d.attempts() == 1 {
                    actix_rt::time::sleep(Duration::from_secs(8)).await;
                }
                Ok(())
            }
        })
        .start()
        .unwrap();
    publish(&addr, &topic, "slow").await;
    let errors = || {
        consumer_connection_events(&events)
            .into_iter()
            .filter_map(|e| match e {
                ConnectionEvent::ServerError { error, .. } => Some(error.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    eventually(|| !errors().is_empty()).await;
    let stats = consumer.stats();
    consumer.stop().await;
    let mut rendered = vec![format!("attempts {:?}", attempts.lock().unwrap())];
    rendered.extend(errors().iter().map(|e| mask_id(e)));
    rendered.push(format!("reconnects {}", stats.connections[0].reconnects));
    rendered
}

/// Replaces the 16-character message id in an error text with `<id>`.
fn mask_id(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.len() == 16 && w.bytes().all(|b| b.is_ascii_alphanumeric()) {
                "<id>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn msg_timeout_through_our_consumer() {
    let targets = live_targets!();
    let t = topic(&targets, "live_client_timeout");
    let row = both(
        &targets,
        "consumer, msg_timeout 1 s, handler takes 8 s on attempt 1",
        |addr| client_msg_timeout(addr, t.clone()),
    )
    .await;
    assert_same(&[row]);
}
