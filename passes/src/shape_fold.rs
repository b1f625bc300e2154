//! `shape-fold`: folds chains of shape ops, as a rule table driven to a fixpoint.
//!
//! Shape ops move or copy elements and never change one, so every rule is exact. A broadcast of
//! a scalar (usually a `const`) is the canonical form of a uniform tensor: it stays, and shape
//! ops over it fold into it, which is the form `const-fold` and `algebraic` look through.
//!
//! | rule | before | after |
//! |---|---|---|
//! | `reshape-same` | `reshape(x: s) to s` | `x` |
//! | `reshape-reshape` | `reshape(reshape(x))` | `reshape(x)` (row-major order composes) |
//! | `broadcast-same` | `broadcast(x: s) to s` | `x` |
//! | `broadcast-broadcast` | `broadcast(broadcast(x))` | `broadcast(x)` |
//! | `broadcast-reshape` | `broadcast(reshape(x))`, the reshape only adding or dropping leading 1s | `broadcast(x)` |
//! | `scalar-broadcast` | `reshape(broadcast(s))`, `transpose(broadcast(s))`, `s` a scalar | `broadcast(s)` |
//! | `transpose-identity` | `transpose(x) {perm = [0, 1, ..]}` | `x` |
//! | `transpose-transpose` | `transpose(transpose(x, p), q)` | `transpose(x, [p[q[0]], p[q[1]], ..])` |
//! | `slice-whole` | `slice(x) {start = 0, end = len}` | `x` |
//! | `concat-one` | `concat(x)` | `x` |

use crate::rewrite::{fixpoint, Operand, Rewrite, Rule};
use crate::PassError;
use kiln_ir::{broadcasts_to, Dim, Graph, NodeId, Op, Shape, Value};

/// The single operand of `n`.
fn operand(g: &Graph, n: NodeId) -> Value {
    g.operands(n)[0]
}

fn shape(g: &Graph, v: Value) -> &Shape {
    &g.value_type(v).shape
}

/// `(outer, inner, x)` when `n` is `outer(inner(x))`, both ops with one operand.
fn chain(g: &Graph, n: NodeId) -> Option<(&Op, &Op, Value)> {
    let [v] = g.operands(n)[..] else { return None };
    let [x] = g.operands(v.node)[..] else { return None };
    Some((&g.node(n).op, &g.node(v.node).op, x))
}

/// `n` becomes `op` over `x`.
fn over(op: Op, x: Value) -> Option<Rewrite> {
    Some(Rewrite::Node(op, vec![Operand::Value(x)]))
}

/// A shape without its leading size-1 dimensions.
fn without_leading_ones(s: &Shape) -> &[Dim] {
    let k = s.dims().iter().take_while(|&&d| d == Dim::Fixed(1)).count();
    &s.dims()[k..]
}

pub const RULES: &[Rule] = &[
    Rule {
        name: "reshape-same",
        rewrite: |g, n| match &g.node(n).op {
            Op::Reshape(to) if to == shape(g, operand(g, n)) => Some(Rewrite::Use(operand(g, n))),
            _ => None,
        },
    },
    Rule {
        name: "reshape-reshape",
        rewrite: |g, n| match chain(g, n)? {
            (Op::Reshape(to), Op::Reshape(_), x) => over(Op::Reshape(to.clone()), x),
            _ => None,
        },
    },
    Rule {
        name: "broadcast-same",
        rewrite: |g, n| match &g.node(n).op {
            Op::Broadcast(to) if to == shape(g, operand(g, n)) => Some(Rewrite::Use(operand(g, n))),
            _ => None,
        },
    },
    Rule {
        name: "broadcast-broadcast",
        rewrite: |g, n| match chain(g, n)? {
            (Op::Broadcast(to), Op::Broadcast(_), x) => {
                broadcasts_to(shape(g, x), to).then(|| over(Op::Broadcast(to.clone()), x))?
            }
            _ => None,
        },
    },
    Rule {
        name: "broadcast-reshape",
        rewrite: |g, n| match chain(g, n)? {
            (Op::Broadcast(to), Op::Reshape(mid), x) => {
                let only_leading_ones = without_leading_ones(mid) == without_leading_ones(shape(g, x));
                (only_leading_ones && broadcasts_to(shape(g, x), to)).then(|| over(Op::Broadcast(to.clone()), x))?
            }
            _ => None,
        },
    },
    Rule {
        name: "scalar-broadcast",
        rewrite: |g, n| match chain(g, n)? {
            (Op::Reshape(_) | Op::Transpose(_), Op::Broadcast(_), s) => {
                let to = g.node(n).results[0].shape.clone();
                (shape(g, s).rank() == 0).then(|| over(Op::Broadcast(to), s))?
            }
            _ => None,
        },
    },
    Rule {
        name: "transpose-identity",
        rewrite: |g, n| match &g.node(n).op {
            Op::Transpose(perm) if perm.iter().enumerate().all(|(i, &p)| i == p) => Some(Rewrite::Use(operand(g, n))),
            _ => None,
        },
    },
    Rule {
        name: "transpose-transpose",
        rewrite: |g, n| match chain(g, n)? {
            // Output axis i of the outer transpose is axis q[i] of the inner one, which is
            // axis p[q[i]] of x.
            (Op::Transpose(q), Op::Transpose(p), x) => over(Op::Transpose(q.iter().map(|&i| p[i]).collect()), x),
            _ => None,
        },
    },
    Rule {
        name: "slice-whole",
        rewrite: |g, n| match &g.node(n).op {
            Op::Slice { axis, start: Dim::Fixed(0), end } if shape(g, operand(g, n)).dims()[*axis] == *end => {
                Some(Rewrite::Use(operand(g, n)))
            }
            _ => None,
        },
    },
    Rule {
        name: "concat-one",
        rewrite: |g, n| match &g.node(n).op {
            Op::Concat { .. } if g.operands(n).len() == 1 => Some(Rewrite::Use(operand(g, n))),
            _ => None,
        },
    },
];

/// Folds shape-op chains in `graph` and its scan bodies; returns how many rewrites it made.
pub fn shape_fold(graph: &mut Graph) -> Result<usize, PassError> {
    fixpoint("shape-fold", graph, RULES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f32_input, finish};
    use kiln_ir::{OutputRole, UnaryOp};

    #[test]
    fn folds_chains_and_keeps_scalar_broadcasts() {
        let mut g = Graph::new("t");
        let x = f32_input(&mut g, "x", Shape::fixed(&[2, 3, 4]));
        let t1 = g.add1(Op::Transpose([1, 2, 0].into_iter().collect()), &[x], None).unwrap();
        let t2 = g.add1(Op::Transpose([2, 0, 1].into_iter().collect()), &[t1], None).unwrap();
        let r1 = g.add1(Op::Reshape(Shape::fixed(&[6, 4])), &[t2], None).unwrap();
        let r2 = g.add1(Op::Reshape(Shape::fixed(&[2, 3, 4])), &[r1], None).unwrap();
        let c = g.constant(2.0, None);
        let b = g.add1(Op::Broadcast(Shape::fixed(&[3, 8])), &[c], None).unwrap();
        let rb = g.add1(Op::Reshape(Shape::fixed(&[2, 3, 4])), &[b], None).unwrap();
        let e = g.add1(Op::Unary(UnaryOp::Exp), &[rb], None).unwrap();
        g.add_output("x", r2, OutputRole::Result);
        g.add_output("e", e, OutputRole::Result);
        // t2 composes to the identity (transpose-transpose, then transpose-identity), r2 drops
        // r1 (reshape-reshape) and is then the identity (reshape-same), rb becomes a broadcast.
        assert_eq!(shape_fold(&mut g).unwrap(), 5);
        finish(&g);
        assert_eq!(g.outputs()[0].value, x);
        assert_eq!(g.node(rb.node).op, Op::Broadcast(Shape::fixed(&[2, 3, 4])));
        assert_eq!(g.operands(rb.node)[0], c);
        assert!(!g.contains(t1.node) && !g.contains(t2.node) && !g.contains(r1.node) && !g.contains(b.node));
    }
}
