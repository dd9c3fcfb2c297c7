//! Command execution (`protocolV2.Exec` and the handlers after it), with nsqd's checks in
//! nsqd's order and nsqd's error texts, so that a client sees exactly what a real nsqd sends.

use std::{fmt::Write as _, time::Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    broker::Answer,
    channel::NotInFlight,
    conn::{Conn, Failure, Hangup},
    record::ClientState,
};
use crate::protocol::{Channel, ErrorCode, Frame, MessageId, Response, ServerError, Topic};

type Exec = Result<Option<Frame>, Failure>;

/// A `FatalClientErr`: nsqd sends it, then closes the connection.
pub(super) fn fatal(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure::Fatal(ServerError::new(code, message))
}

fn ok() -> Exec {
    Ok(Some(Frame::Response(Response::Ok)))
}

/// A read that failed in the middle of a command: nsqd reports a read deadline with the
/// command's error (the socket still works) and just drops a dead socket.
fn read_failed(hangup: Hangup, code: ErrorCode, text: impl Into<String>) -> Failure {
    match hangup {
        Hangup::Timeout => fatal(code, text),
        other => Failure::Hangup(other),
    }
}

/// Go's `%q` for command parameters: printable characters as they are, escapes otherwise.
pub(super) fn go_quote(raw: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if c == ' ' || c.is_ascii_graphic() => out.push(c),
                c if c.is_ascii() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// nsqd's `ByteToBase10`: digits only (no sign), wrapping like Go's `uint64`.
fn base10(raw: &[u8]) -> Option<u64> {
    raw.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.wrapping_mul(10).wrapping_add(u64::from(d - b'0')))
    })
}

/// Milliseconds as Go's `time.Duration(ms) * time.Millisecond`, overflow included.
fn go_millis_to_nanos(ms: u64) -> i64 {
    (ms as i64).wrapping_mul(1_000_000)
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn topic_param(raw: &[u8]) -> Option<Topic> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| Topic::new(s).ok())
}

fn channel_param(raw: &[u8]) -> Option<Channel> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| Channel::new(s).ok())
}

/// IDENTIFY and AUTH bodies: size, then `too big`, then `invalid`, as nsqd checks them.
pub(super) async fn read_bounded_body(
    conn: &mut Conn,
    command: &str,
    code: ErrorCode,
    max: i64,
) -> Result<Bytes, Failure> {
    let size = conn.read_size().await.map_err(|h| {
        read_failed(
            h,
            code.clone(),
            format!("{command} failed to read body size"),
        )
    })?;
    if i64::from(size) > max {
        return Err(fatal(
            code,
            format!("{command} body too big {size} > {max}"),
        ));
    }
    if size <= 0 {
        return Err(fatal(code, format!("{command} invalid body size {size}")));
    }
    let body = conn.read_body(size.unsigned_abs() as usize).await;
    body.map_err(|h| read_failed(h, code, format!("{command} failed to read body")))
}

/// PUB and DPUB bodies: `invalid` before `too big`, with `E_BAD_MESSAGE`.
async fn read_message_body(conn: &mut Conn, command: &str) -> Result<Bytes, Failure> {
    let code = ErrorCode::BadMessage;
    let max = conn.shared.opts.max_msg_size;
    let size = conn.read_size().await.map_err(|h| {
        read_failed(
            h,
            code.clone(),
            format!("{command} failed to read message body size"),
        )
    })?;
    if size <= 0 {
        return Err(fatal(
            code,
            format!("{command} invalid message body size {size}"),
        ));
    }
    if i64::from(size) > max {
        return Err(fatal(
            code,
            format!("{command} message too big {size} > {max}"),
        ));
    }
    let body = conn.read_body(size.unsigned_abs() as usize).await;
    body.map_err(|h| read_failed(h, code, format!("{command} failed to read message body")))
}

impl Conn {
    pub(super) fn state(&self) -> Option<ClientState> {
        self.shared.broker().client(self.id).map(|c| c.info.state)
    }

    /// `protocolV2.Exec`.
    pub(super) async fn exec(&mut self, line: &[u8]) -> Exec {
        let params: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let name = params.first().copied().unwrap_or_default();
        if name == b"IDENTIFY" {
            return self.identify().await;
        }
        // `enforceTLSPolicy` runs before the command is even looked at.
        if self.shared.opts.tls_required && !self.tls {
            let message = format!("cannot {} in current state (TLS required)", text(name));
            return Err(fatal(ErrorCode::Invalid, message));
        }
        match name {
            b"FIN" => self.answer(&params, "FIN", Answer::Finish),
            b"RDY" => self.rdy(&params),
            b"REQ" => self.req(&params),
            b"PUB" => self.publish(&params).await,
            b"MPUB" => self.mpub(&params).await,
            b"DPUB" => self.dpub(&params).await,
            b"NOP" => Ok(None),
            b"TOUCH" => self.answer(&params, "TOUCH", Answer::Touch),
            b"SUB" => self.sub(&params),
            b"CLS" => self.cls(),
            b"AUTH" => self.auth(&params).await,
            _ => Err(fatal(
                ErrorCode::Invalid,
                format!("invalid command {}", text(name)),
            )),
        }
    }

    fn sub(&mut self, params: &[&[u8]]) -> Exec {
        if self.state() != Some(ClientState::Init) {
            return Err(fatal(ErrorCode::Invalid, "cannot SUB in current state"));
        }
        if self.settings.heartbeat.is_none() {
            return Err(fatal(
                ErrorCode::Invalid,
                "cannot SUB with heartbeats disabled",
            ));
        }
        if params.len() < 3 {
            return Err(fatal(
                ErrorCode::Invalid,
                "SUB insufficient number of parameters",
            ));
        }
        let Some(topic) = topic_param(params[1]) else {
            let message = format!("SUB topic name {} is not valid", go_quote(params[1]));
            return Err(fatal(ErrorCode::BadTopic, message));
        };
        let Some(channel) = channel_param(params[2]) else {
            let message = format!("SUB channel name {} is not valid", go_quote(params[2]));
            return Err(fatal(ErrorCode::BadChannel, message));
        };
        self.check_auth("SUB")?;
        let mut broker = self.shared.broker();
        broker
            .subscribe(self.id, &topic, &channel, Instant::now())
            .map_err(|e| fatal(ErrorCode::SubFailed, format!("SUB failed {e}")))?;
        ok()
    }

    fn rdy(&mut self, params: &[&[u8]]) -> Exec {
        match self.state() {
            // nsqd ignores RDY after CLS.
            Some(ClientState::Closing) => return Ok(None),
            Some(ClientState::Subscribed) => {}
            _ => return Err(fatal(ErrorCode::Invalid, "cannot RDY in current state")),
        }
        let mut count = 1i64;
        if let Some(raw) = params.get(1) {
            let parsed = base10(raw).ok_or_else(|| {
                fatal(
                    ErrorCode::Invalid,
                    format!("RDY could not parse count {}", text(raw)),
                )
            })?;
            count = parsed as i64;
        }
        let max = self.shared.opts.max_rdy_count;
        if count < 0 || count > max {
            // Fatal in nsqd too: "otherwise clients would have inconsistent state".
            let message = format!("RDY count {count} out of range 0-{max}");
            return Err(fatal(ErrorCode::Invalid, message));
        }
        self.shared.broker().set_rdy(self.id, count, Instant::now());
        Ok(None)
    }

    /// FIN and TOUCH (REQ parses its delay first, then comes here too).
    fn answer(&mut self, params: &[&[u8]], command: &str, answer: Answer) -> Exec {
        if !matches!(
            self.state(),
            Some(ClientState::Subscribed | ClientState::Closing)
        ) {
            return Err(fatal(
                ErrorCode::Invalid,
                format!("cannot {command} in current state"),
            ));
        }
        let needed = if command == "REQ" { 3 } else { 2 };
        if params.len() < needed {
            let message = format!("{command} insufficient number of params");
            return Err(fatal(ErrorCode::Invalid, message));
        }
        let raw_id = params[1];
        if raw_id.len() != crate::protocol::MESSAGE_ID_LEN {
            return Err(fatal(ErrorCode::Invalid, "invalid message ID"));
        }
        // Every id this server hands out is printable, so any other id is simply unknown.
        let result = match MessageId::from_slice(raw_id) {
            Ok(id) => self
                .shared
                .broker()
                .answer(self.id, &id, answer, Instant::now()),
            Err(_) => Err(NotInFlight::Missing),
        };
        result.map(|()| None).map_err(|e| {
            let code = match answer {
                Answer::Finish => ErrorCode::FinFailed,
                Answer::Requeue(_) => ErrorCode::ReqFailed,
                Answer::Touch => ErrorCode::TouchFailed,
            };
            Failure::Client(ServerError::new(
                code,
                format!("{command} {} failed {e}", text(raw_id)),
            ))
        })
    }

    fn req(&mut self, params: &[&[u8]]) -> Exec {
        if !matches!(
            self.state(),
            Some(ClientState::Subscribed | ClientState::Closing)
        ) {
            return Err(fatal(ErrorCode::Invalid, "cannot REQ in current state"));
        }
        if params.len() < 3 {
            return Err(fatal(
                ErrorCode::Invalid,
                "REQ insufficient number of params",
            ));
        }
        if params[1].len() != crate::protocol::MESSAGE_ID_LEN {
            return Err(fatal(ErrorCode::Invalid, "invalid message ID"));
        }
        let ms = base10(params[2]).ok_or_else(|| {
            fatal(
                ErrorCode::Invalid,
                format!("REQ could not parse timeout {}", text(params[2])),
            )
        })?;
        let wanted = go_millis_to_nanos(ms);
        let max = nanos(self.shared.opts.max_req_timeout);
        let clamped = wanted.clamp(0, max);
        if clamped != wanted {
            // nsqd only logs this and requeues with the clamped delay.
            tracing::info!(client = %self.id, wanted, max, "REQ timeout out of range, clamped");
        }
        let delay = std::time::Duration::from_nanos(clamped.unsigned_abs());
        self.answer(params, "REQ", Answer::Requeue(delay))
    }

    fn cls(&mut self) -> Exec {
        if self.state() != Some(ClientState::Subscribed) {
            return Err(fatal(ErrorCode::Invalid, "cannot CLS in current state"));
        }
        self.shared.broker().start_close(self.id);
        Ok(Some(Frame::Response(Response::CloseWait)))
    }

    async fn publish(&mut self, params: &[&[u8]]) -> Exec {
        if params.len() < 2 {
            return Err(fatal(
                ErrorCode::Invalid,
                "PUB insufficient number of parameters",
            ));
        }
        let Some(topic) = topic_param(params[1]) else {
            let message = format!("PUB topic name {} is not valid", go_quote(params[1]));
            return Err(fatal(ErrorCode::BadTopic, message));
        };
        let body = read_message_body(self, "PUB").await?;
        self.body = Some(body.clone());
        self.check_auth("PUB")?;
        self.shared
            .broker()
            .publish(&topic, vec![body], Default::default(), Instant::now());
        ok()
    }

    async fn dpub(&mut self, params: &[&[u8]]) -> Exec {
        if params.len() < 3 {
            return Err(fatal(
                ErrorCode::Invalid,
                "DPUB insufficient number of parameters",
            ));
        }
        let Some(topic) = topic_param(params[1]) else {
            let message = format!("DPUB topic name {} is not valid", go_quote(params[1]));
            return Err(fatal(ErrorCode::BadTopic, message));
        };
        let ms = base10(params[2]).ok_or_else(|| {
            fatal(
                ErrorCode::Invalid,
                format!("DPUB could not parse timeout {}", text(params[2])),
            )
        })?;
        let delay = go_millis_to_nanos(ms);
        let max = self.shared.opts.max_req_timeout;
        if delay < 0 || delay > nanos(max) {
            let max_ms = max.as_millis();
            let message = format!("DPUB timeout {ms} out of range 0-{max_ms}");
            return Err(fatal(ErrorCode::Invalid, message));
        }
        let body = read_message_body(self, "DPUB").await?;
        self.body = Some(body.clone());
        self.check_auth("DPUB")?;
        let delay = std::time::Duration::from_nanos(delay.unsigned_abs());
        self.shared
            .broker()
            .publish(&topic, vec![body], delay, Instant::now());
        ok()
    }

    /// MPUB reads its messages straight from the stream, as nsqd's `readMPUB` does.
    async fn mpub(&mut self, params: &[&[u8]]) -> Exec {
        if params.len() < 2 {
            return Err(fatal(
                ErrorCode::Invalid,
                "MPUB insufficient number of parameters",
            ));
        }
        let Some(topic) = topic_param(params[1]) else {
            // nsqd repeats the code in this one message.
            let quoted = go_quote(params[1]);
            let message = format!("E_BAD_TOPIC MPUB topic name {quoted} is not valid");
            return Err(fatal(ErrorCode::BadTopic, message));
        };
        self.check_auth("MPUB")?;
        let (max_body, max_msg) = (
            self.shared.opts.max_body_size,
            self.shared.opts.max_msg_size,
        );
        let bad_body = ErrorCode::BadBody;
        let size = self
            .read_size()
            .await
            .map_err(|h| read_failed(h, bad_body.clone(), "MPUB failed to read body size"))?;
        if size <= 0 {
            return Err(fatal(bad_body, format!("MPUB invalid body size {size}")));
        }
        if i64::from(size) > max_body {
            return Err(fatal(
                bad_body,
                format!("MPUB body too big {size} > {max_body}"),
            ));
        }
        let count = self
            .read_size()
            .await
            .map_err(|h| read_failed(h, bad_body.clone(), "MPUB failed to read message count"))?;
        // 4 bytes of count, then at least 5 bytes (size + 1) per message.
        if count <= 0 || i64::from(count) > (max_body - 4) / 5 {
            return Err(fatal(
                bad_body,
                format!("MPUB invalid message count {count}"),
            ));
        }
        let bad_message = ErrorCode::BadMessage;
        let mut raw = BytesMut::new();
        raw.put_i32(count);
        let mut bodies = Vec::new();
        for i in 0..count {
            let size = self.read_size().await.map_err(|h| {
                read_failed(
                    h,
                    bad_message.clone(),
                    format!("MPUB failed to read message({i}) body size"),
                )
            })?;
            if size <= 0 {
                let message = format!("MPUB invalid message({i}) body size {size}");
                return Err(fatal(bad_message, message));
            }
            if i64::from(size) > max_msg {
                let message = format!("MPUB message too big {size} > {max_msg}");
                return Err(fatal(bad_message, message));
            }
            let body = self
                .read_body(size.unsigned_abs() as usize)
                .await
                .map_err(|h| {
                    read_failed(h, bad_message.clone(), "MPUB failed to read message body")
                })?;
            raw.put_i32(size);
            raw.extend_from_slice(&body);
            bodies.push(body);
        }
        self.body = Some(raw.freeze());
        self.shared
            .broker()
            .publish(&topic, bodies, Default::default(), Instant::now());
        ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"a b"), r#""a b""#);
        assert_eq!(go_quote(b"t:x\"\n"), r#""t:x\"\n""#);
        assert_eq!(go_quote(b"\x01\xff"), r#""\x01\xff""#);
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }

    #[test]
    fn parses_base10_like_nsqd() {
        assert_eq!(base10(b"51"), Some(51));
        assert_eq!(base10(b""), Some(0));
        assert_eq!(base10(b"-1"), None);
        assert_eq!(base10(b"1x"), None);
        assert_eq!(go_millis_to_nanos(3_600_100), 3_600_100_000_000);
    }
}
