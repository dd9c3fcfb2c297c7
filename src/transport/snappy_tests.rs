use std::{io::Read, time::Duration};

use proptest::prelude::*;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::transport::test_io::{
    block_on, mixed_data, ChunkedReader, Joined, Silent, TrickleWriter,
};

/// nsqd's `OK` response frame as golang/snappy's buffered writer frames it: the stream
/// identifier, then a stored chunk (12 compressed bytes would save less than 12.5% of 10).
/// Checksum computed independently (Python, bitwise CRC-32C).
const NSQD_SNAPPY_OK: &[u8] = b"\xff\x06\x00\x00sNaPpY\
    \x01\x0e\x00\x00\x26\x98\x2b\xcf\x00\x00\x00\x06\x00\x00\x00\x00OK";

/// A compressed chunk built by hand from the snappy format description: length varint 100,
/// literal `a`, copy (offset 1, length 64), copy (offset 1, length 35).
const HAND_COMPRESSED_100_A: &[u8] =
    b"\x00\x0d\x00\x00\x1f\xa8\xb5\xfd\x64\x00\x61\xfe\x01\x00\x8a\x01\x00";

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

async fn decode_async(framed: &[u8]) -> io::Result<Vec<u8>> {
    read_all(
        SnappyStream::new(Joined {
            reader: framed,
            writer: Vec::<u8>::new(),
        }),
        4096,
    )
    .await
}

fn decode(framed: &[u8]) -> io::Result<Vec<u8>> {
    block_on(decode_async(framed))
}

async fn encode(data: &[u8], write_size: usize) -> Vec<u8> {
    let mut stream = SnappyStream::new(Joined {
        reader: Silent,
        writer: Vec::<u8>::new(),
    });
    for piece in data.chunks(write_size.max(1)) {
        stream.write_all(piece).await.unwrap();
    }
    stream.flush().await.unwrap();
    stream.inner.writer
}

#[tokio::test]
async fn the_write_side_starts_with_the_stream_identifier() {
    let framed = encode(b"x", 1).await;
    assert_eq!(&framed[..10], b"\xff\x06\x00\x00\x73\x4e\x61\x50\x70\x59");
}

#[tokio::test]
async fn frames_a_small_frame_exactly_as_nsqd_does() {
    let framed = encode(b"\x00\x00\x00\x06\x00\x00\x00\x00OK", 3).await;
    assert_eq!(framed, NSQD_SNAPPY_OK);
}

#[test]
fn reads_nsqd_and_hand_built_fixtures() {
    let mut framed = NSQD_SNAPPY_OK.to_vec();
    framed.extend_from_slice(HAND_COMPRESSED_100_A);
    // A padding chunk (type 0xfe) and a repeated stream identifier are both legal.
    framed.extend_from_slice(b"\xfe\x03\x00\x00pad");
    framed.extend_from_slice(STREAM_IDENTIFIER);
    let mut expected = b"\x00\x00\x00\x06\x00\x00\x00\x00OK".to_vec();
    expected.extend_from_slice(&[b'a'; 100]);
    assert_eq!(decode(&framed).unwrap(), expected);
}

#[test]
fn interoperates_with_the_snap_reference_implementation() {
    let data = mixed_data(300_000, 7);

    let mut theirs = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut theirs, &data).unwrap();
    let theirs = theirs.into_inner().unwrap();
    assert_eq!(decode(&theirs).unwrap(), data);

    let ours = block_on(encode(&data, 1000));
    let mut decoded = Vec::new();
    snap::read::FrameDecoder::new(&ours[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, data);
    assert!(
        ours.len() < data.len() * 3 / 4,
        "the text half compresses: {} bytes",
        ours.len()
    );
}

#[tokio::test]
async fn flush_delivers_every_byte_before_the_next_write() {
    let (a, b) = duplex(1 << 20);
    let (mut client, mut server) = (SnappyStream::new(a), SnappyStream::new(b));
    for i in 0..200u32 {
        let message = format!("message {i} ").repeat((i % 7 + 1) as usize);
        client.write_all(message.as_bytes()).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; message.len()];
        // Without a complete flush this read would wait forever (nsq#532).
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
    let (mut client, mut server) = (SnappyStream::new(a), SnappyStream::new(b));
    let data = mixed_data(1 << 20, 3);
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        for piece in data.chunks(10_000) {
            client.write_all(piece).await.unwrap();
        }
        client.shutdown().await.unwrap();
        client
    });
    let got = read_all(&mut server, 777).await.unwrap();
    assert_eq!(got.len(), expected.len());
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
    let data = mixed_data(200_000, 11);
    let mut stream = SnappyStream::new(Joined {
        reader: Silent,
        writer: TrickleWriter::new(999),
    });
    for piece in data.chunks(50_000) {
        stream.write_all(piece).await.unwrap();
    }
    stream.flush().await.unwrap();
    assert_eq!(stream.inner.writer.flushes, 1);
    assert_eq!(
        decode_async(&stream.inner.writer.written).await.unwrap(),
        data
    );
}

fn assert_invalid(framed: &[u8], needle: &str) {
    let err = decode(framed).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn rejects_malformed_streams() {
    assert_invalid(b"\x01\x0e\x00\x00", "stream identifier");
    assert_invalid(b"\xff\x06\x00\x00sNaPpX", "bad stream identifier");
    assert_invalid(
        b"\xff\x07\x00\x00sNaPpYY",
        "stream identifier chunk of length 7",
    );

    let mut bad_crc = NSQD_SNAPPY_OK.to_vec();
    bad_crc[14] ^= 1;
    assert_invalid(&bad_crc, "checksum mismatch");

    let mut reserved = STREAM_IDENTIFIER.to_vec();
    reserved.extend_from_slice(b"\x02\x01\x00\x00x");
    assert_invalid(&reserved, "reserved unskippable chunk type 0x02");

    let mut too_short = STREAM_IDENTIFIER.to_vec();
    too_short.extend_from_slice(b"\x00\x03\x00\x00abc");
    assert_invalid(&too_short, "data chunk of length 3");

    let mut bad_data = STREAM_IDENTIFIER.to_vec();
    bad_data.extend_from_slice(b"\x00\x06\x00\x00\x00\x00\x00\x00\xff\xff");
    assert_eq!(
        decode(&bad_data).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );

    let mut truncated = NSQD_SNAPPY_OK.to_vec();
    truncated.pop();
    assert_eq!(
        decode(&truncated).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

#[tokio::test]
async fn rejects_an_oversized_chunk_from_its_header_alone() {
    // The peer announces a 16 MiB chunk and then goes quiet: the length must be refused at
    // once, not buffered for.
    let (a, mut b) = duplex(64);
    b.write_all(STREAM_IDENTIFIER).await.unwrap();
    b.write_all(b"\x00\xff\xff\xff").await.unwrap();
    let mut stream = SnappyStream::new(a);
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("must not wait for the chunk body")
        .unwrap_err();
    assert!(
        err.to_string().contains("data chunk of length 16777215"),
        "{err}"
    );

    // A decompressed length above 64 KiB is refused before decompressing.
    let mut bomb = STREAM_IDENTIFIER.to_vec();
    bomb.extend_from_slice(b"\x00\x08\x00\x00\x00\x00\x00\x00\x80\x80\x08\x00");
    let err = decode_async(&bomb).await.unwrap_err();
    assert!(
        err.to_string().contains("decompresses to 131072 bytes"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_across_arbitrary_splits(
        data in proptest::collection::vec(any::<u8>(), 0..150_000),
        write_size in 1usize..70_000,
        cuts in proptest::collection::vec(0usize..200_000, 0..40),
        read_size in 1usize..5000,
    ) {
        let framed = block_on(encode(&data, write_size));
        let reader = ChunkedReader::split(&framed, &cuts);
        let stream = SnappyStream::new(Joined { reader, writer: Vec::<u8>::new() });
        let got = block_on(read_all(stream, read_size)).unwrap();
        prop_assert!(got == data);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic(
        garbage in proptest::collection::vec(any::<u8>(), 0..2000),
        with_identifier in any::<bool>(),
    ) {
        let mut framed = if with_identifier { STREAM_IDENTIFIER.to_vec() } else { Vec::new() };
        framed.extend_from_slice(&garbage);
        let _ = decode(&framed);
    }

    #[test]
    fn a_corrupted_stream_never_yields_wrong_data(
        seed in any::<u64>(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let data = mixed_data(20_000, seed);
        let mut framed = block_on(encode(&data, 20_000));
        // One chunk after the identifier; flip a byte of its checksum or data (a flipped
        // chunk type could legally turn it into a skippable chunk).
        let body = STREAM_IDENTIFIER.len() + CHUNK_HEADER;
        let at = body + position.index(framed.len() - body);
        framed[at] ^= flip;
        if let Ok(got) = decode(&framed) {
            // A flipped copy offset may point at identical text; anything else must fail.
            prop_assert!(got == data);
        }
    }
}
