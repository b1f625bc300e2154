//! The reference interpreter: executes a graph op by op on [`Tensor`]s.
//!
//! It defines what every op means at run time, so later backends and passes are checked against
//! it. It favours clarity over speed, with three exceptions that keep real models usable: values
//! are freed after their last use ([`plan`]), matmuls use blocked dot products and rayon
//! ([`matmul`]), and large elementwise loops run on rayon. Parallel loops only split independent
//! outputs, so results do not depend on the number of threads.
//!
//! Layout: [`plan`] (what is derived once per graph), [`eval`] (the walk over a plan and the
//! dispatch to kernels), the kernels ([`elementwise`], [`reduce`], [`matmul`], [`shape_ops`],
//! `kernel` for fused ones) writing to a [`dest`], and [`scan`] (recurrences, which run their body
//! through [`eval`] again).
//!
//! Two evaluators share those kernels. Unplanned ([`eval`]): the deterministic topological order,
//! every result its own allocation, freed after its last use. Planned ([`planned`], when the graph
//! carries a [`kiln_ir::MemoryPlan`]): the plan's order, every intermediate in one [`arena`]
//! allocation per call at the planned offsets, in-place writes and views as planned, each scan
//! body in its scan's scratch region. Both give bit-identical results.
//!
//! Guarantee: kernels check their operands' dtypes and concrete shapes themselves and return
//! [`NodeErrorKind`]s rather than panicking, so even a graph that never went through the verifier
//! fails cleanly; the evaluator also checks every result against the type the graph records.

pub(crate) mod arena;
pub(crate) mod dest;
pub(crate) mod elementwise;
pub(crate) mod eval;
mod kernel;
pub(crate) mod matmul;
pub(crate) mod plan;
pub(crate) mod planned;
pub(crate) mod quantized;
pub(crate) mod reduce;
pub(crate) mod scan;
pub(crate) mod shape_ops;

use crate::error::NodeErrorKind;
use crate::tensor::{numel, Dims, Tensor};
use kiln_ir::{DType, Dim, Op, Shape};

/// Loops over at least this many elements run on rayon; smaller ones stay serial.
pub(crate) const PAR_MIN_ELEMENTS: usize = 1 << 15;

pub(crate) fn arity(op: &Op, ops: &[&Tensor<'_>], expected: usize) -> Result<(), NodeErrorKind> {
    if ops.len() != expected {
        return Err(NodeErrorKind::Arity { op: op.mnemonic(), expected: expected.to_string(), found: ops.len() });
    }
    Ok(())
}

/// Checks that operand `slot` has dtype `expected`.
pub(crate) fn expect_dtype(op: &Op, ops: &[&Tensor<'_>], slot: usize, expected: DType) -> Result<(), NodeErrorKind> {
    let found = ops.get(slot).map(|t| t.dtype());
    match found {
        Some(d) if d == expected => Ok(()),
        Some(found) => Err(NodeErrorKind::DType { op: op.mnemonic(), slot, expected, found }),
        None => Err(NodeErrorKind::Arity {
            op: op.mnemonic(),
            expected: format!("at least {}", slot + 1),
            found: ops.len(),
        }),
    }
}

/// The elements of operand `slot`, which must be `f32`.
pub(crate) fn f32_operand<'t>(op: &Op, ops: &[&'t Tensor<'_>], slot: usize) -> Result<&'t [f32], NodeErrorKind> {
    expect_dtype(op, ops, slot, DType::F32)?;
    ops.get(slot).and_then(|t| t.as_f32()).ok_or_else(|| NodeErrorKind::Arity {
        op: op.mnemonic(),
        expected: format!("at least {}", slot + 1),
        found: ops.len(),
    })
}

pub(crate) fn same_shape(op: &Op, a: &Tensor<'_>, b: &Tensor<'_>) -> Result<(), NodeErrorKind> {
    if a.shape() != b.shape() {
        return Err(NodeErrorKind::ShapeMismatch {
            op: op.mnemonic(),
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    Ok(())
}

pub(crate) fn check_axis(op: &Op, axis: usize, rank: usize) -> Result<(), NodeErrorKind> {
    if axis >= rank {
        return Err(NodeErrorKind::Axis { op: op.mnemonic(), axis, rank });
    }
    Ok(())
}

/// The size of `dim` for a call of `t` tokens.
pub(crate) fn resolve_dim(dim: Dim, t: usize) -> Result<usize, NodeErrorKind> {
    dim.resolve(t).ok_or(NodeErrorKind::NegativeDim { dim, t })
}

/// The concrete shape of `shape` for a call of `t` tokens; its element count fits in `usize`.
pub(crate) fn resolve_shape(shape: &Shape, t: usize) -> Result<Dims, NodeErrorKind> {
    let dims = shape.dims().iter().map(|&d| resolve_dim(d, t)).collect::<Result<Dims, _>>()?;
    if numel(&dims).is_none() {
        return Err(NodeErrorKind::TooLarge { shape: dims.to_vec() });
    }
    Ok(dims)
}
