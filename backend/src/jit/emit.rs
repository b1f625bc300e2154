//! Width-generic instruction helpers over a Cranelift [`FunctionBuilder`]: the same call emits
//! scalar `f32` code (row values, column tails) or 128-bit `f32x4` code (column loops).
//!
//! Conventions: a float value is `f32` or `f32x4`; a boolean is an `i8` (0 or 1) when scalar and
//! an `i32x4` lane mask (all ones or all zeros) when vector, which is what `fcmp` yields. Every
//! constant is materialized once, in the function's entry block (hoisted out of all loops), and
//! cached by bit pattern and width.
//!
//! Guarantee: nothing here emits a call or an instruction that Cranelift lowers to a libcall on
//! x86-64 or aarch64 (no `fma` unless the host has it, no `nearest`/`floor`), so compiled kernels
//! never need symbol resolution.

use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    types, Inst, InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Type, Value,
};
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;

/// Whether code works on one element or on four lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Width {
    Scalar,
    Vector,
}

impl Width {
    pub(crate) fn float(self) -> Type {
        match self {
            Width::Scalar => types::F32,
            Width::Vector => types::F32X4,
        }
    }

    pub(crate) fn int(self) -> Type {
        match self {
            Width::Scalar => types::I32,
            Width::Vector => types::I32X4,
        }
    }
}

/// Flags for every load and store of a kernel: the caller guarantees the addresses are in bounds
/// (so `notrap`); nothing is assumed about alignment.
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// A function being built, with its hoisted constants.
pub(crate) struct Emitter<'f> {
    pub(crate) b: FunctionBuilder<'f>,
    /// The entry block's terminator: constants are inserted just before it.
    anchor: Option<Inst>,
    consts: HashMap<(u32, Type), Value>,
    /// Use fused multiply-add in polynomials (only when the host has it).
    pub(crate) fma: bool,
    /// A 16-byte stack slot that only receives pinning stores ([`Emitter::pin`]).
    pin_slot: Option<StackSlot>,
}

impl<'f> Emitter<'f> {
    pub(crate) fn new(b: FunctionBuilder<'f>, fma: bool) -> Emitter<'f> {
        Emitter { b, anchor: None, consts: HashMap::new(), fma, pin_slot: None }
    }

    /// Sets the instruction before which constants are placed (the entry block's terminator).
    pub(crate) fn set_anchor(&mut self, inst: Inst) {
        self.anchor = Some(inst);
    }

    /// A constant of type `ty` with bit pattern `bits` (splat for vectors), hoisted.
    fn constant(&mut self, ty: Type, bits: u32) -> Value {
        if let Some(&v) = self.consts.get(&(bits, ty)) {
            return v;
        }
        let v = if ty.is_vector() {
            let lane = self.constant(ty.lane_type(), bits);
            self.at_anchor(|c| c.ins().splat(ty, lane))
        } else if ty == types::F32 {
            self.at_anchor(|c| c.ins().f32const(f32::from_bits(bits)))
        } else {
            // Narrow immediates are zero-extended (the verifier checks it).
            self.at_anchor(|c| c.ins().iconst(ty, i64::from(bits)))
        };
        self.consts.insert((bits, ty), v);
        v
    }

    fn at_anchor(&mut self, f: impl FnOnce(&mut FuncCursor<'_>) -> Value) -> Value {
        match self.anchor {
            Some(inst) => {
                let mut cursor = FuncCursor::new(self.b.func).at_inst(inst);
                f(&mut cursor)
            }
            // Before the entry block is finished: emit at the current position (still entry).
            None => {
                let block = self.b.current_block();
                let mut cursor = FuncCursor::new(self.b.func);
                if let Some(block) = block {
                    cursor.goto_bottom(block);
                }
                f(&mut cursor)
            }
        }
    }

    /// Makes sure `v` is computed at the current position (before a loop that uses it).
    ///
    /// Cranelift's egraph pass re-places every pure instruction at its uses, and in practice
    /// sinks values that are only used inside a loop into the loop body (once per iteration)
    /// rather than hoisting them. A value that a side-effecting instruction at the current
    /// position uses is computed there instead, and the loop reuses it. The pinning use is a
    /// store to a dead stack slot: one store per value and row.
    pub(crate) fn pin(&mut self, v: Value) {
        let slot = match self.pin_slot {
            Some(s) => s,
            None => {
                let s = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 4));
                self.pin_slot = Some(s);
                s
            }
        };
        self.b.ins().stack_store(types::I64, v, slot, 0);
    }

    pub(crate) fn f(&mut self, w: Width, x: f32) -> Value {
        self.constant(w.float(), x.to_bits())
    }

    pub(crate) fn i(&mut self, w: Width, x: i32) -> Value {
        self.constant(w.int(), x as u32)
    }

    pub(crate) fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }

    pub(crate) fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }

    pub(crate) fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }

    pub(crate) fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }

    /// `a * b + c`, fused when the host has FMA.
    pub(crate) fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `a * k + c` for a constant `k`.
    pub(crate) fn mul_add_k(&mut self, w: Width, a: Value, k: f32, c: Value) -> Value {
        let k = self.f(w, k);
        self.mul_add(a, k, c)
    }

    /// Horner evaluation of `coeffs[0] * x^(n-1) + ... + coeffs[n-1]`.
    pub(crate) fn poly(&mut self, w: Width, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.f(w, coeffs.first().copied().unwrap_or(0.0));
        for &c in coeffs.iter().skip(1) {
            let c = self.f(w, c);
            acc = self.mul_add(acc, x, c);
        }
        acc
    }

    /// A comparison: an `i8` flag (scalar) or an `i32x4` lane mask (vector).
    pub(crate) fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    /// `mask ? a : b` per lane, `mask` as produced by [`Emitter::cmp`] at the same width.
    pub(crate) fn select(&mut self, w: Width, mask: Value, a: Value, b: Value) -> Value {
        match w {
            Width::Scalar => self.b.ins().select(mask, a, b),
            Width::Vector => {
                // `bitselect` of a bitcast `fcmp` lowers to `blendvps`.
                let m = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), mask);
                self.b.ins().bitselect(m, a, b)
            }
        }
    }

    /// `min(x, hi)` for a non-NaN `hi`, NaN when `x` is NaN. Vector form: `hi < x ? hi : x` as a
    /// select of a compare, which lowers to one `minps` (that returns its second operand, `x`, on
    /// NaN).
    pub(crate) fn clamp_hi(&mut self, w: Width, x: Value, hi: Value) -> Value {
        match w {
            Width::Scalar => self.b.ins().fmin(x, hi),
            Width::Vector => {
                let m = self.cmp(FloatCC::LessThan, hi, x);
                self.select(w, m, hi, x)
            }
        }
    }

    /// `max(x, lo)` for a non-NaN `lo`, NaN when `x` is NaN (one `maxps`).
    pub(crate) fn clamp_lo(&mut self, w: Width, x: Value, lo: Value) -> Value {
        match w {
            Width::Scalar => self.b.ins().fmax(x, lo),
            Width::Vector => {
                let m = self.cmp(FloatCC::LessThan, x, lo);
                self.select(w, m, lo, x)
            }
        }
    }

    /// `max(a, b)`, NaN if either is NaN (like `BinaryOp::Max`; the sign of a zero result may
    /// differ for `max(-0, +0)`, which compares equal). Vector form: `b < a ? a : b` (one
    /// `maxps`, which gives `b` when either is NaN), then `a` where `a` is NaN: three
    /// instructions instead of the seven of Cranelift's `fmax`, which also orders the zeros.
    pub(crate) fn max(&mut self, w: Width, a: Value, b: Value) -> Value {
        match w {
            Width::Scalar => self.b.ins().fmax(a, b),
            Width::Vector => {
                let lt = self.cmp(FloatCC::LessThan, b, a);
                let m = self.select(w, lt, a, b);
                let nan = self.cmp(FloatCC::Unordered, a, a);
                self.select(w, nan, a, m)
            }
        }
    }

    /// `min(a, b)`, NaN if either is NaN (see [`Emitter::max`]).
    pub(crate) fn min(&mut self, w: Width, a: Value, b: Value) -> Value {
        match w {
            Width::Scalar => self.b.ins().fmin(a, b),
            Width::Vector => {
                let lt = self.cmp(FloatCC::LessThan, a, b);
                let m = self.select(w, lt, a, b);
                let nan = self.cmp(FloatCC::Unordered, a, a);
                self.select(w, nan, a, m)
            }
        }
    }

    /// Float bits as integers (a no-op move for vectors).
    pub(crate) fn bits_of(&mut self, w: Width, x: Value) -> Value {
        self.b.ins().bitcast(w.int(), MemFlagsData::new(), x)
    }

    pub(crate) fn float_of(&mut self, w: Width, x: Value) -> Value {
        self.b.ins().bitcast(w.float(), MemFlagsData::new(), x)
    }

    /// `x` with the sign bit of `sign` (`x` must be non-negative).
    pub(crate) fn with_sign_of(&mut self, w: Width, x: Value, sign: Value) -> Value {
        let s = self.bits_of(w, sign);
        let mask = self.i(w, i32::MIN);
        let s = self.b.ins().band(s, mask);
        let xb = self.bits_of(w, x);
        let r = self.b.ins().bor(xb, s);
        self.float_of(w, r)
    }
}
