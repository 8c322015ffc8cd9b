//! Fuzzes the reactor with the operation sequences of `tests/model.rs`: each input (two bytes
//! per operation) runs on every backend and is checked against the same model.
//!
//! `cargo +nightly fuzz run ops -- -max_total_time=120`
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/faults_model/mod.rs"]
mod faults_model;

fuzz_target!(|data: &[u8]| {
    // Bounded work per input, so the fuzzer explores instead of running one long case.
    let ops = faults_model::ops_from_bytes(&data[..data.len().min(512)]);
    #[cfg(target_os = "linux")]
    faults_model::run_ops::<ioloop::sys::Epoll>(&ops);
    faults_model::run_ops::<ioloop::sys::Poll>(&ops);
    faults_model::run_ops::<ioloop::sys::Select>(&ops);
});
