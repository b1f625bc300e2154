//! Where a kernel writes its result: a fresh allocation ([`Dest::Alloc`], the unplanned
//! interpreter and the top-level outputs of a planned one) or the slice a memory plan assigned
//! ([`Dest::Slice`], a region of the arena).
//!
//! Kernels validate their operands and work out the result's concrete shape first, then hand a
//! writer to [`Dest::emit`]. The writer is the same code either way, so planned and unplanned
//! execution compute the same bits.
//!
//! Guarantees: a writer always gets a slice of exactly the result's element count; `emit` gives
//! it zeros only when asked (`emit_zeroed`: kernels that accumulate), so every other writer must
//! write every element. When the assigned slice has another dtype or length than what the kernel
//! computed, nothing is written and the [`Emitted`] reports what the kernel computed, so the
//! evaluator's type check names the mismatch as it does for an allocated result.

use crate::error::NodeErrorKind;
use crate::tensor::{numel, Dims, Element, OutSlice, Tensor};
use kiln_ir::DType;

/// Where a kernel's (single) result goes.
#[derive(Debug)]
pub(crate) enum Dest<'a> {
    Alloc,
    Slice(OutSlice<'a>),
}

/// What a kernel produced.
#[derive(Debug)]
pub(crate) enum Emitted {
    /// A new tensor ([`Dest::Alloc`]).
    Owned(Tensor<'static>),
    /// Written into the slice ([`Dest::Slice`]) when dtype and length matched.
    Written { dtype: DType, shape: Dims },
}

impl Emitted {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Emitted::Owned(t) => t.dtype(),
            Emitted::Written { dtype, .. } => *dtype,
        }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            Emitted::Owned(t) => t.shape(),
            Emitted::Written { shape, .. } => shape,
        }
    }

    /// The tensor of an allocating call.
    pub(crate) fn into_owned(self) -> Result<Tensor<'static>, NodeErrorKind> {
        match self {
            Emitted::Owned(t) => Ok(t),
            Emitted::Written { .. } => {
                Err(NodeErrorKind::Internal { what: "a result was written to a slice, not allocated".into() })
            }
        }
    }
}

impl Dest<'_> {
    /// Produces a result of `shape` written by `fill`, which must write every element.
    pub(crate) fn emit<E: Element>(self, shape: Dims, fill: impl FnOnce(&mut [E])) -> Result<Emitted, NodeErrorKind> {
        self.emit_with(shape, false, fill)
    }

    /// Like [`Dest::emit`], but `fill` starts from zeros (`false`).
    pub(crate) fn emit_zeroed<E: Element>(
        self,
        shape: Dims,
        fill: impl FnOnce(&mut [E]),
    ) -> Result<Emitted, NodeErrorKind> {
        self.emit_with(shape, true, fill)
    }

    fn emit_with<E: Element>(
        self,
        shape: Dims,
        zero: bool,
        fill: impl FnOnce(&mut [E]),
    ) -> Result<Emitted, NodeErrorKind> {
        let n = numel(&shape).ok_or_else(|| NodeErrorKind::TooLarge { shape: shape.to_vec() })?;
        match self {
            Dest::Alloc => {
                let mut data = vec![E::ZERO; n];
                fill(&mut data);
                Ok(Emitted::Owned(Tensor::from_parts(shape, E::wrap(data))))
            }
            Dest::Slice(out) => {
                if let Some(out) = E::out(out).filter(|o| o.len() == n) {
                    if zero {
                        out.fill(E::ZERO);
                    }
                    fill(out);
                }
                Ok(Emitted::Written { dtype: E::DTYPE, shape })
            }
        }
    }
}
