//! [`MockLink`]: the test's handle on one connection a client opened to a [`MockNsqd`].

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tokio::sync::mpsc;

#[cfg(doc)]
use super::MockNsqd;
use super::Shared;
use crate::protocol::{
    Command, ErrorCode, Frame, IdentifyRequest, Message, MessageId, Response, ServerError,
};

/// What the test asks the server end to do.
#[derive(Debug)]
pub(super) enum Control {
    Frame(Frame),
    Disconnect,
}

/// What the server end knows about the link, shared with the handle.
#[derive(Debug, Default)]
pub(super) struct LinkState {
    /// Every command after IDENTIFY, in order.
    pub(super) log: Vec<Command>,
    /// The last RDY count.
    pub(super) rdy: u32,
    /// Messages pushed and not yet answered with FIN or REQ.
    pub(super) in_flight: HashSet<MessageId>,
    /// Errors to answer the next publishes with, in order.
    pub(super) publish_errors: VecDeque<ServerError>,
    /// Leave publishes unanswered (the test answers them).
    pub(super) hold_publishes: bool,
    /// The connection is gone (either end closed it).
    pub(super) closed: bool,
}

/// One connection a client opened to a [`MockNsqd`], after its IDENTIFY was answered.
///
/// Push frames with [`send_message`](Self::send_message), [`heartbeat`](Self::heartbeat),
/// [`error`](Self::error), ...; read back what the client sent with
/// [`next_command`](Self::next_command) (in order, waiting) or [`commands`](Self::commands)
/// (everything so far). The server end answers on its own as nsqd does: `OK` to SUB,
/// `CLOSE_WAIT` to CLS, `OK` to PUB/MPUB/DPUB (unless told otherwise), nothing to RDY, FIN,
/// REQ, TOUCH and NOP. Frames are written in the order they are pushed; a fatal error frame
/// (any code but `E_FIN_FAILED`, `E_REQ_FAILED`, `E_TOUCH_FAILED`) closes the connection
/// after it, as nsqd does.
///
/// Dropping the handle leaves the connection up and still answering.
#[derive(Debug)]
pub struct MockLink {
    shared: Arc<Shared>,
    number: u64,
    identify: IdentifyRequest,
    control: mpsc::UnboundedSender<Control>,
    commands: mpsc::UnboundedReceiver<Command>,
    state: Arc<Mutex<LinkState>>,
}

/// A command's line as nsqd reads it, without the newline or body (`"RDY 5"`,
/// `"REQ 0000000000000001 0"`, `"PUB events"`).
pub(super) fn line(command: &Command) -> String {
    let bytes = command.to_bytes();
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl MockLink {
    pub(super) fn new(
        shared: Arc<Shared>,
        identify: IdentifyRequest,
        control: mpsc::UnboundedSender<Control>,
        commands: mpsc::UnboundedReceiver<Command>,
        state: Arc<Mutex<LinkState>>,
    ) -> Self {
        let number = shared.next_link();
        Self {
            shared,
            number,
            identify,
            control,
            commands,
            state,
        }
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// 1 for the first connection accepted by this mock, 2 for the next, ...
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The IDENTIFY the client sent.
    pub fn identify(&self) -> &IdentifyRequest {
        &self.identify
    }

    /// Pushes any frame.
    pub fn send_frame(&self, frame: Frame) {
        // A closed link drops what is pushed at it, as a socket to a gone peer would.
        let _ = self.control.send(Control::Frame(frame));
    }

    /// Delivers a message with a fresh id, first attempt, timestamp now. Returns its id, for
    /// matching the FIN or REQ that answers it. Sent whatever the client's RDY (a scripted
    /// server): check [`rdy`](Self::rdy) first to behave as nsqd.
    pub fn send_message(&self, body: impl Into<Bytes>) -> MessageId {
        let id = self.shared.next_message_id();
        self.send_message_with(id, 1, body)
    }

    /// Delivers a message with this id and attempt count (nsqd counts this delivery in it,
    /// so a first delivery has 1).
    pub fn send_message_with(
        &self,
        id: MessageId,
        attempts: u16,
        body: impl Into<Bytes>,
    ) -> MessageId {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.state().in_flight.insert(id);
        self.send_frame(Frame::Message(Message::new(
            id,
            nanos,
            attempts,
            body.into(),
        )));
        id
    }

    /// Sends `_heartbeat_` (the client answers NOP).
    pub fn heartbeat(&self) {
        self.send_frame(Frame::Response(Response::Heartbeat));
    }

    /// Sends `OK` (the answer to a held publish, see
    /// [`hold_publishes`](Self::hold_publishes)).
    pub fn respond_ok(&self) {
        self.send_frame(Frame::Response(Response::Ok));
    }

    /// Sends an error frame; a fatal one closes the connection after it, as nsqd does.
    pub fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.send_frame(Frame::Error(ServerError::new(code, message)));
    }

    /// Closes the connection from the server end, after the frames pushed before.
    pub fn disconnect(&self) {
        let _ = self.control.send(Control::Disconnect);
    }

    /// Answers the next publish (PUB, MPUB or DPUB) with this error instead of `OK`. Each call
    /// queues one answer. nsqd closes the connection after every publish error.
    pub fn fail_next_publish(&self, code: ErrorCode, message: impl Into<String>) {
        self.state()
            .publish_errors
            .push_back(ServerError::new(code, message));
    }

    /// Leaves publishes unanswered while `hold` is true; answer them with
    /// [`respond_ok`](Self::respond_ok) or [`error`](Self::error).
    pub fn hold_publishes(&self, hold: bool) {
        self.state().hold_publishes = hold;
    }

    /// The next command the client sent after IDENTIFY, waiting for it; `None` once the
    /// connection is closed and every command has been read.
    pub async fn next_command(&mut self) -> Option<Command> {
        self.commands.recv().await
    }

    /// The next command if one has arrived, without waiting.
    pub fn try_next_command(&mut self) -> Option<Command> {
        self.commands.try_recv().ok()
    }

    /// The next command's line (`"RDY 1"`, `"FIN 0000000000000001"`), waiting for it.
    pub async fn next_line(&mut self) -> Option<String> {
        self.next_command().await.map(|c| line(&c))
    }

    /// Every command the client sent after IDENTIFY, in order (whatever
    /// [`next_command`](Self::next_command) has consumed).
    pub fn commands(&self) -> Vec<Command> {
        self.state().log.clone()
    }

    /// [`commands`](Self::commands) as lines, without bodies: `["SUB events tests", "RDY 1"]`.
    pub fn lines(&self) -> Vec<String> {
        self.state().log.iter().map(line).collect()
    }

    /// The client's current RDY count (0 until it sends one).
    pub fn rdy(&self) -> u32 {
        self.state().rdy
    }

    /// Messages pushed on this link and not yet answered with FIN or REQ.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight.len()
    }

    /// True once the connection is closed, from either end.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }
}
