//! The two 4-bit formats, round-to-nearest quantization and exact dequantization.
//!
//! A weight `[rows, cols]` is cut, row by row, into groups of `group` consecutive columns; the
//! last group of a row holds `cols % group` values when that is not zero. Each group stores:
//!
//! - [`QuantScheme::Q4_0`]: one f16 scale `d`; values `x̂ = (q − 8)·d`, `q ∈ 0..=15` (a signed
//!   `−8..=7` stored with an offset of 8). `d = m / −8` where `m` is the group's value of largest
//!   magnitude (the first one, with its sign), rounded to f16; then `q = round(x / d) + 8` (`round`
//!   is half away from zero, `/` the exact f32 division), clamped to `0..=15`. `m` itself gets
//!   `q = 0`; only values of the opposite sign within `d/2` of `−m` can need clamping (to 7).
//! - [`QuantScheme::Q4_1`]: an f16 scale `d` and an f16 minimum `c`; values `x̂ = q·d + c`,
//!   `q ∈ 0..=15`. `c` is the group's minimum and `d = (max − min) / 15`, both rounded to f16;
//!   `q = round((x − c) / d)`, clamped to `0..=15`.
//!
//! When `d` rounds to zero (a group of zeros, or of values below f16 range) every `q` is the zero
//! point (8, resp. 0). Dequantization computes `x̂` in f32 as `(q as f32)·d + o` with the offset
//! `o = −8·d` (Q4_0) or `o = c` (Q4_1); for Q4_0 this is exact, so `x̂ = (q − 8)·d` exactly.
//!
//! Error bounds (`d`, `c` the stored f16 values, up to the f32 rounding of the division `x / d`
//! and of `q·d + c`): in Q4_0 every element that was not clamped has `|x − x̂| ≤ |d|/2`, and a
//! clamped one (possible only because `d` was rounded to f16) `|x − x̂| ≤ |d|·(1 + 2⁻⁸)`. In Q4_1
//! every element has `|x − x̂| ≤ 0.51·|d| + |c − min|`, where `|c − min| ≤ |min|·2⁻¹¹` is the f16
//! rounding of the minimum (clamps at 0 cost at most that, clamps at 15 at most the f16 rounding
//! of `d` times 15). Values on a group's grid (`x = (q − 8)·d` with `d` an f16 and one value at
//! `q = 0` of largest magnitude; resp. `x = q·d + c` with `d`, `c` f16s, values at `q = 0` and
//! `q = 15`, all exact in f32) come back exactly.
//!
//! Packing: each group takes `⌈len/2⌉` bytes, starting on a byte boundary. With `h = ⌈len/2⌉`,
//! byte `i` holds value `i` in its low nibble and value `h + i` in its high nibble (zero when
//! `h + i = len`). So both nibble streams of a group are contiguous runs of columns, which is what
//! lets the kernels unpack a group with plain vector loads. A row takes [`QuantizedMatrix::row_bytes`]
//! bytes, rows are stored one after the other.

use super::QuantError;
use half::f16;
use half::slice::HalfFloatSliceExt;
use kiln_ir::{packed_row_bytes, QuantScheme};

/// A weight `[rows, cols]` quantized in groups along `cols` (see the module documentation for the
/// exact layout). Its parts always have consistent lengths and finite scales and minimums.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix {
    format: QuantScheme,
    group: usize,
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    scales: Vec<f16>,
    mins: Option<Vec<f16>>,
}

/// Quantizes the row-major weight `values` (`rows × cols`) to `format` with groups of `group`
/// columns by round-to-nearest (see the module documentation for the rounding rules).
pub fn quantize(
    values: &[f32],
    rows: usize,
    cols: usize,
    format: QuantScheme,
    group: usize,
) -> Result<QuantizedMatrix, QuantError> {
    if group == 0 {
        return Err(QuantError::ZeroGroup);
    }
    let expected = rows.checked_mul(cols).ok_or(QuantError::SizeMismatch {
        rows,
        cols,
        expected: usize::MAX,
        actual: values.len(),
    })?;
    if values.len() != expected {
        return Err(QuantError::SizeMismatch { rows, cols, expected, actual: values.len() });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFinite { row: i / cols, col: i % cols, value: values[i] });
    }
    let groups = cols.div_ceil(group);
    let row_bytes = packed_row_bytes(cols, group);
    let mut packed = vec![0u8; rows * row_bytes];
    let mut scales = Vec::with_capacity(rows * groups);
    let mut mins = (format == QuantScheme::Q4_1).then(|| Vec::with_capacity(rows * groups));
    let mut q = vec![0u8; group];
    for (r, (row, out)) in values.chunks_exact(cols.max(1)).zip(packed.chunks_exact_mut(row_bytes.max(1))).enumerate() {
        for (g, xs) in row.chunks(group).enumerate() {
            let q = &mut q[..xs.len()];
            let f16_of = |what, value: f32| {
                let h = f16::from_f32(value);
                if h.is_finite() {
                    Ok(h)
                } else {
                    Err(QuantError::F16Overflow { what, row: r, group: g, value })
                }
            };
            match format {
                QuantScheme::Q4_0 => {
                    let m = xs.iter().fold(0.0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
                    let d = f16_of("scale", m / -8.0)?;
                    round_group(xs, q, d.to_f32(), 0.0, 8.0);
                    scales.push(d);
                }
                QuantScheme::Q4_1 => {
                    let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let c = f16_of("minimum", lo)?;
                    let d = f16_of("scale", (hi - lo) / 15.0)?;
                    round_group(xs, q, d.to_f32(), c.to_f32(), 0.0);
                    scales.push(d);
                    if let Some(mins) = mins.as_mut() {
                        mins.push(c);
                    }
                }
            }
            pack_group(q, &mut out[g * group.div_ceil(2)..]);
        }
    }
    Ok(QuantizedMatrix { format, group, rows, cols, packed, scales, mins })
}

/// `q[i] = clamp(round((x[i] − c) / d) + zero, 0, 15)`, or `zero` everywhere when `d == 0`.
fn round_group(xs: &[f32], q: &mut [u8], d: f32, c: f32, zero: f32) {
    for (q, &x) in q.iter_mut().zip(xs) {
        let v = if d == 0.0 { zero } else { ((x - c) / d).round() + zero };
        // In range after the clamp, so the cast is exact.
        *q = v.clamp(0.0, 15.0) as u8;
    }
}

/// Packs one group's values (`0..=15`) into the first `⌈len/2⌉` bytes of `out`.
fn pack_group(q: &[u8], out: &mut [u8]) {
    let h = q.len().div_ceil(2);
    let (lo, hi) = q.split_at(h);
    for (i, (o, &l)) in out[..h].iter_mut().zip(lo).enumerate() {
        *o = l | hi.get(i).map_or(0, |&v| v << 4);
    }
}

impl QuantizedMatrix {
    /// A matrix from stored parts (as read from a file), checking every length and that scales
    /// and minimums are finite. `mins` must be present exactly for [`QuantScheme::Q4_1`].
    pub fn from_parts(
        format: QuantScheme,
        group: usize,
        rows: usize,
        cols: usize,
        packed: Vec<u8>,
        scales: Vec<f16>,
        mins: Option<Vec<f16>>,
    ) -> Result<QuantizedMatrix, QuantError> {
        if group == 0 {
            return Err(QuantError::ZeroGroup);
        }
        let m = QuantizedMatrix { format, group, rows, cols, packed, scales, mins };
        let groups = rows.checked_mul(m.groups_per_row());
        let bytes = rows.checked_mul(m.row_bytes());
        let part = |what, expected: Option<usize>, actual| match expected {
            Some(e) if e == actual => Ok(()),
            _ => Err(QuantError::PartLength {
                what,
                format: format.name(),
                rows,
                cols,
                group,
                expected: expected.unwrap_or(usize::MAX),
                actual,
            }),
        };
        part("packed values", bytes, m.packed.len())?;
        part("scales", groups, m.scales.len())?;
        if format == QuantScheme::Q4_1 && m.mins.is_none() {
            return Err(QuantError::MissingMinimums { rows, cols });
        }
        let want_mins = if format == QuantScheme::Q4_1 { groups } else { Some(0) };
        part("minimums", want_mins, m.mins.as_ref().map_or(0, Vec::len))?;
        for (what, values) in [("scales", Some(&m.scales)), ("minimums", m.mins.as_ref())] {
            if let Some(index) = values.and_then(|v| v.iter().position(|h| !h.is_finite())) {
                return Err(QuantError::PartNonFinite { what, format: format.name(), rows, cols, group, index });
            }
        }
        Ok(m)
    }

    pub fn format(&self) -> QuantScheme {
        self.format
    }

    /// Columns per group (the last group of a row may be shorter).
    pub fn group(&self) -> usize {
        self.group
    }

    /// Output features `N`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features `K`.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed 4-bit values, [`QuantizedMatrix::row_bytes`] per row.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// One scale per group, row-major `[rows, groups_per_row]`.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    /// One minimum per group for [`QuantScheme::Q4_1`], laid out like the scales.
    pub fn mins(&self) -> Option<&[f16]> {
        self.mins.as_deref()
    }

    pub fn groups_per_row(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    pub fn row_bytes(&self) -> usize {
        packed_row_bytes(self.cols, self.group)
    }

    /// Storage size in bytes: packed values, scales and minimums.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 2 * (self.scales.len() + self.mins.as_ref().map_or(0, Vec::len))
    }

    /// The f32 weight `[rows, cols]` the matrix stands for.
    pub fn dequantize(&self) -> Vec<f32> {
        let g = self.groups_per_row();
        let mut out = vec![0.0; self.rows * self.cols];
        let mut scales = vec![0.0; self.rows * g];
        let mut offsets = vec![0.0; self.rows * g];
        self.group_constants(0, &mut scales, &mut offsets);
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.decode_row(r, &scales[r * g..], &offsets[r * g..], row);
        }
        out
    }

    /// The f32 scales and offsets (`x̂ = q·scale + offset`) of the groups of `scales.len() /
    /// groups_per_row` rows from row `r0` on; `scales` and `offsets` have the same length, a
    /// whole number of rows that exist.
    pub(crate) fn group_constants(&self, r0: usize, scales: &mut [f32], offsets: &mut [f32]) {
        let first = r0 * self.groups_per_row();
        let range = first..first + scales.len();
        self.scales[range.clone()].convert_to_f32_slice(scales);
        match &self.mins {
            Some(mins) => mins[range].convert_to_f32_slice(offsets),
            None => {
                for (o, &d) in offsets.iter_mut().zip(scales.iter()) {
                    *o = -8.0 * d;
                }
            }
        }
    }

    /// Row `r` in f32 (`out.len() == cols`), given its [`QuantizedMatrix::group_constants`] (the
    /// row's groups first in `scales` and `offsets`).
    pub(crate) fn decode_row(&self, r: usize, scales: &[f32], offsets: &[f32], out: &mut [f32]) {
        let rb = self.row_bytes();
        let bytes = &self.packed[r * rb..(r + 1) * rb];
        let stride = self.group.div_ceil(2);
        for (g, ((xs, &d), &o)) in out.chunks_mut(self.group).zip(scales).zip(offsets).enumerate() {
            let h = xs.len().div_ceil(2);
            let (lo, hi) = xs.split_at_mut(h);
            let b = &bytes[g * stride..g * stride + h];
            for (x, &b) in lo.iter_mut().zip(b) {
                *x = f32::from(b & 15) * d + o;
            }
            for (x, &b) in hi.iter_mut().zip(b) {
                *x = f32::from(b >> 4) * d + o;
            }
        }
    }
}
