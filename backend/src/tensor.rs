//! Tensors as the backends exchange them with callers: a concrete shape and a row-major,
//! contiguous buffer of `f32`, `i64` or `bool` that is either owned or borrowed, or a shared
//! 4-bit quantized matrix ([`QuantizedMatrix`]), which only weight inputs can be.
//!
//! Borrowing lets weights memory-mapped from a checkpoint be passed without copying
//! ([`Tensor::borrowed_f32`]); results are always owned ([`Tensor::into_owned`]).
//!
//! Guarantees: every constructor checks that the buffer holds exactly the number of elements the
//! shape describes, so a `Tensor` never disagrees with its shape; nothing here panics on bad input.
//! The crate-internal helpers (strides, axis splitting, strided copies) check their own bounds;
//! `OutSlice` is where kernels write a result (the arena of a planned call, or an allocation).

use crate::error::{ExecError, NodeErrorKind};
use crate::quant::QuantizedMatrix;
use kiln_ir::{DType, Quant};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A concrete shape, outermost dimension first; `[]` is a scalar.
pub type Dims = SmallVec<[usize; 4]>;

/// The elements of a tensor, row-major and contiguous.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData<'a> {
    F32(Cow<'a, [f32]>),
    I64(Cow<'a, [i64]>),
    Bool(Cow<'a, [bool]>),
    /// A quantized matrix: shared, never copied; its element count is `rows × cols`.
    Quant(Arc<QuantizedMatrix>),
}

/// The IR type of a quantized matrix's elements.
fn quant_type(q: &QuantizedMatrix) -> Quant {
    Quant { scheme: q.format(), group: u32::try_from(q.group()).unwrap_or(u32::MAX) }
}

impl<'a> TensorData<'a> {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::Quant(q) => DType::Quant(quant_type(q)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(d) => d.len(),
            TensorData::I64(d) => d.len(),
            TensorData::Bool(d) => d.len(),
            TensorData::Quant(q) => q.rows().saturating_mul(q.cols()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A borrowed view of the same elements.
    pub fn view(&self) -> TensorData<'_> {
        match self {
            TensorData::F32(d) => TensorData::F32(Cow::Borrowed(d)),
            TensorData::I64(d) => TensorData::I64(Cow::Borrowed(d)),
            TensorData::Bool(d) => TensorData::Bool(Cow::Borrowed(d)),
            TensorData::Quant(q) => TensorData::Quant(Arc::clone(q)),
        }
    }

    /// The same elements, owned (copies only if borrowed).
    pub fn into_owned(self) -> TensorData<'static> {
        match self {
            TensorData::F32(d) => TensorData::F32(Cow::Owned(d.into_owned())),
            TensorData::I64(d) => TensorData::I64(Cow::Owned(d.into_owned())),
            TensorData::Bool(d) => TensorData::Bool(Cow::Owned(d.into_owned())),
            TensorData::Quant(q) => TensorData::Quant(q),
        }
    }

    /// A borrowed view of `len` elements starting at `start`, or `None` if out of range.
    pub(crate) fn sub(&self, start: usize, len: usize) -> Option<TensorData<'_>> {
        let end = start.checked_add(len)?;
        Some(match self {
            TensorData::F32(d) => TensorData::F32(Cow::Borrowed(d.get(start..end)?)),
            TensorData::I64(d) => TensorData::I64(Cow::Borrowed(d.get(start..end)?)),
            TensorData::Bool(d) => TensorData::Bool(Cow::Borrowed(d.get(start..end)?)),
            TensorData::Quant(_) => return None,
        })
    }

    /// Zero-filled (`false`) data of `len` elements; `None` for a quantized matrix, which is
    /// never computed, only supplied.
    pub(crate) fn zeros(dtype: DType, len: usize) -> Option<TensorData<'static>> {
        Some(match dtype {
            DType::F32 => TensorData::F32(Cow::Owned(vec![0.0; len])),
            DType::I64 => TensorData::I64(Cow::Owned(vec![0; len])),
            DType::Bool => TensorData::Bool(Cow::Owned(vec![false; len])),
            DType::Quant(_) => return None,
        })
    }

    /// Copies all of `src` into `self` starting at element `offset`. Returns `false` (and changes
    /// nothing) when the dtypes differ or `src` does not fit.
    pub(crate) fn write_at(&mut self, offset: usize, src: &TensorData<'_>) -> bool {
        fn put<T: Clone + Copy>(dst: &mut Cow<'_, [T]>, offset: usize, src: &[T]) -> bool {
            let Some(end) = offset.checked_add(src.len()) else {
                return false;
            };
            if end > dst.len() {
                return false;
            }
            dst.to_mut()[offset..end].copy_from_slice(src);
            true
        }
        match (self, src) {
            (TensorData::F32(d), TensorData::F32(s)) => put(d, offset, s),
            (TensorData::I64(d), TensorData::I64(s)) => put(d, offset, s),
            (TensorData::Bool(d), TensorData::Bool(s)) => put(d, offset, s),
            _ => false,
        }
    }
}

/// A mutable, contiguous slice of elements of one dtype: where a kernel writes a result (a
/// region of the arena, or a fresh allocation).
#[derive(Debug)]
pub(crate) enum OutSlice<'a> {
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    Bool(&'a mut [bool]),
}

impl OutSlice<'_> {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            OutSlice::F32(_) => DType::F32,
            OutSlice::I64(_) => DType::I64,
            OutSlice::Bool(_) => DType::Bool,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            OutSlice::F32(d) => d.len(),
            OutSlice::I64(d) => d.len(),
            OutSlice::Bool(d) => d.len(),
        }
    }

    /// The elements, shared.
    pub(crate) fn as_data(&self) -> TensorData<'_> {
        match self {
            OutSlice::F32(d) => TensorData::F32(Cow::Borrowed(d)),
            OutSlice::I64(d) => TensorData::I64(Cow::Borrowed(d)),
            OutSlice::Bool(d) => TensorData::Bool(Cow::Borrowed(d)),
        }
    }

    /// Copies all of `src` to element `offset` on; `false` (nothing written) when the dtypes
    /// differ or `src` does not fit.
    pub(crate) fn write_at(&mut self, offset: usize, src: &TensorData<'_>) -> bool {
        fn put<T: Copy>(dst: &mut [T], offset: usize, src: &[T]) -> bool {
            match offset.checked_add(src.len()).and_then(|end| dst.get_mut(offset..end)) {
                Some(d) => {
                    d.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
        match (self, src) {
            (OutSlice::F32(d), TensorData::F32(s)) => put(d, offset, s),
            (OutSlice::I64(d), TensorData::I64(s)) => put(d, offset, s),
            (OutSlice::Bool(d), TensorData::Bool(s)) => put(d, offset, s),
            _ => false,
        }
    }
}

impl TensorData<'_> {
    /// The elements as a mutable slice (copies first if borrowed); `None` for a quantized
    /// matrix, which no kernel writes.
    pub(crate) fn out_slice(&mut self) -> Option<OutSlice<'_>> {
        Some(match self {
            TensorData::F32(d) => OutSlice::F32(d.to_mut()),
            TensorData::I64(d) => OutSlice::I64(d.to_mut()),
            TensorData::Bool(d) => OutSlice::Bool(d.to_mut()),
            TensorData::Quant(_) => return None,
        })
    }
}

/// A tensor: a concrete shape and its row-major, contiguous elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<'a> {
    shape: Dims,
    data: TensorData<'a>,
}

/// The dtype and concrete shape of a tensor, for messages (`f32[2, 3]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", self.dtype, self.shape)
    }
}

impl<'a> Tensor<'a> {
    /// A tensor from a shape and data; fails if the data does not hold exactly the shape's
    /// number of elements.
    pub fn new(shape: &[usize], data: TensorData<'a>) -> Result<Tensor<'a>, ExecError> {
        match numel(shape) {
            Some(n) if n == data.len() => Ok(Tensor { shape: shape.iter().copied().collect(), data }),
            _ => Err(ExecError::ElementCount { shape: shape.to_vec(), dtype: data.dtype(), len: data.len() }),
        }
    }

    pub fn f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor<'static>, ExecError> {
        Tensor::new(shape, TensorData::F32(Cow::Owned(data)))
    }

    pub fn borrowed_f32(shape: &[usize], data: &'a [f32]) -> Result<Tensor<'a>, ExecError> {
        Tensor::new(shape, TensorData::F32(Cow::Borrowed(data)))
    }

    pub fn i64(shape: &[usize], data: Vec<i64>) -> Result<Tensor<'static>, ExecError> {
        Tensor::new(shape, TensorData::I64(Cow::Owned(data)))
    }

    pub fn borrowed_i64(shape: &[usize], data: &'a [i64]) -> Result<Tensor<'a>, ExecError> {
        Tensor::new(shape, TensorData::I64(Cow::Borrowed(data)))
    }

    pub fn bool(shape: &[usize], data: Vec<bool>) -> Result<Tensor<'static>, ExecError> {
        Tensor::new(shape, TensorData::Bool(Cow::Owned(data)))
    }

    pub fn borrowed_bool(shape: &[usize], data: &'a [bool]) -> Result<Tensor<'a>, ExecError> {
        Tensor::new(shape, TensorData::Bool(Cow::Borrowed(data)))
    }

    /// A scalar (`f32[]`).
    pub fn scalar(value: f32) -> Tensor<'static> {
        Tensor { shape: Dims::new(), data: TensorData::F32(Cow::Owned(vec![value])) }
    }

    /// A quantized matrix `[rows, cols]`, shared (not copied).
    pub fn quantized(matrix: Arc<QuantizedMatrix>) -> Tensor<'static> {
        Tensor { shape: [matrix.rows(), matrix.cols()].into_iter().collect(), data: TensorData::Quant(matrix) }
    }

    /// A tensor of zeros (`false` for `bool`); a quantized type is an error.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor<'static>, ExecError> {
        let bad = || ExecError::ElementCount { shape: shape.to_vec(), dtype, len: 0 };
        let n = numel(shape).ok_or_else(bad)?;
        Tensor::new(shape, TensorData::zeros(dtype, n).ok_or_else(bad)?)
    }

    /// Crate-internal constructor for kernels that computed `data` for `shape` themselves.
    /// Callers guarantee `data.len() == numel(shape)`; the evaluator re-checks every result
    /// against the graph's declared type.
    pub(crate) fn from_parts(shape: Dims, data: TensorData<'a>) -> Tensor<'a> {
        Tensor { shape, data }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &TensorData<'a> {
        &self.data
    }

    pub fn into_data(self) -> TensorData<'a> {
        self.data
    }

    pub fn tensor_type(&self) -> TensorType {
        TensorType { dtype: self.dtype(), shape: self.shape.to_vec() }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_quantized(&self) -> Option<&QuantizedMatrix> {
        match &self.data {
            TensorData::Quant(q) => Some(q),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(d) => Some(d),
            _ => None,
        }
    }

    /// The `f32` elements as an owned vector (copies only if borrowed).
    pub fn into_f32_vec(self) -> Option<Vec<f32>> {
        match self.data {
            TensorData::F32(d) => Some(d.into_owned()),
            _ => None,
        }
    }

    /// A borrowed view of this tensor (no copy).
    pub fn view(&self) -> Tensor<'_> {
        Tensor { shape: self.shape.clone(), data: self.data.view() }
    }

    /// The same tensor, owning its elements (copies only if borrowed).
    pub fn into_owned(self) -> Tensor<'static> {
        Tensor { shape: self.shape, data: self.data.into_owned() }
    }

    /// The same elements under a new shape of the same element count (no copy).
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor<'a>, ExecError> {
        Tensor::new(shape, self.data)
    }
}

/// The element count of a shape, `None` on overflow.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Row-major strides (in elements) of a contiguous tensor of this shape.
pub(crate) fn strides(shape: &[usize]) -> Dims {
    let mut s: Dims = SmallVec::from_elem(1, shape.len());
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// Element strides of a contiguous tensor of shape `from` read broadcast (numpy's rule, shapes
/// aligned at the right) as `to`: 0 along every axis it is repeated on. `None` if `from` does
/// not broadcast to `to`.
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize]) -> Option<Dims> {
    let lead = to.len().checked_sub(from.len())?;
    let mut out: Dims = SmallVec::from_elem(0, to.len());
    for (i, (&f, s)) in from.iter().zip(strides(from)).enumerate() {
        match to[lead + i] {
            d if d == f => out[lead + i] = s,
            _ if f == 1 => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Splits a shape around `axis` into `(outer, len, inner)`: the product of the dimensions
/// before it, its size, and the product of those after it. Products saturate instead of
/// overflowing; they are exact for any non-empty tensor (kernels treat empty ones first).
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let product = |dims: &[usize]| dims.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    let outer = product(&shape[..axis.min(shape.len())]);
    let len = shape.get(axis).copied().unwrap_or(1);
    let inner = shape.get(axis + 1..).map_or(1, product);
    (outer, len, inner)
}

/// Copies the elements of a strided view of `src` into a new contiguous buffer: output element
/// `idx` (a multi-index over `shape`) is `src[offset + Σ idx[i] * strides[i]]`. Strides may be
/// zero (broadcast). Returns `None` if the view would read outside `src`.
#[cfg(test)]
pub(crate) fn strided_copy<T: Copy + Default>(
    src: &[T],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Option<Vec<T>> {
    let mut out = vec![T::default(); view_len(src.len(), offset, shape, strides)?];
    strided_copy_into(src, offset, shape, strides, &mut out).then_some(out)
}

/// The element count of a strided view of a buffer of `len` elements, or `None` if the view
/// would read outside it (or the count overflows).
pub(crate) fn view_len(len: usize, offset: usize, shape: &[usize], strides: &[usize]) -> Option<usize> {
    if shape.len() != strides.len() {
        return None;
    }
    let n = numel(shape)?;
    if n == 0 {
        return Some(0);
    }
    // The furthest element the view reaches must exist; then every index below is in bounds.
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(strides) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    (last < len).then_some(n)
}

/// Copies a strided view of `src` (see `strided_copy`) into `out`, which must hold exactly the
/// view's elements; `false` (nothing written) if it does not or the view reads outside `src`.
pub(crate) fn strided_copy_into<T: Copy>(
    src: &[T],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
    out: &mut [T],
) -> bool {
    match view_len(src.len(), offset, shape, strides) {
        Some(n) if n == out.len() => {}
        _ => return false,
    }
    if out.is_empty() {
        return true;
    }
    let rank = shape.len();
    if rank == 0 {
        out[0] = src[offset];
        return true;
    }
    let (inner_len, inner_stride) = (shape[rank - 1], strides[rank - 1]);
    let outer_shape = &shape[..rank - 1];
    let outer_strides = &strides[..rank - 1];
    let mut idx: Dims = SmallVec::from_elem(0, rank - 1);
    let mut base = offset;
    for row in out.chunks_exact_mut(inner_len) {
        match inner_stride {
            1 => row.copy_from_slice(&src[base..base + inner_len]),
            0 => row.fill(src[base]),
            s => row.iter_mut().enumerate().for_each(|(j, o)| *o = src[base + j * s]),
        }
        // Advance the odometer over the outer dimensions.
        let mut axis = rank - 1;
        while axis > 0 {
            axis -= 1;
            idx[axis] += 1;
            base += outer_strides[axis];
            if idx[axis] < outer_shape[axis] {
                break;
            }
            base -= outer_strides[axis] * outer_shape[axis];
            idx[axis] = 0;
        }
    }
    true
}

/// Elements of one dtype, for code that is written once for every dtype.
pub(crate) trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    /// `0`, or `false`.
    const ZERO: Self;
    fn slice<'t>(data: &'t TensorData<'_>) -> Option<&'t [Self]>;
    fn wrap(v: Vec<Self>) -> TensorData<'static>;
    fn out(out: OutSlice<'_>) -> Option<&mut [Self]>;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const ZERO: f32 = 0.0;
    fn out(out: OutSlice<'_>) -> Option<&mut [f32]> {
        match out {
            OutSlice::F32(d) => Some(d),
            _ => None,
        }
    }
    fn slice<'t>(data: &'t TensorData<'_>) -> Option<&'t [f32]> {
        match data {
            TensorData::F32(d) => Some(d),
            _ => None,
        }
    }
    fn wrap(v: Vec<f32>) -> TensorData<'static> {
        TensorData::F32(Cow::Owned(v))
    }
}

impl Element for i64 {
    const DTYPE: DType = DType::I64;
    const ZERO: i64 = 0;
    fn out(out: OutSlice<'_>) -> Option<&mut [i64]> {
        match out {
            OutSlice::I64(d) => Some(d),
            _ => None,
        }
    }
    fn slice<'t>(data: &'t TensorData<'_>) -> Option<&'t [i64]> {
        match data {
            TensorData::I64(d) => Some(d),
            _ => None,
        }
    }
    fn wrap(v: Vec<i64>) -> TensorData<'static> {
        TensorData::I64(Cow::Owned(v))
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    const ZERO: bool = false;
    fn out(out: OutSlice<'_>) -> Option<&mut [bool]> {
        match out {
            OutSlice::Bool(d) => Some(d),
            _ => None,
        }
    }
    fn slice<'t>(data: &'t TensorData<'_>) -> Option<&'t [bool]> {
        match data {
            TensorData::Bool(d) => Some(d),
            _ => None,
        }
    }
    fn wrap(v: Vec<bool>) -> TensorData<'static> {
        TensorData::Bool(Cow::Owned(v))
    }
}

/// Runs `$body` with the type alias `$E` set to the element type of `$dtype`.
macro_rules! for_dtype {
    ($dtype:expr, $E:ident => $body:expr) => {
        match $dtype {
            kiln_ir::DType::F32 => {
                type $E = f32;
                $body
            }
            kiln_ir::DType::I64 => {
                type $E = i64;
                $body
            }
            kiln_ir::DType::Bool => {
                type $E = bool;
                $body
            }
            // The type rules keep quantized matrices out of every op that is generic over the
            // element type; a backend reaching here was handed a graph that skipped them.
            found @ kiln_ir::DType::Quant(_) => {
                return Err($crate::tensor::quantized_operand(found));
            }
        }
    };
}

/// The error of a generic op that was handed a quantized matrix.
pub(crate) fn quantized_operand(found: DType) -> NodeErrorKind {
    NodeErrorKind::Internal { what: format!("a {found} matrix reached an op that only reads dense tensors") }
}
pub(crate) use for_dtype;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_the_element_count() {
        assert!(Tensor::f32(&[2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::f32(&[2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err.to_string(), "shape [2, 3] holds 6 elements but the f32 data has 5");
        assert!(Tensor::f32(&[usize::MAX, 2], vec![]).is_err());
        let scalar = Tensor::scalar(2.5);
        assert_eq!(scalar.shape(), &[] as &[usize]);
        assert_eq!(scalar.as_f32(), Some(&[2.5][..]));
    }

    #[test]
    fn borrowed_tensors_view_and_own() {
        let buf = [1i64, 2, 3];
        let t = Tensor::borrowed_i64(&[3], &buf).unwrap();
        assert_eq!(t.dtype(), DType::I64);
        assert!(t.as_f32().is_none());
        let owned: Tensor<'static> = t.view().into_owned();
        assert_eq!(owned.as_i64(), Some(&buf[..]));
        assert_eq!(owned.tensor_type().to_string(), "i64[3]");
        let r = owned.reshape(&[1, 3]).unwrap();
        assert_eq!(r.shape(), &[1, 3]);
        assert!(r.reshape(&[2, 2]).is_err());
    }

    #[test]
    fn strides_and_axes() {
        assert_eq!(strides(&[2, 3, 4]).as_slice(), &[12, 4, 1]);
        assert_eq!(strides(&[]).as_slice(), &[] as &[usize]);
        assert_eq!(split_axis(&[2, 3, 4], 1), (2, 3, 4));
        assert_eq!(split_axis(&[5], 0), (1, 5, 1));
    }

    #[test]
    fn strided_copy_transposes_and_broadcasts() {
        let src: Vec<i32> = (0..6).collect(); // [2, 3]
        assert_eq!(strided_copy(&src, 0, &[3, 2], &[1, 3]).unwrap(), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(strided_copy(&src, 3, &[2, 3], &[0, 1]).unwrap(), vec![3, 4, 5, 3, 4, 5]);
        assert_eq!(strided_copy(&src, 5, &[], &[]).unwrap(), vec![5]);
        assert!(strided_copy(&src, 1, &[2, 3], &[3, 1]).is_none());
        assert_eq!(strided_copy(&src, 0, &[0, 3], &[3, 1]).unwrap(), vec![]);
    }

    #[test]
    fn write_at_checks_bounds_and_dtype() {
        let mut d = TensorData::zeros(DType::F32, 4).unwrap();
        assert!(d.write_at(2, &TensorData::F32(Cow::Owned(vec![1.0, 2.0]))));
        assert!(!d.write_at(3, &TensorData::F32(Cow::Owned(vec![1.0, 2.0]))));
        assert!(!d.write_at(0, &TensorData::I64(Cow::Owned(vec![1]))));
        assert_eq!(d, TensorData::F32(Cow::Owned(vec![0.0, 0.0, 1.0, 2.0])));
    }
}
