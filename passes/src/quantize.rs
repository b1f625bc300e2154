//! `quantize`: gives weight matrices a 4-bit type ([`kiln_ir::DType::Quant`]), so that every
//! product reading them becomes a quantized product and every gather a quantized lookup.
//!
//! The pass changes no op: it retypes weight inputs. The type rules allow a quantized matrix
//! only as the weight of a product (`matmul`, `matmul.fused`, either layout) or the table of a
//! `gather`, so a weight is a candidate only when every use reads it that way, directly from the
//! input. Which candidates are quantized is the policy ([`QuantizeOptions`]), in this order:
//!
//! 1. An explicit direction wins: [`QuantizeOptions::overrides`] (the command line), then the
//!    spec's `quantize = true | false` on the weight ([`Graph::quantize_hint`]). Directing a
//!    weight that is not a candidate to be quantized is an error naming it and the use that
//!    prevents it.
//! 2. A table of token ids (an embedding) only with [`QuantizeOptions::embeddings`].
//! 3. The head (a weight whose product reaches a result output through no other product or
//!    scan; the logits' projection) only with [`QuantizeOptions::head`]. A tied embedding and
//!    head needs both.
//! 4. Any other product weight when its rows are at least one group long (`K >= group`): a
//!    shorter row would pay a scale per handful of values for nothing.
//!
//! Recurrent parameters (`time_decay`, `A_log`, `D`, convolution taps, norms) are never
//! candidates: they are read elementwise, not by a product.
//!
//! Guarantees: the graph stays valid (the verifier holds after the pass); the decision for every
//! rank-2 weight is reported with its reason ([`QuantizeReport`]), in input order.

use kiln_ir::{BinaryOp, DType, Graph, NodeId, Op, OutputRole, Param, ParamRole, Quant, Shape, Type};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use thiserror::Error;

/// The pass's name in the pass manager's style (it is run by hand, after `lora` and before the
/// default pipeline, because it needs its options).
pub const NAME: &str = "quantize";
/// What the pass does, as `kiln dump --passes` describes it.
pub const DESCRIPTION: &str = "store product weights as 4-bit matrices (with --quantize)";

/// The policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizeOptions {
    pub quant: Quant,
    /// Quantize tables that token ids index (embeddings).
    pub embeddings: bool,
    /// Quantize the head (the logits' projection).
    pub head: bool,
    /// Directions by tensor name; they take precedence over the spec's.
    pub overrides: BTreeMap<String, bool>,
    /// Only the weights [`QuantizeOptions::overrides`] directs to be quantized are (a checkpoint
    /// written quantized says exactly which of its weights are).
    pub exact: bool,
    /// Weights stored with activation-aware scales `s` (AWQ): the matrix holds `W·diag(s)`, so
    /// each product `x·Wᵀ` becomes `(x / s)·(W·diag(s))ᵀ`, reading `s` as the f32 weight input
    /// `NAME.awq_scale` of shape `[K]`.
    pub input_scales: BTreeSet<String>,
}

/// The name of the input holding the activation-aware scales of weight `name`.
pub fn input_scale_name(name: &str) -> String {
    format!("{name}.awq_scale")
}

impl QuantizeOptions {
    pub fn new(quant: Quant) -> QuantizeOptions {
        QuantizeOptions {
            quant,
            embeddings: false,
            head: false,
            overrides: BTreeMap::new(),
            exact: false,
            input_scales: BTreeSet::new(),
        }
    }
}

/// What a weight is to the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightRole {
    /// The weight of products only.
    Linear,
    /// The head: a product weight whose product is the logits (up to elementwise work).
    Head,
    /// Indexed by token ids (possibly also a product weight: a tied head).
    Embedding,
}

/// Why a weight was or was not quantized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Directed by the caller: the command line, or a checkpoint that says which of its weights
    /// are quantized.
    Override,
    /// Directed by the spec's `quantize = ...`.
    Spec,
    /// The policy for its role.
    Policy,
    /// Its rows are shorter than one group.
    ShortRows { k: usize },
    /// Something other than a product or a gather reads it.
    Use { op: String },
    /// Nothing reads it.
    Unused,
}

/// The decision for one rank-2 weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub role: Option<WeightRole>,
    pub quantized: bool,
    pub reason: Reason,
}

/// Every decision, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    pub decisions: Vec<Decision>,
}

impl QuantizeReport {
    pub fn quantized(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.quantized)
    }
}

impl fmt::Display for QuantizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.decisions {
            let role = match d.role {
                Some(WeightRole::Linear) => "linear",
                Some(WeightRole::Head) => "head",
                Some(WeightRole::Embedding) => "embedding",
                None => "-",
            };
            let why = match &d.reason {
                Reason::Override => "directed".to_string(),
                Reason::Spec => "spec".to_string(),
                Reason::Policy => "policy".to_string(),
                Reason::ShortRows { k } => format!("rows of {k} are shorter than a group"),
                Reason::Use { op } => format!("read by `{op}`"),
                Reason::Unused => "unused".to_string(),
            };
            let verdict = if d.quantized { "quantized" } else { "f32" };
            writeln!(f, "{:<48} [{}, {}] {role:<9} {verdict:<9} ({why})", d.name, d.rows, d.cols)?;
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantizeError {
    #[error("weight `{weight}` is directed to be quantized ({by}), but {why}")]
    NotQuantizable { weight: String, by: &'static str, why: String },
    #[error("quantization groups must hold at least one value")]
    EmptyGroup,
    #[error("a direction to quantize or keep names `{0}`, which is not a weight matrix of this model (only matrices are quantized)")]
    UnknownOverride(String),
    #[error("weight `{weight}` has activation-aware scales, but {why}")]
    InputScale { weight: String, why: String },
    #[error("the scaled product of `{weight}`: {source}")]
    Type { weight: String, source: kiln_ir::TypeError },
}

/// Applies the policy to `graph`'s weight inputs; see the module documentation.
pub fn quantize(graph: &mut Graph, options: &QuantizeOptions) -> Result<QuantizeReport, QuantizeError> {
    if options.quant.group == 0 {
        return Err(QuantizeError::EmptyGroup);
    }
    let heads = head_products(graph);
    let mut report = QuantizeReport::default();
    let mut seen = BTreeSet::new();
    let mut chosen: BTreeMap<String, NodeId> = BTreeMap::new();
    let caller = if options.exact { "by the checkpoint" } else { "on the command line" };
    for &input in graph.inputs() {
        let Some(param) = graph.param(input).filter(|p| p.role == ParamRole::Weight) else { continue };
        let ty = graph.value_type(input.into());
        let dims: Vec<usize> = ty.shape.dims().iter().filter_map(|d| d.fixed()).collect();
        let [rows, cols] = dims[..] else { continue };
        if ty.dtype != DType::F32 || ty.rank() != 2 {
            continue;
        }
        seen.insert(param.name.clone());
        let role = role(graph, input, &heads);
        let direction = match options.overrides.get(&param.name) {
            Some(&d) => Some((d, Reason::Override, caller)),
            None => graph.quantize_hint(&param.name).map(|d| (d, Reason::Spec, "in the spec")),
        };
        let (quantized, reason) = match (role.clone(), direction) {
            (Err(Reason::Use { op }), Some((true, _, by))) => {
                let why = format!("it is read by `{op}`, and only products and gathers read quantized matrices");
                return Err(QuantizeError::NotQuantizable { weight: param.name.clone(), by, why });
            }
            (Err(reason), _) => (false, reason),
            (Ok(_), Some((d, reason, _))) => (d, reason),
            (Ok(_), None) if options.exact => (false, Reason::Override),
            (Ok(WeightRole::Embedding), None) => {
                let head = heads.iter().any(|&p| graph.operands(p).get(1).is_some_and(|v| v.node == input));
                (options.embeddings && (!head || options.head), Reason::Policy)
            }
            (Ok(WeightRole::Head), None) => (options.head, Reason::Policy),
            (Ok(WeightRole::Linear), None) if cols < options.quant.group as usize => {
                (false, Reason::ShortRows { k: cols })
            }
            (Ok(WeightRole::Linear), None) => (true, Reason::Policy),
        };
        if quantized {
            chosen.insert(param.name.clone(), input);
        }
        report.decisions.push(Decision { name: param.name.clone(), rows, cols, role: role.ok(), quantized, reason });
    }
    if let Some(name) = options.overrides.keys().find(|n| !seen.contains(*n)) {
        return Err(QuantizeError::UnknownOverride(name.clone()));
    }
    if let Some((name, _)) = graph.quantize_hints().find(|(n, q)| *q && !seen.contains(*n)) {
        let why = "it is not a weight matrix (only matrices are quantized)".to_string();
        return Err(QuantizeError::NotQuantizable { weight: name.to_string(), by: "in the spec", why });
    }
    for &n in chosen.values() {
        if let Some(t) = graph.node_mut(n).results.first_mut() {
            t.dtype = DType::Quant(options.quant);
        }
    }
    for name in &options.input_scales {
        let Some(&weight) = chosen.get(name) else {
            let why = "it is not quantized".to_string();
            return Err(QuantizeError::InputScale { weight: name.clone(), why });
        };
        scale_inputs(graph, weight, name)?;
    }
    Ok(report)
}

/// Rewrites every product `x·Wᵀ` of the quantized `weight` into `(x / s)·Wᵀ` with `s` the new
/// input [`input_scale_name`].
fn scale_inputs(graph: &mut Graph, weight: NodeId, name: &str) -> Result<(), QuantizeError> {
    let bad = |why: String| QuantizeError::InputScale { weight: name.to_string(), why };
    let type_err = |source| QuantizeError::Type { weight: name.to_string(), source };
    let k = graph.value_type(weight.into()).shape.dims()[1];
    let origin = graph.node(weight).origin.clone();
    let scale = graph.add_input(
        Param { role: ParamRole::Weight, name: input_scale_name(name) },
        Type::f32(Shape::new([k])),
        origin,
    );
    for user in graph.users(weight) {
        let ops = graph.operands(user);
        match graph.node(user).op.clone() {
            Op::MatMul { transpose_rhs: true } if ops[1].node == weight && ops[0].node != weight => {
                let x = ops[0];
                let shape = graph.value_type(x).shape.clone();
                let origin = graph.node(user).origin.clone();
                let s = graph.add(Op::Broadcast(shape), &[scale], origin.clone()).map_err(type_err)?;
                let scaled = graph.add(Op::Binary(BinaryOp::Div), &[x, s.into()], origin).map_err(type_err)?;
                graph.rewrite(user, Op::MatMul { transpose_rhs: true }, &[scaled.into(), ops[1]]);
            }
            op => return Err(bad(format!("it is read by `{}`, not only by products x·Wᵀ", op.mnemonic()))),
        }
    }
    Ok(())
}

/// What `input` is to the policy, or why it cannot be quantized.
fn role(graph: &Graph, input: NodeId, heads: &BTreeSet<NodeId>) -> Result<WeightRole, Reason> {
    let mut role = WeightRole::Linear;
    let users = graph.users(input);
    if users.is_empty() {
        return Err(Reason::Unused);
    }
    for user in users {
        let ops = graph.operands(user);
        let slots = ops.iter().enumerate().filter(|(_, v)| v.node == input).map(|(s, _)| s);
        for slot in slots {
            match (&graph.node(user).op, slot) {
                (Op::MatMul { .. } | Op::FusedMatMul { .. }, 1) => {
                    if heads.contains(&user) && role == WeightRole::Linear {
                        role = WeightRole::Head;
                    }
                }
                (Op::Gather, 0) => role = WeightRole::Embedding,
                (op, _) => return Err(Reason::Use { op: op.mnemonic() }),
            }
        }
    }
    Ok(role)
}

/// The products whose result reaches a result output through no other product, scan or
/// gather: walking back from the outputs through everything else, the first products met.
fn head_products(graph: &Graph) -> BTreeSet<NodeId> {
    let mut heads = BTreeSet::new();
    let mut stack: Vec<NodeId> =
        graph.outputs().iter().filter(|o| o.role == OutputRole::Result).map(|o| o.value.node).collect();
    let mut visited = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if !visited.insert(n) {
            continue;
        }
        match graph.node(n).op {
            Op::MatMul { .. } | Op::FusedMatMul { .. } => {
                heads.insert(n);
            }
            Op::Scan(_) | Op::Gather | Op::Input(_) => {}
            _ => stack.extend(graph.operands(n).iter().map(|v| v.node)),
        }
    }
    heads
}
