//! Fuzz target `client_decoder`: see `actix_nsq_fuzz::client_decoder` for what it feeds and asserts.
//! `cargo +nightly fuzz run client_decoder` fuzzes it; a plain build replays a corpus.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| actix_nsq_fuzz::client_decoder(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    actix_nsq_fuzz::replay_main("client_decoder", actix_nsq_fuzz::client_decoder)
}
