//! The evaluator: runs a [`Plan`] over its graph for one sequence length `T`.
//!
//! Values live in a table indexed by node index (one entry per result) and are dropped as soon as
//! the step holding their last use has run. Inputs are bound by slot from the values passed in,
//! without copying (borrowed tensors stay borrowed), and checked against their declared types.
//! A reshape whose operand dies at that node takes the operand's buffer instead of copying it.
//!
//! Guarantees: each node's results are checked against the types the graph records (resolved for
//! `T`) before anything uses them, so a kernel bug or a graph that lies about its types is caught
//! at the node responsible; outputs are returned in the order of `graph.outputs()`.

use super::dest::{Dest, Emitted};
use super::plan::{Plan, Step, StepKind};
use super::{elementwise, kernel, matmul, reduce, resolve_shape, scan, shape_ops};
use crate::error::{ExecError, Location, NodeErrorKind, Scope};
use crate::tensor::Tensor;
use kiln_ir::{DType, Graph, Node, Op, Type, Value};
use smallvec::SmallVec;

type Results<'b> = SmallVec<[Tensor<'b>; 1]>;
type Table<'b> = Vec<SmallVec<[Option<Tensor<'b>>; 1]>>;

/// Runs `plan` (built for `graph`) with `args[slot]` bound to the input of that slot, for a call
/// of `t` tokens. Returns the graph's outputs in order.
pub(crate) fn run_plan<'b>(
    graph: &Graph,
    plan: &Plan,
    mut args: Vec<Option<Tensor<'b>>>,
    t: usize,
) -> Result<Vec<Tensor<'static>>, ExecError> {
    let mut table: Table<'b> = (0..plan.node_bound).map(|_| SmallVec::new()).collect();
    for step in &plan.steps {
        let node = graph.node(step.node);
        let at = || Location { scope: Scope::default(), node: step.node, origin: node.origin.clone() };
        let fail = |kind| ExecError::Node { at: Box::new(at()), kind };
        let results: Results<'b> = match &step.kind {
            StepKind::Input { slot } => {
                let value = args.get_mut(*slot).and_then(Option::take).ok_or_else(|| fail(unbound(node, *slot)))?;
                check_argument(node, *slot, &value, t).map_err(fail)?;
                SmallVec::from_iter([value])
            }
            StepKind::Scan(body_plan) => {
                let Op::Scan(s) = &node.op else {
                    return Err(fail(NodeErrorKind::Internal {
                        what: "planned as a scan but the node is not one".into(),
                    }));
                };
                let ops = operands(&table, step).map_err(fail)?;
                let mut results = Results::new();
                for r in scan::run(s, body_plan, &ops, t, &at())? {
                    results.push(r);
                }
                results
            }
            StepKind::Compute if matches!(node.op, Op::Fused(_) | Op::FusedMatMul { .. }) => {
                let ops = operands(&table, step).map_err(fail)?;
                let native = |code: &crate::jit::CompiledKernel, ops: &[&Tensor<'_>]| {
                    code.run(ops, t).map_err(|e| NodeErrorKind::Native { what: e.to_string() })
                };
                let results = match (&node.op, &step.native) {
                    (Op::Fused(_), Some(code)) => native(code, &ops),
                    (Op::Fused(k), None) => kernel::run(&node.op, k, &ops, t),
                    (Op::FusedMatMul { transpose_rhs, .. }, Some(code)) => {
                        kernel::matmul_product(step.products, *transpose_rhs, &ops).and_then(|product| {
                            let mut epilogue_ops: SmallVec<[&Tensor<'_>; 4]> = SmallVec::new();
                            epilogue_ops.push(&product);
                            epilogue_ops.extend(ops[2..].iter().copied());
                            native(code, &epilogue_ops)
                        })
                    }
                    (Op::FusedMatMul { transpose_rhs, epilogue }, None) => {
                        kernel::run_matmul(&node.op, step.products, *transpose_rhs, epilogue, &ops, t)
                    }
                    _ => unreachable!("matched above"),
                };
                let mut out = Results::new();
                for r in results.map_err(fail)? {
                    out.push(r);
                }
                out
            }
            StepKind::Compute => {
                let result: Result<Tensor<'b>, NodeErrorKind> = match &node.op {
                    Op::Reshape(shape) => {
                        let x = take_or_clone(&mut table, step).map_err(fail)?;
                        shape_ops::reshape(x, shape, t)
                    }
                    op => {
                        let ops = operands(&table, step).map_err(fail)?;
                        compute(op, step.products, &ops, t, Dest::Alloc).and_then(Emitted::into_owned)
                    }
                };
                SmallVec::from_iter([result.map_err(fail)?])
            }
        };
        check_results(node, &results, t).map_err(fail)?;
        if let Some(entry) = table.get_mut(step.node.index()) {
            *entry = results.into_iter().map(Some).collect();
        }
        for v in &step.free {
            if let Some(slot) = slot_mut(&mut table, *v) {
                *slot = None;
            }
        }
    }

    // Take each output out of the table at its last mention in the output list; earlier
    // mentions of the same value get copies.
    let mut outputs = Vec::with_capacity(plan.outputs.len());
    for (i, v) in plan.outputs.iter().enumerate() {
        let repeated = plan.outputs[i + 1..].contains(v);
        let slot = slot_mut(&mut table, *v);
        let value = if repeated { slot.and_then(|s| s.as_ref().cloned()) } else { slot.and_then(Option::take) };
        let value = value.ok_or_else(|| ExecError::Node {
            at: Box::new(Location { scope: Scope::default(), node: v.node, origin: graph.node(v.node).origin.clone() }),
            kind: NodeErrorKind::Missing { operand: v.to_string() },
        })?;
        outputs.push(value.into_owned());
    }
    Ok(outputs)
}

/// Every op except inputs, scans, reshapes and fused kernels (which the evaluators handle
/// themselves), writing its result to `dest`; matrix products computed by `products`.
pub(crate) fn compute(
    op: &Op,
    products: matmul::Products,
    ops: &[&Tensor<'_>],
    t: usize,
    dest: Dest<'_>,
) -> Result<Emitted, NodeErrorKind> {
    match op {
        Op::Constant(c) => {
            super::arity(op, ops, 0)?;
            dest.emit(Default::default(), |out: &mut [f32]| out.fill(*c))
        }
        Op::Unary(u) => elementwise::unary(op, *u, ops, dest),
        Op::Binary(b) => elementwise::binary(op, *b, ops, dest),
        Op::Compare(c) => elementwise::compare(op, *c, ops, dest),
        Op::Select => elementwise::select(op, ops, dest),
        Op::Reduce { op: r, axis } => reduce::reduce(op, *r, *axis, ops, dest),
        Op::MatMul { transpose_rhs } => matmul::matmul(products, op, *transpose_rhs, ops, dest),
        Op::Broadcast(shape) => shape_ops::broadcast(op, shape, t, ops, dest),
        Op::Transpose(perm) => shape_ops::transpose(op, perm, ops, dest),
        Op::Slice { axis, start, end } => shape_ops::slice(op, *axis, *start, *end, t, ops, dest),
        Op::Concat { axis } => shape_ops::concat(op, *axis, ops, dest),
        Op::Unfold { axis, size } => shape_ops::unfold(op, *axis, *size, ops, dest),
        Op::Gather => shape_ops::gather(op, ops, dest),
        Op::OneHot { depth } => shape_ops::one_hot(op, *depth, ops, dest),
        Op::Reshape(_) | Op::Input(_) | Op::Scan(_) | Op::Fused(_) | Op::FusedMatMul { .. } => {
            Err(NodeErrorKind::Internal { what: format!("`{}` reached the generic kernel dispatch", op.mnemonic()) })
        }
    }
}

fn slot_mut<'t, 'b>(table: &'t mut Table<'b>, v: Value) -> Option<&'t mut Option<Tensor<'b>>> {
    table.get_mut(v.node.index()).and_then(|r| r.get_mut(v.result as usize))
}

fn missing(v: Value) -> NodeErrorKind {
    NodeErrorKind::Missing { operand: v.to_string() }
}

/// The operands of a step, borrowed from the table.
fn operands<'t, 'b>(table: &'t Table<'b>, step: &Step) -> Result<SmallVec<[&'t Tensor<'b>; 4]>, NodeErrorKind> {
    step.operands
        .iter()
        .map(|&v| {
            table
                .get(v.node.index())
                .and_then(|r| r.get(v.result as usize))
                .and_then(Option::as_ref)
                .ok_or_else(|| missing(v))
        })
        .collect()
}

/// The single operand of a step: moved out of the table if this step is its last use (and it is
/// not read twice by this step), cloned otherwise (free for borrowed tensors).
fn take_or_clone<'b>(table: &mut Table<'b>, step: &Step) -> Result<Tensor<'b>, NodeErrorKind> {
    let [v] = step.operands.as_slice() else {
        return Err(NodeErrorKind::Arity { op: "reshape".into(), expected: "1".into(), found: step.operands.len() });
    };
    let slot = slot_mut(table, *v).ok_or_else(|| missing(*v))?;
    let value = if step.free.contains(v) { slot.take() } else { slot.as_ref().cloned() };
    value.ok_or_else(|| missing(*v))
}

pub(crate) fn unbound(node: &Node, slot: usize) -> NodeErrorKind {
    let name = match &node.op {
        Op::Input(p) => p.name.clone(),
        _ => String::new(),
    };
    NodeErrorKind::Unbound { name, what: format!("no value was passed for slot {slot}, or it was bound twice") }
}

/// Checks a bound input against the type its node declares.
pub(crate) fn check_argument(node: &Node, slot: usize, value: &Tensor<'_>, t: usize) -> Result<(), NodeErrorKind> {
    let declared = node.results.first();
    let matches = declared.is_some_and(|d| {
        d.dtype == value.dtype() && resolve_shape(&d.shape, t).is_ok_and(|s| s.as_slice() == value.shape())
    });
    if matches {
        return Ok(());
    }
    Err(NodeErrorKind::Argument {
        index: slot,
        name: match &node.op {
            Op::Input(p) => p.name.clone(),
            _ => String::new(),
        },
        found: value.tensor_type(),
        declared: declared.map_or_else(|| "nothing".into(), Type::to_string),
    })
}

/// Checks a node's results against the types the graph records for it.
fn check_results(node: &Node, results: &[Tensor<'_>], t: usize) -> Result<(), NodeErrorKind> {
    let found: Vec<(DType, &[usize])> = results.iter().map(|r| (r.dtype(), r.shape())).collect();
    check_types(node, &found, t)
}

/// Checks the dtypes and concrete shapes a node produced against the types the graph records.
pub(crate) fn check_types(node: &Node, found: &[(DType, &[usize])], t: usize) -> Result<(), NodeErrorKind> {
    let agree = found.len() == node.results.len()
        && found.iter().zip(&node.results).all(|(&(dtype, shape), ty)| {
            dtype == ty.dtype && resolve_shape(&ty.shape, t).is_ok_and(|s| s.as_slice() == shape)
        });
    if agree {
        return Ok(());
    }
    let join = |items: Vec<String>| items.join(", ");
    Err(NodeErrorKind::ResultType {
        found: join(found.iter().map(|(d, s)| format!("{d}{s:?}")).collect()),
        recorded: join(node.results.iter().map(Type::to_string).collect()),
        resolved: join(
            node.results
                .iter()
                .map(|ty| match resolve_shape(&ty.shape, t) {
                    Ok(s) => format!("{}{:?}", ty.dtype, s.as_slice()),
                    Err(_) => format!("{}[invalid]", ty.dtype),
                })
                .collect(),
        ),
        t,
    })
}
