//! Scans run by blocks of rows: when a scan body is a single compiled kernel whose operands are
//! the body's arguments seen through views (reshapes and broadcasts), every row of that kernel is
//! its own recurrence, so the scan is run the way selective-scan kernels are written: the rows
//! are split into one block per thread (run by the [`crate::team`], which a decode step's
//! one-step scans reach without waking a sleeping thread), and each thread runs *every* step for
//! its block, with the carries updated in place in the scan's results.
//!
//! Compared with running the body step by step (see [`crate::interp::scan`]), this removes per
//! step: a rayon fork-join, the copy of the new carries back into the old ones, the
//! materialized broadcasts and the executor's walk of the body. The operand views are folded
//! into each row's base offsets once per scan (and cached for the next call of the same length).
//!
//! A body qualifies ([`RowScan::analyze`]) when
//! - it holds its arguments, reshapes and broadcasts, and exactly one compiled `fused` node;
//! - every kernel operand is an argument through reshapes and broadcasts only;
//! - every body output is a kernel output, through reshapes only, and every kernel output is
//!   exactly one body output;
//! - a carry the kernel reads is written by a vector-level output and read only element for
//!   element where it is written (checked on the concrete layout, see [`Layout`]), which makes
//!   the in-place update sound: the code stores a row's vector outputs in its last column loop,
//!   each column after reading that column, and reads no column again afterwards.
//!
//! Guarantees: results are bit-identical to the step-by-step run of the same compiled kernel
//! (the code computes each row the same way whatever block it is in), for any number of
//! threads; every address the code touches is checked to lie in its buffer before any call;
//! anything that does not fit is reported as an error, and a body that does not qualify is
//! simply run step by step.

use super::abi::{resolve, CallShape, ColStride, RowBases};
use super::{CompiledKernel, JitError};
use crate::team;
use crate::tensor::{broadcast_strides, numel, strided_copy_into, Dims, OutSlice, Tensor};
use kiln_ir::{Graph, Instr, Level, NodeId, Op, ParamRole, Scan, Shape, Value};
use smallvec::SmallVec;
use std::sync::{Arc, Mutex, PoisonError};

/// Scans with fewer than this many kernel elements per step run their rows on one thread.
const PAR_MIN_ELEMENTS: usize = 1 << 12;

/// A view between a body argument and a kernel operand, by the shape it produces.
#[derive(Clone, Debug)]
enum View {
    Reshape(Shape),
    Broadcast(Shape),
}

/// Where a kernel operand comes from: body argument `arg`, through `views` (outermost last).
#[derive(Clone, Debug)]
struct Source {
    arg: usize,
    views: Vec<View>,
}

/// The per-call layout of a scan of `T` tokens: every row's base offset of every operand in its
/// argument's per-step elements.
#[derive(Debug)]
struct Layout {
    t: usize,
    arg_dims: Vec<Dims>,
    call: CallShape,
    bases: Vec<i64>,
}

/// A scan body that can run by blocks of rows (see the module documentation).
#[derive(Debug)]
pub(crate) struct RowScan {
    kernel: CompiledKernel,
    operands: Vec<Source>,
    /// For each body output, the kernel output computing it.
    outputs: Vec<usize>,
    /// The layout of the last call (a scan is called with the same shapes call after call).
    last: Mutex<Option<Arc<Layout>>>,
}

/// The value `v` with reshapes looked through, as the value they start from.
fn through_reshapes(body: &Graph, mut v: Value) -> Value {
    while let Op::Reshape(_) = body.node(v.node).op {
        match body.operands(v.node).first() {
            Some(&w) => v = w,
            None => break,
        }
    }
    v
}

/// The argument `v` is a view of, and the views, innermost first; `None` if `v` is computed.
fn source(body: &Graph, v: Value) -> Option<Source> {
    let mut views = Vec::new();
    let mut at = v.node;
    loop {
        let node = body.node(at);
        match &node.op {
            Op::Input(p) => {
                let ParamRole::Argument { index } = p.role else { return None };
                views.reverse();
                return Some(Source { arg: index, views });
            }
            Op::Reshape(s) => views.push(View::Reshape(s.clone())),
            Op::Broadcast(s) => views.push(View::Broadcast(s.clone())),
            _ => return None,
        }
        at = body.operands(at).first()?.node;
    }
}

impl RowScan {
    /// The row-block form of `scan`, whose body's single kernel has the compiled code `kernel`
    /// (found at node `fused`), or `None` if the body does not qualify.
    pub(crate) fn analyze(scan: &Scan, fused: NodeId, kernel: &CompiledKernel) -> Option<RowScan> {
        let body = &scan.body;
        let computed = body.node_ids().filter(|&n| !matches!(body.node(n).op, Op::Input(_)));
        for n in computed {
            match body.node(n).op {
                Op::Reshape(_) | Op::Broadcast(_) => {}
                Op::Fused(_) if n == fused => {}
                _ => return None,
            }
        }
        let operands: Vec<Source> = body.operands(fused).iter().map(|&v| source(body, v)).collect::<Option<_>>()?;
        let code = kernel.kernel();
        let mut taken = vec![false; code.outputs.len()];
        let mut outputs = Vec::with_capacity(body.outputs().len());
        for o in body.outputs() {
            let v = through_reshapes(body, o.value);
            let slot = taken.get_mut(v.result as usize).filter(|t| v.node == fused && !**t)?;
            *slot = true;
            outputs.push(v.result as usize);
        }
        if taken.contains(&false) {
            return None;
        }
        // A carry the kernel reads must be written at vector level (stored in the last column
        // loop) and read only inside column loops, contiguously: a row-level or broadcast read
        // may be computed after that loop's stores. Where it is read is checked on each layout.
        let strides = kernel.col_strides();
        for (k, s) in operands.iter().enumerate().filter(|(_, s)| s.arg < scan.carries) {
            let row_read = code.body.iter().any(|i| matches!(*i, Instr::Input(r, Level::Row) if r as usize == k));
            let written_by_vector = outputs.get(s.arg).is_some_and(|&o| code.outputs[o].level == Level::Vector);
            if row_read || !written_by_vector || strides.get(k) != Some(&ColStride::Contiguous) {
                return None;
            }
        }
        Some(RowScan { kernel: kernel.clone(), operands, outputs, last: Mutex::new(None) })
    }

    /// The layout for arguments of per-step shapes `arg_dims` and `t` tokens (cached).
    fn layout(&self, arg_dims: &[Dims], carries: usize, t: usize) -> Result<Arc<Layout>, JitError> {
        {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(l) = last.as_ref().filter(|l| l.t == t && l.arg_dims == arg_dims) {
                return Ok(Arc::clone(l));
            }
        }
        let layout = Arc::new(self.build_layout(arg_dims, carries, t)?);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&layout));
        Ok(layout)
    }

    fn build_layout(&self, arg_dims: &[Dims], carries: usize, t: usize) -> Result<Layout, JitError> {
        let bad = |what: String| JitError::Operand { what };
        let kernel = self.kernel.kernel();
        let call = CallShape::new(kernel, t)?;
        let n = self.operands.len();
        // Each operand's element index → its argument's element index.
        let mut maps: Vec<Vec<usize>> = Vec::with_capacity(n);
        for (k, s) in self.operands.iter().enumerate() {
            let dims = arg_dims.get(s.arg).ok_or_else(|| bad(format!("operand {k} reads a missing argument")))?;
            maps.push(view_map(dims, &s.views, t).map_err(|why| bad(format!("operand {k}: {why}")))?);
        }
        let lens: Vec<usize> = maps.iter().map(Vec::len).collect();
        let strides = self.kernel.col_strides();
        let in_values = RowBases::new(kernel, strides, self.kernel.scalar_reads(), &call, &lens, t)?;
        let mut bases = Vec::with_capacity(in_values.offsets.len());
        for (r, row) in in_values.offsets.chunks_exact(n.max(1)).enumerate() {
            for (k, &at) in row.iter().enumerate() {
                let at = at as usize;
                let map = &maps[k];
                let base = *map.get(at).ok_or_else(|| bad(format!("operand {k}: row {r} lies outside it")))?;
                if strides[k] == ColStride::Contiguous && call.cols > 1 {
                    let cols =
                        map.get(at..at + call.cols).ok_or_else(|| bad(format!("operand {k}: row {r} overruns")))?;
                    if cols.iter().enumerate().any(|(c, &e)| e != base + c) {
                        return Err(bad(format!("operand {k} is not contiguous along row {r} of its argument")));
                    }
                }
                let write = (self.operands[k].arg < carries).then(|| r * call.cols);
                if write.is_some_and(|w| w != base || strides[k] != ColStride::Contiguous && call.cols > 1) {
                    return Err(bad(format!("operand {k} reads a carry elsewhere than where it is written")));
                }
                bases.push(base as i64);
            }
        }
        Ok(Layout { t, arg_dims: arg_dims.to_vec(), call, bases })
    }

    /// Runs the scan: `ops` are its operands (carries, sequences, constants), `outs` its results
    /// (final carries, stacked per-step outputs), `steps` the sequences' length. Returns `false`,
    /// having touched nothing, when these shapes do not let the body run by rows (a carry read
    /// elsewhere than where it is written, say): the caller then runs it step by step, which
    /// also reports any real shape error properly.
    pub(crate) fn run(
        &self,
        scan: &Scan,
        ops: &[&Tensor<'_>],
        outs: &mut [OutSlice<'_>],
        steps: usize,
        t: usize,
    ) -> Result<bool, JitError> {
        let bad = |what: String| JitError::Operand { what };
        let (c, s) = (scan.carries, scan.sequences);
        if outs.len() != self.outputs.len() || ops.len() != c + s + scan.constants {
            return Err(bad("the scan's operands or results do not match its body".into()));
        }
        let mut arg_dims: Vec<Dims> = Vec::with_capacity(ops.len());
        for (a, x) in ops.iter().enumerate() {
            let shape = x.shape();
            let dims = if (c..c + s).contains(&a) { shape.get(1..).unwrap_or_default() } else { shape };
            arg_dims.push(dims.iter().copied().collect());
        }
        let Ok(layout) = self.layout(&arg_dims, c, t) else { return Ok(false) };
        let (rows, cols) = (layout.call.rows, layout.call.cols);
        let widths: Vec<usize> =
            self.kernel.kernel().outputs.iter().map(|o| if o.level == Level::Vector { cols } else { 1 }).collect();

        // Argument data: carries live in the results (updated in place), the rest is read.
        let mut args: Vec<Arg> = Vec::with_capacity(ops.len());
        for (a, x) in ops.iter().enumerate() {
            let data = x.as_f32().ok_or_else(|| bad(format!("scan operand {a} is {}, not f32", x.dtype())))?;
            let per_step = numel(&arg_dims[a]).unwrap_or(usize::MAX);
            let sequence = (c..c + s).contains(&a);
            let step_len = if sequence { per_step } else { 0 };
            if Some(data.len()) != if sequence { per_step.checked_mul(steps) } else { Some(per_step) } {
                return Err(bad(format!("scan operand {a} holds {} elements", data.len())));
            }
            args.push(Arg { ptr: data.as_ptr(), step_len });
        }
        let mut results: Vec<*mut f32> = Vec::with_capacity(outs.len());
        for (j, out) in outs.iter_mut().enumerate() {
            let OutSlice::F32(o) = out else { return Err(bad(format!("scan result {j} is not f32"))) };
            let per_step = rows * widths[self.outputs[j]];
            let want = if j < c { per_step } else { per_step.saturating_mul(steps) };
            if o.len() != want {
                return Err(bad(format!("scan result {j} holds {} elements, the body writes {want}", o.len())));
            }
            if j < c {
                let init = ops[j].as_f32().filter(|x| x.len() == o.len());
                o.copy_from_slice(init.ok_or_else(|| bad(format!("carry {j} does not fit its result")))?);
            }
            // One pointer for both uses: the kernel reads a carry through it and writes it.
            let p = o.as_mut_ptr();
            if j < c {
                args[j].ptr = p.cast_const();
            }
            results.push(p);
        }
        if rows == 0 || steps == 0 {
            return Ok(true);
        }
        let run = Run { scan, row: self, layout: &layout, args, results, widths, steps };
        let parallel = rows > 1 && rows.saturating_mul(cols) >= PAR_MIN_ELEMENTS;
        let blocks = if parallel { rayon::current_num_threads().clamp(1, rows) } else { 1 };
        let per = rows.div_ceil(blocks);
        team::for_each(rows.div_ceil(per), &|b| run.block(b * per, per.min(rows - b * per)));
        Ok(true)
    }
}

/// One argument's data: its first step's elements and the distance between steps (0 for a
/// carry or a constant).
#[derive(Clone, Copy, Debug)]
struct Arg {
    ptr: *const f32,
    step_len: usize,
}

/// A checked scan call, shared by the threads running its blocks of rows.
struct Run<'a> {
    scan: &'a Scan,
    row: &'a RowScan,
    layout: &'a Layout,
    args: Vec<Arg>,
    /// Each body output's first element (a carry, or step 0's slot of a stacked output).
    results: Vec<*mut f32>,
    widths: Vec<usize>,
    steps: usize,
}

// SAFETY: the pointers are into buffers borrowed for the whole call (see `RowScan::run`); blocks
// of rows run by different threads write disjoint elements (their own rows of every result) and
// read carries only in their own rows, so sharing the call between threads is sound.
unsafe impl Sync for Run<'_> {}

impl Run<'_> {
    /// Runs every step for rows `start .. start + count`.
    fn block(&self, start: usize, count: usize) {
        let (layout, row) = (self.layout, self.row);
        let (rows, n) = (layout.call.rows, row.operands.len());
        let bases = &layout.bases[start * n..(start + count) * n];
        let mut inputs: SmallVec<[*const f32; 8]> = SmallVec::from_elem(std::ptr::null(), n);
        let mut outputs: SmallVec<[*mut f32; 4]> = SmallVec::from_elem(std::ptr::null_mut(), self.results.len());
        let carries = self.scan.carries;
        for i in 0..self.steps {
            let step = if self.scan.reverse { self.steps - 1 - i } else { i };
            for (slot, s) in inputs.iter_mut().zip(&row.operands) {
                let a = self.args[s.arg];
                // SAFETY: `run` checked each argument holds `steps` steps of `step_len` elements.
                *slot = unsafe { a.ptr.add(step * a.step_len) };
            }
            for (j, &o) in row.outputs.iter().enumerate() {
                let w = self.widths[o];
                let at = if j < carries { start * w } else { (step * rows + start) * w };
                // SAFETY: `run` checked result `j` holds `rows · w` elements per step it stores.
                outputs[o] = unsafe { self.results[j].add(at) };
            }
            // SAFETY: the code has the kernel ABI and is alive (`row.kernel` holds it). The layout
            // checked that every row's reads of every operand (its base, or `cols` consecutive
            // elements from it) lie in the argument's per-step elements, and that a carry is read
            // only where its own row writes it; outputs are this block's rows of each result,
            // which no other block touches.
            unsafe { row.kernel.call_raw(count, layout.call.cols, bases, &inputs, &outputs) };
        }
    }
}

/// For the value `views` make of an argument of shape `arg`: the argument element each of its
/// elements is, in row-major order.
fn view_map(arg: &[usize], views: &[View], t: usize) -> Result<Vec<usize>, String> {
    let len = numel(arg).ok_or("too many elements")?;
    let mut map: Vec<usize> = (0..len).collect();
    let mut dims: Dims = arg.iter().copied().collect();
    for v in views {
        match v {
            View::Reshape(s) => {
                let to = resolve(s, t).map_err(|e| e.to_string())?;
                if numel(&to) != Some(map.len()) {
                    return Err(format!("reshape of {dims:?} to {to:?}"));
                }
                dims = to;
            }
            View::Broadcast(s) => {
                let to = resolve(s, t).map_err(|e| e.to_string())?;
                map = broadcast_map(&map, &dims, &to).ok_or_else(|| format!("broadcast of {dims:?} to {to:?}"))?;
                dims = to;
            }
        }
    }
    Ok(map)
}

/// `map` (of a value of shape `from`) broadcast to `to`, numpy's rule.
fn broadcast_map(map: &[usize], from: &[usize], to: &[usize]) -> Option<Vec<usize>> {
    let strides = broadcast_strides(from, to)?;
    let mut out = vec![0; numel(to)?];
    strided_copy_into(map, 0, to, &strides, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_map_elements_back_to_their_argument() {
        // [2, 3] broadcast to [2, 2, 3]: each row of 3 repeated along the middle axis.
        let b = broadcast_map(&[0, 1, 2, 3, 4, 5], &[2, 1, 3], &[2, 2, 3]).unwrap();
        assert_eq!(b, [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]);
        // Mamba2's grouped B: [G, N] → [G, 1, N] → [G, H/G, N] → [H, N] with G = 2, H = 4, N = 2.
        let views = [
            View::Reshape(Shape::fixed(&[2, 1, 2])),
            View::Broadcast(Shape::fixed(&[2, 2, 2])),
            View::Reshape(Shape::fixed(&[4, 2])),
        ];
        assert_eq!(view_map(&[2, 2], &views, 1).unwrap(), [0, 1, 0, 1, 2, 3, 2, 3]);
        // A leading axis added by a broadcast, and shapes that do not broadcast.
        assert_eq!(broadcast_map(&[7, 8], &[2], &[3, 2]).unwrap(), [7, 8, 7, 8, 7, 8]);
        assert!(broadcast_map(&[0, 1, 2], &[3], &[2, 2]).is_none());
        assert!(view_map(&[3], &[View::Reshape(Shape::fixed(&[2, 2]))], 1).is_err());
    }
}
