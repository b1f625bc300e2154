//! Code generation for one fused kernel ([`kiln_ir::Kernel`]) into a Cranelift function with the
//! ABI of [`super::abi`].
//!
//! Shape of the generated code: a loop over rows; per row, the operands' row pointers, then one
//! column loop per reduction that a vector output or another reduction needs (in body order),
//! which recomputes what the reduction's operand depends on from the inputs and accumulates it,
//! then a last column loop computing and storing the vector outputs and accumulating every other
//! reduction (so a reduction only the row outputs need costs no extra pass). No vector temporary
//! is ever stored; a row's vector outputs are stored only in its last loop, each column after
//! that column's reads. Values that are the same for every column
//! of a row ("uniform": row-level values, constants, inputs broadcast along the row and anything
//! computed from those alone) are computed once per row in scalar code between the loops, and
//! splat once before the loop that uses them.
//!
//! A column loop runs `f32x4` steps (unrolled ×2, with two accumulators for a reduction, when the
//! body is cheap), then a scalar tail; a row of a fixed length of at most 32 columns (Mamba's
//! state of 16, a convolution's 4 taps) gets the same steps as straight-line code instead. Reductions combine their lanes at the end, so a sum is
//! summed in a different order than the interpreter's left-to-right fold (agreement to rounding,
//! not bit for bit); every elementwise operation is the same IEEE operation as the interpreter's
//! and agrees bit for bit, except the transcendentals (a few ulp, see [`super::math`]).
//!
//! Rejected (an [`JitError::Unsupported`], so the caller keeps the interpreter): `pow`, bool
//! outputs, kernels of rank 0, operands with unusable read shapes.

use super::abi::ColStride;
use super::emit::{mem, Emitter, Width};
use super::{math, JitError};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, BlockArg, Function, InstBuilder, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use kiln_ir::kernel::InstrType;
use kiln_ir::{BinaryOp, CompareOp, DType, Dim, Instr, Kernel, Level, ReduceOp, UnaryOp};

const I64: cranelift_codegen::ir::Type = types::I64;
const NO_ARGS: &[BlockArg] = &[];
/// Loop bodies with at most this many instructions and no transcendental are unrolled ×2.
const UNROLL_MAX_OPS: usize = 32;
/// Rows of a fixed length up to this many columns are unrolled completely.
const UNROLL_MAX_COLS: usize = 32;

/// Whether rows of `cols` columns get straight-line code instead of a loop.
fn unrolled(cols: Dim) -> bool {
    matches!(cols, Dim::Fixed(n) if (1..=UNROLL_MAX_COLS).contains(&n))
}

/// What code generation needs to know about a kernel's instructions.
#[derive(Debug)]
pub(crate) struct Plan {
    types: Vec<InstrType>,
    /// Same value for every column of a row.
    uniform: Vec<bool>,
    /// Needed by some output.
    live: Vec<bool>,
}

/// Checks that the kernel can be compiled with these column strides and analyses it.
pub(crate) fn plan(kernel: &Kernel, strides: &[ColStride]) -> Result<Plan, JitError> {
    let unsupported = |what: String| JitError::Unsupported { what };
    if kernel.shape.rank() == 0 {
        return Err(unsupported("a kernel of rank 0".into()));
    }
    if strides.len() != kernel.reads.len() {
        return Err(unsupported(format!("{} column strides for {} operands", strides.len(), kernel.reads.len())));
    }
    let types = kernel.instr_types().map_err(unsupported)?;
    let n = kernel.body.len();
    let mut uniform = vec![false; n];
    for (i, instr) in kernel.body.iter().enumerate() {
        uniform[i] = match *instr {
            Instr::Input(k, Level::Row) => strides.get(k as usize).is_some(),
            Instr::Input(k, Level::Vector) => strides.get(k as usize) == Some(&ColStride::Broadcast),
            Instr::Const(_) | Instr::Reduce(..) => true,
            Instr::Unary(_, a) => uniform[a as usize],
            Instr::Binary(_, a, b) | Instr::Compare(_, a, b) => uniform[a as usize] && uniform[b as usize],
            Instr::Select(c, a, b) => uniform[c as usize] && uniform[a as usize] && uniform[b as usize],
        };
        if let Instr::Input(k, _) = *instr {
            if strides.get(k as usize).is_none() {
                return Err(unsupported(format!("${i} reads operand {k}, which has no read shape")));
            }
        }
    }
    let mut live = vec![false; n];
    for o in &kernel.outputs {
        let t =
            types.get(o.instr as usize).ok_or_else(|| unsupported(format!("output ${} does not exist", o.instr)))?;
        if t.dtype != DType::F32 {
            return Err(unsupported(format!("output ${} is {}", o.instr, t.dtype)));
        }
        if o.level < t.level {
            return Err(unsupported(format!("output ${} is a vector value written as a row value", o.instr)));
        }
        live[o.instr as usize] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            for a in operands(&kernel.body[i]) {
                live[a as usize] = true;
            }
            if let Instr::Binary(BinaryOp::Pow, ..) = kernel.body[i] {
                return Err(unsupported("pow".into()));
            }
        }
    }
    Ok(Plan { types, uniform, live })
}

fn operands(instr: &Instr) -> impl Iterator<Item = u16> {
    let (a, b, c) = match *instr {
        Instr::Input(..) | Instr::Const(_) => (None, None, None),
        Instr::Unary(_, a) | Instr::Reduce(_, a) => (Some(a), None, None),
        Instr::Binary(_, a, b) | Instr::Compare(_, a, b) => (Some(a), Some(b), None),
        Instr::Select(c, a, b) => (Some(c), Some(a), Some(b)),
    };
    a.into_iter().chain(b).chain(c)
}

fn is_transcendental(instr: &Instr) -> bool {
    matches!(instr, Instr::Unary(UnaryOp::Exp | UnaryOp::Log | UnaryOp::Log1p | UnaryOp::Tanh, _))
}

/// Whether operand `k` is ever read one element per row (row level, or broadcast along the row).
pub(crate) fn scalar_reads(kernel: &Kernel, strides: &[ColStride]) -> Vec<bool> {
    let mut reads = vec![false; kernel.reads.len()];
    for instr in &kernel.body {
        if let Instr::Input(k, level) = *instr {
            let broadcast = strides.get(k as usize) == Some(&ColStride::Broadcast);
            if let Some(r) = reads.get_mut(k as usize) {
                *r |= level == Level::Row || broadcast;
            }
        }
    }
    reads
}

/// Builds the kernel's function into `func` (whose signature this sets to the kernel ABI).
pub(crate) fn build(
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    kernel: &Kernel,
    strides: &[ColStride],
    fma: bool,
    target: TargetFrontendConfig,
) -> Result<(), JitError> {
    let plan = plan(kernel, strides)?;
    func.signature.params = vec![AbiParam::new(I64); 5];
    func.signature.returns.clear();
    let b = FunctionBuilder::new(func, fctx);
    let mut g = Gen {
        e: Emitter::new(b, fma),
        kernel,
        plan: &plan,
        cols: None,
        row_ptr: Vec::new(),
        out_ptr: Vec::new(),
        scalar: vec![None; kernel.body.len()],
        splat: vec![None; kernel.body.len()],
    };
    g.function()?;
    g.e.b.seal_all_blocks();
    g.e.b.finalize(target);
    Ok(())
}

struct Gen<'f, 'k> {
    e: Emitter<'f>,
    kernel: &'k Kernel,
    plan: &'k Plan,
    cols: Option<Value>,
    /// Per operand: address of the current row's first element.
    row_ptr: Vec<Value>,
    /// Per output: address of the current row's first element.
    out_ptr: Vec<Value>,
    /// Uniform values of the current row, scalar.
    scalar: Vec<Option<Value>>,
    /// Their `f32x4` splats.
    splat: Vec<Option<Value>>,
}

fn internal(what: &str) -> JitError {
    JitError::Codegen { what: format!("internal: {what}") }
}

impl Gen<'_, '_> {
    fn cols(&self) -> Result<Value, JitError> {
        self.cols.ok_or_else(|| internal("cols used before the entry block"))
    }

    /// The whole function: entry, the loop over rows, and the return.
    fn function(&mut self) -> Result<(), JitError> {
        let n_in = self.kernel.reads.len();
        let n_out = self.kernel.outputs.len();
        let b = &mut self.e.b;
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let [rows, cols, bases, inputs, outputs] = params[..] else {
            return Err(internal("kernel signature"));
        };
        self.cols = Some(cols);
        let in_base: Vec<Value> =
            (0..n_in).map(|k| b.ins().load(I64, mem(), inputs, (8 * k) as i32)).collect::<Vec<_>>();
        let out_base: Vec<Value> = (0..n_out).map(|j| b.ins().load(I64, mem(), outputs, (8 * j) as i32)).collect();
        let row_bytes = b.ins().ishl_imm_u(cols, 2);
        let r = b.declare_var(I64);
        let zero = b.ins().iconst(I64, 0);
        b.def_var(r, zero);
        let bp = b.declare_var(I64);
        b.def_var(bp, bases);
        let out_vars: Vec<Variable> = out_base
            .iter()
            .map(|&p| {
                let v = b.declare_var(I64);
                b.def_var(v, p);
                v
            })
            .collect();
        let head = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        let jump = b.ins().jump(head, NO_ARGS);
        self.e.set_anchor(jump);

        let b = &mut self.e.b;
        b.switch_to_block(head);
        let rv = b.use_var(r);
        let more = b.ins().icmp(IntCC::SignedLessThan, rv, rows);
        b.ins().brif(more, body, NO_ARGS, exit, NO_ARGS);

        b.switch_to_block(body);
        let bpv = b.use_var(bp);
        self.row_ptr = (0..n_in)
            .map(|k| {
                let off = b.ins().load(I64, mem(), bpv, (8 * k) as i32);
                let off = b.ins().ishl_imm_u(off, 2);
                b.ins().iadd(in_base[k], off)
            })
            .collect();
        self.out_ptr = out_vars.iter().map(|&v| b.use_var(v)).collect();
        self.row()?;
        let b = &mut self.e.b;
        let next = b.ins().iadd_imm_s(rv, 1);
        b.def_var(r, next);
        let bp_next = b.ins().iadd_imm_s(bpv, (8 * n_in) as i64);
        b.def_var(bp, bp_next);
        for ((o, &v), &p) in self.kernel.outputs.iter().zip(&out_vars).zip(&self.out_ptr) {
            let p_next = match o.level {
                Level::Vector => b.ins().iadd(p, row_bytes),
                Level::Row => b.ins().iadd_imm_s(p, 4),
            };
            b.def_var(v, p_next);
        }
        b.ins().jump(head, NO_ARGS);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
        Ok(())
    }

    /// One row: the loops of the reductions something else in the row needs first, then one
    /// loop storing the vector outputs and accumulating every other reduction, then the row
    /// outputs.
    fn row(&mut self) -> Result<(), JitError> {
        let body = &self.kernel.body;
        let reduces: Vec<(usize, ReduceOp, u16)> = body
            .iter()
            .enumerate()
            .filter_map(|(i, instr)| match *instr {
                Instr::Reduce(op, a) if self.plan.live[i] => Some((i, op, a)),
                _ => None,
            })
            .collect();
        let vector_outputs: Vec<(usize, u16)> = self
            .kernel
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.level == Level::Vector)
            .map(|(j, o)| (j, o.instr))
            .collect();
        // A reduction that a vector output or another reduction depends on needs a loop of its
        // own before the last one.
        let mut first = vec![false; body.len()];
        let mut seen = vec![false; body.len()];
        let mut stack: Vec<usize> = vector_outputs.iter().map(|&(_, i)| usize::from(i)).collect();
        stack.extend(reduces.iter().map(|&(_, _, a)| usize::from(a)));
        while let Some(j) = stack.pop() {
            if !std::mem::replace(&mut seen[j], true) {
                first[j] = matches!(body[j], Instr::Reduce(..));
                stack.extend(operands(&body[j]).map(usize::from));
            }
        }
        for &(i, op, a) in reduces.iter().filter(|&&(i, ..)| first[i]) {
            let totals = self.column_loop(&[a], &Sinks { stores: Vec::new(), reduces: vec![op] })?;
            self.scalar[i] = totals.first().copied();
        }
        let last: Vec<(usize, ReduceOp, u16)> = reduces.into_iter().filter(|&(i, ..)| !first[i]).collect();
        if !vector_outputs.is_empty() || !last.is_empty() {
            let roots: Vec<u16> =
                vector_outputs.iter().map(|&(_, i)| i).chain(last.iter().map(|&(_, _, a)| a)).collect();
            let sinks = Sinks {
                stores: vector_outputs.iter().map(|&(j, _)| j).collect(),
                reduces: last.iter().map(|&(_, op, _)| op).collect(),
            };
            let totals = self.column_loop(&roots, &sinks)?;
            for (&(i, ..), total) in last.iter().zip(totals) {
                self.scalar[i] = Some(total);
            }
        }
        for (j, o) in self.kernel.outputs.iter().enumerate() {
            if o.level == Level::Row {
                let v = self.uniform(o.instr as usize)?;
                let p = self.out_ptr[j];
                self.e.b.ins().store(mem(), v, p, 0);
            }
        }
        Ok(())
    }

    /// The scalar value of uniform instruction `i` for this row, computing it (and what it
    /// depends on) at the current position if needed.
    fn uniform(&mut self, i: usize) -> Result<Value, JitError> {
        if let Some(v) = self.scalar[i] {
            return Ok(v);
        }
        // Everything uniform that `i` needs and that is not computed yet, in body order.
        let mut todo = vec![false; i + 1];
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            if todo[j] || self.scalar[j].is_some() {
                continue;
            }
            if !self.plan.uniform[j] {
                return Err(internal("a uniform value depends on a vector value"));
            }
            todo[j] = true;
            if !matches!(self.kernel.body[j], Instr::Reduce(..)) {
                stack.extend(operands(&self.kernel.body[j]).map(usize::from));
            }
        }
        for j in (0..=i).filter(|&j| todo[j]) {
            let instr = self.kernel.body[j];
            let v = match instr {
                Instr::Input(k, _) => self.e.b.ins().load(types::F32, mem(), self.row_ptr[k as usize], 0),
                Instr::Const(c) => self.e.f(Width::Scalar, c),
                Instr::Reduce(..) => return Err(internal("a reduction used before its loop")),
                _ => {
                    let args: Vec<Value> = operands(&instr)
                        .map(|a| self.scalar[a as usize].ok_or_else(|| internal("operand not computed")))
                        .collect::<Result<_, _>>()?;
                    lower(&mut self.e, Width::Scalar, &instr, &args, false)?
                }
            };
            self.scalar[j] = Some(v);
        }
        self.scalar[i].ok_or_else(|| internal("uniform value not computed"))
    }

    /// A uniform value at width `w` (bools stay scalar flags: they only feed selects).
    fn uniform_at(&self, j: usize, w: Width) -> Result<Value, JitError> {
        let v = match w {
            Width::Vector if self.plan.types[j].dtype == DType::F32 => self.splat[j],
            _ => self.scalar[j],
        };
        v.ok_or_else(|| internal("uniform value missing in a loop"))
    }

    /// Emits a column loop over the current row computing `roots` for every column and feeding
    /// them to `sinks`. Returns the reductions' results.
    fn column_loop(&mut self, roots: &[u16], sinks: &Sinks) -> Result<Vec<Value>, JitError> {
        // What the loop computes per element, and the uniform values it reads.
        let n = self.kernel.body.len();
        let mut per_element = vec![false; n];
        let mut uniform_used = vec![false; n];
        let mut stack: Vec<usize> = roots.iter().map(|&r| usize::from(r)).collect();
        while let Some(j) = stack.pop() {
            if self.plan.uniform[j] {
                uniform_used[j] = true;
            } else if !per_element[j] {
                per_element[j] = true;
                stack.extend(operands(&self.kernel.body[j]).map(usize::from));
            }
        }
        for j in (0..n).filter(|&j| uniform_used[j]) {
            let v = self.uniform(j)?;
            self.e.pin(v);
            if self.plan.types[j].dtype == DType::F32 {
                let s = match self.splat[j] {
                    Some(s) => s,
                    None => self.e.b.ins().splat(types::F32X4, v),
                };
                self.splat[j] = Some(s);
                self.e.pin(s);
            }
        }
        // The row pointers too (they would be recomputed in every iteration).
        for k in (0..n).filter_map(|j| match self.kernel.body[j] {
            Instr::Input(k, _) if per_element[j] => Some(k as usize),
            _ => None,
        }) {
            self.e.pin(self.row_ptr[k]);
        }
        let body: Vec<usize> = (0..n).filter(|&j| per_element[j]).collect();
        let cheap = body.len() <= UNROLL_MAX_OPS && !body.iter().any(|&j| is_transcendental(&self.kernel.body[j]));
        let cols = self.cols()?;

        let b = &mut self.e.b;
        let c = b.declare_var(I64);
        let zero = b.ins().iconst(I64, 0);
        b.def_var(c, zero);
        let mut accs: Vec<Accumulator> = Vec::with_capacity(sinks.reduces.len());
        for &op in &sinks.reduces {
            let ident = match op {
                // -0.0 is the exact identity of addition (x + -0.0 == x for every x).
                ReduceOp::Sum => -0.0,
                ReduceOp::Max => f32::NEG_INFINITY,
            };
            let vi = self.e.f(Width::Vector, ident);
            let si = self.e.f(Width::Scalar, ident);
            let b = &mut self.e.b;
            let vars: Vec<Variable> = (0..if cheap { 2 } else { 1 }).map(|_| b.declare_var(types::F32X4)).collect();
            vars.iter().for_each(|&v| b.def_var(v, vi));
            let s = b.declare_var(types::F32);
            b.def_var(s, si);
            accs.push((op, vars, s));
        }

        if let Some(Dim::Fixed(n)) = self.kernel.shape.dims().last().copied().filter(|d| unrolled(*d)) {
            // A short row of known length: straight-line code, in the loop's order of
            // accumulation (so the same sums as the loop would compute).
            let zero = self.e.b.ins().iconst(I64, 0);
            let parts = if cheap { 2 } else { 1 };
            for k in 0..n / 4 {
                let lane = i32::try_from(4 * k).map_err(|_| internal("column offset"))?;
                let vals = self.step(&body, roots, Width::Vector, zero, lane)?;
                self.sink(sinks, &accs, k % parts, &vals, Width::Vector, zero, lane)?;
            }
            for col in n / 4 * 4..n {
                let lane = i32::try_from(col).map_err(|_| internal("column offset"))?;
                let vals = self.step(&body, roots, Width::Scalar, zero, lane)?;
                self.sink(sinks, &accs, 0, &vals, Width::Scalar, zero, lane)?;
            }
            return self.totals(accs, cols);
        }

        let b = &mut self.e.b;
        let head_u = b.create_block();
        let body_u = b.create_block();
        let head_v = b.create_block();
        let body_v = b.create_block();
        let head_s = b.create_block();
        let body_s = b.create_block();
        let done = b.create_block();
        b.ins().jump(if cheap { head_u } else { head_v }, NO_ARGS);

        // Two f32x4 steps per iteration.
        if cheap {
            let b = &mut self.e.b;
            b.switch_to_block(head_u);
            let cv = b.use_var(c);
            let next = b.ins().iadd_imm_s(cv, 8);
            let ok = b.ins().icmp(IntCC::SignedLessThanOrEqual, next, cols);
            b.ins().brif(ok, body_u, NO_ARGS, head_v, NO_ARGS);
            b.switch_to_block(body_u);
            for (part, lane) in [(0, 0), (1, 4)] {
                let vals = self.step(&body, roots, Width::Vector, cv, lane)?;
                self.sink(sinks, &accs, part, &vals, Width::Vector, cv, lane)?;
            }
            let b = &mut self.e.b;
            b.def_var(c, next);
            b.ins().jump(head_u, NO_ARGS);
        }
        // One f32x4 step per iteration (at most one iteration after the unrolled loop).
        let b = &mut self.e.b;
        b.switch_to_block(head_v);
        let cv = b.use_var(c);
        let next = b.ins().iadd_imm_s(cv, 4);
        let ok = b.ins().icmp(IntCC::SignedLessThanOrEqual, next, cols);
        b.ins().brif(ok, body_v, NO_ARGS, head_s, NO_ARGS);
        b.switch_to_block(body_v);
        let vals = self.step(&body, roots, Width::Vector, cv, 0)?;
        self.sink(sinks, &accs, 0, &vals, Width::Vector, cv, 0)?;
        let b = &mut self.e.b;
        b.def_var(c, next);
        b.ins().jump(if cheap { head_s } else { head_v }, NO_ARGS);
        // Scalar tail.
        b.switch_to_block(head_s);
        let cv = b.use_var(c);
        let ok = b.ins().icmp(IntCC::SignedLessThan, cv, cols);
        b.ins().brif(ok, body_s, NO_ARGS, done, NO_ARGS);
        b.switch_to_block(body_s);
        let vals = self.step(&body, roots, Width::Scalar, cv, 0)?;
        self.sink(sinks, &accs, 0, &vals, Width::Scalar, cv, 0)?;
        let b = &mut self.e.b;
        let next = b.ins().iadd_imm_s(cv, 1);
        b.def_var(c, next);
        b.ins().jump(head_s, NO_ARGS);

        b.switch_to_block(done);
        self.totals(accs, cols)
    }

    /// The reductions' results from their accumulators, at the end of a column loop.
    fn totals(&mut self, accs: Vec<Accumulator>, cols: Value) -> Result<Vec<Value>, JitError> {
        let mut totals = Vec::with_capacity(accs.len());
        for (op, vars, s) in accs {
            let b = &mut self.e.b;
            let combine = |b: &mut FunctionBuilder<'_>, x: Value, y: Value| match op {
                ReduceOp::Sum => b.ins().fadd(x, y),
                ReduceOp::Max => b.ins().fmax(x, y),
            };
            let mut acc = b.use_var(vars[0]);
            for &v in &vars[1..] {
                let y = b.use_var(v);
                acc = combine(b, acc, y);
            }
            let lanes: Vec<Value> = (0..4u8).map(|l| b.ins().extractlane(acc, l)).collect();
            let lo = combine(b, lanes[0], lanes[1]);
            let hi = combine(b, lanes[2], lanes[3]);
            let total = combine(b, lo, hi);
            let tail = b.use_var(s);
            let mut total = combine(b, total, tail);
            if op == ReduceOp::Sum {
                // The interpreter's empty sum is +0.0.
                let empty = b.ins().icmp_imm_s(IntCC::Equal, cols, 0);
                let pos_zero = self.e.f(Width::Scalar, 0.0);
                total = self.e.b.ins().select(empty, pos_zero, total);
            }
            totals.push(total);
        }
        Ok(totals)
    }

    /// Computes `roots` at columns `col + lane ..` (width `w`) from the inputs.
    fn step(&mut self, body: &[usize], roots: &[u16], w: Width, col: Value, lane: i32) -> Result<Vec<Value>, JitError> {
        let mut vals: Vec<Option<Value>> = vec![None; self.kernel.body.len()];
        let byte_off = self.e.b.ins().ishl_imm_u(col, 2);
        for &j in body {
            let instr = self.kernel.body[j];
            let v = match instr {
                Instr::Input(k, _) => {
                    let p = self.e.b.ins().iadd(self.row_ptr[k as usize], byte_off);
                    self.e.b.ins().load(w.float(), mem(), p, lane * 4)
                }
                _ => {
                    let mut args = Vec::with_capacity(3);
                    for a in operands(&instr).map(usize::from) {
                        args.push(if self.plan.uniform[a] {
                            self.uniform_at(a, w)?
                        } else {
                            vals[a].ok_or_else(|| internal("operand not computed in the loop"))?
                        });
                    }
                    let flag = matches!(instr, Instr::Select(c, ..) if self.plan.uniform[c as usize]);
                    lower(&mut self.e, w, &instr, &args, flag)?
                }
            };
            vals[j] = Some(v);
        }
        roots
            .iter()
            .map(|&r| {
                let r = usize::from(r);
                if self.plan.uniform[r] {
                    self.uniform_at(r, w)
                } else {
                    vals[r].ok_or_else(|| internal("root not computed"))
                }
            })
            .collect()
    }

    /// Feeds one step's values to the sinks: the first ones are stored, the rest accumulated
    /// (`part` picks the vector accumulator).
    #[allow(clippy::too_many_arguments)]
    fn sink(
        &mut self,
        sinks: &Sinks,
        accs: &[Accumulator],
        part: usize,
        vals: &[Value],
        w: Width,
        col: Value,
        lane: i32,
    ) -> Result<(), JitError> {
        let (stored, reduced) = vals.split_at_checked(sinks.stores.len()).ok_or_else(|| internal("sink values"))?;
        if !sinks.stores.is_empty() {
            let b = &mut self.e.b;
            let byte_off = b.ins().ishl_imm_u(col, 2);
            for (&j, &v) in sinks.stores.iter().zip(stored) {
                let p = b.ins().iadd(self.out_ptr[j], byte_off);
                b.ins().store(mem(), v, p, lane * 4);
            }
        }
        if reduced.len() != accs.len() {
            return Err(internal("reductions without accumulators"));
        }
        for ((op, vars, s), &v) in accs.iter().zip(reduced) {
            let var = match w {
                Width::Vector => *vars.get(part).ok_or_else(|| internal("accumulator"))?,
                Width::Scalar => *s,
            };
            let acc = self.e.b.use_var(var);
            let acc = match op {
                ReduceOp::Sum => self.e.b.ins().fadd(acc, v),
                ReduceOp::Max => self.e.max(w, acc, v),
            };
            self.e.b.def_var(var, acc);
        }
        Ok(())
    }
}

/// What a column loop does with its roots: stores the first `stores.len()` into those output
/// slots and accumulates the rest, one reduction each.
struct Sinks {
    stores: Vec<usize>,
    reduces: Vec<ReduceOp>,
}

/// A reduction's accumulators: its operation, one `f32x4` per unrolled step, the scalar tail's.
type Accumulator = (ReduceOp, Vec<Variable>, Variable);

/// Lowers one elementwise instruction at width `w`; `flag_cond` says a select's condition is a
/// scalar flag even at vector width (a uniform condition).
fn lower(e: &mut Emitter<'_>, w: Width, instr: &Instr, a: &[Value], flag_cond: bool) -> Result<Value, JitError> {
    let arg = |i: usize| a.get(i).copied().ok_or_else(|| internal("missing operand"));
    Ok(match *instr {
        Instr::Unary(op, _) => {
            let x = arg(0)?;
            match op {
                UnaryOp::Neg => e.b.ins().fneg(x),
                UnaryOp::Abs => e.b.ins().fabs(x),
                UnaryOp::Sqrt => e.b.ins().sqrt(x),
                UnaryOp::Recip => {
                    let one = e.f(w, 1.0);
                    e.div(one, x)
                }
                UnaryOp::Exp => math::exp(e, w, x),
                UnaryOp::Log => math::log(e, w, x),
                UnaryOp::Log1p => math::log1p(e, w, x),
                UnaryOp::Tanh => math::tanh(e, w, x),
            }
        }
        Instr::Binary(op, ..) => {
            let (x, y) = (arg(0)?, arg(1)?);
            match op {
                BinaryOp::Add => e.add(x, y),
                BinaryOp::Sub => e.sub(x, y),
                BinaryOp::Mul => e.mul(x, y),
                BinaryOp::Div => e.div(x, y),
                // NaN-propagating, like `BinaryOp::apply`.
                BinaryOp::Max => e.max(w, x, y),
                BinaryOp::Min => e.min(w, x, y),
                BinaryOp::Pow => return Err(JitError::Unsupported { what: "pow".into() }),
            }
        }
        Instr::Compare(op, ..) => {
            let cc = match op {
                CompareOp::Lt => FloatCC::LessThan,
                CompareOp::Le => FloatCC::LessThanOrEqual,
                CompareOp::Gt => FloatCC::GreaterThan,
                CompareOp::Ge => FloatCC::GreaterThanOrEqual,
                CompareOp::Eq => FloatCC::Equal,
                // Unordered or not equal: NaN != x, as in Rust.
                CompareOp::Ne => FloatCC::NotEqual,
            };
            e.cmp(cc, arg(0)?, arg(1)?)
        }
        Instr::Select(..) => {
            let (c, x, y) = (arg(0)?, arg(1)?, arg(2)?);
            if flag_cond || w == Width::Scalar {
                e.b.ins().select(c, x, y)
            } else {
                e.select(w, c, x, y)
            }
        }
        Instr::Input(..) | Instr::Const(_) | Instr::Reduce(..) => return Err(internal("not an elementwise op")),
    })
}
