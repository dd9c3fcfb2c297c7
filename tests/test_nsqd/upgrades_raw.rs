//! IDENTIFY's connection upgrades byte by byte, as `nsqd/protocol_v2.go` performs them: the
//! JSON reply in plaintext, then TLS and an `OK` through it, then snappy or deflate and an
//! `OK` through that.

use std::io::Write;

use actix_nsq::{
    protocol::{Frame, Response},
    testing::{ClientInfo, TestNsqd, TestNsqdBuilder},
};
use serde_json::{json, Value};

use crate::{
    layers::{self, DEFLATE_SYNC_MARKER, SNAPPY_STREAM_IDENTIFIER},
    raw::{json_of, Got, Raw, PATIENCE},
};

fn only_client(nsqd: &TestNsqd) -> ClientInfo {
    let clients = nsqd.clients();
    assert_eq!(clients.len(), 1, "{clients:?}");
    clients.into_iter().next().unwrap()
}

fn identify(raw: &mut Raw, extra: Value) -> Value {
    json_of(raw.identify_with(extra))
}

/// The features of an IDENTIFY reply: tls_v1, snappy, deflate, deflate_level,
/// max_deflate_level.
fn features(reply: &Value) -> (bool, bool, bool, i64, i64) {
    (
        reply["tls_v1"].as_bool().unwrap(),
        reply["snappy"].as_bool().unwrap(),
        reply["deflate"].as_bool().unwrap(),
        reply["deflate_level"].as_i64().unwrap(),
        reply["max_deflate_level"].as_i64().unwrap(),
    )
}

/// Publishes over `raw` and checks that nsqd took it: the connection works both ways.
fn publish_works(raw: &mut Raw, nsqd: &TestNsqd, topic: &str) {
    let before = nsqd.topic_depth(topic);
    raw.publish(topic, b"through the layers");
    raw.expect_ok();
    assert_eq!(nsqd.topic_depth(topic), before + 1);
}

#[test]
fn tls_is_granted_only_when_asked_for_and_configured() {
    let tls = TestNsqd::builder().tls(true).start().unwrap();
    let mut raw = Raw::connect(tls.addr());
    assert_eq!(
        features(&identify(&mut raw, json!({}))),
        (false, false, false, 6, 6)
    );
    publish_works(&mut raw, &tls, "plain");
    assert!(!only_client(&tls).tls);

    // nsqd without a certificate says no and goes on in plaintext.
    let plain = TestNsqd::start().unwrap();
    let mut raw = Raw::connect(plain.addr());
    let reply = identify(&mut raw, json!({"tls_v1": true}));
    assert_eq!(features(&reply), (false, false, false, 6, 6));
    publish_works(&mut raw, &plain, "plain");
}

#[test]
fn without_feature_negotiation_nothing_is_upgraded() {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let body = json!({"tls_v1": true, "snappy": true}).to_string();
    raw.send_line("IDENTIFY", Some(body.as_bytes()));
    raw.expect_ok();
    publish_works(&mut raw, &nsqd, "legacy");
    let info = only_client(&nsqd);
    assert!(!info.tls && !info.snappy);
}

#[test]
fn disabled_compressions_are_refused_quietly() {
    let nsqd = TestNsqd::builder()
        .snappy(false)
        .deflate(false)
        .start()
        .unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let reply = identify(&mut raw, json!({"snappy": true}));
    assert_eq!(features(&reply), (false, false, false, 6, 6));
    publish_works(&mut raw, &nsqd, "t");
    let mut raw = Raw::connect(nsqd.addr());
    let reply = identify(&mut raw, json!({"deflate": true, "deflate_level": 9}));
    assert_eq!(features(&reply), (false, false, false, 6, 6));
    publish_works(&mut raw, &nsqd, "t");
}

#[test]
fn asking_for_both_compressions_is_fatal() {
    let nsqd = TestNsqd::start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let body = json!({"feature_negotiation": true, "snappy": true, "deflate": true});
    raw.send_line("IDENTIFY", Some(body.to_string().as_bytes()));
    assert_eq!(
        raw.fatal(),
        "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
    );
    // With snappy off on the server, the same request is deflate alone.
    let nsqd = TestNsqd::builder().snappy(false).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let reply = identify(&mut raw, json!({"snappy": true, "deflate": true}));
    assert_eq!(features(&reply), (false, false, true, 6, 6));
    raw.upgrade_deflate();
    raw.expect_ok();
}

/// A JSON frame followed by a complete snappy stream identifier and first chunk.
pub(crate) fn json_then_snappy_chunk(buf: &[u8]) -> bool {
    let Some(rest) = past_first_frame(buf) else {
        return false;
    };
    if rest.len() < SNAPPY_STREAM_IDENTIFIER.len() + 4 {
        return false;
    }
    let chunk = &rest[SNAPPY_STREAM_IDENTIFIER.len()..];
    let len = usize::from(chunk[1]) | usize::from(chunk[2]) << 8 | usize::from(chunk[3]) << 16;
    chunk.len() >= 4 + len
}

pub(crate) fn past_first_frame(buf: &[u8]) -> Option<&[u8]> {
    let size = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    buf.get(4 + size..)
}

#[test]
fn snappy_ok_follows_the_json_reply_without_waiting_for_the_client() {
    let nsqd = TestNsqd::start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let body = json!({"feature_negotiation": true, "snappy": true}).to_string();
    raw.send_line("IDENTIFY", Some(body.as_bytes()));
    // Everything up to the compressed OK is read before any of it is decoded.
    raw.read_until(json_then_snappy_chunk);
    let reply = json_of(raw.next());
    assert_eq!(features(&reply), (false, true, false, 6, 6));
    assert!(raw.pending().starts_with(SNAPPY_STREAM_IDENTIFIER));
    raw.upgrade_snappy();
    assert_eq!(raw.frame(), Frame::Response(Response::Ok));
    assert_eq!(raw.layers.snappy().chunk_types.len(), 2);
    let info = only_client(&nsqd);
    assert!(info.snappy && !info.deflate && !info.tls);
    publish_works(&mut raw, &nsqd, "snappy");
}

#[test]
fn deflate_ok_is_sync_flushed_right_behind_the_json_reply() {
    let nsqd = TestNsqd::start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let body = json!({"feature_negotiation": true, "deflate": true}).to_string();
    raw.send_line("IDENTIFY", Some(body.as_bytes()));
    raw.read_until(|buf| {
        past_first_frame(buf).is_some_and(|rest| rest.ends_with(DEFLATE_SYNC_MARKER))
    });
    let reply = json_of(raw.next());
    // No level asked for: nsqd's default 6.
    assert_eq!(features(&reply), (false, false, true, 6, 6));
    raw.upgrade_deflate();
    assert_eq!(raw.frame(), Frame::Response(Response::Ok));
    let info = only_client(&nsqd);
    assert!(info.deflate && !info.snappy);
    assert_eq!(info.deflate_level, 6);
    publish_works(&mut raw, &nsqd, "deflate");
    assert!(raw
        .layers
        .deflate()
        .compressed
        .ends_with(DEFLATE_SYNC_MARKER));
}

#[test]
fn the_deflate_level_is_clamped_to_max_deflate_level() {
    let nsqd = TestNsqd::builder().max_deflate_level(2).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let reply = identify(&mut raw, json!({"deflate": true, "deflate_level": 9}));
    assert_eq!(features(&reply), (false, false, true, 2, 2));
    raw.upgrade_deflate();
    raw.expect_ok();
    assert_eq!(only_client(&nsqd).deflate_level, 2);
    publish_works(&mut raw, &nsqd, "clamped");
}

#[test]
fn tls_then_an_ok_through_tls() {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let reply = identify(&mut raw, json!({"tls_v1": true}));
    assert_eq!(features(&reply), (true, false, false, 6, 6));
    // Nothing follows the JSON in plaintext: the OK waits for the handshake.
    assert!(raw.pending().is_empty());
    raw.upgrade_tls(false).unwrap();
    assert_eq!(raw.frame(), Frame::Response(Response::Ok));
    let info = only_client(&nsqd);
    assert!(info.tls && !info.snappy && !info.deflate);
    publish_works(&mut raw, &nsqd, "tls");
}

fn tls_and(compression: Value, builder: TestNsqdBuilder) -> (TestNsqd, Raw) {
    let nsqd = builder.tls(true).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let mut extra = compression;
    extra["tls_v1"] = json!(true);
    let reply = identify(&mut raw, extra);
    assert!(reply["tls_v1"].as_bool().unwrap());
    raw.upgrade_tls(false).unwrap();
    // The first OK is encrypted but not compressed.
    raw.expect_ok();
    (nsqd, raw)
}

#[test]
fn tls_then_snappy_each_with_its_ok_and_heartbeats_after() {
    let extra = json!({"snappy": true, "heartbeat_interval": 1000});
    let (nsqd, mut raw) = tls_and(extra, TestNsqd::builder());
    raw.upgrade_snappy();
    raw.expect_ok();
    let info = only_client(&nsqd);
    assert!(info.tls && info.snappy);
    // The writer that took over after the upgrades compresses and flushes too.
    assert_eq!(raw.frame(), Frame::Response(Response::Heartbeat));
    publish_works(&mut raw, &nsqd, "tls-snappy");
}

#[test]
fn tls_then_deflate_at_the_level_asked_for() {
    let extra = json!({"deflate": true, "deflate_level": 1});
    let (nsqd, mut raw) = tls_and(extra, TestNsqd::builder());
    raw.upgrade_deflate();
    raw.expect_ok();
    let info = only_client(&nsqd);
    assert!(info.tls && info.deflate);
    assert_eq!(info.deflate_level, 1);
    publish_works(&mut raw, &nsqd, "tls-deflate");
}

#[test]
fn a_client_hello_sent_with_identify_reaches_the_tls_layer() {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    let mut tls = layers::tls_client(false);
    let mut wire = b"IDENTIFY\n".to_vec();
    let body = json!({"feature_negotiation": true, "tls_v1": true}).to_string();
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(body.as_bytes());
    tls.write_tls(&mut wire).unwrap();
    // One write: the server reads the ClientHello with the IDENTIFY body.
    raw.send_wire(&wire);
    assert!(json_of(raw.next())["tls_v1"].as_bool().unwrap());
    raw.finish_tls(tls).unwrap();
    raw.expect_ok();
    publish_works(&mut raw, &nsqd, "pipelined");
}

#[test]
fn commands_compressed_and_sent_with_identify_are_read_after_the_upgrade() {
    let nsqd = TestNsqd::start().unwrap();
    for (extra, topic) in [
        (json!({"snappy": true}), "early-snappy"),
        (json!({"deflate": true}), "early-deflate"),
    ] {
        let mut raw = Raw::connect(nsqd.addr());
        let mut body = json!({"feature_negotiation": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let body = body.to_string();
        let mut wire = b"IDENTIFY\n".to_vec();
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(body.as_bytes());
        let publish = format!("PUB {topic}\n\x00\x00\x00\x05early");
        wire.extend_from_slice(&compress(extra["snappy"] == true, publish.as_bytes()));
        raw.send_wire(&wire);
        let _ = json_of(raw.next());
        if extra["snappy"] == true {
            raw.upgrade_snappy();
        } else {
            raw.upgrade_deflate();
        }
        raw.expect_ok(); // the upgrade
        raw.expect_ok(); // the PUB
        assert_eq!(nsqd.topic_depth(topic), 1);
    }
}

fn compress(snappy: bool, plain: &[u8]) -> Vec<u8> {
    if snappy {
        let mut encoder = snap::write::FrameEncoder::new(Vec::new());
        encoder.write_all(plain).unwrap();
        encoder.into_inner().unwrap()
    } else {
        let level = flate2::Compression::new(6);
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), level);
        encoder.write_all(plain).unwrap();
        encoder.flush().unwrap();
        encoder.get_mut().split_off(0)
    }
}

#[test]
fn tls_required_refuses_every_command_but_identify_before_tls() {
    let nsqd = TestNsqd::builder()
        .tls(true)
        .tls_required(true)
        .start()
        .unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    raw.send_line("PUB t", Some(b"x"));
    assert_eq!(
        raw.fatal(),
        "E_INVALID cannot PUB in current state (TLS required)"
    );

    let mut raw = Raw::connect(nsqd.addr());
    assert!(!identify(&mut raw, json!({}))["tls_v1"].as_bool().unwrap());
    raw.send_line("SUB t ch", None);
    assert_eq!(
        raw.fatal(),
        "E_INVALID cannot SUB in current state (TLS required)"
    );

    let mut raw = Raw::connect(nsqd.addr());
    assert!(identify(&mut raw, json!({"tls_v1": true}))["tls_v1"]
        .as_bool()
        .unwrap());
    raw.upgrade_tls(false).unwrap();
    raw.expect_ok();
    raw.sub("t", "ch");
    assert_eq!(nsqd.channels("t"), ["ch"]);
}

#[test]
fn client_auth_needs_a_certificate_signed_by_the_test_ca() {
    let nsqd = TestNsqd::builder()
        .tls(true)
        .tls_client_auth(true)
        .start()
        .unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    identify(&mut raw, json!({"tls_v1": true}));
    raw.upgrade_tls(true).unwrap();
    raw.expect_ok();
    publish_works(&mut raw, &nsqd, "mutual");
    drop(raw);
    assert!(nsqd.wait_until(PATIENCE, |n| n.clients().is_empty()));

    let mut raw = Raw::connect(nsqd.addr());
    identify(&mut raw, json!({"tls_v1": true}));
    // TLS 1.3: the client's side of the handshake completes; the refusal is an alert.
    raw.upgrade_tls(false).unwrap();
    match raw.read_within(PATIENCE) {
        Got::Broken(e) => assert!(e.contains("CertificateRequired"), "{e}"),
        other => panic!("expected the server to refuse, got {other:?}"),
    }
    assert!(nsqd.wait_until(PATIENCE, |n| n.clients().is_empty()));
    assert_eq!(nsqd.topic_depth("mutual"), 1);
}

#[test]
fn a_failed_tls_handshake_drops_the_connection() {
    let nsqd = TestNsqd::builder().tls(true).start().unwrap();
    let mut raw = Raw::connect(nsqd.addr());
    identify(&mut raw, json!({"tls_v1": true}));
    raw.send_wire(b"NOP\n");
    let rest = raw.read_to_eof();
    // At most a TLS alert record (content type 21); never a frame in plaintext.
    assert!(rest.is_empty() || rest[0] == 21, "{rest:?}");
    assert!(nsqd.wait_until(PATIENCE, |n| n.clients().is_empty()));
}
