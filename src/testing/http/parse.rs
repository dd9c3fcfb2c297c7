//! HTTP/1.1 request parsing for the test servers: the head, the body framing
//! (`Content-Length` or `chunked`), chunked bodies, and query strings as Go's
//! `url.ParseQuery` reads them. Pure functions over a buffer; the caller reads more bytes when
//! told the input is incomplete.

use bytes::{Bytes, BytesMut};

/// Why a request was refused before it reached a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed: 400, then close.
    Bad(&'static str),
    /// The head is larger than allowed: 431, then close.
    HeadTooLarge,
    /// The body is larger than allowed: the handler's "too large" answer, then close.
    BodyTooLarge,
    /// A `Transfer-Encoding` other than `chunked`: 501, then close.
    UnsupportedEncoding,
}

/// A parsed request line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) method: String,
    /// The request target as sent: path and query.
    pub(crate) target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor_version: u8,
    /// Names lower-cased, values trimmed, in order.
    pub(crate) headers: Vec<(String, String)>,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(usize),
    Chunked,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to
    /// keep it.
    pub(crate) fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        let has = |token: &str| {
            connection
                .as_deref()
                .is_some_and(|c| c.split(',').any(|t| t.trim() == token))
        };
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    pub(crate) fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }

    pub(crate) fn framing(&self) -> Result<Framing, Refusal> {
        let lengths: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v.as_str())
            .collect();
        if let Some(te) = self.header("transfer-encoding") {
            if !lengths.is_empty() {
                return Err(Refusal::Bad("both Transfer-Encoding and Content-Length"));
            }
            return if te.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(Refusal::UnsupportedEncoding)
            };
        }
        let Some(first) = lengths.first() else {
            return Ok(Framing::Length(0));
        };
        if lengths.iter().any(|l| l != first) {
            return Err(Refusal::Bad("conflicting Content-Length"));
        }
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::Bad("bad Content-Length"));
        }
        first
            .parse()
            .map(Framing::Length)
            .map_err(|_| Refusal::BodyTooLarge)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head from the start of `buf`. `Ok(None)`: more bytes needed. On success,
/// also returns how many bytes the head took. Lines may end in CRLF or a bare LF, as Go's
/// server accepts.
pub(crate) fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(Head, usize)>, Refusal> {
    let mut lines = Vec::new();
    let mut start = 0;
    let end = loop {
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            if buf.len() > max_head {
                return Err(Refusal::HeadTooLarge);
            }
            return Ok(None);
        };
        let line = &buf[start..start + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += nl + 1;
        if start > max_head {
            return Err(Refusal::HeadTooLarge);
        }
        if line.is_empty() {
            // Clients may send a stray CRLF before a request line (RFC 9112 §2.2).
            if lines.is_empty() {
                continue;
            }
            break start;
        }
        if lines.is_empty() {
            // Go's net/http judges the request line as soon as it has it (`readRequest`), so
            // a line of another protocol ("  V2IDENTIFY") gets its 400 without waiting for
            // headers that will never come.
            request_line(line)?;
        }
        lines.push(line);
    };
    let (first, rest) = lines.split_first().ok_or(Refusal::Bad("no request line"))?;
    let (method, target, minor_version) = request_line(first)?;
    let mut headers = Vec::with_capacity(rest.len());
    for line in rest {
        let line = text(line)?;
        let Some((name, value)) = line.split_once(':') else {
            return Err(Refusal::Bad("malformed header"));
        };
        if !is_token(name) {
            return Err(Refusal::Bad("malformed header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let head = Head {
        method,
        target,
        minor_version,
        headers,
    };
    Ok(Some((head, end)))
}

fn text(line: &[u8]) -> Result<String, Refusal> {
    String::from_utf8(line.to_vec()).map_err(|_| Refusal::Bad("head is not UTF-8"))
}

/// `METHOD /target HTTP/1.x`: the method, the target and the minor version.
fn request_line(line: &[u8]) -> Result<(String, String, u8), Refusal> {
    let request_line = text(line)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Bad("malformed request line"));
    };
    if !is_token(method) || !target.starts_with('/') {
        return Err(Refusal::Bad("malformed request line"));
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(Refusal::Bad("unsupported HTTP version")),
    };
    Ok((method.to_owned(), target.to_owned(), minor_version))
}

fn find_line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let nl = buf.get(from..)?.iter().position(|&b| b == b'\n')?;
    let line = &buf[from..from + nl];
    Some((line.strip_suffix(b"\r").unwrap_or(line), from + nl + 1))
}

/// Decodes a complete chunked body from the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the body and the bytes consumed (trailers included).
pub(crate) fn parse_chunked(
    buf: &[u8],
    max_body: usize,
) -> Result<Option<(Bytes, usize)>, Refusal> {
    let mut body = BytesMut::new();
    let mut at = 0;
    loop {
        let Some((line, next)) = find_line(buf, at) else {
            return Ok(None);
        };
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 16)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(Refusal::Bad("bad chunk size"))?;
        if body.len().saturating_add(size) > max_body {
            return Err(Refusal::BodyTooLarge);
        }
        at = next;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let Some((line, next)) = find_line(buf, at) else {
                    return Ok(None);
                };
                at = next;
                if line.is_empty() {
                    return Ok(Some((body.freeze(), at)));
                }
            }
        }
        let Some(chunk) = buf.get(at..at + size) else {
            return Ok(None);
        };
        body.extend_from_slice(chunk);
        at += size;
        match (buf.get(at), buf.get(at + 1)) {
            (None, _) | (Some(b'\r'), None) => return Ok(None),
            (Some(b'\n'), _) => at += 1,
            (Some(b'\r'), Some(b'\n')) => at += 2,
            _ => return Err(Refusal::Bad("chunk not followed by CRLF")),
        }
    }
}

/// A parsed query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// The first value of `key`, as Go's `url.Values.Get` (but telling absent from empty).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `url.ParseQuery`: pairs split on `&`, `+` is a space, `%XX` escapes; a bad escape or a
/// `;` is an error (Go ≥ 1.17).
pub(crate) fn parse_query(raw: &str) -> Option<Query> {
    let mut pairs = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        if part.contains(';') {
            return None;
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((unescape(key)?, unescape(value)?));
    }
    Some(Query(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_with_crlf_or_lf() {
        let raw = b"\r\nPOST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let (head, used) = parse_head(raw, 1024).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.target.as_str()),
            ("POST", "/pub?topic=t")
        );
        assert_eq!(&raw[used..], b"hello");
        assert_eq!(head.framing(), Ok(Framing::Length(5)));
        assert!(head.keep_alive());
        let lf = b"GET /ping HTTP/1.0\nConnection: keep-alive\n\n";
        let (head, used) = parse_head(lf, 1024).unwrap().unwrap();
        assert_eq!(used, lf.len());
        assert!(head.keep_alive());
        assert_eq!(head.framing(), Ok(Framing::Length(0)));
    }

    #[test]
    fn incomplete_garbage_and_oversize() {
        assert_eq!(parse_head(b"GET /ping HTTP/1.1\r\nHost", 1024), Ok(None));
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"GET ping HTTP/1.1\r\n\r\n",
            b"GET /ping HTTP/2.0\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET  /ping HTTP/1.1\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad, 1024), Err(Refusal::Bad(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse_head(&[b'a'; 100], 64), Err(Refusal::HeadTooLarge));
        let head = |h: &str| {
            let raw = format!("POST / HTTP/1.1\r\n{h}\r\n\r\n");
            parse_head(raw.as_bytes(), 1024).unwrap().unwrap().0
        };
        assert!(head("Content-Length: x").framing().is_err());
        assert!(head("Content-Length: 1\r\nContent-Length: 2")
            .framing()
            .is_err());
        assert_eq!(
            head("Transfer-Encoding: gzip").framing(),
            Err(Refusal::UnsupportedEncoding)
        );
        assert_eq!(
            head("Transfer-Encoding: chunked").framing(),
            Ok(Framing::Chunked)
        );
        assert!(!head("Connection: close").keep_alive());
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used) = parse_chunked(raw, 100).unwrap().unwrap();
        assert_eq!(&body[..], b"hello world");
        assert_eq!(&raw[used..], b"NEXT");
        for cut in 0..raw.len() - 4 {
            assert_eq!(parse_chunked(&raw[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_chunked(raw, 10), Err(Refusal::BodyTooLarge));
        assert!(matches!(parse_chunked(b"zz\r\n", 10), Err(Refusal::Bad(_))));
        assert!(matches!(
            parse_chunked(b"1\r\nab\r\n", 10),
            Err(Refusal::Bad(_))
        ));
    }

    #[test]
    fn queries_as_go_reads_them() {
        let q = parse_query("topic=a%23ephemeral&x=1+2&topic=b&flag").unwrap();
        assert_eq!(q.get("topic"), Some("a#ephemeral"));
        assert_eq!(q.get("x"), Some("1 2"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("missing"), None);
        assert!(parse_query("a=%zz").is_none());
        assert!(parse_query("a=%2").is_none());
        assert!(parse_query("a=1;b=2").is_none());
    }
}
