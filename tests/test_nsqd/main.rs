//! The in-process test nsqd against raw protocol clients: nsqd's own protocol tests, ported,
//! plus recording, fault injection and connection upgrades (TLS, snappy, deflate).

mod delivery;
mod faults;
mod fidelity;
mod layers;
mod protocol;
mod raw;
mod upgrades_client;
mod upgrades_consume;
mod upgrades_raw;
