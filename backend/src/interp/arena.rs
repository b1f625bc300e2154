//! The arena of a planned call: one zeroed allocation, its layout for the call's `T`, and typed,
//! borrow-checked access to its regions.
//!
//! A step of a planned graph writes its results into some regions while reading its operands
//! from others. [`split`] carves the result regions out as `&mut [u8]` and leaves the rest
//! shared, so all of this is safe Rust: a plan that would make a step read the region it writes
//! (other than an in-place write, which the evaluator handles as one region) fails with an
//! internal error instead of aliasing. Regions are typed with bytemuck: `f32`/`i64` by a checked
//! cast (every offset is a multiple of [`kiln_ir::plan::ALIGN`] from a 64-byte aligned base),
//! `bool` by a checked cast of bytes that are zeroed before a `bool` result is written, so a
//! `bool` view never sees a byte other than 0 or 1.
//!
//! `bool` and `i64` intermediates therefore live in the arena like `f32` ones, as bytes.

use crate::error::NodeErrorKind;
use crate::tensor::{quantized_operand, OutSlice, TensorData};
use kiln_ir::plan::dtype_bytes;
use kiln_ir::{Count, DType};
use std::borrow::Cow;
use std::ops::Range;

/// Alignment of the arena's first byte.
const BASE_ALIGN: usize = 64;

fn internal(what: impl Into<String>) -> NodeErrorKind {
    NodeErrorKind::Internal { what: what.into() }
}

/// One zeroed allocation whose usable bytes start 64-byte aligned.
#[derive(Debug)]
pub(crate) struct Arena {
    words: Vec<u64>,
    skip: usize,
    len: usize,
}

impl Arena {
    pub(crate) fn new(len: usize) -> Arena {
        let words = vec![0u64; (len + BASE_ALIGN).div_ceil(8)];
        let skip = bytemuck::cast_slice::<u64, u8>(&words).as_ptr().align_offset(BASE_ALIGN);
        Arena { words, skip: skip.min(BASE_ALIGN), len }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        let bytes = bytemuck::cast_slice_mut::<u64, u8>(&mut self.words);
        &mut bytes[self.skip..self.skip + self.len]
    }
}

/// A plan's buffers resolved for one `T`: byte offsets and sizes.
#[derive(Debug)]
pub(crate) struct Layout {
    pub regions: Vec<Range<usize>>,
    /// Bytes the arena needs.
    pub total: usize,
}

impl Layout {
    /// Resolves `(offset, size)` of every buffer for `t` tokens.
    pub(crate) fn resolve(buffers: &[(Count, Count)], t: usize) -> Result<Layout, NodeErrorKind> {
        let mut regions = Vec::with_capacity(buffers.len());
        let mut total = 0;
        for (i, &(offset, size)) in buffers.iter().enumerate() {
            let bad = || internal(format!("buffer {i} has a negative offset or size for T = {t}"));
            let start = usize::try_from(offset.at(t)).map_err(|_| bad())?;
            let len = usize::try_from(size.at(t)).map_err(|_| bad())?;
            let end = start.checked_add(len).ok_or_else(bad)?;
            total = total.max(end);
            regions.push(start..end);
        }
        Ok(Layout { regions, total })
    }
}

/// The byte range a value of `count` elements of `dtype` takes at `offset`.
pub(crate) fn value_range(offset: usize, dtype: DType, count: usize) -> Option<Range<usize>> {
    let len = count.checked_mul(dtype_bytes(dtype)? as usize)?;
    Some(offset..offset.checked_add(len)?)
}

/// The arena during one step: the result regions, mutable, and everything else, shared.
#[derive(Debug)]
pub(crate) struct Split<'a> {
    /// Shared pieces between the result regions: (first byte, bytes).
    shared: Vec<(usize, &'a [u8])>,
    outs: Vec<Option<&'a mut [u8]>>,
}

/// Carves `outs` (disjoint ranges, in any order) out of `arena`.
pub(crate) fn split<'a>(arena: &'a mut [u8], outs: &[Range<usize>]) -> Result<Split<'a>, NodeErrorKind> {
    let mut order: Vec<usize> = (0..outs.len()).collect();
    order.sort_by_key(|&i| (outs[i].start, outs[i].end));
    let mut taken: Vec<Option<&'a mut [u8]>> = (0..outs.len()).map(|_| None).collect();
    let mut shared = Vec::with_capacity(outs.len() + 1);
    let mut rest: &'a mut [u8] = arena;
    let mut cursor = 0;
    for i in order {
        let r = &outs[i];
        if r.start < cursor || r.end < r.start || r.end - cursor > rest.len() {
            return Err(internal(format!("result regions overlap or leave the arena ({r:?})")));
        }
        let (before, tail) = std::mem::take(&mut rest).split_at_mut(r.start - cursor);
        let (out, after) = tail.split_at_mut(r.end - r.start);
        shared.push((cursor, &*before));
        taken[i] = Some(out);
        rest = after;
        cursor = r.end;
    }
    shared.push((cursor, &*rest));
    Ok(Split { shared, outs: taken })
}

impl<'a> Split<'a> {
    /// The bytes of `range`, which must lie outside every result region.
    pub(crate) fn read(&self, range: Range<usize>) -> Result<&'a [u8], NodeErrorKind> {
        self.shared
            .iter()
            .find_map(|&(start, bytes)| {
                let from = range.start.checked_sub(start)?;
                bytes.get(from..from + (range.end.checked_sub(range.start)?))
            })
            .ok_or_else(|| internal(format!("an operand ({range:?}) lies in a region this step writes")))
    }

    /// Result region `i` (once).
    pub(crate) fn take(&mut self, i: usize) -> Result<&'a mut [u8], NodeErrorKind> {
        self.outs.get_mut(i).and_then(Option::take).ok_or_else(|| internal(format!("result region {i} is taken")))
    }
}

/// `bytes` as elements of `dtype`.
pub(crate) fn typed(bytes: &[u8], dtype: DType) -> Result<TensorData<'_>, NodeErrorKind> {
    let bad =
        |e: bytemuck::checked::CheckedCastError| internal(format!("an arena region cannot be read as {dtype}: {e:?}"));
    Ok(match dtype {
        DType::F32 => TensorData::F32(Cow::Borrowed(bytemuck::try_cast_slice(bytes).map_err(|e| bad(e.into()))?)),
        DType::I64 => TensorData::I64(Cow::Borrowed(bytemuck::try_cast_slice(bytes).map_err(|e| bad(e.into()))?)),
        DType::Bool => TensorData::Bool(Cow::Borrowed(bytemuck::checked::try_cast_slice(bytes).map_err(bad)?)),
        DType::Quant(_) => return Err(quantized_operand(dtype)),
    })
}

/// `bytes` as a slice to write elements of `dtype` into (zeroed first for `bool`).
pub(crate) fn typed_mut(bytes: &mut [u8], dtype: DType) -> Result<OutSlice<'_>, NodeErrorKind> {
    let bad = |e: bytemuck::checked::CheckedCastError| internal(format!("an arena region cannot hold {dtype}: {e:?}"));
    Ok(match dtype {
        DType::F32 => OutSlice::F32(bytemuck::try_cast_slice_mut(bytes).map_err(|e| bad(e.into()))?),
        DType::I64 => OutSlice::I64(bytemuck::try_cast_slice_mut(bytes).map_err(|e| bad(e.into()))?),
        DType::Bool => {
            bytes.fill(0);
            OutSlice::Bool(bytemuck::checked::try_cast_slice_mut(bytes).map_err(bad)?)
        }
        DType::Quant(_) => return Err(quantized_operand(dtype)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_hands_out_disjoint_regions_and_shares_the_rest() {
        let mut arena = Arena::new(256);
        let bytes = arena.bytes_mut();
        assert_eq!(bytes.as_ptr().align_offset(BASE_ALIGN), 0);
        bytes[0] = 7;
        let mut s = split(bytes, &[128..192, 64..128]).unwrap();
        let a = s.take(0).unwrap();
        let b = s.take(1).unwrap();
        a[0] = 1;
        b[0] = 2;
        assert!(s.take(0).is_err());
        assert_eq!(s.read(0..64).unwrap()[0], 7);
        assert_eq!(s.read(192..256).unwrap().len(), 64);
        assert!(s.read(100..110).is_err(), "inside a result region");
        assert!(s.read(32..96).is_err(), "across a result region");
        assert!(split(arena.bytes_mut(), &[0..64, 32..96]).is_err());
        assert!(split(arena.bytes_mut(), std::slice::from_ref(&(0..512))).is_err());
    }

    #[test]
    fn regions_are_typed_and_bool_regions_zeroed() {
        let mut arena = Arena::new(128);
        let bytes = arena.bytes_mut();
        bytes[..64].fill(0xff);
        match typed_mut(&mut bytes[..16], DType::Bool).unwrap() {
            OutSlice::Bool(b) => {
                assert_eq!(b, &[false; 16][..]);
                b[3] = true;
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(typed(&bytes[..16], DType::Bool).unwrap().len(), 16);
        assert!(typed(&bytes[16..32], DType::Bool).is_err(), "0xff is not a bool");
        assert_eq!(typed(&bytes[64..128], DType::I64).unwrap().len(), 8);
        assert!(typed(&bytes[1..9], DType::F32).is_err(), "misaligned");
        let l = Layout::resolve(&[(Count { per_t: 64, constant: 0 }, Count { per_t: 0, constant: 128 })], 3).unwrap();
        assert_eq!((l.regions[0].clone(), l.total), (192..320, 320));
    }
}
