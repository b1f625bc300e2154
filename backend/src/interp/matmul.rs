//! Matrix products: `lhs: [.., M, K]` (flattened to rows of `K`) times a rank-2 `rhs`, which is
//! `[K, N]`, or `[N, K]` with `transpose_rhs` (the layout of a `Linear` weight).
//!
//! With `transpose_rhs` every output is the dot product of two contiguous rows, computed with 8
//! independent accumulators (vectorizable, and more accurate than one running sum). Without it,
//! each output row accumulates `lhs[i, k] * rhs[k, ..]` for `k` in order (the i-k-j loop).
//!
//! [`Products::Native`] hands the same checked operands to the JIT's products instead. A
//! quantized weight goes to [`super::quantized`].
//!
//! Guarantee: the order of operations for each output element is fixed; rayon (used when the
//! product is large) only distributes output rows and, for matrix-vector products, blocks of
//! columns, so results do not depend on the number of threads.

use super::dest::{Dest, Emitted};
use super::{arity, f32_operand};
use crate::error::NodeErrorKind;
use crate::tensor::{numel, Dims, Tensor};
use kiln_ir::Op;
use rayon::prelude::*;

/// Products with at least this many multiply-adds run on rayon.
const PAR_MIN_FLOPS: usize = 1 << 16;
/// Roughly how many multiply-adds one parallel task should get.
const TASK_FLOPS: usize = 1 << 14;

/// Which code computes matrix products: the interpreter's own loops (the reference), or the
/// JIT's (`gemm` tiles and the SIMD matrix-vector kernel, [`crate::jit::products`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Products {
    #[default]
    Reference,
    Native,
}

/// The sizes of one product: `rows` (all of `lhs`'s axes but the last) by `k` by `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductDims {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
    pub transpose_rhs: bool,
}

/// Checks a product's operand shapes; returns its sizes and result shape.
pub(crate) fn product_dims(
    transpose_rhs: bool,
    lhs: &[usize],
    rhs: &[usize],
) -> Result<(ProductDims, Dims), NodeErrorKind> {
    let mismatch = || NodeErrorKind::MatMul { lhs: lhs.to_vec(), rhs: rhs.to_vec(), transpose_rhs };
    let (Some((&k, row_dims)), [r0, r1]) = (lhs.split_last(), rhs) else {
        return Err(mismatch());
    };
    let (rk, n) = if transpose_rhs { (*r1, *r0) } else { (*r0, *r1) };
    if k != rk {
        return Err(mismatch());
    }
    let mut out_shape: Dims = lhs.iter().copied().collect();
    let last = out_shape.len() - 1;
    out_shape[last] = n;
    let too_large = || NodeErrorKind::TooLarge { shape: out_shape.to_vec() };
    numel(&out_shape).ok_or_else(too_large)?;
    let rows = numel(row_dims).ok_or_else(too_large)?;
    Ok((ProductDims { rows, k, n, transpose_rhs }, out_shape))
}

/// The product of `ops[0]` and `ops[1]` into `dest`, computed by `products`.
pub(crate) fn matmul(
    products: Products,
    op: &Op,
    transpose_rhs: bool,
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 2)?;
    if ops[1].as_quantized().is_some() {
        return super::quantized::matmul(products, op, transpose_rhs, ops, dest);
    }
    let (a, b) = (f32_operand(op, ops, 0)?, f32_operand(op, ops, 1)?);
    let (d, out_shape) = product_dims(transpose_rhs, ops[0].shape(), ops[1].shape())?;
    let (k, n) = (d.k, d.n);
    if products == Products::Native {
        let mut failure = None;
        let emitted = dest.emit(out_shape, |out: &mut [f32]| {
            failure = crate::jit::products::product(d, a, b, out).err();
        })?;
        return match failure {
            Some(e) => Err(NodeErrorKind::Native { what: e.to_string() }),
            None => Ok(emitted),
        };
    }
    // The products accumulate into zeros.
    dest.emit_zeroed(out_shape, |out: &mut [f32]| {
        // With an empty output there is nothing to do; with `k == 0` every output is an empty
        // sum. Otherwise `a` is exactly `rows × k` and `b` exactly `k × n`, all sizes non-zero.
        if !out.is_empty() && k > 0 {
            let parallel = out.len().saturating_mul(k) >= PAR_MIN_FLOPS;
            if transpose_rhs {
                matmul_nt(a, b, k, n, parallel, out);
            } else {
                matmul_nn(a, b, k, n, parallel, out);
            }
        }
    })
}

/// `out[i, j] = dot(a[i, :], b[j, :])` with `b: [n, k]`.
fn matmul_nt(a: &[f32], b: &[f32], k: usize, n: usize, parallel: bool, out: &mut [f32]) {
    let row = |(o_row, a_row): (&mut [f32], &[f32])| {
        if parallel {
            o_row
                .par_iter_mut()
                .zip(b.par_chunks_exact(k))
                .with_min_len((TASK_FLOPS / k).max(1))
                .for_each(|(o, b_row)| *o = dot(a_row, b_row));
        } else {
            for (o, b_row) in o_row.iter_mut().zip(b.chunks_exact(k)) {
                *o = dot(a_row, b_row);
            }
        }
    };
    if parallel {
        out.par_chunks_mut(n).zip(a.par_chunks_exact(k)).for_each(row);
    } else {
        out.chunks_mut(n).zip(a.chunks_exact(k)).for_each(row);
    }
}

/// `out[i, :] = Σ_k a[i, k] * b[k, :]` with `b: [k, n]`, `k` in order.
fn matmul_nn(a: &[f32], b: &[f32], k: usize, n: usize, parallel: bool, out: &mut [f32]) {
    let block = (TASK_FLOPS / k).max(64);
    let row = |(o_row, a_row): (&mut [f32], &[f32])| {
        if parallel && n > block {
            o_row.par_chunks_mut(block).enumerate().for_each(|(c, cols)| axpy_rows(a_row, b, n, c * block, cols));
        } else {
            axpy_rows(a_row, b, n, 0, o_row);
        }
    };
    if parallel {
        out.par_chunks_mut(n).zip(a.par_chunks_exact(k)).for_each(row);
    } else {
        out.chunks_mut(n).zip(a.chunks_exact(k)).for_each(row);
    }
}

/// `cols += Σ_k a_row[k] * b[k, j0 .. j0 + cols.len()]`.
fn axpy_rows(a_row: &[f32], b: &[f32], n: usize, j0: usize, cols: &mut [f32]) {
    for (&aik, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
        if let Some(seg) = b_row.get(j0..) {
            for (o, &bv) in cols.iter_mut().zip(seg) {
                *o += aik * bv;
            }
        }
    }
}

/// The dot product of two equally long slices with 8 independent accumulators, combined
/// pairwise, then the tail.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    let mut tail = 0.0f32;
    for (&p, &q) in ta.iter().zip(tb) {
        tail += p * q;
    }
    (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum() {
        for len in [0usize, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 - i as f32 * 0.25).collect();
            let plain: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - plain).abs() < 1e-3, "len {len}");
        }
    }

    /// Large enough to take the parallel paths; checked against a naive triple loop.
    #[test]
    fn parallel_paths_match_naive() {
        let (m, k, n) = (3usize, 300usize, 257usize);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let mut naive = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                naive[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        let mut out = vec![0.0; m * n];
        matmul_nn(&a, &b, k, n, true, &mut out);
        assert_eq!(out, naive); // small integers: exact in any order
        let mut bt = vec![0.0f32; n * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let mut out_t = vec![0.0; m * n];
        matmul_nt(&a, &bt, k, n, true, &mut out_t);
        assert_eq!(out_t, naive);
    }
}
