//! The in-process test nsqd against raw protocol clients: nsqd's own protocol tests, ported,
//! plus recording and fault injection.

mod delivery;
mod faults;
mod protocol;
mod raw;
