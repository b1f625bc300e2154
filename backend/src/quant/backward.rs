//! The product with a quantized weight as stored, not transposed: [`matmul_nn`], `out[M, K] =
//! g[M, N]·ŵ[N, K]`, which backpropagates a gradient `g` through a quantized `Linear` (`y = x·ŵᵀ`)
//! to its input (QLoRA trains adapters around frozen quantized weights, so it needs this product
//! but never the gradient of `ŵ` itself).
//!
//! The weight is dequantized one tile of [`TILE_ROWS`] rows (`[T, K]`, all columns) at a time;
//! the matching columns of `g` are copied into a contiguous `[M, T]` block, and the JIT's f32
//! product ([`crate::jit::product`]) multiplies the two; the tiles' products are added into `out`
//! in tile order. Only one tile of f32 weights exists at a time.
//!
//! Guarantees: the tiling depends only on the shapes, the product is thread-count independent and
//! each element's tile sums are added in a fixed order, so results are the same with any number of
//! threads; they agree with dequantize-then-multiply up to reassociation (and fused multiply-add
//! rounding). Lengths that do not fit are an error, and nothing is written.

use super::{QuantError, QuantizedMatrix};
use crate::jit::{product, ProductDims};
use rayon::prelude::*;

/// Weight rows per tile: the reduction depth of each f32 product (128 rows of a 3072-wide weight
/// are 1.5 MiB of f32, which stay in the last-level cache while the product reads them).
const TILE_ROWS: usize = 128;

/// `out[i, p] = Σ_j g[i, j]·ŵ[j, p]` for the `M = g.len() / q.rows()` rows of `g` (row-major
/// `M × N`), into `out` (row-major `M × K`).
pub fn matmul_nn(q: &QuantizedMatrix, g: &[f32], out: &mut [f32]) -> Result<(), QuantError> {
    let (n, k) = (q.rows(), q.cols());
    let mismatch = |what, expected, actual| QuantError::OperandLength { what, rows: n, cols: k, expected, actual };
    // The number of rows M, from whichever operand has a nonzero width.
    let m = match (n, k) {
        (0, 0) => 0,
        (0, k) => out.len() / k,
        (n, _) => g.len() / n,
    };
    if m * n != g.len() {
        return Err(mismatch("gradient g (a whole number of rows)", (m + 1) * n, g.len()));
    }
    if m * k != out.len() {
        return Err(mismatch("output", m * k, out.len()));
    }
    if out.is_empty() {
        return Ok(());
    }
    if n == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let groups = q.groups_per_row();
    let mut tile = vec![0.0; TILE_ROWS.min(n) * k];
    let mut block = vec![0.0; m * TILE_ROWS.min(n)];
    let mut products = vec![0.0; if n > TILE_ROWS { m * k } else { 0 }];
    for r0 in (0..n).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(n - r0);
        let tile = &mut tile[..rows * k];
        tile.par_chunks_mut(k).enumerate().for_each_init(
            || (vec![0.0; groups], vec![0.0; groups]),
            |(scales, offsets), (j, row)| {
                q.group_constants(r0 + j, scales, offsets);
                q.decode_row(r0 + j, scales, offsets, row);
            },
        );
        let block = &mut block[..m * rows];
        for (b, gi) in block.chunks_exact_mut(rows).zip(g.chunks_exact(n)) {
            b.copy_from_slice(&gi[r0..r0 + rows]);
        }
        let dims = ProductDims { rows: m, k: rows, n: k, transpose_rhs: false };
        let target = if r0 == 0 { &mut *out } else { &mut products[..] };
        product(dims, block, tile, target).map_err(|e| QuantError::TileProduct(e.to_string()))?;
        if r0 > 0 {
            out.par_chunks_mut(k).zip(products.par_chunks(k)).for_each(|(o, p)| {
                for (o, &p) in o.iter_mut().zip(p) {
                    *o += p;
                }
            });
        }
    }
    Ok(())
}
