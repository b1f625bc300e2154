//! An output buffer shared by parallel tasks that each write their own disjoint elements (column
//! blocks of a product): the raw pointer rayon tasks carry, since `&mut` slices of interleaved
//! blocks cannot be split safely. Callers guarantee the disjointness and the bounds.

/// A pointer to the first element of an output that tasks write at disjoint offsets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Disjoint(pub(crate) *mut f32);

// SAFETY: tasks sharing a `Disjoint` write disjoint elements (each caller documents how).
unsafe impl Send for Disjoint {}
// SAFETY: as above.
unsafe impl Sync for Disjoint {}

impl Disjoint {
    /// The element at `offset`, which the caller keeps within the buffer.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
