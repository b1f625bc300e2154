//! Reverse-mode automatic differentiation over the IR.
//!
//! [`backprop`] appends to a graph the adjoints (gradients) of chosen values with respect to
//! seeds given for others: it walks the nodes that both depend on a chosen value and feed a
//! seeded one in reverse topological order, applying each primitive's rule ([`rules`], an
//! exhaustive `match` over [`Op`]) and summing the contributions of every use. Scans get a
//! reverse scan over saved carries ([`scan`]). [`autodiff`] uses it to add `grad.<weight>`
//! outputs for a scalar loss, and [`training_graph`] builds the whole training step of a model:
//! the forward graph, the mean next-token cross-entropy ([`loss`]) and the gradients.
//!
//! Guarantees: the result is ordinary IR built from primitives (no new ops besides the forward
//! ones and `one_hot`), so it is verified, simplified, fused and memory-planned like any graph;
//! a value no chosen input reaches gets no backward node; every node added carries the origin of
//! the forward node it differentiates. Differentiate before the fusion passes: fused kernels
//! have no rules.

mod build;
pub mod chunked;
pub mod loss;
mod rules;
mod scan;

use build::Builder;
use kiln_ir::{DType, Graph, NodeId, Op, OutputRole, ParamRole, TypeError, Value};
use rules::Site;
use std::collections::BTreeMap;
use thiserror::Error;

pub use chunked::chunk_training_graph;
pub use loss::{cross_entropy_sum, next_token_cross_entropy};

/// Why a graph could not be differentiated.
#[derive(Debug, Error)]
pub enum AutodiffError {
    #[error("the gradient of node %{} does not type-check: {source}", .node.index())]
    Type { node: NodeId, source: TypeError },
    #[error("node %{}: cannot differentiate {what}", .node.index())]
    Unsupported { node: NodeId, what: String },
    #[error("the graph has no output named `{0}`")]
    NoOutput(String),
    #[error("the loss `{name}` must be an f32 scalar, it is {found}")]
    NotScalar { name: String, found: String },
    #[error("the graph has no weight named `{0}`")]
    NoWeight(String),
    #[error("the graph has no token input to predict")]
    NoTokens,
    #[error("the graph has a cycle")]
    Cycle,
    #[error("internal autodiff error: {what}")]
    Internal { what: String },
}

/// Appends to `g` the adjoints of `wrt` given `seeds` (pairs of a value and its adjoint, of the
/// value's type). Returns one adjoint per `wrt` value, `None` where no seeded value depends on it.
pub fn backprop(g: &mut Graph, seeds: &[(Value, Value)], wrt: &[Value]) -> Result<Vec<Option<Value>>, AutodiffError> {
    let order = g.topo_order().map_err(|_| AutodiffError::Cycle)?;
    let bound = order.iter().map(|n| n.index() + 1).max().unwrap_or(0);

    // Nodes that depend on a chosen value, and nodes that feed a seeded one.
    let mut depends = vec![false; bound];
    for w in wrt {
        depends[w.node.index()] = true;
    }
    for &id in &order {
        if !depends[id.index()] && g.operands(id).iter().any(|v| depends[v.node.index()]) {
            depends[id.index()] = true;
        }
    }
    let mut feeds = vec![false; bound];
    for (v, _) in seeds {
        feeds[v.node.index()] = true;
    }
    for &id in order.iter().rev() {
        if feeds[id.index()] {
            for v in g.operands(id) {
                feeds[v.node.index()] = true;
            }
        }
    }

    let mut adjoints: BTreeMap<Value, Value> = BTreeMap::new();
    for &(v, d) in seeds {
        accumulate(g, &mut adjoints, v, d)?;
    }
    for &id in order.iter().rev() {
        if !(depends[id.index()] && feeds[id.index()]) || matches!(g.node(id).op, Op::Input(_)) {
            continue;
        }
        let results = g.node(id).results.len();
        let dys: Vec<Option<Value>> = (0..results).map(|r| adjoints.get(&Value::new(id, r as u16)).copied()).collect();
        if dys.iter().all(Option::is_none) {
            continue;
        }
        let operands = g.operands(id);
        let wanted: Vec<bool> =
            operands.iter().map(|&v| depends[v.node.index()] && g.value_type(v).dtype == DType::F32).collect();
        if !wanted.contains(&true) {
            continue;
        }
        let op = g.node(id).op.clone();
        let contributions = match &op {
            Op::Scan(s) => scan::adjoints(g, id, s, &operands, &dys, &wanted)?,
            _ => {
                let Some(dy) = dys[0] else { continue };
                let mut b = Builder::new(g, id);
                let site = Site { operands: &operands, result: Value::from(id), dy, wanted: &wanted };
                rules::operand_adjoints(&mut b, &op, &site)?
            }
        };
        for (&v, d) in operands.iter().zip(contributions) {
            if let Some(d) = d {
                accumulate(g, &mut adjoints, v, d)?;
            }
        }
    }
    Ok(wrt.iter().map(|w| adjoints.get(w).copied()).collect())
}

/// Adds `d` to the adjoint of `v`.
fn accumulate(g: &mut Graph, adjoints: &mut BTreeMap<Value, Value>, v: Value, d: Value) -> Result<(), AutodiffError> {
    let total = match adjoints.get(&v) {
        Some(&prev) => Builder::new(g, v.node).add(prev, d)?,
        None => d,
    };
    adjoints.insert(v, total);
    Ok(())
}

/// Adds a `grad.<name>` output to `graph` for each weight in `wrt`: the gradient of the scalar
/// output `loss`. A weight the loss does not depend on gets zeros.
pub fn autodiff(graph: &mut Graph, loss: &str, wrt: &[String]) -> Result<(), AutodiffError> {
    let loss_value = graph.output(loss).ok_or_else(|| AutodiffError::NoOutput(loss.into()))?.value;
    let ty = graph.value_type(loss_value);
    if ty.dtype != DType::F32 || ty.shape.rank() != 0 {
        return Err(AutodiffError::NotScalar { name: loss.into(), found: ty.to_string() });
    }
    let mut weights = Vec::with_capacity(wrt.len());
    for name in wrt {
        let input = graph
            .inputs()
            .iter()
            .copied()
            .find(|&n| graph.param(n).is_some_and(|p| p.role == ParamRole::Weight && p.name == *name))
            .ok_or_else(|| AutodiffError::NoWeight(name.clone()))?;
        weights.push(Value::from(input));
    }
    let one = graph.constant(1.0, graph.node(loss_value.node).origin.clone());
    let grads = backprop(graph, &[(loss_value, one)], &weights)?;
    for ((name, grad), w) in wrt.iter().zip(grads).zip(weights) {
        let grad = match grad {
            Some(g) => g,
            None => Builder::new(graph, w.node).zeros_like(w)?,
        };
        graph.add_output(format!("grad.{name}"), grad, OutputRole::Result);
    }
    Ok(())
}

/// The training step of a model graph: its `logits` output scored by the mean next-token
/// cross-entropy of its token input (transformers' `labels = input_ids`), with a `loss` output
/// and a `grad.<name>` output for each weight in `wrt`; the model's other outputs (logits,
/// next states) are dropped. Run it through the default pipeline like any graph.
pub fn training_graph(forward: &Graph, wrt: &[String]) -> Result<Graph, AutodiffError> {
    let mut g = loss_graph(forward)?;
    autodiff(&mut g, "loss", wrt)?;
    g.retain_outputs(|o| o.name == "loss" || o.name.starts_with("grad."));
    Ok(g)
}

/// The forward graph with only a `loss` output (validation).
pub fn loss_graph(forward: &Graph) -> Result<Graph, AutodiffError> {
    let mut g = forward.clone();
    let _ = g.take_plan();
    let logits = g.output("logits").ok_or_else(|| AutodiffError::NoOutput("logits".into()))?.value;
    let tokens = g
        .inputs()
        .iter()
        .copied()
        .find(|&n| g.param(n).is_some_and(|p| p.role == ParamRole::Tokens))
        .ok_or(AutodiffError::NoTokens)?;
    start_from_initial_states(&mut g)?;
    let loss = next_token_cross_entropy(&mut g, logits, Value::from(tokens))?;
    g.add_output("loss", loss, OutputRole::Result);
    g.retain_outputs(|o| o.name == "loss");
    g.name = format!("{}.train", forward.name);
    Ok(g)
}

/// Replaces every state input by its declared initial value: a training sequence is scored from
/// a fresh state, as transformers does, and the state's next value is not an output.
fn start_from_initial_states(g: &mut Graph) -> Result<(), AutodiffError> {
    let states: Vec<(NodeId, f32)> = g
        .inputs()
        .iter()
        .filter_map(|&n| match g.param(n).map(|p| p.role) {
            Some(ParamRole::State { init }) => Some((n, init)),
            _ => None,
        })
        .collect();
    for (input, init) in states {
        let shape = g.node(input).results[0].shape.clone();
        let fill = Builder::new(g, input).fill(init, shape)?;
        g.replace_all_uses(Value::from(input), fill);
        g.remove_node(input);
    }
    g.retain_outputs(|o| o.role != OutputRole::State);
    Ok(())
}

#[cfg(test)]
mod tests;
