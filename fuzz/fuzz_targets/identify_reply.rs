//! Fuzz target `identify_reply`: see `actix_nsq_fuzz::identify_reply` for what it feeds and asserts.
//! `cargo +nightly fuzz run identify_reply` fuzzes it; a plain build replays a corpus.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| actix_nsq_fuzz::identify_reply(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    actix_nsq_fuzz::replay_main("identify_reply", actix_nsq_fuzz::identify_reply)
}
