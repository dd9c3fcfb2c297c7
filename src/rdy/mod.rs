//! Consumer flow control, as pure policy: how `max_in_flight` becomes RDY counts on each nsqd
//! connection, how RDY rotates when connections outnumber it, and the consumer-wide backoff.
//!
//! No actors, timers or sockets here: the policy takes events with the current `Instant` (and
//! an RNG where randomness is needed) and returns actions for the coordinator actor to carry
//! out. The algorithms follow go-nsq (`consumer.go`, `config.go`); where they differ, the code
//! says why.

mod backoff;
mod config;

pub use backoff::BackoffStrategy;
pub(crate) use config::check_range;
pub use config::FlowControl;
