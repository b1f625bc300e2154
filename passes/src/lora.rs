//! `lora`: applies an adapter's rewrite (LoRA, `models/lora.toml`) to every matrix product
//! whose weight the adapter targets.
//!
//! This pass is not in the default pipeline: it needs the adapter (a [`LoraTemplate`]), and it
//! runs first, on the graph as lowered, where every `linear(x, W)` is still a `matmul` reading the
//! weight input. A product `matmul(x, R)` is a Linear's `x·Wᵀ` with `W: [out, in]` when
//! `transpose_rhs` is set and `R = W`, or when it is not and `R = transpose(W, [1, 0])`. `W` may be
//! reached from a weight input through reshapes and transposes; the input's checkpoint name is
//! what the template matches, and the input must be a matrix (a higher-rank tensor reshaped into
//! one is a convolution's, which adapters adapt differently).
//!
//! For each matched product, in node order, the template adds its replacement to the graph; the
//! pass checks that the replacement has the product's type, redirects every use of the product to
//! it and removes the product. Products inside scan bodies are not visited (their weights arrive
//! as scan arguments). Nodes the rewrite leaves unused are left to `dead-code`.
//!
//! Guarantees: the graph stays valid, every product of a targeted weight is rewritten, and a
//! targeted weight used by a product in another layout (`x·W`, which peft would treat as
//! `fan_in_fan_out`) is an error rather than silently left alone.

use kiln_ir::{Graph, NodeId, Op, ParamRole, Type, Value};
use thiserror::Error;

/// The pass's name in the pass manager's style (it is run by hand, before the pipeline).
pub const NAME: &str = "lora";
/// What the pass does, as `kiln dump --passes` describes it (it is not in the default pipeline).
pub const DESCRIPTION: &str = "rewrite the products of the adapter's target weights with the adapter spec";

/// What the pass needs from an adapter.
pub trait LoraTemplate {
    type Error;

    /// The module path the adapter gives weight input `weight_name`, or `None` when it does not
    /// target it.
    fn target(&self, weight_name: &str) -> Option<String>;

    /// Adds the replacement of `linear(x, weight)` for `module` to `graph` and returns it.
    /// `weight` is the product's matrix in a Linear's layout, `[out_features, in_features]`.
    fn expand(&mut self, graph: &mut Graph, module: &str, x: Value, weight: Value) -> Result<Value, Self::Error>;
}

/// Why the pass failed.
#[derive(Debug, Error)]
pub enum LoraError<E> {
    /// The template could not build a replacement.
    #[error("{0}")]
    Template(E),
    #[error(
        "weight `{weight}` is an adapter target, but %{product} computes x·W with it rather than a Linear's \
         x·Wᵀ (fan_in_fan_out adapters are not supported)"
    )]
    Layout { weight: String, product: usize },
    #[error("weight `{weight}` is an adapter target, but it is a tensor of type {ty}, not a Linear's matrix")]
    NotMatrix { weight: String, ty: Type },
    #[error("the rewrite of `{module}` gives {found}, but the product it replaces is {expected}")]
    Type { module: String, expected: Type, found: Type },
}

/// One product the pass replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewritten {
    pub module: String,
    /// The checkpoint name of the product's weight.
    pub weight: String,
    /// The removed product.
    pub product: NodeId,
    pub replacement: Value,
}

/// A product found to use a targeted weight.
struct Site {
    product: NodeId,
    x: Value,
    w: Value,
    weight: String,
    module: String,
}

/// Rewrites every product of a weight `template` targets; returns what it replaced, in order.
pub fn lora<T: LoraTemplate>(graph: &mut Graph, template: &mut T) -> Result<Vec<Rewritten>, LoraError<T::Error>> {
    let mut ids: Vec<NodeId> = graph.node_ids().collect();
    ids.sort_unstable();
    let mut sites = Vec::new();
    for m in ids {
        let Op::MatMul { transpose_rhs } = graph.node(m).op else { continue };
        let ops = graph.operands(m);
        let (x, rhs) = (ops[0], ops[1]);
        let w = if transpose_rhs {
            Some(rhs)
        } else {
            match &graph.node(rhs.node).op {
                Op::Transpose(perm) if perm.as_slice() == [1, 0] => Some(graph.operands(rhs.node)[0]),
                _ => None,
            }
        };
        let traced = weight_input(graph, w.unwrap_or(rhs));
        let Some((input, weight)) = traced else { continue };
        let Some(module) = template.target(&weight) else { continue };
        let Some(w) = w else {
            return Err(LoraError::Layout { weight, product: m.index() });
        };
        let ty = graph.value_type(input.into()).clone();
        if ty.rank() != 2 {
            return Err(LoraError::NotMatrix { weight, ty });
        }
        sites.push(Site { product: m, x, w, weight, module });
    }
    let mut done = Vec::with_capacity(sites.len());
    for s in sites {
        let replacement = template.expand(graph, &s.module, s.x, s.w).map_err(LoraError::Template)?;
        let expected = graph.value_type(s.product.into()).clone();
        let found = graph.value_type(replacement).clone();
        if found != expected {
            return Err(LoraError::Type { module: s.module, expected, found });
        }
        graph.replace_all_uses(s.product.into(), replacement);
        done.push(Rewritten { module: s.module, weight: s.weight, product: s.product, replacement });
    }
    // Removed last, so that no node the rewrites create takes a removed product's id.
    for d in &done {
        graph.remove_node(d.product);
    }
    Ok(done)
}

/// The weight input `v` is read from through reshapes and transposes, and its name.
fn weight_input(graph: &Graph, mut v: Value) -> Option<(NodeId, String)> {
    loop {
        match &graph.node(v.node).op {
            Op::Input(p) if p.role == ParamRole::Weight => return Some((v.node, p.name.clone())),
            Op::Reshape(_) | Op::Transpose(_) => v = graph.operands(v.node)[0],
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{f32_input, finish};
    use kiln_ir::{BinaryOp, Dim, Shape};

    /// Targets `*.proj.weight`; the replacement is `2 · linear(x, W)`.
    struct Doubling;

    impl LoraTemplate for Doubling {
        type Error = String;

        fn target(&self, weight_name: &str) -> Option<String> {
            weight_name.strip_suffix(".weight").filter(|m| m.ends_with("proj")).map(str::to_string)
        }

        fn expand(&mut self, g: &mut Graph, _: &str, x: Value, w: Value) -> Result<Value, String> {
            let y = g.add1(Op::MatMul { transpose_rhs: true }, &[x, w], None).map_err(|e| e.to_string())?;
            g.add1(Op::Binary(BinaryOp::Add), &[y, y], None).map_err(|e| e.to_string())
        }
    }

    fn graph(transposed: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = f32_input(&mut g, "x", Shape::new([Dim::T, Dim::Fixed(4)]));
        let w = f32_input(&mut g, "in_proj.weight", Shape::new([Dim::Fixed(3), Dim::Fixed(4)]));
        let other = f32_input(&mut g, "head.weight", Shape::new([Dim::Fixed(5), Dim::Fixed(3)]));
        let y = if transposed {
            let wt = g.add1(Op::Transpose([1, 0].into_iter().collect()), &[w], None).unwrap();
            g.add1(Op::MatMul { transpose_rhs: false }, &[x, wt], None).unwrap()
        } else {
            g.add1(Op::MatMul { transpose_rhs: true }, &[x, w], None).unwrap()
        };
        let z = g.add1(Op::MatMul { transpose_rhs: true }, &[y, other], None).unwrap();
        g.add_output("z", z, kiln_ir::OutputRole::Result);
        g
    }

    #[test]
    fn rewrites_linear_products_of_targeted_weights_only() {
        for transposed in [false, true] {
            let mut g = graph(transposed);
            let done = lora(&mut g, &mut Doubling).unwrap();
            finish(&g);
            assert_eq!(done.len(), 1);
            assert_eq!((done[0].module.as_str(), done[0].weight.as_str()), ("in_proj", "in_proj.weight"));
            assert!(!g.contains(done[0].product));
            let adds = g.node_ids().filter(|&n| matches!(g.node(n).op, Op::Binary(BinaryOp::Add))).count();
            assert_eq!(adds, 1);
        }
    }

    #[test]
    fn a_targeted_weight_in_another_layout_is_an_error() {
        let mut g = Graph::new("g");
        let x = f32_input(&mut g, "x", Shape::new([Dim::T, Dim::Fixed(4)]));
        let w = f32_input(&mut g, "in_proj.weight", Shape::new([Dim::Fixed(4), Dim::Fixed(3)]));
        let y = g.add1(Op::MatMul { transpose_rhs: false }, &[x, w], None).unwrap();
        g.add_output("y", y, kiln_ir::OutputRole::Result);
        let e = lora(&mut g, &mut Doubling).unwrap_err();
        assert_eq!(
            e.to_string(),
            "weight `in_proj.weight` is an adapter target, but %2 computes x·W with it rather than a Linear's x·Wᵀ \
             (fan_in_fan_out adapters are not supported)"
        );
    }
}
