//! Evaluation of fused kernels ([`kiln_ir::Kernel`]) and of matrix products with an epilogue.
//!
//! A kernel runs row by row: every instruction's value for the current row lives in a reusable
//! scratch slot (a vector of `cols` elements, or one scalar for a row value), so nothing but the
//! results is materialized. Every element is computed with the same scalar operations, in the
//! same order, as the primitive ops the kernel replaced (reductions fold left to right from the
//! row's first element), so fused and unfused graphs agree bit for bit. Rows are independent and
//! split across threads when the kernel is large.
//!
//! The interpreter runs `matmul.fused` as the product followed by its epilogue; the JIT fuses
//! them within a row. [`run_into`] writes into slices the caller provides (the arena of a planned
//! call); [`run`] allocates them.

use super::dest::Dest;
use super::{matmul, resolve_shape, PAR_MIN_ELEMENTS};
use crate::error::NodeErrorKind;
use crate::tensor::{broadcast_strides, numel, quantized_operand, Dims, OutSlice, Tensor, TensorData};
use kiln_ir::{DType, Instr, Kernel, Level, Op};
use rayon::prelude::*;
use smallvec::SmallVec;

/// How an operand is read at its level: element strides for every kernel axis (0 where it is
/// broadcast) — for a row-level read the last axis is ignored.
struct Reader<'a> {
    data: &'a [f32],
    strides: Dims,
}

impl Reader<'_> {
    fn row_base(&self, row_index: &[usize]) -> usize {
        row_index.iter().zip(&self.strides).map(|(i, s)| i * s).sum()
    }
}

/// One instruction's value for the current row.
#[derive(Clone, Debug)]
enum Slot {
    Vec(Vec<f32>),
    Scalar(f32),
    Mask(Vec<bool>),
    Flag(bool),
}

/// An output buffer of the kernel, or a block of its rows.
enum Out<F, B> {
    F32(F),
    Bool(B),
}

/// Runs `kernel` on `ops` for a call of `t` tokens, returning its results (allocated here).
pub(crate) fn run(
    op: &Op,
    kernel: &Kernel,
    ops: &[&Tensor<'_>],
    t: usize,
) -> Result<SmallVec<[Tensor<'static>; 1]>, NodeErrorKind> {
    let types = result_types(kernel, t)?;
    let mut data: Vec<TensorData<'static>> = Vec::with_capacity(types.len());
    for (dtype, shape) in &types {
        let n = numel(shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
        data.push(TensorData::zeros(*dtype, n).ok_or_else(|| quantized_operand(*dtype))?);
    }
    // Every result is dense (`zeros` refused the rest), so each has a slice.
    let outs = data.iter_mut().map(TensorData::out_slice).collect::<Option<Vec<_>>>();
    let no_storage = || NodeErrorKind::Internal { what: "a kernel result has no storage".into() };
    run_into(op, kernel, ops, t, outs.ok_or_else(no_storage)?)?;
    Ok(types.into_iter().zip(data).map(|((_, shape), d)| Tensor::from_parts(shape, d)).collect())
}

/// The dtype and concrete shape of each result of `kernel` for a call of `t` tokens.
pub(crate) fn result_types(kernel: &Kernel, t: usize) -> Result<Vec<(DType, Dims)>, NodeErrorKind> {
    let shape = resolve_shape(&kernel.shape, t)?;
    let types = kernel.instr_types().map_err(|what| NodeErrorKind::Internal { what })?;
    kernel
        .outputs
        .iter()
        .map(|o| {
            let dtype = types
                .get(o.instr as usize)
                .map(|t| t.dtype)
                .ok_or_else(|| NodeErrorKind::Internal { what: format!("no instruction ${}", o.instr) })?;
            let mut s: Dims = shape.clone();
            if o.level == Level::Row {
                if let Some(last) = s.last_mut() {
                    *last = 1;
                }
            }
            Ok((dtype, s))
        })
        .collect()
}

/// Runs `kernel` on `ops` for a call of `t` tokens, writing result `i` into `outs[i]`, which
/// must hold exactly that result's elements (see [`result_types`]); the caller provides the
/// memory (an arena region or an allocation).
pub(crate) fn run_into(
    op: &Op,
    kernel: &Kernel,
    ops: &[&Tensor<'_>],
    t: usize,
    mut outs: Vec<OutSlice<'_>>,
) -> Result<(), NodeErrorKind> {
    let shape = resolve_shape(&kernel.shape, t)?;
    let cols = *shape.last().ok_or_else(|| NodeErrorKind::Internal { what: "a kernel of rank 0".into() })?;
    let row_shape: Dims = shape[..shape.len() - 1].iter().copied().collect();
    let rows = numel(&row_shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
    let types = kernel.instr_types().map_err(|what| NodeErrorKind::Internal { what })?;
    let mut readers = Vec::with_capacity(ops.len());
    for k in 0..ops.len() {
        let read = kernel
            .reads
            .get(k)
            .ok_or_else(|| NodeErrorKind::Internal { what: format!("no read shape for operand {k}") })?;
        let read = resolve_shape(read, t)?;
        let data = super::f32_operand(op, ops, k)?;
        if numel(&read) != Some(data.len()) {
            return Err(NodeErrorKind::Internal {
                what: format!("operand {k} has {} elements, read as {read:?}", data.len()),
            });
        }
        let strides = broadcast_strides(&read, &shape).ok_or_else(|| NodeErrorKind::Internal {
            what: format!("operand {k} is read as {read:?}, which does not broadcast to {shape:?}"),
        })?;
        readers.push(Reader { data, strides });
    }
    let widths: Vec<usize> = kernel.outputs.iter().map(|o| if o.level == Level::Vector { cols } else { 1 }).collect();
    let fits = outs.len() == kernel.outputs.len()
        && kernel.outputs.iter().zip(&outs).zip(&widths).all(|((o, out), w)| {
            let dtype = types.get(o.instr as usize).map(|t| t.dtype);
            Some(out.dtype()) == dtype && out.len() == rows * w
        });
    if !fits {
        return Err(NodeErrorKind::Internal { what: "kernel outputs do not match its results".into() });
    }
    let run_rows = |first: usize, count: usize, outs: &mut [Out<&mut [f32], &mut [bool]>]| {
        let mut slots: Vec<Slot> = types
            .iter()
            .map(|t| match (t.level, t.dtype) {
                (Level::Vector, DType::Bool) => Slot::Mask(vec![false; cols]),
                (Level::Vector, _) => Slot::Vec(vec![0.0; cols]),
                (Level::Row, DType::Bool) => Slot::Flag(false),
                (Level::Row, _) => Slot::Scalar(0.0),
            })
            .collect();
        let mut index: Dims = smallvec::smallvec![0; row_shape.len()];
        for local in 0..count {
            unravel(first + local, &row_shape, &mut index);
            eval_row(kernel, &readers, &index, cols, &mut slots);
            for ((o, out), &w) in kernel.outputs.iter().zip(outs.iter_mut()).zip(&widths) {
                let span = local * w..(local + 1) * w;
                match (out, &slots[o.instr as usize]) {
                    (Out::F32(dst), Slot::Vec(v)) => dst[span].copy_from_slice(v),
                    (Out::F32(dst), Slot::Scalar(s)) => dst[span].fill(*s),
                    (Out::Bool(dst), Slot::Mask(m)) => dst[span].copy_from_slice(m),
                    (Out::Bool(dst), Slot::Flag(b)) => dst[span].fill(*b),
                    _ => {}
                }
            }
        }
    };
    // Contiguous blocks of rows, each run with its own scratch (in parallel when large).
    let per = if rows * cols >= PAR_MIN_ELEMENTS && rows > 1 {
        rows.div_ceil(rayon::current_num_threads().max(1) * 4)
    } else {
        rows.max(1)
    };
    // Each block: its first row, its row count, and its rows of every output (split with
    // `split_at_mut`, so zero-width outputs, when `cols` is 0, get empty slices too).
    type Block<'o> = (usize, usize, Vec<Out<&'o mut [f32], &'o mut [bool]>>);
    let mut blocks: Vec<Block<'_>> = (0..rows).step_by(per).map(|s| (s, per.min(rows - s), Vec::new())).collect();
    for (out, w) in outs.iter_mut().zip(&widths) {
        match out {
            OutSlice::F32(v) => {
                let mut rest: &mut [f32] = v;
                for (_, count, b) in blocks.iter_mut() {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(*count * w);
                    b.push(Out::F32(head));
                    rest = tail;
                }
            }
            OutSlice::Bool(v) => {
                let mut rest: &mut [bool] = v;
                for (_, count, b) in blocks.iter_mut() {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(*count * w);
                    b.push(Out::Bool(head));
                    rest = tail;
                }
            }
            OutSlice::I64(_) => {}
        }
    }
    if blocks.len() > 1 {
        blocks.into_par_iter().for_each(|(first, count, mut outs)| run_rows(first, count, &mut outs));
    } else if let Some((first, count, mut outs)) = blocks.pop() {
        run_rows(first, count, &mut outs);
    }
    Ok(())
}

/// Runs a matrix product and its epilogue kernel over the product's rows.
pub(crate) fn run_matmul(
    op: &Op,
    products: matmul::Products,
    transpose_rhs: bool,
    epilogue: &Kernel,
    ops: &[&Tensor<'_>],
    t: usize,
) -> Result<SmallVec<[Tensor<'static>; 1]>, NodeErrorKind> {
    let product = matmul_product(products, transpose_rhs, ops)?;
    let mut epilogue_ops: SmallVec<[&Tensor<'_>; 4]> = SmallVec::new();
    epilogue_ops.push(&product);
    epilogue_ops.extend(ops[2..].iter().copied());
    run(op, epilogue, &epilogue_ops, t)
}

/// The product of a `matmul.fused` node (its first two operands).
pub(crate) fn matmul_product(
    products: matmul::Products,
    transpose_rhs: bool,
    ops: &[&Tensor<'_>],
) -> Result<Tensor<'static>, NodeErrorKind> {
    if ops.len() < 2 {
        return Err(NodeErrorKind::Internal { what: "matmul.fused needs two operands".into() });
    }
    matmul::matmul(products, &Op::MatMul { transpose_rhs }, transpose_rhs, &ops[..2], Dest::Alloc)?.into_owned()
}

fn unravel(mut i: usize, shape: &[usize], out: &mut [usize]) {
    for (o, &d) in out.iter_mut().zip(shape).rev() {
        *o = i % d.max(1);
        i /= d.max(1);
    }
}

/// Computes every instruction for the row at `index`.
fn eval_row(kernel: &Kernel, readers: &[Reader<'_>], index: &[usize], cols: usize, slots: &mut [Slot]) {
    for (i, instr) in kernel.body.iter().enumerate() {
        let (done, rest) = slots.split_at_mut(i);
        let out = &mut rest[0];
        match *instr {
            Instr::Input(k, level) => {
                let r = &readers[k as usize];
                let base = r.row_base(index);
                match (out, level) {
                    (Slot::Vec(v), Level::Vector) => {
                        let cs = r.strides.last().copied().unwrap_or(0);
                        if cs == 1 {
                            v.copy_from_slice(&r.data[base..base + cols]);
                        } else {
                            for (c, x) in v.iter_mut().enumerate() {
                                *x = r.data[base + c * cs];
                            }
                        }
                    }
                    (Slot::Scalar(s), _) => *s = r.data[base],
                    _ => {}
                }
            }
            Instr::Const(c) => {
                if let Slot::Scalar(s) = out {
                    *s = c;
                }
            }
            Instr::Unary(u, a) => match (out, &done[a as usize]) {
                (Slot::Vec(v), Slot::Vec(x)) => v.iter_mut().zip(x).for_each(|(o, &x)| *o = u.apply(x)),
                (Slot::Scalar(s), Slot::Scalar(x)) => *s = u.apply(*x),
                _ => {}
            },
            Instr::Binary(b, x, y) => {
                let (x, y) = (&done[x as usize], &done[y as usize]);
                match out {
                    Slot::Vec(v) => {
                        for (c, o) in v.iter_mut().enumerate() {
                            *o = b.apply(at(x, c), at(y, c));
                        }
                    }
                    Slot::Scalar(s) => *s = b.apply(at(x, 0), at(y, 0)),
                    _ => {}
                }
            }
            Instr::Compare(cmp, x, y) => {
                let (x, y) = (&done[x as usize], &done[y as usize]);
                match out {
                    Slot::Mask(m) => {
                        for (c, o) in m.iter_mut().enumerate() {
                            *o = cmp.apply(at(x, c), at(y, c));
                        }
                    }
                    Slot::Flag(f) => *f = cmp.apply(at(x, 0), at(y, 0)),
                    _ => {}
                }
            }
            Instr::Select(c, x, y) => {
                let (c, x, y) = (&done[c as usize], &done[x as usize], &done[y as usize]);
                match out {
                    Slot::Vec(v) => {
                        for (i, o) in v.iter_mut().enumerate() {
                            *o = if flag(c, i) { at(x, i) } else { at(y, i) };
                        }
                    }
                    Slot::Scalar(s) => *s = if flag(c, 0) { at(x, 0) } else { at(y, 0) },
                    _ => {}
                }
            }
            Instr::Reduce(r, a) => {
                if let (Slot::Scalar(s), Slot::Vec(x)) = (out, &done[a as usize]) {
                    *s = match x.split_first() {
                        None => r.identity(),
                        Some((&first, rest)) => rest.iter().fold(first, |acc, &v| match r {
                            kiln_ir::ReduceOp::Sum => acc + v,
                            kiln_ir::ReduceOp::Max => kiln_ir::BinaryOp::Max.apply(acc, v),
                        }),
                    };
                }
            }
        }
    }
}

/// Element `c` of a value (a row value is the same for every element).
fn at(slot: &Slot, c: usize) -> f32 {
    match slot {
        Slot::Vec(v) => v[c],
        Slot::Scalar(s) => *s,
        _ => f32::NAN,
    }
}

fn flag(slot: &Slot, c: usize) -> bool {
    match slot {
        Slot::Mask(m) => m[c],
        Slot::Flag(b) => *b,
        _ => false,
    }
}
