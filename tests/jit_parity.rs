//! The interpreter is the oracle for the JIT: every fixture, full, split and one token per call,
//! must agree to 1e-5 relative (the JIT reassociates reductions and computes transcendentals
//! with its own polynomials), and the JIT must still match transformers.

use kiln_backend::jit::{Jit, JitOptions};
use kiln_runtime::{Backend, LoadOptions, Model};
use kiln_suite::{fixture, model_fixtures, reference, rel_err, runs};

#[test]
fn jit_agrees_with_the_interpreter_and_transformers() {
    for name in model_fixtures() {
        let dir = fixture(name.as_str());
        let r = reference(&dir);
        let interp =
            Model::load(&dir, &LoadOptions { backend: Backend::Interpreter, ..LoadOptions::default() }).unwrap();
        let jit = Model::load(&dir, &LoadOptions { backend: Backend::Jit, ..LoadOptions::default() }).unwrap();
        // Every model's recurrence is one kernel per step, so every scan runs by blocks of rows.
        let report = Jit::new(jit.graph().clone(), &JitOptions::default()).unwrap().report().clone();
        assert!(report.scans > 0 && report.scans_by_rows == report.scans, "{name}: {report:?}");
        let (a, b) = (runs(&interp, &r.tokens, r.split), runs(&jit, &r.tokens, r.split));
        for (what, (x, y)) in ["full", "split", "decode"].iter().zip(a.iter().zip(&b)) {
            let vs_interp = rel_err(y, x);
            let vs_hf = rel_err(y, &r.logits);
            eprintln!("{name:<20} {what:<6} jit vs interpreter {vs_interp:.1e}, vs transformers {vs_hf:.1e}");
            assert!(vs_interp < 1e-5, "{name} {what}: jit vs interpreter {vs_interp:e}");
            assert!(vs_hf < 1e-4, "{name} {what}: jit vs transformers {vs_hf:e}");
        }
    }
}
