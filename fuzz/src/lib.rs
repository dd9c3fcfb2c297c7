//! Fuzz targets for the three places where actix-nsq parses bytes a peer chose: the client
//! frame decoder, nsqd's IDENTIFY reply and nsqlookupd's `/lookup` answer.
//!
//! Each target takes arbitrary bytes, must never panic on them, and asserts what must hold
//! for whatever it managed to decode. The same functions run in three ways:
//! * `cargo +nightly fuzz run <target>` (libFuzzer, through `fuzz_targets/<target>.rs`);
//! * `cargo run --manifest-path fuzz/Cargo.toml --bin <target> [files or dirs]`: replays a
//!   corpus (default `fuzz/corpus/<target>/`), no libFuzzer or nightly needed;
//! * in actix-nsq's own `cargo test`: `tests/protocol_props.rs` includes this file, drives the
//!   targets with proptest inputs and replays the committed corpus.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use actix_nsq::{
    protocol::{Frame, IdentifyResponse, NsqCodec},
    LookupResponse,
};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// How far a decoder's buffer may run ahead of the bytes it was given: its reservation chunk
/// (64 KiB) plus `BytesMut`'s geometric growth. A decoder that reserved what a length field
/// claims (16 MiB for 8 bytes) breaks this at once.
const SLACK: usize = 256 * 1024;

/// Client decoder: the first byte picks the frame limit, the second how the rest is split
/// into reads. Every decoded frame must have consumed exactly its own encoding, `Ok(None)`
/// must consume nothing, and the buffer must stay within [`SLACK`] of what arrived.
pub fn client_decoder(data: &[u8]) {
    let [limit, split, rest @ ..] = data else {
        return;
    };
    let max_frame_len = match limit % 4 {
        0 => 0,
        1 => 1024,
        2 => actix_nsq::protocol::DEFAULT_MAX_FRAME_LEN,
        _ => usize::MAX,
    };
    let mut codec = NsqCodec::new(max_frame_len);
    let mut buf = BytesMut::new();
    let step = usize::from(*split).max(1);
    let mut received = 0;
    for read in rest.chunks(step) {
        buf.extend_from_slice(read);
        received += read.len();
        loop {
            let before = buf.clone();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let consumed = before.len() - buf.len();
                    assert!(consumed >= 8, "a frame is at least its 8-byte header");
                    if !matches!(frame, Frame::Error(_)) {
                        // Error texts are normalised (lossy UTF-8); the rest re-encodes exactly.
                        let mut again = BytesMut::new();
                        frame.encode(&mut again);
                        assert_eq!(&again[..], &before[..consumed], "{frame:?}");
                    }
                }
                Ok(None) => {
                    assert_eq!(buf, before, "asking for more bytes consumed some");
                    break;
                }
                Err(_) => return,
            }
        }
        assert!(
            buf.capacity() <= 2 * received + SLACK,
            "{} bytes reserved after {received} received",
            buf.capacity()
        );
    }
}

/// IDENTIFY reply: whatever parses has a usable RDY window and survives a round trip through
/// its own JSON.
pub fn identify_reply(data: &[u8]) {
    let Ok(reply) = IdentifyResponse::parse(data) else {
        return;
    };
    assert!(reply.max_rdy_count > 0, "{reply:?}");
    let json = serde_json::to_vec(&reply).expect("an IdentifyResponse serialises");
    let again = IdentifyResponse::parse(&json).expect("our own JSON parses");
    assert_eq!(again, reply);
}

/// `/lookup` answer: every address a decoded producer offers is `host:port` with a port in
/// 1..=65535 and no whitespace, skipped entries are counted (and at most that many listed), and
/// the usable part (producers, channels) survives a round trip through its own JSON. Skipped
/// entries are a report, not part of the answer, so they do not go back into JSON.
pub fn lookupd_answer(data: &[u8]) {
    let Ok(answer) = serde_json::from_slice::<LookupResponse>(data) else {
        return;
    };
    for producer in &answer.producers {
        for addr in [producer.tcp_address(), producer.http_address()]
            .into_iter()
            .flatten()
        {
            assert!(!addr.contains(char::is_whitespace), "{addr:?}");
            let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            assert!(matches!(port, Some(Ok(1..))), "{addr:?}");
        }
    }
    assert!(answer.skipped.len() <= answer.skipped_count, "{answer:?}");
    let json = serde_json::to_vec(&answer).expect("a LookupResponse serialises");
    let again: LookupResponse = serde_json::from_slice(&json).expect("our own JSON parses");
    assert_eq!(
        (&again.producers, &again.channels, again.skipped_count),
        (&answer.producers, &answer.channels, 0)
    );
}

/// The files under `paths` (files as given, directories one level deep), sorted.
pub fn corpus_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                files.push(entry?.path());
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `target` on every corpus file; returns how many ran.
pub fn replay(target: fn(&[u8]), files: &[PathBuf]) -> std::io::Result<usize> {
    for file in files {
        target(&std::fs::read(file)?);
    }
    Ok(files.len())
}

/// `main` of a target built without libFuzzer: replays the files and directories named on
/// the command line, or the committed corpus.
pub fn replay_main(name: &str, target: fn(&[u8])) -> ExitCode {
    let mut paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(name),
        );
    }
    match corpus_files(&paths).and_then(|files| replay(target, &files)) {
        Ok(0) => {
            eprintln!("{name}: no inputs in {paths:?}");
            ExitCode::FAILURE
        }
        Ok(n) => {
            eprintln!("{name}: {n} inputs replayed, no failure");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
