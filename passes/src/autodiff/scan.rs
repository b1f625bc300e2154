//! The gradient of a scan: a reverse scan over saved carries.
//!
//! The forward scan is rewritten to also stack the carries each step *received* (one extra
//! per-step output per carry). The backward scan runs from the last step to the first; at step
//! `t` its body recomputes the forward body from the saved carries and the step's inputs, and
//! applies the body's own vector-Jacobian product (built by the same `backprop`, so nested scans
//! work) to the adjoints of the new carries (its own carries) and of the step's outputs (a
//! sequence). It returns the carries' adjoints for step `t - 1`, accumulates the adjoints of the
//! scan's constants in extra carries, and emits the adjoints of the step's inputs per step.
//!
//! Why saved carries rather than recomputing them: a recurrence is cheap to store per step
//! compared with its body's intermediates, which are recomputed inside the backward body and
//! never stored. Memory is `T ×` the carries (for Mamba, `T × d_inner × d_state` per layer);
//! recomputing the carries from scratch instead would cost `O(T²)` steps.

use super::build::Builder;
use super::{backprop, AutodiffError};
use kiln_ir::{DType, Graph, NodeId, Op, OutputRole, Param, ParamRole, Scan, Shape, Type, Value};
use std::collections::BTreeMap;

/// The adjoints of the operands of the scan node `node` given the adjoints `dys` of its results.
pub(crate) fn adjoints(
    g: &mut Graph,
    node: NodeId,
    scan: &Scan,
    operands: &[Value],
    dys: &[Option<Value>],
    wanted: &[bool],
) -> Result<Vec<Option<Value>>, AutodiffError> {
    let (nc, ns, nk) = (scan.carries, scan.sequences, scan.constants);
    let ny = scan.body.outputs().len() - nc;
    let fail = |what: String| AutodiffError::Unsupported { node, what };
    if scan.reverse {
        return Err(fail("differentiating a reverse scan".into()));
    }
    let carry_types: Vec<Type> = operands[..nc].iter().map(|&v| g.value_type(v).clone()).collect();
    if carry_types.iter().any(|t| t.dtype != DType::F32) {
        return Err(fail("a scan with a non-f32 carry".into()));
    }
    let steps = g.value_type(operands[nc]).shape.dims()[0];

    // 1. The forward scan also stacks the carries each step receives.
    let saved: Vec<Value> = save_carries(g, node, scan, steps)?;

    // 2. What the backward scan carries and iterates over.
    let seq_wanted: Vec<usize> = (0..ns).filter(|&s| wanted[nc + s] && is_f32(g, operands[nc + s])).collect();
    let const_wanted: Vec<usize> =
        (0..nk).filter(|&k| wanted[nc + ns + k] && is_f32(g, operands[nc + ns + k])).collect();
    let out_with_adjoint: Vec<usize> = (0..ny).filter(|&j| dys[nc + j].is_some()).collect();

    let body = backward_body(scan, &carry_types, &seq_wanted, &const_wanted, &out_with_adjoint)?;

    // 3. The backward scan's operands: carries (adjoints of the final carries, zero accumulators
    //    for the constants), sequences (inputs, saved carries, output adjoints), constants.
    let mut b = Builder::new(g, node);
    let mut ops: Vec<Value> = Vec::new();
    for (i, dy) in dys[..nc].iter().enumerate() {
        ops.push(match dy {
            Some(d) => *d,
            None => b.fill(0.0, carry_types[i].shape.clone())?,
        });
    }
    for &k in &const_wanted {
        ops.push(b.zeros_like(operands[nc + ns + k])?);
    }
    ops.extend_from_slice(&operands[nc..nc + ns]);
    ops.extend_from_slice(&saved);
    ops.extend(out_with_adjoint.iter().filter_map(|&j| dys[nc + j]));
    ops.extend_from_slice(&operands[nc + ns..]);
    let reverse = Scan {
        body,
        carries: nc + const_wanted.len(),
        sequences: ns + nc + out_with_adjoint.len(),
        constants: nk,
        reverse: true,
    };
    let back = b.op(Op::Scan(Box::new(reverse)), &ops)?.node;

    let mut out = vec![None; operands.len()];
    for (i, slot) in out.iter_mut().enumerate().take(nc) {
        if wanted[i] {
            *slot = Some(Value::new(back, i as u16));
        }
    }
    for (r, &k) in const_wanted.iter().enumerate() {
        out[nc + ns + k] = Some(Value::new(back, (nc + r) as u16));
    }
    for (r, &s) in seq_wanted.iter().enumerate() {
        out[nc + s] = Some(Value::new(back, (nc + const_wanted.len() + r) as u16));
    }
    Ok(out)
}

fn is_f32(g: &Graph, v: Value) -> bool {
    g.value_type(v).dtype == DType::F32
}

/// Rewrites the scan node in place so that it also returns, per step, the carries the step
/// received; returns those stacked results. Existing results keep their indices.
fn save_carries(g: &mut Graph, node: NodeId, scan: &Scan, steps: kiln_ir::Dim) -> Result<Vec<Value>, AutodiffError> {
    let mut body = scan.body.clone();
    let first_new = g.node(node).results.len();
    let mut types = Vec::new();
    for i in 0..scan.carries {
        let arg =
            argument(&body, i).ok_or(AutodiffError::Internal { what: format!("scan body has no argument {i}") })?;
        let name = body.param(arg.node).map(|p| p.name.clone()).unwrap_or_default();
        let ty = body.value_type(arg).clone();
        types.push(Type::new(ty.dtype, Shape::new(std::iter::once(steps).chain(ty.shape.dims().iter().copied()))));
        body.add_output(format!("saved.{name}"), arg, OutputRole::Result);
    }
    let mut augmented = scan.clone();
    augmented.body = body;
    let n = g.node_mut(node);
    n.op = Op::Scan(Box::new(augmented));
    n.results.extend(types);
    Ok((0..scan.carries).map(|i| Value::new(node, (first_new + i) as u16)).collect())
}

/// The body's `index`-th argument.
fn argument(body: &Graph, index: usize) -> Option<Value> {
    body.inputs()
        .iter()
        .copied()
        .find(|&n| matches!(body.param(n), Some(Param { role: ParamRole::Argument { index: i }, .. }) if *i == index))
        .map(Value::from)
}

/// The backward body. Arguments, in order: carry adjoints (one per forward carry), constant
/// adjoint accumulators (one per wanted constant), the step's forward sequences, its saved
/// carries, its output adjoints (one per forward output that has one), the forward constants.
/// Returns the carry adjoints for the previous step, the updated accumulators, and the adjoints
/// of the wanted sequences.
fn backward_body(
    scan: &Scan,
    carry_types: &[Type],
    seq_wanted: &[usize],
    const_wanted: &[usize],
    out_with_adjoint: &[usize],
) -> Result<Graph, AutodiffError> {
    let fwd = &scan.body;
    let (nc, ns, nk) = (scan.carries, scan.sequences, scan.constants);
    let name_of = |i: usize| {
        argument(fwd, i).and_then(|a| fwd.param(a.node).map(|p| p.name.clone())).unwrap_or_else(|| format!("arg{i}"))
    };
    let type_of = |i: usize| -> Result<Type, AutodiffError> {
        argument(fwd, i)
            .map(|a| fwd.value_type(a).clone())
            .ok_or(AutodiffError::Internal { what: format!("scan body has no argument {i}") })
    };
    let mut g = Graph::new(format!("{}.grad", fwd.name));
    let mut index = 0;
    let mut arg = |g: &mut Graph, name: String, ty: Type| {
        let v = g.add_input(Param { role: ParamRole::Argument { index }, name }, ty, None);
        index += 1;
        v
    };
    let d_carries: Vec<Value> =
        (0..nc).map(|i| arg(&mut g, format!("d.{}", name_of(i)), carry_types[i].clone())).collect();
    let mut d_acc = Vec::new();
    for &k in const_wanted {
        d_acc.push(arg(&mut g, format!("acc.{}", name_of(nc + ns + k)), type_of(nc + ns + k)?));
    }
    let mut fwd_args: BTreeMap<usize, Value> = BTreeMap::new();
    for s in 0..ns {
        fwd_args.insert(nc + s, arg(&mut g, name_of(nc + s), type_of(nc + s)?));
    }
    for (i, ty) in carry_types.iter().enumerate() {
        fwd_args.insert(i, arg(&mut g, name_of(i), ty.clone()));
    }
    let mut d_outs = Vec::new();
    for &j in out_with_adjoint {
        let o = &fwd.outputs()[nc + j];
        d_outs.push(arg(&mut g, format!("d.{}", o.name), fwd.value_type(o.value).clone()));
    }
    for k in 0..nk {
        fwd_args.insert(nc + ns + k, arg(&mut g, name_of(nc + ns + k), type_of(nc + ns + k)?));
    }

    // Recompute the step, then differentiate it.
    let map = inline(fwd, &mut g, &fwd_args)?;
    let mapped = |v: Value| map.get(&v).copied().ok_or(AutodiffError::Internal { what: format!("{v} was not copied") });
    let mut seeds = Vec::new();
    for (i, &d) in d_carries.iter().enumerate() {
        seeds.push((mapped(fwd.outputs()[i].value)?, d));
    }
    for (&j, &d) in out_with_adjoint.iter().zip(&d_outs) {
        seeds.push((mapped(fwd.outputs()[nc + j].value)?, d));
    }
    let mut wrt: Vec<Value> = (0..nc).map(|i| fwd_args[&i]).collect();
    wrt.extend(const_wanted.iter().map(|&k| fwd_args[&(nc + ns + k)]));
    wrt.extend(seq_wanted.iter().map(|&s| fwd_args[&(nc + s)]));
    let grads = backprop(&mut g, &seeds, &wrt)?;

    let mut outputs = Vec::new();
    for (i, grad) in grads[..nc].iter().enumerate() {
        outputs.push((format!("d.{}", name_of(i)), grad_or_zero(&mut g, *grad, fwd_args[&i])?));
    }
    for (r, &k) in const_wanted.iter().enumerate() {
        let total = match grads[nc + r] {
            Some(d) => {
                let mut b = Builder::new(&mut g, d.node);
                b.add(d_acc[r], d)?
            }
            None => d_acc[r],
        };
        outputs.push((format!("acc.{}", name_of(nc + ns + k)), total));
    }
    for (r, &s) in seq_wanted.iter().enumerate() {
        let grad = grads[nc + const_wanted.len() + r];
        outputs.push((format!("d.{}", name_of(nc + s)), grad_or_zero(&mut g, grad, fwd_args[&(nc + s)])?));
    }
    for (name, v) in outputs {
        g.add_output(name, v, OutputRole::Result);
    }
    Ok(g)
}

fn grad_or_zero(g: &mut Graph, grad: Option<Value>, like: Value) -> Result<Value, AutodiffError> {
    match grad {
        Some(d) => Ok(d),
        None => Builder::new(g, like.node).zeros_like(like),
    }
}

/// Copies every node of `src` except its inputs into `dst`, binding the input that is argument
/// `i` to `args[i]`; returns where each `src` value went.
pub(crate) fn inline(
    src: &Graph,
    dst: &mut Graph,
    args: &BTreeMap<usize, Value>,
) -> Result<BTreeMap<Value, Value>, AutodiffError> {
    let order =
        src.topo_order().map_err(|_| AutodiffError::Internal { what: format!("`{}` has a cycle", src.name) })?;
    let mut map = BTreeMap::new();
    for id in order {
        let node = src.node(id);
        if let Op::Input(p) = &node.op {
            let ParamRole::Argument { index } = p.role else {
                return Err(AutodiffError::Internal {
                    what: format!("scan body input `{}` is not an argument", p.name),
                });
            };
            let v =
                *args.get(&index).ok_or(AutodiffError::Internal { what: format!("no value for argument {index}") })?;
            map.insert(Value::from(id), v);
            continue;
        }
        let operands = src
            .operands(id)
            .iter()
            .map(|v| map.get(v).copied())
            .collect::<Option<Vec<Value>>>()
            .ok_or(AutodiffError::Internal { what: format!("an operand of %{} was not copied", id.index()) })?;
        let new = dst.add_unchecked(node.clone(), &operands);
        for r in 0..node.results.len() {
            map.insert(Value::new(id, r as u16), Value::new(new, r as u16));
        }
    }
    Ok(map)
}
