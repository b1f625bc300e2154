//! The JIT's matrix products: `lhs: [rows, k]` times `rhs` (`[k, n]`, or a `Linear` weight
//! `[n, k]` with `transpose_rhs`), and `matmul.fused` epilogues run on the product's rows while
//! they are still in cache.
//!
//! - Up to [`MATVEC_ROWS`] rows with `transpose_rhs` (decoding a token, short calls): the
//!   memory-bound matrix-vector kernel ([`super::matvec`]), split over blocks of weight rows.
//! - Everything else: the `gemm` crate (its AVX-512/AVX2 micro-kernels, picked at run time),
//!   chosen over `matrixmultiply` by `benches/gemm.rs`. The output is cut into fixed tiles of
//!   [`ROW_TILE`] rows by at most [`COL_TILE`] columns, in an even number of equal column tiles
//!   ([`col_tile`]); rayon spreads the tiles over the threads and each
//!   tile is one single-threaded `gemm` call. `gemm` repacks the weight on every call (a
//!   transposing copy, a fifth of the product's time at 512 rows), so row tiles are tall (64-row
//!   tiles lost a third of the throughput in `benches/gemm.rs`), and the parallelism comes from
//!   column tiles, which do not add packing.
//! - With an epilogue, each row tile runs the compiled epilogue on its product rows as soon as
//!   its column tiles are done (in blocks of [`EPILOGUE_ROWS`] rows, in parallel), while the
//!   tile is in the last-level cache (1.5 MiB at 768 columns, 6 MiB at 3072, of 32 MiB here),
//!   so the product is not read back from memory in a separate pass.
//!
//! Guarantees: the tiling depends only on the shapes, never on the number of threads, and each
//! tile is computed serially, so results are the same with any number of threads (they may
//! differ between call lengths, which tile differently, by reassociation only). Products agree
//! with the interpreter's to reassociation and fused multiply-add rounding. Every slice length
//! is checked before `gemm` (which takes raw pointers) is called; bad lengths are errors.

pub use crate::interp::matmul::ProductDims;

use super::matvec::matvec;
use super::module::EpilogueCall;
use super::JitError;
use rayon::prelude::*;

/// Products of up to this many rows with a `Linear` weight run as matrix-vector products
/// ([`matvec`]): `gemm` repacks the whole weight on every call, which costs about as much as
/// reading it, so it only pays with more rows.
pub(crate) const MATVEC_ROWS: usize = 8;
/// Rows per tile: a 512-token call is one row tile, so `gemm` packs each weight once per call.
pub(crate) const ROW_TILE: usize = 512;
/// Columns per tile at most (a multiple of every `gemm` register tile); see [`col_tile`].
pub(crate) const COL_TILE: usize = 512;
/// Rows per parallel block of an epilogue.
pub(crate) const EPILOGUE_ROWS: usize = 16;

/// Checks a product's slices against its sizes.
fn check(d: ProductDims, lhs: &[f32], rhs: &[f32], out_len: usize) -> Result<(), JitError> {
    let ok = Some(lhs.len()) == d.rows.checked_mul(d.k)
        && Some(rhs.len()) == d.k.checked_mul(d.n)
        && Some(out_len) == d.rows.checked_mul(d.n);
    if ok {
        Ok(())
    } else {
        Err(JitError::Operand {
            what: format!("a product of {d:?} got lhs {}, rhs {} and output {out_len} elements", lhs.len(), rhs.len()),
        })
    }
}

/// `out = lhs · rhs` (`out` is `[rows, n]`, fully overwritten).
pub fn product(d: ProductDims, lhs: &[f32], rhs: &[f32], out: &mut [f32]) -> Result<(), JitError> {
    check(d, lhs, rhs, out.len())?;
    if out.is_empty() {
        return Ok(());
    }
    if d.k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    if d.rows <= MATVEC_ROWS && d.transpose_rhs {
        matvec(lhs, rhs, d.k, out);
        return Ok(());
    }
    out.par_chunks_mut(ROW_TILE * d.n).enumerate().for_each(|(b, o)| row_tile(d, lhs, rhs, b * ROW_TILE, o));
    Ok(())
}

/// `lhs · rhs` into `scratch` (`[rows, n]`, the `matmul.fused` product region), and `epilogue`
/// on it, writing `outs` (each `rows × widths[j]`), row tile by row tile.
pub(crate) fn product_with_epilogue(
    d: ProductDims,
    lhs: &[f32],
    rhs: &[f32],
    scratch: &mut [f32],
    epilogue: &EpilogueCall<'_>,
    outs: &mut [&mut [f32]],
) -> Result<(), JitError> {
    check(d, lhs, rhs, scratch.len())?;
    let widths = epilogue.widths().to_vec();
    let sized = epilogue.rows() == d.rows
        && outs.len() == widths.len()
        && outs.iter().zip(&widths).all(|(o, &w)| Some(o.len()) == d.rows.checked_mul(w));
    if !sized {
        return Err(JitError::Operand { what: "the epilogue's outputs do not match the product's rows".into() });
    }
    if d.rows == 0 {
        return Ok(());
    }
    if d.n == 0 || d.k == 0 || (d.rows <= MATVEC_ROWS && d.transpose_rhs) {
        product(d, lhs, rhs, scratch)?;
        return epilogue.run_rows(0, d.rows, scratch, outs);
    }
    let outs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut **o).collect();
    row_blocks(scratch, outs, &widths, d.n, ROW_TILE, 0).into_par_iter().try_for_each(|(row0, p, o)| {
        row_tile(d, lhs, rhs, row0, p);
        row_blocks(p, o, &widths, d.n, EPILOGUE_ROWS, row0)
            .into_par_iter()
            .try_for_each(|(r0, p, mut o)| epilogue.run_rows(r0, p.len() / d.n, p, &mut o))
    })
}

/// A block of rows: its first row, its rows of the product, and of every output.
type RowBlock<'a> = (usize, &'a mut [f32], Vec<&'a mut [f32]>);

/// `product` (`n` columns) and `outs` (`widths[j]` columns) cut into blocks of `rows_per` rows,
/// the first of which is row `first` of the call.
fn row_blocks<'a>(
    product: &'a mut [f32],
    outs: Vec<&'a mut [f32]>,
    widths: &[usize],
    n: usize,
    rows_per: usize,
    first: usize,
) -> Vec<RowBlock<'a>> {
    let mut blocks: Vec<RowBlock<'a>> =
        product.chunks_mut(rows_per * n).enumerate().map(|(b, p)| (first + b * rows_per, p, Vec::new())).collect();
    for (mut rest, &w) in outs.into_iter().zip(widths) {
        for (_, p, slices) in blocks.iter_mut() {
            let at = (p.len() / n * w).min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(at);
            slices.push(head);
            rest = tail;
        }
    }
    blocks
}

/// Rows `row0 ..` of the product (as many as `out`, a block of whole rows, holds): its column
/// tiles in parallel. The tasks write disjoint columns of the same rows, so they share the
/// rows' base pointer rather than overlapping slices.
fn row_tile(d: ProductDims, lhs: &[f32], rhs: &[f32], row0: usize, out: &mut [f32]) {
    let dst = Dst { ptr: out.as_mut_ptr(), len: out.len() };
    let width = col_tile(d.n);
    (0..d.n.div_ceil(width)).into_par_iter().for_each(|c| {
        let col0 = c * width;
        // SAFETY: `dst` is `out`, borrowed mutably for this whole loop and touched by nothing
        // else; the tiles write disjoint columns `col0 .. col0 + width` of its rows.
        unsafe { tile(d, lhs, rhs, row0, col0, width.min(d.n - col0), dst) };
    });
}

/// The width of the column tiles of an `n`-column product: at most [`COL_TILE`], an even
/// number of tiles of equal width (a multiple of 16) wherever `n` allows, so that two threads
/// get equal work: 768 columns are two tiles of 384, not 512 and 256. Depends on `n` only.
fn col_tile(n: usize) -> usize {
    let tiles = n.div_ceil(COL_TILE).max(2).next_multiple_of(2);
    n.div_ceil(tiles).next_multiple_of(16).clamp(16, COL_TILE)
}

/// The destination of a tile: `len` elements of `[rows, n]` output from `ptr` (a block of rows).
#[derive(Clone, Copy, Debug)]
struct Dst {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: a `Dst` is only shared between tasks that write disjoint elements (`row_tile`).
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

/// Columns `col0 .. col0 + cols` of the product rows `row0 ..` held by `dst` (`dst.len / n`
/// rows), written at `dst.ptr[i·n + col0 + j]`.
///
/// # Safety
/// `dst` must be valid for writes of `dst.len` elements, and no other code may access the
/// tile's elements during the call.
unsafe fn tile(d: ProductDims, lhs: &[f32], rhs: &[f32], row0: usize, col0: usize, cols: usize, dst: Dst) {
    let (k, n) = (d.k, d.n);
    let rows = dst.len.checked_div(n).unwrap_or(0);
    let inside = rows > 0
        && cols > 0
        && dst.len == rows * n
        && row0 + rows <= d.rows
        && col0 + cols <= n
        && lhs.len() == d.rows * k
        && rhs.len() == k * n;
    if !inside {
        debug_assert!(inside, "a product tile outside its operands");
        return;
    }
    // rhs element (p, j) of the tile: `[k, n]` row-major at `p·n + col0 + j`; a `[n, k]` weight
    // at `(col0 + j)·k + p`.
    let (rhs_ptr, rhs_cs, rhs_rs) = if d.transpose_rhs {
        (rhs[col0 * k..].as_ptr(), k as isize, 1isize)
    } else {
        (rhs[col0..].as_ptr(), 1isize, n as isize)
    };
    // SAFETY: every address gemm touches is inside a buffer: lhs rows `row0 .. row0 + rows`
    // (`rows·k` elements from `row0·k`, inside `lhs`); rhs elements `(p, j)` for `p < k`,
    // `j < cols` at the offsets above, below `(col0 + cols)·k` or `(k - 1)·n + col0 + cols`,
    // inside `rhs`; dst elements `i·n + col0 + j` for `i < rows`, `j < cols`, below `dst.len`,
    // which the caller guarantees writable and unshared. `read_dst` is false, so dst is only
    // written.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            k,
            dst.ptr.add(col0),
            1,
            n as isize,
            false,
            lhs[row0 * k..].as_ptr(),
            1,
            k as isize,
            rhs_ptr,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_values as values;

    fn naive(d: ProductDims, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; d.rows * d.n];
        for i in 0..d.rows {
            for j in 0..d.n {
                out[i * d.n + j] = (0..d.k)
                    .map(|p| {
                        let w = if d.transpose_rhs { b[j * d.k + p] } else { b[p * d.n + j] };
                        a[i * d.k + p] as f64 * w as f64
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn every_tiling_matches_a_naive_product_and_any_thread_count() {
        let pools: Vec<rayon::ThreadPool> =
            [1, 3].iter().map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap()).collect();
        for (rows, k, n) in [(1, 7, 5), (1, 33, 300), (2, 17, 1030), (65, 9, 31), (300, 40, 520), (3, 0, 4)] {
            for transpose_rhs in [false, true] {
                let d = ProductDims { rows, k, n, transpose_rhs };
                let (a, b) = (values(rows * k, 1), values(k * n, 2));
                let want = naive(d, &a, &b);
                let runs: Vec<Vec<f32>> = pools
                    .iter()
                    .map(|pool| {
                        let mut out = vec![f32::NAN; rows * n];
                        pool.install(|| product(d, &a, &b, &mut out)).unwrap();
                        out
                    })
                    .collect();
                for (x, w) in runs[0].iter().zip(&want) {
                    assert!((*x as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{d:?}: {x} vs {w}");
                }
                assert_eq!(runs[0], runs[1], "{d:?}: thread count changed the result");
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let d = ProductDims { rows: 2, k: 3, n: 4, transpose_rhs: true };
        assert!(product(d, &[0.0; 6], &[0.0; 12], &mut [0.0; 7]).is_err());
        assert!(product(d, &[0.0; 5], &[0.0; 12], &mut [0.0; 8]).is_err());
    }
}
