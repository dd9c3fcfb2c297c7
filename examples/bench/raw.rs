//! The floors of the round-trip workloads: publish → handler latency and awaited PUB, by a
//! minimal client written against the wire protocol with blocking sockets and plain threads
//! (no runtime, no crate code, no TLS). What it measures belongs to nsqd, the kernel and the
//! machine's scheduler, not to a client library.

use std::{
    io::{BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::{
    measure::{cpu_micros, dump_samples, now_nanos, quantile_ms},
    Args, Measured,
};

/// Reads one frame: (type, data).
fn read_frame(r: &mut impl Read) -> std::io::Result<(u32, Vec<u8>)> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let kind = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut data = vec![0u8; size.saturating_sub(4)];
    r.read_exact(&mut data)?;
    Ok((kind, data))
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    (&stream).write_all(b"  V2")?;
    Ok(stream)
}

/// Consumes `total + 1` messages with RDY 1, answering each with FIN, and returns when each
/// was published and its publish → read latency (the first message, the warm-up, left out).
fn consume(addr: &str, topic: &str, total: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let stream = connect(addr)?;
    (&stream).write_all(format!("SUB {topic} bench\nRDY 1\n").as_bytes())?;
    let mut reader = BufReader::new(&stream);
    let mut samples = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut seen = 0;
    while seen < total + 1 {
        let (kind, data) = read_frame(&mut reader)?;
        match kind {
            0 if data == b"_heartbeat_" => (&stream).write_all(b"NOP\n")?,
            0 => {} // OK to SUB
            2 if data.len() >= 26 + 8 => {
                // timestamp (8), attempts (2), id (16), body.
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&data[26..34]);
                let sent = u64::from_be_bytes(sent);
                let latency = now_nanos().saturating_sub(sent);
                let mut fin = Vec::with_capacity(21);
                fin.extend_from_slice(b"FIN ");
                fin.extend_from_slice(&data[10..26]);
                fin.push(b'\n');
                (&stream).write_all(&fin)?;
                if seen > 0 {
                    samples.push((sent, latency));
                }
                seen += 1;
            }
            _ => {
                let text = String::from_utf8_lossy(&data);
                return Err(std::io::Error::other(format!("frame {kind}: {text}")));
            }
        }
    }
    Ok(samples)
}

/// Publishes one body (its first 8 bytes stamped now) and waits for OK.
fn publish(
    stream: &TcpStream,
    reader: &mut impl Read,
    topic: &str,
    size: usize,
) -> std::io::Result<()> {
    let mut body = vec![0u8; size];
    body[..8].copy_from_slice(&now_nanos().to_be_bytes());
    let mut cmd = format!("PUB {topic}\n").into_bytes();
    cmd.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
    cmd.extend_from_slice(&body);
    (&*stream).write_all(&cmd)?;
    match read_frame(reader)? {
        (0, ok) if ok == b"OK" => Ok(()),
        (kind, data) => Err(std::io::Error::other(format!(
            "PUB answered {kind}: {}",
            String::from_utf8_lossy(&data)
        ))),
    }
}

pub(crate) fn latency(addr: &str, topic: &str, args: &Args) -> Measured {
    let size = args.body_size.max(8);
    let total = args.rate * args.seconds;
    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let producer = connect(addr).expect("connect");
    let mut reader = BufReader::new(producer.try_clone().expect("clone socket"));
    // The warm-up message creates the topic; the consumer's SUB then creates the channel.
    publish(&producer, &mut reader, topic, size).expect("warm up");
    let (addr_c, topic_c) = (addr.to_owned(), topic.to_owned());
    let consumer = std::thread::spawn(move || consume(&addr_c, &topic_c, total));
    std::thread::sleep(Duration::from_millis(200)); // subscribed before timing
    let cpu = cpu_micros(false);
    let start = Instant::now();
    for i in 0..total {
        let deadline = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        publish(&producer, &mut reader, topic, size).expect("publish");
    }
    let samples = consumer.join().expect("consumer thread").expect("consume");
    let elapsed = start.elapsed();
    let cpu = cpu_micros(false) - cpu;
    dump_samples(args.dump_latencies.as_deref(), &samples);
    let mut samples: Vec<u64> = samples.into_iter().map(|(_, latency)| latency).collect();
    samples.sort_unstable();
    Measured {
        messages: total,
        elapsed,
        cpu_micros: cpu,
        extra: serde_json::json!({
            "rate": args.rate,
            "max_in_flight": 1,
            "pacing": "thread",
            "p50_ms": quantile_ms(&samples, 0.50),
            "p90_ms": quantile_ms(&samples, 0.90),
            "p99_ms": quantile_ms(&samples, 0.99),
            "max_ms": quantile_ms(&samples, 1.0),
        }),
    }
}

/// `messages` PUBs over one blocking socket, each awaited before the next.
pub(crate) fn publish_awaited(addr: &str, topic: &str, messages: u64, size: usize) -> Measured {
    let producer = connect(addr).expect("connect");
    let mut reader = BufReader::new(producer.try_clone().expect("clone socket"));
    publish(&producer, &mut reader, topic, size.max(8)).expect("warm up");
    let cpu = cpu_micros(false);
    let start = Instant::now();
    for _ in 0..messages {
        publish(&producer, &mut reader, topic, size.max(8)).expect("publish");
    }
    Measured {
        messages,
        elapsed: start.elapsed(),
        cpu_micros: cpu_micros(false) - cpu,
        extra: serde_json::json!({"concurrency": 1, "batch": 1}),
    }
}
