//! Everything that can go wrong when a backend executes a graph.
//!
//! Errors about the call itself (input count, input types, the sequence length `T`) name the input
//! by position and parameter name. Errors inside the graph name the node (`%N`), the spec location
//! it came from when known, and the scan nodes and steps that lead to it, outermost first, in the
//! same style as the verifier. Every message is one line.

use crate::tensor::TensorType;
use kiln_ir::{DType, Dim, NodeId, Origin, Shape, Type};
use std::fmt;
use thiserror::Error;

/// One enclosing scan: its node in the outer graph and the step being run (`None` when the error
/// was found before running, e.g. while planning the body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanFrame {
    pub node: NodeId,
    pub step: Option<usize>,
}

/// The path of enclosing scans, outermost first; empty at the top level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(pub Vec<ScanFrame>);

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for frame in &self.0 {
            write!(f, "in scan %{}", frame.node.index())?;
            if let Some(step) = frame.step {
                write!(f, " at step {step}")?;
            }
            f.write_str(": ")?;
        }
        Ok(())
    }
}

/// A node of a (possibly nested) graph, with its spec location.
#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    pub scope: Scope,
    pub node: NodeId,
    pub origin: Option<Origin>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%{}", self.scope, self.node.index())?;
        if let Some(o) = &self.origin {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

/// An execution error.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ExecError {
    #[error("the graph takes {expected} input(s), got {found}")]
    InputCount { expected: usize, found: usize },

    #[error(
        "input {index} `{name}` is {found} but the graph declares {declared}{}",
        resolved_suffix(declared, *t)
    )]
    InputType {
        index: usize,
        name: String,
        found: TensorType,
        declared: Box<Type>,
        /// The sequence length of the call, when it is known.
        t: Option<usize>,
    },

    #[error(
        "input {index} `{name}` is {found:?}, which makes T = {t} for its declared shape \
         {declared}, but a call needs T >= 1"
    )]
    SeqLen { index: usize, name: String, found: Vec<usize>, declared: Box<Shape>, t: i64 },

    #[error("shape {shape:?} holds {} elements but the {dtype} data has {len}", count(shape))]
    ElementCount { shape: Vec<usize>, dtype: DType, len: usize },

    #[error("{scope}the graph has a cycle through {}", node_list(nodes))]
    Cycle { scope: Scope, nodes: Vec<NodeId> },

    #[error("{scope}output `{name}` names a value that does not exist")]
    DanglingOutput { scope: Scope, name: String },

    #[error("{at}: {kind}")]
    Node { at: Box<Location>, kind: NodeErrorKind },

    /// The graph's memory plan does not fit it (a pass bug: plans are made for their graph and
    /// dropped when it changes).
    #[error(transparent)]
    Plan(#[from] kiln_ir::PlanError),
}

/// What went wrong at one node.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum NodeErrorKind {
    #[error("`{op}` takes {expected} operand(s), got {found}")]
    Arity { op: String, expected: String, found: usize },
    #[error("`{op}`: operand {slot} is {found}, expected {expected}")]
    DType { op: String, slot: usize, expected: DType, found: DType },
    #[error("`{op}` needs operands of one shape, got {lhs:?} and {rhs:?}")]
    ShapeMismatch { op: String, lhs: Vec<usize>, rhs: Vec<usize> },
    #[error("`{op}`: axis {axis} is out of range for rank {rank}")]
    Axis { op: String, axis: usize, rank: usize },
    #[error("dimension {dim} is negative for T = {t}")]
    NegativeDim { dim: Dim, t: usize },
    #[error("a result of shape {shape:?} would have too many elements")]
    TooLarge { shape: Vec<usize> },
    #[error("matmul: inner dimensions differ: {lhs:?} · {rhs:?}{}", if *transpose_rhs { "ᵀ" } else { "" })]
    MatMul { lhs: Vec<usize>, rhs: Vec<usize>, transpose_rhs: bool },
    #[error("reshape from {from:?} to {to:?} changes the number of elements")]
    Reshape { from: Vec<usize>, to: Vec<usize> },
    #[error("cannot broadcast {from:?} to {to:?}")]
    Broadcast { from: Vec<usize>, to: Vec<usize> },
    #[error("transpose: {perm:?} is not a permutation of {rank} axes")]
    Transpose { perm: Vec<usize>, rank: usize },
    #[error("slice {start}..{end} is not within an axis of size {size}")]
    Slice { start: usize, end: usize, size: usize },
    #[error("concat: {what}")]
    Concat { what: String },
    #[error("unfold: window {size} does not fit an axis of size {len}")]
    Unfold { size: usize, len: usize },
    #[error("gather: index {index} is out of range for a table of {size} rows")]
    GatherIndex { index: i64, size: usize },
    #[error("one_hot: index {index} is out of range for depth {depth}")]
    OneHotIndex { index: i64, depth: usize },
    #[error("scan: {what}")]
    Scan { what: String },
    #[error("input `{name}` is not bound: {what}")]
    Unbound { name: String, what: String },
    #[error("argument {index} `{name}` is {found} but the body declares {declared}")]
    Argument { index: usize, name: String, found: TensorType, declared: String },
    #[error("operand {operand} does not exist or was already freed")]
    Missing { operand: String },
    #[error("internal interpreter error: {what}")]
    Internal { what: String },
    #[error("compiled kernel: {what}")]
    Native { what: String },
    #[error("produced ({found}) but the graph records ({recorded}), i.e. ({resolved}) for T = {t}")]
    ResultType { found: String, recorded: String, resolved: String, t: usize },
}

impl ExecError {
    /// Places an error raised inside a scan body under that scan (outermost frames first).
    pub(crate) fn in_scan(mut self, node: NodeId, step: Option<usize>) -> ExecError {
        let frame = ScanFrame { node, step };
        match &mut self {
            ExecError::Cycle { scope, .. } | ExecError::DanglingOutput { scope, .. } => scope.0.insert(0, frame),
            ExecError::Node { at, .. } => at.scope.0.insert(0, frame),
            _ => {}
        }
        self
    }
}

/// ` (f32[3, 4] for T = 3)` when the declared type depends on a known `T`.
fn resolved_suffix(declared: &Type, t: Option<usize>) -> String {
    let resolved = t.filter(|_| declared.shape.depends_on_t()).and_then(|t| Some((t, declared.shape.resolve(t)?)));
    match resolved {
        Some((t, shape)) => format!(" ({}{:?} for T = {t})", declared.dtype, shape.as_slice()),
        None => String::new(),
    }
}

fn count(shape: &[usize]) -> String {
    match crate::tensor::numel(shape) {
        Some(n) => n.to_string(),
        None => "too many".into(),
    }
}

fn node_list(nodes: &[NodeId]) -> String {
    nodes.iter().map(|n| format!("%{}", n.index())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn node_errors_name_scope_node_and_origin() {
        let e = ExecError::Node {
            at: Box::new(Location {
                scope: Scope(vec![ScanFrame { node: NodeId::new(9), step: Some(3) }]),
                node: NodeId::new(4),
                origin: Some(Origin { file: Arc::from("m.toml"), line: 12, col: 5, context: None }),
            }),
            kind: NodeErrorKind::GatherIndex { index: 70, size: 64 },
        };
        assert_eq!(
            e.to_string(),
            "in scan %9 at step 3: %4 (m.toml:12:5): gather: index 70 is out of range for a \
             table of 64 rows"
        );
        let outer = e.in_scan(NodeId::new(1), Some(0));
        assert!(outer.to_string().starts_with("in scan %1 at step 0: in scan %9 at step 3: %4"));
    }

    #[test]
    fn errors_stay_small() {
        assert!(std::mem::size_of::<ExecError>() <= 128);
        assert!(std::mem::size_of::<NodeErrorKind>() <= 128);
    }

    #[test]
    fn input_type_mentions_resolved_declaration() {
        let e = ExecError::InputType {
            index: 0,
            name: "x".into(),
            found: TensorType { dtype: DType::F32, shape: vec![3, 5] },
            declared: Box::new(Type::f32(Shape::new([Dim::T, Dim::Fixed(4)]))),
            t: Some(3),
        };
        assert_eq!(e.to_string(), "input 0 `x` is f32[3, 5] but the graph declares f32[T, 4] (f32[3, 4] for T = 3)");
    }
}
