//! The primitives as the expression language spells them, and operator lowering.
//!
//! Arithmetic on tensors broadcasts numpy-style: the frontend inserts explicit `broadcast`
//! nodes, so IR ops always see operands of one shape. Numbers mixed with tensors become scalar
//! constants. Operations on compile-time values fold.

use super::value::fold_binary;
use super::{Frame, Lowerer, Val};
use crate::expr::BinOp;
use crate::source::Diagnostic;
use kiln_ir::{broadcast_shapes, BinaryOp, CompareOp, Dim, Graph, Op, ReduceOp, Shape, UnaryOp, Value};
use std::ops::Range;

/// Every primitive callable from a spec, with its parameters (`?` marks an optional one).
const SIGNATURES: &[(&str, &[&str])] = &[
    ("exp", &["x"]),
    ("log", &["x"]),
    ("log1p", &["x"]),
    ("sqrt", &["x"]),
    ("tanh", &["x"]),
    ("abs", &["x"]),
    ("recip", &["x"]),
    ("max", &["a", "b?", "axis?", "keepdim?"]),
    ("min", &["a", "b"]),
    ("where", &["cond", "a", "b"]),
    ("sum", &["x", "axis", "keepdim?"]),
    ("mean", &["x", "axis", "keepdim?"]),
    ("matmul", &["a", "b"]),
    ("linear", &["x", "weight"]),
    ("reshape", &["x", "shape"]),
    ("broadcast", &["x", "shape"]),
    ("transpose", &["x", "perm?"]),
    ("unsqueeze", &["x", "axis"]),
    ("squeeze", &["x", "axis"]),
    ("slice", &["x", "axis", "start", "end"]),
    ("concat", &["xs", "axis"]),
    ("unfold", &["x", "axis", "size"]),
    ("gather", &["table", "indices"]),
    ("dim", &["x", "axis"]),
    ("rank", &["x"]),
    ("scan", &["step", "over", "carry?", "with?", "reverse?"]),
];

/// Names of all primitives (for suggestions).
pub const NAMES: [&str; 26] = {
    let mut names = [""; 26];
    let mut i = 0;
    while i < SIGNATURES.len() {
        names[i] = SIGNATURES[i].0;
        i += 1;
    }
    names
};

pub fn is_builtin(name: &str) -> bool {
    SIGNATURES.iter().any(|(n, _)| *n == name)
}

/// Arguments bound to a primitive's parameters.
struct Args {
    vals: Vec<Option<(Val, Range<usize>)>>,
}

impl Args {
    fn take(&mut self, i: usize) -> Option<(Val, Range<usize>)> {
        self.vals.get_mut(i).and_then(Option::take)
    }

    /// A required argument (binding has already checked that it is present).
    fn req(&mut self, i: usize) -> Result<(Val, Range<usize>), Diagnostic> {
        self.take(i).ok_or_else(|| Diagnostic::new(format!("internal: argument {i} missing after binding"), None))
    }
}

impl<'s> Lowerer<'s> {
    fn bind_args(
        &self,
        frame: &Frame<'s>,
        name: &str,
        args: Vec<(Val, Range<usize>)>,
        kwargs: Vec<(&str, Range<usize>, Val)>,
        span: &Range<usize>,
    ) -> Result<Args, Diagnostic> {
        let params = SIGNATURES.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, p)| *p);
        let sig = || format!("{name}({})", params.join(", "));
        if args.len() > params.len() {
            return Err(Diagnostic::at(
                &self.loc(frame, span),
                format!("`{name}` takes at most {} argument(s), got {}", params.len(), args.len()),
            )
            .note(format!("the signature is `{}`", sig())));
        }
        let mut vals: Vec<Option<(Val, Range<usize>)>> = args.into_iter().map(Some).collect();
        vals.resize(params.len(), None);
        for (k, ks, v) in kwargs {
            let Some(i) = params.iter().position(|p| p.trim_end_matches('?') == k) else {
                return Err(Diagnostic::at(&self.loc(frame, &ks), format!("`{name}` has no parameter `{k}`"))
                    .note(format!("the signature is `{}`", sig())));
            };
            if vals[i].is_some() {
                return Err(Diagnostic::at(&self.loc(frame, &ks), format!("argument `{k}` is given twice")));
            }
            vals[i] = Some((v, ks));
        }
        for (i, p) in params.iter().enumerate() {
            if vals[i].is_none() && !p.ends_with('?') {
                return Err(Diagnostic::at(&self.loc(frame, span), format!("`{name}` is missing argument `{p}`"))
                    .note(format!("the signature is `{}`", sig())));
            }
        }
        Ok(Args { vals })
    }

    /// Makes a tensor of a value: numbers become scalar constants.
    pub(crate) fn tensor(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        v: &Val,
        span: &Range<usize>,
    ) -> Result<Value, Diagnostic> {
        match v {
            Val::Tensor(t) => Ok(*t),
            Val::Int(_) | Val::Float(_) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                Ok(g.constant(x as f32, self.origin(frame, span)))
            }
            other => Err(Diagnostic::at(
                &self.loc(frame, span),
                format!("expected a tensor or a number, found {}", other.kind()),
            )),
        }
    }

    fn int(&self, frame: &Frame<'s>, v: &(Val, Range<usize>), what: &str) -> Result<i64, Diagnostic> {
        match v.0 {
            Val::Int(n) => Ok(n),
            ref other => Err(Diagnostic::at(
                &self.loc(frame, &v.1),
                format!("{what} must be an integer known when compiling, found {}", other.kind()),
            )),
        }
    }

    fn axis(&self, frame: &Frame<'s>, v: &(Val, Range<usize>), rank: usize) -> Result<usize, Diagnostic> {
        let a = self.int(frame, v, "an axis")?;
        let k = if a < 0 { rank as i64 + a } else { a };
        usize::try_from(k).ok().filter(|&k| k < rank).ok_or_else(|| {
            Diagnostic::at(&self.loc(frame, &v.1), format!("axis {a} is out of range for a tensor of rank {rank}"))
        })
    }

    fn shape_arg(&self, frame: &Frame<'s>, v: &(Val, Range<usize>)) -> Result<Shape, Diagnostic> {
        let Val::List(items) = &v.0 else {
            return Err(Diagnostic::at(
                &self.loc(frame, &v.1),
                format!("a shape must be a list of sizes, found {}", v.0.kind()),
            ));
        };
        items
            .iter()
            .map(|i| {
                i.as_dim().ok_or_else(|| {
                    Diagnostic::at(
                        &self.loc(frame, &v.1),
                        format!("a shape holds sizes (non-negative integers or T), found {}", i.kind()),
                    )
                })
            })
            .collect::<Result<Vec<Dim>, _>>()
            .map(Shape::new)
    }

    fn broadcast_to(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        v: Value,
        to: &Shape,
        span: &Range<usize>,
    ) -> Result<Value, Diagnostic> {
        if &g.value_type(v).shape == to {
            return Ok(v);
        }
        let origin = self.origin(frame, span);
        match self.emit(g, frame, Op::Broadcast(to.clone()), &[v], origin, span)? {
            Val::Tensor(t) => Ok(t),
            _ => unreachable!("emit returns tensors"),
        }
    }

    /// Applies an elementwise op to operands broadcast to their common shape.
    fn elementwise(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        op: Op,
        vals: &[(&Val, &Range<usize>)],
        span: &Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let mut tensors = Vec::with_capacity(vals.len());
        for (v, s) in vals {
            tensors.push(self.tensor(g, frame, v, s)?);
        }
        let mut target = g.value_type(tensors[0]).shape.clone();
        for t in &tensors[1..] {
            let s = &g.value_type(*t).shape;
            target = broadcast_shapes(&target, s).ok_or_else(|| {
                let types: Vec<String> = tensors.iter().map(|t| g.value_type(*t).to_string()).collect();
                Diagnostic::at(
                    &self.loc(frame, span),
                    format!("shape mismatch in `{}`: cannot broadcast {} together", op.mnemonic(), types.join(" and ")),
                )
                .label("operands of incompatible shapes")
            })?;
        }
        for t in &mut tensors {
            *t = self.broadcast_to(g, frame, *t, &target, span)?;
        }
        let origin = self.origin(frame, span);
        self.emit(g, frame, op, &tensors, origin, span)
    }

    /// Lowers `a op b`.
    pub(crate) fn binary(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        op: BinOp,
        a: Val,
        b: Val,
        span: &Range<usize>,
    ) -> Result<Val, Diagnostic> {
        if let Some(r) = fold_binary(op, &a, &b) {
            return r.map_err(|m| Diagnostic::at(&self.loc(frame, span), m));
        }
        // Exact identities (x·1, x/1, x − 0) only where the other operand is a tensor.
        let is = |v: &Val, x: f64| v.as_f64() == Some(x);
        let (ta, tb) = (matches!(a, Val::Tensor(_)), matches!(b, Val::Tensor(_)));
        let ir = match op {
            BinOp::Mul | BinOp::Div if ta && is(&b, 1.0) => return Ok(a),
            BinOp::Mul if tb && is(&a, 1.0) => return Ok(b),
            // `x − 0` is exact; `x + 0` is not (it turns −0.0 into +0.0).
            BinOp::Sub if ta && b.as_f64().is_some_and(|z| z == 0.0 && z.is_sign_positive()) => return Ok(a),
            BinOp::Add => Op::Binary(BinaryOp::Add),
            BinOp::Sub => Op::Binary(BinaryOp::Sub),
            BinOp::Mul => Op::Binary(BinaryOp::Mul),
            BinOp::Div => Op::Binary(BinaryOp::Div),
            BinOp::Pow => Op::Binary(BinaryOp::Pow),
            BinOp::Eq => Op::Compare(CompareOp::Eq),
            BinOp::Ne => Op::Compare(CompareOp::Ne),
            BinOp::Lt => Op::Compare(CompareOp::Lt),
            BinOp::Le => Op::Compare(CompareOp::Le),
            BinOp::Gt => Op::Compare(CompareOp::Gt),
            BinOp::Ge => Op::Compare(CompareOp::Ge),
            BinOp::FloorDiv | BinOp::Rem | BinOp::And | BinOp::Or => {
                return Err(Diagnostic::at(
                    &self.loc(frame, span),
                    format!("`{}` is not defined on {} and {}", op.symbol(), a.kind(), b.kind()),
                ));
            }
        };
        self.elementwise(g, frame, ir, &[(&a, span), (&b, span)], span)
    }

    /// Lowers a call of a primitive.
    pub(crate) fn builtin(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        name: &str,
        args: Vec<(Val, Range<usize>)>,
        kwargs: Vec<(&str, Range<usize>, Val)>,
        span: &Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let mut a = self.bind_args(frame, name, args, kwargs, span)?;
        let origin = self.origin(frame, span);
        let unary = |u: UnaryOp| Op::Unary(u);
        let un = match name {
            "exp" => Some(UnaryOp::Exp),
            "log" => Some(UnaryOp::Log),
            "log1p" => Some(UnaryOp::Log1p),
            "sqrt" => Some(UnaryOp::Sqrt),
            "tanh" => Some(UnaryOp::Tanh),
            "abs" => Some(UnaryOp::Abs),
            "recip" => Some(UnaryOp::Recip),
            _ => None,
        };
        if let Some(u) = un {
            let (x, xs) = a.take(0).unwrap_or((Val::Int(0), span.clone()));
            if let Some(n) = x.as_f64() {
                return Ok(Val::Float(f64::from(u.apply(n as f32))));
            }
            let t = self.tensor(g, frame, &x, &xs)?;
            return self.emit(g, frame, unary(u), &[t], origin, span);
        }
        match name {
            "max" | "min" => {
                let x = a.req(0)?;
                let rest: Vec<_> = (1..if name == "max" { 4 } else { 2 }).map(|i| a.take(i)).collect();
                if name == "max" && rest[1].is_some() {
                    if rest[0].is_some() {
                        return Err(Diagnostic::at(
                            &self.loc(frame, span),
                            "`max` takes two operands, or one operand and `axis =`, not both",
                        ));
                    }
                    let keep = rest[2].as_ref().map_or(Ok(false), |k| self.bool_arg(frame, k))?;
                    return self.reduce(
                        g,
                        frame,
                        ReduceOp::Max,
                        x,
                        rest[1].as_ref().unwrap_or(&(Val::Int(-1), span.clone())),
                        keep,
                        false,
                        span,
                    );
                }
                let Some(b) = rest.into_iter().next().flatten() else {
                    return Err(Diagnostic::at(
                        &self.loc(frame, span),
                        format!("`{name}` takes two operands (or `axis =` to reduce)"),
                    ));
                };
                let op = if name == "max" { BinaryOp::Max } else { BinaryOp::Min };
                if let (Val::Int(p), Val::Int(q)) = (&x.0, &b.0) {
                    return Ok(Val::Int(if name == "max" { *p.max(q) } else { *p.min(q) }));
                }
                if let (Some(p), Some(q)) = (x.0.as_f64(), b.0.as_f64()) {
                    return Ok(Val::Float(f64::from(op.apply(p as f32, q as f32))));
                }
                self.elementwise(g, frame, Op::Binary(op), &[(&x.0, &x.1), (&b.0, &b.1)], span)
            }
            "where" => {
                let (c, x, y) = (a.req(0)?, a.req(1)?, a.req(2)?);
                match c.0 {
                    Val::Bool(true) => return Ok(x.0),
                    Val::Bool(false) => return Ok(y.0),
                    _ => {}
                }
                self.elementwise(g, frame, Op::Select, &[(&c.0, &c.1), (&x.0, &x.1), (&y.0, &y.1)], span)
            }
            "sum" | "mean" => {
                let (x, axis) = (a.req(0)?, a.req(1)?);
                let keep = a.take(2).map_or(Ok(false), |k| self.bool_arg(frame, &k))?;
                self.reduce(g, frame, ReduceOp::Sum, x, &axis, keep, name == "mean", span)
            }
            "matmul" | "linear" => {
                let (x, w) = (a.req(0)?, a.req(1)?);
                let (x, w) = (self.tensor(g, frame, &x.0, &x.1)?, self.tensor(g, frame, &w.0, &w.1)?);
                self.emit(g, frame, Op::MatMul { transpose_rhs: name == "linear" }, &[x, w], origin, span)
            }
            "reshape" | "broadcast" => {
                let (x, s) = (a.req(0)?, a.req(1)?);
                let x = self.tensor(g, frame, &x.0, &x.1)?;
                let shape = self.shape_arg(frame, &s)?;
                let op = if name == "reshape" { Op::Reshape(shape) } else { Op::Broadcast(shape) };
                self.emit(g, frame, op, &[x], origin, span)
            }
            "transpose" => {
                let x = a.req(0)?;
                let t = self.tensor(g, frame, &x.0, &x.1)?;
                let rank = g.value_type(t).rank();
                let perm = match a.take(1) {
                    None => (0..rank).rev().collect(),
                    Some(p) => match &p.0 {
                        Val::List(items) => items
                            .iter()
                            .map(|i| self.axis(frame, &(i.clone(), p.1.clone()), rank))
                            .collect::<Result<_, _>>()?,
                        other => {
                            return Err(Diagnostic::at(
                                &self.loc(frame, &p.1),
                                format!("a permutation is a list of axes, found {}", other.kind()),
                            ))
                        }
                    },
                };
                self.emit(g, frame, Op::Transpose(perm), &[t], origin, span)
            }
            "unsqueeze" | "squeeze" => {
                let (x, ax) = (a.req(0)?, a.req(1)?);
                let t = self.tensor(g, frame, &x.0, &x.1)?;
                let mut dims = g.value_type(t).shape.0.clone();
                if name == "unsqueeze" {
                    let axis = self.axis(frame, &ax, dims.len() + 1)?;
                    dims.insert(axis, Dim::Fixed(1));
                } else {
                    let axis = self.axis(frame, &ax, dims.len())?;
                    if dims[axis] != Dim::Fixed(1) {
                        return Err(Diagnostic::at(
                            &self.loc(frame, span),
                            format!(
                                "cannot squeeze axis {axis} of {}: its size is {}, not 1",
                                g.value_type(t),
                                dims[axis]
                            ),
                        ));
                    }
                    dims.remove(axis);
                }
                self.emit(g, frame, Op::Reshape(Shape(dims)), &[t], origin, span)
            }
            "slice" => {
                let (x, ax, start, end) = (a.req(0)?, a.req(1)?, a.req(2)?, a.req(3)?);
                let t = self.tensor(g, frame, &x.0, &x.1)?;
                let axis = self.axis(frame, &ax, g.value_type(t).rank())?;
                let bound = |v: &(Val, Range<usize>)| {
                    v.0.as_dim().ok_or_else(|| {
                        Diagnostic::at(
                            &self.loc(frame, &v.1),
                            format!("a slice bound is a size (an integer or T + k), found {}", v.0.kind()),
                        )
                    })
                };
                let (start, end) = (bound(&start)?, bound(&end)?);
                self.emit(g, frame, Op::Slice { axis, start, end }, &[t], origin, span)
            }
            "concat" => {
                let (xs, ax) = (a.req(0)?, a.req(1)?);
                let Val::List(items) = &xs.0 else {
                    return Err(Diagnostic::at(
                        &self.loc(frame, &xs.1),
                        format!("`concat` takes a list of tensors, found {}", xs.0.kind()),
                    ));
                };
                let ts = items.iter().map(|i| self.tensor(g, frame, i, &xs.1)).collect::<Result<Vec<_>, _>>()?;
                let Some(first) = ts.first() else {
                    return Err(Diagnostic::at(&self.loc(frame, &xs.1), "`concat` of an empty list"));
                };
                let axis = self.axis(frame, &ax, g.value_type(*first).rank())?;
                self.emit(g, frame, Op::Concat { axis }, &ts, origin, span)
            }
            "unfold" => {
                let (x, ax, size) = (a.req(0)?, a.req(1)?, a.req(2)?);
                let t = self.tensor(g, frame, &x.0, &x.1)?;
                let axis = self.axis(frame, &ax, g.value_type(t).rank())?;
                let size = usize::try_from(self.int(frame, &size, "a window size")?).unwrap_or(0);
                self.emit(g, frame, Op::Unfold { axis, size }, &[t], origin, span)
            }
            "gather" => {
                let (table, idx) = (a.req(0)?, a.req(1)?);
                let (table, idx) = (self.tensor(g, frame, &table.0, &table.1)?, self.tensor(g, frame, &idx.0, &idx.1)?);
                self.emit(g, frame, Op::Gather, &[table, idx], origin, span)
            }
            "dim" | "rank" => {
                let x = a.req(0)?;
                let t = self.tensor(g, frame, &x.0, &x.1)?;
                let shape = g.value_type(t).shape.clone();
                if name == "rank" {
                    return Ok(Val::Int(shape.rank() as i64));
                }
                let axis = self.axis(frame, &a.req(1)?, shape.rank())?;
                Ok(match shape.dims()[axis] {
                    Dim::Fixed(n) => Val::Int(n as i64),
                    d => Val::Dim(d),
                })
            }
            other => {
                Err(Diagnostic::at(&self.loc(frame, span), format!("internal: primitive `{other}` has no lowering")))
            }
        }
    }

    fn bool_arg(&self, frame: &Frame<'s>, v: &(Val, Range<usize>)) -> Result<bool, Diagnostic> {
        match v.0 {
            Val::Bool(b) => Ok(b),
            ref other => Err(Diagnostic::at(
                &self.loc(frame, &v.1),
                format!("expected `true` or `false`, found {}", other.kind()),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        op: ReduceOp,
        x: (Val, Range<usize>),
        axis: &(Val, Range<usize>),
        keepdim: bool,
        mean: bool,
        span: &Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let t = self.tensor(g, frame, &x.0, &x.1)?;
        let shape = g.value_type(t).shape.clone();
        let ax = self.axis(frame, axis, shape.rank())?;
        let origin = self.origin(frame, span);
        let mut r = self.emit(g, frame, Op::Reduce { op, axis: ax }, &[t], origin.clone(), span)?;
        if mean {
            let Dim::Fixed(n) = shape.dims()[ax] else {
                return Err(Diagnostic::at(
                    &self.loc(frame, span),
                    "`mean` over the sequence axis is not supported (its length varies per call)",
                ));
            };
            r = self.binary(g, frame, BinOp::Div, r, Val::Int(n as i64), span)?;
        }
        if !keepdim {
            let Val::Tensor(v) = r else { unreachable!("reductions give tensors") };
            let mut dims = shape.0.clone();
            dims.remove(ax);
            r = self.emit(g, frame, Op::Reshape(Shape(dims)), &[v], origin, span)?;
        }
        Ok(r)
    }
}
