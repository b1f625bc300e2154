//! Values of the expression language during lowering.
//!
//! Hyperparameters, the layer index and shapes are compile-time values that fold away; tensors
//! are IR values. Mixing the two turns the number into a scalar constant node.

use kiln_ir::{Dim, Value};
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Clone, Debug)]
pub enum Val {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A size that depends on the sequence length (`T`, `T - 1`, ...).
    Dim(Dim),
    Tensor(Value),
    List(Vec<Val>),
    /// The results of a scan, by name (`wkv.out`, `wkv.num`) or a block's `state`.
    Record(Rc<BTreeMap<String, Val>>),
}

impl Val {
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Int(_) => "an integer",
            Val::Float(_) => "a number",
            Val::Bool(_) => "a boolean",
            Val::Dim(_) => "a size depending on T",
            Val::Tensor(_) => "a tensor",
            Val::List(_) => "a list",
            Val::Record(_) => "a record",
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::Int(n) => Some(n as f64),
            Val::Float(x) => Some(x),
            _ => None,
        }
    }

    /// A size: a non-negative integer, or a `T`-dependent dimension.
    pub fn as_dim(&self) -> Option<Dim> {
        match *self {
            Val::Int(n) => usize::try_from(n).ok().map(Dim::Fixed),
            Val::Dim(d) => Some(d),
            _ => None,
        }
    }
}

/// Folds an arithmetic or comparison operator over two compile-time values; `None` when the
/// operands are not both compile-time or the operation is undefined for them.
pub fn fold_binary(op: crate::expr::BinOp, a: &Val, b: &Val) -> Option<Result<Val, String>> {
    use crate::expr::BinOp::*;
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => {
            let (x, y) = (*x, *y);
            Some(match op {
                Add => x.checked_add(y).map(Val::Int).ok_or_else(|| "integer overflow".into()),
                Sub => x.checked_sub(y).map(Val::Int).ok_or_else(|| "integer overflow".into()),
                Mul => x.checked_mul(y).map(Val::Int).ok_or_else(|| "integer overflow".into()),
                Div => Ok(Val::Float(x as f64 / y as f64)),
                FloorDiv | Rem if y == 0 => Err("division by zero".into()),
                FloorDiv => Ok(Val::Int(x.div_euclid(y) - i64::from(y < 0 && x.rem_euclid(y) != 0))),
                Rem => Ok(Val::Int(x - y * (x.div_euclid(y) - i64::from(y < 0 && x.rem_euclid(y) != 0)))),
                Pow if y >= 0 => u32::try_from(y)
                    .ok()
                    .and_then(|y| x.checked_pow(y))
                    .map(Val::Int)
                    .ok_or_else(|| "integer overflow".into()),
                Pow => Ok(Val::Float((x as f64).powf(y as f64))),
                Eq | Ne | Lt | Le | Gt | Ge => Ok(Val::Bool(compare(op, x, y))),
                And | Or => Err("`and`/`or` take booleans".into()),
            })
        }
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            let (x, y) = (a.as_f64()?, b.as_f64()?);
            Some(match op {
                Add => Ok(Val::Float(x + y)),
                Sub => Ok(Val::Float(x - y)),
                Mul => Ok(Val::Float(x * y)),
                Div => Ok(Val::Float(x / y)),
                FloorDiv => Ok(Val::Float((x / y).floor())),
                Rem => Ok(Val::Float(x - y * (x / y).floor())),
                Pow => Ok(Val::Float(x.powf(y))),
                Eq | Ne | Lt | Le | Gt | Ge => Ok(Val::Bool(compare(op, x, y))),
                And | Or => Err("`and`/`or` take booleans".into()),
            })
        }
        (Val::Bool(x), Val::Bool(y)) => Some(match op {
            And => Ok(Val::Bool(*x && *y)),
            Or => Ok(Val::Bool(*x || *y)),
            Eq => Ok(Val::Bool(x == y)),
            Ne => Ok(Val::Bool(x != y)),
            _ => Err(format!("`{}` does not take booleans", op.symbol())),
        }),
        (Val::Dim(_), Val::Int(_)) | (Val::Int(_), Val::Dim(_)) | (Val::Dim(_), Val::Dim(_)) => {
            let (x, y) = (a.as_dim()?, b.as_dim()?);
            Some(match op {
                Add => x.checked_add(y).map(dim_val).ok_or_else(|| "sizes can only be T plus a constant".into()),
                Sub => x.checked_sub(y).map(dim_val).ok_or_else(|| "sizes can only be T plus a constant".into()),
                Eq => Ok(Val::Bool(x == y)),
                Ne => Ok(Val::Bool(x != y)),
                _ => Err(format!("`{}` is not defined on sizes that depend on T", op.symbol())),
            })
        }
        _ => None,
    }
}

/// A comparison operator applied to two compile-time numbers (false for any other operator).
fn compare<T: PartialOrd>(op: crate::expr::BinOp, x: T, y: T) -> bool {
    use crate::expr::BinOp::*;
    match op {
        Eq => x == y,
        Ne => x != y,
        Lt => x < y,
        Le => x <= y,
        Gt => x > y,
        Ge => x >= y,
        _ => false,
    }
}

fn dim_val(d: Dim) -> Val {
    match d {
        Dim::Fixed(n) => Val::Int(n as i64),
        Dim::Seq(_) => Val::Dim(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::BinOp;

    fn int(v: Option<Result<Val, String>>) -> i64 {
        match v {
            Some(Ok(Val::Int(n))) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn python_style_integer_division() {
        assert_eq!(int(fold_binary(BinOp::FloorDiv, &Val::Int(7), &Val::Int(2))), 3);
        assert_eq!(int(fold_binary(BinOp::FloorDiv, &Val::Int(-7), &Val::Int(2))), -4);
        assert_eq!(int(fold_binary(BinOp::Rem, &Val::Int(-7), &Val::Int(2))), 1);
        assert_eq!(int(fold_binary(BinOp::Rem, &Val::Int(7), &Val::Int(-2))), -1);
        assert!(matches!(fold_binary(BinOp::FloorDiv, &Val::Int(1), &Val::Int(0)), Some(Err(_))));
    }

    #[test]
    fn sizes() {
        let t = Val::Dim(Dim::T);
        assert!(matches!(fold_binary(BinOp::Sub, &t, &Val::Int(1)), Some(Ok(Val::Dim(Dim::Seq(-1))))));
        assert!(matches!(fold_binary(BinOp::Sub, &t, &t), Some(Ok(Val::Int(0)))));
        assert!(matches!(fold_binary(BinOp::Mul, &t, &Val::Int(2)), Some(Err(_))));
    }
}
