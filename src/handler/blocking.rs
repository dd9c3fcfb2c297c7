//! Blocking handlers on threads of their own.
//!
//! A consumer's connections run on an actix arbiter thread: reading frames, answering
//! heartbeats, writing RDY and FIN all happen there. A handler that blocks that thread (file
//! or database I/O without async, heavy CPU work) stops all of it, and nsqd drops a client that
//! misses two heartbeats. Blocking handlers therefore run on a pool of dedicated threads; the
//! connection only waits for their answer.
//!
//! A panic is caught on the worker thread: the message counts as a failed attempt (the handler
//! saw it), the worker's handler is replaced by a fresh one from the factory, and the thread
//! lives on.

use std::{
    panic::AssertUnwindSafe,
    sync::{mpsc, Arc, Mutex, OnceLock},
    thread,
};

use actix::Recipient;
use tokio::sync::oneshot;

use super::{panic_message, Handled, HandlerEvent};
use crate::delivery::{Delivery, HandlerResult};

/// A handler that may block: it runs on one of the consumer's blocking threads, never on the
/// thread that drives the connections. Each thread has its own instance, made by the factory
/// given to [`ConsumerBuilder::handler_blocking`](crate::ConsumerBuilder::handler_blocking).
///
/// Closures `FnMut(Delivery) -> HandlerResult` are blocking handlers.
pub trait BlockingHandler: Send + 'static {
    /// Handles one delivery; the result answers it as for any handler (`Ok` finishes, `Err`
    /// requeues with backoff), unless the delivery was kept and is answered by its holder.
    fn handle(&mut self, delivery: Delivery) -> HandlerResult;
}

impl<F> BlockingHandler for F
where
    F: FnMut(Delivery) -> HandlerResult + Send + 'static,
{
    fn handle(&mut self, delivery: Delivery) -> HandlerResult {
        self(delivery)
    }
}

/// Makes a worker's handler.
pub(crate) type MakeBlocking = Arc<dyn Fn() -> Box<dyn BlockingHandler> + Send + Sync>;

type Job = (Delivery, oneshot::Sender<Handled>);

/// The blocking threads of one consumer. Dropping the pool ends them once their queue is empty.
pub(crate) struct BlockingPool {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    events: Arc<OnceLock<Recipient<HandlerEvent>>>,
}

impl BlockingPool {
    /// Starts `threads` workers (at least one), each with a handler from `make`.
    pub(crate) fn start(threads: usize, make: MakeBlocking) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let events: Arc<OnceLock<Recipient<HandlerEvent>>> = Arc::default();
        for slot in 0..threads.max(1) {
            let (rx, make, events) = (rx.clone(), make.clone(), events.clone());
            thread::Builder::new()
                .name(format!("nsq-blocking-{slot}"))
                .spawn(move || work(slot, &rx, &make, &events))?;
        }
        Ok(Arc::new(Self {
            jobs: Mutex::new(Some(tx)),
            events,
        }))
    }

    /// Where handler replacements are reported (once).
    pub(crate) fn report_to(&self, events: Recipient<HandlerEvent>) {
        let _ = self.events.set(events);
    }

    /// Queues `delivery` for a worker; the receiver gets what the handler made of it.
    pub(crate) fn dispatch(&self, delivery: Delivery) -> oneshot::Receiver<Handled> {
        let (tx, rx) = oneshot::channel();
        let queued = self
            .jobs
            .lock()
            .ok()
            .and_then(|jobs| jobs.as_ref().map(|jobs| jobs.send((delivery, tx))));
        // A failed send drops the job and its sender: the receiver reports `Gone`.
        drop(queued);
        rx
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        // Closing the queue lets every worker finish what it has and exit.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

fn work(
    slot: usize,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    make: &MakeBlocking,
    events: &OnceLock<Recipient<HandlerEvent>>,
) {
    let mut handler = make();
    let mut restarts = 0u32;
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok((delivery, answer)) = job else {
            return; // the pool is gone
        };
        let handled = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(delivery)))
        {
            Ok(result) => Handled::Returned(result),
            Err(panic) => {
                // The instance may be half-updated: replace it, as a supervisor would.
                handler = make();
                restarts = restarts.saturating_add(1);
                tracing::warn!(slot, restarts, "blocking handler panicked; replaced it");
                if let Some(events) = events.get() {
                    events.do_send(HandlerEvent::Restarted { slot, restarts });
                }
                Handled::Panicked(panic_message(&*panic))
            }
        };
        let _ = answer.send(handled);
    }
}
