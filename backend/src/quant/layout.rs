//! How a [`QuantizedMatrix`] is stored in a file: the tensors (name, dtype, shape) and the
//! metadata entries a safetensors writer emits for one weight, and nothing more (the writer and
//! reader belong to the runtime).
//!
//! For a weight called `NAME`:
//!
//! | tensor         | dtype | shape                     | contents                                   |
//! |----------------|-------|---------------------------|--------------------------------------------|
//! | `NAME.qweight` | U8    | `[rows, row_bytes]`       | packed values, [`QuantizedMatrix::packed`] |
//! | `NAME.scales`  | F16   | `[rows, groups_per_row]`  | [`QuantizedMatrix::scales`]                |
//! | `NAME.mins`    | F16   | `[rows, groups_per_row]`  | Q4_1 only, [`QuantizedMatrix::mins`]       |
//!
//! and the metadata `NAME.quant = "q4_0" | "q4_1"`, `NAME.group = G`, `NAME.shape = "rows,cols"`
//! (the packed shape does not determine `cols` when it is odd). Reading these back through
//! [`QuantizedMatrix::from_parts`] gives an equal matrix.
//!
//! Guarantee: the listed shapes multiply out to the lengths of the matrix's parts, byte for byte
//! (`2 ×` for F16), so a writer can copy the parts without reshaping.

use super::QuantizedMatrix;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    U8,
    F16,
}

impl StoredDtype {
    pub fn size(self) -> usize {
        match self {
            StoredDtype::U8 => 1,
            StoredDtype::F16 => 2,
        }
    }
}

/// One tensor of a quantized weight's stored form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: StoredDtype,
    pub shape: [usize; 2],
}

impl QuantizedMatrix {
    /// The tensors that store this matrix as the weight `name` (see the module documentation).
    pub fn stored_tensors(&self, name: &str) -> Vec<StoredTensor> {
        let groups = [self.rows(), self.groups_per_row()];
        let mut out = vec![
            StoredTensor {
                name: format!("{name}.qweight"),
                dtype: StoredDtype::U8,
                shape: [self.rows(), self.row_bytes()],
            },
            StoredTensor { name: format!("{name}.scales"), dtype: StoredDtype::F16, shape: groups },
        ];
        if self.mins().is_some() {
            out.push(StoredTensor { name: format!("{name}.mins"), dtype: StoredDtype::F16, shape: groups });
        }
        out
    }

    /// The metadata entries (key, value) that describe this matrix as the weight `name`.
    pub fn stored_metadata(&self, name: &str) -> Vec<(String, String)> {
        vec![
            (format!("{name}.quant"), self.format().name().to_string()),
            (format!("{name}.group"), self.group().to_string()),
            (format!("{name}.shape"), format!("{},{}", self.rows(), self.cols())),
        ]
    }
}
