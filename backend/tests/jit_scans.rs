//! Scans on the JIT: a body that fuses into one kernel runs by blocks of rows, every step of a
//! block on one thread with the carries updated in place (`jit::scan`). It must agree with the
//! interpreter (the unoptimized graph, step by step), forward and reverse, for odd shapes, any
//! `T` including 0, with the same bits for any number of threads; a body that does not fuse into
//! one kernel runs step by step and agrees too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod jit_support;

use common::*;
use jit_support::Rng;
use kiln_backend::jit::{Jit, JitOptions};
use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Scan, Shape, UnaryOp, Value};
use kiln_passes::{default_pipeline, PipelineOptions};

const R: usize = 37;
const N: usize = 13;

/// A selective scan over `R` rows of `N` state elements, shaped like Mamba's:
/// `S' = exp(a·A) ⊙ S + (a·x) ⊗ b`, `y = Σₙ S'·c + d·x`, with `b` and `c` per step reaching the
/// kernel through an explicit broadcast view, `a`, `x` per row through reshapes.
fn selective(reverse: bool) -> Graph {
    selective_over(reverse, Dim::T)
}

/// [`selective`] over sequences of `steps` elements.
fn selective_over(reverse: bool, steps: Dim) -> Graph {
    let mut body = Graph::new("body");
    let s = arg(&mut body, 0, DType::F32, &f(&[R, N]));
    let a = arg(&mut body, 1, DType::F32, &f(&[R]));
    let x = arg(&mut body, 2, DType::F32, &f(&[R]));
    let b = arg(&mut body, 3, DType::F32, &f(&[N]));
    let c = arg(&mut body, 4, DType::F32, &f(&[N]));
    let big_a = arg(&mut body, 5, DType::F32, &f(&[R, N]));
    let d = arg(&mut body, 6, DType::F32, &f(&[R]));
    let a2 = op(&mut body, Op::Reshape(Shape::fixed(&[R, 1])), &[a]);
    let a2 = op(&mut body, Op::Broadcast(Shape::fixed(&[R, N])), &[a2]);
    let x2 = op(&mut body, Op::Reshape(Shape::fixed(&[R, 1])), &[x]);
    let x2 = op(&mut body, Op::Broadcast(Shape::fixed(&[R, N])), &[x2]);
    let b2 = op(&mut body, Op::Broadcast(Shape::fixed(&[R, N])), &[b]);
    let c2 = op(&mut body, Op::Broadcast(Shape::fixed(&[R, N])), &[c]);
    let decay = op(&mut body, Op::Binary(BinaryOp::Mul), &[a2, big_a]);
    let decay = op(&mut body, Op::Unary(UnaryOp::Exp), &[decay]);
    let kept = op(&mut body, Op::Binary(BinaryOp::Mul), &[decay, s]);
    let ax = op(&mut body, Op::Binary(BinaryOp::Mul), &[a2, x2]);
    let drive = op(&mut body, Op::Binary(BinaryOp::Mul), &[ax, b2]);
    let next = op(&mut body, Op::Binary(BinaryOp::Add), &[kept, drive]);
    let read = op(&mut body, Op::Binary(BinaryOp::Mul), &[next, c2]);
    let y = op(&mut body, Op::Reduce { op: ReduceOp::Sum, axis: 1 }, &[read]);
    let y = op(&mut body, Op::Reshape(Shape::fixed(&[R])), &[y]);
    let skip = op(&mut body, Op::Binary(BinaryOp::Mul), &[d, x]);
    let y = op(&mut body, Op::Binary(BinaryOp::Add), &[y, skip]);
    output(&mut body, "S", next);
    output(&mut body, "y", y);

    let mut g = Graph::new("selective");
    let s0 = input(&mut g, "s0", &f(&[R, N]));
    let seqs: Vec<Value> = [("a", R), ("x", R), ("b", N), ("c", N)]
        .iter()
        .map(|&(name, n)| input(&mut g, name, &[steps, Dim::Fixed(n)]))
        .collect();
    let big_a = input(&mut g, "A", &f(&[R, N]));
    let d = input(&mut g, "d", &f(&[R]));
    let operands: Vec<Value> = [s0].into_iter().chain(seqs).chain([big_a, d]).collect();
    let id = scan(&mut g, Scan { body, carries: 1, sequences: 4, constants: 2, reverse }, &operands);
    output(&mut g, "final", Value::new(id, 0));
    output(&mut g, "ys", Value::new(id, 1));
    g
}

/// A body that does not fuse into one kernel: every row reads the column sums of all rows.
fn coupled() -> Graph {
    let mut body = Graph::new("body");
    let s = arg(&mut body, 0, DType::F32, &f(&[R, N]));
    let x = arg(&mut body, 1, DType::F32, &f(&[R, N]));
    let total = op(&mut body, Op::Reduce { op: ReduceOp::Sum, axis: 0 }, &[s]);
    let half = body.constant(0.5, None);
    let half = op(&mut body, Op::Broadcast(Shape::fixed(&[1, N])), &[half]);
    let total = op(&mut body, Op::Binary(BinaryOp::Mul), &[total, half]);
    let total = op(&mut body, Op::Unary(UnaryOp::Tanh), &[total]);
    let total = op(&mut body, Op::Broadcast(Shape::fixed(&[R, N])), &[total]);
    let next = op(&mut body, Op::Binary(BinaryOp::Add), &[x, total]);
    output(&mut body, "S", next);

    let mut g = Graph::new("coupled");
    let s0 = input(&mut g, "s0", &f(&[R, N]));
    let xs = input(&mut g, "xs", &[Dim::T, Dim::Fixed(R), Dim::Fixed(N)]);
    let id = scan(&mut g, Scan { body, carries: 1, sequences: 1, constants: 0, reverse: false }, &[s0, xs]);
    output(&mut g, "final", Value::new(id, 0));
    g
}

fn random(rng: &mut Rng, dims: &[usize], lo: f32, hi: f32) -> Tensor<'static> {
    let n = dims.iter().product();
    t32(dims, (0..n).map(|_| rng.uniform(lo, hi)).collect())
}

fn selective_inputs(t: usize, seed: u64) -> Vec<Tensor<'static>> {
    let mut rng = Rng::new(seed);
    vec![
        random(&mut rng, &[R, N], -1.0, 1.0),
        random(&mut rng, &[t, R], 0.01, 0.5),
        random(&mut rng, &[t, R], -2.0, 2.0),
        random(&mut rng, &[t, N], -1.0, 1.0),
        random(&mut rng, &[t, N], -1.0, 1.0),
        random(&mut rng, &[R, N], -3.0, -0.1),
        random(&mut rng, &[R], -1.0, 1.0),
    ]
}

/// The graph through the whole pipeline (fusion, memory plan), on the JIT.
fn jit(mut g: Graph) -> Jit {
    default_pipeline().run(&mut g, &PipelineOptions::default()).unwrap();
    Jit::new(g, &JitOptions { verify: true, ..JitOptions::default() }).unwrap()
}

fn bits(out: &[Tensor<'_>]) -> Vec<Vec<u32>> {
    out.iter().map(|t| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

#[test]
fn a_one_kernel_body_runs_by_rows_and_agrees_with_the_interpreter() {
    for reverse in [false, true] {
        let reference = Interpreter::new(selective(reverse));
        let compiled = jit(selective(reverse));
        assert_eq!((compiled.report().scans, compiled.report().scans_by_rows), (1, 1), "{:?}", compiled.report());
        for (t, seed) in [(1, 1), (2, 2), (7, 3), (64, 4)] {
            let inputs = selective_inputs(t, seed);
            let expected = reference.run(&inputs).unwrap();
            let found = on_threads(2, || compiled.run(&inputs).unwrap());
            for (e, x) in expected.iter().zip(&found) {
                assert_eq!(e.shape(), x.shape());
                assert_close(x.as_f32().unwrap(), e.as_f32().unwrap());
            }
            // Rows never depend on the block they run in.
            for threads in [1, 3] {
                let again = on_threads(threads, || compiled.run(&inputs).unwrap());
                assert_eq!(bits(&again), bits(&found), "T = {t}, reverse {reverse}, {threads} threads");
            }
        }
    }
}

#[test]
fn a_scan_of_no_steps_by_rows_returns_its_initial_carries() {
    // Sequences of `T - 1` steps, called with `T = 1`.
    let compiled = jit(selective_over(false, Dim::Seq(-1)));
    assert_eq!(compiled.report().scans_by_rows, 1);
    let inputs = selective_inputs(0, 5);
    let out = compiled.run(&inputs).unwrap();
    assert_eq!(out[0].as_f32(), inputs[0].as_f32());
    assert_eq!(out[1].shape(), &[0, R]);
}

#[test]
fn special_values_flow_through_the_carries_like_in_the_interpreter() {
    let reference = Interpreter::new(selective(false));
    let compiled = jit(selective(false));
    let mut inputs = selective_inputs(5, 6);
    let mut s0 = inputs[0].as_f32().unwrap().to_vec();
    s0[0] = f32::NAN;
    s0[N + 1] = f32::INFINITY;
    s0[2 * N + 2] = -1e30;
    inputs[0] = t32(&[R, N], s0);
    let expected = reference.run(&inputs).unwrap();
    let found = compiled.run(&inputs).unwrap();
    let mut nan = 0;
    for (e, x) in expected.iter().zip(&found) {
        for (a, b) in x.as_f32().unwrap().iter().zip(e.as_f32().unwrap()) {
            let same_class = a.is_nan() == b.is_nan() && (a.is_nan() || a.is_finite() || a == b);
            assert!(same_class && (!a.is_finite() || (a - b).abs() <= 1e-5 * (1.0 + b.abs())), "{a} vs {b}");
            nan += usize::from(a.is_nan());
        }
    }
    assert!(nan > 0, "the NaN should reach the outputs");
}

#[test]
fn a_body_of_several_kernels_runs_step_by_step_and_agrees() {
    let reference = Interpreter::new(coupled());
    let compiled = jit(coupled());
    assert_eq!(compiled.report().scans_by_rows, 0, "{:?}", compiled.report());
    let mut rng = Rng::new(7);
    let inputs = vec![random(&mut rng, &[R, N], -1.0, 1.0), random(&mut rng, &[9, R, N], -1.0, 1.0)];
    let expected = reference.run(&inputs).unwrap();
    let found = compiled.run(&inputs).unwrap();
    assert_close(found[0].as_f32().unwrap(), expected[0].as_f32().unwrap());
}
