//! Message ids and the Redis clock they are made from.
//!
//! Node rsmq (`_getQueue` with `uid`, `_makeid`) builds an id as the lowercase base36 of the
//! Redis `TIME` in microseconds (10 characters between 1973 and 2085) followed by 22 random
//! characters of `[A-Za-z0-9]`. PyRSMQ's `make_message_id` does the same. The fixed-width time
//! prefix makes ZSET ties within one millisecond sort chronologically, which keeps FIFO order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{distr::Alphanumeric, Rng};

/// Length of the random part of an id.
const RANDOM_LEN: usize = 22;
/// Length of the base36 time prefix Node decodes `sent` from (`id.slice(0, 10)`).
const TIME_PREFIX_LEN: usize = 10;

/// A reading of Redis `TIME`: seconds and microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RedisTime {
    pub(crate) sec: u64,
    pub(crate) usec: u64,
}

impl RedisTime {
    /// Milliseconds since the epoch, as Node builds its `ts` (`sec` + first 3 digits of `usec`).
    pub(crate) fn millis(self) -> u64 {
        self.sec
            .saturating_mul(1000)
            .saturating_add(self.usec / 1000)
    }

    fn micros(self) -> u64 {
        self.sec.saturating_mul(1_000_000).saturating_add(self.usec)
    }
}

/// A new message id for a message sent at `time`. The random part comes from `rand::rng()`, a
/// CSPRNG: two ids that collide would overwrite each other's bodies.
pub(crate) fn new_message_id(time: RedisTime) -> String {
    let mut id = to_base36(time.micros());
    id.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from),
    );
    id
}

/// When the message was sent, decoded from its id as Node does
/// (`parseInt(id.slice(0, 10), 36)`, microseconds). `None` when the id does not start with a
/// base36 digit. Ids from rsmq_async 8..=15 (30 characters) decode, like in Node, to nonsense.
pub(crate) fn sent_time(id: &str) -> Option<SystemTime> {
    let mut micros: u64 = 0;
    let mut digits = 0;
    for c in id.chars().take(TIME_PREFIX_LEN) {
        let Some(d) = c.to_digit(36) else { break };
        micros = micros.checked_mul(36)?.checked_add(u64::from(d))?;
        digits += 1;
    }
    if digits == 0 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_micros(micros))
}

/// Lowercase base36, as JavaScript's `Number.prototype.toString(36)`.
fn to_base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(16);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base36_matches_javascript() {
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(35), "z");
        assert_eq!(to_base36(36), "10");
        // From the reference: µs 1718000000123456 -> "gwzaaymlvk".
        assert_eq!(to_base36(1_718_000_000_123_456), "gwzaaymlvk");
    }

    #[test]
    fn ids_are_32_chars_with_a_decodable_prefix() {
        let time = RedisTime {
            sec: 1_718_000_000,
            usec: 123_456,
        };
        let id = new_message_id(time);
        assert_eq!(id.len(), 32);
        assert!(id.starts_with("gwzaaymlvk"));
        assert!(id[10..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(id, new_message_id(time));
        let sent = sent_time(&id).unwrap();
        assert_eq!(
            sent,
            UNIX_EPOCH + Duration::from_micros(1_718_000_000_123_456)
        );
        assert_eq!(time.millis(), 1_718_000_000_123);
    }

    #[test]
    fn sent_decoding_is_lenient() {
        assert_eq!(sent_time(""), None);
        assert_eq!(sent_time(":abc"), None);
        assert_eq!(
            sent_time("10:x"),
            Some(UNIX_EPOCH + Duration::from_micros(36))
        );
        // Upper case digits count, as in parseInt(.., 36).
        assert_eq!(sent_time("Z"), sent_time("z"));
    }
}
