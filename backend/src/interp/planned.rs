//! The planned evaluator: runs a graph that carries a memory plan, in the plan's order, with every
//! intermediate in one arena at the planned offsets.
//!
//! Each step carves its result regions out of the arena ([`split`]), reads its operands from the
//! rest, and runs the same kernels as the unplanned evaluator, writing straight into those
//! regions ([`Dest::Slice`], [`kernel::run_into`]). A reshape is a view (same bytes, new shape);
//! an in-place op is run by [`elementwise::in_place`] over its operand's region; a scan runs its
//! body in its scratch region ([`scan::run_planned`]); a `matmul.fused` computes its product in
//! its scratch region. Values outside the arena (inputs, and at the top level the outputs, which
//! kernels write into their own allocation) are kept in a side table and read by reference.
//!
//! Guarantees: results are bit-identical to unplanned execution (same kernels, same order of
//! operations per element); every result is checked against the graph's recorded type like in
//! the unplanned evaluator; a plan that would make a step read a region it writes is an error,
//! never aliasing (the arena is only reached through safe splits).

use super::arena::{split, typed, typed_mut, value_range, Arena, Layout, Split};
use super::dest::{Dest, Emitted};
use super::eval::{check_argument, check_types, compute, unbound};
use super::matmul::Products;
use super::plan::{Plan, Step, StepKind};
use super::{elementwise, f32_operand, kernel, matmul, resolve_shape, scan};
use crate::error::{ExecError, Location, NodeErrorKind, Scope};
use crate::jit::products;
use crate::tensor::{numel, quantized_operand, Dims, OutSlice, Tensor, TensorData};
use kiln_ir::{DType, Graph, Node, Op, Placement, Value};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::ops::Range;

/// Where a value lives during a planned call.
#[derive(Clone, Debug)]
enum Loc {
    /// In the arena, `offset` bytes in.
    Arena { offset: usize, dtype: DType, dims: Dims },
    /// Entry `index` of the external values, seen with `dims`.
    Ext { index: usize, dims: Dims },
}

/// An output of a planned call.
#[derive(Debug)]
pub(crate) enum Produced {
    /// In the arena (a scan body's outputs).
    Arena {
        offset: usize,
        dtype: DType,
        dims: Dims,
    },
    Owned(Tensor<'static>),
}

impl Produced {
    /// The output's elements, read from `arena` if they live there.
    pub(crate) fn data<'s>(&'s self, arena: &'s [u8]) -> Result<(DType, &'s [usize], TensorData<'s>), NodeErrorKind> {
        match self {
            Produced::Owned(t) => Ok((t.dtype(), t.shape(), t.data().view())),
            Produced::Arena { offset, dtype, dims } => {
                let range = value_range(*offset, *dtype, numel(dims).unwrap_or(usize::MAX)).ok_or_else(too_large)?;
                let bytes = arena.get(range).ok_or_else(|| internal("an output lies outside the arena"))?;
                Ok((*dtype, dims, typed(bytes, *dtype)?))
            }
        }
    }
}

fn internal(what: &str) -> NodeErrorKind {
    NodeErrorKind::Internal { what: what.into() }
}

fn too_large() -> NodeErrorKind {
    internal("a value is too large for the arena")
}

/// Everything a step can read.
struct Values<'b> {
    table: Vec<SmallVec<[Option<Loc>; 1]>>,
    ext: Vec<Tensor<'b>>,
}

impl<'b> Values<'b> {
    fn loc(&self, v: Value) -> Result<&Loc, NodeErrorKind> {
        self.table
            .get(v.node.index())
            .and_then(|r| r.get(v.result as usize))
            .and_then(Option::as_ref)
            .ok_or_else(|| NodeErrorKind::Missing { operand: v.to_string() })
    }

    /// A view of value `v` (arena values through `split`, which must leave them shared).
    fn tensor<'s>(&'s self, v: Value, split: &Split<'s>) -> Result<Tensor<'s>, NodeErrorKind> {
        match self.loc(v)? {
            Loc::Arena { offset, dtype, dims } => {
                let range = value_range(*offset, *dtype, numel(dims).ok_or_else(too_large)?).ok_or_else(too_large)?;
                Ok(Tensor::from_parts(dims.clone(), typed(split.read(range)?, *dtype)?))
            }
            Loc::Ext { index, dims } => {
                let x = self.ext.get(*index).ok_or_else(|| internal("a dangling external value"))?;
                if numel(dims) != Some(x.len()) {
                    return Err(internal("a view disagrees with its value's element count"));
                }
                Ok(Tensor::from_parts(dims.clone(), x.data().view()))
            }
        }
    }

    fn push(&mut self, t: Tensor<'b>) -> Loc {
        let dims = t.shape().iter().copied().collect();
        self.ext.push(t);
        Loc::Ext { index: self.ext.len() - 1, dims }
    }
}

/// Runs `plan` (planned, built for `graph`) over `arena` laid out by `layout`, with `args[slot]`
/// bound to the input of that slot, for a call of `t` tokens. Returns the outputs in order.
pub(crate) fn run_planned<'b>(
    graph: &Graph,
    plan: &Plan,
    layout: &Layout,
    arena: &mut [u8],
    mut args: Vec<Option<Tensor<'b>>>,
    t: usize,
) -> Result<Vec<Produced>, ExecError> {
    if arena.len() < layout.total {
        return Err(ExecError::Plan(kiln_ir::PlanError { scope: Vec::new(), what: "the arena is too small".into() }));
    }
    let mut values = Values { table: (0..plan.node_bound).map(|_| SmallVec::new()).collect(), ext: Vec::new() };
    for step in &plan.steps {
        let node = graph.node(step.node);
        let at = || Location { scope: Scope::default(), node: step.node, origin: node.origin.clone() };
        let fail = |kind| ExecError::Node { at: Box::new(at()), kind };
        let locs: SmallVec<[Loc; 1]> = match &step.kind {
            StepKind::Input { slot } => {
                let value = args.get_mut(*slot).and_then(Option::take).ok_or_else(|| fail(unbound(node, *slot)))?;
                check_argument(node, *slot, &value, t).map_err(fail)?;
                SmallVec::from_iter([values.push(value)])
            }
            StepKind::Scan(body) => run_results(node, step, layout, arena, &mut values, t, |ops, outs, scratch| {
                let Op::Scan(s) = &node.op else {
                    return Err(fail(internal("planned as a scan but the node is not one")));
                };
                let scratch = scratch.ok_or_else(|| fail(internal("a scan without a scratch region")))?;
                scan::run_planned(s, body, ops, outs, scratch, t, &at())
            })?,
            StepKind::Compute => match (&node.op, step.place.first()) {
                (Op::Reshape(_), Some(&place)) => {
                    SmallVec::from_iter([reshape(node, step, place, layout, arena, &mut values, t).map_err(fail)?])
                }
                (_, Some(&Placement::InPlace { buffer, slot })) => {
                    let start = layout.regions.get(buffer.0 as usize).map(|r| r.start);
                    let start = start.ok_or_else(|| fail(internal("no such buffer")))?;
                    SmallVec::from_iter([in_place(node, step, start, slot, arena, &values, t).map_err(fail)?])
                }
                (Op::Fused(_) | Op::FusedMatMul { .. }, _) => {
                    run_results(node, step, layout, arena, &mut values, t, |ops, outs, scratch| {
                        fused(&node.op, step, ops, outs, scratch, t).map_err(fail)
                    })?
                }
                _ => SmallVec::from_iter([single(node, step, layout, arena, &mut values, t).map_err(fail)?]),
            },
        };
        if let Some(entry) = values.table.get_mut(step.node.index()) {
            *entry = locs.into_iter().map(Some).collect();
        }
    }

    let mut outputs = Vec::with_capacity(plan.outputs.len());
    for (i, v) in plan.outputs.iter().enumerate() {
        let missing = || ExecError::Node {
            at: Box::new(Location { scope: Scope::default(), node: v.node, origin: graph.node(v.node).origin.clone() }),
            kind: NodeErrorKind::Missing { operand: v.to_string() },
        };
        let loc = values.loc(*v).map_err(|_| missing())?.clone();
        outputs.push(match loc {
            Loc::Arena { offset, dtype, dims } => Produced::Arena { offset, dtype, dims },
            Loc::Ext { index, dims } => {
                // The last mention of an external value takes it (an owned output moves, an
                // input is copied); earlier ones copy.
                let later = plan.outputs[i + 1..]
                    .iter()
                    .any(|w| matches!(values.loc(*w), Ok(Loc::Ext { index: j, .. }) if *j == index));
                let slot = values.ext.get_mut(index).ok_or_else(missing)?;
                let data =
                    if later { slot.data().clone() } else { std::mem::replace(slot, Tensor::scalar(0.0)).into_data() };
                Produced::Owned(Tensor::from_parts(dims, data.into_owned()))
            }
        });
    }
    Ok(outputs)
}

/// Runs a planned top-level graph for a call of `t` tokens: lays its arena out for `t`, allocates
/// it once, runs, and hands the outputs out.
pub(crate) fn run_top(
    graph: &Graph,
    plan: &Plan,
    args: Vec<Option<Tensor<'_>>>,
    t: usize,
) -> Result<Vec<Tensor<'static>>, ExecError> {
    let plan_error =
        |kind: NodeErrorKind| ExecError::Plan(kiln_ir::PlanError { scope: Vec::new(), what: kind.to_string() });
    let buffers = plan.arena.as_ref().ok_or_else(|| plan_error(internal("the graph has no memory plan")))?;
    let layout = Layout::resolve(buffers, t).map_err(plan_error)?;
    let mut arena = Arena::new(layout.total);
    let produced = run_planned(graph, plan, &layout, arena.bytes_mut(), args, t)?;
    let bytes = arena.bytes_mut();
    produced
        .into_iter()
        .map(|p| match p {
            Produced::Owned(x) => Ok(x),
            in_arena => {
                let (_, shape, data) = in_arena.data(bytes).map_err(plan_error)?;
                Tensor::new(shape, data.into_owned())
            }
        })
        .collect()
}

/// The declared dtype, concrete shape and element count of result `r` of `node`.
fn declared(node: &Node, r: usize, t: usize) -> Result<(DType, Dims, usize), NodeErrorKind> {
    let ty = node.results.get(r).ok_or_else(|| internal("a result the node does not declare"))?;
    let dims = resolve_shape(&ty.shape, t)?;
    let n = numel(&dims).ok_or_else(too_large)?;
    Ok((ty.dtype, dims, n))
}

/// The byte range of a `count`-element `dtype` value at the start of `buffer`'s region.
fn buffer_range(layout: &Layout, place: Placement, dtype: DType, count: usize) -> Result<Range<usize>, NodeErrorKind> {
    let region = place
        .buffer()
        .and_then(|b| layout.regions.get(b.0 as usize))
        .ok_or_else(|| internal("a value placed in no buffer"))?;
    let range = value_range(region.start, dtype, count).ok_or_else(too_large)?;
    if range.end > region.end {
        return Err(internal("a value does not fit its buffer"));
    }
    Ok(range)
}

/// A single-result op (everything but inputs, scans, fused kernels, reshapes and in-place ops).
fn single<'b>(
    node: &Node,
    step: &Step,
    layout: &Layout,
    arena: &mut [u8],
    values: &mut Values<'b>,
    t: usize,
) -> Result<Loc, NodeErrorKind> {
    let place = step.place.first().copied().ok_or_else(|| internal("an unplaced result"))?;
    let (dtype, dims, n) = declared(node, 0, t)?;
    let external = place == Placement::External;
    let range = if external { None } else { Some(buffer_range(layout, place, dtype, n)?) };
    let emitted = {
        let mut sp = split(arena, range.as_slice())?;
        let ops: SmallVec<[Tensor<'_>; 4]> =
            step.operands.iter().map(|&v| values.tensor(v, &sp)).collect::<Result<_, _>>()?;
        let refs: SmallVec<[&Tensor<'_>; 4]> = ops.iter().collect();
        let dest = if external { Dest::Alloc } else { Dest::Slice(typed_mut(sp.take(0)?, dtype)?) };
        compute(&node.op, step.products, &refs, t, dest)?
    };
    check_types(node, &[(emitted.dtype(), emitted.shape())], t)?;
    Ok(match (emitted, range) {
        (Emitted::Owned(x), _) => values.push(x),
        (Emitted::Written { .. }, Some(r)) => Loc::Arena { offset: r.start, dtype, dims },
        (Emitted::Written { .. }, None) => return Err(internal("an external result was not allocated")),
    })
}

/// A reshape: a view of its operand, or (an output, or a value given its own buffer) a copy.
fn reshape<'b>(
    node: &Node,
    step: &Step,
    place: Placement,
    layout: &Layout,
    arena: &mut [u8],
    values: &mut Values<'b>,
    t: usize,
) -> Result<Loc, NodeErrorKind> {
    let (dtype, dims, n) = declared(node, 0, t)?;
    let [v] = step.operands.as_slice() else {
        return Err(NodeErrorKind::Arity { op: "reshape".into(), expected: "1".into(), found: step.operands.len() });
    };
    let from = match values.loc(*v)? {
        Loc::Arena { dims, .. } | Loc::Ext { dims, .. } => dims.clone(),
    };
    if numel(&from) != Some(n) {
        return Err(NodeErrorKind::Reshape { from: from.to_vec(), to: dims.to_vec() });
    }
    let found_dtype = match values.loc(*v)? {
        Loc::Arena { dtype, .. } => *dtype,
        Loc::Ext { index, .. } => values.ext.get(*index).map_or(dtype, Tensor::dtype),
    };
    check_types(node, &[(found_dtype, &dims)], t)?;
    match place {
        Placement::View { .. } => Ok(match values.loc(*v)?.clone() {
            Loc::Arena { offset, dtype, .. } => Loc::Arena { offset, dtype, dims },
            Loc::Ext { index, .. } => Loc::Ext { index, dims },
        }),
        Placement::External => {
            let copy = {
                let sp = split(arena, &[])?;
                values.tensor(*v, &sp)?.into_data().into_owned()
            };
            Ok(values.push(Tensor::from_parts(dims, copy)))
        }
        Placement::Buffer(_) => {
            let range = buffer_range(layout, place, dtype, n)?;
            let mut sp = split(arena, std::slice::from_ref(&range))?;
            let x = values.tensor(*v, &sp)?;
            if !typed_mut(sp.take(0)?, dtype)?.write_at(0, x.data()) {
                return Err(internal("a reshape copy does not fit"));
            }
            Ok(Loc::Arena { offset: range.start, dtype, dims })
        }
        Placement::InPlace { .. } => Err(internal("a reshape cannot run in place")),
    }
}

/// An elementwise op written over operand `slot`'s region, which starts at byte `start`.
fn in_place(
    node: &Node,
    step: &Step,
    start: usize,
    slot: u16,
    arena: &mut [u8],
    values: &Values<'_>,
    t: usize,
) -> Result<Loc, NodeErrorKind> {
    let (dtype, dims, n) = declared(node, 0, t)?;
    let target = step.operands.get(slot as usize).ok_or_else(|| internal("in place over a missing operand"))?;
    match values.loc(*target)? {
        Loc::Arena { offset, dtype: DType::F32, dims: d } if *offset == start && *d == dims && dtype == DType::F32 => {}
        _ => return Err(internal("the operand written over is not where the plan says")),
    }
    let range = value_range(start, DType::F32, n).ok_or_else(too_large)?;
    let mut sp = split(arena, std::slice::from_ref(&range))?;
    let mut views: SmallVec<[Option<Tensor<'_>>; 3]> = SmallVec::new();
    for v in &step.operands {
        let own = matches!(values.loc(*v)?, Loc::Arena { offset, .. } if *offset == start);
        views.push(if own { None } else { Some(values.tensor(*v, &sp)?) });
    }
    let mismatch = |x: &Tensor<'_>| NodeErrorKind::ShapeMismatch {
        op: node.op.mnemonic(),
        lhs: dims.to_vec(),
        rhs: x.shape().to_vec(),
    };
    if let Some(x) = views.iter().flatten().find(|x| x.shape() != dims.as_slice()) {
        return Err(mismatch(x));
    }
    let (cond, srcs): (Option<&[bool]>, &[Option<Tensor<'_>>]) = match node.op {
        Op::Select => match views.split_first() {
            Some((Some(c), rest)) => (c.as_bool(), rest),
            _ => return Err(internal("a select's condition is written over")),
        },
        _ => (None, &views[..]),
    };
    let mut slices: SmallVec<[elementwise::Src<'_>; 3]> = SmallVec::new();
    let first = views.len() - srcs.len();
    slices.extend((0..first).map(|_| None));
    for (k, x) in srcs.iter().enumerate() {
        slices.push(match x {
            None => None,
            Some(x) => Some(x.as_f32().ok_or_else(|| NodeErrorKind::DType {
                op: node.op.mnemonic(),
                slot: first + k,
                expected: DType::F32,
                found: x.dtype(),
            })?),
        });
    }
    let out = match typed_mut(sp.take(0)?, DType::F32)? {
        OutSlice::F32(out) => out,
        _ => return Err(internal("an in-place region is not f32")),
    };
    elementwise::in_place(&node.op, &slices, cond, out)?;
    check_types(node, &[(dtype, &dims)], t)?;
    Ok(Loc::Arena { offset: start, dtype, dims })
}

/// Runs a multi-result step (scan, fused kernel): its results go to arena regions or, when
/// external, fresh allocations, and `run` gets the operands, the result slices and the scratch
/// region.
fn run_results<'b, F>(
    node: &Node,
    step: &Step,
    layout: &Layout,
    arena: &mut [u8],
    values: &mut Values<'b>,
    t: usize,
    run: F,
) -> Result<SmallVec<[Loc; 1]>, ExecError>
where
    F: FnOnce(&[&Tensor<'_>], &mut [OutSlice<'_>], Option<&mut [u8]>) -> Result<(), ExecError>,
{
    let fail = |kind| ExecError::Node {
        at: Box::new(Location { scope: Scope::default(), node: step.node, origin: node.origin.clone() }),
        kind,
    };
    let mut results = Vec::with_capacity(node.results.len());
    let mut ranges = Vec::new();
    let mut owned: Vec<Option<TensorData<'static>>> = Vec::new();
    for (r, &place) in step.place.iter().enumerate() {
        let (dtype, dims, n) = declared(node, r, t).map_err(fail)?;
        if place == Placement::External {
            owned.push(Some(TensorData::zeros(dtype, n).ok_or_else(|| fail(quantized_operand(dtype)))?));
            results.push((dtype, dims, None));
        } else {
            let range = buffer_range(layout, place, dtype, n).map_err(fail)?;
            owned.push(None);
            results.push((dtype, dims, Some(range.start)));
            ranges.push(range);
        }
    }
    if results.len() != node.results.len() {
        return Err(fail(internal("the plan places another number of results")));
    }
    let scratch = match step.scratch {
        Some(b) => Some(layout.regions.get(b.0 as usize).cloned().ok_or_else(|| fail(internal("no such buffer")))?),
        None => None,
    };
    ranges.extend(scratch.clone());
    {
        let mut sp = split(arena, &ranges).map_err(fail)?;
        let mut outs: Vec<OutSlice<'_>> = Vec::with_capacity(results.len());
        let mut k = 0;
        for ((dtype, _, at), own) in results.iter().zip(owned.iter_mut()) {
            outs.push(match (at, own) {
                (Some(_), _) => {
                    k += 1;
                    typed_mut(sp.take(k - 1).map_err(fail)?, *dtype).map_err(fail)?
                }
                (None, Some(data)) => data.out_slice().ok_or_else(|| fail(internal("a quantized result")))?,
                (None, None) => return Err(fail(internal("an external result without storage"))),
            });
        }
        let scratch = match scratch {
            Some(_) => Some(sp.take(k).map_err(fail)?),
            None => None,
        };
        let ops: SmallVec<[Tensor<'_>; 4]> =
            step.operands.iter().map(|&v| values.tensor(v, &sp)).collect::<Result<_, _>>().map_err(fail)?;
        let refs: SmallVec<[&Tensor<'_>; 4]> = ops.iter().collect();
        run(&refs, &mut outs, scratch)?;
    }
    let found: Vec<(DType, &[usize])> = results.iter().map(|(d, s, _)| (*d, s.as_slice())).collect();
    check_types(node, &found, t).map_err(fail)?;
    let mut locs = SmallVec::new();
    for ((dtype, dims, at), own) in results.into_iter().zip(owned) {
        locs.push(match (at, own) {
            (Some(offset), _) => Loc::Arena { offset, dtype, dims },
            (None, Some(data)) => values.push(Tensor::from_parts(dims, data)),
            (None, None) => return Err(fail(internal("an external result without storage"))),
        });
    }
    Ok(locs)
}

/// A fused kernel into `outs`; a `matmul.fused` first computes its product in `scratch` (with
/// native products and a compiled epilogue, block of rows by block of rows, each block's
/// epilogue right after its product: [`crate::jit::products::product_with_epilogue`]).
fn fused(
    op: &Op,
    step: &Step,
    ops: &[&Tensor<'_>],
    outs: &mut [OutSlice<'_>],
    scratch: Option<&mut [u8]>,
    t: usize,
) -> Result<(), NodeErrorKind> {
    let native = step.native.as_ref();
    let outs: Vec<OutSlice<'_>> = outs.iter_mut().map(reborrow).collect();
    match op {
        Op::Fused(k) => {
            check_kernel_results(k, &outs, t)?;
            match native {
                Some(code) => run_native(code, ops, t, outs),
                None => kernel::run_into(op, k, ops, t, outs),
            }
        }
        Op::FusedMatMul { transpose_rhs, epilogue } => {
            check_kernel_results(epilogue, &outs, t)?;
            if ops.len() < 2 {
                return Err(internal("matmul.fused needs two operands"));
            }
            let scratch = scratch.ok_or_else(|| internal("matmul.fused without a scratch region"))?;
            let region = match typed_mut(scratch, DType::F32)? {
                OutSlice::F32(p) => p,
                _ => return Err(internal("a product region is not f32")),
            };
            // The product is `lhs`'s rows by `rhs`'s output width; its region may be longer
            // (padding).
            let matmul_op = Op::MatMul { transpose_rhs: *transpose_rhs };
            let (dims, shape) = matmul::product_dims(*transpose_rhs, ops[0].shape(), ops[1].shape())?;
            let len = numel(&shape).ok_or_else(too_large)?;
            let region = region.get_mut(..len).ok_or_else(|| internal("the product does not fit its region"))?;
            let quantized = ops[1].as_quantized().is_some();
            if let (Products::Native, Some(code), false) = (step.products, native, quantized) {
                let (lhs, rhs) = (f32_operand(&matmul_op, ops, 0)?, f32_operand(&matmul_op, ops, 1)?);
                let mut slices = f32_outputs(outs)?;
                let native_err = |e: crate::jit::JitError| NodeErrorKind::Native { what: e.to_string() };
                let call = code.prepare_epilogue(len, &ops[2..], t).map_err(native_err)?;
                return products::product_with_epilogue(dims, lhs, rhs, region, &call, &mut slices).map_err(native_err);
            }
            match matmul::matmul(
                step.products,
                &matmul_op,
                *transpose_rhs,
                &ops[..2],
                Dest::Slice(OutSlice::F32(&mut *region)),
            )? {
                Emitted::Written { dtype: DType::F32, shape: s } if s == shape => {}
                _ => return Err(internal("the product was not written to its region")),
            }
            let product = Tensor::from_parts(shape, TensorData::F32(Cow::Borrowed(&*region)));
            let mut epilogue_ops: SmallVec<[&Tensor<'_>; 4]> = SmallVec::new();
            epilogue_ops.push(&product);
            epilogue_ops.extend(ops[2..].iter().copied());
            match native {
                Some(code) => run_native(code, &epilogue_ops, t, outs),
                None => kernel::run_into(op, epilogue, &epilogue_ops, t, outs),
            }
        }
        _ => Err(internal("not a fused kernel")),
    }
}

/// The f32 slices of a compiled kernel's outputs (compiled kernels have f32 outputs only).
fn f32_outputs(outs: Vec<OutSlice<'_>>) -> Result<SmallVec<[&mut [f32]; 4]>, NodeErrorKind> {
    outs.into_iter()
        .map(|o| match o {
            OutSlice::F32(d) => Ok(d),
            _ => Err(internal("a compiled kernel writes f32 results only")),
        })
        .collect()
}

/// Runs compiled kernel code into the planned regions (compiled kernels have f32 outputs only).
fn run_native(
    code: &crate::jit::CompiledKernel,
    ops: &[&Tensor<'_>],
    t: usize,
    outs: Vec<OutSlice<'_>>,
) -> Result<(), NodeErrorKind> {
    let mut slices = f32_outputs(outs)?;
    code.run_into(ops, t, &mut slices).map_err(|e| NodeErrorKind::Native { what: e.to_string() })
}

fn reborrow<'s>(o: &'s mut OutSlice<'_>) -> OutSlice<'s> {
    match o {
        OutSlice::F32(d) => OutSlice::F32(d),
        OutSlice::I64(d) => OutSlice::I64(d),
        OutSlice::Bool(d) => OutSlice::Bool(d),
    }
}

/// The kernel's own result types must be what the plan's slices hold.
fn check_kernel_results(k: &kiln_ir::Kernel, outs: &[OutSlice<'_>], t: usize) -> Result<(), NodeErrorKind> {
    let types = kernel::result_types(k, t)?;
    let fits = types.len() == outs.len()
        && types.iter().zip(outs).all(|((dtype, shape), o)| o.dtype() == *dtype && numel(shape) == Some(o.len()));
    if fits {
        Ok(())
    } else {
        Err(internal("a kernel's results disagree with the graph's types"))
    }
}
