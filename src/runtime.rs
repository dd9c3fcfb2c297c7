//! Where actors can be started.
//!
//! actix starts an actor by spawning its context on the current thread's tokio `LocalSet`
//! (`actix_rt::spawn`). Outside a running actix `System` that spawn panics, and the context
//! being dropped during that unwind panics again, which aborts the process. `start()` checks
//! first and returns [`Error::NoActixSystem`] instead.

use crate::error::Error;

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
