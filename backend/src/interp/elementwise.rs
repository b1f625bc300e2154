//! Elementwise kernels: unary, binary, compare and select.
//!
//! The scalar semantics are not defined here but in kiln-ir ([`UnaryOp::apply`],
//! [`BinaryOp::apply`], [`CompareOp::apply`]), so every backend shares them. The IR has no
//! implicit broadcasting: operands must have exactly one shape (a graph broadcasts explicitly).
//!
//! Guarantee: each output element depends only on the operand elements at the same position, so
//! the rayon path (taken for large tensors) gives bit-identical results to the serial one.

use super::{arity, expect_dtype, f32_operand, same_shape, PAR_MIN_ELEMENTS};
use crate::error::NodeErrorKind;
use crate::tensor::{Dims, Element, Tensor};
use kiln_ir::{BinaryOp, CompareOp, DType, Op, UnaryOp};
use rayon::prelude::*;

pub(crate) fn unary(op: &Op, u: UnaryOp, ops: &[&Tensor<'_>]) -> Result<Tensor<'static>, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = f32_operand(op, ops, 0)?;
    Ok(output(ops[0].shape(), map1(x, |a| u.apply(a))))
}

pub(crate) fn binary(op: &Op, b: BinaryOp, ops: &[&Tensor<'_>]) -> Result<Tensor<'static>, NodeErrorKind> {
    arity(op, ops, 2)?;
    let (x, y) = (f32_operand(op, ops, 0)?, f32_operand(op, ops, 1)?);
    same_shape(op, ops[0], ops[1])?;
    Ok(output(ops[0].shape(), map2(x, y, |p, q| b.apply(p, q))))
}

pub(crate) fn compare(op: &Op, c: CompareOp, ops: &[&Tensor<'_>]) -> Result<Tensor<'static>, NodeErrorKind> {
    arity(op, ops, 2)?;
    let (x, y) = (f32_operand(op, ops, 0)?, f32_operand(op, ops, 1)?);
    same_shape(op, ops[0], ops[1])?;
    Ok(output(ops[0].shape(), map2(x, y, |p, q| c.apply(p, q))))
}

/// `select(cond, a, b)`: `cond ? a : b` elementwise.
pub(crate) fn select(op: &Op, ops: &[&Tensor<'_>]) -> Result<Tensor<'static>, NodeErrorKind> {
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
    let out: Vec<f32> = if cond.len() >= PAR_MIN_ELEMENTS {
        (cond, a, b).into_par_iter().map(|(&c, &p, &q)| if c { p } else { q }).collect()
    } else {
        cond.iter().zip(a).zip(b).map(|((&c, &p), &q)| if c { p } else { q }).collect()
    };
    Ok(output(ops[1].shape(), out))
}

fn output<E: Element>(shape: &[usize], data: Vec<E>) -> Tensor<'static> {
    Tensor::from_parts(shape.iter().copied().collect::<Dims>(), E::wrap(data))
}

fn map1<U: Send>(x: &[f32], f: impl Fn(f32) -> U + Sync + Send) -> Vec<U> {
    if x.len() >= PAR_MIN_ELEMENTS {
        x.par_iter().map(|&a| f(a)).collect()
    } else {
        x.iter().map(|&a| f(a)).collect()
    }
}

fn map2<U: Send>(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> U + Sync + Send) -> Vec<U> {
    if x.len() >= PAR_MIN_ELEMENTS {
        x.par_iter().zip(y).map(|(&a, &b)| f(a, b)).collect()
    } else {
        x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect()
    }
}
