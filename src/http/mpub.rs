//! The two bodies of nsqd's HTTP `/mpub` (`nsqd/http.go` `doMPUB`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    error::{BodyError, Error},
    protocol::{Batch, PublishLimits},
};

/// How [`NsqdHttpClient::multi_publish`](super::NsqdHttpClient::multi_publish) encodes its messages for `POST /mpub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MpubMode {
    /// One message per line; no message may contain `\n` (nsqd would split it).
    #[default]
    Newline,
    /// `[u32 count]([u32 size][bytes])*`, any bytes (`binary=true`, nsqd ≥ 1.0).
    Binary,
}

/// `[u32 count]([u32 size][bytes])*`, the same body as a TCP MPUB (`nsqd/http.go` `readMPUB`).
pub(crate) fn encode_binary(batch: &Batch) -> Bytes {
    let mut out = BytesMut::with_capacity(batch.body_size());
    // Batch::new bounds the count and each size by the 32-bit size field.
    out.put_u32(u32::try_from(batch.bodies().len()).unwrap_or(u32::MAX));
    for body in batch.bodies() {
        out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
        out.put_slice(body.as_bytes());
    }
    out.freeze()
}

/// Messages joined by `\n`. nsqd splits on every `\n` and drops empty lines, so a message
/// containing one would arrive as several.
pub(crate) fn encode_lines(batch: &Batch, limits: PublishLimits) -> Result<Bytes, Error> {
    let mut size = 0usize;
    for (index, body) in batch.bodies().iter().enumerate() {
        let in_batch = |source| BodyError::InBatch {
            index,
            source: Box::new(source),
        };
        if body.as_bytes().contains(&b'\n') {
            return Err(in_batch(BodyError::ContainsNewline).into());
        }
        body.check_max(limits.max_msg_size).map_err(in_batch)?;
        size += body.len() + usize::from(index > 0);
    }
    if size > limits.max_body_size {
        return Err(BodyError::BatchTooLarge {
            size,
            max: limits.max_body_size,
        }
        .into());
    }
    let mut out = BytesMut::with_capacity(size);
    for (index, body) in batch.bodies().iter().enumerate() {
        if index > 0 {
            out.put_u8(b'\n');
        }
        out.put_slice(body.as_bytes());
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mpub_matches_the_tcp_body() {
        let batch = Batch::new(["ab", "c"]).unwrap();
        assert_eq!(
            &encode_binary(&batch)[..],
            b"\x00\x00\x00\x02\x00\x00\x00\x02ab\x00\x00\x00\x01c"
        );
    }

    #[test]
    fn newline_mpub_rejects_newlines_and_oversize() {
        let limits = PublishLimits {
            max_msg_size: 3,
            max_body_size: 7,
        };
        let ok = Batch::new(["abc", "de"]).unwrap();
        assert_eq!(&encode_lines(&ok, limits).unwrap()[..], b"abc\nde");
        let newline = Batch::new(["a", "b\nc"]).unwrap();
        let err = encode_lines(&newline, limits).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidBody(BodyError::InBatch { index: 1, source })
                if **source == BodyError::ContainsNewline),
            "{err:?}"
        );
        let big = Batch::new(["a", "abcd"]).unwrap();
        assert!(matches!(
            encode_lines(&big, limits),
            Err(Error::InvalidBody(BodyError::InBatch { index: 1, .. }))
        ));
        let exactly = Batch::new(["abc", "abc"]).unwrap();
        assert_eq!(encode_lines(&exactly, limits).unwrap().len(), 7);
        let longer = Batch::new(["abc", "abc", "a"]).unwrap();
        assert!(matches!(
            encode_lines(&longer, limits),
            Err(Error::InvalidBody(BodyError::BatchTooLarge {
                size: 9,
                max: 7
            }))
        ));
    }
}
