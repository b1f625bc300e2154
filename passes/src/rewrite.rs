//! The rewrite engine of the rule-table passes (`const-fold`, `algebraic`, `shape-fold`), after
//! tinygrad's pattern matchers: a pass is a table of named [`Rule`]s, each a short function that
//! looks at one node and may propose a [`Rewrite`]; [`fixpoint`] applies the first rule that
//! matches each live node, in topological order, round after round until nothing changes, in the
//! graph and in every scan body.
//!
//! Node ids stay comparable across a pass, so a dump before and a dump after line up: a
//! rewritten node keeps its id and origin, new nodes get fresh ids, and the nodes a rewrite
//! leaves unused are removed only at the end of the pass (so no id is reused within it). Only
//! nodes the pass itself made dead are removed, never inputs: anything else is `dead-code`'s.

use crate::PassError;
use kiln_ir::{BinaryOp, DType, Graph, NodeId, Op, UnaryOp, Value};
use petgraph::Direction;

/// One rewrite rule: `rewrite` looks at a live single-result node and proposes a replacement
/// that computes the same value bit for bit, or `None`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub rewrite: fn(&Graph, NodeId) -> Option<Rewrite>,
}

/// An operand of a rewritten node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Value(Value),
    /// A scalar constant, broadcast to the rewritten node's shape.
    Constant(f32),
}

/// What a rule turns a node into.
#[derive(Clone, Debug, PartialEq)]
pub enum Rewrite {
    /// Every use of the node (and any output naming it) becomes this value; the node goes dead.
    Use(Value),
    /// The node becomes `op` over these operands, keeping its id, origin and result type.
    Node(Op, Vec<Operand>),
    /// The node becomes this constant: a scalar `const`, broadcast to its shape if it has one.
    Constant(f32),
}

/// Rounds after which a rule table that still fires is a bug (a rule undoing another).
const MAX_ROUNDS: usize = 100;

/// Applies `rules` to `graph` and its scan bodies until none fires; returns how many rewrites
/// were made. `pass` names the pass in errors.
pub fn fixpoint(pass: &'static str, graph: &mut Graph, rules: &[Rule]) -> Result<usize, PassError> {
    let mut changes = for_each_body(graph, |body| fixpoint(pass, body, rules))?;
    let mut touched = Vec::new();
    for round in 0.. {
        let order = graph
            .topo_order()
            .map_err(|_| PassError::Failed { pass, message: format!("graph `{}` has a cycle", graph.name) })?;
        let needed = needed(graph);
        let mut fired: Vec<&'static str> = Vec::new();
        for id in order {
            // Nodes no output needs are left alone (an earlier rewrite this round may have
            // orphaned one since `needed` was computed: `is_live` catches those).
            if !needed[id.index()] || !is_live(graph, id) || graph.node(id).results.len() != 1 {
                continue;
            }
            if let Some((rule, rewrite)) = rules.iter().find_map(|r| (r.rewrite)(graph, id).map(|w| (r, w))) {
                apply(pass, graph, id, rewrite, &mut touched)?;
                fired.push(rule.name);
            }
        }
        changes += fired.len();
        if fired.is_empty() {
            break;
        }
        if round + 1 == MAX_ROUNDS {
            fired.sort_unstable();
            fired.dedup();
            let message = format!("no fixpoint after {MAX_ROUNDS} rounds; still firing: {}", fired.join(", "));
            return Err(PassError::Failed { pass, message });
        }
    }
    sweep(graph, touched);
    Ok(changes)
}

/// Runs `f` on the body of every scan node of `graph`, summing what it returns.
pub fn for_each_body(
    graph: &mut Graph,
    mut f: impl FnMut(&mut Graph) -> Result<usize, PassError>,
) -> Result<usize, PassError> {
    let scans: Vec<NodeId> = graph.node_ids().filter(|&n| matches!(graph.node(n).op, Op::Scan(_))).collect();
    let mut total = 0;
    for n in scans {
        if let Op::Scan(scan) = &mut graph.node_mut(n).op {
            total += f(&mut scan.body)?;
        }
    }
    Ok(total)
}

fn apply(
    pass: &'static str,
    graph: &mut Graph,
    id: NodeId,
    rewrite: Rewrite,
    touched: &mut Vec<NodeId>,
) -> Result<(), PassError> {
    let failed = |message: String| PassError::Failed { pass, message };
    let ty = graph.node(id).results[0].clone();
    let origin = graph.node(id).origin.clone();
    let (op, operands) = match rewrite {
        Rewrite::Use(v) => {
            touched.push(id);
            graph.replace_all_uses(Value::from(id), v);
            return Ok(());
        }
        Rewrite::Constant(c) if ty.dtype != DType::F32 => {
            return Err(failed(format!("%{} is {ty}, which has no constant form {c:?}", id.index())));
        }
        Rewrite::Constant(c) if ty.rank() == 0 => (Op::Constant(c), Vec::new()),
        Rewrite::Constant(c) => {
            (Op::Broadcast(ty.shape.clone()), vec![Operand::Value(graph.constant(c, origin.clone()))])
        }
        Rewrite::Node(op, operands) => (op, operands),
    };
    let mut values: Vec<Value> = Vec::with_capacity(operands.len());
    for operand in operands {
        values.push(match operand {
            Operand::Value(v) => v,
            Operand::Constant(c) => {
                let k = graph.constant(c, origin.clone());
                if ty.rank() == 0 {
                    k
                } else {
                    graph
                        .add1(Op::Broadcast(ty.shape.clone()), &[k], origin.clone())
                        .map_err(|e| failed(format!("broadcasting a constant for %{}: {e}", id.index())))?
                }
            }
        });
    }
    touched.extend(graph.operands(id).iter().map(|v| v.node));
    graph.rewrite(id, op, &values);
    Ok(())
}

/// Which nodes (by index) an output of `graph` needs.
pub fn needed(graph: &Graph) -> Vec<bool> {
    let mut needed = vec![false; graph.node_ids().map(|n| n.index() + 1).max().unwrap_or(0)];
    let mut stack: Vec<NodeId> = graph.outputs().iter().map(|o| o.value.node).collect();
    while let Some(n) = stack.pop() {
        if !std::mem::replace(&mut needed[n.index()], true) {
            stack.extend(graph.operands(n).iter().map(|v| v.node));
        }
    }
    needed
}

/// Whether anything uses a result of `id` or an output names it.
pub fn is_live(graph: &Graph, id: NodeId) -> bool {
    graph.petgraph().neighbors_directed(id, Direction::Outgoing).next().is_some()
        || graph.outputs().iter().any(|o| o.value.node == id)
}

/// Removes the nodes of `candidates` that are now dead, and then the operands that leaves dead,
/// transitively; inputs always stay (`dead-code` decides about those).
pub fn sweep(graph: &mut Graph, candidates: Vec<NodeId>) {
    let mut stack = candidates;
    while let Some(n) = stack.pop() {
        if !graph.contains(n) || matches!(graph.node(n).op, Op::Input(_)) || is_live(graph, n) {
            continue;
        }
        stack.extend(graph.operands(n).iter().map(|v| v.node));
        graph.remove_node(n);
    }
}

/// The value every element of `v` holds when it is a scalar `const` seen through broadcasts,
/// reshapes and transposes (which move or copy elements but never change one).
pub fn uniform(graph: &Graph, v: Value) -> Option<f32> {
    match &graph.node(v.node).op {
        Op::Constant(c) => Some(*c),
        Op::Broadcast(_) | Op::Reshape(_) | Op::Transpose(_) => uniform(graph, graph.operands(v.node)[0]),
        _ => None,
    }
}

/// Whether `v` is the uniform constant `c`, bit for bit (so `+0.0` and `-0.0` differ).
pub fn is_constant(graph: &Graph, v: Value, c: f32) -> bool {
    uniform(graph, v).is_some_and(|x| x.to_bits() == c.to_bits())
}

/// `(op, x)` when `n` is a unary op.
pub fn unary(graph: &Graph, n: NodeId) -> Option<(UnaryOp, Value)> {
    match graph.node(n).op {
        Op::Unary(u) => Some((u, graph.operands(n)[0])),
        _ => None,
    }
}

/// `(op, x)` when `v` is the result of a unary op.
pub fn unary_value(graph: &Graph, v: Value) -> Option<(UnaryOp, Value)> {
    unary(graph, v.node)
}

/// `(op, lhs, rhs)` when `n` is a binary op.
pub fn binary(graph: &Graph, n: NodeId) -> Option<(BinaryOp, Value, Value)> {
    match graph.node(n).op {
        Op::Binary(b) => {
            let ops = graph.operands(n);
            Some((b, ops[0], ops[1]))
        }
        _ => None,
    }
}
