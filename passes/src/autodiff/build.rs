//! A small builder that adds the nodes of gradient rules to a graph: every node it adds carries
//! the origin of the forward node being differentiated, so a shape error in the backward graph,
//! and every line of its dump, points at the spec line whose derivative it is.

use super::AutodiffError;
use kiln_ir::{BinaryOp, CompareOp, Dim, Graph, NodeId, Op, Origin, ReduceOp, Shape, UnaryOp, Value};

/// Adds nodes to `g` on behalf of the forward node `of`.
pub(crate) struct Builder<'g> {
    pub g: &'g mut Graph,
    of: NodeId,
    origin: Option<Origin>,
}

impl<'g> Builder<'g> {
    pub fn new(g: &'g mut Graph, of: NodeId) -> Builder<'g> {
        let origin = g.node(of).origin.clone();
        Builder { g, of, origin }
    }

    /// The forward node whose derivative is being built.
    pub fn node(&self) -> NodeId {
        self.of
    }

    pub fn shape(&self, v: Value) -> Shape {
        self.g.value_type(v).shape.clone()
    }

    pub fn op(&mut self, op: Op, operands: &[Value]) -> Result<Value, AutodiffError> {
        let of = self.of;
        self.g.add1(op, operands, self.origin.clone()).map_err(|source| AutodiffError::Type { node: of, source })
    }

    /// A tensor of `shape` filled with `c`.
    pub fn fill(&mut self, c: f32, shape: Shape) -> Result<Value, AutodiffError> {
        let scalar = self.g.constant(c, self.origin.clone());
        if shape.rank() == 0 {
            return Ok(scalar);
        }
        self.op(Op::Broadcast(shape), &[scalar])
    }

    /// Zeros shaped like `v`.
    pub fn zeros_like(&mut self, v: Value) -> Result<Value, AutodiffError> {
        let shape = self.shape(v);
        self.fill(0.0, shape)
    }

    pub fn unary(&mut self, u: UnaryOp, x: Value) -> Result<Value, AutodiffError> {
        self.op(Op::Unary(u), &[x])
    }

    pub fn binary(&mut self, b: BinaryOp, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.op(Op::Binary(b), &[x, y])
    }

    pub fn add(&mut self, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.binary(BinaryOp::Add, x, y)
    }

    pub fn sub(&mut self, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.binary(BinaryOp::Sub, x, y)
    }

    pub fn mul(&mut self, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.binary(BinaryOp::Mul, x, y)
    }

    pub fn div(&mut self, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.binary(BinaryOp::Div, x, y)
    }

    pub fn neg(&mut self, x: Value) -> Result<Value, AutodiffError> {
        self.unary(UnaryOp::Neg, x)
    }

    /// `x * c` for a scalar `c`.
    pub fn scale(&mut self, x: Value, c: f32) -> Result<Value, AutodiffError> {
        let shape = self.shape(x);
        let c = self.fill(c, shape)?;
        self.mul(x, c)
    }

    /// `c - x` for a scalar `c`.
    pub fn rsub(&mut self, c: f32, x: Value) -> Result<Value, AutodiffError> {
        let shape = self.shape(x);
        let c = self.fill(c, shape)?;
        self.sub(c, x)
    }

    pub fn compare(&mut self, c: CompareOp, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.op(Op::Compare(c), &[x, y])
    }

    pub fn select(&mut self, cond: Value, x: Value, y: Value) -> Result<Value, AutodiffError> {
        self.op(Op::Select, &[cond, x, y])
    }

    /// `cond ? x : 0`.
    pub fn mask(&mut self, cond: Value, x: Value) -> Result<Value, AutodiffError> {
        let zero = self.zeros_like(x)?;
        self.select(cond, x, zero)
    }

    pub fn sum(&mut self, x: Value, axis: usize) -> Result<Value, AutodiffError> {
        self.op(Op::Reduce { op: ReduceOp::Sum, axis }, &[x])
    }

    pub fn broadcast(&mut self, x: Value, shape: Shape) -> Result<Value, AutodiffError> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.op(Op::Broadcast(shape), &[x])
    }

    pub fn reshape(&mut self, x: Value, shape: Shape) -> Result<Value, AutodiffError> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.op(Op::Reshape(shape), &[x])
    }

    pub fn transpose(&mut self, x: Value, perm: &[usize]) -> Result<Value, AutodiffError> {
        self.op(Op::Transpose(perm.iter().copied().collect()), &[x])
    }

    pub fn slice(&mut self, x: Value, axis: usize, start: Dim, end: Dim) -> Result<Value, AutodiffError> {
        self.op(Op::Slice { axis, start, end }, &[x])
    }

    pub fn matmul(&mut self, x: Value, w: Value, transpose_rhs: bool) -> Result<Value, AutodiffError> {
        self.op(Op::MatMul { transpose_rhs }, &[x, w])
    }

    /// `x` with `before` zeros ahead of it and `after` zeros behind it along `axis`; empty
    /// fixed pieces are left out.
    pub fn pad(&mut self, x: Value, axis: usize, before: Dim, after: Dim) -> Result<Value, AutodiffError> {
        let shape = self.shape(x);
        let mut pieces: Vec<Value> = Vec::with_capacity(3);
        for (len, is_x) in [(before, false), (Dim::Fixed(0), true), (after, false)] {
            if is_x {
                pieces.push(x);
            } else if len != Dim::Fixed(0) {
                let mut dims = shape.0.clone();
                dims[axis] = len;
                pieces.push(self.fill(0.0, Shape(dims))?);
            }
        }
        if pieces.len() == 1 {
            return Ok(x);
        }
        self.op(Op::Concat { axis }, &pieces)
    }

    /// Sums `dy` (shaped like a broadcast's result) back down to `to`, the broadcast's operand
    /// shape: over the added leading axes and over every axis that was stretched from 1.
    pub fn unbroadcast(&mut self, dy: Value, to: &Shape) -> Result<Value, AutodiffError> {
        let from = self.shape(dy);
        let extra = from.rank() - to.rank();
        let mut acc = dy;
        for axis in 0..from.rank() {
            let stretched =
                axis < extra || (to.dims()[axis - extra] == Dim::Fixed(1) && from.dims()[axis] != Dim::Fixed(1));
            if stretched {
                acc = self.sum(acc, axis)?;
            }
        }
        self.reshape(acc, to.clone())
    }

    /// `x` viewed as a matrix `[rows, last]`: the leading axes merged, which needs them to be all
    /// fixed or a single `T`-dependent axis among ones.
    pub fn rows(&mut self, x: Value) -> Result<Value, AutodiffError> {
        let shape = self.shape(x);
        if shape.rank() == 2 {
            return Ok(x);
        }
        let Some((&last, lead)) = shape.dims().split_last() else {
            return Err(AutodiffError::Unsupported { node: self.of, what: "a matrix product of a scalar".into() });
        };
        let mut rows = Dim::Fixed(1);
        for &d in lead {
            rows = match (rows, d) {
                (Dim::Fixed(a), Dim::Fixed(b)) => Dim::Fixed(a * b),
                (Dim::Fixed(1), s) | (s, Dim::Fixed(1)) => s,
                _ => {
                    return Err(AutodiffError::Unsupported {
                        node: self.of,
                        what: format!("merging the leading axes of {shape} into rows"),
                    })
                }
            };
        }
        self.reshape(x, Shape::new([rows, last]))
    }
}
