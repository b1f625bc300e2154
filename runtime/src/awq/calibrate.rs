//! Calibration capture: runs the f32 model over calibration tokens and records, for every weight
//! that a top-level product reads as its `transpose_rhs` operand (`y = x · Wᵀ`, a `Linear`), the
//! [`ChannelStats`] of the product's input rows `x`.
//!
//! The model's compiled graph gets one extra output per distinct product input (named
//! `awq.input.{i}`); the graph is otherwise the one [`crate::Model`] runs, so the captured rows
//! are exactly the f32 values the product reads. The tokens run in windows of
//! [`CalibrationOptions::window`], carrying the recurrent state from one window to the next as
//! [`crate::Model::forward`] does, so the rows do not depend on the window (up to the backend's
//! reassociation between call lengths).
//!
//! Only products at the top level of the graph are seen (a product inside a scan body runs once
//! per step and is left alone), and only uses as such a product's weight count: a weight that is
//! also gathered (a tied embedding and head) gets statistics from its products alone, and its
//! other uses are counted in [`WeightStats::other_uses`].

use super::stats::StatsAccumulator;
use super::{AwqError, ChannelStats};
use crate::checkpoint::Checkpoint;
use crate::model::{compile_spec_with, resolve_spec, LoadOptions, Model};
use kiln_ir::{Dim, Graph, NodeId, Op, OutputRole, ParamRole, Value};

/// How to run the calibration.
#[derive(Clone, Debug)]
pub struct CalibrationOptions {
    /// Tokens per call; the state carries across calls.
    pub window: usize,
    /// At most this many rows are sampled per weight (evenly strided over all rows).
    pub max_rows: usize,
    /// Spec, backend, compile options and passes (no adapter: calibration runs the base model).
    pub load: LoadOptions,
}

impl Default for CalibrationOptions {
    fn default() -> CalibrationOptions {
        CalibrationOptions { window: 256, max_rows: 512, load: LoadOptions::default() }
    }
}

/// A weight read as the `transpose_rhs` operand of top-level products.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductWeight {
    /// The weight's name in the checkpoint.
    pub name: String,
    /// `N`, the output features.
    pub rows: usize,
    /// `K`, the input features (the channels the scale applies to).
    pub cols: usize,
    /// The products' inputs `x`, in node order.
    pub inputs: Vec<Value>,
    /// Uses of the weight that are not such products (a gather, a product inside a scan).
    pub other_uses: usize,
}

/// The weights of `graph` that top-level `transpose_rhs` products read, in graph input order.
pub fn product_weights(graph: &Graph) -> Result<Vec<ProductWeight>, AwqError> {
    let mut found = Vec::new();
    for &input in graph.inputs() {
        let Some(param) = graph.param(input).filter(|p| p.role == ParamRole::Weight) else { continue };
        let mut inputs = Vec::new();
        let mut other_uses = 0;
        for user in graph.users(input) {
            match product_input(graph, user, input) {
                Some(x) => inputs.push(x),
                None => other_uses += 1,
            }
        }
        if inputs.is_empty() {
            continue;
        }
        let ty = &graph.node(input).results[0];
        let dims: Vec<Option<usize>> = ty.shape.dims().iter().map(|d| d.fixed()).collect();
        let [Some(rows), Some(cols)] = dims[..] else {
            return Err(AwqError::WeightShape { weight: param.name.clone(), found: ty.to_string() });
        };
        for &x in &inputs {
            let xt = graph.value_type(x);
            if xt.shape.dims().last() != Some(&Dim::Fixed(cols)) {
                return Err(AwqError::ProductShape { weight: param.name.clone(), found: xt.to_string(), k: cols });
            }
        }
        found.push(ProductWeight { name: param.name.clone(), rows, cols, inputs, other_uses });
    }
    Ok(found)
}

/// The input `x` of `user` when it is a top-level `x · Wᵀ` product with `weight` as `W` only.
fn product_input(graph: &Graph, user: NodeId, weight: NodeId) -> Option<Value> {
    let transposed =
        matches!(graph.node(user).op, Op::MatMul { transpose_rhs: true } | Op::FusedMatMul { transpose_rhs: true, .. });
    let ops = graph.operands(user);
    let only_rhs = ops.get(1).is_some_and(|v| v.node == weight)
        && ops.iter().enumerate().all(|(slot, v)| slot == 1 || v.node != weight);
    (transposed && only_rhs).then(|| ops[0])
}

/// The statistics of one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightStats {
    pub name: String,
    /// `N`.
    pub rows: usize,
    /// `K`.
    pub cols: usize,
    /// How many products read the weight (their rows are pooled).
    pub products: usize,
    /// Uses that are not such products (see [`ProductWeight::other_uses`]).
    pub other_uses: usize,
    pub stats: ChannelStats,
}

/// What a calibration run recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Calibration tokens run.
    pub tokens: usize,
    /// Calls they ran in.
    pub windows: usize,
    /// One entry per weight, in graph input order.
    pub weights: Vec<WeightStats>,
}

/// Runs the model of `checkpoint` over `tokens` and records the input statistics of every
/// weight of a top-level `transpose_rhs` product.
pub fn calibrate(
    checkpoint: Checkpoint,
    tokens: &[i64],
    options: &CalibrationOptions,
) -> Result<Calibration, AwqError> {
    if tokens.is_empty() {
        return Err(AwqError::NoTokens);
    }
    if options.window == 0 {
        return Err(AwqError::ZeroOption { what: "window" });
    }
    if options.load.adapter.is_some() {
        return Err(AwqError::AdapterGiven);
    }
    let load = &options.load;
    let spec = resolve_spec(checkpoint.config(), load.spec.as_deref())?;
    let (mut graph, _) = compile_spec_with(&spec, checkpoint.config(), &load.compile, &load.passes)?;
    let weights = product_weights(&graph)?;
    let mut captured: Vec<Value> = Vec::new();
    for x in weights.iter().flat_map(|w| &w.inputs) {
        if !captured.contains(x) {
            captured.push(*x);
        }
    }
    let first = graph.outputs().len();
    for (i, &x) in captured.iter().enumerate() {
        graph.add_output(format!("awq.input.{i}"), x, OutputRole::Result);
    }
    let slots: Vec<Vec<usize>> = weights
        .iter()
        .map(|w| w.inputs.iter().map(|x| captured.iter().position(|c| c == x).unwrap_or(0)).collect())
        .collect();
    let windows: Vec<&[i64]> = tokens.chunks(options.window).collect();
    let mut accumulators = Vec::with_capacity(weights.len());
    for w in &weights {
        let mut total = 0;
        for &x in &w.inputs {
            for window in &windows {
                total += input_rows(&graph, x, window.len(), &w.name)?;
            }
        }
        accumulators.push(StatsAccumulator::new(w.cols, total, options.max_rows)?);
    }
    let model = Model::with_graph(graph, Vec::new(), None, checkpoint, load)?;
    let mut state = model.new_state();
    for window in &windows {
        let outputs = model.run(window, &mut state)?;
        let captures = outputs.get(first..).unwrap_or_default();
        for (indices, acc) in slots.iter().zip(&mut accumulators) {
            for &index in indices {
                let rows = captures
                    .get(index)
                    .and_then(|t| t.as_ref())
                    .and_then(|t| t.as_f32())
                    .ok_or_else(|| AwqError::MissingCapture(format!("awq.input.{index}")))?;
                acc.push(rows)?;
            }
        }
    }
    let mut stats = Vec::with_capacity(weights.len());
    for (w, acc) in weights.into_iter().zip(accumulators) {
        stats.push(WeightStats {
            products: w.inputs.len(),
            stats: acc.finish()?,
            name: w.name,
            rows: w.rows,
            cols: w.cols,
            other_uses: w.other_uses,
        });
    }
    Ok(Calibration { tokens: tokens.len(), windows: windows.len(), weights: stats })
}

/// Rows of the product input `x` (all but its last axis) in a call of `t` tokens.
fn input_rows(graph: &Graph, x: Value, t: usize, weight: &str) -> Result<usize, AwqError> {
    let ty = graph.value_type(x);
    let dims = ty.shape.resolve(t).ok_or_else(|| AwqError::ProductShape {
        weight: weight.into(),
        found: format!("{ty} at T = {t}"),
        k: ty.shape.dims().last().and_then(|d| d.fixed()).unwrap_or(0),
    })?;
    Ok(dims[..dims.len().saturating_sub(1)].iter().product())
}
