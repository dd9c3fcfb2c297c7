//! Learning an nsqd's publish limits from its refusals.
//!
//! nsqd v1.3.0 does not advertise `--max-msg-size` / `--max-body-size` in its IDENTIFY reply,
//! but the fatal error that refuses an oversized publish states the limit
//! (`nsqd/protocol_v2.go`): `E_BAD_MESSAGE PUB message too big 200 > 100` (:790), `DPUB
//! message too big` (:906), `MPUB message too big` (:987) and `E_BAD_BODY MPUB body too big
//! 600 > 500` (:846). The first oversized publish costs the connection; remembering the limit
//! makes the producer refuse the next one before writing it. Where the nsqd's HTTP address
//! is known ([`ProducerBuilder::nsqd_with_http`](super::ProducerBuilder::nsqd_with_http)),
//! the limits are read from its `/config/max_msg_size` and `/config/max_body_size` (nsqd
//! `http.go` `doConfig`) every time the connection comes up, before any refusal.

use std::sync::Mutex;

use crate::{
    error::Error,
    protocol::{Command, ErrorCode, PublishLimits, ServerError},
};

/// A limit stated in an nsqd error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// `--max-msg-size`.
    MaxMsgSize(usize),
    /// `--max-body-size`.
    MaxBodySize(usize),
}

/// The limit an nsqd error states, if it is one of the "too big" refusals of a publish.
pub(crate) fn learn(error: &ServerError) -> Option<Learned> {
    let message = error.message.trim();
    let (kind, numbers) = match error.code {
        ErrorCode::BadMessage => ["PUB", "DPUB", "MPUB"]
            .iter()
            .find_map(|c| message.strip_prefix(c)?.strip_prefix(" message too big "))
            .map(|rest| (Learned::MaxMsgSize as fn(usize) -> Learned, rest))?,
        ErrorCode::BadBody => message
            .strip_prefix("MPUB body too big ")
            .map(|rest| (Learned::MaxBodySize as fn(usize) -> Learned, rest))?,
        _ => return None,
    };
    let (_, max) = numbers.split_once(" > ")?;
    let max: usize = max.trim().parse().ok()?;
    // A limit of 0 would refuse everything: not something to learn from one error line.
    (max > 0).then(|| kind(max))
}

/// One nsqd's limits: the configured ones, lowered by what it said in its errors or in its
/// HTTP `/config`.
#[derive(Debug)]
pub(crate) struct ServerLimits {
    configured: PublishLimits,
    current: Mutex<PublishLimits>,
}

impl ServerLimits {
    pub(crate) fn new(configured: PublishLimits) -> Self {
        Self {
            configured,
            current: Mutex::new(configured),
        }
    }

    pub(crate) fn get(&self) -> PublishLimits {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What nsqd's `/config/max_msg_size` and `/config/max_body_size` answered: they replace
    /// what was learned before (an nsqd restarted with other flags), capped by the configured
    /// limits, which the connection's encoder enforces anyway.
    pub(crate) fn set_from_server(&self, max_msg_size: usize, max_body_size: usize) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = PublishLimits {
            max_msg_size: max_msg_size.clamp(1, self.configured.max_msg_size),
            max_body_size: max_body_size.clamp(1, self.configured.max_body_size),
        };
    }

    /// Checks `command` against the limits known for this nsqd.
    pub(crate) fn check(&self, command: &Command) -> Result<(), Error> {
        self.get().check(command)
    }

    /// Lowers a limit (never raises one: the configured limits stay an upper bound). True
    /// when something changed.
    pub(crate) fn lower(&self, learned: Learned) -> bool {
        let mut limits = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match learned {
            Learned::MaxMsgSize(_) => &mut limits.max_msg_size,
            Learned::MaxBodySize(_) => &mut limits.max_body_size,
        };
        let (Learned::MaxMsgSize(max) | Learned::MaxBodySize(max)) = learned;
        if max < *slot {
            *slot = max;
            return true;
        }
        false
    }
}

/// Reads `--max-msg-size` and `--max-body-size` from nsqd's HTTP API.
pub(crate) async fn fetch(http: &str) -> Result<(usize, usize), Error> {
    let client = crate::http::NsqdHttpClient::new(http)?;
    let number = |value: serde_json::Value, opt: &str| {
        value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::Http {
                status: 200,
                message: format!("/config/{opt} answered {value}, not a size"),
            })
    };
    let msg = number(client.config_get("max_msg_size").await?, "max_msg_size")?;
    let body = number(client.config_get("max_body_size").await?, "max_body_size")?;
    Ok((msg, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Body, Topic};

    fn parse(frame: &str) -> Option<Learned> {
        learn(&ServerError::parse(frame.as_bytes()))
    }

    #[test]
    fn reads_the_limit_from_nsqds_refusals() {
        use Learned::*;
        assert_eq!(
            parse("E_BAD_MESSAGE PUB message too big 200 > 100"),
            Some(MaxMsgSize(100))
        );
        assert_eq!(
            parse("E_BAD_MESSAGE DPUB message too big 2000000 > 1048576"),
            Some(MaxMsgSize(1_048_576))
        );
        assert_eq!(
            parse("E_BAD_MESSAGE MPUB message too big 7 > 5"),
            Some(MaxMsgSize(5))
        );
        assert_eq!(
            parse("E_BAD_BODY MPUB body too big 600 > 500"),
            Some(MaxBodySize(500))
        );
    }

    #[test]
    fn ignores_everything_else() {
        for frame in [
            "E_BAD_MESSAGE PUB invalid message body size 0",
            "E_BAD_BODY IDENTIFY body too big 9 > 5",
            "E_BAD_MESSAGE PUB message too big 200 > ",
            "E_BAD_MESSAGE PUB message too big 200 > -1",
            "E_BAD_MESSAGE PUB message too big 200 > 0",
            "E_BAD_MESSAGE PUB message too big 200 > 99999999999999999999999",
            "E_INVALID PUB message too big 200 > 100",
            "E_BAD_BODY PUB message too big 200 > 100",
            "E_PUB_FAILED PUB failed",
        ] {
            assert_eq!(parse(frame), None, "{frame}");
        }
    }

    #[test]
    fn limits_only_go_down_and_then_refuse_before_writing() {
        let limits = ServerLimits::new(PublishLimits::NSQD_DEFAULT);
        let topic = Topic::new("t").unwrap();
        let publish = Command::Pub {
            topic,
            body: Body::new(vec![b'x'; 200]).unwrap(),
        };
        limits.check(&publish).unwrap();
        assert!(limits.lower(Learned::MaxMsgSize(100)));
        assert!(!limits.lower(Learned::MaxMsgSize(10 << 20)));
        assert!(matches!(
            limits.check(&publish),
            Err(Error::InvalidBody(crate::BodyError::TooLarge {
                size: 200,
                max: 100
            }))
        ));
        assert!(limits.lower(Learned::MaxBodySize(1000)));
        assert_eq!(
            limits.get(),
            PublishLimits {
                max_msg_size: 100,
                max_body_size: 1000
            }
        );
        // The server's own answer replaces what was learned, within the configured bounds.
        limits.set_from_server(200, 50 << 20);
        assert_eq!(
            limits.get(),
            PublishLimits {
                max_msg_size: 200,
                max_body_size: 5 << 20
            }
        );
    }
}
