//! Scans: a recurrence over the leading axis of the sequence operands (see [`kiln_ir::Scan`]).
//!
//! Operands are the initial carries, then the sequences, then the constants; the body binds them
//! as `Argument { index }` in that order, each sequence with its leading axis removed. The body
//! returns the new carries, then the per-step outputs. The scan's results are the final carries,
//! then the per-step outputs stacked along a new leading axis. A `reverse` scan runs the steps
//! from last to first but still stores each step's outputs at that step's own index.
//!
//! Semantics of an empty scan (sequences of length 0, e.g. `T - 1` for `T = 1`): the final
//! carries are the initial ones and the stacked outputs have a leading axis of 0, their other
//! dimensions taken from the body's declared output types.
//!
//! A planned scan ([`run_planned`]) writes its results straight into the slices the outer plan
//! gave them: the carries live in the carry results (initialized from the operands, read by each
//! step as its arguments, overwritten with the body's new carries after the step), per-step
//! outputs are copied into their rows of the stacked results, and the body runs in the scan's
//! scratch region, laid out once per scan for this `T` and reused by every step.
//!
//! A body that is one compiled kernel runs instead by blocks of rows, every step of a block on
//! one thread ([`crate::jit::scan`]), when the call's shapes allow it.
//!
//! Guarantees: the body's plan is built once per scan node (by the plan of the outer graph), never
//! per step; sequence slices and constants are passed to the body as borrowed views, not copies;
//! any error inside the body names the scan node and the step, outermost scan first.

use super::arena::Layout;
use super::eval::run_plan;
use super::plan::Plan;
use super::planned;
use super::resolve_shape;
use crate::error::{ExecError, Location, NodeErrorKind};
use crate::tensor::{numel, quantized_operand, Dims, OutSlice, Tensor, TensorData};
use kiln_ir::Scan;
use smallvec::SmallVec;

/// Runs the scan node at `at` with operands `ops`, for a call of `t` tokens.
pub(crate) fn run(
    scan: &Scan,
    body_plan: &Plan,
    ops: &[&Tensor<'_>],
    t: usize,
    at: &Location,
) -> Result<SmallVec<[Tensor<'static>; 1]>, ExecError> {
    let fail = |kind| ExecError::Node { at: Box::new(at.clone()), kind };
    let scan_err = |what: String| fail(NodeErrorKind::Scan { what });
    let c = scan.carries;
    let (steps, per_step) = check(scan, body_plan, ops, at)?;
    let n = ops.len();
    let n_out = body_plan.outputs.len();
    let (carries_in, rest) = ops.split_at(c);
    let (sequences, constants) = rest.split_at(scan.sequences);

    let mut carries: Vec<Tensor<'_>> = carries_in.iter().map(|x| x.view()).collect();
    let mut stacks: Vec<Option<(Dims, TensorData<'static>)>> = vec![None; n_out - c];
    for i in 0..steps {
        let step = if scan.reverse { steps - 1 - i } else { i };
        let mut args: Vec<Option<Tensor<'_>>> = Vec::with_capacity(n);
        args.extend(carries.drain(..).map(Some));
        step_args(&mut args, sequences, &per_step, step, constants).map_err(scan_err)?;

        let outs = run_plan(&scan.body, body_plan, args, t).map_err(|e| e.in_scan(at.node, Some(step)))?;
        let mut outs = outs.into_iter();
        carries.extend(outs.by_ref().take(c));
        for (j, (out, stack)) in outs.zip(&mut stacks).enumerate() {
            if stack.is_none() {
                let len = steps.checked_mul(out.len()).ok_or_else(|| {
                    fail(NodeErrorKind::TooLarge {
                        shape: std::iter::once(steps).chain(out.shape().iter().copied()).collect(),
                    })
                })?;
                let zeros = TensorData::zeros(out.dtype(), len).ok_or_else(|| fail(quantized_operand(out.dtype())))?;
                *stack = Some((out.shape().iter().copied().collect(), zeros));
            }
            let Some((shape, data)) = stack else { continue };
            if shape.as_slice() != out.shape() || !data.write_at(step * out.len(), out.data()) {
                return Err(scan_err(format!(
                    "per-step output {j} is {} at step {step} but {}{:?} at another step",
                    out.tensor_type(),
                    data.dtype(),
                    shape.as_slice()
                )));
            }
        }
    }

    let mut results: SmallVec<[Tensor<'static>; 1]> = carries.into_iter().map(Tensor::into_owned).collect();
    for (j, stack) in stacks.into_iter().enumerate() {
        let (elem, data) = match stack {
            Some(s) => s,
            // No step ran: take the per-step shape from the body's declared output type.
            None => {
                let ty = body_plan
                    .outputs
                    .get(c + j)
                    .map(|&v| scan.body.value_type(v))
                    .ok_or_else(|| scan_err(format!("the body has no output {}", c + j)))?;
                let elem = resolve_shape(&ty.shape, t).map_err(fail)?;
                (elem, TensorData::zeros(ty.dtype, 0).ok_or_else(|| fail(quantized_operand(ty.dtype)))?)
            }
        };
        let shape: Dims = std::iter::once(steps).chain(elem).collect();
        results.push(Tensor::from_parts(shape, data));
    }
    Ok(results)
}

/// Checks the operands against the scan and its body; returns the number of steps and each
/// sequence's per-step shape and element count.
fn check(
    scan: &Scan,
    body_plan: &Plan,
    ops: &[&Tensor<'_>],
    at: &Location,
) -> Result<(usize, Vec<(Dims, usize)>), ExecError> {
    let fail = |kind| ExecError::Node { at: Box::new(at.clone()), kind };
    let scan_err = |what: String| fail(NodeErrorKind::Scan { what });
    let (c, s) = (scan.carries, scan.sequences);
    let n = c + s + scan.constants;
    if ops.len() != n {
        return Err(fail(NodeErrorKind::Arity { op: "scan".into(), expected: n.to_string(), found: ops.len() }));
    }
    if body_plan.slots != n {
        return Err(scan_err(format!("the body takes {} arguments, the scan passes {n}", body_plan.slots)));
    }
    let n_out = body_plan.outputs.len();
    if n_out < c {
        return Err(scan_err(format!("the body returns {n_out} values, fewer than its {c} carries")));
    }
    let mut steps: Option<usize> = None;
    let mut per_step: Vec<(Dims, usize)> = Vec::with_capacity(s);
    for (i, seq) in ops[c..c + s].iter().enumerate() {
        let Some((&len, elem)) = seq.shape().split_first() else {
            return Err(scan_err(format!("sequence operand {} is a scalar", c + i)));
        };
        if let Some(prev) = steps.filter(|&p| p != len) {
            return Err(scan_err(format!("sequence operand {} has {len} steps, another has {prev}", c + i)));
        }
        steps = Some(len);
        let elem_len = numel(elem).ok_or_else(|| fail(NodeErrorKind::TooLarge { shape: elem.to_vec() }))?;
        per_step.push((elem.iter().copied().collect(), elem_len));
    }
    let steps = steps.ok_or_else(|| scan_err("a scan needs at least one sequence operand".into()))?;
    Ok((steps, per_step))
}

/// Runs the planned scan node at `at`: `outs` are its results (the graph's types, resolved),
/// `scratch` holds the body's arena.
pub(crate) fn run_planned(
    scan: &Scan,
    body_plan: &Plan,
    ops: &[&Tensor<'_>],
    outs: &mut [OutSlice<'_>],
    scratch: &mut [u8],
    t: usize,
    at: &Location,
) -> Result<(), ExecError> {
    let fail = |kind| ExecError::Node { at: Box::new(at.clone()), kind };
    let scan_err = |what: String| fail(NodeErrorKind::Scan { what });
    let c = scan.carries;
    let (steps, per_step) = check(scan, body_plan, ops, at)?;
    let n_out = body_plan.outputs.len();
    if outs.len() != n_out {
        return Err(scan_err(format!("the body returns {n_out} values, the scan has {} results", outs.len())));
    }
    if let Some(rows) = &body_plan.rows {
        let native = |e: crate::jit::JitError| fail(NodeErrorKind::Native { what: e.to_string() });
        if rows.run(scan, ops, outs, steps, t).map_err(native)? {
            return Ok(());
        }
    }
    let buffers = body_plan.arena.as_ref().ok_or_else(|| scan_err("the body has no memory plan".into()))?;
    let layout = Layout::resolve(buffers, t).map_err(fail)?;
    if layout.total > scratch.len() {
        return Err(scan_err(format!(
            "the body needs {} bytes, its scratch region has {}",
            layout.total,
            scratch.len()
        )));
    }
    let (carries_in, rest) = ops.split_at(c);
    let (sequences, constants) = rest.split_at(scan.sequences);
    let carry_dims: Vec<Dims> = carries_in.iter().map(|x| x.shape().iter().copied().collect()).collect();
    for (j, (out, x)) in outs.iter_mut().zip(carries_in).enumerate() {
        if out.len() != x.len() || !out.write_at(0, x.data()) {
            return Err(scan_err(format!(
                "carry {j} is {} but the scan's result holds {} elements",
                x.tensor_type(),
                out.len()
            )));
        }
    }
    for i in 0..steps {
        let step = if scan.reverse { steps - 1 - i } else { i };
        let produced = {
            let mut args: Vec<Option<Tensor<'_>>> = Vec::with_capacity(ops.len());
            args.extend(
                outs[..c].iter().zip(&carry_dims).map(|(o, d)| Some(Tensor::from_parts(d.clone(), o.as_data()))),
            );
            step_args(&mut args, sequences, &per_step, step, constants).map_err(scan_err)?;
            planned::run_planned(&scan.body, body_plan, &layout, scratch, args, t)
                .map_err(|e| e.in_scan(at.node, Some(step)))?
        };
        for (j, (p, out)) in produced.iter().zip(outs.iter_mut()).enumerate() {
            let (dtype, shape, data) = p.data(scratch).map_err(fail)?;
            let offset = if j < c { 0 } else { step * data.len() };
            let fits = if j < c { out.len() == data.len() } else { out.len() == steps * data.len() };
            if !fits || !out.write_at(offset, &data) {
                return Err(scan_err(format!(
                    "body output {j} is {dtype}{shape:?} at step {step}, which does not fit the scan's result ({} {} elements)",
                    out.dtype(),
                    out.len()
                )));
            }
        }
    }
    Ok(())
}

/// Appends a step's arguments after its carries: the `step`-th slice of every sequence (borrowed,
/// shaped `per_step[k].0`), then the constants (borrowed).
fn step_args<'a>(
    args: &mut Vec<Option<Tensor<'a>>>,
    sequences: &[&'a Tensor<'_>],
    per_step: &[(Dims, usize)],
    step: usize,
    constants: &[&'a Tensor<'_>],
) -> Result<(), String> {
    for (seq, (elem, elem_len)) in sequences.iter().zip(per_step) {
        let data = seq
            .data()
            .sub(step * elem_len, *elem_len)
            .ok_or_else(|| format!("step {step} is outside a sequence operand"))?;
        args.push(Some(Tensor::from_parts(elem.clone(), data)));
    }
    args.extend(constants.iter().map(|x| Some(x.view())));
    Ok(())
}
