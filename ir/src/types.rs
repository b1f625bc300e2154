//! Element types, dimensions and tensor types.
//!
//! A dimension is either a fixed size or the symbolic sequence length `T` plus a constant offset
//! (`T`, `T+3`, `T-1`). One symbol is enough for recurrent models: every length that varies
//! between calls is the number of tokens in the call, and a call has at least one (`T >= 1`). Shapes are resolved to sizes only when a
//! backend executes a graph with a known `T`.

use smallvec::SmallVec;
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    I64,
    Bool,
    /// A 4-bit quantized weight matrix `[N, K]` (see [`Quant`]). Only a weight input can have
    /// this type, and only the right operand of a product or the table of a gather can read it
    /// (the type rules enforce both); every result computed from it is `f32`.
    Quant(Quant),
}

impl DType {
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Quant(_))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::F32 => f.write_str("f32"),
            DType::I64 => f.write_str("i64"),
            DType::Bool => f.write_str("bool"),
            DType::Quant(q) => write!(f, "{q}"),
        }
    }
}

/// A 4-bit weight format: each row of `[N, K]` is cut along `K` into groups of `group` values
/// (the last group of a row may be shorter), each with an f16 scale, and for
/// [`QuantScheme::Q4_1`] an f16 minimum. Printed `q4_0:32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quant {
    pub scheme: QuantScheme,
    pub group: u32,
}

/// How a group's 4-bit codes `c` map back to values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantScheme {
    /// Symmetric: `(c - 8) * scale`.
    Q4_0,
    /// Affine: `c * scale + min`.
    Q4_1,
}

impl QuantScheme {
    /// The name on the command line and in file metadata.
    pub fn name(self) -> &'static str {
        match self {
            QuantScheme::Q4_0 => "q4_0",
            QuantScheme::Q4_1 => "q4_1",
        }
    }

    pub fn from_name(name: &str) -> Option<QuantScheme> {
        match name {
            "q4_0" => Some(QuantScheme::Q4_0),
            "q4_1" => Some(QuantScheme::Q4_1),
            _ => None,
        }
    }
}

/// The bytes of one packed row of `cols` 4-bit codes in groups of `group` (> 0): each group
/// starts on a byte, two codes per byte, so an odd group ends mid-byte.
pub fn packed_row_bytes(cols: usize, group: usize) -> usize {
    (cols / group) * group.div_ceil(2) + (cols % group).div_ceil(2)
}

impl fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme.name(), self.group)
    }
}

/// One dimension: a fixed size, or `T + offset` where `T` is the sequence length of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Fixed(usize),
    Seq(i64),
}

impl Dim {
    /// The sequence length itself.
    pub const T: Dim = Dim::Seq(0);

    /// The size of this dimension for a call of `t` tokens, or `None` if it would be negative.
    pub fn resolve(self, t: usize) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Seq(k) => usize::try_from(t as i64 + k).ok(),
        }
    }

    /// `self + other`; `None` when both depend on `T` (the result would be `2T`).
    pub fn checked_add(self, other: Dim) -> Option<Dim> {
        match (self, other) {
            (Dim::Fixed(a), Dim::Fixed(b)) => Some(Dim::Fixed(a + b)),
            (Dim::Seq(k), Dim::Fixed(n)) | (Dim::Fixed(n), Dim::Seq(k)) => Some(Dim::Seq(k + n as i64)),
            (Dim::Seq(_), Dim::Seq(_)) => None,
        }
    }

    /// `self - other`; `None` when the result is a negative fixed size or `-T`.
    pub fn checked_sub(self, other: Dim) -> Option<Dim> {
        match (self, other) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a.checked_sub(b).map(Dim::Fixed),
            (Dim::Seq(k), Dim::Fixed(n)) => Some(Dim::Seq(k - n as i64)),
            (Dim::Seq(a), Dim::Seq(b)) => usize::try_from(a - b).ok().map(Dim::Fixed),
            (Dim::Fixed(_), Dim::Seq(_)) => None,
        }
    }

    /// Whether `self <= other` for every sequence length `T >= 1` (a call has at least one
    /// token); used to check slice bounds.
    pub fn always_le(self, other: Dim) -> bool {
        match (self, other) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a <= b,
            (Dim::Fixed(a), Dim::Seq(k)) => 1 + k >= a as i64,
            (Dim::Seq(a), Dim::Seq(b)) => a <= b,
            (Dim::Seq(_), Dim::Fixed(_)) => false,
        }
    }

    pub fn fixed(self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Seq(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Seq(0) => f.write_str("T"),
            Dim::Seq(k) if k > 0 => write!(f, "T+{k}"),
            Dim::Seq(k) => write!(f, "T-{}", -k),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Fixed(n)
    }
}

/// A shape: a list of dimensions, outermost first. The empty shape is a scalar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape(pub SmallVec<[Dim; 4]>);

/// An element count that is linear in `T`: `per_t * T + constant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub per_t: i64,
    pub constant: i64,
}

impl Shape {
    pub fn scalar() -> Shape {
        Shape(SmallVec::new())
    }

    pub fn new(dims: impl IntoIterator<Item = Dim>) -> Shape {
        Shape(dims.into_iter().collect())
    }

    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&n| Dim::Fixed(n)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Resolves every dimension for a call of `t` tokens.
    pub fn resolve(&self, t: usize) -> Option<SmallVec<[usize; 4]>> {
        self.0.iter().map(|d| d.resolve(t)).collect()
    }

    /// Whether any dimension depends on `T`.
    pub fn depends_on_t(&self) -> bool {
        self.0.iter().any(|d| matches!(d, Dim::Seq(_)))
    }

    /// The element count as a linear function of `T`; `None` if more than one dimension
    /// depends on `T` (the count would not be linear).
    pub fn count(&self) -> Option<Count> {
        let mut fixed: i64 = 1;
        let mut seq: Option<i64> = None;
        for d in &self.0 {
            match *d {
                Dim::Fixed(n) => fixed = fixed.checked_mul(n as i64)?,
                Dim::Seq(k) => {
                    if seq.replace(k).is_some() {
                        return None;
                    }
                }
            }
        }
        Some(match seq {
            None => Count { per_t: 0, constant: fixed },
            Some(k) => Count { per_t: fixed, constant: fixed * k },
        })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of one value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub shape: Shape,
}

impl Type {
    pub fn new(dtype: DType, shape: Shape) -> Type {
        Type { dtype, shape }
    }

    pub fn f32(shape: Shape) -> Type {
        Type::new(DType::F32, shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_print_and_combine() {
        assert_eq!(Dim::T.to_string(), "T");
        assert_eq!(Dim::Seq(3).to_string(), "T+3");
        assert_eq!(Dim::Seq(-1).to_string(), "T-1");
        assert_eq!(Dim::T.checked_add(Dim::Fixed(3)), Some(Dim::Seq(3)));
        assert_eq!(Dim::Seq(3).checked_sub(Dim::Fixed(4)), Some(Dim::Seq(-1)));
        assert_eq!(Dim::Seq(3).checked_sub(Dim::T), Some(Dim::Fixed(3)));
        assert_eq!(Dim::T.checked_add(Dim::T), None);
        assert!(Dim::Fixed(0).always_le(Dim::T));
        assert!(Dim::Fixed(1).always_le(Dim::T));
        assert!(!Dim::Fixed(2).always_le(Dim::T));
        assert!(!Dim::T.always_le(Dim::Fixed(100)));
        assert_eq!(Dim::Seq(-2).resolve(1), None);
    }

    #[test]
    fn counts_are_linear_in_t() {
        let s = Shape::new([Dim::Seq(1), Dim::Fixed(4), Dim::Fixed(2)]);
        assert_eq!(s.count(), Some(Count { per_t: 8, constant: 8 }));
        assert_eq!(Shape::new([Dim::T, Dim::T]).count(), None);
        assert_eq!(s.to_string(), "[T+1, 4, 2]");
    }
}
