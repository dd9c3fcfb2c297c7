//! Where actors can be started.
//!
//! actix starts an actor by spawning its context on the current thread's tokio `LocalSet`
//! (`actix_rt::spawn`). Outside a running actix `System` that spawn panics, and the context
//! being dropped during that unwind panics again, which aborts the process. `start()` checks
//! first and returns [`Error::NoActixSystem`] instead.

use actix::{Actor, Addr, AsyncContext, Context, Supervised};
use tracing::Instrument;

use crate::error::Error;

/// As `actix::Supervisor::start`, with every poll of the actor inside `span`: whatever the
/// actor logs (handlers, timers, spawned futures, restarts) carries the span's fields, so the
/// actors of two consumers in one process can be told apart. The loop is actix's own
/// (actix 0.13 `supervisor.rs`): poll the context; when it stops, restart it unless every
/// address is gone.
pub(crate) fn start_supervised_in<A, F>(span: tracing::Span, f: F) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
    F: FnOnce(&mut Context<A>) -> A,
{
    let mut ctx = Context::new();
    let act = span.in_scope(|| f(&mut ctx));
    let addr = ctx.address();
    let mut fut = ctx.into_future(act);
    actix_rt::spawn(
        async move {
            loop {
                (&mut fut).await;
                if !fut.restart() {
                    return;
                }
            }
        }
        .instrument(span),
    );
    addr
}

/// `Ok` when the calling thread runs an actix `System` (inside `#[actix_rt::main]`,
/// `#[actix_rt::test]`, `System::new().block_on(..)`, an actix-web worker or an actor).
pub(crate) fn ensure_actix_system(what: &'static str) -> Result<(), Error> {
    // Both: a System registered on this thread, and its runtime entered (System::new() alone
    // registers the System without entering it; `block_on` enters it).
    let in_system = actix_rt::System::try_current().is_some();
    let in_runtime = tokio::runtime::Handle::try_current().is_ok();
    if in_system && in_runtime {
        Ok(())
    } else {
        Err(Error::NoActixSystem(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_system_is_an_error_inside_is_fine() {
        assert!(matches!(
            ensure_actix_system("x"),
            Err(Error::NoActixSystem("x"))
        ));
        // A tokio runtime without actix is not enough.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(ensure_actix_system("x").is_err());
        });
        let system = actix_rt::System::new();
        // Registered but not entered yet.
        assert!(ensure_actix_system("x").is_err());
        system.block_on(async {
            ensure_actix_system("x").unwrap();
        });
    }
}
