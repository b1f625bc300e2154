//! `algebraic`: arithmetic identities, as a rule table driven to a fixpoint.
//!
//! Only identities that hold exactly in IEEE-754 `f32` are here: for every input, NaN, ±inf and
//! ±0.0 included, the rewritten graph gives the same value (the same bits, up to which NaN
//! payload propagates), so turning the pass off never changes a result. Each rule says why it
//! is exact. Constants are matched bit for bit through broadcasts and reshapes ([`is_constant`]),
//! so `+0.0` and `-0.0` are different constants.
//!
//! Left out on purpose:
//! - `x + 0 → x`: `-0.0 + +0.0 = +0.0`, so it would turn `-0.0` into `+0.0` (which `1 / x`
//!   then tells apart). `x + (-0.0) → x` is exact and is here.
//! - `x - x → 0` and `x * 0 → 0`: `inf - inf`, `NaN - NaN`, `inf * 0` and `NaN * 0` are NaN,
//!   and `-1 * 0` is `-0.0`.
//! - `x * -1 → neg x`: exact on numbers, but neg flips a NaN's sign bit where a multiply keeps it.
//! - `pow(x, 1) → x`, `pow(x, 2) → x * x`: `powf` comes from the platform's libm, which does
//!   not promise correct rounding.
//! - `recip(recip x) → x`, `exp(log x) → x` and friends: each op rounds.
//!
//! | rule | before | after | why it is exact |
//! |---|---|---|---|
//! | `mul-one` | `x * 1` | `x` | 1 is the multiplicative identity for every x |
//! | `one-mul` | `1 * x` | `x` | the same |
//! | `div-one` | `x / 1` | `x` | x / 1 is x for every x |
//! | `sub-zero` | `x - (+0)` | `x` | `-0 - +0 = -0`; any other x is unchanged |
//! | `add-neg-zero` | `x + (-0)` | `x` | `+0 + -0 = +0`, `-0 + -0 = -0` |
//! | `neg-zero-add` | `(-0) + x` | `x` | addition commutes |
//! | `neg-neg` | `neg(neg x)` | `x` | neg only flips the sign bit |
//! | `abs-abs` | `abs(abs x)` | `abs x` | abs only clears the sign bit |
//! | `abs-neg` | `abs(neg x)` | `abs x` | the sign bit is cleared whatever it was |
//! | `add-neg` | `x + neg y` | `x - y` | IEEE defines `x - y` as `x + (-y)` |
//! | `neg-add` | `neg x + y` | `y - x` | the same, after commuting |
//! | `sub-neg` | `x - neg y` | `x + y` | `x - (-y) = x + (-(-y))` |
//! | `max-same` | `max(x, x)` | `x` | NaN gives NaN, anything else gives x |
//! | `min-same` | `min(x, x)` | `x` | the same |
//! | `select-same` | `select(c, x, x)` | `x` | both branches are x |
//! | `div-pow2` | `x / c` | `x * (1/c)` | `1/c` is exact when c is a power of two, and then both are the one correctly rounded value of x/c |

use crate::rewrite::{binary, fixpoint, is_constant, unary, unary_value, uniform, Operand, Rewrite, Rule};
use crate::PassError;
use kiln_ir::{BinaryOp, Graph, Op, UnaryOp, Value};

use BinaryOp::{Add, Div, Max, Min, Mul, Sub};
use UnaryOp::{Abs, Neg};

/// `y` when `v` is `neg y`.
fn negated(g: &Graph, v: Value) -> Option<Value> {
    match unary_value(g, v)? {
        (Neg, y) => Some(y),
        _ => None,
    }
}

fn node(op: Op, operands: &[Value]) -> Option<Rewrite> {
    Some(Rewrite::Node(op, operands.iter().map(|&v| Operand::Value(v)).collect()))
}

/// `1 / c` when it is exact: `c` is a finite non-zero power of two whose reciprocal is an
/// `f32` too (the product of two `f32`s is exact in `f64`).
fn exact_reciprocal(c: f32) -> Option<f32> {
    let r = 1.0 / c;
    (c.is_finite() && r.is_finite() && r != 0.0 && f64::from(r) * f64::from(c) == 1.0).then_some(r)
}

pub const RULES: &[Rule] = &[
    Rule {
        name: "mul-one",
        rewrite: |g, n| match binary(g, n)? {
            (Mul, x, one) if is_constant(g, one, 1.0) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "one-mul",
        rewrite: |g, n| match binary(g, n)? {
            (Mul, one, x) if is_constant(g, one, 1.0) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "div-one",
        rewrite: |g, n| match binary(g, n)? {
            (Div, x, one) if is_constant(g, one, 1.0) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "sub-zero",
        rewrite: |g, n| match binary(g, n)? {
            (Sub, x, zero) if is_constant(g, zero, 0.0) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "add-neg-zero",
        rewrite: |g, n| match binary(g, n)? {
            (Add, x, zero) if is_constant(g, zero, -0.0) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "neg-zero-add",
        rewrite: |g, n| match binary(g, n)? {
            (Add, zero, x) if is_constant(g, zero, -0.0) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "neg-neg",
        rewrite: |g, n| match unary(g, n)? {
            (Neg, x) => Some(Rewrite::Use(negated(g, x)?)),
            _ => None,
        },
    },
    Rule {
        name: "abs-abs",
        rewrite: |g, n| match unary(g, n)? {
            (Abs, x) if matches!(unary_value(g, x), Some((Abs, _))) => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "abs-neg",
        rewrite: |g, n| match unary(g, n)? {
            (Abs, x) => node(Op::Unary(Abs), &[negated(g, x)?]),
            _ => None,
        },
    },
    Rule {
        name: "add-neg",
        rewrite: |g, n| match binary(g, n)? {
            (Add, x, y) => node(Op::Binary(Sub), &[x, negated(g, y)?]),
            _ => None,
        },
    },
    Rule {
        name: "neg-add",
        rewrite: |g, n| match binary(g, n)? {
            (Add, x, y) => node(Op::Binary(Sub), &[y, negated(g, x)?]),
            _ => None,
        },
    },
    Rule {
        name: "sub-neg",
        rewrite: |g, n| match binary(g, n)? {
            (Sub, x, y) => node(Op::Binary(Add), &[x, negated(g, y)?]),
            _ => None,
        },
    },
    Rule {
        name: "max-same",
        rewrite: |g, n| match binary(g, n)? {
            (Max, x, y) if x == y => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "min-same",
        rewrite: |g, n| match binary(g, n)? {
            (Min, x, y) if x == y => Some(Rewrite::Use(x)),
            _ => None,
        },
    },
    Rule {
        name: "select-same",
        rewrite: |g, n| {
            let Op::Select = g.node(n).op else { return None };
            let ops = g.operands(n);
            (ops[1] == ops[2]).then_some(Rewrite::Use(ops[1]))
        },
    },
    Rule {
        name: "div-pow2",
        rewrite: |g, n| match binary(g, n)? {
            (Div, x, c) => {
                let r = exact_reciprocal(uniform(g, c)?)?;
                Some(Rewrite::Node(Op::Binary(Mul), vec![Operand::Value(x), Operand::Constant(r)]))
            }
            _ => None,
        },
    },
];

/// Applies the identities to `graph` and its scan bodies; returns how many rewrites it made.
pub fn algebraic(graph: &mut Graph) -> Result<usize, PassError> {
    fixpoint("algebraic", graph, RULES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f32_input, finish};
    use kiln_ir::{OutputRole, Shape};

    #[test]
    fn reciprocals_are_exact_only_for_powers_of_two() {
        assert_eq!(exact_reciprocal(32.0), Some(0.03125));
        assert_eq!(exact_reciprocal(-0.5), Some(-2.0));
        assert_eq!(exact_reciprocal(3.0), None);
        assert_eq!(exact_reciprocal(0.0), None);
        assert_eq!(exact_reciprocal(f32::INFINITY), None);
        assert_eq!(exact_reciprocal(f32::NAN), None);
        assert_eq!(exact_reciprocal(f32::MAX), None);
        // 2^-149 is the smallest subnormal; 2^149 is not an f32.
        assert_eq!(exact_reciprocal(f32::from_bits(1)), None);
        for c in [2f32, 0.25, 1024.0, 2f32.powi(-126), 2f32.powi(127)] {
            let r = exact_reciprocal(c).unwrap();
            for x in [1.0f32, 3.0, -7.5, 1e-38, 3.4e38, f32::MIN_POSITIVE, 1e-45, -0.0, f32::INFINITY] {
                assert_eq!((x / c).to_bits(), (x * r).to_bits(), "{x} / {c}");
            }
        }
    }

    #[test]
    fn the_zero_identities_keep_the_sign_of_zero() {
        for x in [0.0f32, -0.0, 1.5, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!((x - 0.0).to_bits(), x.to_bits());
            assert_eq!((x + -0.0).to_bits(), x.to_bits());
            assert_eq!((-0.0 + x).to_bits(), x.to_bits());
        }
        assert_ne!((-0.0f32 + 0.0).to_bits(), (-0.0f32).to_bits(), "x + 0 is rightly not a rule");
    }

    #[test]
    fn rewrites_chains_to_a_fixpoint() {
        let mut g = Graph::new("t");
        let shape = Shape::fixed(&[4]);
        let x = f32_input(&mut g, "x", shape.clone());
        let y = f32_input(&mut g, "y", shape.clone());
        let one = g.constant(1.0, None);
        let one = g.add1(Op::Broadcast(shape.clone()), &[one], None).unwrap();
        let plus_zero = g.constant(0.0, None);
        let plus_zero = g.add1(Op::Broadcast(shape.clone()), &[plus_zero], None).unwrap();
        let n1 = g.add1(Op::Unary(Neg), &[x], None).unwrap();
        let n2 = g.add1(Op::Unary(Neg), &[n1], None).unwrap();
        let m = g.add1(Op::Binary(Mul), &[one, n2], None).unwrap();
        let ny = g.add1(Op::Unary(Neg), &[y], None).unwrap();
        let s = g.add1(Op::Binary(Add), &[m, ny], None).unwrap();
        let kept = g.add1(Op::Binary(Add), &[s, plus_zero], None).unwrap();
        g.add_output("out", kept, OutputRole::Result);
        // neg-neg, one-mul, add-neg; `+ 0.0` stays.
        assert_eq!(algebraic(&mut g).unwrap(), 3);
        finish(&g);
        assert_eq!(g.operands(kept.node)[0], s);
        assert_eq!(g.node(s.node).op, Op::Binary(Sub));
        assert_eq!(g.operands(s.node).as_slice(), &[x, y]);
        assert!(!g.contains(n1.node) && !g.contains(n2.node) && !g.contains(m.node) && !g.contains(ny.node));
    }
}
