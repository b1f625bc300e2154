//! Elementwise kernels: unary, binary, compare and select, writing to a [`Dest`], and the in-place
//! forms the memory plan asks for (the result written over an operand that dies at the op).
//!
//! The scalar semantics are not defined here but in kiln-ir ([`UnaryOp::apply`],
//! [`BinaryOp::apply`], [`CompareOp::apply`]), so every backend shares them. The IR has no
//! implicit broadcasting: operands must have exactly one shape (a graph broadcasts explicitly).
//!
//! Guarantee: each output element depends only on the operand elements at the same position, and
//! is computed by the same scalar function in every form (allocated, arena slice, in place: an
//! in-place form reads element `i` before writing it), so all forms and the rayon path (taken
//! for large tensors) give bit-identical results.

use super::dest::{Dest, Emitted};
use super::{arity, expect_dtype, f32_operand, same_shape, PAR_MIN_ELEMENTS};
use crate::error::NodeErrorKind;
use crate::tensor::{Dims, Tensor};
use kiln_ir::{BinaryOp, CompareOp, DType, Op, UnaryOp};
use rayon::prelude::*;

fn dims(t: &Tensor<'_>) -> Dims {
    t.shape().iter().copied().collect()
}

pub(crate) fn unary(op: &Op, u: UnaryOp, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = f32_operand(op, ops, 0)?;
    dest.emit(dims(ops[0]), |out: &mut [f32]| map1(x, out, |a| u.apply(a)))
}

pub(crate) fn binary(op: &Op, b: BinaryOp, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 2)?;
    let (x, y) = (f32_operand(op, ops, 0)?, f32_operand(op, ops, 1)?);
    same_shape(op, ops[0], ops[1])?;
    dest.emit(dims(ops[0]), |out: &mut [f32]| map2(x, y, out, |p, q| b.apply(p, q)))
}

pub(crate) fn compare(op: &Op, c: CompareOp, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 2)?;
    let (x, y) = (f32_operand(op, ops, 0)?, f32_operand(op, ops, 1)?);
    same_shape(op, ops[0], ops[1])?;
    dest.emit(dims(ops[0]), |out: &mut [bool]| map2(x, y, out, |p, q| c.apply(p, q)))
}

/// `select(cond, a, b)`: `cond ? a : b` elementwise.
pub(crate) fn select(op: &Op, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 3)?;
    expect_dtype(op, ops, 0, DType::Bool)?;
    let (a, b) = (f32_operand(op, ops, 1)?, f32_operand(op, ops, 2)?);
    same_shape(op, ops[0], ops[1])?;
    same_shape(op, ops[1], ops[2])?;
    let cond = ops[0].as_bool().ok_or(NodeErrorKind::DType {
        op: op.mnemonic(),
        slot: 0,
        expected: DType::Bool,
        found: ops[0].dtype(),
    })?;
    dest.emit(dims(ops[1]), |out: &mut [f32]| {
        if cond.len() >= PAR_MIN_ELEMENTS {
            (out, cond, a, b).into_par_iter().for_each(|(o, &c, &p, &q)| *o = if c { p } else { q });
        } else {
            for (((o, &c), &p), &q) in out.iter_mut().zip(cond).zip(a).zip(b) {
                *o = if c { p } else { q };
            }
        }
    })
}

/// An `f32` operand of an in-place op: its own elements, or `None` for the result's buffer
/// (the operand the result is written over, or another view of the same bytes).
pub(crate) type Src<'a> = Option<&'a [f32]>;

/// Runs the unary, binary or select `op` in place: `out` holds the overwritten operand on entry
/// and the result on return. `srcs` are the operands in slot order; the caller has checked
/// that every `Some` operand (and `cond`) has `out`'s shape, and for `select` passes the
/// condition separately (it is `bool`, never overwritten).
pub(crate) fn in_place(op: &Op, srcs: &[Src<'_>], cond: Option<&[bool]>, out: &mut [f32]) -> Result<(), NodeErrorKind> {
    let n = out.len();
    let bad =
        || NodeErrorKind::Internal { what: format!("`{}` cannot run in place with these operands", op.mnemonic()) };
    if srcs.iter().flatten().any(|s| s.len() != n) || cond.is_some_and(|c| c.len() != n) {
        return Err(bad());
    }
    match (op, srcs) {
        (Op::Unary(u), [None]) => map_self(out, |a| u.apply(a)),
        (Op::Binary(b), [x, y]) => binary_in_place(*b, *x, *y, out),
        (Op::Select, [_, a, b]) => {
            let cond = cond.ok_or_else(bad)?;
            let pick = |c: bool, p: f32, q: f32| if c { p } else { q };
            match (a, b) {
                (None, Some(b)) => map_indexed(out, |i, o| pick(cond[i], o, b[i])),
                (Some(a), None) => map_indexed(out, |i, o| pick(cond[i], a[i], o)),
                (None, None) => map_indexed(out, |i, o| pick(cond[i], o, o)),
                (Some(a), Some(b)) => map_indexed(out, |i, _| pick(cond[i], a[i], b[i])),
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

fn binary_in_place(b: BinaryOp, x: Src<'_>, y: Src<'_>, out: &mut [f32]) {
    match (x, y) {
        (None, None) => map_self(out, |a| b.apply(a, a)),
        (None, Some(y)) => map_indexed(out, |i, o| b.apply(o, y[i])),
        (Some(x), None) => map_indexed(out, |i, o| b.apply(x[i], o)),
        (Some(x), Some(y)) => map2(x, y, out, |p, q| b.apply(p, q)),
    }
}

fn map1<U: Send>(x: &[f32], out: &mut [U], f: impl Fn(f32) -> U + Sync + Send) {
    if x.len() >= PAR_MIN_ELEMENTS {
        out.par_iter_mut().zip(x).for_each(|(o, &a)| *o = f(a));
    } else {
        out.iter_mut().zip(x).for_each(|(o, &a)| *o = f(a));
    }
}

fn map2<U: Send>(x: &[f32], y: &[f32], out: &mut [U], f: impl Fn(f32, f32) -> U + Sync + Send) {
    if x.len() >= PAR_MIN_ELEMENTS {
        out.par_iter_mut().zip(x).zip(y).for_each(|((o, &a), &b)| *o = f(a, b));
    } else {
        out.iter_mut().zip(x).zip(y).for_each(|((o, &a), &b)| *o = f(a, b));
    }
}

fn map_self(out: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    if out.len() >= PAR_MIN_ELEMENTS {
        out.par_iter_mut().for_each(|o| *o = f(*o));
    } else {
        out.iter_mut().for_each(|o| *o = f(*o));
    }
}

/// `out[i] = f(i, out[i])`; callers index operands of `out`'s length.
fn map_indexed(out: &mut [f32], f: impl Fn(usize, f32) -> f32 + Sync + Send) {
    if out.len() >= PAR_MIN_ELEMENTS {
        out.par_iter_mut().enumerate().for_each(|(i, o)| *o = f(i, *o));
    } else {
        out.iter_mut().enumerate().for_each(|(i, o)| *o = f(i, *o));
    }
}
