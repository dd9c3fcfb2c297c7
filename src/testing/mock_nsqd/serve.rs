//! The mock's end of one connection: nsqd's replies to the handshake and to the commands it
//! answers (`nsqd/protocol_v2.go`), every command recorded, and the frames a test pushes.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, DuplexStream},
    sync::mpsc,
};
use tokio_util::codec::Framed;

use super::{
    link::{Control, LinkState, MockLink},
    Shared,
};
use crate::{
    protocol::{Command, CommandDecoder, ErrorCode, Frame, Response, ServerError, MAGIC_V2},
    testing::nsqd::identify_without_upgrades,
};

type Wire = Framed<DuplexStream, CommandDecoder>;

fn lock(state: &Mutex<LinkState>) -> std::sync::MutexGuard<'_, LinkState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one connection until either end closes it.
pub(super) async fn serve(mut stream: DuplexStream, shared: Arc<Shared>) {
    let mut magic = [0u8; 4];
    if stream.read_exact(&mut magic).await.is_err() {
        return;
    }
    let max_body = usize::try_from(shared.opts.max_body_size).unwrap_or(usize::MAX);
    let mut wire = Framed::new(stream, CommandDecoder::new(max_body));
    if &magic != MAGIC_V2 {
        // As the test nsqd (nsqd `tcp.go`): E_BAD_PROTOCOL, then close.
        let _ = wire
            .send(Frame::Error(ServerError::new(ErrorCode::BadProtocol, "")))
            .await;
        return;
    }
    let identify = match wire.next().await {
        Some(Ok(Command::Identify(request))) => request,
        Some(Ok(other)) => {
            // nsqd allows commands before IDENTIFY; every client this mock serves sends it
            // first, so anything else is a test or client bug worth a loud answer.
            let text = format!("MockNsqd expects IDENTIFY first, got {}", other.name());
            let _ = wire
                .send(Frame::Error(ServerError::new(ErrorCode::Invalid, text)))
                .await;
            return;
        }
        Some(Err(error)) => {
            let _ = wire.send(invalid(&error)).await;
            return;
        }
        None => return,
    };
    // The typed request back to JSON, then through the test nsqd's own IDENTIFY: the same
    // validation, the same errors and the same reply as `TestNsqd` (nsqd v1.3.0).
    let body = serde_json::to_vec(&identify).unwrap_or_default();
    let reply = identify_without_upgrades(&shared.opts, &body);
    let accepted = reply.is_ok();
    let frame = reply.unwrap_or_else(Frame::Error);
    if wire.send(frame).await.is_err() || !accepted {
        return;
    }
    let (control_tx, control) = mpsc::unbounded_channel();
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new(LinkState::default()));
    let link = MockLink::new(
        shared.clone(),
        *identify,
        control_tx,
        commands,
        state.clone(),
    );
    if shared.accept_tx.send(link).is_err() {
        return;
    }
    run(wire, control, &commands_tx, &state).await;
    lock(&state).closed = true;
}

fn invalid(error: &crate::Error) -> Frame {
    Frame::Error(ServerError::new(ErrorCode::Invalid, error.to_string()))
}

/// Reads commands and writes frames until the client hangs up, the test disconnects, or a
/// fatal error is sent (nsqd closes after every error but `E_FIN_FAILED`, `E_REQ_FAILED` and
/// `E_TOUCH_FAILED`).
async fn run(
    mut wire: Wire,
    mut control: mpsc::UnboundedReceiver<Control>,
    commands: &mpsc::UnboundedSender<Command>,
    state: &Mutex<LinkState>,
) {
    let mut control_open = true;
    loop {
        tokio::select! {
            // Frames the test pushed go out before more commands are read: a test that pushes
            // a message and then waits for the answer sees them in that order.
            biased;
            order = control.recv(), if control_open => match order {
                Some(Control::Frame(frame)) => {
                    let fatal = matches!(&frame, Frame::Error(e) if e.is_fatal());
                    if wire.send(frame).await.is_err() || fatal {
                        return;
                    }
                }
                Some(Control::Disconnect) => return,
                // The test dropped its handle: keep answering the client.
                None => control_open = false,
            },
            read = wire.next() => match read {
                Some(Ok(command)) => {
                    let reply = answer(&command, state);
                    let _ = commands.send(command);
                    if let Some(frame) = reply {
                        let fatal = matches!(&frame, Frame::Error(e) if e.is_fatal());
                        if wire.send(frame).await.is_err() || fatal {
                            return;
                        }
                    }
                }
                Some(Err(error)) => {
                    let _ = wire.send(invalid(&error)).await;
                    return;
                }
                None => return,
            },
        }
    }
}

/// Records `command` and returns nsqd's answer to it, if it has one.
fn answer(command: &Command, state: &Mutex<LinkState>) -> Option<Frame> {
    let mut state = lock(state);
    state.log.push(command.clone());
    match command {
        Command::Rdy(count) => {
            state.rdy = *count;
            None
        }
        Command::Fin(id) | Command::Req { id, .. } => {
            state.in_flight.remove(id);
            None
        }
        Command::Touch(_) | Command::Nop => None,
        Command::Sub { .. } => Some(Frame::Response(Response::Ok)),
        Command::Cls => Some(Frame::Response(Response::CloseWait)),
        Command::Pub { .. } | Command::Mpub { .. } | Command::Dpub { .. } => {
            if let Some(error) = state.publish_errors.pop_front() {
                Some(Frame::Error(error))
            } else if state.hold_publishes {
                None
            } else {
                Some(Frame::Response(Response::Ok))
            }
        }
        // nsqd: a second IDENTIFY is `E_INVALID cannot IDENTIFY in current state`; AUTH
        // with auth disabled is `E_AUTH_DISABLED AUTH disabled`. Both close the connection.
        Command::Identify(_) => Some(Frame::Error(ServerError::new(
            ErrorCode::Invalid,
            "cannot IDENTIFY in current state",
        ))),
        Command::Auth(_) => Some(Frame::Error(ServerError::new(
            ErrorCode::AuthDisabled,
            "AUTH disabled",
        ))),
    }
}
