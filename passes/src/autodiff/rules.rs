//! The gradient rule of every primitive: given a node, its operands, its results and the
//! adjoints of its results, the adjoints of its operands (vector-Jacobian products).
//!
//! The `match` is exhaustive over [`Op`]: a new primitive does not compile until it has a rule
//! here. Rules build ordinary IR from primitives, so the backward graph is simplified, fused and
//! memory-planned like any other. Where the derivative is not unique the rules follow PyTorch:
//! `max`/`min` split the gradient evenly between equal operands, `reduce.max` spreads it evenly
//! over the tied maxima (like `amax`), `abs` has derivative 0 at 0, and `pow` gives the exponent
//! no gradient where the base is 0.

use super::build::Builder;
use super::AutodiffError;
use kiln_ir::{BinaryOp, CompareOp, Dim, Op, ReduceOp, Shape, UnaryOp, Value};

/// What a rule sees of one node.
pub(crate) struct Site<'a> {
    pub operands: &'a [Value],
    /// The node's single result (rules for multi-result ops do not use it).
    pub result: Value,
    /// The adjoint of the result.
    pub dy: Value,
    /// Which operands need an adjoint.
    pub wanted: &'a [bool],
}

/// The adjoints of a single-result node's operands (`None`: no gradient flows or none is wanted).
pub(crate) fn operand_adjoints(
    b: &mut Builder<'_>,
    op: &Op,
    s: &Site<'_>,
) -> Result<Vec<Option<Value>>, AutodiffError> {
    let want = |i: usize| s.wanted.get(i).copied().unwrap_or(false);
    let (x, y, dy) = (s.operands.first().copied(), s.result, s.dy);
    let mut out: Vec<Option<Value>> = vec![None; s.operands.len()];
    match op {
        // Leaves, and ops whose results are not differentiable (booleans, one-hot rows of
        // integer indices).
        Op::Input(_) | Op::Constant(_) | Op::Compare(_) | Op::OneHot { .. } => {}
        Op::Unary(u) => {
            let x = operand(x)?;
            out[0] = Some(unary(b, *u, x, y, dy)?);
        }
        Op::Binary(op) => {
            let (x0, x1) = (s.operands[0], s.operands[1]);
            let (d0, d1) = binary(b, *op, x0, x1, y, dy, want(0), want(1))?;
            out[0] = d0;
            out[1] = d1;
        }
        Op::Select => {
            let cond = s.operands[0];
            if want(1) {
                out[1] = Some(b.mask(cond, dy)?);
            }
            if want(2) {
                let zero = b.zeros_like(dy)?;
                out[2] = Some(b.select(cond, zero, dy)?);
            }
        }
        Op::Reduce { op: r, axis } => {
            let x = operand(x)?;
            let shape = b.shape(x);
            out[0] = Some(match r {
                ReduceOp::Sum => b.broadcast(dy, shape)?,
                ReduceOp::Max => {
                    // Even split over the tied maxima: dy * [x == max] / count.
                    let max = b.broadcast(y, shape.clone())?;
                    let hit = b.compare(CompareOp::Eq, x, max)?;
                    let one = b.fill(1.0, shape.clone())?;
                    let ones = b.mask(hit, one)?;
                    let count = b.sum(ones, *axis)?;
                    let share = b.div(dy, count)?;
                    let share = b.broadcast(share, shape)?;
                    b.mul(ones, share)?
                }
            });
        }
        Op::MatMul { transpose_rhs } => {
            let (a, w) = (s.operands[0], s.operands[1]);
            if want(0) {
                // dA = dY · Wᵀ for a [K, N] weight, dY · W for an [N, K] one.
                out[0] = Some(b.matmul(dy, w, !transpose_rhs)?);
            }
            if want(1) {
                let a2 = b.rows(a)?;
                let dy2 = b.rows(dy)?;
                out[1] = Some(if *transpose_rhs {
                    let dyt = b.transpose(dy2, &[1, 0])?;
                    b.matmul(dyt, a2, false)?
                } else {
                    let at = b.transpose(a2, &[1, 0])?;
                    b.matmul(at, dy2, false)?
                });
            }
        }
        Op::Reshape(_) => {
            let shape = b.shape(operand(x)?);
            out[0] = Some(b.reshape(dy, shape)?);
        }
        Op::Broadcast(_) => {
            let shape = b.shape(operand(x)?);
            out[0] = Some(b.unbroadcast(dy, &shape)?);
        }
        Op::Transpose(perm) => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            out[0] = Some(b.transpose(dy, &inverse)?);
        }
        Op::Slice { axis, start, end } => {
            let size = b.shape(operand(x)?).dims()[*axis];
            let after =
                size.checked_sub(*end).ok_or_else(|| unsupported(b, "a slice whose tail length is not a size"))?;
            out[0] = Some(b.pad(dy, *axis, *start, after)?);
        }
        Op::Concat { axis } => {
            let mut offset = Dim::Fixed(0);
            for (i, &part) in s.operands.iter().enumerate() {
                let len = b.shape(part).dims()[*axis];
                let end = offset.checked_add(len).ok_or_else(|| unsupported(b, "a concat of two T-long parts"))?;
                if want(i) {
                    out[i] = Some(b.slice(dy, *axis, offset, end)?);
                }
                offset = end;
            }
        }
        Op::Unfold { axis, size } => {
            out[0] = Some(unfold(b, operand(x)?, dy, *axis, *size)?);
        }
        Op::Gather => {
            if want(0) {
                out[0] = Some(gather_table(b, s.operands[0], s.operands[1], dy)?);
            }
        }
        Op::Scan(_) => return Err(unsupported(b, "a scan reached the single-result rules")),
        Op::Fused(_) | Op::FusedMatMul { .. } => {
            return Err(unsupported(b, "fused kernels (differentiate before the fusion passes)"));
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        if !want(i) {
            *o = None;
        }
    }
    Ok(out)
}

fn operand(x: Option<Value>) -> Result<Value, AutodiffError> {
    x.ok_or(AutodiffError::Internal { what: "a unary rule without an operand".into() })
}

fn unsupported(b: &Builder<'_>, what: &str) -> AutodiffError {
    AutodiffError::Unsupported { node: b.node(), what: what.into() }
}

fn unary(b: &mut Builder<'_>, u: UnaryOp, x: Value, y: Value, dy: Value) -> Result<Value, AutodiffError> {
    match u {
        UnaryOp::Neg => b.neg(dy),
        UnaryOp::Exp => b.mul(dy, y),
        UnaryOp::Log => b.div(dy, x),
        UnaryOp::Log1p => {
            let one = b.fill(1.0, b.shape(x))?;
            let one_plus = b.add(one, x)?;
            b.div(dy, one_plus)
        }
        UnaryOp::Sqrt => {
            let half = b.scale(dy, 0.5)?;
            b.div(half, y)
        }
        UnaryOp::Recip => {
            let y2 = b.mul(y, y)?;
            let d = b.mul(dy, y2)?;
            b.neg(d)
        }
        UnaryOp::Tanh => {
            let y2 = b.mul(y, y)?;
            let d = b.rsub(1.0, y2)?;
            b.mul(dy, d)
        }
        UnaryOp::Abs => {
            let zero = b.zeros_like(x)?;
            let pos = b.compare(CompareOp::Gt, x, zero)?;
            let neg = b.compare(CompareOp::Lt, x, zero)?;
            let minus = b.neg(dy)?;
            let lower = b.mask(neg, minus)?;
            b.select(pos, dy, lower)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn binary(
    b: &mut Builder<'_>,
    op: BinaryOp,
    x0: Value,
    x1: Value,
    y: Value,
    dy: Value,
    want0: bool,
    want1: bool,
) -> Result<(Option<Value>, Option<Value>), AutodiffError> {
    let mut d0 = None;
    let mut d1 = None;
    match op {
        BinaryOp::Add => {
            d0 = Some(dy);
            d1 = Some(dy);
        }
        BinaryOp::Sub => {
            d0 = Some(dy);
            if want1 {
                d1 = Some(b.neg(dy)?);
            }
        }
        BinaryOp::Mul => {
            if want0 {
                d0 = Some(b.mul(dy, x1)?);
            }
            if want1 {
                d1 = Some(b.mul(dy, x0)?);
            }
        }
        BinaryOp::Div => {
            if want0 {
                d0 = Some(b.div(dy, x1)?);
            }
            if want1 {
                // -dy * x0 / x1² = -(dy * y) / x1
                let t = b.mul(dy, y)?;
                let t = b.div(t, x1)?;
                d1 = Some(b.neg(t)?);
            }
        }
        BinaryOp::Max | BinaryOp::Min => {
            let (win, lose) =
                if op == BinaryOp::Max { (CompareOp::Gt, CompareOp::Lt) } else { (CompareOp::Lt, CompareOp::Gt) };
            let tie = b.compare(CompareOp::Eq, x0, x1)?;
            let half = b.scale(dy, 0.5)?;
            let shared = b.mask(tie, half)?;
            if want0 {
                let first = b.compare(win, x0, x1)?;
                d0 = Some(b.select(first, dy, shared)?);
            }
            if want1 {
                let second = b.compare(lose, x0, x1)?;
                d1 = Some(b.select(second, dy, shared)?);
            }
        }
        BinaryOp::Pow => {
            if want0 {
                // dy * x1 * x0^(x1 - 1)
                let one = b.fill(1.0, b.shape(x1))?;
                let e = b.sub(x1, one)?;
                let p = b.binary(BinaryOp::Pow, x0, e)?;
                let p = b.mul(p, x1)?;
                d0 = Some(b.mul(dy, p)?);
            }
            if want1 {
                // dy * y * ln(x0), and 0 where the base is 0 (as PyTorch).
                let ln = b.unary(UnaryOp::Log, x0)?;
                let t = b.mul(y, ln)?;
                let t = b.mul(dy, t)?;
                let zero = b.zeros_like(x0)?;
                let nonzero = b.compare(CompareOp::Ne, x0, zero)?;
                d1 = Some(b.mask(nonzero, t)?);
            }
        }
    }
    Ok((d0, d1))
}

/// The adjoint of `unfold`: window element `j` of window `w` is input element `w + j`, so the
/// input's adjoint is the sum over `j` of column `j` of `dy` shifted down by `j`.
fn unfold(b: &mut Builder<'_>, x: Value, dy: Value, axis: usize, size: usize) -> Result<Value, AutodiffError> {
    let dy_shape = b.shape(dy);
    let mut column_shape = dy_shape.0.clone();
    column_shape.remove(axis + 1);
    let mut acc: Option<Value> = None;
    for j in 0..size {
        let col = b.slice(dy, axis + 1, Dim::Fixed(j), Dim::Fixed(j + 1))?;
        let col = b.reshape(col, Shape(column_shape.clone()))?;
        let col = b.pad(col, axis, Dim::Fixed(j), Dim::Fixed(size - 1 - j))?;
        acc = Some(match acc {
            Some(a) => b.add(a, col)?,
            None => col,
        });
    }
    let shape = b.shape(x);
    match acc {
        Some(a) => b.reshape(a, shape),
        None => b.zeros_like(x),
    }
}

/// The adjoint of a `gather`'s table: `one_hot(indices)ᵀ · dy`, rows of `dy` added into the rows
/// they were read from (repeated indices accumulate).
fn gather_table(b: &mut Builder<'_>, table: Value, indices: Value, dy: Value) -> Result<Value, AutodiffError> {
    let table_shape = b.shape(table);
    let Some(&Dim::Fixed(rows)) = table_shape.dims().first() else {
        return Err(unsupported(b, "a gather from a table without a fixed number of rows"));
    };
    let row: Option<usize> = table_shape.dims()[1..].iter().map(|d| d.fixed()).product();
    let Some(row) = row else {
        return Err(unsupported(b, "a gather from a table with T-dependent rows"));
    };
    let hot = b.op(Op::OneHot { depth: rows }, &[indices])?;
    let hot = b.rows(hot)?;
    let picks = b.shape(hot).dims()[0];
    let dy2 = b.reshape(dy, Shape::new([picks, Dim::Fixed(row)]))?;
    let hot_t = b.transpose(hot, &[1, 0])?;
    let grad = b.matmul(hot_t, dy2, false)?;
    b.reshape(grad, table_shape)
}
