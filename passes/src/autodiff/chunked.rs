//! The training step of one chunk of a long sequence, for backpropagation through time in
//! chunks (gradient checkpointing at chunk boundaries).
//!
//! A sequence too long to keep every activation of (and every scan's saved carries) is cut into
//! chunks. The caller runs the forward model over the chunks keeping only the states at their
//! boundaries, then runs this graph on the chunks from last to first: it recomputes the chunk
//! from its starting state and backpropagates both the chunk's loss and the adjoint of its final
//! state (received from the chunk after it as `cotangent` inputs) into the weights and into its
//! starting state (passed to the chunk before it). Memory is then bounded by one chunk's
//! activations plus one state per chunk, at the cost of running the forward pass twice; the
//! gradients are exactly those of the whole sequence (up to rounding).
//!
//! Inputs: the model's own (tokens, weights, states), `targets: i64[T]` (the token each
//! position predicts, negative where there is none), and one `cotangent` per state output.
//! Outputs: the states' next values (as in the model), `loss_sum` (`Σ -log p(target)`, an f32
//! scalar), `count` (the number of targets), `grad.<weight>` for each weight in `wrt` and
//! `dstate.<state>` for each state input. Everything is a sum, so the caller adds the chunks'
//! results and divides by the total count once.

use super::build::Builder;
use super::loss::cross_entropy_sum;
use super::{backprop, AutodiffError};
use kiln_ir::{DType, Dim, Graph, NodeId, OutputRole, Param, ParamRole, Shape, Type, Value};

/// Builds the chunk training graph of `forward`; see the module docs.
pub fn chunk_training_graph(forward: &Graph, wrt: &[String]) -> Result<Graph, AutodiffError> {
    let mut g = forward.clone();
    let _ = g.take_plan();
    g.name = format!("{}.chunk", forward.name);
    let logits = g.output("logits").ok_or_else(|| AutodiffError::NoOutput("logits".into()))?.value;
    let targets = g.add_input(
        Param { role: ParamRole::Tokens, name: "targets".into() },
        Type::new(DType::I64, Shape::new([Dim::T])),
        None,
    );
    let (total, count) = cross_entropy_sum(&mut g, logits, targets)?;
    let mut b = Builder::new(&mut g, logits.node);
    let loss_sum = b.neg(total)?;
    let loss_sum = b.reshape(loss_sum, Shape::scalar())?;
    let count = b.reshape(count, Shape::scalar())?;

    // Seeds: 1 for the loss, the caller's cotangent for every next state.
    let one = g.constant(1.0, None);
    let mut seeds = vec![(loss_sum, one)];
    let states: Vec<(String, Value)> =
        g.outputs().iter().filter(|o| o.role == OutputRole::State).map(|o| (o.name.clone(), o.value)).collect();
    for (name, value) in &states {
        let ty = g.value_type(*value).clone();
        let cotangent = g.add_input(Param { role: ParamRole::Cotangent, name: name.clone() }, ty, None);
        seeds.push((*value, cotangent));
    }

    let find = |g: &Graph, pick: &dyn Fn(&Param) -> bool| -> Vec<NodeId> {
        g.inputs().iter().copied().filter(|&n| g.param(n).is_some_and(pick)).collect()
    };
    let mut weights = Vec::with_capacity(wrt.len());
    for name in wrt {
        let found = find(&g, &|p| p.role == ParamRole::Weight && p.name == *name);
        weights.push(Value::from(*found.first().ok_or_else(|| AutodiffError::NoWeight(name.clone()))?));
    }
    let state_inputs = find(&g, &|p| matches!(p.role, ParamRole::State { .. }));
    let mut targets_of_grad: Vec<Value> = weights.clone();
    targets_of_grad.extend(state_inputs.iter().map(|&n| Value::from(n)));
    let grads = backprop(&mut g, &seeds, &targets_of_grad)?;

    g.retain_outputs(|o| o.role == OutputRole::State);
    g.add_output("loss_sum", loss_sum, OutputRole::Result);
    g.add_output("count", count, OutputRole::Result);
    let names: Vec<String> = wrt
        .iter()
        .map(|n| format!("grad.{n}"))
        .chain(state_inputs.iter().map(|&n| format!("dstate.{}", g.param(n).map(|p| p.name.as_str()).unwrap_or(""))))
        .collect();
    for ((name, grad), of) in names.into_iter().zip(grads).zip(targets_of_grad) {
        let grad = match grad {
            Some(d) => d,
            None => Builder::new(&mut g, of.node).zeros_like(of)?,
        };
        g.add_output(name, grad, OutputRole::Result);
    }
    Ok(g)
}
