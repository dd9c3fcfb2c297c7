use std::{io::Read, time::Duration};

use proptest::prelude::*;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::transport::test_io::{
    block_on, mixed_data, noise, ChunkedReader, Joined, Silent, TrickleWriter,
};

/// nsqd's `OK` frame then a `_heartbeat_` frame, deflated by the reference zlib (Python
/// `zlib.compressobj(6, DEFLATED, -15)`, each followed by `flush(Z_SYNC_FLUSH)`).
const ZLIB_OK_THEN_HEARTBEAT: &[u8] =
    b"\x62\x60\x60\x60\x63\x00\x02\x7f\x6f\x00\x00\x00\x00\xff\xff\
    \x02\x12\xfc\x20\x56\x7c\x46\x6a\x62\x51\x49\x52\x6a\x62\x49\x3c\x00\x00\x00\xff\xff";

async fn read_all<R: AsyncRead + Unpin>(mut reader: R, read_size: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; read_size];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

async fn inflate_async(compressed: &[u8]) -> io::Result<Vec<u8>> {
    read_all(
        DeflateStream::new(
            Joined {
                reader: compressed,
                writer: Vec::<u8>::new(),
            },
            6,
        ),
        4096,
    )
    .await
}

fn inflate(compressed: &[u8]) -> io::Result<Vec<u8>> {
    block_on(inflate_async(compressed))
}

/// Writes `data` in `write_size` pieces and flushes once.
async fn deflate(data: &[u8], write_size: usize, level: u32) -> Vec<u8> {
    let mut stream = DeflateStream::new(
        Joined {
            reader: Silent,
            writer: Vec::<u8>::new(),
        },
        level,
    );
    for piece in data.chunks(write_size.max(1)) {
        stream.write_all(piece).await.unwrap();
    }
    stream.flush().await.unwrap();
    stream.inner.writer
}

#[test]
fn reads_the_reference_zlib_fixture() {
    let mut expected = b"\x00\x00\x00\x06\x00\x00\x00\x00OK".to_vec();
    expected.extend_from_slice(b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_");
    assert_eq!(inflate(ZLIB_OK_THEN_HEARTBEAT).unwrap(), expected);
}

#[tokio::test]
async fn every_flush_ends_with_a_sync_marker_and_is_readable_by_flate2() {
    let mut stream = DeflateStream::new(
        Joined {
            reader: Silent,
            writer: Vec::<u8>::new(),
        },
        6,
    );
    stream.write_all(b"NOP\n").await.unwrap();
    stream.flush().await.unwrap();
    assert!(stream.inner.writer.ends_with(b"\x00\x00\xff\xff"));
    let first = stream.inner.writer.len();
    // A flush with nothing new written adds nothing.
    stream.flush().await.unwrap();
    assert_eq!(stream.inner.writer.len(), first);
    stream.write_all(b"RDY 1\n").await.unwrap();
    stream.flush().await.unwrap();
    assert!(stream.inner.writer.ends_with(b"\x00\x00\xff\xff"));

    let mut decoded = Vec::new();
    let mut reference = flate2::read::DeflateDecoder::new(&stream.inner.writer[..]);
    let _ = reference.read_to_end(&mut decoded);
    assert_eq!(decoded, b"NOP\nRDY 1\n");
}

#[test]
fn interoperates_with_flate2s_reference_streams_at_every_level() {
    let data = mixed_data(200_000, 5);
    for level in 1..=9 {
        let ours = block_on(deflate(&data, 3000, level));
        let mut decoded = Vec::new();
        let _ = flate2::read::DeflateDecoder::new(&ours[..]).read_to_end(&mut decoded);
        assert!(decoded == data, "level {level}");
    }
    let mut theirs = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut theirs, &data).unwrap();
    assert!(inflate(&theirs.finish().unwrap()).unwrap() == data);
}

#[test]
fn a_flush_after_many_incompressible_writes_is_complete() {
    // Found by the split proptest: at level 1, miniz_oxide can end a sync-flush call early
    // with output still held back, so "the output did not fill the buffer" is not "done".
    let noise = noise(60_000, 17);
    for level in 1..=9 {
        let compressed = block_on(deflate(&noise, 1061, level));
        assert!(compressed.ends_with(b"\x00\x00\xff\xff"), "level {level}");
        let mut decoded = Vec::new();
        let _ = flate2::read::DeflateDecoder::new(&compressed[..]).read_to_end(&mut decoded);
        assert!(
            decoded == noise,
            "level {level}: {} of {} bytes",
            decoded.len(),
            noise.len()
        );
    }
}

#[tokio::test]
async fn flush_delivers_every_byte_before_the_next_write() {
    let (a, b) = duplex(1 << 20);
    let (mut client, mut server) = (DeflateStream::new(a, 1), DeflateStream::new(b, 9));
    for i in 0..200u32 {
        let message = format!("message {i} ").repeat((i % 7 + 1) as usize);
        client.write_all(message.as_bytes()).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut got))
            .await
            .expect("flushed data must arrive without a further write")
            .unwrap();
        assert_eq!(got, message.as_bytes());
    }
}

#[tokio::test]
async fn round_trips_large_payloads_in_both_directions() {
    let (a, b) = duplex(8 * 1024);
    let (mut client, mut server) = (DeflateStream::new(a, 6), DeflateStream::new(b, 6));
    let data = mixed_data(1 << 20, 9);
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        for piece in data.chunks(100_000) {
            client.write_all(piece).await.unwrap();
        }
        client.shutdown().await.unwrap();
        client
    });
    let got = read_all(&mut server, 1000).await.unwrap();
    assert!(got == expected);

    let mut client = writer.await.unwrap();
    server.write_all(b"reply").await.unwrap();
    server.flush().await.unwrap();
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"reply");
}

#[tokio::test]
async fn a_slow_inner_writer_still_gets_everything() {
    let data = mixed_data(300_000, 13);
    let writer = TrickleWriter::new(777);
    let mut stream = DeflateStream::new(
        Joined {
            reader: Silent,
            writer,
        },
        6,
    );
    for piece in data.chunks(70_000) {
        stream.write_all(piece).await.unwrap();
    }
    stream.flush().await.unwrap();
    assert_eq!(stream.inner.writer.flushes, 1);
    assert!(inflate_async(&stream.inner.writer.written).await.unwrap() == data);
}

#[test]
fn a_bomb_inflates_through_bounded_buffers() {
    let zeros = vec![0u8; 8 << 20];
    let bomb = block_on(deflate(&zeros, 1 << 20, 9));
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let mut stream = DeflateStream::new(
        Joined {
            reader: &bomb[..],
            writer: Vec::<u8>::new(),
        },
        6,
    );
    let mut total = 0;
    let mut chunk = [0u8; 1000];
    block_on(async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(chunk[..n].iter().all(|&b| b == 0));
            total += n;
            assert!(
                stream.raw.capacity() <= 2 * READ_SIZE,
                "{}",
                stream.raw.capacity()
            );
        }
    });
    assert_eq!(total, zeros.len());
}

#[test]
fn garbage_is_invalid_data() {
    // BFINAL=1, BTYPE=11: a reserved block type.
    let err = inflate(b"\xff\xff\xff\xff").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    // A stored block whose length and complement disagree.
    let err = inflate(b"\x00\x05\x00\x00\x00hello").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_across_arbitrary_splits(
        data in proptest::collection::vec(any::<u8>(), 0..100_000),
        write_size in 1usize..70_000,
        level in 1u32..=9,
        cuts in proptest::collection::vec(0usize..100_000, 0..40),
        read_size in 1usize..5000,
    ) {
        let compressed = block_on(deflate(&data, write_size, level));
        let reader = ChunkedReader::split(&compressed, &cuts);
        let stream = DeflateStream::new(Joined { reader, writer: Vec::<u8>::new() }, 6);
        let got = block_on(read_all(stream, read_size)).unwrap();
        prop_assert!(got == data);
    }

    #[test]
    fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let _ = inflate(&garbage);
    }
}
