//! Conformance against a real nsqd: every input goes to the nsqd named by
//! `ACTIX_NSQ_LIVE_NSQD` (TCP `host:port`; `ACTIX_NSQ_LIVE_NSQD_HTTP` optionally names its
//! HTTP listener, used to delete the topics a run creates) AND to the in-process `TestNsqd`,
//! and the two must answer with the same frames, `E_*` texts and closes. CI has no nsqd, so
//! every test is `#[ignore]`d (cargo counts it as not run); run them against nsqd v1.3.0 with
//! the command below. Asked to run without the variable, a test fails: it never passes unrun.
//!
//! ```text
//! ACTIX_NSQ_LIVE_NSQD=127.0.0.1:4150 ACTIX_NSQ_LIVE_NSQD_HTTP=127.0.0.1:4151 \
//!     cargo test --all-features --test live_nsqd -- --nocapture --ignored
//! ```
//!
//! Each test prints its table (input | real nsqd | test nsqd | same). Inputs are scripts
//! (see `support::script`): `SUB $t ch; RDY 2501` is two command lines on one connection,
//! `$t` being a topic unique to the run. A transcript ends with `<closed>` when nsqd closed
//! the connection and `<open>` when it stayed silent.
#![allow(clippy::print_stdout)]

#[path = "support/live.rs"]
mod support;

macro_rules! live_targets {
    () => {
        $crate::support::targets()
    };
}

#[path = "live_nsqd/client.rs"]
mod client;
#[path = "live_nsqd/flows.rs"]
mod flows;

use support::{assert_same, compare, scripts, topic, Target};

/// Runs scripts on both servers and requires the same answers.
async fn check(targets: &[Target; 2], prefix: &str, texts: &[&str]) {
    let t = topic(targets, prefix);
    assert_same(&compare(targets, &scripts(&t, texts)).await);
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn identify_replies() {
    let targets = live_targets!();
    check(
        &targets,
        "live_identify",
        &[
            "IDENTIFY <json>",
            "IDENTIFY <json feature_negotiation=false>",
            "IDENTIFY <json msg_timeout=5000 sample_rate=42 output_buffer_size=-1 heartbeat_interval=-1 deflate_level=3>",
            "IDENTIFY <json output_buffer_timeout=-1 output_buffer_size=0>",
            "IDENTIFY <json tls_v1=true>",
            "IDENTIFY <json heartbeat_interval=999>",
            "IDENTIFY <json heartbeat_interval=60001>",
            "IDENTIFY <json output_buffer_size=63>",
            "IDENTIFY <json output_buffer_size=65537>",
            "IDENTIFY <json output_buffer_timeout=24>",
            "IDENTIFY <json sample_rate=100>",
            "IDENTIFY <json sample_rate=-1>",
            "IDENTIFY <json msg_timeout=999>",
            "IDENTIFY <json msg_timeout=-1>",
            "IDENTIFY <json msg_timeout=900001>",
            "IDENTIFY <json snappy=true deflate=true>",
            "IDENTIFY <json>; IDENTIFY <json>",
            "PUB $t <body x>; IDENTIFY <json>",
            "IDENTIFY <size 0>",
            "IDENTIFY <size 5242881>",
            "IDENTIFY <body not json>",
            "IDENTIFY <body {}>",
            "IDENTIFY <body  {} >",
            "IDENTIFY <body {}x>",
            "IDENTIFY <body \"text\">",
            "IDENTIFY <body {\"client_id\":5}>",
            "IDENTIFY <body {\"msg_timeout\":1000.0}>",
            "IDENTIFY <body {\"heartbeat_interval\":9223372036854775808}>",
            "IDENTIFY <body {\"feature_negotiation\":true,\"extra\":{\"nested\":[1,2]}}>",
        ],
    )
    .await;
}

/// JSON that Go's `encoding/json` decodes more leniently than a strict serde decoder would:
/// the test nsqd follows Go.
#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn identify_json_decoding_follows_go() {
    let targets = live_targets!();
    check(
        &targets,
        "live_identify_json",
        &[
            "IDENTIFY <body null>",
            "IDENTIFY <body []>",
            "IDENTIFY <body {\"feature_negotiation\":true,\"msg_timeout\":null}>",
            "IDENTIFY <body {\"feature_negotiation\":true,\"sample_rate\":10,\"sample_rate\":20}>",
            "IDENTIFY <body {\"Feature_Negotiation\":true,\"SAMPLE_RATE\":10}>",
            "IDENTIFY <body {\"feature_negotiation\":true,\"sample_rate\":4294967296}>",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn magic_and_command_lines() {
    let targets = live_targets!();
    let mut rows = flows::magic_rows(&targets).await;
    let t = topic(&targets, "live_lines");
    let cases = scripts(
        &t,
        &[
            "FOO", "", "nop", "NOP\r", "NOP a b", "NOP ", "PUB\t$t", "PUB  $t", "CLS",
        ],
    );
    rows.extend(compare(&targets, &cases).await);
    let long = vec![b'N'; 16 * 1024];
    let mut fits = b"NOP ".to_vec();
    fits.resize(16 * 1024 - 1, b'x');
    fits.push(b'\n');
    fits.extend_from_slice(b"CLS\n");
    let raw = [
        ("16384 bytes without a newline".to_owned(), long),
        ("NOP <16379 x> (a 16384-byte line); CLS".to_owned(), fits),
        ("SUB bad\\x01 ch".to_owned(), b"SUB bad\x01 ch\n".to_vec()),
        ("SUB bad\\xff ch".to_owned(), b"SUB bad\xff ch\n".to_vec()),
    ];
    rows.extend(compare(&targets, &raw).await);
    assert_same(&rows);
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn auth_against_an_nsqd_without_auth() {
    let targets = live_targets!();
    check(
        &targets,
        "live_auth",
        &[
            "IDENTIFY <json>; AUTH <body secret>",
            "AUTH <body secret>",
            "AUTH <size 0>",
            "AUTH <size 5242881>",
            "AUTH x <body secret>",
            "SUB $t ch; AUTH <body secret>",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn topic_and_channel_names() {
    let targets = live_targets!();
    let long = "x".repeat(65);
    let longest = format!("{}#ephemeral", "x".repeat(54));
    let texts = [
        "SUB bad*topic ch".to_owned(),
        "SUB $t bad*ch".to_owned(),
        format!("SUB {long} ch"),
        format!("SUB $t {longest}; CLS"),
        "SUB  ch".to_owned(),
        "SUB $t".to_owned(),
        "SUB".to_owned(),
        "SUB t#ephemeral#ephemeral ch".to_owned(),
        "SUB #ephemeral ch".to_owned(),
        "SUB $t ch extra; CLS".to_owned(),
        "SUB $t#ephemeral ch#ephemeral; CLS".to_owned(),
        "PUB tópico".to_owned(),
        "PUB bad*topic".to_owned(),
        "PUB".to_owned(),
        "MPUB bad*topic".to_owned(),
        "MPUB".to_owned(),
        "DPUB bad*topic 0".to_owned(),
        "DPUB $t".to_owned(),
    ];
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    check(&targets, "live_names", &texts).await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn pub_and_dpub_bodies() {
    let targets = live_targets!();
    check(
        &targets,
        "live_pub",
        &[
            "PUB $t <size 0>",
            "PUB $t <size -1>",
            "PUB $t <size 1048577>",
            "PUB $t <bytes 1048576>",
            "PUB $t extra <body x>",
            "PUB $t <size 5>",
            "DPUB $t 0 <size 0>",
            "DPUB $t 0 <size 1048577>",
            "DPUB $t 0 <body x>",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn mpub_errors() {
    let targets = live_targets!();
    check(
        &targets,
        "live_mpub",
        &[
            "MPUB $t <size 0>",
            "MPUB $t <size -1>",
            "MPUB $t <size 5242881>",
            "MPUB $t <size 4> <size 0>",
            "MPUB $t <size 4> <size -1>",
            "MPUB $t <size 100> <size 1048576>",
            "MPUB $t <size 8> <size 1> <size 0>",
            "MPUB $t <size 13> <size 2> <body a> <size 0>",
            "MPUB $t <size 12> <size 1> <size 1048577>",
            "MPUB $t <size 14> <size 2> <body a> <body b>",
            "MPUB $t <size 100> <size 1> <body hi>",
            "MPUB $t <size 4> <size 1> <body hi>",
            "MPUB $t <size 14> <size 2> <body a>",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn dpub_delay_range() {
    let targets = live_targets!();
    check(
        &targets,
        "live_dpub",
        &[
            "DPUB $t 3600001",
            "DPUB $t -1",
            "DPUB $t abc",
            "DPUB $t 3600000 <body x>",
            "DPUB $t  <body x>",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn rdy_range_and_state() {
    let targets = live_targets!();
    check(
        &targets,
        "live_rdy",
        &[
            "SUB $t ch; RDY 2501",
            "SUB $t ch; RDY -1",
            "SUB $t ch; RDY +5",
            "SUB $t ch; RDY abc",
            "SUB $t ch; RDY 2500; CLS",
            "SUB $t ch; RDY 05; CLS",
            "SUB $t ch; RDY 1 2; CLS",
            "SUB $t ch; RDY; CLS",
            "RDY 1",
            "SUB $t ch; CLS; RDY 5",
            "SUB $t ch; SUB $t ch",
            "SUB $t ch; IDENTIFY <json>",
            "IDENTIFY <json heartbeat_interval=-1>; SUB $t ch",
        ],
    )
    .await;
}

/// Go's `ByteToBase10` wraps around on overflow instead of failing.
#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn rdy_counts_wrap_around_as_in_go() {
    let targets = live_targets!();
    check(
        &targets,
        "live_rdy_overflow",
        &[
            "SUB $t ch; RDY 18446744073709551617; CLS",
            "SUB $t ch; RDY 99999999999999999999",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn fin_req_touch_errors() {
    let targets = live_targets!();
    check(
        &targets,
        "live_fin",
        &[
            "FIN 0123456789abcdef",
            "REQ 0123456789abcdef 0",
            "TOUCH 0123456789abcdef",
            "SUB $t ch; FIN abc",
            "SUB $t ch; FIN 0123456789abcdef0",
            "SUB $t ch; FIN",
            "SUB $t ch; FIN 0123456789abcdef; CLS",
            "SUB $t ch; CLS; FIN 0123456789abcdef",
            "SUB $t ch; REQ 0123456789abcdef 0; CLS",
            "SUB $t ch; REQ 0123456789abcdef abc",
            "SUB $t ch; REQ 0123456789abcdef -1",
            "SUB $t ch; REQ 0123456789abcdef",
            "SUB $t ch; REQ abc 0",
            "SUB $t ch; TOUCH 0123456789abcdef; CLS",
            "SUB $t ch; TOUCH abc",
            "SUB $t ch; TOUCH",
        ],
    )
    .await;
}

#[actix_rt::test]
#[ignore = "needs a real nsqd: ACTIX_NSQ_LIVE_NSQD=host:port; run with --ignored"]
async fn cls_answers_close_wait() {
    let targets = live_targets!();
    check(
        &targets,
        "live_cls",
        &[
            "CLS",
            "SUB $t ch; CLS",
            "SUB $t ch; CLS; CLS",
            "SUB $t ch; CLS; SUB $t ch",
            "SUB $t ch; CLS; RDY 5; PUB $t <body x>",
        ],
    )
    .await;
}
