//! Transcendental functions emitted inline as branch-free polynomial code (Cephes-style range
//! reduction and coefficients), for scalar `f32` and `f32x4` alike.
//!
//! Guarantees (checked against `f64` over dense sweeps in `backend/tests/jit_accuracy.rs`; the
//! measured maxima are 1.0 ulp for `exp`, 0.75 for `log`, 1.44 for `log1p`, 1.29 for `tanh`):
//! - `exp`: a few ulp; `x > 88.72…` gives `+inf`, `x < -103.97…` gives `0` (denormal results
//!   in between are rounded once), `NaN` stays `NaN`.
//! - `log`: a few ulp, denormal inputs included; `log(±0) = -inf`, `log(x < 0) = NaN`,
//!   `log(+inf) = +inf`, `log(NaN) = NaN`.
//! - `log1p`: a few ulp relative to `log1p(x)` even for tiny `x`; `log1p(-1) = -inf`,
//!   `log1p(x < -1) = NaN`, `log1p(+inf) = +inf`.
//! - `tanh`: a few ulp; odd; saturates to `±1`; `tanh(±0) = ±0`.
//!
//! No branches and no calls: special cases are lane selects, so a vector of mixed inputs is
//! handled in one pass. No float-to-int conversion either: `exp` reads its integer exponent off
//! the bits of the rounding constant (see [`exp`]), which cannot trap or saturate wrongly.

use super::emit::{Emitter, Width};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n * LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4; // 0.693359375 = 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting `1.5 * 2^23` rounds an `f32` of magnitude below `2^22` to the nearest
/// integer (ties to even) without a `nearest` instruction (which needs SSE4.1 or a libcall).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Cephes `expf`: `exp(r) ≈ 1 + r + r² P(r)` on `|r| <= ln2 / 2`.
const EXP_P: [f32; 6] = [1.987_569_1e-4, 0.001_398_199_9, 0.008_333_452, 0.041_665_796, 0.166_666_66, 0.5];
/// Inputs are clamped to this range first; beyond it the result is `+inf` or `0` anyway.
const EXP_MAX: f32 = 89.0;
const EXP_MIN: f32 = -104.0;

/// `e^x`.
pub(crate) fn exp(e: &mut Emitter<'_>, w: Width, x: Value) -> Value {
    // Clamp (keeping NaN), then n = round(x / ln 2), r = x - n ln 2.
    let hi = e.f(w, EXP_MAX);
    let lo = e.f(w, EXP_MIN);
    let x = e.clamp_hi(w, x, hi);
    let x = e.clamp_lo(w, x, lo);
    let magic = e.f(w, ROUND_MAGIC);
    let t = e.mul_add_k(w, x, LOG2E, magic);
    let n = e.sub(t, magic);
    let r = e.mul_add_k(w, n, -LN2_HI, x);
    let r = e.mul_add_k(w, n, -LN2_LO, r);
    let z = e.mul(r, r);
    let p = e.poly(w, r, &EXP_P);
    let p = e.mul_add(p, z, r);
    let one = e.f(w, 1.0);
    let p = e.add(p, one);
    // Scale by 2^n as 2^(n >> 1) * 2^(n - (n >> 1)): both factors are normal for n in
    // [-150, 128], so overflow gives inf and underflow rounds once, into the denormals or to 0.
    // n as an integer: t = 1.5 * 2^23 + n exactly, so its bits are those of the constant plus n
    // (no float-to-int conversion needed). NaN-safe: for a NaN input n is garbage, but p is
    // NaN, and so is the product; integer arithmetic cannot trap.
    let tb = e.bits_of(w, t);
    let magic_bits = e.i(w, ROUND_MAGIC.to_bits() as i32);
    let ni = e.b.ins().isub(tb, magic_bits);
    let n1 = e.b.ins().sshr_imm_u(ni, 1);
    let n2 = e.b.ins().isub(ni, n1);
    let s1 = pow2(e, w, n1);
    let s2 = pow2(e, w, n2);
    let p = e.mul(p, s1);
    e.mul(p, s2)
}

/// `2^n` for an integer `n` in `[-126, 127]`, built from its exponent bits.
fn pow2(e: &mut Emitter<'_>, w: Width, n: Value) -> Value {
    let bias = e.i(w, 127);
    let biased = e.b.ins().iadd(n, bias);
    let bits = e.b.ins().ishl_imm_u(biased, 23);
    e.float_of(w, bits)
}

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Cephes `logf`: `log(1 + m) ≈ m - m²/2 + m³ P(m)` on `sqrt(1/2) - 1 <= m < sqrt(2) - 1`.
const LOG_P: [f32; 9] = [
    0.070_376_836,
    -0.115_146_1,
    0.116_769_984,
    -0.124_201_41,
    0.142_493_23,
    -0.166_680_57,
    0.200_007_14,
    -0.249_999_94,
    0.333_333_3,
];

/// The natural logarithm.
pub(crate) fn log(e: &mut Emitter<'_>, w: Width, x: Value) -> Value {
    // Denormals: scale into the normal range first.
    let min_normal = e.f(w, f32::MIN_POSITIVE);
    let denormal = e.cmp(FloatCC::LessThan, x, min_normal);
    let two23 = e.f(w, 8_388_608.0);
    let scaled = e.mul(x, two23);
    let xs = e.select(w, denormal, scaled, x);
    let minus23 = e.f(w, -23.0);
    let zero = e.f(w, 0.0);
    let e_adj = e.select(w, denormal, minus23, zero);
    // x = m 2^k with m in [0.5, 1).
    let bits = e.bits_of(w, xs);
    let k = e.b.ins().ushr_imm_u(bits, 23);
    let bias = e.i(w, 126);
    let k = e.b.ins().isub(k, bias);
    let mant_mask = e.i(w, 0x007f_ffff);
    let half_bits = e.i(w, 0x3f00_0000);
    let mb = e.b.ins().band(bits, mant_mask);
    let mb = e.b.ins().bor(mb, half_bits);
    let m = e.float_of(w, mb);
    let k = e.b.ins().fcvt_from_sint(w.float(), k);
    let k = e.add(k, e_adj);
    // Keep m within [sqrt(1/2), sqrt(2)) - 1.
    let sqrt_half = e.f(w, SQRT_HALF);
    let small = e.cmp(FloatCC::LessThan, m, sqrt_half);
    let one = e.f(w, 1.0);
    let k_minus = e.sub(k, one);
    let k = e.select(w, small, k_minus, k);
    let m2 = e.add(m, m);
    let m = e.select(w, small, m2, m);
    let m = e.sub(m, one);
    let z = e.mul(m, m);
    let p = e.poly(w, m, &LOG_P);
    let p = e.mul(p, m);
    let y = e.mul(p, z);
    let y = e.mul_add_k(w, k, LN2_LO, y);
    let y = e.mul_add_k(w, z, -0.5, y);
    let r = e.add(m, y);
    let r = e.mul_add_k(w, k, LN2_HI, r);
    // Special inputs.
    let inf = e.f(w, f32::INFINITY);
    let is_inf = e.cmp(FloatCC::Equal, x, inf);
    let r = e.select(w, is_inf, inf, r);
    let is_zero = e.cmp(FloatCC::Equal, x, zero);
    let neg_inf = e.f(w, f32::NEG_INFINITY);
    let r = e.select(w, is_zero, neg_inf, r);
    let invalid = e.cmp(FloatCC::UnorderedOrLessThan, x, zero);
    let nan = e.f(w, f32::NAN);
    e.select(w, invalid, nan, r)
}

/// `ln(1 + x)`: `log(u) - ((u - 1) - x) / u` with `u = 1 + x`, which corrects the rounding of
/// `u` to first order; `x` itself where `u` rounds to 1.
pub(crate) fn log1p(e: &mut Emitter<'_>, w: Width, x: Value) -> Value {
    let one = e.f(w, 1.0);
    let u = e.add(one, x);
    let lu = log(e, w, u);
    let um1 = e.sub(u, one);
    let d = e.sub(um1, x);
    let corr = e.div(d, u);
    let r = e.sub(lu, corr);
    let tiny = e.cmp(FloatCC::Equal, u, one);
    let r = e.select(w, tiny, x, r);
    let inf = e.f(w, f32::INFINITY);
    let is_inf = e.cmp(FloatCC::Equal, x, inf);
    let r = e.select(w, is_inf, inf, r);
    // u == 0 exactly when x == -1: log(0) is -inf but the correction term is 0/0.
    let zero = e.f(w, 0.0);
    let at_minus_one = e.cmp(FloatCC::Equal, u, zero);
    let neg_inf = e.f(w, f32::NEG_INFINITY);
    e.select(w, at_minus_one, neg_inf, r)
}

/// Cephes `tanhf`: `x + x³ P(x²)` for `|x| < 0.625`.
const TANH_P: [f32; 5] = [-0.005_704_988_7, 0.020_639_088, -0.053_739_715, 0.133_314_42, -0.333_332_8];
const TANH_SMALL: f32 = 0.625;

/// The hyperbolic tangent.
pub(crate) fn tanh(e: &mut Emitter<'_>, w: Width, x: Value) -> Value {
    let ax = e.b.ins().fabs(x);
    // Small |x|: odd polynomial.
    let z = e.mul(x, x);
    let p = e.poly(w, z, &TANH_P);
    let pz = e.mul(p, z);
    let small = e.mul_add(pz, x, x);
    // Otherwise 1 - 2 / (e^(2|x|) + 1) (for |x|), which saturates to 1 when the exponential overflows;
    // NaN goes through exp and stays NaN.
    let two_ax = e.add(ax, ax);
    let s = exp(e, w, two_ax);
    let one = e.f(w, 1.0);
    let two = e.f(w, 2.0);
    let s1 = e.add(s, one);
    let q = e.div(two, s1);
    let large = e.sub(one, q);
    let limit = e.f(w, TANH_SMALL);
    let is_small = e.cmp(FloatCC::LessThan, ax, limit);
    let r = e.select(w, is_small, small, large);
    // tanh has the sign of x: this makes tanh(-0) = -0 (the polynomial gives +0) and gives the
    // large branch its sign.
    let r = e.b.ins().fabs(r);
    e.with_sign_of(w, r, x)
}
