//! The compiled training step of real models (every architecture's fixture): the loss agrees
//! with the cross-entropy of transformers' logits, the gradient of every weight agrees with
//! central differences of the loss at sampled elements, and the JIT agrees with the interpreter.

use kiln_runtime::checkpoint::Checkpoint;
use kiln_runtime::{resolve_spec, Backend, GradientOptions, GradientProgram};
use kiln_suite::{fixture, reference};

fn program(name: &str, backend: Backend) -> GradientProgram {
    program_with(name, GradientOptions { backend, ..Default::default() })
}

fn program_with(name: &str, options: GradientOptions) -> GradientProgram {
    let dir = fixture(name);
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let spec = resolve_spec(checkpoint.config(), None).unwrap();
    let lowered = kiln_frontend::compile(&spec, checkpoint.config(), &Default::default()).unwrap();
    let weights = kiln_runtime::finetune::weight_names(&lowered);
    GradientProgram::new(&lowered, checkpoint, &weights, &options).unwrap()
}

/// Mean next-token cross-entropy of reference logits, in f64.
fn reference_loss(logits: &[f32], tokens: &[i64]) -> f64 {
    let vocab = logits.len() / tokens.len();
    let mut total = 0.0;
    for t in 0..tokens.len() - 1 {
        let row = &logits[t * vocab..(t + 1) * vocab];
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        total += lse - row[tokens[t + 1] as usize] as f64;
    }
    total / (tokens.len() - 1) as f64
}

fn check(name: &str) {
    let p = program(name, Backend::Interpreter);
    let r = reference(&fixture(name));
    let mut params = p.checkpoint_values().unwrap();
    let (loss, grads) = p.loss_and_grad(&params, &r.tokens).unwrap();
    let expected = reference_loss(&r.logits, &r.tokens);
    assert!(
        ((loss as f64) - expected).abs() < 1e-5 * expected.abs(),
        "{name}: loss {loss} vs transformers' {expected}"
    );
    assert_eq!(p.loss(&params, &r.tokens).unwrap(), loss, "{name}: the loss-only graph disagrees");

    // The JIT's training step agrees with the interpreter's.
    let jit = program(name, Backend::Jit);
    let (jit_loss, jit_grads) = jit.loss_and_grad(&params, &r.tokens).unwrap();
    assert!((jit_loss - loss).abs() <= 1e-5 * loss.abs(), "{name}: jit loss {jit_loss} vs {loss}");
    for ((a, b), t) in grads.iter().zip(&jit_grads).zip(p.trainables()) {
        let err = kiln_suite::rel_err(b, a);
        assert!(err < 1e-4, "{name}: jit gradient of {} differs by {err:e}", t.name);
    }

    // Backpropagation in chunks gives the same loss and gradients.
    for chunk in [5, 7] {
        let chunked = program_with(name, GradientOptions { chunk: Some(chunk), ..Default::default() });
        let (chunked_loss, chunked_grads) = chunked.loss_and_grad(&params, &r.tokens).unwrap();
        assert!((chunked_loss - loss).abs() <= 1e-5 * loss.abs(), "{name}: chunked loss {chunked_loss} vs {loss}");
        for ((a, b), t) in grads.iter().zip(&chunked_grads).zip(p.trainables()) {
            let err = kiln_suite::rel_err(b, a);
            assert!(err < 1e-5, "{name}: gradient of {} in chunks of {chunk} differs by {err:e}", t.name);
        }
    }

    // Central differences at the largest-gradient element and two others of every weight.
    let mut checked = 0;
    for (i, t) in p.trainables().iter().enumerate() {
        let g = &grads[i];
        let largest = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        for j in [largest, g.len() / 3, g.len() - 1] {
            let x = params[i][j];
            let h = 1e-2f32 * (1.0 + x.abs());
            params[i][j] = x + h;
            let up = p.loss(&params, &r.tokens).unwrap() as f64;
            params[i][j] = x - h;
            let down = p.loss(&params, &r.tokens).unwrap() as f64;
            params[i][j] = x;
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = g[j] as f64;
            let scale = g.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-3);
            assert!(
                (numeric - analytic).abs() <= 2e-2 * scale + 1e-4,
                "{name}: d loss / d {}[{j}] is {analytic} by autodiff, {numeric} by finite differences (largest |grad| {scale})",
                t.name
            );
            checked += 1;
        }
    }
    eprintln!("{name}: loss {loss:.6} (transformers {expected:.6}), {checked} elements checked");
}

#[test]
fn rwkv4_training_step() {
    check("rwkv4-untied");
    check("rwkv4-tied");
}

#[test]
fn mamba_training_step() {
    check("mamba-untied-bias");
    check("mamba-tied");
}

#[test]
fn mamba2_training_step() {
    check("mamba2-g2");
}
