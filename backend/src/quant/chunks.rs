//! How the AVX-512 decode kernels see a packed row: cut into 64-byte chunks, each loaded as one
//! vector of 16 dword lanes. When a group's bytes are a multiple of 4 (the group size is a
//! multiple of 8), every lane holds 4 bytes, i.e. 8 nibbles, of one single group, so a kernel can
//! sum a lane's 8 products unscaled and scale the lane once by its group's constant.
//!
//! [`Chunks`] records, per chunk, which group each lane belongs to (as an index relative to the
//! chunk's first group, for a `vpermps` of 16 scales loaded from there), which bytes lie inside
//! the row (the last chunk is loaded with a mask), and [`Chunks::for_each_byte`] says which
//! columns of the activation each byte's nibbles multiply, so a kernel can permute the activation once per call
//! into the order the nibbles come out of the chunk.
//!
//! Guarantees: masks never cover a byte past the row's [`QuantizedMatrix::row_bytes`] nor a group
//! past the row's [`QuantizedMatrix::groups_per_row`], and every pattern entry is below 16, so
//! loads through them stay inside the row's parts.

use super::QuantizedMatrix;
use half::f16;

/// Bytes per chunk (one AVX-512 vector).
pub(super) const CHUNK_BYTES: usize = 64;
/// Dword lanes per chunk.
pub(super) const LANES: usize = 16;
/// Rows the kernels compute together, sharing the activation's loads.
pub(super) const ROWS_PER_PASS: usize = 4;
/// Nibbles per lane: lane `i` of a chunk yields nibble `v` (`0..8`) after a right shift by
/// `4·v`, i.e. byte `4·i + v / 2`, low nibble when `v` is even.
pub(super) const NIBBLES: usize = 8;

/// The chunk geometry of one matrix's rows (see the module documentation).
#[derive(Debug)]
pub(super) struct Chunks {
    /// Chunks per row (the last may be partial).
    pub count: usize,
    /// Per chunk, the group of its first byte.
    pub first_group: Vec<usize>,
    /// Per chunk, lane → its group minus `first_group` (0 for lanes past the row).
    pub pattern: Vec<[i32; LANES]>,
    /// Per chunk, the bytes inside the row.
    pub byte_mask: Vec<u64>,
    /// Per chunk, the groups from `first_group` on (at most 16) that exist in the row.
    pub group_mask: Vec<u16>,
    group: usize,
    stride: usize,
    cols: usize,
}

impl Chunks {
    /// The geometry of `q`'s rows, or `None` when its group size is not a multiple of 8 (a lane
    /// could then hold nibbles of two groups).
    pub(super) fn new(q: &QuantizedMatrix) -> Option<Chunks> {
        let group = q.group();
        if !group.is_multiple_of(8) {
            return None;
        }
        let stride = group / 2;
        let row_bytes = q.row_bytes();
        let groups = q.groups_per_row();
        let count = row_bytes.div_ceil(CHUNK_BYTES);
        let mut chunks = Chunks {
            count,
            first_group: Vec::with_capacity(count),
            pattern: Vec::with_capacity(count),
            byte_mask: Vec::with_capacity(count),
            group_mask: Vec::with_capacity(count),
            group,
            stride,
            cols: q.cols(),
        };
        for c in 0..count {
            let start = c * CHUNK_BYTES;
            let first = start / stride;
            let mut pattern = [0i32; LANES];
            for (i, p) in pattern.iter_mut().enumerate() {
                let byte = start + 4 * i;
                if byte < row_bytes {
                    // A chunk of 64 bytes spans at most 16 groups of at least 4 bytes.
                    *p = (byte / stride - first) as i32;
                }
            }
            let inside = (row_bytes - start).min(CHUNK_BYTES);
            let byte_mask = if inside == CHUNK_BYTES { u64::MAX } else { (1u64 << inside) - 1 };
            let present = (groups - first).min(LANES);
            let group_mask = if present == LANES { u16::MAX } else { (1u16 << present) - 1 };
            chunks.first_group.push(first);
            chunks.pattern.push(pattern);
            chunks.byte_mask.push(byte_mask);
            chunks.group_mask.push(group_mask);
        }
        Some(chunks)
    }

    /// Calls `f(byte, group, low, high)` for every byte of a row, in order: its group and the
    /// columns its low and high nibbles hold (`high` is `None` for the empty high nibble of an
    /// odd-length group's last byte). Byte `b` is nibbles `2·(b % 4)` and `2·(b % 4) + 1` of
    /// lane `(b / 4) % 16` of chunk `b / 64`.
    pub(super) fn for_each_byte(&self, mut f: impl FnMut(usize, usize, usize, Option<usize>)) {
        for (g, start) in (0..self.cols).step_by(self.group).enumerate() {
            let len = self.group.min(self.cols - start);
            let half = len.div_ceil(2);
            for j in 0..half {
                f(g * self.stride + j, g, start + j, (half + j < len).then_some(start + half + j));
            }
        }
    }
}

/// One row's packed bytes, scales and minimums.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowParts<'a> {
    pub bytes: &'a [u8],
    pub scales: &'a [f16],
    pub mins: Option<&'a [f16]>,
}

/// Rows `r0 .. r0 + out.len()` of `q` (which exist) in passes of [`ROWS_PER_PASS`] rows through
/// `pass`, the remaining rows one at a time through `single`, their results into `out`. Before
/// each pass, the scales (and minimums) of the rows about [`PREFETCH_BYTES`] of packed values
/// ahead (past the block too: the next block is usually the same thread's) are prefetched; the
/// kernels prefetch the packed values themselves, one line per chunk they load
/// ([`prefetch_ahead`]).
pub(super) fn passes(
    q: &QuantizedMatrix,
    r0: usize,
    out: &mut [f32],
    pass: impl Fn([RowParts<'_>; ROWS_PER_PASS]) -> [f32; ROWS_PER_PASS],
    single: impl Fn([RowParts<'_>; 1]) -> [f32; 1],
) {
    let (rb, groups) = (q.row_bytes(), q.groups_per_row());
    let n = out.len();
    let packed = &q.packed()[r0 * rb..(r0 + n) * rb];
    let scales = &q.scales()[r0 * groups..(r0 + n) * groups];
    let mins = q.mins().map(|m| &m[r0 * groups..(r0 + n) * groups]);
    let row = |j: usize| RowParts {
        bytes: &packed[j * rb..(j + 1) * rb],
        scales: &scales[j * groups..(j + 1) * groups],
        mins: mins.map(|m| &m[j * groups..(j + 1) * groups]),
    };
    let ahead = (PREFETCH_BYTES / (rb + 4 * groups).max(1)).max(ROWS_PER_PASS);
    let prefetch = |j: usize, rows: usize| {
        let first = (r0 + j + ahead).min(q.rows());
        let last = (first + rows).min(q.rows());
        prefetch_lines(&q.scales()[first * groups..last * groups]);
        if let Some(m) = q.mins() {
            prefetch_lines(&m[first * groups..last * groups]);
        }
    };
    let whole = n / ROWS_PER_PASS * ROWS_PER_PASS;
    let (head, tail) = out.split_at_mut(whole);
    for (b, o) in head.chunks_exact_mut(ROWS_PER_PASS).enumerate() {
        let j = b * ROWS_PER_PASS;
        prefetch(j, ROWS_PER_PASS);
        o.copy_from_slice(&pass(std::array::from_fn(|i| row(j + i))));
    }
    for (i, o) in tail.iter_mut().enumerate() {
        prefetch(whole + i, 1);
        *o = single([row(whole + i)])[0];
    }
}

/// How far ahead of the packed bytes being loaded the kernels prefetch: more than is in flight
/// from memory at the streaming rate (25 GB/s × 100 ns = 2.5 KB). Prefetching one line per chunk
/// loaded, this far ahead, ran the 3072-wide cold benchmark a third faster than prefetching the
/// next rows in a burst before each pass.
pub(super) const PREFETCH_BYTES: usize = 4 << 10;

/// Asks for every cache line of `data` to be brought into the cache.
pub(super) fn prefetch_lines<T>(data: &[T]) {
    let bytes = std::mem::size_of_val(data);
    let start = data.as_ptr().cast::<i8>();
    for offset in (0..bytes).step_by(64) {
        // SAFETY: a prefetch is only a hint: it reads nothing the program can observe and never
        // faults; the address lies inside `data`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.add(offset)) };
    }
}

/// `acc + Σ_g c_g·xsum_g` over one row's minimums `mins`, 16 groups per multiply-add, with
/// `xsum` zero-padded to a multiple of 16 at least as long as `mins`.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn mins_term(
    mut acc: std::arch::x86_64::__m512,
    mins: &[f16],
    xsum: &[f32],
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    for (g0, xs) in xsum.chunks_exact(LANES).enumerate() {
        let g0 = g0 * LANES;
        let present = mins.len().saturating_sub(g0).min(LANES);
        let mask = if present == LANES { u16::MAX } else { (1u16 << present) - 1 };
        // SAFETY: the caller guarantees the CPU features; the mask covers only minimums `g0 ..
        // g0 + present` of `mins`; `xs` holds 16 floats.
        let (m, xs) = unsafe { (load_halves(mins, g0, mask), _mm512_loadu_ps(xs.as_ptr())) };
        acc = _mm512_fmadd_ps(m, xs, acc);
    }
    acc
}

/// Chunk `c` of a row's packed bytes, the bytes outside `mask` zero: a plain load when the
/// chunk is whole (every chunk but a row's last), else a masked one.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VL; `mask` is the chunk's `byte_mask` for a row of
/// `bytes.len()` bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn load_chunk(bytes: &[u8], c: usize, mask: u64) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let at = bytes.as_ptr().wrapping_add(c * CHUNK_BYTES);
    // SAFETY: the mask covers only bytes of the row (all 64 when it is full); masked-off bytes
    // are not accessed.
    unsafe {
        if mask == u64::MAX {
            _mm512_loadu_si512(at.cast())
        } else {
            _mm512_maskz_loadu_epi8(mask, at.cast())
        }
    }
}

/// The 16 f16 values of `values` from `first` on, in f32, those outside `mask` zero: a plain
/// load when all 16 exist, else a masked one.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VL; `mask` covers only elements of `values`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn load_halves(values: &[f16], first: usize, mask: u16) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let at = values.as_ptr().wrapping_add(first);
    // SAFETY: the mask covers only elements of `values` (all 16 when it is full); masked-off
    // elements are not accessed.
    let h = unsafe {
        if mask == u16::MAX {
            _mm256_loadu_si256(at.cast())
        } else {
            _mm256_maskz_loadu_epi16(mask, at.cast())
        }
    };
    _mm512_cvtph_ps(h)
}

/// Asks for the cache line `distance` bytes past `at` (an address inside a matrix's packed
/// values: the rows ahead) to be brought into the cache.
#[inline(always)]
pub(super) fn prefetch_ahead(at: *const u8, distance: usize) {
    // SAFETY: a prefetch is only a hint: it reads nothing the program can observe and never
    // faults, whatever the address (which `wrapping_add` forms without undefined behavior).
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.wrapping_add(distance).cast()) };
}
