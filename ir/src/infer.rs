//! Type rules: the result types of every op given its operand types.
//!
//! This is the single source of truth for shapes. The graph builder applies it when a node is
//! added, the verifier re-applies it to every node, and front ends report its errors at the spec
//! line that produced the node.

use crate::op::Op;
use crate::types::{DType, Dim, Shape, Type};
use smallvec::SmallVec;
use thiserror::Error;

/// Why an op cannot take the operands it was given.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TypeError {
    #[error("`{op}` takes {expected} operand(s), got {found}")]
    Arity { op: String, expected: String, found: usize },
    #[error("`{op}` expects {expected} operands, got {found}")]
    DType { op: String, expected: DType, found: DType },
    #[error("`{op}` needs operands of one shape, got {lhs} and {rhs}")]
    ShapeMismatch { op: String, lhs: Shape, rhs: Shape },
    #[error("`{op}`: axis {axis} is out of range for rank {rank}")]
    Axis { op: String, axis: usize, rank: usize },
    #[error("matmul: inner dimensions differ: {lhs} · {rhs}{}", if *.transpose_rhs { "ᵀ" } else { "" })]
    MatMul { lhs: Shape, rhs: Shape, transpose_rhs: bool },
    #[error("reshape from {from} to {to} changes the number of elements")]
    Reshape { from: Shape, to: Shape },
    #[error("cannot broadcast {from} to {to}")]
    Broadcast { from: Shape, to: Shape },
    #[error("transpose: {perm:?} is not a permutation of {rank} axes")]
    Transpose { perm: Vec<usize>, rank: usize },
    #[error("slice {start}..{end} is not within an axis of size {size}")]
    Slice { start: Dim, end: Dim, size: Dim },
    #[error("concat: {what}")]
    Concat { what: String },
    #[error("unfold: a window of {size} does not fit an axis of size {len} for every T >= 1")]
    Unfold { size: usize, len: Dim },
    #[error("scan: {what}")]
    Scan { what: String },
    #[error("kernel: {what}")]
    Kernel { what: String },
    #[error("an input's type is declared, not inferred")]
    Input,
    #[error("`{op}` cannot read the quantized {found} in operand {slot}: only the weight of a product or the table of a gather can be quantized")]
    Quantized { op: String, slot: usize, found: DType },
    #[error("a quantized weight must be a matrix [N, K] of fixed sizes with a group of at least 1, got {found}")]
    QuantizedShape { found: Type },
}

type Results = SmallVec<[Type; 1]>;

fn one(t: Type) -> Results {
    [t].into_iter().collect()
}

fn arity(op: &Op, ops: &[&Type], expected: usize) -> Result<(), TypeError> {
    if ops.len() != expected {
        return Err(TypeError::Arity { op: op.mnemonic(), expected: expected.to_string(), found: ops.len() });
    }
    Ok(())
}

fn dtype(op: &Op, t: &Type, expected: DType) -> Result<(), TypeError> {
    if t.dtype != expected {
        return Err(TypeError::DType { op: op.mnemonic(), expected, found: t.dtype });
    }
    Ok(())
}

fn same_shape(op: &Op, a: &Type, b: &Type) -> Result<(), TypeError> {
    if a.shape != b.shape {
        return Err(TypeError::ShapeMismatch { op: op.mnemonic(), lhs: a.shape.clone(), rhs: b.shape.clone() });
    }
    Ok(())
}

fn axis(op: &Op, axis: usize, rank: usize) -> Result<(), TypeError> {
    if axis >= rank {
        return Err(TypeError::Axis { op: op.mnemonic(), axis, rank });
    }
    Ok(())
}

/// Whether `from` broadcasts to `to` under numpy's rules.
pub fn broadcasts_to(from: &Shape, to: &Shape) -> bool {
    from.rank() <= to.rank()
        && from.dims().iter().rev().zip(to.dims().iter().rev()).all(|(f, t)| f == t || *f == Dim::Fixed(1))
}

/// The numpy broadcast of two shapes, if they are compatible.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    let rank = a.rank().max(b.rank());
    let mut dims: SmallVec<[Dim; 4]> = SmallVec::with_capacity(rank);
    for i in 0..rank {
        let da = a.rank().checked_sub(rank - i).map(|j| a.dims()[j]).unwrap_or(Dim::Fixed(1));
        let db = b.rank().checked_sub(rank - i).map(|j| b.dims()[j]).unwrap_or(Dim::Fixed(1));
        dims.push(match (da, db) {
            _ if da == db => da,
            (Dim::Fixed(1), d) | (d, Dim::Fixed(1)) => d,
            _ => return None,
        });
    }
    Some(Shape(dims))
}

/// Which operand of `op` may be a quantized matrix: a product's weight, a gather's table.
fn quantized_slot(op: &Op) -> Option<usize> {
    match op {
        Op::MatMul { .. } | Op::FusedMatMul { .. } => Some(1),
        Op::Gather => Some(0),
        _ => None,
    }
}

/// Checks that only the operand [`quantized_slot`] allows is quantized, and that it is a matrix
/// of fixed sizes.
fn quantized_operands(op: &Op, ops: &[&Type]) -> Result<(), TypeError> {
    for (slot, t) in ops.iter().enumerate() {
        if let DType::Quant(q) = t.dtype {
            if quantized_slot(op) != Some(slot) {
                return Err(TypeError::Quantized { op: op.mnemonic(), slot, found: t.dtype });
            }
            let fixed = t.rank() == 2 && t.shape.dims().iter().all(|d| d.fixed().is_some());
            if !fixed || q.group == 0 {
                return Err(TypeError::QuantizedShape { found: (*t).clone() });
            }
        }
    }
    Ok(())
}

/// The element type a product reads its weight as, or a gather its table: a quantized matrix
/// is read as `f32`.
fn dense(t: &Type) -> DType {
    match t.dtype {
        DType::Quant(_) => DType::F32,
        d => d,
    }
}

/// The result types of `op` applied to operands of types `ops`.
pub fn infer(op: &Op, ops: &[&Type]) -> Result<Results, TypeError> {
    quantized_operands(op, ops)?;
    match op {
        Op::Input(_) => {
            arity(op, ops, 0)?;
            Err(TypeError::Input)
        }
        Op::Constant(_) => {
            arity(op, ops, 0)?;
            Ok(one(Type::f32(Shape::scalar())))
        }
        Op::Unary(_) => {
            arity(op, ops, 1)?;
            dtype(op, ops[0], DType::F32)?;
            Ok(one(ops[0].clone()))
        }
        Op::Binary(_) => {
            arity(op, ops, 2)?;
            dtype(op, ops[0], DType::F32)?;
            dtype(op, ops[1], DType::F32)?;
            same_shape(op, ops[0], ops[1])?;
            Ok(one(ops[0].clone()))
        }
        Op::Compare(_) => {
            arity(op, ops, 2)?;
            dtype(op, ops[0], DType::F32)?;
            dtype(op, ops[1], DType::F32)?;
            same_shape(op, ops[0], ops[1])?;
            Ok(one(Type::new(DType::Bool, ops[0].shape.clone())))
        }
        Op::Select => {
            arity(op, ops, 3)?;
            dtype(op, ops[0], DType::Bool)?;
            dtype(op, ops[1], DType::F32)?;
            dtype(op, ops[2], DType::F32)?;
            same_shape(op, ops[0], ops[1])?;
            same_shape(op, ops[1], ops[2])?;
            Ok(one(ops[1].clone()))
        }
        Op::Reduce { axis: ax, .. } => {
            arity(op, ops, 1)?;
            dtype(op, ops[0], DType::F32)?;
            axis(op, *ax, ops[0].rank())?;
            let mut shape = ops[0].shape.clone();
            shape.0[*ax] = Dim::Fixed(1);
            Ok(one(Type::f32(shape)))
        }
        Op::MatMul { transpose_rhs } => {
            arity(op, ops, 2)?;
            dtype(op, ops[0], DType::F32)?;
            if dense(ops[1]) != DType::F32 {
                return Err(TypeError::DType { op: op.mnemonic(), expected: DType::F32, found: ops[1].dtype });
            }
            let (l, r) = (&ops[0].shape, &ops[1].shape);
            let mismatch = || TypeError::MatMul { lhs: l.clone(), rhs: r.clone(), transpose_rhs: *transpose_rhs };
            if l.rank() < 1 || r.rank() != 2 {
                return Err(mismatch());
            }
            let (k, n) = if *transpose_rhs { (r.dims()[1], r.dims()[0]) } else { (r.dims()[0], r.dims()[1]) };
            if l.dims()[l.rank() - 1] != k {
                return Err(mismatch());
            }
            let mut shape = l.clone();
            let last = shape.rank() - 1;
            shape.0[last] = n;
            Ok(one(Type::f32(shape)))
        }
        Op::Reshape(to) => {
            arity(op, ops, 1)?;
            let from = &ops[0].shape;
            match (from.count(), to.count()) {
                (Some(a), Some(b)) if a == b => Ok(one(Type::new(ops[0].dtype, to.clone()))),
                _ => Err(TypeError::Reshape { from: from.clone(), to: to.clone() }),
            }
        }
        Op::Broadcast(to) => {
            arity(op, ops, 1)?;
            if !broadcasts_to(&ops[0].shape, to) {
                return Err(TypeError::Broadcast { from: ops[0].shape.clone(), to: to.clone() });
            }
            Ok(one(Type::new(ops[0].dtype, to.clone())))
        }
        Op::Transpose(perm) => {
            arity(op, ops, 1)?;
            let rank = ops[0].rank();
            let mut seen = vec![false; rank];
            let valid = perm.len() == rank && perm.iter().all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(TypeError::Transpose { perm: perm.to_vec(), rank });
            }
            let shape = Shape(perm.iter().map(|&p| ops[0].shape.dims()[p]).collect());
            Ok(one(Type::new(ops[0].dtype, shape)))
        }
        Op::Slice { axis: ax, start, end } => {
            arity(op, ops, 1)?;
            axis(op, *ax, ops[0].rank())?;
            let size = ops[0].shape.dims()[*ax];
            let bad = || TypeError::Slice { start: *start, end: *end, size };
            if !start.always_le(*end) || !end.always_le(size) {
                return Err(bad());
            }
            let len = end.checked_sub(*start).ok_or_else(bad)?;
            let mut shape = ops[0].shape.clone();
            shape.0[*ax] = len;
            Ok(one(Type::new(ops[0].dtype, shape)))
        }
        Op::Concat { axis: ax } => {
            if ops.is_empty() {
                return Err(TypeError::Arity { op: op.mnemonic(), expected: "at least 1".into(), found: 0 });
            }
            let first = ops[0];
            axis(op, *ax, first.rank())?;
            let mut len = first.shape.dims()[*ax];
            for t in &ops[1..] {
                dtype(op, t, first.dtype)?;
                let same_rest = t.rank() == first.rank()
                    && (0..t.rank()).all(|i| i == *ax || t.shape.dims()[i] == first.shape.dims()[i]);
                if !same_rest {
                    return Err(TypeError::Concat {
                        what: format!("{} and {} differ outside axis {ax}", first.shape, t.shape),
                    });
                }
                len = len
                    .checked_add(t.shape.dims()[*ax])
                    .ok_or_else(|| TypeError::Concat { what: "the result would be longer than T + constant".into() })?;
            }
            let mut shape = first.shape.clone();
            shape.0[*ax] = len;
            Ok(one(Type::new(first.dtype, shape)))
        }
        Op::Unfold { axis: ax, size } => {
            arity(op, ops, 1)?;
            axis(op, *ax, ops[0].rank())?;
            let len = ops[0].shape.dims()[*ax];
            // At least one window for every T >= 1.
            if *size == 0 || !Dim::Fixed(*size).always_le(len) {
                return Err(TypeError::Unfold { size: *size, len });
            }
            let windows = len
                .checked_sub(Dim::Fixed(*size))
                .and_then(|d| d.checked_add(Dim::Fixed(1)))
                .filter(|_| *size > 0)
                .ok_or(TypeError::Unfold { size: *size, len })?;
            let mut dims = ops[0].shape.0.clone();
            dims[*ax] = windows;
            dims.insert(ax + 1, Dim::Fixed(*size));
            Ok(one(Type::new(ops[0].dtype, Shape(dims))))
        }
        Op::Gather => {
            arity(op, ops, 2)?;
            dtype(op, ops[1], DType::I64)?;
            if ops[0].rank() < 1 {
                return Err(TypeError::Axis { op: op.mnemonic(), axis: 0, rank: 0 });
            }
            let dims = ops[1].shape.dims().iter().chain(&ops[0].shape.dims()[1..]).copied();
            Ok(one(Type::new(dense(ops[0]), Shape::new(dims))))
        }
        Op::OneHot { depth } => {
            arity(op, ops, 1)?;
            dtype(op, ops[0], DType::I64)?;
            let dims = ops[0].shape.dims().iter().copied().chain([Dim::Fixed(*depth)]);
            Ok(one(Type::f32(Shape::new(dims))))
        }
        Op::Scan(scan) => infer_scan(scan, ops),
        Op::Fused(kernel) => kernel.result_types(ops),
        Op::FusedMatMul { transpose_rhs, epilogue } => {
            if ops.len() < 2 {
                return Err(TypeError::Arity { op: op.mnemonic(), expected: "at least 2".into(), found: ops.len() });
            }
            let product = infer(&Op::MatMul { transpose_rhs: *transpose_rhs }, &ops[..2])?;
            let mut epilogue_ops: SmallVec<[&Type; 4]> = SmallVec::new();
            epilogue_ops.push(&product[0]);
            epilogue_ops.extend(ops[2..].iter().copied());
            if epilogue.shape != product[0].shape {
                return Err(TypeError::Kernel {
                    what: format!(
                        "the epilogue iterates over {} but the product is {}",
                        epilogue.shape, product[0].shape
                    ),
                });
            }
            epilogue.result_types(&epilogue_ops)
        }
    }
}

fn infer_scan(scan: &crate::op::Scan, ops: &[&Type]) -> Result<Results, TypeError> {
    let err = |what: String| TypeError::Scan { what };
    let n = scan.carries + scan.sequences + scan.constants;
    if ops.len() != n {
        return Err(TypeError::Arity { op: "scan".into(), expected: n.to_string(), found: ops.len() });
    }
    let body = &scan.body;
    if body.inputs().len() != n {
        return Err(err(format!("the body takes {} arguments, the scan passes {n}", body.inputs().len())));
    }
    let mut steps: Option<Dim> = None;
    for (i, &input) in body.inputs().iter().enumerate() {
        let declared = &body.node(input).results[0];
        let expected = if i >= scan.carries && i < scan.carries + scan.sequences {
            let seq = ops[i];
            if seq.rank() == 0 {
                return Err(err(format!("sequence operand {i} is a scalar")));
            }
            let len = seq.shape.dims()[0];
            if *steps.get_or_insert(len) != len {
                return Err(err(format!("sequence operand {i} has {len} steps, another has {}", steps.unwrap_or(len))));
            }
            Type::new(seq.dtype, Shape::new(seq.shape.dims()[1..].iter().copied()))
        } else {
            ops[i].clone()
        };
        if *declared != expected {
            return Err(err(format!("argument {i} is declared {declared} but receives {expected}")));
        }
    }
    let steps = steps.ok_or_else(|| err("a scan needs at least one sequence operand".into()))?;
    let outs = body.outputs();
    if outs.len() < scan.carries {
        return Err(err(format!("the body returns {} values, fewer than its {} carries", outs.len(), scan.carries)));
    }
    let mut results: Results = SmallVec::new();
    for (i, o) in outs.iter().enumerate() {
        let t = body.value_type(o.value);
        if i < scan.carries {
            if t != ops[i] {
                return Err(err(format!("carry {i} enters as {} but the body returns {t}", ops[i])));
            }
            results.push(t.clone());
        } else {
            let dims = std::iter::once(steps).chain(t.shape.dims().iter().copied());
            results.push(Type::new(t.dtype, Shape::new(dims)));
        }
    }
    Ok(results)
}
