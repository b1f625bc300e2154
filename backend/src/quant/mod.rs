//! 4-bit weight quantization: the formats ([`QuantFormat`], [`QuantizedMatrix`]), their on-disk
//! layout ([`StoredTensor`]), and the products that read them without materializing f32 weights
//! ([`matvec`] for decode, [`matmul`] for prefill).
//!
//! A quantized matrix is a weight stored `[rows, cols]` = `[N, K]` (the `Linear` layout: products
//! read it with `transpose_rhs`), cut along `K` into groups of `group` consecutive values, each
//! group with its own f16 scale (and, in [`QuantFormat::Q4_1`], an f16 minimum). `K` need not be a
//! multiple of the group size: the last group of every row is then shorter.
//!
//! Guarantees: building a matrix ([`quantize`], [`QuantizedMatrix::from_parts`]) validates every
//! length, so the kernels never index out of bounds; no function here panics on bad input, every
//! failure is a [`QuantError`] naming the shape, row or group. The kernels' results depend only on
//! the shapes and the instruction set detected at run time, never on the number of threads.

mod error;
mod format;
mod kernels;
mod layout;
mod simd;

pub use error::QuantError;
pub use format::{quantize, QuantFormat, QuantizedMatrix};
pub use kernels::{matmul, matvec};
pub use layout::{StoredDtype, StoredTensor};

#[cfg(test)]
mod tests;
