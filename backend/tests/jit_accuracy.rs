//! Accuracy of the JIT's inline transcendentals against `f64` over dense sweeps, on the vector
//! path (`f32x4` column loops) and the scalar path (row values), with and without FMA; prints the
//! maximum ulp error per function (`cargo test --test jit_accuracy -- --nocapture`). Also an
//! ignored throughput benchmark of a layer-norm kernel, JIT against the interpreter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jit_support;

use jit_support::{activations, compile_with, layer_norm, softmax, ulp_error, Case};
use kiln_backend::jit::JitOptions;
use kiln_ir::{Instr, Kernel, KernelOutput, Level, Shape, UnaryOp};
use std::time::Instant;

/// Largest ulp error allowed anywhere in the sweeps.
const MAX_ULP: f64 = 4.0;

/// `op` over `xs`: per element in one long row (vector path) or one row value per row (scalar).
fn run(op: UnaryOp, xs: &[f32], vector: bool, fma: bool) -> Vec<f32> {
    let n = xs.len();
    let (shape, input, level) =
        if vector { (vec![n], Level::Vector, Level::Vector) } else { (vec![n, 1], Level::Row, Level::Row) };
    let kernel = Kernel {
        shape: Shape::fixed(&shape),
        reads: vec![Shape::fixed(&shape)],
        body: vec![Instr::Input(0, input), Instr::Unary(op, 0)],
        outputs: vec![KernelOutput { instr: 1, level }],
    };
    let (_m, jit) = compile_with(&kernel, &JitOptions { verify: true, fma, ..JitOptions::default() });
    let case = Case { shapes: kernel.reads.clone(), kernel, dims: vec![shape], data: vec![xs.to_vec()], t: 1 };
    case.jit(&jit).remove(0).into_f32_vec().unwrap()
}

fn reference(op: UnaryOp, x: f32) -> f64 {
    let x = f64::from(x);
    match op {
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Log1p => x.ln_1p(),
        UnaryOp::Tanh => x.tanh(),
        _ => f64::NAN,
    }
}

/// Every `step`-th f32 bit pattern from `lo` to `hi` (inclusive bounds as bit patterns).
fn bit_sweep(lo: u32, hi: u32, step: usize) -> Vec<f32> {
    (lo..=hi).step_by(step).map(f32::from_bits).collect()
}

fn linear_sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32)).collect()
}

/// Checks the sweep and the special values (which must be exact), returning the max ulp error.
fn sweep(op: UnaryOp, xs: &[f32], specials: &[(f32, f32)]) -> f64 {
    let mut worst = 0.0f64;
    for vector in [true, false] {
        for fma in [true, false] {
            let ys = run(op, xs, vector, fma);
            let (mut max, mut at) = (0.0f64, 0.0f32);
            for (&x, &y) in xs.iter().zip(&ys) {
                let e = ulp_error(y, reference(op, x));
                if e > max {
                    (max, at) = (e, x);
                }
            }
            println!(
                "{:>5} {:>6} fma={fma:<5}: max {max:.2} ulp at x = {at:e} over {} inputs",
                op.name(),
                if vector { "f32x4" } else { "scalar" },
                xs.len()
            );
            assert!(max <= MAX_ULP, "{}: {max} ulp at {at:e}", op.name());
            worst = worst.max(max);
            let (sx, want): (Vec<f32>, Vec<f32>) = specials.iter().copied().unzip();
            for ((x, w), y) in sx.iter().zip(&want).zip(run(op, &sx, vector, fma)) {
                let ok = (w.is_nan() && y.is_nan()) || (w.to_bits() == y.to_bits());
                assert!(ok, "{}({x:e}) = {y:e}, want {w:e} (vector {vector}, fma {fma})", op.name());
            }
        }
    }
    worst
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;

#[test]
fn exp_is_accurate_and_saturates() {
    let mut xs = linear_sweep(-104.5, 89.5, 3_000_001);
    xs.extend(bit_sweep(0, 0x3f80_0000, 211)); // small positive magnitudes
    xs.extend(bit_sweep(0x8000_0000, 0xbf80_0000, 211));
    let specials = [
        (0.0, 1.0),
        (-0.0, 1.0),
        (INF, INF),
        (-INF, 0.0),
        (NAN, NAN),
        (88.73, INF),
        (1e30, INF),
        (-103.98, 0.0),
        (-1e30, 0.0),
        (1e-40, 1.0),
    ];
    sweep(UnaryOp::Exp, &xs, &specials);
}

#[test]
fn log_is_accurate_on_every_magnitude() {
    // Every positive finite magnitude, denormals included.
    let xs = bit_sweep(1, 0x7f7f_ffff, 613);
    let specials =
        [(0.0, -INF), (-0.0, -INF), (-1.0, NAN), (-1e-40, NAN), (-INF, NAN), (INF, INF), (NAN, NAN), (1.0, 0.0)];
    sweep(UnaryOp::Log, &xs, &specials);
}

#[test]
fn log1p_is_accurate_near_zero_and_minus_one() {
    let mut xs = bit_sweep(1, 0x7f7f_ffff, 613);
    xs.extend(bit_sweep(0x8000_0001, 0xbf7f_ffff, 307)); // (-1, 0)
    let specials = [
        (0.0, 0.0),
        (-0.0, -0.0),
        (-1.0, -INF),
        (-1.5, NAN),
        (-INF, NAN),
        (INF, INF),
        (NAN, NAN),
        (1e-40, 1e-40),
        (-1e-30, -1e-30),
        (f32::MAX, f32::MAX.ln()),
    ];
    sweep(UnaryOp::Log1p, &xs, &specials);
}

#[test]
fn tanh_is_accurate_odd_and_saturates() {
    let mut xs = bit_sweep(0, 0x41a0_0000, 101); // [0, 20]
    xs.extend(bit_sweep(0x8000_0000, 0xc1a0_0000, 101));
    let specials =
        [(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (NAN, NAN), (50.0, 1.0), (-1e30, -1.0), (1e-40, 1e-40)];
    sweep(UnaryOp::Tanh, &xs, &specials);
}

/// Seconds per call of `f`: the best of 5 batches of `n` calls (after one warm-up call).
fn time(n: usize, f: &mut dyn FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Times `kernel` on random operands (its read shapes) through the JIT and the interpreter.
fn bench(name: &str, kernel: &Kernel) {
    let t0 = Instant::now();
    let options = JitOptions { verify: false, fma: true, listings: std::env::var_os("KILN_JIT_LISTING").is_some() };
    let (module, jit) = compile_with(kernel, &options);
    let compile = t0.elapsed();
    for listing in &module.stats().listings {
        println!("{listing}");
    }
    let mut rng = jit_support::Rng::new(11);
    let dims: Vec<Vec<usize>> = kernel.reads.iter().map(|r| r.resolve(1).unwrap().to_vec()).collect();
    let data = dims.iter().map(|d| rng.values(d.iter().product(), 0.0)).collect();
    let case = Case { shapes: kernel.reads.clone(), kernel: kernel.clone(), dims, data, t: 1 };
    let tensors = case.tensors();
    let refs: Vec<_> = tensors.iter().collect();
    let jit_s = time(100, &mut || {
        std::hint::black_box(jit.run(&refs, 1).unwrap());
    });
    let interp_s = time(10, &mut || {
        std::hint::black_box(case.interpret());
    });
    let elements = kernel.shape.resolve(1).unwrap().iter().product::<usize>() as f64;
    println!(
        "{name} {}: JIT {:.1} us ({:.2} ns/element), interpreter {:.1} us: JIT {:.1}x faster; \
         compile {:.2} ms ({} code bytes)",
        kernel.shape,
        jit_s * 1e6,
        jit_s * 1e9 / elements,
        interp_s * 1e6,
        interp_s / jit_s,
        compile.as_secs_f64() * 1e3,
        module.stats().code_bytes,
    );
}

/// Layer norm, softmax and an activation chain at `[512, 768]`: JIT against the interpreter.
/// Run with `cargo test --release -p kiln-backend --test jit_accuracy -- --ignored --nocapture`
/// (`KILN_JIT_LISTING=1` prints the generated IR and machine code).
#[test]
#[ignore = "benchmark"]
fn bench_kernels_512x768() {
    let shape = [512usize, 768];
    // A floor for comparison: allocating an output and copying the input into it.
    let x = vec![1.0f32; shape[0] * shape[1]];
    let copy_s = time(100, &mut || {
        let mut y = vec![0.0f32; x.len()];
        y.copy_from_slice(&x);
        std::hint::black_box(y);
    });
    println!("allocate + copy {shape:?}: {:.1} us", copy_s * 1e6);
    bench("layer norm", &layer_norm(&shape));
    bench("softmax", &softmax(&shape));
    bench("silu * tanh(softplus)", &activations(&shape));
}
