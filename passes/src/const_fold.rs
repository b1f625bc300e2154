//! `const-fold`: evaluates elementwise ops whose operands are all compile-time constants.
//!
//! A constant is a scalar `const`, possibly seen through `broadcast`/`reshape`/`transpose` (a
//! uniform tensor, see [`uniform`]). Folding calls the ops' shared reference semantics
//! ([`UnaryOp::apply`](kiln_ir::UnaryOp::apply), [`BinaryOp::apply`](kiln_ir::BinaryOp::apply),
//! [`CompareOp::apply`](kiln_ir::CompareOp::apply)), the functions every backend's scalar path
//! runs, so the folded graph computes bit for bit what the unfolded one did. A folded node
//! becomes a scalar `const`, broadcast to its shape when it has one (it keeps its id). A
//! comparison gives a `bool`, which has no constant form: it folds where a `select` reads it.
//!
//! | rule | before | after |
//! |---|---|---|
//! | `unary` | `f(c)` | `const f(c)` |
//! | `binary` | `c1 ∘ c2` | `const (c1 ∘ c2)` |
//! | `select` | `select(cmp(c1, c2), a, b)` | `a` or `b` |

use crate::rewrite::{binary, fixpoint, unary, uniform, Rewrite, Rule};
use crate::PassError;
use kiln_ir::{Graph, Op, Value};

pub const RULES: &[Rule] = &[
    Rule {
        name: "unary",
        rewrite: |g, n| {
            let (op, x) = unary(g, n)?;
            Some(Rewrite::Constant(op.apply(uniform(g, x)?)))
        },
    },
    Rule {
        name: "binary",
        rewrite: |g, n| {
            let (op, x, y) = binary(g, n)?;
            Some(Rewrite::Constant(op.apply(uniform(g, x)?, uniform(g, y)?)))
        },
    },
    Rule {
        name: "select",
        rewrite: |g, n| {
            let Op::Select = g.node(n).op else { return None };
            let ops = g.operands(n);
            Some(Rewrite::Use(if uniform_condition(g, ops[0])? { ops[1] } else { ops[2] }))
        },
    },
];

/// The value every element of a `bool` value holds when it is a comparison of constants, seen
/// through broadcasts, reshapes and transposes.
fn uniform_condition(g: &Graph, v: Value) -> Option<bool> {
    match &g.node(v.node).op {
        Op::Compare(op) => {
            let ops = g.operands(v.node);
            Some(op.apply(uniform(g, ops[0])?, uniform(g, ops[1])?))
        }
        Op::Broadcast(_) | Op::Reshape(_) | Op::Transpose(_) => uniform_condition(g, g.operands(v.node)[0]),
        _ => None,
    }
}

/// Folds constant elementwise ops in `graph` and its scan bodies; returns how many it folded.
pub fn const_fold(graph: &mut Graph) -> Result<usize, PassError> {
    fixpoint("const-fold", graph, RULES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f32_input, finish};
    use kiln_ir::{BinaryOp, CompareOp, Shape, UnaryOp};

    #[test]
    fn folds_through_broadcasts_and_picks_select_branches() {
        let mut g = Graph::new("t");
        let x = f32_input(&mut g, "x", Shape::fixed(&[3]));
        let two = g.constant(2.0, None);
        let three = g.constant(3.0, None);
        let b2 = g.add1(Op::Broadcast(Shape::fixed(&[3])), &[two], None).unwrap();
        let b3 = g.add1(Op::Broadcast(Shape::fixed(&[3])), &[three], None).unwrap();
        let sum = g.add1(Op::Binary(BinaryOp::Add), &[b2, b3], None).unwrap();
        let e = g.add1(Op::Unary(UnaryOp::Exp), &[two], None).unwrap();
        let cmp = g.add1(Op::Compare(CompareOp::Lt), &[b2, b3], None).unwrap();
        let sel = g.add1(Op::Select, &[cmp, x, sum], None).unwrap();
        let y = g.add1(Op::Binary(BinaryOp::Mul), &[sel, sum], None).unwrap();
        g.add_output("y", y, kiln_ir::OutputRole::Result);
        g.add_output("e", e, kiln_ir::OutputRole::Result);
        assert_eq!(const_fold(&mut g).unwrap(), 3);
        finish(&g);
        assert_eq!(g.node(e.node).op, Op::Constant(2f32.exp()));
        assert_eq!(g.operands(y.node)[0], x);
        // The folded [3] value is a broadcast of a scalar constant, keeping its id.
        assert_eq!(g.node(sum.node).op, Op::Broadcast(Shape::fixed(&[3])));
        assert_eq!(g.node(g.operands(sum.node)[0].node).op, Op::Constant(5.0));
        assert!(!g.contains(cmp.node) && !g.contains(sel.node));
    }
}
