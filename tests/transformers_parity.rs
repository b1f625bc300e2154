//! Every committed fixture, run by Kiln, against the logits transformers 5.23 computed for it:
//! full runs, runs split in two calls with the carried state, and decoding one token per call.

use kiln_runtime::{LoadOptions, Model};
use kiln_suite::{fixture, model_fixtures, reference, rel_err};

/// The bar is 1e-4 relative to the largest logit; a correct f32 implementation lands
/// near 1e-6 (model-math.md), so a drift above 1e-5 is worth a look even when it passes.
const TOLERANCE: f32 = 1e-4;

fn run_all(name: &str, f: impl Fn(&Model, &kiln_suite::Reference) -> Vec<f32>) {
    let dir = fixture(name);
    let model = Model::load(&dir, &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {}", e.render()));
    let r = reference(&dir);
    let got = f(&model, &r);
    let err = rel_err(&got, &r.logits);
    eprintln!("{name:<20} relative error {err:.2e}");
    assert!(err < TOLERANCE, "{name}: relative error {err:e} exceeds {TOLERANCE:e}");
}

#[test]
fn full_runs_match_transformers() {
    for name in model_fixtures() {
        run_all(&name, |m, r| m.forward(&r.tokens, &mut m.new_state()).unwrap().data);
    }
}

#[test]
fn split_runs_match_the_full_run() {
    for name in model_fixtures() {
        run_all(&name, |m, r| {
            let mut state = m.new_state();
            let mut logits = m.forward(&r.tokens[..r.split], &mut state).unwrap().data;
            logits.extend(m.forward(&r.tokens[r.split..], &mut state).unwrap().data);
            logits
        });
    }
}

#[test]
fn decoding_one_token_per_call_matches_the_full_run() {
    for name in model_fixtures() {
        run_all(&name, |m, r| {
            let mut state = m.new_state();
            r.tokens.iter().flat_map(|&t| m.forward(&[t], &mut state).unwrap().data).collect()
        });
    }
}
