//! The Cranelift JIT: fused kernels compiled to native code for the host CPU.
//!
//! Layout: [`abi`] (the native calling convention and the Rust side of it: operand layouts and
//! per-row offsets), [`kernel_codegen`] (one kernel to one Cranelift function: row loop, column
//! loops in `f32x4` with scalar tails, reductions), [`emit`] (width-generic instruction helpers),
//! [`math`] (inline polynomial `exp`/`log`/`log1p`/`tanh`), [`module`] (compiling a set of
//! kernels into one code module that is freed with its last handle, and running them),
//! [`products`] (matrix products through `gemm`, epilogues run per block of product rows) and
//! [`matvec`] (the memory-bound one-token product, and the read-bandwidth probe) and [`scan`]
//! (scans whose body is one kernel, run by blocks of rows with every step on one thread).
//!
//! Guarantees: compiled kernels agree with the interpreter to rounding (see [`module`]); a kernel
//! the JIT cannot compile is reported as [`JitError::Unsupported`] so the caller can keep the
//! interpreter for it; no function here panics, and native code is only called on operands that
//! were checked to cover every address it touches.

mod abi;
mod backend;
mod emit;
mod kernel_codegen;
mod math;
mod matvec;
mod module;
pub(crate) mod products;
pub(crate) mod scan;

pub use abi::{col_strides, ColStride};
pub use backend::{Jit, JitReport};
pub use matvec::{matvec, read_bandwidth};
pub use module::{CompileStats, CompiledKernel, JitModule, JitOptions};
pub use products::{product, ProductDims};

use thiserror::Error;

/// Why the JIT did not compile or run something.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum JitError {
    /// The kernel uses something the code generator does not handle; run it elsewhere.
    #[error("the JIT does not compile this kernel: {what}")]
    Unsupported { what: String },
    /// Cranelift cannot target the host.
    #[error("the host CPU is not supported by the JIT: {what}")]
    Host { what: String },
    /// Cranelift rejected the generated code (a bug in the code generator).
    #[error("JIT code generation failed: {what}")]
    Codegen { what: String },
    /// The operands of a call do not fit the kernel.
    #[error("JIT kernel call: {what}")]
    Operand { what: String },
    /// A shape with too many elements.
    #[error("a kernel of shape {shape:?} would have too many elements")]
    TooLarge { shape: Vec<usize> },
}
