//! 4-bit weight quantization: the formats ([`QuantScheme`], [`QuantizedMatrix`]), their on-disk
//! layout ([`StoredTensor`]), and the products that read them without materializing f32 weights:
//! [`matvec`] for decode, [`matmul`] for prefill, [`matmul_nn`] (the weight not transposed) for
//! backpropagating to a quantized `Linear`'s input, and [`matvec_q8`], a faster decode product
//! that rounds the activation to 8 bits (an approximation with a documented error bound).
//!
//! A quantized matrix is a weight stored `[rows, cols]` = `[N, K]` (the `Linear` layout: products
//! read it with `transpose_rhs`), cut along `K` into groups of `group` consecutive values, each
//! group with its own f16 scale (and, in [`QuantScheme::Q4_1`], an f16 minimum). `K` need not be a
//! multiple of the group size: the last group of every row is then shorter.
//!
//! Guarantees: building a matrix ([`quantize`], [`QuantizedMatrix::from_parts`]) validates every
//! length, so the kernels never index out of bounds; no function here panics on bad input, every
//! failure is a [`QuantError`] naming the shape, row or group. The kernels' results depend only on
//! the shapes and the instruction set detected at run time, never on the number of threads.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod backward;
#[cfg(target_arch = "x86_64")]
mod chunks;
mod error;
mod format;
mod kernels;
mod layout;
mod q8;
mod simd;

pub use backward::matmul_nn;
pub use error::QuantError;
pub use format::{quantize, QuantizedMatrix};
pub use kernels::{matmul, matvec};
pub use kiln_ir::QuantScheme;
pub use layout::{StoredDtype, StoredTensor};
pub use q8::matvec_q8;

#[cfg(test)]
mod tests;
