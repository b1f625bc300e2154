//! Products and gathers that read a 4-bit quantized matrix `ŵ: [N, K]` ([`QuantizedMatrix`]).
//!
//! The reference ([`Products::Reference`]) decodes a block of weight rows at a time into scratch
//! and multiplies with the interpreter's own loops, so it is simple enough to trust and never
//! holds more than [`BLOCK_ROWS`] decoded rows per task. [`Products::Native`] hands the same
//! checked operands to the fast kernels of [`crate::quant`] (decode: packed-nibble matrix-vector
//! product; prefill and `g · ŵ`: dequantized tiles through `gemm`).
//!
//! - `lhs · ŵᵀ` (`transpose_rhs`, a `Linear` layer): `out[i, j] = dot(lhs[i, :], ŵ[j, :])`.
//! - `lhs · ŵ` (the gradient of a `Linear` layer's input): `out[i, :] = Σ_j lhs[i, j]·ŵ[j, :]`,
//!   `j` in order.
//! - `gather(ŵ, indices)`: the selected rows, decoded.
//!
//! Guarantees: operand lengths are checked before any kernel runs; the order of operations for
//! every output element is fixed by the shapes, so results do not depend on the number of
//! threads; nothing here materializes the whole f32 weight.

use super::dest::{Dest, Emitted};
use super::matmul::{dot, product_dims, Products};
use super::{arity, f32_operand};
use crate::error::NodeErrorKind;
use crate::quant::{self, QuantizedMatrix};
use crate::tensor::{numel, Dims, Tensor};
use kiln_ir::Op;
use rayon::prelude::*;

/// Weight rows a reference task decodes at once.
const BLOCK_ROWS: usize = 64;

/// The product of `ops[0]` (f32) with the quantized `ops[1]` into `dest` (reached from
/// [`super::matmul::matmul`], which checked the arity).
pub(crate) fn matmul(
    products: Products,
    op: &Op,
    transpose_rhs: bool,
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    let a = f32_operand(op, ops, 0)?;
    let q = quantized_operand(op, ops, 1)?;
    let (d, out_shape) = product_dims(transpose_rhs, ops[0].shape(), ops[1].shape())?;
    let mut failure = None;
    let emitted = dest.emit_zeroed(out_shape, |out: &mut [f32]| {
        failure = product(products, q, d.rows, transpose_rhs, a, out).err();
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(emitted),
    }
}

/// `out = a · ŵᵀ` (`transpose_rhs`) or `a · ŵ`, `a` having `rows` rows; `out` starts zeroed.
pub(crate) fn product(
    products: Products,
    q: &QuantizedMatrix,
    rows: usize,
    transpose_rhs: bool,
    a: &[f32],
    out: &mut [f32],
) -> Result<(), NodeErrorKind> {
    let (n, k) = (q.rows(), q.cols());
    let (width_in, width_out) = if transpose_rhs { (k, n) } else { (n, k) };
    if Some(a.len()) != rows.checked_mul(width_in) || Some(out.len()) != rows.checked_mul(width_out) {
        return Err(NodeErrorKind::Internal {
            what: format!("a quantized product of {n}×{k} got {} lhs and {} output elements", a.len(), out.len()),
        });
    }
    if out.is_empty() || width_in == 0 {
        return Ok(());
    }
    let native = |e: quant::QuantError| NodeErrorKind::Native { what: e.to_string() };
    match (products, transpose_rhs) {
        (Products::Native, true) if rows <= crate::jit::products::MATVEC_ROWS => {
            for (x, y) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
                quant::matvec(q, x, y).map_err(native)?;
            }
            Ok(())
        }
        (Products::Native, true) => quant::matmul(q, a, out).map_err(native),
        (Products::Native, false) => quant::matmul_nn(q, a, out).map_err(native),
        (Products::Reference, true) => {
            reference_nt(q, a, rows, out);
            Ok(())
        }
        (Products::Reference, false) => {
            reference_nn(q, a, rows, out);
            Ok(())
        }
    }
}

/// `out[i, j] = dot(a[i, :], ŵ[j, :])`: blocks of weight rows in parallel, each decoded once
/// and multiplied with every row of `a`.
fn reference_nt(q: &QuantizedMatrix, a: &[f32], rows: usize, out: &mut [f32]) {
    let (n, k) = (q.rows(), q.cols());
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map(|b| {
            let (j0, jn) = (b * BLOCK_ROWS, BLOCK_ROWS.min(n - b * BLOCK_ROWS));
            let w = decode_rows(q, j0, jn);
            let mut part = vec![0.0; rows * jn];
            for (p, x) in part.chunks_exact_mut(jn).zip(a.chunks_exact(k)) {
                for (o, w_row) in p.iter_mut().zip(w.chunks_exact(k)) {
                    *o = dot(x, w_row);
                }
            }
            part
        })
        .collect();
    for (b, part) in blocks.iter().enumerate() {
        let (j0, jn) = (b * BLOCK_ROWS, BLOCK_ROWS.min(n - b * BLOCK_ROWS));
        for (o_row, p) in out.chunks_exact_mut(n).zip(part.chunks_exact(jn)) {
            o_row[j0..j0 + jn].copy_from_slice(p);
        }
    }
}

/// `out[i, :] += Σ_j a[i, j]·ŵ[j, :]` for `j` in order: blocks of weight rows decoded one after
/// the other, the rows of `out` updated in parallel.
fn reference_nn(q: &QuantizedMatrix, a: &[f32], rows: usize, out: &mut [f32]) {
    let (n, k) = (q.rows(), q.cols());
    debug_assert_eq!(out.len(), rows * k);
    for b in 0..n.div_ceil(BLOCK_ROWS) {
        let (j0, jn) = (b * BLOCK_ROWS, BLOCK_ROWS.min(n - b * BLOCK_ROWS));
        let w = decode_rows(q, j0, jn);
        out.par_chunks_exact_mut(k).zip(a.par_chunks_exact(n)).for_each(|(o, g)| {
            for (&gj, w_row) in g[j0..j0 + jn].iter().zip(w.chunks_exact(k)) {
                for (ov, &wv) in o.iter_mut().zip(w_row) {
                    *ov += gj * wv;
                }
            }
        });
    }
}

/// Rows `j0 .. j0 + count` of `ŵ`, decoded.
fn decode_rows(q: &QuantizedMatrix, j0: usize, count: usize) -> Vec<f32> {
    let (k, g) = (q.cols(), q.groups_per_row());
    let mut scales = vec![0.0; count * g];
    let mut offsets = vec![0.0; count * g];
    q.group_constants(j0, &mut scales, &mut offsets);
    let mut w = vec![0.0; count * k];
    for (r, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(count) {
        q.decode_row(j0 + r, &scales[r * g..], &offsets[r * g..], row);
    }
    w
}

/// `gather(ŵ, indices)`: the rows of the quantized table picked by `indices`, decoded.
pub(crate) fn gather(op: &Op, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 2)?;
    let q = quantized_operand(op, ops, 0)?;
    let idx = ops[1].as_i64().ok_or_else(|| NodeErrorKind::DType {
        op: op.mnemonic(),
        slot: 1,
        expected: kiln_ir::DType::I64,
        found: ops[1].dtype(),
    })?;
    let (rows, k) = (q.rows(), q.cols());
    let mut picked = Vec::with_capacity(idx.len());
    for &i in idx {
        match usize::try_from(i) {
            Ok(r) if r < rows => picked.push(r),
            _ => return Err(NodeErrorKind::GatherIndex { index: i, size: rows }),
        }
    }
    let shape: Dims = ops[1].shape().iter().copied().chain([k]).collect();
    numel(&shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
    dest.emit(shape, |out: &mut [f32]| {
        for (dst, &r) in out.chunks_exact_mut(k.max(1)).zip(&picked) {
            dst.copy_from_slice(&decode_rows(q, r, 1));
        }
    })
}

/// Operand `slot` as a quantized matrix.
pub(crate) fn quantized_operand<'t>(
    op: &Op,
    ops: &[&'t Tensor<'_>],
    slot: usize,
) -> Result<&'t QuantizedMatrix, NodeErrorKind> {
    let t = ops.get(slot).ok_or_else(|| NodeErrorKind::Arity {
        op: op.mnemonic(),
        expected: format!("at least {}", slot + 1),
        found: ops.len(),
    })?;
    t.as_quantized().ok_or_else(|| NodeErrorKind::Internal {
        what: format!("`{}` operand {slot} is {}, not a quantized matrix", op.mnemonic(), t.dtype()),
    })
}
