//! The values RSMQ commands take and return.

use std::time::{Duration, SystemTime};

/// The largest message a queue accepts (`maxsize`), counted in **bytes** of UTF-8.
///
/// Node rsmq counts UTF-16 code units, so for non-ASCII text this client is the stricter one: a
/// body it accepts is never too long for Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaxSize {
    /// No limit (`-1` in the queue hash).
    Unlimited,
    /// At most this many bytes. Queues created or changed by this client use 1024..=65536, as
    /// Node requires; a queue made by PyRSMQ may hold up to 65565.
    Bytes(u32),
}

/// The settings of a new queue (`createQueue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "settings do nothing until passed on"]
pub struct QueueOptions {
    pub(crate) vt: Duration,
    pub(crate) delay: Duration,
    pub(crate) maxsize: MaxSize,
}

impl QueueOptions {
    /// Node rsmq's default visibility timeout.
    pub const DEFAULT_VT: Duration = Duration::from_secs(30);
    /// Node rsmq's default delivery delay.
    pub const DEFAULT_DELAY: Duration = Duration::ZERO;
    /// Node rsmq's default size limit (PyRSMQ's default, 65565, is a typo of this).
    pub const DEFAULT_MAXSIZE: MaxSize = MaxSize::Bytes(65536);

    /// Node's defaults: `vt` 30 s, `delay` 0, `maxsize` 65536 bytes.
    pub fn new() -> Self {
        Self {
            vt: Self::DEFAULT_VT,
            delay: Self::DEFAULT_DELAY,
            maxsize: Self::DEFAULT_MAXSIZE,
        }
    }

    /// How long a received message stays hidden (whole seconds, 0..=9 999 999).
    pub fn vt(mut self, vt: Duration) -> Self {
        self.vt = vt;
        self
    }

    /// How long a new message stays hidden after it is sent (whole seconds, 0..=9 999 999).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The size limit: [`MaxSize::Unlimited`] or 1024..=65536 bytes.
    pub fn maxsize(mut self, maxsize: MaxSize) -> Self {
        self.maxsize = maxsize;
        self
    }
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The attributes `setQueueAttributes` changes; at least one must be given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "settings do nothing until passed on"]
pub struct QueueChanges {
    pub(crate) vt: Option<Duration>,
    pub(crate) delay: Option<Duration>,
    pub(crate) maxsize: Option<MaxSize>,
}

impl QueueChanges {
    /// No changes yet; add at least one.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new default visibility timeout (whole seconds, 0..=9 999 999).
    pub fn vt(mut self, vt: Duration) -> Self {
        self.vt = Some(vt);
        self
    }

    /// A new default delivery delay (whole seconds, 0..=9 999 999).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// A new size limit: [`MaxSize::Unlimited`] or 1024..=65536 bytes.
    pub fn maxsize(mut self, maxsize: MaxSize) -> Self {
        self.maxsize = Some(maxsize);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.vt.is_none() && self.delay.is_none() && self.maxsize.is_none()
    }
}

/// A queue's settings and counters (`getQueueAttributes`), read as Node reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueAttributes {
    /// Default visibility timeout of received messages.
    pub vt: Duration,
    /// Default delay of new messages.
    pub delay: Duration,
    /// The size limit of new messages.
    pub maxsize: MaxSize,
    /// How many times messages were received or popped (a redelivery counts again).
    pub totalrecv: u64,
    /// How many messages were sent.
    pub totalsent: u64,
    /// When the queue was created (Redis clock, whole seconds); the epoch if unreadable.
    pub created: SystemTime,
    /// When the queue's settings last changed (Redis clock, whole seconds); the epoch if
    /// unreadable.
    pub modified: SystemTime,
    /// Messages in the queue, visible or not.
    pub msgs: u64,
    /// Messages that are hidden (delayed or received). Like Node, this counts messages whose
    /// visibility time is at or after the start of the current Redis second.
    pub hiddenmsgs: u64,
}

/// A received or popped message, with Node rsmq's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RsmqMessage {
    /// The message id. Normally 32 characters; older rsmq_async versions wrote 30.
    pub id: String,
    /// The body.
    pub message: String,
    /// How many times the message has been received, this time included. Pass it to
    /// [`Rsmq::delete_message_checked`](super::Rsmq::delete_message_checked) as the receipt.
    pub rc: u64,
    /// When the message was first received (Redis clock, millisecond precision).
    pub fr: SystemTime,
    /// When the message was sent, decoded from its id (microsecond precision); `None` when the
    /// id does not start with a base36 time.
    pub sent: Option<SystemTime>,
}

/// What [`Rsmq::delete_message_checked`](super::Rsmq::delete_message_checked) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeleteOutcome {
    /// The message was still ours (same receive count, still hidden) and is gone.
    Deleted,
    /// The message exists but our receipt is stale: it was received again since, or its
    /// visibility timeout ran out. Nothing was changed.
    NotOwned,
    /// No such message (already deleted, popped, or never there).
    NotFound,
}

/// What [`Rsmq::change_message_visibility_checked`](super::Rsmq::change_message_visibility_checked)
/// did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VisibilityOutcome {
    /// The message was still ours and is now hidden until the new timeout.
    Changed,
    /// The message exists but our receipt is stale. Nothing was changed.
    NotOwned,
    /// No such message.
    NotFound,
}
