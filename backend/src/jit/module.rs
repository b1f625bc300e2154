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
                    last_layout: Arc::new(Mutex::new(None)),
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

/// Whether any of `outs` shares memory with any of `operands`.
fn overlaps<'a>(outs: &[&mut [f32]], operands: impl Iterator<Item = &'a [f32]> + Clone) -> bool {
    outs.iter().any(|o| {
        let a = o.as_ptr_range();
        operands.clone().any(|d| {
            let b = d.as_ptr_range();
            !d.is_empty() && !o.is_empty() && a.start < b.end && b.start < a.end
        })
    })
}

/// `o` seen as possibly uninitialized, which is how the compiled code's outputs are passed.
fn uninit_view(o: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the compiled code only ever stores
    // initialized `f32` values through these views, so the slice stays initialized.
    unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast::<MaybeUninit<f32>>(), o.len()) }
}

/// Operand `k`'s elements, which must be f32.
fn f32_data<'o>(k: usize, x: &'o Tensor<'_>) -> Result<&'o [f32], JitError> {
    x.as_f32().ok_or_else(|| JitError::Operand { what: format!("operand {k} is {}, not f32", x.dtype()) })
}

/// The per-call setup shared by [`CompiledKernel::run`] and [`CompiledKernel::run_into`].
#[derive(Debug)]
struct Prepared<'o> {
    call: CallShape,
    data: Vec<&'o [f32]>,
    bases: Arc<RowBases>,
    cols: i64,
    widths: Vec<usize>,
}

/// The largest row-base table kept after a call (512 KiB): a scan body's kernels are far below
/// it, while a `[T, C, K]` kernel of a 512-token call would keep tens of MiB per kernel alive.
const MAX_CACHED_BASES: usize = 1 << 16;

/// The layout of a kernel's last call: operand lengths and `T`, and the checked row bases they
/// give (which depend on nothing else). A scan calls its body's kernels with the same shapes at
/// every step, so the bases are computed and checked once per scan, not once per step.
#[derive(Debug)]
struct LastLayout {
    lens: Vec<usize>,
    t: usize,
    bases: Arc<RowBases>,
}

/// A callable compiled kernel. Cheap to clone; keeps its code alive.
#[derive(Clone)]
pub struct CompiledKernel {
    entry: KernelFn,
    kernel: Arc<Kernel>,
    strides: Vec<ColStride>,
    scalar_read: Vec<bool>,
    /// Shared by the handle's clones.
    last_layout: Arc<Mutex<Option<LastLayout>>>,
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

    /// Whether the code reads each operand's row base element on its own (a row-level or
    /// broadcast read).
    pub(crate) fn scalar_reads(&self) -> &[bool] {
        &self.scalar_read
    }

    /// Calls the code on `count` rows of `cols` columns, with `bases` holding `count` rows of
    /// per-operand offsets and one pointer per operand and per output.
    ///
    /// # Safety
    /// `bases` must hold `count · operands` offsets, `inputs` one pointer per operand and
    /// `outputs` one per output; for every row, the elements the code reads (the row's base, or
    /// `cols` consecutive elements from it for a contiguous operand) must be readable, and
    /// output `j`'s `count` rows (`cols` or 1 elements each) writable and read by no other
    /// thread meanwhile. An operand may be an output's own storage only if it is read exactly
    /// where and before that output is written (see `jit::scan`).
    pub(crate) unsafe fn call_raw(
        &self,
        count: usize,
        cols: usize,
        bases: &[i64],
        inputs: &[*const f32],
        outputs: &[*mut f32],
    ) {
        debug_assert_eq!(bases.len(), count * self.strides.len());
        debug_assert_eq!(inputs.len(), self.strides.len());
        debug_assert_eq!(outputs.len(), self.kernel.outputs.len());
        // SAFETY: the caller's contract above, and the code is alive (this handle holds it).
        unsafe { (self.entry)(count as i64, cols as i64, bases.as_ptr(), inputs.as_ptr(), outputs.as_ptr()) }
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
            let mut views = Vec::with_capacity(outputs.len());
            for (out, &n) in outputs.iter_mut().zip(&lens) {
                views.push(out.spare_capacity_mut().get_mut(..n).ok_or_else(too_large)?);
            }
            self.run_rows_split(&call, &widths, cols_i64, &bases, &data, views)?;
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
        if overlaps(outs, data.iter().copied()) {
            return Err(JitError::Operand { what: "an output region overlaps an operand".into() });
        }
        if call.rows == 0 {
            return Ok(());
        }
        let views: Vec<&mut [MaybeUninit<f32>]> = outs.iter_mut().map(|o| uninit_view(o)).collect();
        self.run_rows_split(&call, &widths, cols, &bases, &data, views)
    }

    /// Runs every row of `call`, writing `outs` (each exactly `rows × width`): serially, or for
    /// a large call in blocks of rows spread over rayon's threads. Rows are independent, so the
    /// split does not change any result.
    fn run_rows_split(
        &self,
        call: &CallShape,
        widths: &[usize],
        cols: i64,
        bases: &RowBases,
        data: &[&[f32]],
        outs: Vec<&mut [MaybeUninit<f32>]>,
    ) -> Result<(), JitError> {
        let parallel = call.rows > 1 && call.rows.saturating_mul(call.cols) >= PAR_MIN_ELEMENTS;
        let per = if parallel { call.rows.div_ceil(rayon::current_num_threads().max(1) * 4) } else { call.rows };
        let per = per.max(1);
        // Carve every output into per-block slices of `count * width` elements.
        let mut blocks: Vec<Block<'_>> =
            (0..call.rows).step_by(per).map(|s| (s, per.min(call.rows - s), Vec::new())).collect();
        for (mut rest, &w) in outs.into_iter().zip(widths) {
            for (_, count, slices) in blocks.iter_mut() {
                let at = (*count * w).min(rest.len());
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(at);
                slices.push(head);
                rest = tail;
            }
        }
        let run_block =
            |(start, count, mut outs): Block<'_>| self.call_rows(start, count, widths, cols, bases, data, &mut outs);
        if blocks.len() > 1 {
            blocks.into_par_iter().try_for_each(run_block)
        } else {
            blocks.into_iter().try_for_each(run_block)
        }
    }

    /// What both ways of running need: the call's shape, the operands' data, every row's base
    /// offsets (checked against the buffers) and each output's row width.
    fn prepare<'o>(&self, operands: &[&'o Tensor<'_>], t: usize) -> Result<Prepared<'o>, JitError> {
        let data: Vec<&[f32]> = operands.iter().enumerate().map(|(k, x)| f32_data(k, x)).collect::<Result<_, _>>()?;
        let lens: Vec<usize> = data.iter().map(|d| d.len()).collect();
        let (call, bases, cols, widths) = self.layout(&lens, t)?;
        Ok(Prepared { call, data, bases, cols, widths })
    }

    /// The call shape, checked row bases, column count and output widths for operands of `lens`.
    fn layout(&self, lens: &[usize], t: usize) -> Result<(CallShape, Arc<RowBases>, i64, Vec<usize>), JitError> {
        let call = CallShape::new(&self.kernel, t)?;
        let cached = {
            let last = self.last_layout.lock().unwrap_or_else(PoisonError::into_inner);
            last.as_ref().filter(|l| l.t == t && l.lens == lens).map(|l| Arc::clone(&l.bases))
        };
        let bases = match cached {
            Some(bases) => bases,
            None => {
                let bases = Arc::new(RowBases::new(&self.kernel, &self.strides, &self.scalar_read, &call, lens, t)?);
                if bases.offsets.len() <= MAX_CACHED_BASES {
                    let mut last = self.last_layout.lock().unwrap_or_else(PoisonError::into_inner);
                    *last = Some(LastLayout { lens: lens.to_vec(), t, bases: Arc::clone(&bases) });
                }
                bases
            }
        };
        let cols = i64::try_from(call.cols).map_err(|_| JitError::TooLarge { shape: call.shape.to_vec() })?;
        let widths = self.kernel.outputs.iter().map(|o| if o.level == Level::Vector { call.cols } else { 1 }).collect();
        Ok((call, bases, cols, widths))
    }

    /// Prepares running this kernel as a matrix product's epilogue, block of rows by block of
    /// rows: operand 0 is the product, `product_len` elements in all, supplied per block to
    /// [`EpilogueCall::run_rows`]; `rest` are the other operands. Operand 0 must be read
    /// unbroadcast, with the kernel's own shape (what `fuse-matmul` guarantees), so each block
    /// of rows needs exactly its own rows of the product.
    pub(crate) fn prepare_epilogue<'o>(
        &'o self,
        product_len: usize,
        rest: &[&'o Tensor<'_>],
        t: usize,
    ) -> Result<EpilogueCall<'o>, JitError> {
        let mut data: Vec<&[f32]> = Vec::with_capacity(rest.len() + 1);
        data.push(&[]);
        for (k, x) in rest.iter().enumerate() {
            data.push(f32_data(k + 1, x)?);
        }
        let lens: Vec<usize> = std::iter::once(product_len).chain(data[1..].iter().map(|d| d.len())).collect();
        let (call, bases, cols, widths) = self.layout(&lens, t)?;
        let own_shape = self.kernel.reads.first().and_then(|r| r.resolve(t)).is_some_and(|d| d == call.shape);
        if !own_shape || Some(product_len) != call.rows.checked_mul(call.cols) {
            return Err(JitError::Operand { what: "the epilogue does not read the product with its own shape".into() });
        }
        Ok(EpilogueCall { kernel: self, prepared: Prepared { call, data, bases, cols, widths } })
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

/// A matrix product's epilogue, ready to run on blocks of rows as the product produces them
/// (see [`CompiledKernel::prepare_epilogue`]).
#[derive(Debug)]
pub(crate) struct EpilogueCall<'o> {
    kernel: &'o CompiledKernel,
    prepared: Prepared<'o>,
}

impl EpilogueCall<'_> {
    /// The number of rows of the call (the product's rows).
    pub(crate) fn rows(&self) -> usize {
        self.prepared.call.rows
    }

    /// Elements per row of each output.
    pub(crate) fn widths(&self) -> &[usize] {
        &self.prepared.widths
    }

    /// Runs rows `start .. start + count`: `product` holds exactly those rows of the product,
    /// `outs[j]` exactly those rows of output `j` (which must not overlap any operand).
    pub(crate) fn run_rows(
        &self,
        start: usize,
        count: usize,
        product: &[f32],
        outs: &mut [&mut [f32]],
    ) -> Result<(), JitError> {
        let p = &self.prepared;
        let n = p.bases.operands;
        let cols = p.call.cols;
        let bad = |what: &str| JitError::Operand { what: format!("epilogue rows {start}..+{count}: {what}") };
        let end = start.checked_add(count).filter(|&e| e <= p.call.rows).ok_or_else(|| bad("outside the call"))?;
        if Some(product.len()) != count.checked_mul(cols) {
            return Err(bad("the product block has another length"));
        }
        if overlaps(outs, p.data.iter().skip(1).copied().chain(std::iter::once(product))) {
            return Err(bad("an output region overlaps an operand"));
        }
        // Operand 0's offsets, rebased to the block; each row must lie inside it.
        let mut offsets = p.bases.offsets.get(start * n..end * n).ok_or_else(|| bad("row bases"))?.to_vec();
        let base = (start * cols) as i64;
        for (r, row) in offsets.chunks_exact_mut(n).enumerate() {
            row[0] -= base;
            if row[0] != (r * cols) as i64 {
                return Err(bad("the product is not read row by row"));
            }
        }
        let bases = RowBases { offsets, operands: n };
        let mut data = p.data.clone();
        data[0] = product;
        let mut views: Vec<&mut [MaybeUninit<f32>]> = outs.iter_mut().map(|o| uninit_view(o)).collect();
        self.kernel.call_rows(0, count, &p.widths, p.cols, &bases, &data, &mut views)
    }
}
