//! The handler setters every consumer builder has, written once.
//!
//! A macro rather than a shared trait: the setters stay inherent methods, so callers need no
//! trait import and rustdoc lists them on each builder; and the trait's accessor would have to
//! expose the crate-private [`Handlers`](crate::handler::Handlers) in a public signature. The
//! macro expands inside the builder's `impl` block and needs from the builder only a
//! `handlers: Handlers` field and a `fn set_give_up(&mut self, hook: GiveUpHook)`.

/// Expands to `handler`, `handler_actors`, `handler_actors_on`, `handler_blocking`,
/// `handler_restarts`, `handler_fn`, `give_up` and `give_up_fn`. Extra attributes (an example)
/// are appended to `handler_blocking`'s documentation.
macro_rules! handler_setters {
    ($(#[$blocking_doc:meta])*) => {
        /// Adds an actix actor you started that handles deliveries. Several actors share the
        /// work, each delivery going to the next live one; their mailboxes are respected (a
        /// full mailbox makes the consumer wait, it never queues without bound).
        ///
        /// The consumer cannot restart an actor it did not start: if it stops or panics, the
        /// deliveries it had not taken go to the other actors; when none is left the consumer
        /// takes no new messages
        /// ([`HandlerEvent::Unavailable`](crate::HandlerEvent::Unavailable)) and holds what it
        /// has, touching it, until it stops. Prefer
        /// [`handler_actors`](Self::handler_actors), which restarts them.
        pub fn handler(mut self, recipient: ::actix::Recipient<$crate::Delivery>) -> Self {
            self.handlers.add_actor(recipient);
            self
        }

        /// Starts `count` handler actors made by `factory` on the arbiter the consumer starts
        /// on, and supervises them: one that stops or panics is replaced by a fresh one from the
        /// factory ([`HandlerEvent::Restarted`](crate::HandlerEvent::Restarted)), within the
        /// restart budget ([`handler_restarts`](Self::handler_restarts)).
        ///
        /// The message a handler was working on when it panicked counts as a failed attempt
        /// (requeued with the default delay); the ones still waiting in its mailbox go to a live
        /// actor and count for nothing. While no actor is alive the consumer takes no messages.
        ///
        /// These actors share the consumer's thread: they must not block it (see
        /// [`handler_actors_on`](Self::handler_actors_on) and
        /// [`handler_blocking`](Self::handler_blocking)).
        pub fn handler_actors<A, F>(mut self, count: usize, factory: F) -> Self
        where
            A: ::actix::Actor<Context = ::actix::Context<A>> + ::actix::Handler<$crate::Delivery>,
            F: Fn() -> A + Send + Sync + 'static,
        {
            self.handlers.add_factory(None, count, factory);
            self
        }

        /// As [`handler_actors`](Self::handler_actors), started (and restarted) on `arbiter`:
        /// their work then runs on that arbiter's thread, away from the consumer's.
        pub fn handler_actors_on<A, F>(
            mut self,
            arbiter: ::actix::ArbiterHandle,
            count: usize,
            factory: F,
        ) -> Self
        where
            A: ::actix::Actor<Context = ::actix::Context<A>> + ::actix::Handler<$crate::Delivery>,
            F: Fn() -> A + Send + Sync + 'static,
        {
            self.handlers.add_factory(Some(arbiter), count, factory);
            self
        }

        /// Handles deliveries with blocking code on `threads` threads of their own, each with a
        /// handler made by `factory` (a closure `FnMut(Delivery) -> HandlerResult` is one). The
        /// home for blocking I/O and heavy CPU work: the consumer's own work (heartbeats,
        /// receives, answers) goes on while the handlers block. A panic is caught: the message
        /// is requeued with the default delay and that thread's handler is replaced by a fresh
        /// one ([`HandlerEvent::Restarted`](crate::HandlerEvent::Restarted)).
        $(#[$blocking_doc])*
        pub fn handler_blocking<H, F>(mut self, threads: usize, factory: F) -> Self
        where
            H: $crate::BlockingHandler,
            F: Fn() -> H + Send + Sync + 'static,
        {
            self.handlers.set_blocking(threads, factory);
            self
        }

        /// The restart budget of supervised handler actors: at most `max_restarts` restarts of
        /// one actor within `within` (default 10 within 60 s). Past it, that actor is restarted
        /// again once the oldest restart leaves the window
        /// ([`HandlerEvent::RestartBudgetExhausted`](crate::HandlerEvent::RestartBudgetExhausted)).
        pub fn handler_restarts(mut self, max_restarts: u32, within: ::std::time::Duration) -> Self {
            self.handlers.budget = $crate::handler::RestartBudget {
                max_restarts,
                within,
            };
            self
        }

        /// Handles deliveries with an async closure (replaces any earlier closure). It runs on
        /// the consumer's thread and must not block (await instead, or use
        /// [`handler_blocking`](Self::handler_blocking)). A panic in it is caught: the message
        /// is requeued with the default delay.
        pub fn handler_fn<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn($crate::Delivery) -> Fut + Send + Sync + 'static,
            Fut: ::std::future::Future<Output = $crate::HandlerResult> + Send + 'static,
        {
            self.handlers.set_closure(f);
            self
        }

        /// Where messages past `max_attempts` go: an actor answering
        /// [`GiveUp`](crate::GiveUp) (`Ok` finishes the message, `Err` requeues it). Without a
        /// hook they are logged at `warn` and finished. Replaces an earlier hook.
        pub fn give_up(mut self, recipient: ::actix::Recipient<$crate::GiveUp>) -> Self {
            self.set_give_up($crate::handler::GiveUpHook::Recipient(recipient));
            self
        }

        /// As [`give_up`](Self::give_up), with an async closure.
        pub fn give_up_fn<F, Fut>(mut self, f: F) -> Self
        where
            F: Fn($crate::Delivery) -> Fut + Send + Sync + 'static,
            Fut: ::std::future::Future<Output = $crate::HandlerResult> + Send + 'static,
        {
            self.set_give_up($crate::handler::GiveUpHook::closure(f));
            self
        }
    };
}

pub(crate) use handler_setters;
