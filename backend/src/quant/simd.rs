//! The instruction set the decode product runs in ([`Isa`], detected at run time), and its row
//! loop in the natural order of the packed bytes: written once as portable Rust that LLVM
//! vectorizes (fixed-width lane arrays as independent accumulators), and with AVX2+FMA
//! intrinsics (the same sums in the same order). AVX-512 machines run [`super::avx512`] instead,
//! and this AVX2 loop only for group sizes that are not a multiple of 8.
//!
//! Guarantees: every result is a sum whose order of operations depends only on the shapes and on
//! the instruction set (the AVX2 version uses fused multiply-add, the portable one does not); in
//! particular it does not depend on which rows are computed together or by which thread.

use super::QuantizedMatrix;

/// Lanes per accumulator array: two AVX2 vectors.
const LANES: usize = 16;

/// The instruction set the loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

/// Arguments of one block of decode rows: `out[j] = Σ_p x[p]·ŵ[r0 + j, p]`. `scales` and
/// `offsets` are scratch of `out.len() × groups_per_row`; `xsum` holds the sums of `x` per group.
#[derive(Debug)]
pub(super) struct DecodeBlock<'a> {
    pub q: &'a QuantizedMatrix,
    pub r0: usize,
    pub x: &'a [f32],
    pub xsum: &'a [f32],
    pub scales: &'a mut [f32],
    pub offsets: &'a mut [f32],
    pub out: &'a mut [f32],
}

impl Isa {
    pub(super) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl");
            if avx2 && avx512 {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Computes one block of decode rows (see [`DecodeBlock`]).
    pub(super) fn decode_block(self, b: DecodeBlock<'_>) {
        match self {
            // SAFETY: the variants are only constructed when the CPU has the features (`detect`),
            // and AVX-512 comes with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { x86::decode_block_avx2(b) },
            Isa::Portable => decode_block(b, quant_row_dot::<false>),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{decode_block, dot, hsum, quant_row_dot, DecodeBlock, LANES};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn decode_block_avx2(b: DecodeBlock<'_>) {
        // SAFETY: this function's caller guarantees AVX2 and FMA.
        decode_block(b, |bytes, group, x, xsum, scales, offsets| unsafe {
            quant_row_dot_avx2(bytes, group, x, xsum, scales, offsets)
        })
    }

    /// [`super::quant_row_dot`] for AVX2 with FMA. When the group size is a multiple of 32, the
    /// whole groups run a vector loop: 16 bytes are zero-extended to two vectors of 32-bit lanes,
    /// split into nibbles with a mask and a shift, converted and multiplied into lane
    /// accumulators; even and odd groups fold into separate accumulators (two independent
    /// chains), and the offsets' term `Σ_g o_g·xsum_g` is one dot product after the loop. Other
    /// groups (a partial last group, odd group sizes) run the portable loop. The order of
    /// operations depends only on the shapes.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quant_row_dot_avx2(
        bytes: &[u8],
        group: usize,
        x: &[f32],
        xsum: &[f32],
        scales: &[f32],
        offsets: &[f32],
    ) -> f32 {
        let stride = group.div_ceil(2);
        let whole = if group.is_multiple_of(2 * LANES) { x.len() / group } else { 0 };
        // The lengths the vector loop reads (checked, so the raw loads below stay inside).
        let (bytes_v, x_v, scales_v) = (&bytes[..whole * stride], &x[..whole * group], &scales[..whole]);
        let mask = _mm256_set1_epi32(15);
        let zero = _mm256_setzero_ps();
        // Even and odd groups fold into separate accumulators (swapped after every group).
        let (mut even0, mut even1, mut odd0, mut odd1) = (zero, zero, zero, zero);
        for (g, &d) in scales_v.iter().enumerate() {
            let (mut lo0, mut lo1, mut hi0, mut hi1) = (zero, zero, zero, zero);
            let bp = bytes_v.as_ptr().wrapping_add(g * stride);
            let lp = x_v.as_ptr().wrapping_add(g * group);
            let hp = lp.wrapping_add(stride);
            for c in (0..stride).step_by(LANES) {
                // SAFETY: group `g < whole` is whole and `stride = group / 2` is a multiple of
                // 16, so bytes `g·stride + c .. + 16` lie in `bytes_v` and columns
                // `g·group + c .. + 16` and `g·group + stride + c .. + 16` in `x_v`.
                unsafe {
                    let a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(bp.add(c).cast()));
                    let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(bp.add(c + 8).cast()));
                    let l0 = _mm256_cvtepi32_ps(_mm256_and_si256(a, mask));
                    let u0 = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
                    let l1 = _mm256_cvtepi32_ps(_mm256_and_si256(b, mask));
                    let u1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
                    lo0 = _mm256_fmadd_ps(l0, _mm256_loadu_ps(lp.add(c)), lo0);
                    lo1 = _mm256_fmadd_ps(l1, _mm256_loadu_ps(lp.add(c + 8)), lo1);
                    hi0 = _mm256_fmadd_ps(u0, _mm256_loadu_ps(hp.add(c)), hi0);
                    hi1 = _mm256_fmadd_ps(u1, _mm256_loadu_ps(hp.add(c + 8)), hi1);
                }
            }
            let dv = _mm256_set1_ps(d);
            even0 = _mm256_fmadd_ps(dv, _mm256_add_ps(lo0, hi0), even0);
            even1 = _mm256_fmadd_ps(dv, _mm256_add_ps(lo1, hi1), even1);
            std::mem::swap(&mut even0, &mut odd0);
            std::mem::swap(&mut even1, &mut odd1);
        }
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds 16 floats, two vectors' worth.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(even0, odd0));
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), _mm256_add_ps(even1, odd1));
        }
        let offsets_term = dot::<true>(&offsets[..whole], &xsum[..whole]);
        let rest = quant_row_dot::<true>(
            &bytes[whole * stride..],
            group,
            &x[whole * group..],
            &xsum[whole..],
            &scales[whole..],
            &offsets[whole..],
        );
        hsum(lanes) + offsets_term + rest
    }
}

/// `a·b + c`, fused when `FMA` (only instantiated so where the CPU has it).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The lanes summed in a fixed tree (halves added elementwise until one is left).
#[inline(always)]
fn hsum(mut a: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            a[l] += a[l + width];
        }
    }
    a[0]
}

#[inline(always)]
fn decode_block(b: DecodeBlock<'_>, row_dot: impl Fn(&[u8], usize, &[f32], &[f32], &[f32], &[f32]) -> f32) {
    let DecodeBlock { q, r0, x, xsum, scales, offsets, out } = b;
    let groups = q.groups_per_row();
    q.group_constants(r0, scales, offsets);
    let rb = q.row_bytes();
    let packed = &q.packed()[r0 * rb..(r0 + out.len()) * rb];
    for (j, (o, bytes)) in out.iter_mut().zip(packed.chunks_exact(rb.max(1))).enumerate() {
        let consts = j * groups..(j + 1) * groups;
        *o = row_dot(bytes, q.group(), x, xsum, &scales[consts.clone()], &offsets[consts]);
    }
}

/// `Σ_p x[p]·ŵ[p]` for one packed row, as `Σ_g d_g·Σ_{p∈g} q_p·x_p + o_g·Σ_{p∈g} x_p`: the
/// nibbles are multiplied by `x` unscaled and each group's sum is scaled once.
#[inline(always)]
fn quant_row_dot<const FMA: bool>(
    bytes: &[u8],
    group: usize,
    x: &[f32],
    xsum: &[f32],
    scales: &[f32],
    offsets: &[f32],
) -> f32 {
    let stride = group.div_ceil(2);
    let mut acc = [0f32; LANES];
    let mut rest = 0f32;
    for (g, (xs, ((&d, &o), &sx))) in x.chunks(group).zip(scales.iter().zip(offsets).zip(xsum)).enumerate() {
        let h = xs.len().div_ceil(2);
        let pairs = xs.len() / 2;
        let b = &bytes[g * stride..g * stride + h];
        let (xlo, xhi) = xs.split_at(h);
        let full = pairs / LANES * LANES;
        if full > 0 {
            let mut lo = [0f32; LANES];
            let mut hi = [0f32; LANES];
            let chunks =
                b[..full].chunks_exact(LANES).zip(xlo[..full].chunks_exact(LANES)).zip(xhi[..full].chunks_exact(LANES));
            for ((bc, xl), xh) in chunks {
                for l in 0..LANES {
                    lo[l] = madd::<FMA>(f32::from(bc[l] & 15), xl[l], lo[l]);
                    hi[l] = madd::<FMA>(f32::from(bc[l] >> 4), xh[l], hi[l]);
                }
            }
            for l in 0..LANES {
                acc[l] = madd::<FMA>(d, lo[l] + hi[l], acc[l]);
            }
        }
        let mut s = 0f32;
        for ((&bi, &xl), &xh) in b[full..pairs].iter().zip(&xlo[full..pairs]).zip(&xhi[full..]) {
            s = madd::<FMA>(f32::from(bi & 15), xl, s);
            s = madd::<FMA>(f32::from(bi >> 4), xh, s);
        }
        if h > pairs {
            s = madd::<FMA>(f32::from(b[pairs] & 15), xlo[pairs], s);
        }
        rest = madd::<FMA>(d, s, rest);
        rest = madd::<FMA>(o, sx, rest);
    }
    hsum(acc) + rest
}

/// `Σ_p a[p]·b[p]` (over the shorter length) in [`LANES`] lane accumulators, then the tail.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let full = len / LANES * LANES;
    let mut acc = [0f32; LANES];
    for (ac, bc) in a[..full].chunks_exact(LANES).zip(b[..full].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(ac[l], bc[l], acc[l]);
        }
    }
    let mut s = hsum(acc);
    for (&x, &y) in a[full..len].iter().zip(&b[full..len]) {
        s = madd::<FMA>(x, y, s);
    }
    s
}
