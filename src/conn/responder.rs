//! The way back from a [`Delivery`](crate::Delivery) to the connection that delivered it.
//!
//! An id is only valid on the link that delivered it (nsqd: "client does not own message"), so
//! each link gets its own responder. When the link dies the responder is killed: later answers
//! fail with [`Error::ConnectionLost`]. They still reach the connection actor, through the
//! channel it keeps for its whole life, so that the flow policy can release the slots the lost
//! link's messages held.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tokio::sync::mpsc;

use crate::{
    delivery::{Action, DeliveryId, Meta, Respond},
    error::Error,
    protocol::MessageId,
    rdy::LinkId,
};

/// An answer travelling from a delivery to its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub(crate) id: MessageId,
    pub(crate) action: Action,
    pub(crate) attempts: u32,
    /// The link that delivered the message.
    pub(crate) link: LinkId,
}

/// One link's way back. All links of a connection share the channel (unbounded is safe:
/// answers are bounded by the messages in flight, which RDY bounds).
pub(crate) struct NsqResponder {
    tx: mpsc::UnboundedSender<Answer>,
    addr: Arc<str>,
    link: LinkId,
    alive: AtomicBool,
}

impl NsqResponder {
    pub(crate) fn new(
        tx: mpsc::UnboundedSender<Answer>,
        addr: Arc<str>,
        link: LinkId,
    ) -> Arc<Self> {
        Arc::new(Self {
            tx,
            addr,
            link,
            alive: AtomicBool::new(true),
        })
    }

    /// The link died: later answers fail with `ConnectionLost`.
    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::Release);
    }
}

impl Respond for NsqResponder {
    fn respond(&self, meta: &Meta, action: Action) -> Result<(), Error> {
        let DeliveryId::Nsq(id) = meta.id else {
            return Err(Error::Handler("not an NSQ message".into()));
        };
        let lost = || Error::ConnectionLost {
            addr: self.addr.to_string(),
        };
        let answer = Answer {
            id,
            action,
            attempts: meta.attempts,
            link: self.link,
        };
        if self.alive.load(Ordering::Acquire) {
            return self.tx.send(answer).map_err(|_| lost());
        }
        // Too late for nsqd, but the connection still counts the message as done, to free its
        // flow-control slot.
        if action != Action::Touch {
            let _ = self.tx.send(answer);
        }
        Err(lost())
    }
}
