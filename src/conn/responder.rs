//! The way back from a [`Delivery`](crate::Delivery) to the connection that delivered it.
//!
//! Each link (one successful handshake) gets its own channel. The receiving end is a stream of
//! the connection actor's context, so when the link dies the receiver goes with it and every
//! answer still pending fails with [`Error::ConnectionLost`]: an id is only valid on the
//! connection that delivered it (nsqd: "client does not own message").

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    delivery::{Action, DeliveryId, Meta, Respond},
    error::Error,
    protocol::MessageId,
};

/// An answer travelling from a delivery to its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub(crate) id: MessageId,
    pub(crate) action: Action,
    pub(crate) attempts: u32,
}

pub(crate) struct NsqResponder {
    tx: mpsc::UnboundedSender<Answer>,
    addr: Arc<str>,
}

impl NsqResponder {
    /// A responder and the stream of answers it produces. Unbounded is safe: answers are
    /// bounded by the messages in flight, which RDY bounds.
    pub(crate) fn channel(addr: Arc<str>) -> (Arc<Self>, mpsc::UnboundedReceiver<Answer>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { tx, addr }), rx)
    }
}

impl Respond for NsqResponder {
    fn respond(&self, meta: &Meta, action: Action) -> Result<(), Error> {
        let DeliveryId::Nsq(id) = meta.id else {
            return Err(Error::Handler("not an NSQ message".into()));
        };
        self.tx
            .send(Answer {
                id,
                action,
                attempts: meta.attempts,
            })
            .map_err(|_| Error::ConnectionLost {
                addr: self.addr.to_string(),
            })
    }
}
