//! Model-based test: random sequences of add/update/remove/close/reopen/write/drain and timer
//! add/cancel operations, each `run_once` checked against a model of what must be dispatched
//! (see `tests/faults_model`). Runs on every backend.
//!
//! Cases: 64 sequences of up to 80 operations per backend by default; `IOLOOP_STRESS=full`
//! runs 2 000. A failure is shrunk to a minimal sequence and printed.

mod faults_model;
mod faults_util;
mod util;

use faults_model::{run_ops, Op, SLOTS};
use ioloop::Poller;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use util::backend_tests;

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        2 => slot.clone().prop_map(Op::Open),
        1 => slot.clone().prop_map(Op::Close),
        2 => (slot.clone(), 0u8..4).prop_map(|(s, b)| Op::Add(s, b)),
        1 => (slot.clone(), 0u8..4).prop_map(|(s, b)| Op::Update(s, b)),
        1 => slot.clone().prop_map(Op::Remove),
        2 => (slot.clone(), 1u8..=255).prop_map(|(s, n)| Op::Write(s, n)),
        1 => slot.prop_map(Op::Drain),
        1 => any::<bool>().prop_map(Op::TimerAdd),
        1 => any::<u8>().prop_map(Op::TimerCancel),
        3 => Just(Op::Run),
    ]
}

fn model_matches_dispatches<P: Poller>() {
    let cases = faults_util::scaled(64, 2_000) as u32;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..80), |ops| {
        run_ops::<P>(&ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{}: {e}", P::NAME);
    }
}

/// The fuzzer's byte decoding reaches every operation.
#[test]
fn fuzz_decoding_covers_every_op() {
    let ops = faults_model::ops_from_bytes(&(0u8..=255).flat_map(|k| [k, k]).collect::<Vec<_>>());
    for want in [
        "Open",
        "Close",
        "Add",
        "Update",
        "Remove",
        "Write",
        "Drain",
        "TimerAdd",
        "TimerCancel",
        "Run",
    ] {
        assert!(
            ops.iter().any(|o| format!("{o:?}").starts_with(want)),
            "{want}"
        );
    }
}

backend_tests!(model_matches_dispatches);
