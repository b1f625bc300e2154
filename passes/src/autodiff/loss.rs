//! The training loss, composed from primitives: mean next-token cross-entropy with
//! transformers' semantics for `labels = input_ids` (logits of positions `0..T-1` predict tokens
//! `1..T`, averaged over those `T - 1` predictions).
//!
//! `log_softmax` is computed stably (`z = x - max x`, `z - log Σ exp z`); the count of
//! predictions, `T - 1`, is not a constant of the graph, so it is taken as the sum of the one-hot
//! target rows. With `T = 1` there is nothing to predict and the loss is NaN, as in transformers.

use super::build::Builder;
use super::AutodiffError;
use kiln_ir::{Dim, Graph, Op, ReduceOp, Shape, UnaryOp, Value};

/// Appends the loss of `logits: f32[T, V]` predicting `tokens: i64[T]`; returns the scalar.
pub fn next_token_cross_entropy(g: &mut Graph, logits: Value, tokens: Value) -> Result<Value, AutodiffError> {
    let (t, _) = logits_shape(g, logits)?;
    let mut b = Builder::new(g, logits.node);
    let prev = t
        .checked_sub(Dim::Fixed(1))
        .ok_or_else(|| AutodiffError::Unsupported { node: logits.node, what: format!("a loss over {t} positions") })?;
    let x = b.slice(logits, 0, Dim::Fixed(0), prev)?;
    let targets = b.slice(tokens, 0, Dim::Fixed(1), t)?;
    let (total, count) = cross_entropy_sum(b.g, x, targets)?;
    let mut b = Builder::new(g, logits.node);
    let mean = b.div(total, count)?;
    let loss = b.neg(mean)?;
    b.reshape(loss, Shape::scalar())
}

/// Appends `Σ log p(target)` over the rows of `logits: f32[N, V]` whose `targets: i64[N]` entry
/// is not negative, and the number of such rows; both `f32[1, 1]`. (The loss is minus their ratio.)
pub fn cross_entropy_sum(g: &mut Graph, logits: Value, targets: Value) -> Result<(Value, Value), AutodiffError> {
    let (_, vocab) = logits_shape(g, logits)?;
    let mut b = Builder::new(g, logits.node);
    let rows = b.shape(logits);
    let max = b.op(Op::Reduce { op: ReduceOp::Max, axis: 1 }, &[logits])?;
    let max = b.broadcast(max, rows.clone())?;
    let z = b.sub(logits, max)?;
    let e = b.unary(UnaryOp::Exp, z)?;
    let s = b.sum(e, 1)?;
    let lse = b.unary(UnaryOp::Log, s)?;
    let lse = b.broadcast(lse, rows)?;
    let log_probs = b.sub(z, lse)?;
    let hot = b.op(Op::OneHot { depth: vocab }, &[targets])?;
    let picked = b.mul(hot, log_probs)?;
    let picked = b.sum(picked, 1)?;
    let total = b.sum(picked, 0)?;
    let count = b.sum(hot, 1)?;
    let count = b.sum(count, 0)?;
    Ok((total, count))
}

fn logits_shape(g: &Graph, logits: Value) -> Result<(Dim, usize), AutodiffError> {
    let shape = &g.value_type(logits).shape;
    match *shape.dims() {
        [t, Dim::Fixed(vocab)] => Ok((t, vocab)),
        _ => Err(AutodiffError::Unsupported {
            node: logits.node,
            what: format!("a loss over logits shaped {shape} (expected [T, vocab])"),
        }),
    }
}
