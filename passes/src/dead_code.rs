//! `dead-code`: removes nodes whose results no output needs.
//!
//! Liveness starts at the graph's outputs and follows operands backwards. The graph's interface
//! is kept whole: token, state and scan-argument inputs stay even when unused (callers bind them
//! by position), while unused weight inputs go (nothing needs to load them). Scan bodies are
//! cleaned recursively; a scan's own results are all kept, since their positions are its ABI.

use kiln_ir::{Graph, NodeId, Op, ParamRole};

/// Removes dead nodes from `graph` and its scan bodies; returns how many were removed.
pub fn dead_code(graph: &mut Graph) -> usize {
    let mut live = vec![false; graph.node_ids().map(|n| n.index() + 1).max().unwrap_or(0)];
    let mut stack: Vec<NodeId> = graph.outputs().iter().map(|o| o.value.node).collect();
    for &input in graph.inputs() {
        let keep = graph.param(input).is_some_and(|p| !matches!(p.role, ParamRole::Weight));
        if keep {
            stack.push(input);
        }
    }
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut live[n.index()], true) {
            continue;
        }
        stack.extend(graph.operands(n).iter().map(|v| v.node));
    }
    let dead: Vec<NodeId> = graph.node_ids().filter(|n| !live[n.index()]).collect();
    let mut removed = dead.len();
    for n in dead {
        graph.remove_node(n);
    }
    let scans: Vec<NodeId> = graph.node_ids().filter(|&n| matches!(graph.node(n).op, Op::Scan(_))).collect();
    for n in scans {
        if let Op::Scan(scan) = &mut graph.node_mut(n).op {
            removed += dead_code(&mut scan.body);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{BinaryOp, DType, Dim, OutputRole, Param, Shape, Type, UnaryOp};

    #[test]
    fn removes_unused_nodes_and_weights_but_keeps_the_interface() {
        let mut g = Graph::new("t");
        let ty = Type::f32(Shape::new([Dim::T]));
        let tokens = g.add_input(
            Param { role: ParamRole::Tokens, name: "tokens".into() },
            Type::new(DType::I64, Shape::new([Dim::T])),
            None,
        );
        let x = g.add_input(Param { role: ParamRole::State { init: 0.0 }, name: "s".into() }, ty.clone(), None);
        let w = g.add_input(Param { role: ParamRole::Weight, name: "unused".into() }, ty.clone(), None);
        let used = g.add1(Op::Unary(UnaryOp::Exp), &[x], None).unwrap();
        let dead = g.add1(Op::Binary(BinaryOp::Add), &[used, w], None).unwrap();
        g.add_output("s", used, OutputRole::State);
        g.add_output("y", used, OutputRole::Result);
        assert_eq!(dead_code(&mut g), 2);
        assert!(g.contains(tokens.node) && g.contains(x.node) && g.contains(used.node));
        assert!(!g.contains(w.node) && !g.contains(dead.node));
        assert_eq!(g.inputs().len(), 2);
        kiln_ir::verify(&g).unwrap();
    }
}
