//! Reductions along one axis, which is kept with size 1, written to a [`Dest`].
//!
//! Semantics: each output element folds the elements along the axis in index order, starting
//! from the first one, in plain sequential `f32` (no pairwise or wider accumulation; at the sizes
//! of these models this stays well within the 1e-5 tolerance against PyTorch). `max` propagates
//! NaN like [`BinaryOp::Max`]. An empty axis gives the identity ([`ReduceOp::identity`]): 0 for
//! `sum`, -inf for `max`.
//!
//! Guarantee: the order of additions is fixed, so results do not depend on rayon's splitting
//! (which only distributes independent output rows).

use super::dest::{Dest, Emitted};
use super::{arity, check_axis, f32_operand, PAR_MIN_ELEMENTS};
use crate::error::NodeErrorKind;
use crate::tensor::{numel, split_axis, Dims, Tensor};
use kiln_ir::{BinaryOp, Op, ReduceOp};
use rayon::prelude::*;

pub(crate) fn reduce(
    op: &Op,
    r: ReduceOp,
    axis: usize,
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = f32_operand(op, ops, 0)?;
    let shape = ops[0].shape();
    check_axis(op, axis, shape.len())?;
    let mut out_shape: Dims = shape.iter().copied().collect();
    out_shape[axis] = 1;
    let out_len = numel(&out_shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: out_shape.to_vec() })?;
    let (_, n, inner) = split_axis(shape, axis);

    dest.emit(out_shape, |out: &mut [f32]| {
        out.fill(r.identity());
        if out_len > 0 && n > 0 {
            // Here `x.len() == outer * n * inner` exactly and every chunk size is non-zero.
            let fold = |(acc, block): (&mut [f32], &[f32])| {
                let mut rows = block.chunks_exact(inner);
                if let Some(first) = rows.next() {
                    acc.copy_from_slice(first);
                }
                for row in rows {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a = combine(r, *a, v);
                    }
                }
            };
            if x.len() >= PAR_MIN_ELEMENTS && out_len > inner {
                out.par_chunks_mut(inner).zip(x.par_chunks(n * inner)).for_each(fold);
            } else {
                out.chunks_mut(inner).zip(x.chunks(n * inner)).for_each(fold);
            }
        }
    })
}

fn combine(r: ReduceOp, acc: f32, v: f32) -> f32 {
    match r {
        ReduceOp::Sum => acc + v,
        ReduceOp::Max => BinaryOp::Max.apply(acc, v),
    }
}
