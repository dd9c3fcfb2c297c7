//! Raw exchanges that depend on what came before: message ids, redeliveries, heartbeats,
//! several connections, partial writes, the bytes after a snappy upgrade.

use std::time::Duration;

use actix_nsq::protocol::Frame;

use crate::support::{
    assert_same, both, identify_with, line, message_id, publish, render, script, topic, Row, Seen,
    Target, Wire, WAIT,
};

/// Bad magics, a magic split across two writes, and no magic at all.
pub(crate) async fn magic_rows(targets: &[Target; 2]) -> Vec<Row> {
    let mut rows = Vec::new();
    for magic in [&b"  V1"[..], b"V2  ", b"GET "] {
        let case = format!("magic {:?}", String::from_utf8_lossy(magic));
        let row = both(targets, &case, |addr| async move {
            let mut wire = Wire::connect(&addr).await;
            wire.send(magic).await;
            wire.transcript().await
        })
        .await;
        rows.push(row);
    }
    let split = both(targets, "magic in two writes; CLS", |addr| async move {
        let mut wire = Wire::connect(&addr).await;
        wire.send(b"  ").await;
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        wire.send(b"V2CLS\n").await;
        wire.transcript().await
    })
    .await;
    rows.push(split);
    let none = both(targets, "(no magic)", |addr| async move {
        Wire::connect(&addr).await.transcript().await
    })
    .await;
    rows.push(none);
    rows
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn a_command_in_one_byte_writes() {
    let targets = live_targets!();
    let t = topic(&targets, "live_split");
    let row = both(
        &targets,
        "PUB $t <body hello>; CLS, 1 byte per write",
        |addr| {
            let bytes = script(&t, "PUB $t <body hello>; CLS");
            async move {
                let mut wire = Wire::v2(&addr).await;
                for byte in bytes {
                    wire.send(&[byte]).await;
                    actix_rt::time::sleep(Duration::from_millis(2)).await;
                }
                wire.transcript().await
            }
        },
    )
    .await;
    assert_same(&[row]);
}

/// SUB, message, TOUCH, REQ 0 (redelivered with attempts 2), REQ 100 (deferred, attempts 3),
/// another connection FINs it (not its message), FIN, then FIN/REQ/TOUCH of the finished id.
async fn req_touch_flow(addr: String, topic: String) -> Vec<String> {
    let mut seen = Vec::new();
    let mut consumer = Wire::v2(&addr).await;
    let mut other = Wire::v2(&addr).await;
    consumer.send(&line(&format!("SUB {topic} ch"))).await;
    other.send(&line(&format!("SUB {topic} ch"))).await;
    seen.push(render(&consumer.frame().await));
    seen.push(render(&other.frame().await));
    publish(&addr, &topic, "hello").await;
    consumer.send(&line("RDY 1")).await;
    let first = consumer.frame().await;
    let id = message_id(&first);
    seen.push(render(&first));
    other.send(&line(&format!("FIN {id}"))).await;
    seen.push(format!("other: {}", render(&other.frame().await)));
    consumer.send(&line(&format!("TOUCH {id}"))).await;
    consumer.send(&line(&format!("REQ {id} 0"))).await;
    let second = consumer.frame().await;
    seen.push(format!(
        "{} same id={}",
        render(&second),
        message_id(&second) == id
    ));
    consumer.send(&line(&format!("REQ {id} 100"))).await;
    // nsqd only scans a new channel's deferred queue after its next 5 s channel refresh.
    let third = consumer.frame().await;
    seen.push(format!(
        "{} same id={}",
        render(&third),
        message_id(&third) == id
    ));
    for command in ["FIN", "FIN", "TOUCH"] {
        consumer.send(&line(&format!("{command} {id}"))).await;
    }
    consumer.send(&line(&format!("REQ {id} 0"))).await;
    consumer.send(&line("CLS")).await;
    seen.extend(consumer.transcript().await);
    seen.iter()
        .map(|s| s.replace(id.as_str(), "<id>"))
        .collect()
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn req_touch_and_ownership() {
    let targets = live_targets!();
    let t = topic(&targets, "live_req");
    let row = both(&targets, "REQ/TOUCH/FIN flow", |addr| {
        req_touch_flow(addr, t.clone())
    })
    .await;
    assert_same(&[row]);
}

/// IDENTIFY msg_timeout=1000, SUB, RDY 1: a message left unanswered comes back with
/// attempts 2 (same id), then FIN and CLS.
async fn msg_timeout_flow(addr: String, topic: String) -> Vec<String> {
    let mut seen = Vec::new();
    let mut wire = Wire::v2(&addr).await;
    wire.send(&identify_with(|r| r.msg_timeout = 1000)).await;
    seen.push(render(&wire.frame().await));
    wire.send(&line(&format!("SUB {topic} ch"))).await;
    seen.push(render(&wire.frame().await));
    publish(&addr, &topic, "slow").await;
    wire.send(&line("RDY 1")).await;
    let first = wire.frame().await;
    let delivered = std::time::Instant::now();
    seen.push(format!("{} {}", render(&first), describe(&first)));
    let again = wire.frame().await;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{addr}: redelivered {:?} after delivery",
            delivered.elapsed()
        );
    }
    let same = message_id(&again) == message_id(&first);
    seen.push(format!("{} same id={same}", render(&again)));
    wire.send(&line(&format!("FIN {}", message_id(&first))))
        .await;
    wire.send(&line("CLS")).await;
    seen.extend(wire.transcript().await);
    seen
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn msg_timeout_redelivers_with_attempts_2() {
    let targets = live_targets!();
    let t = topic(&targets, "live_timeout");
    let row = both(&targets, "msg_timeout=1000, no answer", |addr| {
        msg_timeout_flow(addr, t.clone())
    })
    .await;
    assert_same(&[row]);
}

/// What a message's id and timestamp look like: nsqd writes 16 lower-case hex digits and
/// nanoseconds since the epoch.
fn describe(frame: &Frame) -> String {
    let Frame::Message(m) = frame else {
        return format!("not a message: {frame:?}");
    };
    let hex =
        m.id.as_str()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let recent = (now - m.timestamp).abs() < 60_000_000_000;
    format!("(id hex: {hex}, timestamp is ns and recent: {recent})")
}

/// A REQ past `--max-req-timeout` is clamped, not refused, and frees the RDY slot: the next
/// message arrives; the deferred one is no longer in flight.
async fn deferred_req_flow(addr: String, topic: String) -> Vec<String> {
    let mut seen = Vec::new();
    let mut wire = Wire::v2(&addr).await;
    wire.send(&script(&topic, "SUB $t ch")).await;
    seen.push(render(&wire.frame().await));
    publish(&addr, &topic, "m1").await;
    publish(&addr, &topic, "m2").await;
    wire.send(&line("RDY 1")).await;
    let m1 = wire.frame().await;
    seen.push(render(&m1));
    let id = message_id(&m1);
    wire.send(&line(&format!("REQ {id} 3600001"))).await;
    let m2 = wire.frame().await;
    seen.push(render(&m2));
    wire.send(&line(&format!("FIN {id}"))).await;
    wire.send(&line(&format!("FIN {}", message_id(&m2)))).await;
    wire.send(&line("CLS")).await;
    seen.extend(wire.transcript().await);
    seen.iter()
        .map(|s| s.replace(id.as_str(), "<m1>"))
        .collect()
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn req_past_max_is_clamped_and_frees_the_slot() {
    let targets = live_targets!();
    let t = topic(&targets, "live_defer");
    let row = both(&targets, "RDY 1, REQ <m1> 3600001", |addr| {
        deferred_req_flow(addr, t.clone())
    })
    .await;
    assert_same(&[row]);
}

/// A consumer that dies with a message in flight (msg_timeout 1 s): nsqd does not requeue it
/// at the disconnect but when it times out, so another consumer gets nothing for 500 ms and
/// then attempts 2.
async fn disconnect_flow(addr: String, topic: String) -> Vec<String> {
    let mut seen = Vec::new();
    let mut first = Wire::v2(&addr).await;
    first.send(&identify_with(|r| r.msg_timeout = 1000)).await;
    first.frame().await;
    first.send(&script(&topic, "SUB $t ch; RDY 1")).await;
    seen.push(render(&first.frame().await));
    publish(&addr, &topic, "orphan").await;
    seen.push(render(&first.frame().await));
    drop(first);
    let mut second = Wire::v2(&addr).await;
    second.send(&script(&topic, "SUB $t ch; RDY 1")).await;
    seen.push(render(&second.frame().await));
    match second.next(Duration::from_millis(500)).await {
        Seen::Silent => seen.push("nothing within 500 ms".to_owned()),
        other => seen.push(format!("within 500 ms: {other:?}")),
    }
    seen.push(render(&second.frame().await));
    seen
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn in_flight_messages_of_a_lost_client_wait_for_their_timeout() {
    let targets = live_targets!();
    let t = topic(&targets, "live_lost");
    let row = both(&targets, "consumer dies with a message in flight", |addr| {
        disconnect_flow(addr, t.clone())
    })
    .await;
    assert_same(&[row]);
}

/// RDY 2 with 3 messages queued: 2 arrive, the third only after a FIN; a second channel
/// gets its own copies.
async fn rdy_window_flow(addr: String, topic: String) -> Vec<String> {
    let mut seen = Vec::new();
    let mut a = Wire::v2(&addr).await;
    let mut b = Wire::v2(&addr).await;
    a.send(&script(&topic, "SUB $t a")).await;
    b.send(&script(&topic, "SUB $t b")).await;
    seen.push(render(&a.frame().await));
    seen.push(render(&b.frame().await));
    let mut publisher = Wire::v2(&addr).await;
    publisher
        .send(&script(
            &topic,
            "MPUB $t <size 22> <size 3> <body m1> <body m2> <body m3>",
        ))
        .await;
    seen.push(render(&publisher.frame().await));
    a.send(&line("RDY 2")).await;
    let m1 = a.frame().await;
    seen.push(render(&m1));
    seen.push(render(&a.frame().await));
    match a.next(Duration::from_millis(700)).await {
        Seen::Silent => seen.push("a: nothing more at RDY 2".to_owned()),
        other => seen.push(format!("a: {other:?}")),
    }
    a.send(&line(&format!("FIN {}", message_id(&m1)))).await;
    seen.push(render(&a.frame().await));
    b.send(&line("RDY 10")).await;
    for _ in 0..3 {
        seen.push(format!("b: {}", render(&b.frame().await)));
    }
    seen
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn rdy_is_a_window_and_channels_get_copies() {
    let targets = live_targets!();
    let t = topic(&targets, "live_window");
    let row = both(&targets, "RDY 2, 3 messages, 2 channels", |addr| {
        rdy_window_flow(addr, t.clone())
    })
    .await;
    assert_same(&[row]);
}

/// An ephemeral channel goes away with its last client, and its messages with it; a durable
/// channel keeps them.
async fn ephemeral_flow(addr: String, topic: String, channel: &'static str) -> Vec<String> {
    let mut seen = Vec::new();
    let sub = format!("SUB $t {channel}");
    let mut first = Wire::v2(&addr).await;
    first.send(&script(&topic, &sub)).await;
    seen.push(render(&first.frame().await));
    publish(&addr, &topic, "kept?").await;
    // Give nsqd's topic pump time to hand the message to the channel.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    // nsqd deletes an emptied ephemeral channel in a goroutine.
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let mut second = Wire::v2(&addr).await;
    second.send(&script(&topic, &format!("{sub}; RDY 1"))).await;
    seen.extend(second.transcript().await);
    seen
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn ephemeral_channels_go_with_their_last_client() {
    let targets = live_targets!();
    let mut rows = Vec::new();
    for channel in ["ch#ephemeral", "ch"] {
        let t = topic(&targets, "live_ephemeral");
        let case = format!("SUB $t {channel}, PUB, close, SUB again; RDY 1");
        rows.push(
            both(&targets, &case, |addr| {
                ephemeral_flow(addr, t.clone(), channel)
            })
            .await,
        );
    }
    assert_same(&rows);
}

/// Heartbeats a client hears until nsqd drops it, answering the first `answer` with NOP.
/// nsqd's read deadline is two intervals after the last command and a heartbeat is due every
/// interval, so a silent client hears 1 or 2 (a race at 2 s) before the close.
async fn heartbeat_flow(addr: String, prelude: Vec<u8>, answer: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut wire = Wire::v2(&addr).await;
    wire.send(&prelude).await;
    let (mut answered, mut unanswered) = (0, 0);
    loop {
        match wire.next(WAIT).await {
            Seen::Frame(frame) if render(&frame) != "_heartbeat_" => seen.push(render(&frame)),
            Seen::Frame(_) if answered < answer => {
                answered += 1;
                seen.push("_heartbeat_ (NOP)".to_owned());
                wire.send(&line("NOP")).await;
            }
            Seen::Frame(_) => unanswered += 1,
            Seen::Closed => break,
            other => {
                seen.push(format!("{other:?}"));
                return seen;
            }
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("unanswered heartbeats before the close: {unanswered}");
    }
    let unanswered = match unanswered {
        1 | 2 => "1 or 2".to_owned(),
        n => n.to_string(),
    };
    seen.push(format!("{unanswered} unanswered _heartbeat_, <closed>"));
    seen
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn heartbeats_every_second_and_silence_drops_the_client() {
    let targets = live_targets!();
    let t = topic(&targets, "live_heartbeat");
    let mut rows = Vec::new();
    for (case, answer) in [
        ("IDENTIFY <json heartbeat_interval=1000>, silence", 0),
        (
            "IDENTIFY <json heartbeat_interval=1000>, NOP x3, silence",
            3,
        ),
        (
            "IDENTIFY <json heartbeat_interval=1000>; SUB $t ch, silence",
            0,
        ),
    ] {
        let prelude = script(&t, case.split(',').next().unwrap_or_default());
        rows.push(
            both(&targets, case, |addr| {
                heartbeat_flow(addr, prelude.clone(), answer)
            })
            .await,
        );
    }
    assert_same(&rows);
}

/// The bytes nsqd writes after agreeing to snappy: the stream identifier and the `OK` frame
/// as a snappy chunk (compared byte for byte: the framing format allows several encodings).
async fn snappy_bytes(addr: String) -> Vec<String> {
    let mut wire = Wire::v2(&addr).await;
    wire.send(&identify_with(|r| r.snappy = true)).await;
    let reply = render(&wire.frame().await);
    let bytes = wire.raw_bytes().await;
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![reply, hex.join(" ")]
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn snappy_upgrade_bytes() {
    let targets = live_targets!();
    let row = both(
        &targets,
        "IDENTIFY <json snappy=true>, raw bytes after",
        snappy_bytes,
    )
    .await;
    assert_same(&[row]);
}
