//! Compiled code and how to call it: [`JitModule`] compiles a set of kernels into one Cranelift
//! `JITModule` for the host CPU; [`CompiledKernel`] is a callable handle to one of them that runs
//! with the same contract as the interpreter's kernel evaluation.
//!
//! Ownership: the `JITModule` lives in a shared [`Code`] whose `Drop` frees its memory with
//! `free_memory`; every handle holds an `Arc` of it, so code is freed exactly once, after the
//! module and the last handle are gone, and never while a handle can still call it.
//!
//! Guarantee: [`CompiledKernel::run`] gives the interpreter's result shapes and dtypes and values
//! equal up to rounding (elementwise ops bit for bit, sums to reassociation, transcendentals to a
//! few ulp); it validates every operand before calling native code (see [`super::abi`]) and
//! returns an error rather than panicking.

use super::abi::{col_strides, CallShape, ColStride, RowBases};
use super::kernel_codegen;
use super::JitError;
use crate::tensor::{Tensor, TensorData};
use cranelift_codegen::ir::types;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{print_errors, CodegenError};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Module, ModuleError};
use kiln_ir::{Kernel, Level};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Kernels over at least this many elements split their rows across threads.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// Rows `start .. start + count` and their slices of every output.
type Block<'o> = (usize, usize, Vec<&'o mut [MaybeUninit<f32>]>);

/// The native signature of every compiled kernel (see [`super::abi`]).
type KernelFn = unsafe extern "C" fn(i64, i64, *const i64, *const *const f32, *const *mut f32);

/// Code generation settings.
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Run Cranelift's IR verifier on every function (slower compiles; on in debug builds).
    pub verify: bool,
    /// Use fused multiply-add in polynomials when the host has it.
    pub fma: bool,
    /// Keep each kernel's Cranelift IR and disassembly in [`CompileStats::listings`].
    pub listings: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions { verify: cfg!(debug_assertions), fma: true, listings: false }
    }
}

/// The memory of one `JITModule`, freed on drop.
struct Code {
    module: Mutex<Option<JITModule>>,
}

impl Drop for Code {
    fn drop(&mut self) {
        let module = self.module.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(module) = module {
            // SAFETY: `Code` is only reachable through the `Arc`s held by `JitModule` and every
            // `CompiledKernel`; it is dropped when the last of them is, so no function pointer
            // into this module can be called any more, and none is executing (a call borrows its
            // handle for its whole duration).
            unsafe { module.free_memory() };
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code")
    }
}

/// Time and size of one compilation.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    /// Wall time from kernels to callable code, ISA setup included.
    pub total: Duration,
    /// Per kernel: time to generate and compile its function (zero for a rejected kernel).
    pub per_kernel: Vec<Duration>,
    /// Machine code bytes of all compiled kernels.
    pub code_bytes: usize,
    /// Per kernel with [`JitOptions::listings`]: its optimized IR and disassembly.
    pub listings: Vec<String>,
}

/// A set of kernels compiled together into one code module.
#[derive(Debug)]
pub struct JitModule {
    kernels: Vec<Result<CompiledKernel, JitError>>,
    stats: CompileStats,
    _code: Arc<Code>,
}

impl JitModule {
    /// Compiles `kernels` for the host CPU. A kernel the JIT does not handle gets its own error
    /// ([`JitModule::kernel`]) and leaves the others usable; failing to set up the host ISA or to
    /// link the module fails the whole call.
    pub fn compile(kernels: &[&Kernel], options: &JitOptions) -> Result<JitModule, JitError> {
        let start = Instant::now();
        let isa = host_isa(options)?;
        let fma = options.fma && (isa.name() == "aarch64" || host_flag(&isa, "has_fma"));
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut ctx = module.make_context();
        let mut fctx = FunctionBuilderContext::new();
        let mut pending = Vec::with_capacity(kernels.len());
        let mut per_kernel = Vec::with_capacity(kernels.len());
        let mut code_bytes = 0;
        let mut listings = Vec::new();
        ctx.set_disasm(options.listings);
        for kernel in kernels {
            let t0 = Instant::now();
            let compiled = (|| -> Result<_, JitError> {
                let strides = col_strides(kernel)?;
                ctx.func.signature = module.make_signature();
                kernel_codegen::build(&mut ctx.func, &mut fctx, kernel, &strides, fma, module.target_config())?;
                let id = module.declare_anonymous_function(&ctx.func.signature).map_err(codegen_error)?;
                module.define_function(id, &mut ctx).map_err(|e| match e {
                    ModuleError::Compilation(e) => verifier_error(&ctx.func, e),
                    e => codegen_error(e),
                })?;
                code_bytes += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
                if options.listings {
                    let disasm = ctx.compiled_code().and_then(|c| c.vcode.clone()).unwrap_or_default();
                    listings.push(format!("{}\n{disasm}", ctx.func.display()));
                }
                Ok((id, strides))
            })();
            module.clear_context(&mut ctx);
            per_kernel.push(t0.elapsed());
            pending.push(compiled);
        }
        module.finalize_definitions().map_err(codegen_error)?;
        let entries: Vec<Result<(KernelFn, Vec<ColStride>), JitError>> = pending
            .into_iter()
            .map(|p| {
                p.map(|(id, strides)| {
                    let ptr = module.get_finalized_function(id);
                    // SAFETY: `id` was defined by `kernel_codegen::build`, which gives every
                    // kernel exactly the signature of `KernelFn` (five pointer-sized integer
                    // parameters, no results, the host's default calling convention), and the
                    // module is finalized, so `ptr` points to executable code of that type.
                    let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
                    (entry, strides)
                })
            })
            .collect();
        let code = Arc::new(Code { module: Mutex::new(Some(module)) });
        let kernels = entries
            .into_iter()
            .zip(kernels)
            .map(|(e, kernel)| {
                e.map(|(entry, strides)| CompiledKernel {
                    entry,
                    scalar_read: kernel_codegen::scalar_reads(kernel, &strides),
                    strides,
                    kernel: Arc::new((*kernel).clone()),
                    _code: Arc::clone(&code),
                })
            })
            .collect();
        Ok(JitModule {
            kernels,
            stats: CompileStats { total: start.elapsed(), per_kernel, code_bytes, listings },
            _code: code,
        })
    }

    /// Kernel `i` of the compiled set, or why it was not compiled.
    pub fn kernel(&self, i: usize) -> Result<&CompiledKernel, JitError> {
        match self.kernels.get(i) {
            Some(Ok(k)) => Ok(k),
            Some(Err(e)) => Err(e.clone()),
            None => Err(JitError::Operand { what: format!("no kernel {i} in a module of {}", self.kernels.len()) }),
        }
    }

    /// Every kernel in the order given to [`JitModule::compile`].
    pub fn kernels(&self) -> &[Result<CompiledKernel, JitError>] {
        &self.kernels
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }
}

/// Cranelift settings for the host: `opt_level = speed`, the host's CPU features.
fn host_isa(options: &JitOptions) -> Result<OwnedTargetIsa, JitError> {
    let host = |what: String| JitError::Host { what };
    let mut flags = settings::builder();
    let verify = if options.verify { "true" } else { "false" };
    for (name, value) in
        [("opt_level", "speed"), ("enable_verifier", verify), ("is_pic", "false"), ("use_colocated_libcalls", "false")]
    {
        flags.set(name, value).map_err(|e| host(format!("setting {name}: {e}")))?;
    }
    let builder = cranelift_native::builder().map_err(|e| host(e.to_string()))?;
    let isa = builder.finish(settings::Flags::new(flags)).map_err(|e| host(e.to_string()))?;
    if isa.pointer_type() != types::I64 {
        return Err(host(format!("{}-bit pointers (the kernel ABI needs 64)", isa.pointer_bits())));
    }
    Ok(isa)
}

fn host_flag(isa: &OwnedTargetIsa, name: &str) -> bool {
    isa.isa_flags().iter().any(|f| f.name == name && f.as_bool() == Some(true))
}

fn codegen_error(e: ModuleError) -> JitError {
    JitError::Codegen { what: e.to_string() }
}

fn verifier_error(func: &cranelift_codegen::ir::Function, e: CodegenError) -> JitError {
    JitError::Codegen { what: print_errors::pretty_error(func, e) }
}

/// The per-call setup shared by [`CompiledKernel::run`] and [`CompiledKernel::run_into`].
struct Prepared<'o> {
    call: CallShape,
    data: Vec<&'o [f32]>,
    bases: RowBases,
    cols: i64,
    widths: Vec<usize>,
}

/// A callable compiled kernel. Cheap to clone; keeps its code alive.
#[derive(Clone)]
pub struct CompiledKernel {
    entry: KernelFn,
    kernel: Arc<Kernel>,
    strides: Vec<ColStride>,
    scalar_read: Vec<bool>,
    _code: Arc<Code>,
}

impl fmt::Debug for CompiledKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledKernel")
            .field("shape", &self.kernel.shape.to_string())
            .field("strides", &self.strides)
            .finish()
    }
}

impl CompiledKernel {
    /// The kernel this code computes.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The column stride each operand was compiled for.
    pub fn col_strides(&self) -> &[ColStride] {
        &self.strides
    }

    /// Runs the kernel on `operands` (the fused node's operands, in order) for a call of `t`
    /// tokens, like the interpreter: one tensor per kernel output, `[shape..]` for a vector-level
    /// output and `[rows.., 1]` for a row-level one.
    pub fn run(&self, operands: &[&Tensor<'_>], t: usize) -> Result<SmallVec<[Tensor<'static>; 1]>, JitError> {
        let Prepared { call, data, bases, cols: cols_i64, widths } = self.prepare(operands, t)?;
        let too_large = || JitError::TooLarge { shape: call.shape.to_vec() };
        let lens: Vec<usize> = widths
            .iter()
            .map(|&w| call.rows.checked_mul(w).filter(|&n| n <= isize::MAX as usize / 4).ok_or_else(too_large))
            .collect::<Result<_, JitError>>()?;
        // Not zero-filled: the compiled code writes every element (see `call_rows`).
        let mut outputs: Vec<Vec<f32>> = lens.iter().map(|&n| Vec::with_capacity(n)).collect();
        if call.rows > 0 {
            let parallel = call.rows > 1 && call.rows.saturating_mul(call.cols) >= PAR_MIN_ELEMENTS;
            let per = if parallel { call.rows.div_ceil(rayon::current_num_threads().max(1) * 4) } else { call.rows };
            // Carve every output into per-block slices of `count * width` elements.
            let starts: Vec<usize> = (0..call.rows).step_by(per).collect();
            let mut blocks: Vec<Block<'_>> = starts.iter().map(|&s| (s, per.min(call.rows - s), Vec::new())).collect();
            for ((out, &w), &n) in outputs.iter_mut().zip(&widths).zip(&lens) {
                let mut rest = out.spare_capacity_mut().get_mut(..n).ok_or_else(too_large)?;
                for (_, count, slices) in blocks.iter_mut() {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(*count * w);
                    slices.push(head);
                    rest = tail;
                }
            }
            let run_block = |(start, count, mut outs): Block<'_>| {
                self.call_rows(start, count, &widths, cols_i64, &bases, &data, &mut outs)
            };
            if blocks.len() > 1 {
                blocks.into_par_iter().try_for_each(run_block)?;
            } else {
                blocks.into_iter().try_for_each(run_block)?;
            }
            for (out, &n) in outputs.iter_mut().zip(&lens) {
                // SAFETY: every block of rows ran successfully, and a call writes every element
                // of its rows of every output (the final column loop stores all `cols` columns
                // of each vector output, each row output is stored once per row); the blocks
                // cover all rows, so the first `n` elements are initialized.
                unsafe { out.set_len(n) };
            }
        }
        Ok(self
            .kernel
            .outputs
            .iter()
            .zip(outputs)
            .map(|(o, v)| {
                let mut shape = call.shape.clone();
                if o.level == Level::Row {
                    if let Some(last) = shape.last_mut() {
                        *last = 1;
                    }
                }
                Tensor::from_parts(shape, TensorData::F32(Cow::Owned(v)))
            })
            .collect())
    }

    /// Like [`CompiledKernel::run`], writing output `j` into `outs[j]`, which must hold exactly
    /// that output's elements (an arena region, say). The regions must not overlap the operands.
    pub fn run_into(&self, operands: &[&Tensor<'_>], t: usize, outs: &mut [&mut [f32]]) -> Result<(), JitError> {
        let Prepared { call, data, bases, cols, widths } = self.prepare(operands, t)?;
        let sized = outs.len() == widths.len()
            && outs.iter().zip(&widths).all(|(o, &w)| Some(o.len()) == call.rows.checked_mul(w));
        if !sized {
            return Err(JitError::Operand { what: "output regions do not match the kernel's results".into() });
        }
        for (o, d) in outs.iter().zip(&data) {
            let (a, b) = (o.as_ptr_range(), d.as_ptr_range());
            if a.start < b.end && b.start < a.end {
                return Err(JitError::Operand { what: "an output region overlaps an operand".into() });
            }
        }
        if call.rows == 0 {
            return Ok(());
        }
        let mut views: Vec<&mut [MaybeUninit<f32>]> = outs
            .iter_mut()
            .map(|o| {
                // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the compiled code only
                // ever stores initialized `f32` values through these views, so the slices stay
                // initialized.
                unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast::<MaybeUninit<f32>>(), o.len()) }
            })
            .collect();
        self.call_rows(0, call.rows, &widths, cols, &bases, &data, &mut views)
    }

    /// What both ways of running need: the call's shape, the operands' data, every row's base
    /// offsets (checked against the buffers) and each output's row width.
    fn prepare<'o>(&self, operands: &[&'o Tensor<'_>], t: usize) -> Result<Prepared<'o>, JitError> {
        let call = CallShape::new(&self.kernel, t)?;
        let data: Vec<&[f32]> = operands
            .iter()
            .enumerate()
            .map(|(k, x)| {
                x.as_f32().ok_or_else(|| JitError::Operand { what: format!("operand {k} is {}, not f32", x.dtype()) })
            })
            .collect::<Result<_, _>>()?;
        let lens: Vec<usize> = data.iter().map(|d| d.len()).collect();
        let bases = RowBases::new(&self.kernel, &self.strides, &self.scalar_read, &call, &lens, t)?;
        let cols = i64::try_from(call.cols).map_err(|_| JitError::TooLarge { shape: call.shape.to_vec() })?;
        let widths = self.kernel.outputs.iter().map(|o| if o.level == Level::Vector { call.cols } else { 1 }).collect();
        Ok(Prepared { call, data, bases, cols, widths })
    }

    /// Calls the native code on rows `start .. start + count`; `outs[j]` holds exactly those
    /// rows of output `j` (`widths[j]` elements per row).
    #[allow(clippy::too_many_arguments)]
    fn call_rows(
        &self,
        start: usize,
        count: usize,
        widths: &[usize],
        cols: i64,
        bases: &RowBases,
        inputs: &[&[f32]],
        outs: &mut [&mut [MaybeUninit<f32>]],
    ) -> Result<(), JitError> {
        let internal = |what: &str| JitError::Codegen { what: format!("internal: {what}") };
        let n = bases.operands;
        let row_bases = bases.offsets.get(start * n..(start + count) * n).ok_or_else(|| internal("row bases"))?;
        let sized = outs.len() == widths.len() && outs.iter().zip(widths).all(|(o, &w)| o.len() == count * w);
        if !sized || inputs.len() != n {
            return Err(internal("output blocks"));
        }
        let input_ptrs: SmallVec<[*const f32; 8]> = inputs.iter().map(|d| d.as_ptr()).collect();
        let output_ptrs: SmallVec<[*mut f32; 4]> = outs.iter_mut().map(|o| o.as_mut_ptr().cast::<f32>()).collect();
        // SAFETY: `entry` has the `KernelFn` ABI and its code is alive (this handle holds it).
        // `RowBases::new` checked that for every row and operand, the elements the compiled code
        // reads (the row's base, or `cols` consecutive elements from it for a contiguous read)
        // lie inside that operand's buffer, which `inputs` borrows for the whole call; `row_bases`
        // holds exactly `count * n` offsets; `outs[j]` is a distinct buffer of exactly
        // `count * cols` (vector output) or `count` (row output) elements, which is what the code
        // writes (it only writes, never reads them, so they may be uninitialized). Input and output
        // buffers do not overlap (outputs are freshly allocated).
        unsafe {
            (self.entry)(count as i64, cols, row_bases.as_ptr(), input_ptrs.as_ptr(), output_ptrs.as_ptr());
        }
        Ok(())
    }
}
