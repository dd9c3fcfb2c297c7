//! The essence of nsqd's `protocol_v2_test.go`, run against the test nsqd: same commands,
//! same expected frames and error texts.

use std::time::{Duration, Instant};

use actix_nsq::{
    protocol::{Command, ErrorCode, Frame, Response},
    testing::{ClientState, TestNsqd},
};
use serde_json::json;

use crate::raw::{code, consumer, json_of, Got, Raw, PATIENCE};

#[test]
fn basic_v2() {
    let nsqd = TestNsqd::start().unwrap();
    let id = nsqd.publish("test_v2", "test body").unwrap();
    let mut c = consumer(nsqd.addr(), "test_v2", "ch", 1);
    let msg = c.message();
    assert_eq!(
        (msg.id, &msg.body[..], msg.attempts),
        (id, &b"test body"[..], 1)
    );
    assert_eq!(msg.id.as_str().len(), 16);
    assert!(msg.id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    c.fin(msg.id);
    assert!(nsqd.wait_until(PATIENCE, |n| n.finished_count("test_v2", "ch") == 1));
    assert_eq!(nsqd.in_flight("test_v2", "ch"), 0);
}

#[test]
fn client_timeout_drops_a_silent_client() {
    let nsqd = TestNsqd::builder()
        .client_timeout(Duration::from_millis(150))
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "timeout", "ch", 0);
    // Heartbeats (every 75 ms) go unanswered: nsqd closes after 150 ms of silence.
    c.expect_closed();
    assert!(nsqd.wait_until(PATIENCE, |n| n.clients().is_empty()));
}

#[test]
fn client_heartbeat_keeps_an_answering_client() {
    let nsqd = TestNsqd::builder()
        .client_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "hb", "ch", 1);
    assert_eq!(c.frame(), Frame::Response(Response::Heartbeat));
    c.send(&Command::Nop);
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        if let Got::Frame(frame) = c.read_within(Duration::from_millis(20)) {
            assert_eq!(frame, Frame::Response(Response::Heartbeat));
            c.send(&Command::Nop);
        }
    }
    nsqd.publish("hb", "still here").unwrap();
    assert_eq!(c.message().body, "still here");
}

#[test]
fn heartbeats_disabled_forbid_sub_but_keep_the_connection() {
    let nsqd = TestNsqd::builder()
        .client_timeout(Duration::from_millis(100))
        .start()
        .unwrap();
    let mut c = Raw::connect(nsqd.addr());
    assert!(matches!(
        c.identify_with(json!({"heartbeat_interval": -1})),
        Frame::Response(_)
    ));
    // No heartbeats and no read deadline: still alive well past the client timeout.
    c.expect_quiet(Duration::from_millis(300));
    c.publish("hb_off", b"x");
    c.expect_ok();
    c.send_line("SUB hb_off ch", None);
    assert_eq!(c.fatal(), "E_INVALID cannot SUB with heartbeats disabled");
}

#[test]
fn max_heartbeat_interval_valid_and_invalid() {
    let nsqd = TestNsqd::builder()
        .max_heartbeat_interval(Duration::from_secs(300))
        .start()
        .unwrap();
    let mut ok = Raw::connect(nsqd.addr());
    assert!(matches!(
        ok.identify_with(json!({"heartbeat_interval": 300_000})),
        Frame::Response(_)
    ));
    let mut bad = Raw::connect(nsqd.addr());
    match bad.identify_with(json!({"heartbeat_interval": 300_001})) {
        Frame::Error(e) => {
            assert_eq!(
                e.to_wire(),
                "E_BAD_BODY IDENTIFY heartbeat interval (300001) is invalid"
            )
        }
        other => panic!("{other:?}"),
    }
    bad.expect_closed();
}

#[test]
fn empty_command_is_an_invalid_command() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.send_bytes(b"\n\n");
    assert_eq!(c.fatal(), "E_INVALID invalid command ");
}

#[test]
fn size_limits() {
    let nsqd = TestNsqd::builder()
        .max_msg_size(100)
        .max_body_size(1000)
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "limits", "ch", 0);
    c.send_line("PUB limits", Some(&[0; 95]));
    c.expect_ok();
    c.send_line("PUB limits", Some(&[0; 105]));
    assert_eq!(c.fatal(), "E_BAD_MESSAGE PUB message too big 105 > 100");

    let mut c = Raw::connect(nsqd.addr());
    c.send_line("PUB limits", Some(&[]));
    assert_eq!(c.fatal(), "E_BAD_MESSAGE PUB invalid message body size 0");

    let mpub = |sizes: &[usize]| {
        let mut body = (sizes.len() as u32).to_be_bytes().to_vec();
        for &n in sizes {
            body.extend_from_slice(&(n as u32).to_be_bytes());
            body.extend(std::iter::repeat_n(b'x', n));
        }
        body
    };
    let mut c = Raw::connect(nsqd.addr());
    c.send_line("MPUB limits", Some(&mpub(&[100; 5])));
    c.expect_ok();
    c.send_line("MPUB limits", Some(&mpub(&[100; 11])));
    assert_eq!(c.fatal(), "E_BAD_BODY MPUB body too big 1148 > 1000");

    let mut c = Raw::connect(nsqd.addr());
    c.send_line("MPUB limits", Some(&mpub(&[100, 100, 100, 100, 100, 0])));
    assert_eq!(
        c.fatal(),
        "E_BAD_MESSAGE MPUB invalid message(5) body size 0"
    );

    let mut c = Raw::connect(nsqd.addr());
    c.send_line("MPUB limits", Some(&mpub(&[101; 5])));
    assert_eq!(c.fatal(), "E_BAD_MESSAGE MPUB message too big 101 > 100");
    assert_eq!(nsqd.channel_stats("limits", "ch").unwrap().message_count, 6);
}

#[test]
fn dpub_defers_and_checks_its_range() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "dpub", "ch", 0);
    c.send_line("DPUB dpub 1000", Some(&[b'x'; 100]));
    c.expect_ok();
    assert_eq!(nsqd.deferred("dpub", "ch"), 1);
    assert_eq!(nsqd.channel_stats("dpub", "ch").unwrap().message_count, 1);
    c.send_line("DPUB dpub 3600100", Some(&[b'x'; 100]));
    assert_eq!(
        c.fatal(),
        "E_INVALID DPUB timeout 3600100 out of range 0-3600000"
    );

    let mut c = consumer(nsqd.addr(), "dpub", "ch", 2);
    let sent = Instant::now();
    c.send_line("DPUB dpub 200", Some(b"later"));
    c.expect_ok();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let msg = c.message();
        if msg.body == "later" {
            assert!(sent.elapsed() >= Duration::from_millis(200));
        }
        bodies.push(msg.body);
    }
    bodies.sort();
    assert_eq!(bodies, ["later".to_owned(), "x".repeat(100)]);
}

#[test]
fn touch_extends_the_timeout() {
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "touch", "ch", 1);
    nsqd.publish("touch", "test body").unwrap();
    let msg = c.message();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        c.send(&Command::Touch(msg.id));
    }
    c.fin(msg.id);
    c.publish("sync", b"x");
    assert_eq!(
        c.next(),
        Frame::Response(Response::Ok),
        "no E_FIN_FAILED before the OK"
    );
    assert_eq!(nsqd.timed_out_count("touch", "ch"), 0);
    assert_eq!(nsqd.finished_count("touch", "ch"), 1);
}

#[test]
fn touch_is_bounded_by_max_msg_timeout() {
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_millis(300))
        .max_msg_timeout(Duration::from_millis(1200))
        .start()
        .unwrap();
    let mut c = consumer(nsqd.addr(), "touchmax", "ch", 1);
    nsqd.publish("touchmax", "body").unwrap();
    let first = c.message();
    let delivered = Instant::now();
    let again = loop {
        c.send(&Command::Touch(first.id));
        match c.read_within(Duration::from_millis(50)) {
            Got::Frame(Frame::Message(m)) => break m,
            Got::Frame(Frame::Error(e)) => assert_eq!(e.code, ErrorCode::TouchFailed),
            Got::Eof => panic!("closed"),
            _ => assert!(delivered.elapsed() < PATIENCE, "never timed out"),
        }
    };
    // Well past msg_timeout (touches worked), and the cap ended it (the loop never stopped
    // touching). The bound is a little under 1200 ms: `delivered` is taken on our side.
    assert!(delivered.elapsed() >= Duration::from_millis(1000));
    assert_eq!((again.id, again.attempts), (first.id, 2));
    assert_eq!(nsqd.timed_out_count("touchmax", "ch"), 1);
}

#[test]
fn max_rdy_count() {
    let nsqd = TestNsqd::builder().max_rdy_count(50).start().unwrap();
    let id = nsqd.publish("maxrdy", "test body").unwrap();
    let mut c = Raw::connect(nsqd.addr());
    assert_eq!(c.identify()["max_rdy_count"], 50);
    c.sub("maxrdy", "ch");
    c.rdy(50);
    assert_eq!(c.message().id, id);
    c.rdy(51);
    assert_eq!(c.fatal(), "E_INVALID RDY count 51 out of range 0-50");
}

#[test]
fn fatal_error_closes_the_connection() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.send_line("ASDF", None);
    assert_eq!(c.fatal(), "E_INVALID invalid command ASDF");
}

#[test]
fn output_buffering_validity() {
    let nsqd = TestNsqd::builder()
        .max_output_buffer_size(512 * 1024)
        .output_buffer_timeout_range(Duration::from_millis(25), Duration::from_secs(1))
        .start()
        .unwrap();
    let mut c = Raw::connect(nsqd.addr());
    let reply = json_of;
    let r = reply(
        c.identify_with(json!({"output_buffer_size": 524288, "output_buffer_timeout": 1000})),
    );
    assert_eq!(
        (
            r["output_buffer_size"].as_i64(),
            r["output_buffer_timeout"].as_i64()
        ),
        (Some(524288), Some(1000))
    );
    let r = reply(c.identify_with(json!({"output_buffer_size": -1, "output_buffer_timeout": -1})));
    assert_eq!(
        (
            r["output_buffer_size"].as_i64(),
            r["output_buffer_timeout"].as_i64()
        ),
        (Some(1), Some(0))
    );
    reply(c.identify_with(json!({"output_buffer_size": 0, "output_buffer_timeout": 0})));
    match c.identify_with(json!({"output_buffer_size": 524289, "output_buffer_timeout": 0})) {
        Frame::Error(e) => {
            assert_eq!(
                e.to_wire(),
                "E_BAD_BODY IDENTIFY output buffer size (524289) is invalid"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut c = Raw::connect(nsqd.addr());
    match c.identify_with(json!({"output_buffer_size": 0, "output_buffer_timeout": 1001})) {
        Frame::Error(e) => {
            assert_eq!(
                e.to_wire(),
                "E_BAD_BODY IDENTIFY output buffer timeout (1001) is invalid"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_msg_timeout_redelivers_with_one_more_attempt() {
    let nsqd = TestNsqd::start().unwrap();
    let id = nsqd.publish("cmsg", "x").unwrap();
    nsqd.publish("cmsg", "y").unwrap();
    let mut c = Raw::connect(nsqd.addr());
    let reply = c.identify_with(json!({"msg_timeout": 1000}));
    assert!(
        matches!(reply, Frame::Response(Response::Data(_))),
        "{reply:?}"
    );
    c.sub("cmsg", "ch");
    c.rdy(1);
    let msg = c.message();
    assert_eq!((msg.id, msg.attempts), (id, 1));
    c.rdy(0);
    assert!(nsqd.wait_until(PATIENCE, |n| n.timed_out_count("cmsg", "ch") == 1));
    assert_eq!(nsqd.requeued_count("cmsg", "ch"), 0);
    c.fin(msg.id);
    assert_eq!(
        c.error(),
        format!("E_FIN_FAILED FIN {id} failed ID not in flight")
    );
    c.rdy(2);
    let redelivered: Vec<_> = (0..2)
        .map(|_| c.message())
        .map(|m| (m.body, m.attempts))
        .collect();
    assert_eq!(redelivered, [("y".into(), 1), ("x".into(), 2)]);
}

#[test]
fn bad_fin_and_foreign_fin() {
    let nsqd = TestNsqd::start().unwrap();
    let mut owner = consumer(nsqd.addr(), "fin", "ch", 1);
    let mut other = consumer(nsqd.addr(), "fin", "ch", 0);
    nsqd.publish("fin", "x").unwrap();
    let msg = owner.message();
    other.fin(msg.id);
    assert_eq!(
        other.error(),
        format!(
            "E_FIN_FAILED FIN {} failed client does not own message",
            msg.id
        )
    );
    other.send_line("FIN ", None);
    assert_eq!(other.fatal(), "E_INVALID invalid message ID");
    owner.fin(msg.id);
    assert!(nsqd.wait_until(PATIENCE, |n| n.finished_count("fin", "ch") == 1));
}

#[test]
fn req_timeout_is_clamped_not_refused() {
    let nsqd = TestNsqd::builder()
        .max_req_timeout(Duration::from_secs(60))
        .start()
        .unwrap();
    let id = nsqd.publish("req", "test body").unwrap();
    let mut c = consumer(nsqd.addr(), "req", "ch", 1);
    assert_eq!(c.message().id, id);
    c.send_line(&format!("REQ {id} 0"), None);
    let again = c.message();
    assert_eq!((again.id, again.attempts), (id, 2));
    c.send_line(&format!("REQ {id} 120000"), None);
    c.publish("sync", b"x");
    c.expect_ok();
    assert_eq!(
        (nsqd.deferred("req", "ch"), nsqd.requeued_count("req", "ch")),
        (1, 2)
    );
    c.send_line(&format!("REQ {id} -1"), None);
    assert_eq!(c.fatal(), "E_INVALID REQ could not parse timeout -1");
}

#[test]
fn channel_and_topic_names() {
    let nsqd = TestNsqd::start().unwrap();
    for (topic, channel) in [
        ("test", "test-with_period."),
        ("test#ephemeral", "ch#ephemeral"),
    ] {
        consumer(nsqd.addr(), topic, channel, 0);
    }
    let mut c = Raw::connect(nsqd.addr());
    c.identify();
    c.send_line("SUB test:ephemeral ch", None);
    assert_eq!(
        c.fatal(),
        r#"E_BAD_TOPIC SUB topic name "test:ephemeral" is not valid"#
    );
    let mut c = Raw::connect(nsqd.addr());
    c.identify();
    c.send_line(&format!("SUB t {}", "c".repeat(65)), None);
    assert_eq!(code(&c.fatal()), ErrorCode::BadChannel);
    let mut c = Raw::connect(nsqd.addr());
    c.send_line("MPUB a:b", None);
    assert_eq!(
        c.fatal(),
        r#"E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "a:b" is not valid"#
    );
}

#[test]
fn cls_answers_close_wait_then_ignores_rdy() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = consumer(nsqd.addr(), "cls", "ch", 1);
    nsqd.publish("cls", "in flight").unwrap();
    let msg = c.message();
    c.send(&Command::Cls);
    assert_eq!(c.next(), Frame::Response(Response::CloseWait));
    assert_eq!(nsqd.clients()[0].state, ClientState::Closing);
    c.rdy(10);
    nsqd.publish("cls", "not delivered").unwrap();
    c.fin(msg.id);
    c.expect_quiet(Duration::from_millis(150));
    assert_eq!(
        (nsqd.finished_count("cls", "ch"), nsqd.depth("cls", "ch")),
        (1, 1)
    );
    c.send(&Command::Cls);
    assert_eq!(c.fatal(), "E_INVALID cannot CLS in current state");
}

#[test]
fn state_rules() {
    let nsqd = TestNsqd::start().unwrap();
    for (line, expected) in [
        ("RDY 1", "E_INVALID cannot RDY in current state"),
        (
            "FIN 0123456789abcdef",
            "E_INVALID cannot FIN in current state",
        ),
        (
            "REQ 0123456789abcdef 0",
            "E_INVALID cannot REQ in current state",
        ),
        (
            "TOUCH 0123456789abcdef",
            "E_INVALID cannot TOUCH in current state",
        ),
        ("SUB t", "E_INVALID SUB insufficient number of parameters"),
        ("PUB", "E_INVALID PUB insufficient number of parameters"),
        ("DPUB t", "E_INVALID DPUB insufficient number of parameters"),
        ("AUTH x", "E_INVALID AUTH invalid number of parameters"),
    ] {
        let mut c = Raw::connect(nsqd.addr());
        c.send_line(line, None);
        assert_eq!(c.fatal(), expected, "{line}");
    }
    let mut c = consumer(nsqd.addr(), "t", "c", 0);
    c.send_line("SUB t c", None);
    assert_eq!(c.fatal(), "E_INVALID cannot SUB in current state");
    let mut c = consumer(nsqd.addr(), "t", "c", 0);
    c.send_line("IDENTIFY", Some(b"{}"));
    assert_eq!(c.fatal(), "E_INVALID cannot IDENTIFY in current state");
}

#[test]
fn identify_negotiation() {
    let nsqd = TestNsqd::builder()
        .msg_timeout(Duration::from_secs(5))
        .start()
        .unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.send_line("IDENTIFY", Some(br#"{"client_id":"old"}"#));
    c.expect_ok(); // no feature_negotiation: a plain OK
    let r = Raw::connect(nsqd.addr()).identify();
    assert_eq!(r["version"], "1.3.0");
    assert_eq!(
        (r["msg_timeout"].as_i64(), r["max_msg_timeout"].as_i64()),
        (Some(5000), Some(900_000))
    );
    assert_eq!(
        (
            r["auth_required"].as_bool(),
            r["max_deflate_level"].as_i64()
        ),
        (Some(false), Some(6))
    );
    let mut c = Raw::connect(nsqd.addr());
    match c.identify_with(json!({"snappy": true, "deflate": true})) {
        Frame::Error(e) => assert_eq!(
            e.to_wire(),
            "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
        ),
        other => panic!("{other:?}"),
    }
    c.expect_closed();
    let mut c = Raw::connect(nsqd.addr());
    c.send_line("IDENTIFY", Some(b"not json"));
    assert_eq!(c.fatal(), "E_BAD_BODY IDENTIFY failed to decode JSON body");
    let mut c = Raw::connect(nsqd.addr());
    c.send_line("IDENTIFY", Some(&[]));
    assert_eq!(c.fatal(), "E_BAD_BODY IDENTIFY invalid body size 0");
}

#[test]
fn bad_magic_is_refused() {
    let nsqd = TestNsqd::start().unwrap();
    let mut c = Raw::connect_without_magic(nsqd.addr());
    c.send_bytes(b"  V1");
    assert_eq!(c.fatal(), "E_BAD_PROTOCOL");
}

#[test]
fn tls_required_refuses_everything_but_identify() {
    let nsqd = TestNsqd::builder()
        .tls(true)
        .tls_required(true)
        .start()
        .unwrap();
    let mut c = Raw::connect(nsqd.addr());
    c.identify();
    c.send_line("SUB t c", None);
    assert_eq!(
        c.fatal(),
        "E_INVALID cannot SUB in current state (TLS required)"
    );
    assert!(TestNsqd::builder().tls_required(true).start().is_err());
}

#[test]
fn max_channel_consumers() {
    let nsqd = TestNsqd::builder()
        .max_channel_consumers(1)
        .start()
        .unwrap();
    let _first = consumer(nsqd.addr(), "t", "c", 0);
    let mut second = Raw::connect(nsqd.addr());
    second.identify();
    second.send_line("SUB t c", None);
    assert_eq!(
        second.fatal(),
        "E_SUB_FAILED SUB failed consumers for t:c exceeds limit of 1"
    );
}
