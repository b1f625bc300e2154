//! The closed set of primitive operations.
//!
//! Everything a model does is built from these. Composite operations (layer norm, silu, softplus,
//! token shift, causal convolution, ...) are written in the spec prelude from primitives and are
//! recovered later by fusion. Each op's type rule lives in [`crate::infer`]; the set is kept small
//! so that every later consumer (interpreter, JIT, autodiff, quantization) handles it with an
//! exhaustive `match`.

use crate::graph::Graph;
use crate::kernel::Kernel;
use crate::types::{Dim, Shape};
use smallvec::SmallVec;
use std::fmt;

/// A primitive operation. Operands are the node's incoming edges, ordered by slot.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A value supplied by the caller: token ids, a weight, a carried state or a scan argument.
    /// Its type is declared, not inferred.
    Input(Param),
    /// A scalar `f32` constant (shape `[]`); broadcast it to use it with tensors.
    Constant(f32),
    /// Elementwise `f32 -> f32`.
    Unary(UnaryOp),
    /// Elementwise over two operands of the same type.
    Binary(BinaryOp),
    /// Elementwise comparison of two `f32` operands of one shape, giving `bool`.
    Compare(CompareOp),
    /// `select(cond, a, b)`: elementwise `cond ? a : b`; all three share one shape.
    Select,
    /// Reduction along one axis, which is kept with size 1.
    Reduce { op: ReduceOp, axis: usize },
    /// Matrix product of `lhs: [.., M, K]` with a rank-2 `rhs: [K, N]`, or `[N, K]` when
    /// `transpose_rhs` (the layout of a `Linear` weight): `lhs · rhsᵀ`.
    MatMul { transpose_rhs: bool },
    /// Same elements, new shape (row-major order); the element count must agree for every `T`.
    Reshape(Shape),
    /// Numpy-style broadcast: dimensions align at the right, size-1 dimensions stretch and
    /// missing leading dimensions are added.
    Broadcast(Shape),
    /// Axis permutation: output axis `i` is input axis `perm[i]`.
    Transpose(SmallVec<[usize; 4]>),
    /// Elements `start..end` along `axis`.
    Slice { axis: usize, start: Dim, end: Dim },
    /// Concatenation of all operands along `axis`.
    Concat { axis: usize },
    /// Sliding windows: `[.., N, ..]` becomes `[.., N - size + 1, size, ..]`, window `w`
    /// holding elements `w .. w + size` of `axis`.
    Unfold { axis: usize, size: usize },
    /// `gather(table, indices)`: rows of `table: [V, ..]` picked by `indices: i64[..]`,
    /// giving `[indices.., ..]`. An index outside `0..V` is an execution error.
    Gather,
    /// `one_hot(indices)`: `i64[..]` becomes `f32[.., depth]`, 1 at each index and 0 elsewhere.
    /// A negative index gives a row of zeros (an ignored target, like transformers' `-100`); an
    /// index at or past `depth` is an execution error. Losses pick target log-probabilities with
    /// it, and the gradient of `gather` scatters through it.
    OneHot { depth: usize },
    /// A loop over the leading axis of its sequence operands with carried values; see [`Scan`].
    Scan(Box<Scan>),
    /// Elementwise ops and last-axis reductions fused into one loop nest; see [`Kernel`].
    /// Made by the fusion passes, never by front ends.
    Fused(Box<Kernel>),
    /// A matrix product whose rows go straight through an epilogue kernel (bias, activation,
    /// residual, gating): operand 0 and 1 are the product's, the epilogue reads the product as
    /// its operand 0 and the node's operands 2.. as its operands 1.., and the node's results
    /// are the epilogue's.
    FusedMatMul { transpose_rhs: bool, epilogue: Box<Kernel> },
}

/// A recurrence over time. Operands: `carries` initial carries, then `sequences` tensors whose
/// leading axis (the same length for all, usually `T`) is iterated, then `constants` closed-over
/// values. The body graph takes the same operands with the leading axis of the sequences
/// removed, and returns the new carries followed by the per-step outputs. The scan node's results
/// are the final carries followed by the per-step outputs stacked along a new leading axis.
/// `reverse` iterates from the last step to the first (reverse-mode autodiff needs it).
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    pub body: Graph,
    pub carries: usize,
    pub sequences: usize,
    pub constants: usize,
    pub reverse: bool,
}

/// What a graph input stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub role: ParamRole,
    /// Weight tensor name in the checkpoint, state name, or argument name.
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamRole {
    /// The token ids of the call (`i64[T]`).
    Tokens,
    /// A tensor loaded from the checkpoint by name.
    Weight,
    /// A recurrent state carried between calls; `init` fills it before the first call. The graph
    /// returns the state's next value as an output of the same name.
    State { init: f32 },
    /// The `index`-th argument of a scan body.
    Argument { index: usize },
    /// The adjoint of the graph output of the same name, supplied by the caller: a backward
    /// graph run in pieces (chunked backpropagation through time) receives the adjoint of its
    /// next state from the piece after it this way.
    Cotangent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Log1p,
    Sqrt,
    Recip,
    Tanh,
    Abs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 8] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Log1p,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Abs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Abs => "abs",
        }
    }

    /// The reference semantics, shared by every backend's scalar path.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Abs => x.abs(),
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 7] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
        }
    }

    /// The reference semantics. `max`/`min` propagate NaN, like torch.
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            BinaryOp::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            BinaryOp::Pow => a.powf(b),
        }
    }
}

impl CompareOp {
    pub const ALL: [CompareOp; 6] =
        [CompareOp::Lt, CompareOp::Le, CompareOp::Gt, CompareOp::Ge, CompareOp::Eq, CompareOp::Ne];

    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
        }
    }

    pub fn apply(self, a: f32, b: f32) -> bool {
        match self {
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
        }
    }
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
        }
    }

    pub fn identity(self) -> f32 {
        match self {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f32::NEG_INFINITY,
        }
    }
}

impl Op {
    /// The mnemonic used in the text dump.
    pub fn mnemonic(&self) -> String {
        match self {
            Op::Input(p) => match p.role {
                ParamRole::Tokens => "tokens".into(),
                ParamRole::Weight => "weight".into(),
                ParamRole::State { .. } => "state".into(),
                ParamRole::Argument { .. } => "arg".into(),
                ParamRole::Cotangent => "cotangent".into(),
            },
            Op::Constant(_) => "const".into(),
            Op::Unary(u) => u.name().into(),
            Op::Binary(b) => b.name().into(),
            Op::Compare(c) => format!("cmp.{}", c.name()),
            Op::Select => "select".into(),
            Op::Reduce { op, .. } => format!("reduce.{}", op.name()),
            Op::MatMul { .. } => "matmul".into(),
            Op::Reshape(_) => "reshape".into(),
            Op::Broadcast(_) => "broadcast".into(),
            Op::Transpose(_) => "transpose".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Unfold { .. } => "unfold".into(),
            Op::Gather => "gather".into(),
            Op::OneHot { .. } => "one_hot".into(),
            Op::Scan(s) => if s.reverse { "scan.reverse" } else { "scan" }.into(),
            Op::Fused(_) => "fused".into(),
            Op::FusedMatMul { .. } => "matmul.fused".into(),
        }
    }

    /// Whether the op reads nothing but its operands and has one result per element position
    /// (the candidates for elementwise fusion).
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select)
    }
}

/// Formats the attributes of an op as they appear in braces in the dump (empty if none).
pub(crate) struct Attributes<'a>(pub &'a Op);

impl fmt::Display for Attributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Input(p) => match p.role {
                ParamRole::State { init } => write!(f, " {{init = {init:?}}}"),
                ParamRole::Argument { index } => write!(f, " {{index = {index}}}"),
                _ => Ok(()),
            },
            Op::Reduce { axis, .. } => write!(f, " {{axis = {axis}}}"),
            Op::MatMul { transpose_rhs: true } => f.write_str(" {transpose_rhs}"),
            Op::Reshape(s) | Op::Broadcast(s) => write!(f, " {{shape = {s}}}"),
            Op::Transpose(p) => write!(f, " {{perm = {p:?}}}"),
            Op::Slice { axis, start, end } => {
                write!(f, " {{axis = {axis}, start = {start}, end = {end}}}")
            }
            Op::Concat { axis } => write!(f, " {{axis = {axis}}}"),
            Op::Unfold { axis, size } => write!(f, " {{axis = {axis}, size = {size}}}"),
            Op::OneHot { depth } => write!(f, " {{depth = {depth}}}"),
            Op::Scan(s) => {
                write!(f, " {{carries = {}, sequences = {}, constants = {}}}", s.carries, s.sequences, s.constants)
            }
            _ => Ok(()),
        }
    }
}
