//! The JIT's matrix products against the interpreter, through whole (planned) graphs: plain
//! `matmul` and `matmul.fused` with a compiled epilogue (a layer norm with a row-level output),
//! both layouts of the right-hand side, one row (the matrix-vector kernel), one tile, several
//! row and column tiles (epilogues run per row tile), odd sizes everywhere,
//! NaN/inf in the inputs; and the same bits with one thread and with several.
//!
//! Products agree to 1e-5 relative to the size of the terms (the JIT sums in another order and
//! with fused multiply-adds); the layer norm after them to 1e-4 absolute on its unit-scale output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod jit_support;

use common::{f, input, op, output};
use jit_support::{layer_norm, Rng};
use kiln_backend::jit::{Jit, JitOptions};
use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{Graph, Op, Value};

/// `x [rows, k]` times `w` (`[n, k]` with `transpose_rhs`, else `[k, n]`); with `fused`, a layer
/// norm epilogue with weight and bias `[n]` (results: normalized product and row means), else
/// the bare product.
fn graph(rows: usize, k: usize, n: usize, transpose_rhs: bool, fused: bool) -> Graph {
    let mut g = Graph::new("products");
    let x = input(&mut g, "x", &f(&[rows, k]));
    let w_dims = if transpose_rhs { [n, k] } else { [k, n] };
    let w = input(&mut g, "w", &f(&w_dims));
    if fused {
        let gain = input(&mut g, "gain", &f(&[n]));
        let bias = input(&mut g, "bias", &f(&[n]));
        let epilogue = Box::new(layer_norm(&[rows, n]));
        let node = g.add(Op::FusedMatMul { transpose_rhs, epilogue }, &[x, w, gain, bias], None).unwrap();
        output(&mut g, "y", Value::new(node, 0));
        output(&mut g, "mean", Value::new(node, 1));
    } else {
        let y = op(&mut g, Op::MatMul { transpose_rhs }, &[x, w]);
        output(&mut g, "y", y);
    }
    kiln_ir::verify(&g).unwrap();
    g
}

fn inputs(g: &Graph, rng: &mut Rng, special: f32) -> Vec<Tensor<'static>> {
    g.inputs()
        .iter()
        .map(|&i| {
            let dims = g.node(i).results[0].shape.resolve(1).unwrap();
            let n = dims.iter().product();
            Tensor::f32(&dims, rng.values(n, special)).unwrap()
        })
        .collect()
}

/// Runs `g` through the interpreter (unplanned: the reference) and the JIT (planned) with
/// `threads` threads.
fn both(g: &Graph, inputs: &[Tensor<'_>], threads: usize) -> (Vec<Tensor<'static>>, Vec<Tensor<'static>>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut planned = g.clone();
    kiln_passes::memory_plan(&mut planned).unwrap();
    let jit = Jit::new(planned, &JitOptions::default()).unwrap();
    assert_eq!(jit.report().compiled, jit.report().kernels, "{:?}", jit.report().rejected);
    let reference = Interpreter::new(g.clone()).run(inputs).unwrap();
    let got = pool.install(|| jit.run(inputs)).unwrap();
    (reference, got)
}

fn bits(t: &[Tensor<'_>]) -> Vec<Vec<u32>> {
    t.iter().map(|x| x.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

/// `|a - b| <= tol`, or both NaN, or the same infinity.
fn near(a: f32, b: f32, tol: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol
}

/// (rows, k, n): one row (matrix-vector), one tile, several column tiles (`n > 512`), several
/// row tiles (`rows > 256`), both, and odd sizes throughout.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 17, 300),
    (1, 768, 33),
    (2, 33, 257),
    (5, 64, 513),
    (63, 9, 31),
    (65, 40, 7),
    (257, 24, 70),
    (300, 48, 260),
    (520, 16, 1100),
];

#[test]
fn products_match_the_interpreter() {
    let mut rng = Rng::new(11);
    for (rows, k, n) in SHAPES {
        for transpose_rhs in [true, false] {
            let g = graph(rows, k, n, transpose_rhs, false);
            let x = inputs(&g, &mut rng, 0.0);
            let (want, got) = both(&g, &x, 2);
            // Terms are below 16 in magnitude: the sums' rounding scales with k.
            let tol = 1e-5 * 16.0 * k as f32;
            for (i, (&a, &b)) in want[0].as_f32().unwrap().iter().zip(got[0].as_f32().unwrap()).enumerate() {
                assert!(near(a, b, tol), "[{rows}, {k}] x [{n}] transpose {transpose_rhs}: element {i}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn fused_epilogues_match_the_interpreter_per_block_of_rows() {
    let mut rng = Rng::new(12);
    for (rows, k, n) in SHAPES {
        for transpose_rhs in [true, false] {
            for special in [0.0, 0.02] {
                let g = graph(rows, k, n, transpose_rhs, true);
                let x = inputs(&g, &mut rng, special);
                let (want, got) = both(&g, &x, 2);
                for (j, (w, o)) in want.iter().zip(&got).enumerate() {
                    assert_eq!(w.shape(), o.shape());
                    // The mean is on the product's scale, the normalized output on unit scale.
                    let tol = if j == 1 { 1e-5 * 16.0 * k as f32 } else { 1e-4 };
                    for (i, (&a, &b)) in w.as_f32().unwrap().iter().zip(o.as_f32().unwrap()).enumerate() {
                        assert!(
                            near(a, b, tol * (1.0 + a.abs())),
                            "[{rows}, {k}] x [{n}] transpose {transpose_rhs} special {special}: output {j} element {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(13);
    for (rows, k, n) in SHAPES {
        for fused in [false, true] {
            let g = graph(rows, k, n, true, fused);
            let x = inputs(&g, &mut rng, 0.0);
            let (_, one) = both(&g, &x, 1);
            let (_, three) = both(&g, &x, 3);
            assert_eq!(bits(&one), bits(&three), "[{rows}, {k}] x [{n}] fused {fused}");
        }
    }
}
