//! Property tests for the codecs: whatever is encoded decodes to the same values however the
//! bytes are split across reads, and no input makes a decoder panic. The fuzz targets of
//! `fuzz/` (client decoder, IDENTIFY reply, lookupd answer) run here too, on proptest inputs and
//! on their committed corpus: CI runs these, `cargo fuzz` runs the same functions for longer.

use std::time::Duration;

use actix_nsq::protocol::{ErrorCode, Frame, Message, MessageId, NsqCodec, Response, ServerError};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio_util::codec::Decoder;

#[allow(unreachable_pub, dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

fn message_id() -> impl Strategy<Value = MessageId> {
    proptest::array::uniform16(0x21u8..=0x7e).prop_map(|b| MessageId::new(b).unwrap())
}

fn body() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    let code = prop_oneof![
        Just(ErrorCode::Invalid),
        Just(ErrorCode::FinFailed),
        Just(ErrorCode::BadTopic),
        "E_[A-Z_]{1,12}".prop_map(|c| ErrorCode::parse(&c)),
    ];
    prop_oneof![
        Just(Frame::Response(Response::Ok)),
        Just(Frame::Response(Response::Heartbeat)),
        Just(Frame::Response(Response::CloseWait)),
        body().prop_map(|b| Frame::Response(Response::parse(b))),
        (code, "[ -~]{0,40}").prop_map(|(c, m)| Frame::Error(ServerError::new(c, m))),
        (any::<i64>(), any::<u16>(), message_id(), body())
            .prop_map(|(ts, at, id, b)| Frame::Message(Message::new(id, ts, at, b))),
    ]
}

/// Splits `bytes` at the given cut points and feeds the chunks one by one to `decode`.
fn feed_in_chunks<T>(
    bytes: &[u8],
    cuts: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Option<T>,
) -> Vec<T> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    for end in points {
        buf.extend_from_slice(&bytes[start..end]);
        start = end;
        while let Some(item) = decode(&mut buf) {
            out.push(item);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

proptest! {
    #[test]
    fn frames_survive_any_split(frames in proptest::collection::vec(frame(), 1..20),
                                cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        let mut bytes = BytesMut::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let mut codec = NsqCodec::default();
        let decoded = feed_in_chunks(&bytes, &cuts, |buf| codec.decode(buf).unwrap());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_client_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                                      max in 0usize..4096) {
        let mut codec = NsqCodec::new(max);
        let mut buf = BytesMut::from(&bytes[..]);
        // Every call either yields a frame (consuming bytes), asks for more, or fails.
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        let _ = codec.decode_eof(&mut buf);
    }

}

/// nsqd's side of the codec is public with feature `testing` only (CI runs `--all-features`).
#[cfg(feature = "testing")]
mod server_side {
    use actix_nsq::protocol::{
        command_has_body, Batch, Body, Channel, Command, Inbound, ServerCodec, Topic,
    };

    use super::*;

    fn name() -> impl Strategy<Value = String> + Clone {
        "[.a-zA-Z0-9_-]{1,54}(#ephemeral)?"
    }

    fn non_empty_body() -> impl Strategy<Value = Body> {
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(|b| Body::new(b).unwrap())
    }

    fn command() -> impl Strategy<Value = Command> {
        let topic = || name().prop_map(|n| Topic::new(n).unwrap());
        let channel = name().prop_map(|n| Channel::new(n).unwrap());
        prop_oneof![
            (topic(), channel).prop_map(|(topic, channel)| Command::Sub { topic, channel }),
            any::<u32>().prop_map(Command::Rdy),
            message_id().prop_map(Command::Fin),
            message_id().prop_map(Command::Touch),
            (message_id(), 0u64..10_000_000).prop_map(|(id, ms)| Command::Req {
                id,
                delay: Duration::from_millis(ms)
            }),
            Just(Command::Cls),
            Just(Command::Nop),
            body().prop_map(Command::Auth),
            (topic(), non_empty_body()).prop_map(|(topic, body)| Command::Pub { topic, body }),
            (topic(), 0u64..3_600_000, non_empty_body()).prop_map(|(topic, ms, body)| {
                Command::Dpub {
                    topic,
                    delay: Duration::from_millis(ms),
                    body,
                }
            }),
            (topic(), proptest::collection::vec(non_empty_body(), 1..8)).prop_map(|(topic, b)| {
                Command::Mpub {
                    topic,
                    bodies: Batch::from_bodies(b).unwrap(),
                }
            }),
        ]
    }

    /// Reassembles server-side items into (line, body) pairs the way nsqd reads them.
    fn server_decode(
        codec: &mut ServerCodec,
        buf: &mut BytesMut,
        pending: &mut Option<Bytes>,
    ) -> Option<(Bytes, Option<Bytes>)> {
        loop {
            match codec.decode(buf).unwrap()? {
                Inbound::Line(line) => {
                    let name = ServerCodec::params(&line)[0].to_vec();
                    if command_has_body(&name) {
                        *pending = Some(line);
                        codec.read_body_size();
                    } else {
                        return Some((line, None));
                    }
                }
                Inbound::BodySize(size) => codec.read_body(usize::try_from(size).unwrap()),
                Inbound::Body(body) => return Some((pending.take().unwrap(), Some(body))),
                _ => unreachable!(),
            }
        }
    }

    proptest! {
        #[test]
        fn commands_survive_any_split(commands in proptest::collection::vec(command(), 1..20),
                                      cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
            let mut bytes = BytesMut::new();
            for c in &commands {
                c.encode(&mut bytes);
            }
            let mut codec = ServerCodec::default();
            let mut pending = None;
            let decoded = feed_in_chunks(&bytes, &cuts, |buf| server_decode(&mut codec, buf, &mut pending));
            prop_assert_eq!(decoded.len(), commands.len());
            for ((line, body), command) in decoded.iter().zip(&commands) {
                // Re-encoding the decoded parts gives the original bytes: nothing was lost or merged.
                let mut expected = BytesMut::new();
                command.encode(&mut expected);
                let mut got = BytesMut::from(&line[..]);
                got.extend_from_slice(b"\n");
                if let Some(body) = body {
                    got.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
                    got.extend_from_slice(body);
                }
                prop_assert_eq!(got, expected);
                prop_assert_eq!(ServerCodec::params(line)[0], command.name().as_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_server_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut codec = ServerCodec::default();
            let mut buf = BytesMut::from(&bytes[..]);
            let mut pending = None;
            for _ in 0..bytes.len() + 1 {
                match codec.decode(&mut buf) {
                    Ok(Some(Inbound::Line(line))) => {
                        if command_has_body(ServerCodec::params(&line)[0]) {
                            pending = Some(line);
                            codec.read_body_size();
                        }
                    }
                    Ok(Some(Inbound::BodySize(size))) => {
                        codec.read_body(usize::try_from(size).unwrap_or(0).min(4096));
                    }
                    Ok(Some(_)) => { pending.take(); }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

/// A JSON value of any type, biased towards what the decoders expect so that some inputs parse.
fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![
            Just("127.0.0.1".to_owned()),
            Just("::1".to_owned()),
            Just("[::1]".to_owned()),
            Just("1.3.0".to_owned()),
            "[ -~]{0,16}",
        ]
        .prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// An object whose keys come mostly from `known`, with values of any type.
fn json_object(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => proptest::sample::select(known).prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
    ];
    proptest::collection::vec((key, json_scalar()), 0..14)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

const IDENTIFY_REPLY_KEYS: &[&str] = &[
    "max_rdy_count",
    "version",
    "max_msg_timeout",
    "msg_timeout",
    "tls_v1",
    "deflate",
    "deflate_level",
    "max_deflate_level",
    "snappy",
    "sample_rate",
    "auth_required",
    "output_buffer_size",
    "output_buffer_timeout",
];

const PRODUCER_KEYS: &[&str] = &[
    "remote_address",
    "hostname",
    "broadcast_address",
    "tcp_port",
    "http_port",
    "version",
];

fn lookup_answer() -> impl Strategy<Value = Value> {
    let channels = prop_oneof![
        proptest::collection::vec("[a-z#]{1,8}", 0..4).prop_map(|c| json!(c)),
        json_scalar(),
    ];
    let producers = prop_oneof![
        4 => proptest::collection::vec(json_object(PRODUCER_KEYS), 0..5).prop_map(Value::Array),
        1 => json_scalar(),
    ];
    (channels, producers, any::<bool>()).prop_map(|(channels, producers, legacy)| {
        let answer = json!({ "channels": channels, "producers": producers });
        if legacy {
            json!({ "status_code": 200, "status_txt": "OK", "data": answer })
        } else {
            answer
        }
    })
}

proptest! {
    #[test]
    fn client_decoder_target_holds_for_frames_and_noise(
        frames in proptest::collection::vec(frame(), 0..8),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
        noise_at in any::<usize>(),
        limit in any::<u8>(),
        split in any::<u8>(),
    ) {
        let mut bytes = BytesMut::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let at = noise_at % (bytes.len() + 1);
        let mut input = vec![limit, split];
        input.extend_from_slice(&bytes[..at]);
        input.extend_from_slice(&noise);
        input.extend_from_slice(&bytes[at..]);
        fuzz_targets::client_decoder(&input);
    }

    #[test]
    fn client_decoder_target_holds_for_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        fuzz_targets::client_decoder(&bytes);
    }

    #[test]
    fn identify_reply_target_holds(reply in json_object(IDENTIFY_REPLY_KEYS),
                                   junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        fuzz_targets::identify_reply(&serde_json::to_vec(&reply).unwrap());
        fuzz_targets::identify_reply(&junk);
    }

    #[test]
    fn lookupd_answer_target_holds(answer in lookup_answer(),
                                   junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        fuzz_targets::lookupd_answer(&serde_json::to_vec(&answer).unwrap());
        fuzz_targets::lookupd_answer(&junk);
    }
}

/// The committed seed corpus of every fuzz target replays without a failure.
#[test]
fn fuzz_corpus_replays() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 3] = [
        ("client_decoder", fuzz_targets::client_decoder),
        ("identify_reply", fuzz_targets::identify_reply),
        ("lookupd_answer", fuzz_targets::lookupd_answer),
    ];
    for (name, target) in targets {
        let files = fuzz_targets::corpus_files(&[corpus.join(name)]).unwrap();
        let ran = fuzz_targets::replay(target, &files).unwrap();
        assert!(ran >= 10, "{name}: only {ran} corpus inputs");
    }
}
