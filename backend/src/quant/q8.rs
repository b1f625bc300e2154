//! The decode product with the activation rounded to 8 bits ([`matvec_q8`], the llama.cpp
//! "Q8_0 activation" scheme): an approximation of [`super::matvec`] that multiplies the 4-bit
//! weights and the 8-bit activations as integers, four byte products per lane and instruction
//! (AVX-512 VNNI `vpdpbusd`), and applies the weight and activation scales once per group.
//!
//! The activation is quantized once per call, per group of the weight's group size (the last
//! group of a row may be shorter): with `m_g = max_{p∈g} |x_p|`, `s_g = m_g / 127` and `x̃_p =
//! s_g·q_p` with `q_p = round(x_p·(127 / m_g)) ∈ −127..=127` (ties to even; all zero when `m_g
//! = 0`), each operation in f32. The result is the exact
//! product of the dequantized weight `ŵ` with `x̃`, up to the f32 rounding of the per-group
//! combination `d_g·s_g·(Σ q̂·q)` (+ `c_g·s_g·Σ q` for Q4_1) and of the sums over groups.
//!
//! Error bound: `|x_p − x̃_p| ≤ (s_g/2)·(1 + 2⁻¹⁴)`. With `u = 2⁻²⁴` and `y = fl(x_p·fl(127 /
//! m_g))`, `|y − q_p| ≤ 1/2`, and `|x_p − s_g·y| ≤ |x_p|·|1 − s_g·y / x_p| ≤ 127·s_g·(1 + u)·3.01u`
//! (three roundings: `s_g`, `127 / m_g` and the product), which is below `s_g·2⁻¹⁵`; so
//! `|x_p − s_g·q_p| ≤ s_g/2 + s_g·2⁻¹⁵`. Hence, for output `j`,
//!
//! `|y_q8[j] − Σ_p x_p·ŵ[j, p]| ≤ Σ_g (s_g/2)·(1 + 2⁻¹⁴)·Σ_{p∈g} |ŵ[j, p]|`
//!
//! plus the f32 rounding of the sums (relative to `Σ_p |x̃_p|·(|ŵ[j, p]| + 16·|d_g| + |c_g|)`, as
//! in [`super::matvec`]). The bound is relative to each group's largest activation: a group with
//! one large and many small values loses the small ones' precision.
//!
//! Where the fast kernel does not apply (no AVX-512 VNNI, BW and VL; a group size that is not a
//! multiple of 8; an activation with an infinity or a NaN, which has no 8-bit form) the result
//! is the exact [`super::matvec`], which satisfies the bound and propagates NaNs and infinities
//! as dequantize-then-multiply does.
//!
//! Guarantees: as [`super::matvec`], results depend only on the shapes and the instruction set,
//! never on the number of threads.

use super::kernels::matvec;
use super::{QuantError, QuantizedMatrix};

/// `y[j] ≈ Σ_p x[p]·ŵ[j, p]` with `x` rounded to 8 bits per group (see the module
/// documentation for the rounding and the error bound), `x.len() == q.cols()`, `y.len() ==
/// q.rows()`.
pub fn matvec_q8(q: &QuantizedMatrix, x: &[f32], y: &mut [f32]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    if vnni::matvec(q, x, y) {
        return Ok(());
    }
    matvec(q, x, y)
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::super::chunks::{
        load_chunk, load_halves, mins_term, passes, prefetch_ahead, Chunks, RowParts, CHUNK_BYTES, LANES,
        PREFETCH_BYTES, ROWS_PER_PASS,
    };
    use super::super::kernels::BLOCK_ROWS;
    use super::super::{QuantScheme, QuantizedMatrix};
    use rayon::prelude::*;

    /// The 8-bit product into `y` when the kernel applies (the CPU has AVX-512 VNNI, BW and
    /// VL, the lengths fit, `x` is finite, the group size suits the chunks); `false`, with
    /// nothing written, otherwise.
    pub(super) fn matvec(q: &QuantizedMatrix, x: &[f32], y: &mut [f32]) -> bool {
        let vnni = std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let fits = x.len() == q.cols() && y.len() == q.rows() && q.cols() > 0;
        if !(vnni && fits && x.iter().all(|v| v.is_finite())) {
            return false;
        }
        let Some(plan) = Q8Plan::new(q, x) else {
            return false;
        };
        y.par_chunks_mut(BLOCK_ROWS).enumerate().for_each(|(b, out)| {
            // SAFETY: the CPU has the features (checked above); the block's rows lie inside `q`
            // as `y.len() == q.rows()`.
            unsafe { plan.block(q, b * BLOCK_ROWS, out) }
        });
        true
    }

    /// The 8-bit activation of one call: `s_g` per group and `q_p` per column (see the module
    /// documentation).
    fn quantize_activation(x: &[f32], group: usize) -> (Vec<f32>, Vec<i8>) {
        let mut scales = Vec::with_capacity(x.len().div_ceil(group.max(1)));
        let mut values = vec![0i8; x.len()];
        for (g, q) in x.chunks(group.max(1)).zip(values.chunks_mut(group.max(1))) {
            let m = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            scales.push(m / 127.0);
            if m > 0.0 {
                let inverse = 127.0 / m;
                for (q, &v) in q.iter_mut().zip(g) {
                    *q = round_to_i8(v * inverse);
                }
            }
        }
        (scales, values)
    }

    /// `y` (with `|y| ≤ 128`) rounded to the nearest integer, ties to even, clamped to
    /// `−127..=127`: adding and subtracting `1.5·2^23` rounds to an integer in the current
    /// (nearest-even) mode.
    #[inline(always)]
    fn round_to_i8(y: f32) -> i8 {
        const SHIFT: f32 = 12_582_912.0;
        // In range after the clamp, so the cast is exact.
        ((y + SHIFT) - SHIFT).clamp(-127.0, 127.0) as i8
    }

    /// The per-call form of the 8-bit activation, in the byte order of a packed chunk.
    #[derive(Debug)]
    struct Q8Plan {
        chunks: Chunks,
        /// `[chunk][byte]`: the activation the byte's low nibble multiplies (0 for padding).
        low: Vec<i8>,
        /// `[chunk][byte]`: the activation the byte's high nibble multiplies.
        high: Vec<i8>,
        /// `[chunk][lane]`: the integer sum's start, `−8·Σ q` over the lane's activations in
        /// Q4_0 (the weights' offset), else 0.
        bias: Vec<i32>,
        /// `[chunk][lane]`: the activation scale `s_g` of the lane's group.
        lane_scale: Vec<f32>,
        /// Per group, `s_g·Σ_{p∈g} q_p`, zero-padded to a multiple of 16 groups (Q4_1 only).
        xsum: Vec<f32>,
        with_mins: bool,
    }

    impl Q8Plan {
        fn new(q: &QuantizedMatrix, x: &[f32]) -> Option<Q8Plan> {
            let chunks = Chunks::new(q)?;
            let (scales, values) = quantize_activation(x, q.group());
            let n = chunks.count;
            let with_mins = q.format() == QuantScheme::Q4_1;
            let mut plan = Q8Plan {
                low: vec![0; n * CHUNK_BYTES],
                high: vec![0; n * CHUNK_BYTES],
                bias: vec![0; n * LANES],
                lane_scale: vec![0.0; n * LANES],
                xsum: Vec::new(),
                with_mins,
                chunks,
            };
            plan.chunks.for_each_byte(|byte, g, low, high| {
                // Lane `(byte / 4) % 16` of chunk `byte / 64`.
                let lane = byte / 4;
                let (l, h) = (values[low], high.map_or(0, |h| values[h]));
                plan.low[byte] = l;
                plan.high[byte] = h;
                if !with_mins {
                    plan.bias[lane] -= 8 * (i32::from(l) + i32::from(h));
                }
                plan.lane_scale[lane] = scales[g];
            });
            if with_mins {
                plan.xsum = values
                    .chunks(q.group())
                    .zip(&scales)
                    .map(|(g, &s)| s * g.iter().map(|&v| i32::from(v)).sum::<i32>() as f32)
                    .collect();
                plan.xsum.resize(q.groups_per_row().div_ceil(LANES) * LANES, 0.0);
            }
            Some(plan)
        }

        /// `out[j] = Σ_p x̃[p]·ŵ[r0 + j, p]` for a block of rows.
        ///
        /// # Safety
        /// The CPU must have AVX-512F, BW, VL and VNNI; `r0 + out.len() ≤ q.rows()`; `self` was
        /// built for `q`.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn block(&self, q: &QuantizedMatrix, r0: usize, out: &mut [f32]) {
            passes(
                q,
                r0,
                out,
                // SAFETY: the caller guarantees the CPU features; the parts are rows of `q`.
                |rows| unsafe { self.rows::<ROWS_PER_PASS>(rows) },
                // SAFETY: as above.
                |rows| unsafe { self.rows::<1>(rows) },
            );
        }

        /// # Safety
        /// The CPU must have AVX-512F, BW, VL and VNNI; the rows' parts have the lengths of the
        /// matrix `self` was built for.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn rows<const R: usize>(&self, parts: [RowParts<'_>; R]) -> [f32; R] {
            use std::arch::x86_64::*;
            let ch = &self.chunks;
            let nibble = _mm512_set1_epi8(15);
            let mut acc = [_mm512_setzero_ps(); R];
            // SAFETY (every load below): `low` and `high` hold 64 bytes per chunk, `bias` and
            // `lane_scale` 16 lanes per chunk, and `c < ch.count`; a row's bytes are loaded from
            // `c · 64` under `byte_mask[c]`, which covers only bytes below the row's length; its
            // scales from `first_group[c]` under `group_mask[c]`, which covers only groups of the
            // row (masked-off elements are not accessed).
            for c in 0..ch.count {
                let (low, high, bias, lane_scale) = unsafe {
                    (
                        _mm512_loadu_si512(self.low.as_ptr().add(c * CHUNK_BYTES).cast()),
                        _mm512_loadu_si512(self.high.as_ptr().add(c * CHUNK_BYTES).cast()),
                        _mm512_loadu_si512(self.bias.as_ptr().add(c * LANES).cast()),
                        _mm512_loadu_ps(self.lane_scale.as_ptr().add(c * LANES)),
                    )
                };
                let pattern = unsafe { _mm512_loadu_si512(ch.pattern[c].as_ptr().cast()) };
                let (bytes, groups, first) = (ch.byte_mask[c], ch.group_mask[c], ch.first_group[c]);
                for (a, p) in acc.iter_mut().zip(&parts) {
                    let w = unsafe { load_chunk(p.bytes, c, bytes) };
                    prefetch_ahead(p.bytes.as_ptr().wrapping_add(c * CHUNK_BYTES), PREFETCH_BYTES);
                    let s = unsafe { load_halves(p.scales, first, groups) };
                    let s = _mm512_mul_ps(_mm512_permutexvar_ps(pattern, s), lane_scale);
                    let lo = _mm512_and_si512(w, nibble);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), nibble);
                    let sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bias, lo, low), hi, high);
                    *a = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(sum), *a);
                }
            }
            if self.with_mins {
                for (a, p) in acc.iter_mut().zip(&parts) {
                    // SAFETY: the caller guarantees the CPU features; `xsum` is padded to whole
                    // vectors of the row's groups.
                    *a = unsafe { mins_term(*a, p.mins.unwrap_or_default(), &self.xsum) };
                }
            }
            let mut sums = [0.0; R];
            for (s, &a) in sums.iter_mut().zip(&acc) {
                *s = _mm512_reduce_add_ps(a);
            }
            sums
        }
    }
}
