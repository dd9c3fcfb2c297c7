//! Fuzz target `lookupd_answer`: see `actix_nsq_fuzz::lookupd_answer` for what it feeds and asserts.
//! `cargo +nightly fuzz run lookupd_answer` fuzzes it; a plain build replays a corpus.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| actix_nsq_fuzz::lookupd_answer(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    actix_nsq_fuzz::replay_main("lookupd_answer", actix_nsq_fuzz::lookupd_answer)
}
