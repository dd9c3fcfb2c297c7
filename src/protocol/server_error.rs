//! `E_*` error frames and which of them end the connection.
//!
//! nsqd sends `"<E_CODE> <description>"`, so codes are matched by prefix. Every code except
//! `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` is a `FatalClientErr`: nsqd closes the
//! connection right after the frame (`nsqd/protocol_v2.go`, `IOLoop`).

use std::fmt;

/// An nsqd error code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `E_INVALID`: unknown command, wrong state, bad parameter.
    Invalid,
    /// `E_BAD_BODY`: malformed body (IDENTIFY JSON, MPUB framing, sizes).
    BadBody,
    /// `E_BAD_TOPIC`: invalid topic name.
    BadTopic,
    /// `E_BAD_CHANNEL`: invalid channel name.
    BadChannel,
    /// `E_BAD_MESSAGE`: empty or oversized message.
    BadMessage,
    /// `E_BAD_PROTOCOL`: wrong magic.
    BadProtocol,
    /// `E_PUB_FAILED`: the topic is exiting or its backend failed.
    PubFailed,
    /// `E_MPUB_FAILED`: as `E_PUB_FAILED`, for MPUB.
    MpubFailed,
    /// `E_DPUB_FAILED`: as `E_PUB_FAILED`, for DPUB.
    DpubFailed,
    /// `E_SUB_FAILED`: channel exiting or too many consumers.
    SubFailed,
    /// `E_IDENTIFY_FAILED`: a feature upgrade failed, or snappy and deflate were both asked for.
    IdentifyFailed,
    /// `E_AUTH_DISABLED`: AUTH sent to a server that does not use it.
    AuthDisabled,
    /// `E_AUTH_FAILED`: the auth server refused or could not be reached.
    AuthFailed,
    /// `E_AUTH_ERROR`: the auth server answered with an error.
    AuthError,
    /// `E_AUTH_FIRST`: a command that needs authorization came before AUTH.
    AuthFirst,
    /// `E_UNAUTHORIZED`: the identity may not do this.
    Unauthorized,
    /// `E_FIN_FAILED` (non-fatal): usually "not in flight" after a timeout.
    FinFailed,
    /// `E_REQ_FAILED` (non-fatal).
    ReqFailed,
    /// `E_TOUCH_FAILED` (non-fatal).
    TouchFailed,
    /// A code this client does not know; treated as fatal, as nsqd closes on all but three.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::AuthError => "E_AUTH_ERROR",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::Other(code) => code,
        }
    }

    /// Parses a code (the first word of an error frame).
    pub fn parse(code: &str) -> Self {
        match code {
            "E_INVALID" => ErrorCode::Invalid,
            "E_BAD_BODY" => ErrorCode::BadBody,
            "E_BAD_TOPIC" => ErrorCode::BadTopic,
            "E_BAD_CHANNEL" => ErrorCode::BadChannel,
            "E_BAD_MESSAGE" => ErrorCode::BadMessage,
            "E_BAD_PROTOCOL" => ErrorCode::BadProtocol,
            "E_PUB_FAILED" => ErrorCode::PubFailed,
            "E_MPUB_FAILED" => ErrorCode::MpubFailed,
            "E_DPUB_FAILED" => ErrorCode::DpubFailed,
            "E_SUB_FAILED" => ErrorCode::SubFailed,
            "E_IDENTIFY_FAILED" => ErrorCode::IdentifyFailed,
            "E_AUTH_DISABLED" => ErrorCode::AuthDisabled,
            "E_AUTH_FAILED" => ErrorCode::AuthFailed,
            "E_AUTH_ERROR" => ErrorCode::AuthError,
            "E_AUTH_FIRST" => ErrorCode::AuthFirst,
            "E_UNAUTHORIZED" => ErrorCode::Unauthorized,
            "E_FIN_FAILED" => ErrorCode::FinFailed,
            "E_REQ_FAILED" => ErrorCode::ReqFailed,
            "E_TOUCH_FAILED" => ErrorCode::TouchFailed,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// False only for `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED`: after every other
    /// code nsqd closes the connection.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }

    /// True for the authentication codes, which reconnecting does not fix quickly.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ErrorCode::AuthDisabled
                | ErrorCode::AuthFailed
                | ErrorCode::AuthError
                | ErrorCode::AuthFirst
                | ErrorCode::Unauthorized
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error frame: a code and nsqd's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
#[non_exhaustive]
pub struct ServerError {
    /// The parsed code.
    pub code: ErrorCode,
    /// The rest of the frame after the code, as text.
    pub message: String,
}

impl ServerError {
    /// Builds an error frame's content (used by the test server).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Parses an error frame's data: the code is everything up to the first space.
    pub fn parse(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let (code, message) = match text.split_once(' ') {
            Some((code, message)) => (code, message),
            None => (text.as_ref(), ""),
        };
        Self {
            code: ErrorCode::parse(code),
            message: message.to_owned(),
        }
    }

    /// True unless the code is one of the three non-fatal ones.
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }

    /// The frame data: `"<code> <message>"`, or the bare code when the message is empty.
    pub fn to_wire(&self) -> String {
        if self.message.is_empty() {
            self.code.as_str().to_owned()
        } else {
            format!("{} {}", self.code, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_prefix() {
        let e = ServerError::parse(b"E_FIN_FAILED FIN 0a1b2c3d4e5f6789 failed ID not in flight");
        assert_eq!(e.code, ErrorCode::FinFailed);
        assert_eq!(e.message, "FIN 0a1b2c3d4e5f6789 failed ID not in flight");
        assert!(!e.is_fatal());
        assert_eq!(ServerError::parse(b"E_INVALID").code, ErrorCode::Invalid);
        let unknown = ServerError::parse(b"E_NEW_THING what");
        assert_eq!(unknown.code, ErrorCode::Other("E_NEW_THING".into()));
        assert!(unknown.is_fatal());
    }

    #[test]
    fn only_three_codes_are_non_fatal() {
        let all = [
            "E_INVALID",
            "E_BAD_BODY",
            "E_BAD_TOPIC",
            "E_BAD_CHANNEL",
            "E_BAD_MESSAGE",
            "E_BAD_PROTOCOL",
            "E_PUB_FAILED",
            "E_MPUB_FAILED",
            "E_DPUB_FAILED",
            "E_SUB_FAILED",
            "E_IDENTIFY_FAILED",
            "E_AUTH_DISABLED",
            "E_AUTH_FAILED",
            "E_AUTH_ERROR",
            "E_AUTH_FIRST",
            "E_UNAUTHORIZED",
            "E_FIN_FAILED",
            "E_REQ_FAILED",
            "E_TOUCH_FAILED",
        ];
        let non_fatal: Vec<_> = all
            .iter()
            .filter(|c| !ErrorCode::parse(c).is_fatal())
            .collect();
        assert_eq!(
            non_fatal,
            [&"E_FIN_FAILED", &"E_REQ_FAILED", &"E_TOUCH_FAILED"]
        );
        for code in all {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
    }

    #[test]
    fn round_trips_to_wire() {
        let e = ServerError::new(ErrorCode::BadTopic, "PUB topic name \"a b\" is not valid");
        assert_eq!(ServerError::parse(e.to_wire().as_bytes()), e);
        assert_eq!(
            ServerError::new(ErrorCode::Invalid, "").to_wire(),
            "E_INVALID"
        );
    }
}
