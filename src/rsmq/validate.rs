//! Node rsmq's parameter rules (`_validate`, rsmq `_src/index.ts`) and the lenient parsing of
//! values that other clients wrote into the queue hash.

use std::time::Duration;

use super::types::MaxSize;
use crate::error::{Error, NameKind, RsmqErrorKind};

/// The largest `vt` or `delay` Node rsmq accepts, in seconds.
pub(crate) const MAX_SECONDS: u64 = 9_999_999;
/// The longest queue name Node rsmq accepts (`/^([a-zA-Z0-9_-]){1,160}$/`).
pub(crate) const MAX_QUEUE_NAME_LEN: usize = 160;
/// Every id Node rsmq accepts in `deleteMessage` / `changeMessageVisibility` has this length.
pub(crate) const MESSAGE_ID_LEN: usize = 32;
/// The smallest byte limit `maxsize` may be set to.
pub(crate) const MIN_MAXSIZE: u32 = 1024;
/// The largest byte limit `maxsize` may be set to (PyRSMQ's 65565 is a typo Node rejects).
pub(crate) const MAX_MAXSIZE: u32 = 65536;

/// Checks a queue name against Node rsmq's `/^([a-zA-Z0-9_-]){1,160}$/`.
pub(crate) fn queue_name(name: &str) -> Result<(), Error> {
    let reject = |reason| Error::InvalidName {
        kind: NameKind::Queue,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(reject("must not be empty (rsmq missingParameter)"));
    }
    if name.len() > MAX_QUEUE_NAME_LEN {
        return Err(reject(
            "must be at most 160 characters long (rsmq invalidFormat)",
        ));
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
    if !name.bytes().all(valid) {
        return Err(reject(
            "may only contain ASCII letters, digits, `_` and `-` (rsmq invalidFormat); \
             PyRSMQ allows other characters such as `.`, which Node rsmq cannot address",
        ));
    }
    Ok(())
}

/// Checks a message id against Node rsmq's `/^([a-zA-Z0-9:]){32}$/`.
pub(crate) fn message_id(id: &str) -> Result<(), Error> {
    let reject = |reason| Error::InvalidName {
        kind: NameKind::MessageId,
        name: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(reject("must not be empty (rsmq missingParameter)"));
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b':';
    if id.len() != MESSAGE_ID_LEN || !id.bytes().all(valid) {
        return Err(reject(
            "must be 32 characters of ASCII letters, digits and `:` (rsmq invalidFormat)",
        ));
    }
    Ok(())
}

/// Converts a `vt` or `delay` to the whole seconds RSMQ stores, refusing what would need rounding.
pub(crate) fn whole_seconds(field: &'static str, value: Duration) -> Result<u64, Error> {
    if value.subsec_nanos() != 0 {
        return Err(Error::config(
            field,
            format!("{value:?} is not a whole number of seconds; RSMQ stores integer seconds"),
        ));
    }
    let secs = value.as_secs();
    if secs > MAX_SECONDS {
        return Err(Error::config(
            field,
            format!("{secs} s is outside 0..={MAX_SECONDS} s"),
        ));
    }
    Ok(secs)
}

/// The wire value of a `maxsize`, checked against Node's 1024..=65536 or -1.
pub(crate) fn maxsize(value: MaxSize) -> Result<i64, Error> {
    match value {
        MaxSize::Unlimited => Ok(-1),
        MaxSize::Bytes(n) if (MIN_MAXSIZE..=MAX_MAXSIZE).contains(&n) => Ok(i64::from(n)),
        MaxSize::Bytes(n) => Err(Error::config(
            "maxsize",
            format!("{n} bytes is outside {MIN_MAXSIZE}..={MAX_MAXSIZE} (or unlimited)"),
        )),
    }
}

/// JavaScript's `parseInt(raw, 10)`: optional leading whitespace and sign, then the leading
/// digits; `"1.5"` gives 1 (PyRSMQ can store floats), `"abc"` gives `None` (Node's `NaN`).
pub(crate) fn parse_int(raw: &str) -> Option<i64> {
    let s = raw.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    let value: i64 = digits.get(..end).filter(|d| !d.is_empty())?.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// A stored `vt` or `delay` read the way Node reads it, in seconds.
pub(crate) fn stored_seconds(field: &'static str, raw: &str) -> Result<u64, Error> {
    parse_int(raw)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n <= MAX_SECONDS)
        .ok_or_else(|| Error::Rsmq {
            kind: RsmqErrorKind::InvalidValue,
            message: format!(
                "stored {field} {raw:?} is not a number of seconds in 0..={MAX_SECONDS}"
            ),
        })
}

/// A stored `maxsize`. Node skips its size check when `maxsize` is -1 or not a number, so a
/// negative or unreadable value means no limit; PyRSMQ's 65565 reads as 65565.
pub(crate) fn stored_maxsize(raw: &str) -> MaxSize {
    match parse_int(raw) {
        Some(n) if n >= 0 => MaxSize::Bytes(u32::try_from(n).unwrap_or(u32::MAX)),
        _ => MaxSize::Unlimited,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_node() {
        assert!(queue_name("a").is_ok());
        assert!(queue_name(&"q".repeat(160)).is_ok());
        assert!(queue_name("My_queue-1").is_ok());
        for bad in ["", "a.b", "a:b", "a b", "é", &"q".repeat(161)] {
            let err = queue_name(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidName {
                        kind: NameKind::Queue,
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn message_ids_follow_node() {
        assert!(message_id("gwzaaymlvkAbCdEfGhIjKlMnOpQrStUv").is_ok());
        assert!(message_id(&format!("a:b:{}", "c".repeat(28))).is_ok());
        for bad in [
            "",
            "short",
            "gwzaaymlvkAbCdEfGhIjKlMnOpQrStU",
            "gwzaaymlvkAbCdEfGhIjKlMnOpQrSt-v",
        ] {
            let err = message_id(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidName {
                        kind: NameKind::MessageId,
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn durations_must_be_whole_seconds_in_range() {
        assert_eq!(whole_seconds("vt", Duration::ZERO).unwrap(), 0);
        assert_eq!(
            whole_seconds("vt", Duration::from_secs(MAX_SECONDS)).unwrap(),
            MAX_SECONDS
        );
        let sub = whole_seconds("vt", Duration::from_millis(1500)).unwrap_err();
        assert!(matches!(sub, Error::Config { field: "vt", .. }), "{sub}");
        let big = whole_seconds("delay", Duration::from_secs(MAX_SECONDS + 1)).unwrap_err();
        assert!(matches!(big, Error::Config { field: "delay", .. }), "{big}");
    }

    #[test]
    fn maxsize_range() {
        assert_eq!(maxsize(MaxSize::Unlimited).unwrap(), -1);
        assert_eq!(maxsize(MaxSize::Bytes(1024)).unwrap(), 1024);
        assert_eq!(maxsize(MaxSize::Bytes(65536)).unwrap(), 65536);
        assert!(maxsize(MaxSize::Bytes(1023)).is_err());
        assert!(maxsize(MaxSize::Bytes(65537)).is_err());
        assert!(maxsize(MaxSize::Bytes(65565)).is_err());
    }

    #[test]
    fn parse_int_matches_javascript() {
        assert_eq!(parse_int("30"), Some(30));
        assert_eq!(parse_int("  -1"), Some(-1));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("1.5"), Some(1));
        assert_eq!(parse_int("30000"), Some(30000));
        assert_eq!(parse_int("12abc"), Some(12));
        assert_eq!(parse_int("abc"), None);
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("-"), None);
        assert_eq!(parse_int("99999999999999999999"), None);
    }

    #[test]
    fn stored_values_are_read_leniently() {
        assert_eq!(stored_seconds("vt", "30").unwrap(), 30);
        assert_eq!(stored_seconds("vt", "1.5").unwrap(), 1);
        assert!(matches!(
            stored_seconds("vt", "x"),
            Err(Error::Rsmq {
                kind: RsmqErrorKind::InvalidValue,
                ..
            })
        ));
        assert!(stored_seconds("vt", "-3").is_err());
        assert_eq!(stored_maxsize("65565"), MaxSize::Bytes(65565));
        assert_eq!(stored_maxsize("-1"), MaxSize::Unlimited);
        assert_eq!(stored_maxsize("nonsense"), MaxSize::Unlimited);
    }
}
