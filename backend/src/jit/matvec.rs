//! The decode product: one row `x` (or a few) times a weight stored `[n, k]` (a `Linear` weight,
//! read with `transpose_rhs`), `y[j] = Σ_p x[p] · w[j, p]`, which streams every weight once and
//! is bound by memory bandwidth; plus [`read_bandwidth`], the streaming read rate it is measured
//! against.
//!
//! The weight rows are split into fixed blocks of [`BLOCK_ROWS`] rows that the decode team
//! ([`crate::team`]: threads that spin between products instead of sleeping) spreads over the
//! threads. Each block walks its rows in order (one sequential stream per thread), with several
//! vector accumulators per row, in AVX-512 or AVX2+FMA when the CPU has them (detected at run
//! time), else the interpreter's portable dot product.
//!
//! Guarantees: every output is one dot product whose order of operations depends only on `k` and
//! the instruction set picked, never on the number of threads or on which block the row is in;
//! sums agree with the interpreter's to reassociation (and fused multiply-add rounding).

use crate::disjoint::Disjoint;
use crate::interp::matmul::dot;
use crate::team;
use rayon::prelude::*;

/// Weight rows per parallel task: 64 rows of a 768-wide weight are 192 KiB, enough to amortize
/// the task and small enough to balance two threads on a 768-row projection.
pub(crate) const BLOCK_ROWS: usize = 64;

/// Matrix-vector products of each of the few rows of `x` (`rows × k`) with a weight `w` stored
/// `[n, k]`: `out[i·n + j] = dot(x[i·k ..], w[j·k ..])`, `out` being `rows × n`. Each block of
/// weight rows is read from memory once and stays in cache for the other rows of `x`. Lengths
/// that do not fit (`w` not a whole number of rows, `x` or `out` not `rows` of them) write
/// nothing and return `false`.
pub fn matvec(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) -> bool {
    let (rows, n) = match (x.len().checked_div(k), w.len().checked_div(k)) {
        (Some(rows), Some(n)) => (rows, n),
        // k == 0: every product is an empty sum.
        _ => {
            out.fill(0.0);
            return x.is_empty() && w.is_empty();
        }
    };
    if rows * k != x.len() || n * k != w.len() || Some(out.len()) != rows.checked_mul(n) || out.is_empty() {
        return out.is_empty() && rows * k == x.len() && n * k == w.len();
    }
    let kernel = Isa::detect();
    let dst = Disjoint(out.as_mut_ptr());
    team::for_each(n.div_ceil(BLOCK_ROWS), &|b| {
        let j0 = b * BLOCK_ROWS;
        let count = BLOCK_ROWS.min(n - j0);
        let w = &w[j0 * k..(j0 + count) * k];
        for (i, xi) in x.chunks_exact(k).enumerate() {
            // SAFETY: `out` holds `rows × n` elements and is borrowed mutably for this loop;
            // this task alone writes elements `i·n + j0 .. i·n + j0 + count` of it (its block of
            // columns in each row), which lie inside row `i`.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.at(i * n + j0), count) };
            kernel.rows(xi, w, o);
        }
    });
    true
}

/// The instruction set the dot products use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// `out[j] = dot(x, w[j·k ..])` for the rows of one block (`w.len() == out.len() · x.len()`).
    fn rows(self, x: &[f32], w: &[f32], out: &mut [f32]) {
        let k = x.len();
        match self {
            // SAFETY: the variant is only constructed when the CPU has the features (`detect`),
            // and the slices have the lengths the kernels require (checked by `matvec`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::rows_avx512(x, w, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::rows_avx2(x, w, out) },
            Isa::Portable => {
                for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
                    *o = dot(x, row);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One row at a time (one sequential stream: interleaving four rows ran at half the speed),
    /// four 16-lane accumulators over 64-element steps, then 16-element steps into the first,
    /// then a masked tail.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `w.len() == out.len() * x.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_avx512(x: &[f32], w: &[f32], out: &mut [f32]) {
        let k = x.len();
        debug_assert_eq!(w.len(), out.len() * k);
        let xp = x.as_ptr();
        let k64 = k / 64 * 64;
        let k16 = k / 16 * 16;
        let tail = (k - k16) as u32;
        let mask: __mmask16 = if tail == 0 { 0 } else { ((1u32 << tail) - 1) as __mmask16 };
        for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
            let r = row.as_ptr();
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut p = 0;
            // SAFETY (all loads): `x` and `row` hold `k` elements; `p + 64 <= k64 <= k` in the
            // first loop, `p + 16 <= k16` in the second, and the masked load reads only the
            // `tail` elements from `k16` below `k`.
            while p < k64 {
                for (i, a) in acc.iter_mut().enumerate() {
                    let q = p + 16 * i;
                    *a = _mm512_fmadd_ps(
                        unsafe { _mm512_loadu_ps(xp.add(q)) },
                        unsafe { _mm512_loadu_ps(r.add(q)) },
                        *a,
                    );
                }
                p += 64;
            }
            while p < k16 {
                acc[0] = _mm512_fmadd_ps(
                    unsafe { _mm512_loadu_ps(xp.add(p)) },
                    unsafe { _mm512_loadu_ps(r.add(p)) },
                    acc[0],
                );
                p += 16;
            }
            if mask != 0 {
                let x0 = unsafe { _mm512_maskz_loadu_ps(mask, xp.add(k16)) };
                acc[1] = _mm512_fmadd_ps(x0, unsafe { _mm512_maskz_loadu_ps(mask, r.add(k16)) }, acc[1]);
            }
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
            *o = _mm512_reduce_add_ps(sum);
        }
    }

    /// The sum of the eight lanes of `v`, pairwise.
    #[target_feature(enable = "avx2")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Like [`rows_avx512`] with 8-lane vectors: 16-element steps, then a scalar tail.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `w.len() == out.len() * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2(x: &[f32], w: &[f32], out: &mut [f32]) {
        let k = x.len();
        debug_assert_eq!(w.len(), out.len() * k);
        let xp = x.as_ptr();
        let k16 = k / 16 * 16;
        for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
            let r = row.as_ptr();
            let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut p = 0;
            // SAFETY: `p + 16 <= k16 <= k` and `x` and `row` both hold `k` elements.
            while p < k16 {
                a = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(xp.add(p)) }, unsafe { _mm256_loadu_ps(r.add(p)) }, a);
                b = _mm256_fmadd_ps(
                    unsafe { _mm256_loadu_ps(xp.add(p + 8)) },
                    unsafe { _mm256_loadu_ps(r.add(p + 8)) },
                    b,
                );
                p += 16;
            }
            let mut tail = 0.0f32;
            for (&xv, &wv) in x[k16..].iter().zip(&row[k16..]) {
                tail = xv.mul_add(wv, tail);
            }
            *o = hsum256(_mm256_add_ps(a, b)) + tail;
        }
    }

    /// The sum of `data` with eight 16-lane accumulators (the read-bandwidth probe).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_avx512(data: &[f32]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut chunks = data.chunks_exact(128);
        for c in chunks.by_ref() {
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` holds 128 elements, so lanes `16 i .. 16 i + 16` are inside it.
                *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * i)) });
            }
        }
        let total = acc.iter().fold(_mm512_setzero_ps(), |s, &a| _mm512_add_ps(s, a));
        _mm512_reduce_add_ps(total) + chunks.remainder().iter().sum::<f32>()
    }
}

/// The sum of `data`, read once at full speed.
fn sum(data: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { x86::sum_avx512(data) };
    }
    let mut acc = [0.0f32; 16];
    let mut chunks = data.chunks_exact(16);
    for c in chunks.by_ref() {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// The streaming read bandwidth in bytes per second with the current rayon pool: the best of
/// `reps` parallel sums over a buffer of `bytes` (make it several times the last-level cache),
/// split into the same kind of fixed blocks as [`matvec`]. The buffer is written once first so
/// its pages are resident.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let len = (bytes / 4).max(1 << 16);
    let data: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
    let block = 1 << 16;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        let s: f32 = data.par_chunks(block).map(sum).sum();
        let elapsed = start.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.min(elapsed);
    }
    (len * 4) as f64 / best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 20) as f32 / 4096.0 - 0.5)
            .collect()
    }

    #[test]
    fn every_isa_matches_plain_sums_at_odd_widths() {
        let mut isas = vec![Isa::Portable, Isa::detect()];
        isas.dedup();
        for k in [1usize, 3, 15, 16, 17, 31, 32, 33, 47, 48, 100, 768] {
            for rows in [1usize, 3, 4, 5, 9, 130] {
                let x = values(k, 1);
                let w = values(rows * k, 2);
                let plain: Vec<f64> =
                    w.chunks_exact(k).map(|r| r.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum()).collect();
                for &isa in &isas {
                    let mut out = vec![f32::NAN; rows];
                    isa.rows(&x, &w, &mut out);
                    for (j, (&o, &p)) in out.iter().zip(&plain).enumerate() {
                        assert!((o as f64 - p).abs() <= 1e-5 * (1.0 + p.abs()), "{isa:?} k {k} row {j}: {o} vs {p}");
                    }
                }
                let mut par = vec![f32::NAN; rows];
                assert!(matvec(&x, &w, k, &mut par));
                let mut serial = vec![f32::NAN; rows];
                Isa::detect().rows(&x, &w, &mut serial);
                assert_eq!(par, serial, "k {k} rows {rows}: blocks must not change the sums");
            }
        }
    }

    #[test]
    fn rejects_mismatched_lengths_and_handles_empty_sums() {
        let mut out = vec![1.0; 3];
        assert!(!matvec(&[1.0, 2.0], &[0.0; 5], 2, &mut out));
        assert!(!matvec(&[1.0, 2.0, 3.0], &[0.0; 6], 2, &mut out));
        assert!(matvec(&[], &[], 0, &mut out));
        assert_eq!(out, [0.0; 3]);
    }

    #[test]
    fn several_rows_match_one_at_a_time() {
        let (k, n) = (77, 150);
        let w = values(n * k, 3);
        for rows in [2usize, 3, 8] {
            let x = values(rows * k, 4);
            let mut all = vec![f32::NAN; rows * n];
            assert!(matvec(&x, &w, k, &mut all));
            for (i, xi) in x.chunks_exact(k).enumerate() {
                let mut one = vec![f32::NAN; n];
                assert!(matvec(xi, &w, k, &mut one));
                assert_eq!(&all[i * n..(i + 1) * n], &one[..], "rows {rows}, row {i}");
            }
        }
    }

    #[test]
    fn nan_and_inf_propagate() {
        let x = vec![1.0f32; 40];
        let mut w = vec![0.5f32; 80];
        w[3] = f32::NAN;
        w[40 + 39] = f32::INFINITY;
        let mut out = vec![0.0; 2];
        assert!(matvec(&x, &w, 40, &mut out));
        assert!(out[0].is_nan());
        assert_eq!(out[1], f32::INFINITY);
    }

    #[test]
    fn bandwidth_is_positive() {
        assert!(read_bandwidth(1 << 20, 1) > 0.0);
    }
}
