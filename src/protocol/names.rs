//! Validated topic and channel names.
//!
//! nsqd accepts names matching `^[.a-zA-Z0-9_-]+(#ephemeral)?$` with a length of 1..=64 bytes,
//! suffix included (`internal/protocol/names.go`). Anything else is a fatal `E_BAD_TOPIC` /
//! `E_BAD_CHANNEL`, and a name with a space or newline could inject a second command into the
//! line-based protocol. Both newtypes can only hold valid names, so neither can happen.

use std::{borrow::Borrow, fmt, ops::Deref, str::FromStr, sync::Arc};

use crate::error::{Error, NameKind};

/// The longest topic or channel name nsqd accepts, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The suffix that makes a topic or channel ephemeral (not persisted, deleted when unused).
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

fn validate(kind: NameKind, name: &str) -> Result<(), Error> {
    let reject = |reason: &'static str| Error::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(reject("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(reject("must be at most 64 bytes long"));
    }
    let stem = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    if stem.is_empty() {
        return Err(reject("needs at least one character before `#ephemeral`"));
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !stem.bytes().all(valid) {
        return Err(reject(
            "may only contain `.`, `_`, `-`, ASCII letters and digits",
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates `name` the way nsqd does.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidName`] when the name is empty, longer than 64 bytes, or has a
            /// character outside `[.a-zA-Z0-9_-]` (an optional `#ephemeral` suffix aside).
            pub fn new(name: impl AsRef<str>) -> Result<Self, Error> {
                let name = name.as_ref();
                validate($kind, name)?;
                Ok(Self(Arc::from(name)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// True for `#ephemeral` names, which nsqd never writes to disk and deletes when
            /// their last client goes away.
            pub fn is_ephemeral(&self) -> bool {
                self.0.ends_with(EPHEMERAL_SUFFIX)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&String> for $ty {
            type Error = Error;
            fn try_from(s: &String) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl From<&$ty> for $ty {
            fn from(name: &$ty) -> Self {
                name.clone()
            }
        }
    };
}

name_type!(
    /// A validated NSQ topic name. Cloning is cheap (a reference count).
    ///
    /// ```
    /// use actix_nsq::Topic;
    /// assert!(Topic::new("events").is_ok());
    /// assert!(Topic::new("events#ephemeral").unwrap().is_ephemeral());
    /// assert!(Topic::new("bad topic").is_err());
    /// ```
    Topic,
    NameKind::Topic
);

name_type!(
    /// A validated NSQ channel name. Cloning is cheap (a reference count).
    ///
    /// ```
    /// use actix_nsq::Channel;
    /// assert!(Channel::new("indexer").is_ok());
    /// assert!(Channel::new("tail#ephemeral").is_ok());
    /// assert!(Channel::new("a\nSUB x y").is_err());
    /// ```
    Channel,
    NameKind::Channel
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_nsqd_accepts() {
        // Valid names from nsqd's TestChannelTopicNames and names.go.
        for name in [
            "test",
            "test-with_period.",
            "test#ephemeral",
            ".",
            "a",
            "A-Z_0.9",
        ] {
            assert!(Topic::new(name).is_ok(), "{name}");
            assert!(Channel::new(name).is_ok(), "{name}");
        }
        let longest = "a".repeat(54) + EPHEMERAL_SUFFIX;
        assert_eq!(longest.len(), 64);
        assert!(Topic::new(&longest).is_ok());
        assert!(Topic::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_what_nsqd_rejects() {
        for name in [
            "",
            "test:ephemeral",
            "#ephemeral",
            "test#ephemeral#ephemeral",
            "has space",
            "new\nline",
            "cr\r",
            "tab\t",
            "ünïcode",
            "test#other",
        ] {
            assert!(Topic::new(name).is_err(), "{name:?}");
            assert!(Channel::new(name).is_err(), "{name:?}");
        }
        assert!(Topic::new("a".repeat(65)).is_err());
        let too_long = "a".repeat(55) + EPHEMERAL_SUFFIX;
        assert!(Channel::new(too_long).is_err());
    }

    #[test]
    fn error_names_the_kind_and_input() {
        let err = Channel::new("bad name").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("channel"), "{text}");
        assert!(text.contains("bad name"), "{text}");
        assert!(err.is_invalid_input());
    }

    #[test]
    fn ephemeral_flag() {
        assert!(!Topic::new("events").unwrap().is_ephemeral());
        assert!(Channel::new("c#ephemeral").unwrap().is_ephemeral());
    }
}
