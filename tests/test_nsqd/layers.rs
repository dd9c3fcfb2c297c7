//! The raw client's side of nsqd's connection upgrades, written independently of the crate's
//! transport layer so that it checks the test nsqd rather than agreeing with it: TLS through
//! rustls' sans-I/O `ClientConnection`, snappy framing parsed chunk by chunk (CRC-32C
//! checked), deflate through flate2's raw (headerless) streams with sync flushes.
//!
//! Incoming bytes go socket -> TLS -> decompression; outgoing ones the other way round.
//! Everything works on byte slices, so a read that times out never tears a chunk.

use std::{
    io::{ErrorKind, Read, Write},
    sync::Arc,
};

use actix_nsq::testing::certs;
use bytes::{Buf, BytesMut};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore,
};

/// The snappy stream identifier chunk (framing_format.txt, section 4.1).
pub(crate) const SNAPPY_STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";
/// The empty stored block a deflate sync flush ends with.
pub(crate) const DEFLATE_SYNC_MARKER: &[u8] = b"\x00\x00\xff\xff";

/// A rustls client trusting only the test CA, optionally presenting the test client cert.
pub(crate) fn tls_client(client_cert: bool) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(certs::CA_PEM) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if client_cert {
        let chain = CertificateDer::pem_slice_iter(certs::CLIENT_CERT_PEM)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(certs::CLIENT_KEY_PEM).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    ClientConnection::new(Arc::new(config), name).unwrap()
}

/// The masked CRC-32C snappy puts in each data chunk (framing_format.txt, section 3).
fn masked_crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    let crc = !crc;
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Snappy framing, as golang/snappy's reader checks it.
#[derive(Default)]
pub(crate) struct SnappyLayer {
    raw: BytesMut,
    seen_identifier: bool,
    encoder: Option<snap::write::FrameEncoder<Vec<u8>>>,
    /// The type byte of every chunk read, in order.
    pub(crate) chunk_types: Vec<u8>,
}

impl SnappyLayer {
    fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), String> {
        self.raw.extend_from_slice(input);
        while self.raw.len() >= 4 {
            let kind = self.raw[0];
            let len = usize::from(self.raw[1])
                | usize::from(self.raw[2]) << 8
                | usize::from(self.raw[3]) << 16;
            if self.raw.len() < 4 + len {
                break;
            }
            self.raw.advance(4);
            let body = self.raw.split_to(len);
            self.chunk_types.push(kind);
            if !self.seen_identifier && kind != 0xff {
                return Err(format!(
                    "snappy: chunk {kind:#x} before the stream identifier"
                ));
            }
            match kind {
                0xff if &body[..] == b"sNaPpY" => self.seen_identifier = true,
                0xff => return Err(format!("snappy: bad stream identifier {body:?}")),
                0x00 | 0x01 => {
                    let (crc, data) = body.split_at(4);
                    let data = if kind == 0x00 {
                        snap::raw::Decoder::new()
                            .decompress_vec(data)
                            .map_err(|e| format!("snappy: {e}"))?
                    } else {
                        data.to_vec()
                    };
                    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
                    if crc != masked_crc32c(&data) {
                        return Err("snappy: checksum mismatch".to_owned());
                    }
                    out.extend_from_slice(&data);
                }
                0x80..=0xfd => {}
                other => return Err(format!("snappy: reserved unskippable chunk {other:#x}")),
            }
        }
        Ok(())
    }

    fn encode(&mut self, plain: &[u8]) -> Vec<u8> {
        let encoder = self
            .encoder
            .get_or_insert_with(|| snap::write::FrameEncoder::new(Vec::new()));
        encoder.write_all(plain).unwrap();
        encoder.flush().unwrap();
        std::mem::take(encoder.get_mut())
    }
}

/// Raw deflate with sync flushes, as Go's `compress/flate` speaks it.
pub(crate) struct DeflateLayer {
    decoder: flate2::write::DeflateDecoder<Vec<u8>>,
    encoder: flate2::write::DeflateEncoder<Vec<u8>>,
    /// The compressed bytes read so far, to check how flushes end.
    pub(crate) compressed: Vec<u8>,
}

impl DeflateLayer {
    fn new() -> Self {
        Self {
            decoder: flate2::write::DeflateDecoder::new(Vec::new()),
            encoder: flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6)),
            compressed: Vec::new(),
        }
    }

    fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), String> {
        self.compressed.extend_from_slice(input);
        let inflate = |d: &mut flate2::write::DeflateDecoder<Vec<u8>>| {
            d.write_all(input)?;
            d.flush()
        };
        inflate(&mut self.decoder).map_err(|e| format!("deflate: {e}"))?;
        out.extend_from_slice(&std::mem::take(self.decoder.get_mut()));
        Ok(())
    }

    fn encode(&mut self, plain: &[u8]) -> Vec<u8> {
        self.encoder.write_all(plain).unwrap();
        // flate2's flush is a sync flush: everything written so far goes out.
        self.encoder.flush().unwrap();
        std::mem::take(self.encoder.get_mut())
    }
}

/// The compression on top of the (possibly TLS) stream.
pub(crate) enum Compression {
    None,
    Snappy(Box<SnappyLayer>),
    Deflate(Box<DeflateLayer>),
}

/// The layers a raw connection runs through.
pub(crate) struct Layers {
    pub(crate) tls: Option<ClientConnection>,
    pub(crate) compression: Compression,
}

impl Default for Layers {
    fn default() -> Self {
        Self {
            tls: None,
            compression: Compression::None,
        }
    }
}

impl Layers {
    /// Bytes from the socket into frame bytes in `out`. Returns TLS bytes that must be written
    /// back (alerts, key updates).
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<Vec<u8>, String> {
        let Some(tls) = &mut self.tls else {
            self.decompress(input, out)?;
            return Ok(Vec::new());
        };
        let mut input = input;
        let mut plain = Vec::new();
        while !input.is_empty() {
            tls.read_tls(&mut input).map_err(|e| format!("tls: {e}"))?;
            tls.process_new_packets().map_err(|e| format!("tls: {e}"))?;
            // rustls buffers a bounded amount of plaintext: take it before reading more.
            plain.extend(drain_plaintext(tls)?);
        }
        let mut reply = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut reply).unwrap();
        }
        self.decompress(&plain, out)?;
        Ok(reply)
    }

    /// Feeds bytes that are already past the TLS layer (left over when compression starts).
    pub(crate) fn decompress(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), String> {
        match &mut self.compression {
            Compression::None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Compression::Snappy(snappy) => snappy.decode(input, out),
            Compression::Deflate(deflate) => deflate.decode(input, out),
        }
    }

    /// Frame bytes into socket bytes.
    pub(crate) fn encode(&mut self, plain: &[u8]) -> Vec<u8> {
        let compressed = match &mut self.compression {
            Compression::None => plain.to_vec(),
            Compression::Snappy(snappy) => snappy.encode(plain),
            Compression::Deflate(deflate) => deflate.encode(plain),
        };
        let Some(tls) = &mut self.tls else {
            return compressed;
        };
        tls.writer().write_all(&compressed).unwrap();
        let mut wire = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut wire).unwrap();
        }
        wire
    }

    pub(crate) fn start_snappy(&mut self) {
        self.compression = Compression::Snappy(Box::default());
    }

    pub(crate) fn start_deflate(&mut self) {
        self.compression = Compression::Deflate(Box::new(DeflateLayer::new()));
    }

    pub(crate) fn snappy(&self) -> &SnappyLayer {
        match &self.compression {
            Compression::Snappy(snappy) => snappy,
            _ => panic!("not snappy"),
        }
    }

    pub(crate) fn deflate(&self) -> &DeflateLayer {
        match &self.compression {
            Compression::Deflate(deflate) => deflate,
            _ => panic!("not deflate"),
        }
    }
}

/// Plaintext rustls has decrypted so far.
pub(crate) fn drain_plaintext(tls: &mut ClientConnection) -> Result<Vec<u8>, String> {
    let mut plain = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tls.reader().read(&mut chunk) {
            Ok(0) => return Ok(plain),
            Ok(n) => plain.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(plain),
            Err(e) => return Err(format!("tls: {e}")),
        }
    }
}
