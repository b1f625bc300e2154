//! Data movement: reshape, broadcast, transpose, slice, concat, unfold and gather.
//!
//! These work for every dtype. Shapes given by the op (reshape and broadcast targets, slice
//! bounds) may depend on `T` and are resolved for the call; all other shapes are the operands'
//! concrete ones. Strided views ([`strided_copy_into`]) implement broadcast, transpose, slice and
//! unfold; concat and gather copy contiguous blocks.
//!
//! Guarantees: every shape requirement is checked before any element is touched, returning a
//! [`NodeErrorKind`] on violation; a gather index outside `0..V` is an error naming the index and
//! `V`, never a wrapped or clamped lookup.

use super::dest::{Dest, Emitted};
use super::{arity, check_axis, expect_dtype, resolve_dim, resolve_shape};
use crate::error::NodeErrorKind;
use crate::tensor::{
    broadcast_strides, for_dtype, numel, split_axis, strided_copy_into, strides, view_len, Dims, Element, Tensor,
};
use kiln_ir::{DType, Dim, Op, Shape};

/// Same elements, new shape. Takes the operand by value so a dying operand's buffer is reused.
pub(crate) fn reshape<'b>(x: Tensor<'b>, to: &Shape, t: usize) -> Result<Tensor<'b>, NodeErrorKind> {
    let dims = resolve_shape(to, t)?;
    if numel(&dims) != Some(x.len()) {
        return Err(NodeErrorKind::Reshape { from: x.shape().to_vec(), to: dims.to_vec() });
    }
    Ok(Tensor::from_parts(dims, x.into_data()))
}

/// Numpy-style broadcast of the operand to `to` (resolved for `t`).
pub(crate) fn broadcast(
    op: &Op,
    to: &Shape,
    t: usize,
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = ops[0];
    let target = resolve_shape(to, t)?;
    let bad = || NodeErrorKind::Broadcast { from: x.shape().to_vec(), to: target.to_vec() };
    let view_strides = broadcast_strides(x.shape(), &target).ok_or_else(bad)?;
    strided(x, 0, target, &view_strides, dest)
}

/// Axis permutation: output axis `i` is input axis `perm[i]`.
pub(crate) fn transpose(
    op: &Op,
    perm: &[usize],
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = ops[0];
    let rank = x.rank();
    let bad = || NodeErrorKind::Transpose { perm: perm.to_vec(), rank };
    let mut seen = vec![false; rank];
    for &p in perm {
        match seen.get_mut(p) {
            Some(s) if !*s => *s = true,
            _ => return Err(bad()),
        }
    }
    if perm.len() != rank {
        return Err(bad());
    }
    let in_strides = strides(x.shape());
    let shape: Dims = perm.iter().map(|&p| x.shape()[p]).collect();
    let view_strides: Dims = perm.iter().map(|&p| in_strides[p]).collect();
    strided(x, 0, shape, &view_strides, dest)
}

/// Elements `start..end` (resolved for `t`) along `axis`.
pub(crate) fn slice(
    op: &Op,
    axis: usize,
    start: Dim,
    end: Dim,
    t: usize,
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = ops[0];
    check_axis(op, axis, x.rank())?;
    let (start, end) = (resolve_dim(start, t)?, resolve_dim(end, t)?);
    let size = x.shape()[axis];
    let bad = || NodeErrorKind::Slice { start, end, size };
    if start > end || end > size {
        return Err(bad());
    }
    let in_strides = strides(x.shape());
    let mut shape: Dims = x.shape().iter().copied().collect();
    shape[axis] = end - start;
    let offset = start.saturating_mul(in_strides[axis]);
    strided(x, offset, shape, &in_strides, dest)
}

/// Concatenation of all operands along `axis`.
pub(crate) fn concat(op: &Op, axis: usize, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    let Some(first) = ops.first() else {
        return Err(NodeErrorKind::Arity { op: op.mnemonic(), expected: "at least 1".into(), found: 0 });
    };
    check_axis(op, axis, first.rank())?;
    let mut shape: Dims = first.shape().iter().copied().collect();
    shape[axis] = 0;
    for (slot, x) in ops.iter().enumerate() {
        expect_dtype(op, ops, slot, first.dtype())?;
        let same_rest =
            x.rank() == first.rank() && (0..x.rank()).all(|i| i == axis || x.shape()[i] == first.shape()[i]);
        if !same_rest {
            return Err(NodeErrorKind::Concat {
                what: format!("{:?} and {:?} differ outside axis {axis}", first.shape(), x.shape()),
            });
        }
        shape[axis] = shape[axis]
            .checked_add(x.shape()[axis])
            .ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
    }
    let len = numel(&shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
    let (outer, _, inner) = split_axis(&shape, axis);
    for_dtype!(first.dtype(), E => {
        // Non-empty output: `outer` and `inner` are exact and non-zero. Each operand is `outer`
        // blocks of `len_i * inner` elements; interleave the blocks.
        let mut parts = Vec::with_capacity(ops.len());
        if len > 0 {
            for x in ops {
                let block = x.shape()[axis] * inner;
                if block > 0 {
                    parts.push(E::slice(x.data()).unwrap_or_default().chunks_exact(block));
                }
            }
        }
        dest.emit(shape, |out: &mut [E]| {
            let mut at = 0;
            for _ in 0..outer {
                for part in &mut parts {
                    let block = part.next().unwrap_or_default();
                    if let Some(dst) = out.get_mut(at..at + block.len()) {
                        dst.copy_from_slice(block);
                    }
                    at += block.len();
                }
            }
        })
    })
}

/// Sliding windows along `axis`: `[.., N, ..]` becomes `[.., N - size + 1, size, ..]`, window
/// `w` holding elements `w .. w + size`.
pub(crate) fn unfold(
    op: &Op,
    axis: usize,
    size: usize,
    ops: &[&Tensor<'_>],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    let x = ops[0];
    check_axis(op, axis, x.rank())?;
    let len = x.shape()[axis];
    let bad = || NodeErrorKind::Unfold { size, len };
    if size == 0 || size > len {
        return Err(bad());
    }
    let in_strides = strides(x.shape());
    let mut shape: Dims = x.shape().iter().copied().collect();
    shape[axis] = len - size + 1;
    shape.insert(axis + 1, size);
    let mut view_strides = in_strides.clone();
    view_strides.insert(axis + 1, in_strides[axis]);
    if numel(&shape).is_none() {
        return Err(NodeErrorKind::TooLarge { shape: shape.to_vec() });
    }
    strided(x, 0, shape, &view_strides, dest)
}

/// `gather(table, indices)`: rows of `table: [V, ..]` picked by `indices: i64[..]`, giving
/// `[indices.., ..]`.
pub(crate) fn gather(op: &Op, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 2)?;
    expect_dtype(op, ops, 1, DType::I64)?;
    if ops[0].as_quantized().is_some() {
        return super::quantized::gather(op, ops, dest);
    }
    let (table, indices) = (ops[0], ops[1]);
    let Some((&rows, row_shape)) = table.shape().split_first() else {
        return Err(NodeErrorKind::Axis { op: op.mnemonic(), axis: 0, rank: 0 });
    };
    let idx = indices.as_i64().unwrap_or_default();
    let shape: Dims = indices.shape().iter().chain(row_shape).copied().collect();
    let len = numel(&shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
    // Every index is checked, even when rows are empty.
    let mut picked = Vec::with_capacity(idx.len());
    for &i in idx {
        match usize::try_from(i) {
            Ok(r) if r < rows => picked.push(r),
            _ => return Err(NodeErrorKind::GatherIndex { index: i, size: rows }),
        }
    }
    let row_len = numel(row_shape).unwrap_or(0);
    if len == 0 {
        return for_dtype!(table.dtype(), E => dest.emit(shape, |_: &mut [E]| {}));
    }
    // Non-empty output: `row_len > 0`, so the table is exactly `rows × row_len`.
    for_dtype!(table.dtype(), E => {
        let src = E::slice(table.data()).unwrap_or_default();
        if src.len() != rows * row_len {
            return Err(internal("a gather table disagrees with its shape"));
        }
        dest.emit(shape, |out: &mut [E]| {
            for (dst, &r) in out.chunks_exact_mut(row_len).zip(&picked) {
                dst.copy_from_slice(&src[r * row_len..(r + 1) * row_len]);
            }
        })
    })
}

pub(crate) fn one_hot(op: &Op, depth: usize, ops: &[&Tensor<'_>], dest: Dest<'_>) -> Result<Emitted, NodeErrorKind> {
    arity(op, ops, 1)?;
    expect_dtype(op, ops, 0, DType::I64)?;
    let idx = ops[0].as_i64().unwrap_or_default();
    let shape: Dims = ops[0].shape().iter().copied().chain([depth]).collect();
    numel(&shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
    // `None`: a negative (ignored) index, whose row stays zero.
    let mut hot = Vec::with_capacity(idx.len());
    for &i in idx {
        match usize::try_from(i) {
            Ok(h) if h < depth => hot.push(Some(h)),
            Err(_) => hot.push(None),
            Ok(_) => return Err(NodeErrorKind::OneHotIndex { index: i, depth }),
        }
    }
    dest.emit_zeroed(shape, |out: &mut [f32]| {
        if depth > 0 {
            for (row, h) in out.chunks_exact_mut(depth).zip(&hot) {
                if let Some(h) = *h {
                    row[h] = 1.0;
                }
            }
        }
    })
}

/// A strided view of `x` copied to `dest`; an internal error if the view would read outside `x`
/// (which the callers' checks rule out).
fn strided(
    x: &Tensor<'_>,
    offset: usize,
    shape: Dims,
    view_strides: &[usize],
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    for_dtype!(x.dtype(), E => {
        let src = E::slice(x.data()).unwrap_or_default();
        if view_len(src.len(), offset, &shape, view_strides) != numel(&shape) {
            return Err(internal("a strided view reaches outside its operand"));
        }
        let strides: Dims = view_strides.iter().copied().collect();
        dest.emit(shape.clone(), |out: &mut [E]| {
            strided_copy_into(src, offset, &shape, &strides, out);
        })
    })
}

fn internal(what: &str) -> NodeErrorKind {
    NodeErrorKind::Internal { what: what.into() }
}
