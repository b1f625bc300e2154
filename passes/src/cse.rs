//! `cse`: common-subexpression elimination. Nodes with the same op, attributes and operands
//! compute the same values, so every use of a later one is redirected to the first.
//!
//! Nodes are visited in the graph's deterministic topological order, so a node's operands are
//! already merged when it is looked up and the node kept is always the first of its class (the
//! hash map is only ever looked up, never iterated: the result does not depend on its order).
//! Scan bodies are merged first, then the graph.
//!
//! - Constants are equal when their bits are (`+0.0` and `-0.0` differ, as do NaN payloads).
//! - `add`, `mul`, `cmp.eq` and `cmp.ne` commute exactly in IEEE arithmetic (up to which NaN
//!   payload propagates), so their operands are compared as a set; `max`/`min` are not
//!   (`max(-0.0, +0.0)` may give either zero).
//! - Inputs are never merged: each is a distinct argument, weight or state.
//! - Scans merge only when their bodies print identically ([`Graph`]'s equality).
//! - Ops this pass does not know (the fusion passes' kernels, and any later op) are left alone.

use crate::rewrite::{for_each_body, needed, sweep};
use crate::PassError;
use kiln_ir::{BinaryOp, CompareOp, Dim, Graph, NodeId, Op, ReduceOp, Shape, UnaryOp, Value};
use std::collections::hash_map::{Entry, HashMap};

/// An op with its attributes, in a form that can be hashed and compared exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Constant(u32),
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CompareOp),
    Select,
    Reduce(ReduceOp, usize),
    MatMul(bool),
    Reshape(Shape),
    Broadcast(Shape),
    Transpose(Vec<usize>),
    Slice(usize, Dim, Dim),
    Concat(usize),
    Unfold(usize, usize),
    Gather,
    /// A scan by its attributes and its body's dump.
    OneHot(usize),
    Scan {
        carries: usize,
        sequences: usize,
        constants: usize,
        reverse: bool,
        body: String,
    },
}

fn key(op: &Op) -> Option<Key> {
    Some(match op {
        Op::Constant(c) => Key::Constant(c.to_bits()),
        Op::Unary(u) => Key::Unary(*u),
        Op::Binary(b) => Key::Binary(*b),
        Op::Compare(c) => Key::Compare(*c),
        Op::Select => Key::Select,
        Op::Reduce { op, axis } => Key::Reduce(*op, *axis),
        Op::MatMul { transpose_rhs } => Key::MatMul(*transpose_rhs),
        Op::Reshape(s) => Key::Reshape(s.clone()),
        Op::Broadcast(s) => Key::Broadcast(s.clone()),
        Op::Transpose(p) => Key::Transpose(p.to_vec()),
        Op::Slice { axis, start, end } => Key::Slice(*axis, *start, *end),
        Op::Concat { axis } => Key::Concat(*axis),
        Op::Unfold { axis, size } => Key::Unfold(*axis, *size),
        Op::Gather => Key::Gather,
        Op::OneHot { depth } => Key::OneHot(*depth),
        Op::Scan(s) => Key::Scan {
            carries: s.carries,
            sequences: s.sequences,
            constants: s.constants,
            reverse: s.reverse,
            body: s.body.to_string(),
        },
        // Inputs are distinct by definition; kernels and ops added later are left alone.
        _ => return None,
    })
}

fn commutes(key: &Key) -> bool {
    matches!(key, Key::Binary(BinaryOp::Add | BinaryOp::Mul) | Key::Compare(CompareOp::Eq | CompareOp::Ne))
}

/// Merges common subexpressions in `graph` and its scan bodies; returns how many nodes it
/// merged into an earlier one.
pub fn cse(graph: &mut Graph) -> Result<usize, PassError> {
    let mut merged = for_each_body(graph, cse)?;
    let order = graph
        .topo_order()
        .map_err(|_| PassError::Failed { pass: "cse", message: format!("graph `{}` has a cycle", graph.name) })?;
    let needed = needed(graph);
    let mut first: HashMap<(Key, Vec<Value>), NodeId> = HashMap::new();
    let mut duplicates = Vec::new();
    for id in order {
        if !needed[id.index()] {
            continue;
        }
        let Some(k) = key(&graph.node(id).op) else { continue };
        let mut operands = graph.operands(id).to_vec();
        if commutes(&k) {
            operands.sort_unstable();
        }
        match first.entry((k, operands)) {
            Entry::Occupied(e) => {
                let keep = *e.get();
                for r in 0..graph.node(id).results.len() {
                    graph.replace_all_uses(Value::new(id, r as u16), Value::new(keep, r as u16));
                }
                duplicates.push(id);
                merged += 1;
            }
            Entry::Vacant(e) => {
                e.insert(id);
            }
        }
    }
    sweep(graph, duplicates);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f32_input, finish};
    use kiln_ir::{OutputRole, Param, ParamRole, Scan, Type};

    #[test]
    fn merges_equal_nodes_but_not_inputs_or_signed_zeros() {
        let mut g = Graph::new("t");
        let s = Shape::fixed(&[2]);
        let x = f32_input(&mut g, "x", s.clone());
        let y = f32_input(&mut g, "y", s.clone());
        let c1 = g.constant(1.5, None);
        let c2 = g.constant(1.5, None);
        let z1 = g.constant(0.0, None);
        let z2 = g.constant(-0.0, None);
        let b1 = g.add1(Op::Broadcast(s.clone()), &[c1], None).unwrap();
        let b2 = g.add1(Op::Broadcast(s.clone()), &[c2], None).unwrap();
        let m1 = g.add1(Op::Binary(BinaryOp::Mul), &[x, b1], None).unwrap();
        let m2 = g.add1(Op::Binary(BinaryOp::Mul), &[b2, x], None).unwrap();
        let d1 = g.add1(Op::Binary(BinaryOp::Sub), &[m1, y], None).unwrap();
        let d2 = g.add1(Op::Binary(BinaryOp::Sub), &[y, m2], None).unwrap();
        let out = g.add1(Op::Concat { axis: 0 }, &[d1, d2, x, y], None).unwrap();
        g.add_output("out", out, OutputRole::Result);
        g.add_output("z1", z1, OutputRole::Result);
        g.add_output("z2", z2, OutputRole::Result);
        // c2, b2 and m2 (commuted); not the subtractions, zeros of two signs, or the inputs.
        assert_eq!(cse(&mut g).unwrap(), 3);
        finish(&g);
        assert_eq!(g.operands(d2.node)[1], m1);
        assert!(!g.contains(c2.node) && !g.contains(b2.node) && !g.contains(m2.node));
        assert!(g.contains(z1.node) && g.contains(z2.node) && g.contains(d2.node));
    }

    /// A scan whose body returns `s + exp(x)` and `s * exp(x)`, with `exp(x)` computed twice
    /// when `duplicate`.
    fn scan(g: &mut Graph, init: Value, xs: Value, duplicate: bool) -> NodeId {
        let mut body = Graph::new("step");
        let ty = Type::f32(Shape::fixed(&[2]));
        let arg = |b: &mut Graph, index: usize| {
            b.add_input(Param { role: ParamRole::Argument { index }, name: format!("a{index}") }, ty.clone(), None)
        };
        let (s, x) = (arg(&mut body, 0), arg(&mut body, 1));
        let e1 = body.add1(Op::Unary(UnaryOp::Exp), &[x], None).unwrap();
        let e2 = if duplicate { body.add1(Op::Unary(UnaryOp::Exp), &[x], None).unwrap() } else { e1 };
        let next = body.add1(Op::Binary(BinaryOp::Add), &[s, e1], None).unwrap();
        let y = body.add1(Op::Binary(BinaryOp::Mul), &[s, e2], None).unwrap();
        body.add_output("s", next, OutputRole::Result);
        body.add_output("y", y, OutputRole::Result);
        let scan = Scan { body, carries: 1, sequences: 1, constants: 0, reverse: false };
        g.add(Op::Scan(Box::new(scan)), &[init, xs], None).unwrap()
    }

    #[test]
    fn merges_inside_scan_bodies_and_equal_scans() {
        let mut g = Graph::new("t");
        let init = f32_input(&mut g, "init", Shape::fixed(&[2]));
        let other = f32_input(&mut g, "other", Shape::fixed(&[2]));
        let xs = f32_input(&mut g, "xs", Shape::fixed(&[5, 2]));
        let a = scan(&mut g, init, xs, false);
        let b = scan(&mut g, init, xs, false);
        let c = scan(&mut g, other, xs, true);
        let ys = [a, b, c].map(|n| Value::new(n, 1));
        let out = g.add1(Op::Concat { axis: 0 }, &ys, None).unwrap();
        g.add_output("out", out, OutputRole::Result);
        g.add_output("s", Value::new(b, 0), OutputRole::Result);
        // The second exp in c's body, then b into a (c takes another initial carry).
        assert_eq!(cse(&mut g).unwrap(), 2);
        finish(&g);
        assert!(!g.contains(b) && g.contains(c));
        assert_eq!(g.operands(out.node).as_slice(), &[ys[0], ys[0], ys[2]]);
        assert_eq!(g.outputs()[1].value, Value::new(a, 0));
        let Op::Scan(scan) = &g.node(c).op else { panic!() };
        assert_eq!(scan.body.node_count(), 5);
    }
}
