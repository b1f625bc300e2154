//! Products with a quantized weight `ŵ` stored `[N, K]` (read as `transpose_rhs`): [`matvec`]
//! for decode (one activation row) and [`matmul`] for prefill (`M` rows). Neither materializes
//! the f32 weight. The decode kernel multiplies the 4-bit values straight from the packed bytes:
//! on AVX-512 as floats built by bit logic against the activation permuted once per call
//! ([`super::avx512`], for group sizes that are a multiple of 8), else unpacked in registers in the
//! bytes' order ([`super::simd`]); each group's sum is scaled once. Activations with an infinity
//! or a NaN take a dequantize-then-multiply loop instead, so that they propagate exactly as in the
//! reference. The prefill kernel dequantizes one tile of [`TILE_ROWS`] weight rows at a time into
//! scratch and multiplies all `M` rows with it by the JIT's f32 product ([`crate::jit::product`]:
//! `gemm` micro-kernels, or its matrix-vector kernel for up to 8 rows), whose tiling depends only
//! on the shapes.
//!
//! Both split the weight rows into fixed blocks spread over the threads (the exact AVX-512
//! matrix-vector kernel on the decode team of [`crate::team`], the rest by rayon), each output
//! element being computed by exactly one task in an order fixed by the shapes.
//!
//! Guarantees: results do not depend on the number of threads (bit for bit); they agree with
//! dequantize-then-multiply up to the reassociation of the sums (and fused multiply-add rounding
//! on AVX2/AVX-512). [`matvec`] and [`matmul`] with `M = 1` may differ in the last bits, as they
//! sum in different orders. Operand lengths that do not fit are an error, and nothing is written.

use super::avx512::ExactPlan;
use super::simd::{DecodeBlock, Isa};
use super::{QuantError, QuantizedMatrix};
use crate::disjoint::Disjoint;
use crate::jit::{product, ProductDims};
use crate::team;
use rayon::prelude::*;

/// Weight rows per decode task: 64 rows of a 768-wide q4_0 weight are 27 KiB including the
/// scales, enough to amortize the task, and small enough to balance two threads on 768 rows.
pub(super) const BLOCK_ROWS: usize = 64;

/// Weight rows per prefill tile: 128 rows of a 768-wide weight are 384 KiB of f32, which stay
/// in the L2 cache while the JIT's f32 product multiplies every activation row with them, and
/// are wide enough for its register tiles.
const TILE_ROWS: usize = 128;

/// `y[j] = Σ_p x[p]·ŵ[j, p]`, with `x.len() == q.cols()` and `y.len() == q.rows()`.
pub fn matvec(q: &QuantizedMatrix, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    matvec_on(Isa::detect(), q, x, y)
}

/// [`matvec`] compiled for `isa` (which the CPU must have: it comes from [`Isa::detect`] or is
/// [`Isa::Portable`]).
pub(super) fn matvec_on(isa: Isa, q: &QuantizedMatrix, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    let (n, k) = (q.rows(), q.cols());
    let length = |what, expected: usize, actual: usize| {
        if expected == actual {
            Ok(())
        } else {
            Err(QuantError::OperandLength { what, rows: n, cols: k, expected, actual })
        }
    };
    length("activation x", k, x.len())?;
    length("output y", n, y.len())?;
    if k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    if !x.iter().all(|v| v.is_finite()) {
        matvec_terms(q, x, y);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        if let Some(plan) = ExactPlan::new(q, x) {
            // On the decode team (see `crate::team`): this is the one-token product.
            let dst = Disjoint(y.as_mut_ptr());
            team::for_each(n.div_ceil(BLOCK_ROWS), &|b| {
                let r0 = b * BLOCK_ROWS;
                // SAFETY: `y` holds `n` elements and is borrowed mutably for this loop; this
                // block alone writes its rows `r0 .. r0 + count`, which lie inside it.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.at(r0), BLOCK_ROWS.min(n - r0)) };
                // SAFETY: `Isa::Avx512` is only detected with AVX-512F, BW and VL; the block's
                // rows lie inside `q` as `y.len() == q.rows()`.
                unsafe { plan.block(q, r0, out) }
            });
            return Ok(());
        }
    }
    let xsum: Vec<f32> = x.chunks(q.group()).map(|g| g.iter().sum()).collect();
    let groups = q.groups_per_row();
    y.par_chunks_mut(BLOCK_ROWS).enumerate().for_each_init(
        || (vec![0.0; BLOCK_ROWS * groups], vec![0.0; BLOCK_ROWS * groups]),
        |(scales, offsets), (b, out)| {
            let len = out.len() * groups;
            isa.decode_block(DecodeBlock {
                q,
                r0: b * BLOCK_ROWS,
                x,
                xsum: &xsum,
                scales: &mut scales[..len],
                offsets: &mut offsets[..len],
                out,
            });
        },
    );
    Ok(())
}

/// [`matvec`] as dequantize-then-multiply, one decoded row at a time, the terms `x[p]·ŵ[j, p]`
/// summed in column order: the path for activations with infinities or NaNs, whose results then
/// have the reference's NaNs and infinities (the split `d·Σ q·x + o·Σ x` of the fast kernels
/// could form `0·∞` where the reference has none).
fn matvec_terms(q: &QuantizedMatrix, x: &[f32], y: &mut [f32]) {
    let groups = q.groups_per_row();
    y.par_chunks_mut(BLOCK_ROWS).enumerate().for_each_init(
        || (vec![0.0; groups], vec![0.0; groups], vec![0.0; x.len()]),
        |(scales, offsets, row), (b, out)| {
            for (j, o) in out.iter_mut().enumerate() {
                let r = b * BLOCK_ROWS + j;
                q.group_constants(r, scales, offsets);
                q.decode_row(r, scales, offsets, row);
                *o = row.iter().zip(x).map(|(&w, &v)| w * v).sum();
            }
        },
    );
}

/// `y[i, j] = Σ_p x[i, p]·ŵ[j, p]` for the `M = x.len() / q.cols()` rows of `x` (row-major
/// `M × K`), into `y` (row-major `M × N`).
pub fn matmul(q: &QuantizedMatrix, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    let (n, k) = (q.rows(), q.cols());
    let mismatch = |what, expected, actual| QuantError::OperandLength { what, rows: n, cols: k, expected, actual };
    if k == 0 {
        if !x.is_empty() {
            return Err(mismatch("activations x", 0, x.len()));
        }
        y.fill(0.0);
        return Ok(());
    }
    let m = x.len() / k;
    if m * k != x.len() {
        return Err(mismatch("activations x (a whole number of rows)", (m + 1) * k, x.len()));
    }
    if y.len() != m * n {
        return Err(mismatch("output y", m * n, y.len()));
    }
    if y.is_empty() {
        return Ok(());
    }
    let groups = q.groups_per_row();
    let dst = Disjoint(y.as_mut_ptr());
    let blocks = n.div_ceil(TILE_ROWS);
    (0..blocks).into_par_iter().try_for_each_init(
        || Scratch {
            tile: vec![0.0; TILE_ROWS * k],
            scales: vec![0.0; TILE_ROWS * groups],
            offsets: vec![0.0; TILE_ROWS * groups],
            products: vec![0.0; m * TILE_ROWS],
        },
        |s, b| {
            let r0 = b * TILE_ROWS;
            let rows = TILE_ROWS.min(n - r0);
            let (scales, offsets) = (&mut s.scales[..rows * groups], &mut s.offsets[..rows * groups]);
            q.group_constants(r0, scales, offsets);
            let tile = &mut s.tile[..rows * k];
            for (j, row) in tile.chunks_exact_mut(k).enumerate() {
                q.decode_row(r0 + j, &scales[j * groups..], &offsets[j * groups..], row);
            }
            let products = &mut s.products[..m * rows];
            let dims = ProductDims { rows: m, k, n: rows, transpose_rhs: true };
            product(dims, x, tile, products).map_err(|e| QuantError::TileProduct(e.to_string()))?;
            for (i, p) in products.chunks_exact(rows).enumerate() {
                // SAFETY: `y` holds `m × n` elements and stays mutably borrowed until the loop
                // ends; this task alone writes elements `i·n + r0 .. i·n + r0 + rows` (its tile's
                // columns of row `i`, inside the row as `r0 + rows ≤ n`).
                let o = unsafe { std::slice::from_raw_parts_mut(dst.at(i * n + r0), rows) };
                o.copy_from_slice(p);
            }
            Ok(())
        },
    )
}

/// Per-thread scratch of [`matmul`].
#[derive(Debug)]
struct Scratch {
    tile: Vec<f32>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
    products: Vec<f32>,
}
