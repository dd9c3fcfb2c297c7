//! Codec throughput: decoding message frames (the consume path) and encoding the commands a
//! consumer and a producer write most (FIN, RDY, PUB, MPUB).
//!
//! `cargo bench --bench codec`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::{hint::black_box, time::Duration};

use actix_nsq::protocol::{
    Batch, Body, Command, Frame, Message, MessageId, NsqCodec, Response, Topic,
};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::codec::{Decoder, Encoder};

fn message_frames(count: usize, body_size: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..count {
        let id =
            MessageId::new(*format!("{i:016x}").as_bytes().first_chunk::<16>().unwrap()).unwrap();
        let message = Message::new(
            id,
            1_700_000_000_000_000_000,
            1,
            Bytes::from(vec![b'x'; body_size]),
        );
        Frame::Message(message).encode(&mut buf);
        if i % 100 == 0 {
            Frame::Response(Response::Heartbeat).encode(&mut buf);
        }
    }
    buf
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for body_size in [100usize, 1024, 64 * 1024] {
        let count = (4 * 1024 * 1024 / (body_size + 30)).max(16);
        let wire = message_frames(count, body_size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("message_frames", body_size),
            &wire,
            |b, wire| {
                b.iter(|| {
                    let mut codec = NsqCodec::default();
                    let mut buf = wire.clone();
                    let mut frames = 0usize;
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        black_box(&frame);
                        frames += 1;
                    }
                    frames
                })
            },
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let id = MessageId::new(*b"0123456789abcdef").unwrap();
    let topic = Topic::new("events").unwrap();
    let body = Body::new(vec![b'x'; 100]).unwrap();
    let batch = Batch::from_bodies(vec![body.clone(); 100]).unwrap();
    let commands = [
        ("fin", Command::Fin(id)),
        ("rdy", Command::Rdy(2500)),
        (
            "req",
            Command::Req {
                id,
                delay: Duration::from_secs(90),
            },
        ),
        (
            "pub_100b",
            Command::Pub {
                topic: topic.clone(),
                body,
            },
        ),
        (
            "mpub_100x100b",
            Command::Mpub {
                topic,
                bodies: batch,
            },
        ),
    ];
    for (name, command) in &commands {
        let size = command.to_bytes().len();
        group.throughput(Throughput::Bytes(size as u64 * 1000));
        group.bench_function(*name, |b| {
            let mut codec = NsqCodec::default();
            let mut buf = BytesMut::with_capacity(size * 1000);
            b.iter(|| {
                buf.clear();
                for _ in 0..1000 {
                    codec.encode(black_box(command), &mut buf).unwrap();
                }
                buf.len()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = decode, encode
}
criterion_main!(benches);
