//! Consumer identity in logs: two consumers in one process, every log line of their actors
//! inside a span naming the consumer, its topic and channel, and the nsqd for a connection's.
//! Alone in its binary: it installs a tracing subscriber for its thread.

#[path = "support/consumer.rs"]
mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_nsq::{testing::TestNsqd, Consumer, Delivery};
use support::eventually;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[actix_rt::test]
async fn two_consumers_can_be_told_apart_in_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (first, second) = (TestNsqd::start().unwrap(), TestNsqd::start().unwrap());
    first.publish("orders", "a").unwrap();
    second.publish("audit", "b").unwrap();
    let alpha = Consumer::builder("orders", "billing")
        .name("alpha")
        .nsqd(first.addr().to_string())
        .default_requeue_delay(Duration::ZERO)
        .max_backoff_duration(Duration::ZERO)
        // Fails the first attempt, so that the dispatch logs a failure.
        .handler_fn(|d: Delivery| async move {
            if d.attempts() == 1 {
                Err("first attempt fails".into())
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap();
    let unnamed = Consumer::builder("audit", "archive")
        .nsqd(second.addr().to_string())
        .handler_fn(|_d: Delivery| async { Ok(()) })
        .start()
        .unwrap();
    assert!(
        eventually(|| first.finished_count("orders", "billing") == 1
            && second.finished_count("audit", "archive") == 1)
        .await
    );
    alpha.stop().await;
    unnamed.stop().await;

    let lines = captured.lines();
    // The in-process nsqd is not a consumer actor.
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("actix_nsq::") && !l.contains("actix_nsq::testing"))
        .collect();
    assert!(!ours.is_empty(), "{lines:#?}");
    // Every line of the consumers' actors names its consumer, topic and channel.
    for line in &ours {
        let is_alpha = line.contains("consumer=alpha topic=orders channel=billing");
        let is_unnamed = line.contains("consumer=audit/archive topic=audit channel=archive");
        assert!(is_alpha != is_unnamed, "exactly one consumer named: {line}");
    }
    // A connection's lines name its nsqd too: "connected" once per consumer, each with its own.
    let connected = |nsqd: &TestNsqd, who: &str| {
        ours.iter()
            .filter(|l| l.contains(" connected") && l.contains(who))
            .all(|l| l.contains(&format!("nsqd={}", nsqd.addr())))
            && ours
                .iter()
                .any(|l| l.contains(" connected") && l.contains(who))
    };
    assert!(connected(&first, "consumer=alpha"), "{ours:#?}");
    assert!(connected(&second, "consumer=audit/archive"), "{ours:#?}");
    // The dispatch's lines, inside the connection's span.
    assert!(
        ours.iter().any(|l| l.contains("handler failed")
            && l.contains("consumer=alpha")
            && l.contains(&format!("nsqd={}", first.addr()))),
        "{ours:#?}"
    );
    // The coordinator's own line, outside any connection.
    assert!(
        ours.iter()
            .any(|l| l.contains("consumer stopped") && l.contains("consumer=alpha")),
        "{ours:#?}"
    );
}
