//! The AVX-512 exact decode kernel: f32 activations times 4-bit weights, with no table lookup and
//! no integer conversion. A 64-byte chunk of packed bytes is one vector of 16 dword lanes of 8
//! nibbles each (see [`super::chunks`]); nibbles 4..8 are shifted down once, and then nibble `n`
//! at bit `p` (`p ∈ {0, 4, 8, 12}`) becomes an f32 in one `vpternlogd`, `(lane & 0xF<<p) |
//! bits(2^(23−p))`, which is the float `2^(23−p) + n` (the nibble lands in the mantissa where a
//! unit is worth 1), and one subtraction of `2^(23−p) + z` (`z` = 8 in Q4_0, 0 in Q4_1), which is
//! exact: `n − z`. So the unpacking runs on the logic and add units and leaves the shuffle unit,
//! the bottleneck of a `vpermps` table on Zen 4, alone.
//!
//! The activation is permuted once per call ([`ExactPlan::new`]) into the order the nibbles come
//! out of a chunk. Per chunk and row the inner loop is one (masked) load of the packed bytes, one
//! shift, eight logic operations, eight subtractions and eight multiply-adds into two
//! accumulators, then one multiply-add by the 16 lanes' group scales (16 f16 scales loaded from
//! the chunk's first group, converted and spread over the lanes by a `vpermps`). The Q4_1
//! minimums add `Σ_g c_g·Σ_{p∈g} x_p` after the chunks, 16 groups per multiply-add. Four rows go
//! through the chunk loop together, sharing the activation's loads, and each chunk load comes
//! with a prefetch of the packed bytes [`super::chunks::PREFETCH_BYTES`] ahead.
//!
//! Guarantees: every row is computed by the same sequence of operations whatever rows it is
//! computed with, so results depend only on the shapes; they equal dequantize-then-multiply up to
//! reassociation and fused multiply-add rounding. Only for finite activations: with an infinite
//! one, `0·∞` terms can appear that the reference does not have, so the caller routes
//! non-finite activations elsewhere.

use super::chunks::{
    load_chunk, load_halves, mins_term, passes, prefetch_ahead, Chunks, RowParts, CHUNK_BYTES, LANES, NIBBLES,
    PREFETCH_BYTES, ROWS_PER_PASS,
};
use super::{QuantScheme, QuantizedMatrix};

/// The per-call form of the activation for [`ExactPlan::block`].
#[derive(Debug)]
pub(super) struct ExactPlan {
    chunks: Chunks,
    /// `[chunk][nibble v][lane]`: the activation each nibble multiplies (0 for padding).
    xp: Vec<f32>,
    /// Sums of the activation per group, zero-padded to a multiple of 16 groups (Q4_1 only).
    xsum: Vec<f32>,
    /// The weights' zero point `z`: a nibble `n` stands for `(n − z)·d` (plus `c` in Q4_1).
    zero: f32,
    with_mins: bool,
}

impl ExactPlan {
    /// The plan for `x` times `q`'s rows, or `None` when `q`'s group size does not suit the
    /// chunks (see [`Chunks::new`]).
    pub(super) fn new(q: &QuantizedMatrix, x: &[f32]) -> Option<ExactPlan> {
        let chunks = Chunks::new(q)?;
        let mut xp = vec![0.0; chunks.count * NIBBLES * LANES];
        chunks.for_each_byte(|byte, _, low, high| {
            // Nibble `v = 2·(byte % 4)` of lane `(byte / 4) % 16` of chunk `byte / 64`.
            let at = byte / CHUNK_BYTES * NIBBLES * LANES + 2 * (byte % 4) * LANES + byte / 4 % LANES;
            xp[at] = x[low];
            if let Some(high) = high {
                xp[at + LANES] = x[high];
            }
        });
        let with_mins = q.format() == QuantScheme::Q4_1;
        let mut xsum = Vec::new();
        if with_mins {
            xsum = x.chunks(q.group()).map(|g| g.iter().sum()).collect();
            xsum.resize(q.groups_per_row().div_ceil(LANES) * LANES, 0.0);
        }
        let zero = if with_mins { 0.0 } else { 8.0 };
        Some(ExactPlan { chunks, xp, xsum, zero, with_mins })
    }

    /// `out[j] = Σ_p x[p]·ŵ[r0 + j, p]` for a block of rows, [`ROWS_PER_PASS`] at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX-512VL; `r0 + out.len() ≤ q.rows()`; `self`
    /// was built for `q`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn block(&self, q: &QuantizedMatrix, r0: usize, out: &mut [f32]) {
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

    /// The dot products of `R` rows with the activation.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX-512VL; the rows' parts have the lengths of
    /// the matrix `self` was built for.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn rows<const R: usize>(&self, parts: [RowParts<'_>; R]) -> [f32; R] {
        use std::arch::x86_64::*;
        let ch = &self.chunks;
        // The nibble at bit `p` of a lane, `MASK[i]` with `p = 4·i`, ORed into the bits of
        // `MAGIC[i] = 2^(23 − p)` is the float `2^(23 − p) + n`; minus `BASE[i]` it is `n − z`.
        let mask: [__m512i; 4] = std::array::from_fn(|i| _mm512_set1_epi32(0xF << (4 * i)));
        let magic: [__m512i; 4] = std::array::from_fn(|i| _mm512_set1_epi32((150 - 4 * i as i32) << 23));
        let base: [__m512; 4] = std::array::from_fn(|i| _mm512_set1_ps((1u32 << (23 - 4 * i)) as f32 + self.zero));
        let mut acc = [_mm512_setzero_ps(); R];
        // SAFETY (every load below): `xp` holds `NIBBLES · LANES` floats per chunk and
        // `c < ch.count`; a row's bytes are loaded from `c · 64` under `byte_mask[c]`, which
        // covers only bytes below the row's length; its scales from `first_group[c]` under
        // `group_mask[c]`, which covers only groups of the row (masked-off elements are not
        // accessed).
        for c in 0..ch.count {
            let xb = self.xp[c * NIBBLES * LANES..(c + 1) * NIBBLES * LANES].as_ptr();
            let mut xv = [_mm512_setzero_ps(); NIBBLES];
            for (v, x) in xv.iter_mut().enumerate() {
                *x = unsafe { _mm512_loadu_ps(xb.add(v * LANES)) };
            }
            let pattern = unsafe { _mm512_loadu_si512(ch.pattern[c].as_ptr().cast()) };
            let (bytes, groups, first) = (ch.byte_mask[c], ch.group_mask[c], ch.first_group[c]);
            for (a, p) in acc.iter_mut().zip(&parts) {
                let w = unsafe { load_chunk(p.bytes, c, bytes) };
                prefetch_ahead(p.bytes.as_ptr().wrapping_add(c * CHUNK_BYTES), PREFETCH_BYTES);
                let s = unsafe { load_halves(p.scales, first, groups) };
                let s = _mm512_permutexvar_ps(pattern, s);
                let up = _mm512_srli_epi32::<16>(w);
                // Nibble `i` of `$w` (`i < 4`) as the f32 `n − z`.
                macro_rules! nibble {
                    ($w:expr, $i:literal) => {
                        _mm512_sub_ps(
                            _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xEA>($w, mask[$i], magic[$i])),
                            base[$i],
                        )
                    };
                }
                let mut even = _mm512_mul_ps(nibble!(w, 0), xv[0]);
                let mut odd = _mm512_mul_ps(nibble!(w, 1), xv[1]);
                even = _mm512_fmadd_ps(nibble!(w, 2), xv[2], even);
                odd = _mm512_fmadd_ps(nibble!(w, 3), xv[3], odd);
                even = _mm512_fmadd_ps(nibble!(up, 0), xv[4], even);
                odd = _mm512_fmadd_ps(nibble!(up, 1), xv[5], odd);
                even = _mm512_fmadd_ps(nibble!(up, 2), xv[6], even);
                odd = _mm512_fmadd_ps(nibble!(up, 3), xv[7], odd);
                *a = _mm512_fmadd_ps(s, _mm512_add_ps(even, odd), *a);
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
