//! Reading script replies into typed results, and Node rsmq's named errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;

use super::{
    id,
    types::{QueueAttributes, RsmqMessage},
    validate::{parse_int, stored_maxsize, stored_seconds},
};
use std::sync::Arc;

use crate::error::{BodyError, Error, NameKind, Result, RsmqErrorKind};

/// Script return code: the queue does not exist.
pub(crate) const QUEUE_NOT_FOUND: i64 = -1;
/// Script return code: the queue's stored `vt` is not a number of seconds.
pub(crate) const INVALID_STORED_VT: i64 = -2;

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            Error::Timeout("redis response")
        } else {
            Error::Redis {
                message: e.to_string(),
                source: Some(Arc::new(e)),
            }
        }
    }
}

pub(crate) fn queue_not_found(qname: &str) -> Error {
    Error::Rsmq {
        kind: RsmqErrorKind::QueueNotFound,
        message: format!("Queue not found: {qname}"),
    }
}

pub(crate) fn queue_exists(qname: &str) -> Error {
    Error::Rsmq {
        kind: RsmqErrorKind::QueueExists,
        message: format!("Queue exists: {qname}"),
    }
}

pub(crate) fn no_attribute_supplied() -> Error {
    Error::Rsmq {
        kind: RsmqErrorKind::NoAttributeSupplied,
        message: "No attribute was supplied".to_owned(),
    }
}

fn unexpected(what: &str) -> Error {
    Error::redis(format!("unexpected reply shape from the {what} script"))
}

/// Maps the shared negative return codes to their errors.
pub(crate) fn check_code(qname: &str, code: i64) -> Result<i64> {
    match code {
        QUEUE_NOT_FOUND => Err(queue_not_found(qname)),
        INVALID_STORED_VT => Err(Error::Rsmq {
            kind: RsmqErrorKind::InvalidValue,
            message: format!("the stored vt of queue {qname} is not a number of seconds"),
        }),
        code => Ok(code),
    }
}

/// A reply item as text, the way Node sees it (integers become their decimal string).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A counter that may be missing (Node: `parseInt(x, 10) || 0`).
fn counter(value: &Value) -> u64 {
    text(value)
        .as_deref()
        .and_then(parse_int)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// An epoch time as a `Duration` since the epoch; the epoch itself if it does not fit.
fn epoch(since: Duration) -> SystemTime {
    UNIX_EPOCH.checked_add(since).unwrap_or(UNIX_EPOCH)
}

pub(crate) fn attributes(qname: &str, value: Value) -> Result<QueueAttributes> {
    let items = match value {
        Value::Int(code) => {
            check_code(qname, code)?;
            return Err(unexpected("attributes"));
        }
        Value::Array(items) if items.len() == 9 => items,
        _ => return Err(unexpected("attributes")),
    };
    let field = |i: usize| text(&items[i]).unwrap_or_default();
    Ok(QueueAttributes {
        vt: Duration::from_secs(stored_seconds("vt", &field(0))?),
        delay: Duration::from_secs(stored_seconds("delay", &field(1))?),
        maxsize: stored_maxsize(&field(2)),
        totalrecv: counter(&items[3]),
        totalsent: counter(&items[4]),
        created: epoch(Duration::from_secs(counter(&items[5]))),
        modified: epoch(Duration::from_secs(counter(&items[6]))),
        msgs: counter(&items[7]),
        hiddenmsgs: counter(&items[8]),
    })
}

/// A receive or pop reply: `{}` for none, else `{id, body, rc, fr}`.
pub(crate) fn message(qname: &str, value: Value) -> Result<Option<RsmqMessage>> {
    let items = match value {
        Value::Int(code) => {
            check_code(qname, code)?;
            return Err(unexpected("receive"));
        }
        Value::Array(items) if items.is_empty() => return Ok(None),
        Value::Array(items) if items.len() == 4 => items,
        _ => return Err(unexpected("receive")),
    };
    let mut items = items.into_iter();
    let (Some(id), Some(body), Some(rc), Some(fr)) =
        (items.next(), items.next(), items.next(), items.next())
    else {
        return Err(unexpected("receive"));
    };
    let id = match id {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|e| Error::InvalidName {
            kind: NameKind::MessageId,
            name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            reason: "is not UTF-8",
        })?,
        _ => return Err(unexpected("receive")),
    };
    let message = match body {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| {
            // The message stays hidden for its vt and comes back; log the id so it can be
            // deleted by hand.
            tracing::warn!(queue = qname, id, "rsmq message body is not UTF-8");
            Error::InvalidBody(BodyError::NotUtf8)
        })?,
        _ => return Err(unexpected("receive")),
    };
    Ok(Some(RsmqMessage {
        sent: id::sent_time(&id),
        id,
        message,
        rc: counter(&rc),
        fr: epoch(Duration::from_millis(counter(&fr))),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn redis_errors_keep_their_cause() {
        use std::error::Error as _;
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::from(redis::RedisError::from(refused));
        assert!(matches!(error, Error::Redis { .. }), "{error:?}");
        assert!(error.to_string().contains("refused"), "{error}");
        let cause = error
            .source()
            .expect("the redis error is kept as the source");
        assert!(cause.to_string().contains("refused"), "{cause}");
        assert!(Error::redis("odd reply").source().is_none());
    }

    #[test]
    fn attributes_are_read_like_node() {
        let reply = Value::Array(vec![
            bulk("30"),
            bulk("1.5"),
            bulk("65565"),
            Value::Nil,
            bulk("7"),
            bulk("1718000000"),
            bulk("1718000001"),
            Value::Int(3),
            Value::Int(1),
        ]);
        let a = attributes("q", reply).unwrap();
        assert_eq!(a.vt, Duration::from_secs(30));
        assert_eq!(a.delay, Duration::from_secs(1));
        assert_eq!(a.maxsize, super::super::MaxSize::Bytes(65565));
        assert_eq!(
            (a.totalrecv, a.totalsent, a.msgs, a.hiddenmsgs),
            (0, 7, 3, 1)
        );
        assert_eq!(a.created, UNIX_EPOCH + Duration::from_secs(1_718_000_000));
        assert_eq!(a.modified, UNIX_EPOCH + Duration::from_secs(1_718_000_001));
        let missing = attributes("q", Value::Int(QUEUE_NOT_FOUND)).unwrap_err();
        assert!(matches!(
            missing,
            Error::Rsmq {
                kind: RsmqErrorKind::QueueNotFound,
                ..
            }
        ));
    }

    #[test]
    fn messages_are_read_like_node() {
        let id = "gwzaaymlvkAbCdEfGhIjKlMnOpQrStUv";
        let reply = Value::Array(vec![
            bulk(id),
            bulk("hi"),
            Value::Int(2),
            bulk("1718000000999"),
        ]);
        let m = message("q", reply).unwrap().unwrap();
        assert_eq!((m.id.as_str(), m.message.as_str(), m.rc), (id, "hi", 2));
        assert_eq!(m.fr, UNIX_EPOCH + Duration::from_millis(1_718_000_000_999));
        assert_eq!(
            m.sent,
            Some(UNIX_EPOCH + Duration::from_micros(1_718_000_000_123_456))
        );
        assert_eq!(message("q", Value::Array(vec![])).unwrap(), None);
        let binary = Value::Array(vec![
            bulk(id),
            Value::BulkString(vec![0xff, 0xfe]),
            Value::Int(1),
            Value::Int(1),
        ]);
        assert!(matches!(
            message("q", binary),
            Err(Error::InvalidBody(BodyError::NotUtf8))
        ));
        assert!(matches!(
            message("q", Value::Int(INVALID_STORED_VT)),
            Err(Error::Rsmq {
                kind: RsmqErrorKind::InvalidValue,
                ..
            })
        ));
    }
}
