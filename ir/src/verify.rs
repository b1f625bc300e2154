//! The verifier: checks a whole graph and collects every error, each naming the node and the
//! spec location it came from.
//!
//! It checks that the graph is acyclic, that operand slots are dense, that every node's recorded
//! result types are what its op's type rule gives for its operands, that inputs are declared
//! consistently (tokens are `i64[T]`, every state input has a state output of the same name and
//! type), that outputs name existing values, and it verifies scan bodies recursively. Passes
//! run it after every transformation in tests; a graph that passes is trusted by the backends.

use crate::graph::{Graph, NodeId, Origin, OutputRole};
use crate::infer::{infer, TypeError};
use crate::op::{Op, ParamRole};
use crate::types::{DType, Dim, Shape, Type};
use smallvec::SmallVec;
use std::fmt;
use thiserror::Error;

/// One problem found by the verifier.
#[derive(Clone, Debug, PartialEq, Error)]
pub struct VerifyError {
    /// Path of scan nodes leading to the graph that holds the failing node, outermost first.
    pub scope: Vec<NodeId>,
    pub node: Option<NodeId>,
    pub origin: Option<Origin>,
    pub kind: VerifyErrorKind,
}

#[derive(Clone, Debug, PartialEq, Error)]
pub enum VerifyErrorKind {
    #[error("node is part of a cycle")]
    Cycle,
    #[error("operand slots are not 0..{0}")]
    Slots(usize),
    #[error(transparent)]
    Type(#[from] TypeError),
    #[error("records result types ({recorded}) but its operands give ({inferred})")]
    ResultTypes { recorded: String, inferred: String },
    #[error("the token input must be i64[T], found {0}")]
    Tokens(Type),
    #[error("state `{name}` is an input of type {input} but {output}")]
    State { name: String, input: String, output: String },
    #[error("output `{0}` names a value that does not exist")]
    DanglingOutput(String),
    #[error("input node is not listed among the graph's inputs")]
    UnlistedInput,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.scope {
            write!(f, "in scan %{}: ", s.index())?;
        }
        if let Some(n) = self.node {
            write!(f, "%{}", n.index())?;
            if let Some(o) = &self.origin {
                write!(f, " ({o})")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// Every error the verifier found (never empty).
#[derive(Clone, Debug, PartialEq, Error)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the graph is invalid ({} error(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Verifies `graph`, returning every error found.
pub fn verify(graph: &Graph) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    verify_into(graph, &[], &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(errors))
    }
}

fn verify_into(graph: &Graph, scope: &[NodeId], errors: &mut Vec<VerifyError>) {
    let mut report = |node: Option<NodeId>, kind: VerifyErrorKind| {
        let origin = node.and_then(|n| graph.node(n).origin.clone());
        errors.push(VerifyError { scope: scope.to_vec(), node, origin, kind });
    };
    if let Err(cycle) = graph.topo_order() {
        for n in cycle {
            report(Some(n), VerifyErrorKind::Cycle);
        }
        return;
    }
    let mut nested = Vec::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let operands = graph.operands(id);
        let slots: SmallVec<[u16; 4]> =
            graph.petgraph().edges_directed(id, petgraph::Direction::Incoming).map(|e| e.weight().slot).collect();
        let mut sorted = slots.clone();
        sorted.sort_unstable();
        if sorted.iter().enumerate().any(|(i, &s)| s as usize != i) {
            report(Some(id), VerifyErrorKind::Slots(operands.len()));
            continue;
        }
        if let Op::Input(p) = &node.op {
            if !graph.inputs().contains(&id) {
                report(Some(id), VerifyErrorKind::UnlistedInput);
            }
            let tokens = Type::new(DType::I64, Shape::new([Dim::T]));
            if p.role == ParamRole::Tokens && node.results.as_slice() != [tokens] {
                report(Some(id), VerifyErrorKind::Tokens(node.results[0].clone()));
            }
            continue;
        }
        let types: SmallVec<[&Type; 4]> = operands.iter().map(|v| graph.value_type(*v)).collect();
        match infer(&node.op, &types) {
            Err(e) => report(Some(id), e.into()),
            Ok(inferred) if inferred != node.results => report(
                Some(id),
                VerifyErrorKind::ResultTypes { recorded: list(&node.results), inferred: list(&inferred) },
            ),
            Ok(_) => {}
        }
        if let Op::Scan(scan) = &node.op {
            nested.push((id, &scan.body));
        }
    }
    for o in graph.outputs() {
        let exists = graph.contains(o.value.node) && (o.value.result as usize) < graph.node(o.value.node).results.len();
        if !exists {
            report(None, VerifyErrorKind::DanglingOutput(o.name.clone()));
        }
    }
    for &id in graph.inputs() {
        let Some(p) = graph.param(id) else { continue };
        if !matches!(p.role, ParamRole::State { .. }) {
            continue;
        }
        let input = graph.node(id).results[0].to_string();
        let output = match graph.outputs().iter().find(|o| o.role == OutputRole::State && o.name == p.name) {
            None => "the graph has no state output of that name".to_string(),
            Some(o) if graph.contains(o.value.node) && graph.value_type(o.value).to_string() != input => {
                format!("its next value is {}", graph.value_type(o.value))
            }
            Some(_) => continue,
        };
        report(Some(id), VerifyErrorKind::State { name: p.name.clone(), input, output });
    }
    for o in graph.outputs().iter().filter(|o| o.role == OutputRole::State) {
        let has_input = graph.inputs().iter().any(|&i| graph.param(i).is_some_and(|p| p.name == o.name));
        if !has_input {
            report(
                None,
                VerifyErrorKind::State {
                    name: o.name.clone(),
                    input: "missing".into(),
                    output: "the graph returns a next value for it".into(),
                },
            );
        }
    }
    for (id, body) in nested {
        let mut inner = scope.to_vec();
        inner.push(id);
        verify_into(body, &inner, errors);
    }
}

fn list(types: &[Type]) -> String {
    types.iter().map(Type::to_string).collect::<Vec<_>>().join(", ")
}
