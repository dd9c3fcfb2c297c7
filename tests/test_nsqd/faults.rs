//! AUTH, recording, ephemeral cleanup, administration, and every fault the test nsqd injects.

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use actix_nsq::{
    protocol::{ErrorCode, Frame, Response, ServerError},
    testing::{ClientState, TestNsqd},
};
use serde_json::json;

use crate::raw::{consumer, Got, Raw, PATIENCE};

#[test]
fn auth_flows() {
    let nsqd = TestNsqd::builder().auth_secret("s3cret").start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    assert_eq!(c.identify()["auth_required"], true);
    c.send_line("SUB t c", None);
    assert_eq!(c.fatal(), "E_AUTH_FIRST AUTH required before SUB");

    let mut c = Raw::connect(nsqd.addr());
    c.publish("t", b"x");
    assert_eq!(c.fatal(), "E_AUTH_FIRST AUTH required before PUB");
    assert_eq!(nsqd.topic_depth("t"), 0);

    let mut c = Raw::connect(nsqd.addr());
    c.send_line("AUTH", Some(b"wrong"));
    assert_eq!(c.fatal(), "E_AUTH_FAILED AUTH failed");

    let mut c = Raw::connect(nsqd.addr());
    c.identify();
    c.send_line("AUTH", Some(b"s3cret"));
    let reply = c.data();
    assert_eq!(
        reply,
        json!({"identity": "test-identity", "identity_url": "", "permission_count": 1})
    );
    c.sub("t", "c");
    assert_eq!(
        nsqd.clients()[0].auth_identity.as_deref(),
        Some("test-identity")
    );

    let mut c = Raw::connect(nsqd.addr());
    c.send_line("AUTH", Some(b"s3cret"));
    c.data();
    c.send_line("AUTH", Some(b"s3cret"));
    assert_eq!(c.fatal(), "E_INVALID AUTH already set");

    let open = TestNsqd::start().unwrap();
    let mut c = Raw::connect(open.addr());
    c.send_line("AUTH", Some(b"s3cret"));
    assert_eq!(c.fatal(), "E_AUTH_DISABLED AUTH disabled");
}

#[test]
fn records_every_command_in_order() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "rec", "ch", 3);
    nsqd.publish("rec", "x").unwrap();
    let msg = c.message();
    c.fin(msg.id);
    c.publish("other", b"body");
    c.expect_ok();
    let id = nsqd.clients()[0].id;
    let lines: Vec<_> = nsqd.commands_for(id).into_iter().map(|c| c.line).collect();
    assert_eq!(
        lines,
        [
            "IDENTIFY",
            "SUB rec ch",
            "RDY 3",
            &format!("FIN {}", msg.id),
            "PUB other"
        ]
    );
    let all = nsqd.commands();
    assert_eq!(all[0].body_json().unwrap()["client_id"], "test");
    assert_eq!(all[4].body.as_deref(), Some(&b"body"[..]));
    assert_eq!((all[1].name(), all[1].params()), ("SUB", vec!["rec", "ch"]));
    assert!(nsqd.wait_for_commands(PATIENCE, |cmds| cmds.len() == 5));
    assert!(!nsqd.wait_for_commands(Duration::from_millis(50), |cmds| cmds.len() > 5));
    nsqd.clear_commands();
    assert!(nsqd.commands().is_empty());

    let quiet = TestNsqd::builder().record_commands(false).start().unwrap();
    let mut c = Raw::connect(quiet.addr());
    c.publish("t", b"x");
    c.expect_ok();
    assert!(quiet.commands().is_empty());
}

#[test]
fn the_handle_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<TestNsqd>();
}

#[test]
fn client_info_tracks_the_protocol() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.identify_with(json!({"user_agent": "raw/1", "hostname": "box", "msg_timeout": 2000}));
    assert!(nsqd.wait_until(PATIENCE, |n| n
        .clients()
        .first()
        .is_some_and(|i| i.user_agent == "raw/1")));
    c.sub("info", "ch");
    c.rdy(7);
    assert!(nsqd.wait_until(PATIENCE, |n| n.clients()[0].rdy == 7));
    let info = nsqd.clients().remove(0);
    assert_eq!(
        (info.client_id.as_str(), info.hostname.as_str()),
        ("test", "box")
    );
    assert_eq!(info.state, ClientState::Subscribed);
    assert_eq!(
        info.subscription,
        Some(("info".to_owned(), "ch".to_owned()))
    );
    assert_eq!(info.msg_timeout, Duration::from_secs(2));
    assert_eq!(nsqd.client(info.id), Some(info));
}

#[test]
fn close_all_connections_leaves_messages_in_flight_until_they_time_out() {
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "close", "ch", 1);
    let id = nsqd.publish("close", "x").unwrap();
    assert_eq!(c.message().id, id);
    nsqd.close_all_connections().unwrap();
    c.expect_closed();
    assert_eq!(
        nsqd.in_flight("close", "ch"),
        1,
        "nsqd does not requeue on disconnect"
    );
    let mut again = consumer(nsqd.addr(), "close", "ch", 1);
    let msg = again.message();
    assert_eq!((msg.id, msg.attempts), (id, 2));
    assert_eq!(nsqd.timed_out_count("close", "ch"), 1);
}

#[test]
fn half_open_connections_go_silent_and_wake_up() {
    let nsqd = TestNsqd::builder()
        .client_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "half", "ch", 0);
    nsqd.set_half_open(true);
    c.publish("half", b"x");
    // No answer, no heartbeat, and no timeout although nothing was read for > 2x100 ms.
    match c.read_within(Duration::from_millis(600)) {
        Got::Nothing => {}
        other => panic!("a silent peer said {other:?}"),
    }
    let mut fresh = Raw::connect(nsqd.addr());
    fresh.publish("half", b"y");
    fresh.expect_ok();
    nsqd.set_half_open(false);
    c.expect_ok();
    assert_eq!(nsqd.topic_depth("half") + nsqd.depth("half", "ch"), 2);
}

#[test]
fn delayed_frames_arrive_late() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    nsqd.delay_frames(Duration::from_millis(300));
    let sent = Instant::now();
    c.publish("slow", b"x");
    c.expect_ok();
    assert!(sent.elapsed() >= Duration::from_millis(300));
    nsqd.delay_frames(Duration::ZERO);
}

#[test]
fn refused_connections_are_closed_at_once() {
    let nsqd = TestNsqd::start().unwrap();
    nsqd.refuse_connections(true);
    let mut c = Raw::connect(nsqd.addr());
    c.expect_closed();
    nsqd.refuse_connections(false);
    let mut c = Raw::connect(nsqd.addr());
    c.identify();
}

#[test]
fn stop_and_restart_keep_messages_on_the_same_port() {
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_secs(60))
        .start()
        .unwrap();
    let addr = nsqd.addr();
    let mut c = consumer(addr, "persist", "ch", 1);
    consumer(addr, "persist", "tmp#ephemeral", 0);
    nsqd.publish("persist", "in flight").unwrap();
    nsqd.publish("persist", "queued").unwrap();
    nsqd.publish_deferred("persist", "deferred", Duration::from_secs(3600))
        .unwrap();
    assert_eq!(c.message().body, "in flight");
    nsqd.stop().unwrap();
    assert!(!nsqd.is_listening());
    c.expect_closed();
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens while stopped"
    );
    assert_eq!(
        nsqd.channels("persist"),
        ["ch"],
        "ephemeral channels do not survive"
    );
    nsqd.restart().unwrap();
    assert_eq!(nsqd.addr(), addr);
    let mut c = consumer(addr, "persist", "ch", 10);
    let mut got: Vec<_> = (0..3)
        .map(|_| c.message())
        .map(|m| (m.body, m.attempts))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("deferred".into(), 1),
            ("in flight".into(), 2),
            ("queued".into(), 1)
        ]
    );
}

#[test]
fn kill_loses_everything_and_restart_serves_an_empty_nsqd() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "lost", "ch", 0);
    nsqd.publish("lost", "x").unwrap();
    nsqd.kill().unwrap();
    c.expect_closed();
    assert!(nsqd.topics().is_empty());
    nsqd.restart().unwrap();
    let mut c = consumer(nsqd.addr(), "lost", "ch", 1);
    c.expect_quiet(Duration::from_millis(100));
    // A running server restarts gracefully.
    nsqd.restart().unwrap();
    c.expect_closed();
    assert!(nsqd.is_listening());
}

#[test]
fn a_lying_server_sends_what_it_is_told() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.identify();
    let id = nsqd.clients()[0].id;
    let lie = ServerError::new(ErrorCode::Invalid, "made up");
    assert!(nsqd.send_frame(id, Frame::Error(lie.clone())));
    assert_eq!(c.next(), Frame::Error(lie));
    assert!(nsqd.send_raw(id, &b"\x00\x00\x00\x06\x00\x00\x00\x00OK"[..]));
    assert_eq!(c.next(), Frame::Response(Response::Ok));
    assert!(nsqd.close_client(id));
    c.expect_closed();
    assert!(!nsqd.send_raw(id, &b"x"[..]));
}

/// The handle works from inside an actix System (the runtime our actors run on).
#[actix_rt::test]
async fn usable_from_async_tests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let nsqd = TestNsqd::start().unwrap();
    let mut stream = tokio::net::TcpStream::connect(nsqd.addr()).await.unwrap();
    stream
        .write_all(b"  V2PUB async\n\x00\x00\x00\x02hi")
        .await
        .unwrap();
    let mut ok = [0u8; 10];
    stream.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
    assert!(
        nsqd.wait_for_commands_async(PATIENCE, |c| c.iter().any(|c| c.line == "PUB async"))
            .await
    );
    assert!(
        nsqd.wait_until_async(PATIENCE, |n| n.topic_depth("async") == 1)
            .await
    );
    nsqd.stop().unwrap();
    assert_eq!(stream.read(&mut ok).await.unwrap_or(0), 0);
}
