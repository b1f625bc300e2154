//! The verifier: checks a whole graph and collects every error, each naming the node and the
//! spec location it came from.
//!
//! It checks that the graph is acyclic, that operand slots are dense, that every node's recorded
//! result types are what its op's type rule gives for its operands, that inputs are declared
//! consistently (tokens are `i64[T]`, every state input has a state output of the same name and
//! type), that outputs name existing values, that scan bodies take only arguments numbered by
//! position (and top-level graphs none), and it verifies scan bodies recursively. Passes
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
    #[error("the graph returns a next value for state `{0}`, which is not one of its inputs")]
    OrphanState(String),
    #[error("output `{0}` names a value that does not exist")]
    DanglingOutput(String),
    #[error("input node is not listed among the graph's inputs")]
    UnlistedInput,
    #[error("scan argument declares index {index} but is argument {position} of its body")]
    ArgumentIndex { index: usize, position: usize },
    #[error("a {role} input cannot appear in {context}")]
    InputRole { role: &'static str, context: &'static str },
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
    for &id in graph.inputs() {
        if let Some(p) = graph.param(id).filter(|p| matches!(p.role, ParamRole::Argument { .. })) {
            let kind = VerifyErrorKind::InputRole { role: role_name(p.role), context: "a top-level graph" };
            errors.push(VerifyError { scope: Vec::new(), node: Some(id), origin: graph.node(id).origin.clone(), kind });
        }
    }
    verify_into(graph, &[], &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(errors))
    }
}

/// Verifies the body of a scan: only argument inputs, numbered by position.
fn verify_body(graph: &Graph, scope: &[NodeId], errors: &mut Vec<VerifyError>) {
    for (position, &id) in graph.inputs().iter().enumerate() {
        let Some(p) = graph.param(id) else { continue };
        let kind = match p.role {
            ParamRole::Argument { index } if index == position => continue,
            ParamRole::Argument { index } => VerifyErrorKind::ArgumentIndex { index, position },
            other => VerifyErrorKind::InputRole { role: role_name(other), context: "a scan body" },
        };
        let origin = graph.node(id).origin.clone();
        errors.push(VerifyError { scope: scope.to_vec(), node: Some(id), origin, kind });
    }
    verify_into(graph, scope, errors);
}

fn role_name(role: ParamRole) -> &'static str {
    match role {
        ParamRole::Tokens => "token",
        ParamRole::Weight => "weight",
        ParamRole::State { .. } => "state",
        ParamRole::Argument { .. } => "scan argument",
        ParamRole::Cotangent => "cotangent",
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
            report(None, VerifyErrorKind::OrphanState(o.name.clone()));
        }
    }
    for (id, body) in nested {
        let mut inner = scope.to_vec();
        inner.push(id);
        verify_body(body, &inner, errors);
    }
}

fn list(types: &[Type]) -> String {
    types.iter().map(Type::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{BinaryOp, Op, Param, Scan};
    use crate::types::Shape;

    fn arg(g: &mut Graph, index: usize, name: &str) -> crate::Value {
        g.add_input(
            Param { role: ParamRole::Argument { index }, name: name.into() },
            Type::f32(Shape::fixed(&[2])),
            None,
        )
    }

    #[test]
    fn collects_every_error_with_its_node() {
        let mut body = Graph::new("step");
        let a = arg(&mut body, 1, "a");
        let b = arg(&mut body, 0, "b");
        let sum = body.add1(Op::Binary(BinaryOp::Add), &[a, b], None).unwrap();
        body.add_output("a", sum, OutputRole::Result);
        let mut g = Graph::new("top");
        let stray = arg(&mut g, 0, "stray");
        let xs =
            g.add_input(Param { role: ParamRole::Weight, name: "xs".into() }, Type::f32(Shape::fixed(&[5, 2])), None);
        let scan = Scan { body, carries: 1, sequences: 1, constants: 0, reverse: false };
        let node = g.add(Op::Scan(Box::new(scan)), &[stray, xs], None).unwrap();
        g.add_output("y", crate::Value::new(node, 0), OutputRole::Result);
        g.add_output("ghost", crate::Value::new(node, 7), OutputRole::State);
        let errors = verify(&g).unwrap_err().to_string();
        assert!(errors.contains("%0: a scan argument input cannot appear in a top-level graph"), "{errors}");
        assert!(
            errors.contains("in scan %2: %0: scan argument declares index 1 but is argument 0 of its body"),
            "{errors}"
        );
        assert!(errors.contains("output `ghost` names a value that does not exist"), "{errors}");
        assert!(errors.contains("state `ghost`, which is not one of its inputs"), "{errors}");
        assert!(errors.contains("(5 error(s))"), "{errors}");
    }
}
