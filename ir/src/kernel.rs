//! Fused kernels: many elementwise ops and last-axis reductions executed as one loop nest.
//!
//! A kernel iterates over a shape `[rows.., cols]`. Every value in its body is either a
//! *vector* value (one per element, shape `[rows.., cols]`) or a *row* value (one per row,
//! shape `[rows.., 1]`). A reduction over the last axis turns a vector value into a row value;
//! mixing a row value into a vector op broadcasts it along the row. Inputs are the fused node's
//! operands, each broadcast numpy-style to the level it is read at (so a `[H]` weight feeds a
//! `[T, H]` kernel without being materialized). This covers elementwise chains, layer norm, RMS
//! norm, softmax-like patterns and the recurrences of scan bodies.
//!
//! Guarantee: a kernel computes exactly what the primitive ops it replaced computed, element for
//! element and in the same order (reductions run left to right along the row), so fused and
//! unfused graphs agree bit for bit.

use crate::infer::{broadcasts_to, TypeError};
use crate::op::{BinaryOp, CompareOp, ReduceOp, UnaryOp};
use crate::types::{DType, Dim, Shape, Type};
use smallvec::SmallVec;
use std::fmt;

/// Whether a value exists per element or per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Row,
    Vector,
}

/// One instruction; operands are indices of earlier instructions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Instr {
    /// Operand `k` of the fused node, read at `level`.
    Input(u16, Level),
    Const(f32),
    Unary(UnaryOp, u16),
    Binary(BinaryOp, u16, u16),
    Compare(CompareOp, u16, u16),
    Select(u16, u16, u16),
    /// Reduction of a vector value along the row, giving a row value.
    Reduce(ReduceOp, u16),
}

/// A result of the fused node: an instruction's value, at a level at least its own (a row
/// value may be written out broadcast along the row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelOutput {
    pub instr: u16,
    pub level: Level,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The iteration space `[rows.., cols]` (rank ≥ 1).
    pub shape: Shape,
    /// The shape each operand is read as: its own shape, or a reshape of it (same elements in
    /// the same order, so a view) such as `[D]` read as `[D, 1]`.
    pub reads: Vec<Shape>,
    pub body: Vec<Instr>,
    pub outputs: Vec<KernelOutput>,
}

/// An instruction's level and element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrType {
    pub level: Level,
    pub dtype: DType,
}

impl Kernel {
    /// The shape of a value at `level`.
    pub fn level_shape(&self, level: Level) -> Shape {
        let mut s = self.shape.clone();
        if level == Level::Row {
            if let Some(last) = s.0.last_mut() {
                *last = Dim::Fixed(1);
            }
        }
        s
    }

    /// The level and dtype of every instruction, checking operand references and dtypes.
    pub fn instr_types(&self) -> Result<Vec<InstrType>, String> {
        let mut types: Vec<InstrType> = Vec::with_capacity(self.body.len());
        let f32_at = |level| InstrType { level, dtype: DType::F32 };
        for (i, instr) in self.body.iter().enumerate() {
            let get = |a: u16| -> Result<InstrType, String> {
                types.get(a as usize).copied().ok_or_else(|| format!("${i} uses ${a}, which is not defined before it"))
            };
            let want_f32 = |a: u16| -> Result<InstrType, String> {
                let t = get(a)?;
                if t.dtype != DType::F32 {
                    return Err(format!("${i} needs an f32 operand, ${a} is {}", t.dtype));
                }
                Ok(t)
            };
            let t = match *instr {
                Instr::Input(_, level) => f32_at(level),
                Instr::Const(_) => f32_at(Level::Row),
                Instr::Unary(_, a) => want_f32(a)?,
                Instr::Binary(_, a, b) => f32_at(want_f32(a)?.level.max(want_f32(b)?.level)),
                Instr::Compare(_, a, b) => {
                    InstrType { level: want_f32(a)?.level.max(want_f32(b)?.level), dtype: DType::Bool }
                }
                Instr::Select(c, a, b) => {
                    let ct = get(c)?;
                    if ct.dtype != DType::Bool {
                        return Err(format!("${i} selects on ${c}, which is not bool"));
                    }
                    f32_at(ct.level.max(want_f32(a)?.level).max(want_f32(b)?.level))
                }
                Instr::Reduce(_, a) => {
                    if want_f32(a)?.level != Level::Vector {
                        return Err(format!("${i} reduces ${a}, which is already a row value"));
                    }
                    f32_at(Level::Row)
                }
            };
            types.push(t);
        }
        Ok(types)
    }

    /// The fused node's result types for operands of types `operands` (the type rule).
    pub fn result_types(&self, operands: &[&Type]) -> Result<SmallVec<[Type; 1]>, TypeError> {
        let err = |what: String| TypeError::Kernel { what };
        if self.shape.rank() == 0 {
            return Err(err("a kernel iterates over at least one axis".into()));
        }
        let types = self.instr_types().map_err(err)?;
        if self.reads.len() != operands.len() {
            return Err(err(format!(
                "the kernel reads {} operands, the node has {}",
                self.reads.len(),
                operands.len()
            )));
        }
        for (k, (t, read)) in operands.iter().zip(&self.reads).enumerate() {
            if t.shape.count().is_none() || t.shape.count() != read.count() {
                return Err(err(format!("operand {k} ({t}) cannot be viewed as {read}")));
            }
        }
        let mut used = vec![false; operands.len()];
        for (i, instr) in self.body.iter().enumerate() {
            if let Instr::Input(k, level) = *instr {
                let t = operands
                    .get(k as usize)
                    .ok_or_else(|| err(format!("${i} reads operand {k}, but the node has {}", operands.len())))?;
                let target = self.level_shape(level);
                let read = &self.reads[k as usize];
                if t.dtype != DType::F32 || !broadcasts_to(read, &target) {
                    return Err(err(format!("operand {k} ({t}, read as {read}) cannot be read as f32{target}")));
                }
                used[k as usize] = true;
            }
        }
        if let Some(k) = used.iter().position(|u| !u) {
            return Err(err(format!("operand {k} is never read")));
        }
        self.outputs
            .iter()
            .map(|o| {
                let t =
                    types.get(o.instr as usize).ok_or_else(|| err(format!("output ${} does not exist", o.instr)))?;
                if o.level < t.level {
                    return Err(err(format!("output ${} is a vector value written as a row value", o.instr)));
                }
                Ok(Type::new(t.dtype, self.level_shape(o.level)))
            })
            .collect()
    }

    /// Number of primitive operations the kernel performs per element or row (for reports).
    pub fn op_count(&self) -> usize {
        self.body.iter().filter(|i| !matches!(i, Instr::Input(..) | Instr::Const(_))).count()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Row => "row",
            Level::Vector => "vec",
        })
    }
}

impl fmt::Display for Instr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Instr::Input(k, level) => write!(f, "in {k} : {level}"),
            Instr::Const(c) => write!(f, "const {c:?}"),
            Instr::Unary(op, a) => write!(f, "{} ${a}", op.name()),
            Instr::Binary(op, a, b) => write!(f, "{} ${a}, ${b}", op.name()),
            Instr::Compare(op, a, b) => write!(f, "cmp.{} ${a}, ${b}", op.name()),
            Instr::Select(c, a, b) => write!(f, "select ${c}, ${a}, ${b}"),
            Instr::Reduce(op, a) => write!(f, "reduce.{} ${a}", op.name()),
        }
    }
}

impl Kernel {
    /// Writes the kernel body, one instruction per line, at `indent`.
    pub fn write_body(&self, f: &mut fmt::Formatter<'_>, indent: &str) -> fmt::Result {
        let reads: Vec<String> = self.reads.iter().map(Shape::to_string).collect();
        writeln!(f, "{indent}kernel {} reads ({}) {{", self.shape, reads.join(", "))?;
        for (i, instr) in self.body.iter().enumerate() {
            writeln!(f, "{indent}  ${i} = {instr}")?;
        }
        let outs: Vec<String> = self.outputs.iter().map(|o| format!("${} : {}", o.instr, o.level)).collect();
        writeln!(f, "{indent}  out {}", outs.join(", "))?;
        writeln!(f, "{indent}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `layer_norm`-like: x [T, 4] -> (x - mean) * w, with the mean as a row value.
    fn norm_kernel() -> Kernel {
        Kernel {
            shape: Shape::new([Dim::T, Dim::Fixed(4)]),
            reads: vec![Shape::new([Dim::T, Dim::Fixed(4)]), Shape::fixed(&[4])],
            body: vec![
                Instr::Input(0, Level::Vector),
                Instr::Reduce(ReduceOp::Sum, 0),
                Instr::Const(4.0),
                Instr::Binary(BinaryOp::Div, 1, 2),
                Instr::Binary(BinaryOp::Sub, 0, 3),
                Instr::Input(1, Level::Vector),
                Instr::Binary(BinaryOp::Mul, 4, 5),
            ],
            outputs: vec![
                KernelOutput { instr: 6, level: Level::Vector },
                KernelOutput { instr: 3, level: Level::Row },
            ],
        }
    }

    #[test]
    fn result_types_follow_levels_and_broadcast_inputs() {
        let k = norm_kernel();
        let x = Type::f32(Shape::new([Dim::T, Dim::Fixed(4)]));
        let w = Type::f32(Shape::fixed(&[4]));
        let r = k.result_types(&[&x, &w]).unwrap();
        assert_eq!(r[0].to_string(), "f32[T, 4]");
        assert_eq!(r[1].to_string(), "f32[T, 1]");
        let bad = Type::f32(Shape::fixed(&[3]));
        assert!(k.result_types(&[&x, &bad]).is_err());
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        let mut k = norm_kernel();
        k.body[1] = Instr::Reduce(ReduceOp::Sum, 3);
        assert!(k.instr_types().unwrap_err().contains("not defined before"));
        let mut k = norm_kernel();
        k.outputs[0].level = Level::Row;
        let x = Type::f32(Shape::new([Dim::T, Dim::Fixed(4)]));
        let w = Type::f32(Shape::fixed(&[4]));
        assert!(k.result_types(&[&x, &w]).is_err());
    }
}
