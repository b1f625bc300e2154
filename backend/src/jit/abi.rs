//! The calling convention between Rust and a compiled kernel, and the Rust half of it: operand
//! layouts derived from a kernel's read shapes, and the per-row element offsets (`bases`)
//! computed from the broadcast strides of a call's concrete shapes.
//!
//! A compiled kernel is
//!
//! ```text
//! extern "C" fn(rows: i64, cols: i64, bases: *const i64,
//!               inputs: *const *const f32, outputs: *const *mut f32)
//! ```
//!
//! - `rows`, `cols`: the kernel's iteration space flattened to `[rows, cols]` (`rows` is the
//!   product of all axes but the last).
//! - `bases[r * n + k]` (`n` = number of operands): the element offset in operand `k` of row `r`'s
//!   first element. Along the row, operand `k` is read with the column stride fixed when it was
//!   compiled ([`ColStride`]): 1 (contiguous) or 0 (the same element for every column). Row-level
//!   reads read only `inputs[k][bases[r * n + k]]`.
//! - `outputs[j]`: `[rows, cols]` row-major for a vector-level output, `[rows]` for a row-level
//!   one; every element is written.
//!
//! Guarantee: [`RowBases::new`] only succeeds when every address the compiled code will touch is
//! inside the operand's buffer (each read shape broadcasts to the kernel shape, the buffer has
//! exactly the read shape's elements, and the compiled column strides match), which is what makes
//! calling the compiled code sound.

use super::JitError;
use crate::tensor::{numel, Dims};
use kiln_ir::{Dim, Instr, Kernel, Level, Shape};

/// How an operand is read along a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColStride {
    /// Consecutive columns are consecutive elements.
    Contiguous,
    /// Every column reads the same element (the operand is broadcast along the row), or the
    /// operand is only read at row level.
    Broadcast,
}

/// The column stride of every operand of `kernel`, decided from its read shapes: an operand
/// whose read shape has a last dimension of 1 (or rank 0), or which is only read at row level, is
/// broadcast; any other operand is contiguous (the numpy broadcast rule leaves no other stride for
/// the last axis). Fails on a read shape that cannot broadcast to the kernel shape.
pub fn col_strides(kernel: &Kernel) -> Result<Vec<ColStride>, JitError> {
    let unsupported = |what: String| JitError::Unsupported { what };
    let cols = kernel.shape.dims().last().copied().ok_or_else(|| unsupported("a kernel of rank 0".into()))?;
    let mut vector_read = vec![false; kernel.reads.len()];
    for instr in &kernel.body {
        if let Instr::Input(k, level) = *instr {
            let slot = vector_read
                .get_mut(k as usize)
                .ok_or_else(|| unsupported(format!("reads operand {k}, which has no read shape")))?;
            *slot |= level == Level::Vector;
        }
    }
    kernel
        .reads
        .iter()
        .zip(vector_read)
        .enumerate()
        .map(|(k, (read, vector))| {
            if read.rank() > kernel.shape.rank() {
                return Err(unsupported(format!("operand {k} is read as {read}, of higher rank than the kernel")));
            }
            match read.dims().last() {
                _ if !vector => Ok(ColStride::Broadcast),
                None | Some(Dim::Fixed(1)) => Ok(ColStride::Broadcast),
                Some(d) if *d == cols => Ok(ColStride::Contiguous),
                Some(d) => Err(unsupported(format!("operand {k} has last dimension {d}, the kernel {cols}"))),
            }
        })
        .collect()
}

/// A kernel shape resolved for one call.
#[derive(Clone, Debug)]
pub(crate) struct CallShape {
    /// The full iteration space.
    pub shape: Dims,
    pub rows: usize,
    pub cols: usize,
}

/// Resolves `shape` for `t` tokens.
pub(crate) fn resolve(shape: &Shape, t: usize) -> Result<Dims, JitError> {
    let dims =
        shape.resolve(t).ok_or_else(|| JitError::Operand { what: format!("{shape} is negative for T = {t}") })?;
    if numel(&dims).is_none() {
        return Err(JitError::TooLarge { shape: dims.to_vec() });
    }
    Ok(dims)
}

impl CallShape {
    pub(crate) fn new(kernel: &Kernel, t: usize) -> Result<CallShape, JitError> {
        let shape = resolve(&kernel.shape, t)?;
        let (&cols, row_shape) =
            shape.split_last().ok_or_else(|| JitError::Unsupported { what: "a kernel of rank 0".into() })?;
        let rows = numel(row_shape).ok_or_else(|| JitError::TooLarge { shape: shape.to_vec() })?;
        Ok(CallShape { shape, rows, cols })
    }
}

/// The `bases` array of a call: `rows * operands` element offsets.
#[derive(Debug)]
pub(crate) struct RowBases {
    pub offsets: Vec<i64>,
    pub operands: usize,
}

impl RowBases {
    /// Checks operand `k`'s buffer length `lens[k]` against its read shape resolved for `t`, the
    /// broadcast against the kernel shape, and the compiled column strides (`scalar_read[k]`: the
    /// code reads the element at the row's base, for a row-level or broadcast read), then
    /// computes the offsets of every row.
    pub(crate) fn new(
        kernel: &Kernel,
        strides: &[ColStride],
        scalar_read: &[bool],
        call: &CallShape,
        lens: &[usize],
        t: usize,
    ) -> Result<RowBases, JitError> {
        let operands = kernel.reads.len();
        if lens.len() != operands || strides.len() != operands || scalar_read.len() != operands {
            return Err(JitError::Operand {
                what: format!("the kernel reads {operands} operands, the call passes {}", lens.len()),
            });
        }
        let rank = call.shape.len();
        let mut row_strides: Vec<Dims> = Vec::with_capacity(operands);
        for (k, (read, &len)) in kernel.reads.iter().zip(lens).enumerate() {
            let read = resolve(read, t)?;
            let bad = |why: &str| JitError::Operand {
                what: format!("operand {k}: read as {:?} for kernel shape {:?}: {why}", read.as_slice(), call.shape),
            };
            if numel(&read) != Some(len) {
                return Err(bad(&format!("the buffer has {len} elements")));
            }
            if read.len() > rank {
                return Err(bad("higher rank than the kernel"));
            }
            // Numpy broadcast strides, aligned at the right.
            let mut s: Dims = smallvec::smallvec![0; rank];
            let mut step = 1usize;
            for (i, &d) in read.iter().enumerate().rev() {
                let j = rank - (read.len() - i);
                if d != call.shape[j] && d != 1 {
                    return Err(bad("does not broadcast"));
                }
                s[j] = if d == 1 { 0 } else { step };
                step = step.saturating_mul(d);
            }
            // What the compiled code touches in a row must exist: `cols` consecutive elements
            // for a contiguous read, the base element for a scalar one.
            let last = s.pop().unwrap_or(0);
            match strides[k] {
                ColStride::Contiguous if last != 1 && call.cols > 1 => {
                    return Err(bad("compiled as contiguous along the row but broadcast"))
                }
                ColStride::Broadcast if last != 0 => {
                    return Err(bad("compiled as broadcast along the row but contiguous"))
                }
                _ => {}
            }
            if scalar_read[k] && len == 0 && call.rows > 0 {
                return Err(bad("read at row level but empty"));
            }
            row_strides.push(s);
        }
        let total = call.rows.checked_mul(operands).ok_or_else(|| JitError::TooLarge { shape: call.shape.to_vec() })?;
        let mut offsets = Vec::with_capacity(total);
        let row_shape = &call.shape[..rank - 1];
        // Rows along the innermost row axis in a tight loop, an odometer over the outer ones.
        let (inner, outer) = match row_shape.split_last() {
            Some((&inner, outer)) => (inner, outer),
            None => (1, &[][..]),
        };
        let inner_strides: Vec<usize> =
            row_strides.iter().map(|s| if row_shape.is_empty() { 0 } else { s[rank - 2] }).collect();
        let mut index: Dims = smallvec::smallvec![0; outer.len()];
        let mut current: Vec<usize> = vec![0; operands];
        for _ in 0..call.rows.checked_div(inner).unwrap_or(0) {
            for i in 0..inner {
                offsets.extend(current.iter().zip(&inner_strides).map(|(&o, &s)| (o + i * s) as i64));
            }
            for axis in (0..outer.len()).rev() {
                index[axis] += 1;
                for (c, s) in current.iter_mut().zip(&row_strides) {
                    *c += s[axis];
                }
                if index[axis] < outer[axis] {
                    break;
                }
                for (c, s) in current.iter_mut().zip(&row_strides) {
                    *c -= s[axis] * outer[axis];
                }
                index[axis] = 0;
            }
        }
        Ok(RowBases { offsets, operands })
    }
}
