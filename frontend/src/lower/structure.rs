//! The structural constructs: weights, blocks repeated per layer with their carried state, and
//! `scan` over a step.

use super::scope::Frame;
use super::{Lowerer, Val};
use crate::expr::{Expr, ExprKind};
use crate::source::{suggest, Diagnostic, Location};
use crate::spec::{BlockDecl, WeightDecl};
use kiln_ir::{DType, Graph, Op, OutputRole, Param, ParamRole, Scan, Shape, Type, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

impl<'s> Lowerer<'s> {
    /// The value of a weight declaration in `frame` (which sees the layer index for block weights).
    pub(crate) fn weight(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        w: &'s WeightDecl,
        used_at: &Location,
    ) -> Result<Val, Diagnostic> {
        let file = &self.spec.file;
        let at = |span: &Range<usize>| Location::new(file, span.clone());
        if let Some(cond) = &w.when {
            match self.eval(g, frame, cond)? {
                Val::Bool(true) => {}
                Val::Bool(false) => match &w.otherwise {
                    Some(e) => return self.eval(g, frame, e),
                    None => {
                        let layer = frame.layer.map_or(String::new(), |i| format!(" on layer {i}"));
                        return Err(Diagnostic::at(
                            used_at,
                            format!("weight `{}` does not exist here{layer}", w.name.name),
                        )
                        .label("used where its `when` condition is false")
                        .note(format!(
                            "`{}` exists only when `{}` ({})",
                            w.name.name,
                            &file.text[cond.span.clone()],
                            at(&cond.span)
                        )));
                    }
                },
                other => {
                    return Err(Diagnostic::at(
                        &at(&cond.span),
                        format!("`when` must be a boolean known when compiling, found {}", other.kind()),
                    ))
                }
            }
        }
        let name = match frame.layer {
            Some(i) => w.template.replace("{i}", &i.to_string()),
            None if w.template.contains("{i}") => {
                return Err(Diagnostic::at(
                    &w.name.loc,
                    format!("global weight `{}` uses `{{i}}`, which only blocks define", w.name.name),
                ));
            }
            None => w.template.clone(),
        };
        if name.contains(['{', '}']) {
            return Err(Diagnostic::at(
                &w.name.loc,
                format!("weight name `{}` has a placeholder other than `{{i}}`", w.template),
            ));
        }
        let shape = match self.eval(g, frame, &w.shape)? {
            Val::List(items) => items
                .iter()
                .map(|v| match v {
                    Val::Int(n) if *n >= 0 => Ok(*n as usize),
                    other => Err(Diagnostic::at(
                        &at(&w.shape.span),
                        format!("a weight's shape holds non-negative integers, found {}", other.kind()),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(Diagnostic::at(
                    &at(&w.shape.span),
                    format!("a shape is a list such as `[V, H]`, found {}", other.kind()),
                ))
            }
        };
        let ty = Type::f32(Shape::fixed(&shape));
        if let Some((v, declared)) = self.weight_inputs.get(&name) {
            if *g.value_type(*v) != ty {
                return Err(Diagnostic::at(
                    &at(&w.shape.span),
                    format!("tensor `{name}` is declared as {ty} here but as {} at {declared}", g.value_type(*v)),
                ));
            }
            return Ok(Val::Tensor(*v));
        }
        let v = g.add_input(Param { role: ParamRole::Weight, name: name.clone() }, ty, Some(w.name.loc.origin(None)));
        if let Some(quantize) = w.quantize {
            g.set_quantize_hint(&name, quantize);
        }
        self.weight_inputs.insert(name, (v, w.name.loc.clone()));
        Ok(Val::Tensor(v))
    }

    /// Applies a block once per layer, threading the hidden value and creating its state.
    pub(crate) fn call_block(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        block: &'s BlockDecl,
        args: &[Expr],
        kwargs: &[(String, Range<usize>, Expr)],
        span: &Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let file = &self.spec.file;
        let name = &block.name.name;
        if args.len() != 1 || !kwargs.is_empty() {
            return Err(Diagnostic::at(
                &self.loc(frame, span),
                format!("block `{name}` takes one argument, its input `{}`", block.input.name),
            ));
        }
        if block.bindings.iter().all(|b| b.name.name != "out") {
            return Err(Diagnostic::at(&block.name.loc, format!("block `{name}` has no `out` binding"))
                .help("a block's result, the input of the next layer, is the binding named `out`"));
        }
        let mut x = self.eval(g, frame, &args[0])?;
        let repeat = match self.eval(g, &Frame::params(file), &block.repeat)? {
            Val::Int(n) if n >= 0 => n as usize,
            other => {
                return Err(Diagnostic::at(
                    &Location::new(file, block.repeat.span.clone()),
                    format!("`repeat` must be a non-negative integer, found {}", other.kind()),
                ))
            }
        };
        for i in 0..repeat {
            let mut fr = Frame::block(file, &block.bindings, &block.weights, name, i);
            fr.vars.insert(block.input.name.clone(), x);
            fr.vars.insert("i".into(), Val::Int(i as i64));
            let mut states = BTreeMap::new();
            let mut state_inputs = Vec::new();
            for s in &block.state {
                let at = Location::new(file, s.shape.span.clone());
                let shape = match self.eval(g, &fr, &s.shape)? {
                    Val::List(items) => items
                        .iter()
                        .map(|v| match v {
                            Val::Int(n) if *n >= 0 => Ok(*n as usize),
                            other => Err(Diagnostic::at(
                                &at,
                                format!("a state's shape holds non-negative integers, found {}", other.kind()),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    other => {
                        return Err(Diagnostic::at(
                            &at,
                            format!("a shape is a list such as `[H]`, found {}", other.kind()),
                        ))
                    }
                };
                let init = match self.eval(g, &fr, &s.init)? {
                    v @ (Val::Int(_) | Val::Float(_)) => v.as_f64().unwrap_or(0.0) as f32,
                    other => {
                        return Err(Diagnostic::at(
                            &Location::new(file, s.init.span.clone()),
                            format!("`init` must be a number, found {}", other.kind()),
                        ))
                    }
                };
                let state_name = format!("{}.{i}", s.name.name);
                if g.inputs().iter().any(|&n| g.param(n).is_some_and(|p| p.name == state_name)) {
                    return Err(Diagnostic::at(
                        &self.loc(frame, span),
                        format!("state `{state_name}` already exists: a block with state can be applied only once"),
                    ));
                }
                let param = Param { role: ParamRole::State { init }, name: state_name.clone() };
                let v = g.add_input(param, Type::f32(Shape::fixed(&shape)), Some(s.name.loc.origin(None)));
                states.insert(s.name.name.clone(), Val::Tensor(v));
                state_inputs.push((s, state_name, v));
            }
            fr.vars.insert("state".into(), Val::Record(Rc::new(states)));
            let out = self.lookup(g, &fr, "out", &block.name.loc)?;
            for (s, state_name, input) in state_inputs {
                let at = Location::new(file, s.next.span.clone());
                let next = match self.eval(g, &fr, &s.next)? {
                    Val::Tensor(v) => v,
                    Val::Int(_) | Val::Float(_) => {
                        return Err(Diagnostic::at(
                            &at,
                            format!(
                                "the next value of state `{}` is a number; it must be a tensor of type {}",
                                s.name.name,
                                g.value_type(input)
                            ),
                        ));
                    }
                    other => {
                        return Err(Diagnostic::at(
                            &at,
                            format!("the next value of state `{}` is {}, not a tensor", s.name.name, other.kind()),
                        ))
                    }
                };
                if g.value_type(next) != g.value_type(input) {
                    return Err(Diagnostic::at(
                        &at,
                        format!(
                            "the next value of state `{}` has type {} but the state is {}",
                            s.name.name,
                            g.value_type(next),
                            g.value_type(input)
                        ),
                    )
                    .label(format!("on layer {i}")));
                }
                g.add_output(state_name, next, OutputRole::State);
            }
            self.eval_all(g, &fr)?;
            x = out;
        }
        Ok(x)
    }

    /// `scan(step, over = [...], carry = [...], with = [...], reverse = false)`.
    pub(crate) fn scan(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        args: &[Expr],
        kwargs: &[(String, Range<usize>, Expr)],
        span: &Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let loc = self.loc(frame, span);
        let usage = "write `scan(step, over = [xs...], carry = [initial...], with = [constants...])`";
        let step = match args {
            [Expr { kind: ExprKind::Name(parts), span: s }] if parts.len() == 1 => {
                let name = parts[0].as_str();
                *self.steps.get(name).ok_or_else(|| {
                    let mut d = Diagnostic::at(&self.loc(frame, s), format!("unknown step `{name}`"))
                        .label("not a [steps] table");
                    if let Some(sug) = suggest(name, self.steps.keys().copied()) {
                        d = d.help(format!("did you mean `{sug}`?"));
                    }
                    d
                })?
            }
            _ => {
                return Err(
                    Diagnostic::at(&loc, "`scan` takes the name of a step as its only positional argument").help(usage)
                )
            }
        };
        let mut lists: BTreeMap<&str, (Vec<Val>, Range<usize>)> = BTreeMap::new();
        let mut reverse = false;
        for (k, ks, e) in kwargs {
            let v = self.eval(g, frame, e)?;
            match (k.as_str(), v) {
                ("reverse", Val::Bool(b)) => reverse = b,
                ("over" | "carry" | "with", Val::List(items)) => {
                    lists.insert(k.as_str(), (items, e.span.clone()));
                }
                ("over" | "carry" | "with" | "reverse", v) => {
                    return Err(Diagnostic::at(
                        &self.loc(frame, &e.span),
                        format!(
                            "`{k}` of `scan` must be {}, found {}",
                            if k == "reverse" { "a boolean" } else { "a list" },
                            v.kind()
                        ),
                    ));
                }
                _ => {
                    return Err(
                        Diagnostic::at(&self.loc(frame, ks), format!("`scan` has no argument `{k}`")).help(usage)
                    )
                }
            }
        }
        let step_name = &step.name.name;
        let mut take = |key: &str, names: &[crate::spec::Ident]| -> Result<Vec<Val>, Diagnostic> {
            let (vals, s) = lists.remove(key).unwrap_or((Vec::new(), span.clone()));
            if vals.len() != names.len() {
                let expected: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
                return Err(Diagnostic::at(
                    &self.loc(frame, &s),
                    format!(
                        "step `{step_name}` takes {} value(s) in `{key}` ({}), got {}",
                        names.len(),
                        expected.join(", "),
                        vals.len()
                    ),
                )
                .note(format!("step `{step_name}` is defined at {}", step.name.loc)));
            }
            Ok(vals)
        };
        let carries = take("carry", &step.carry)?;
        let sequences = take("over", &step.over)?;
        let constants = take("with", &step.with)?;

        let file = &self.spec.file;
        let mut body = Graph::new(step_name.clone());
        let mut inner = Frame::step(file, &step.bindings, step_name);
        let mut operands: Vec<Value> = Vec::new();
        let mut steps_len = None;
        let groups =
            [(&carries, &step.carry, "carry"), (&sequences, &step.over, "over"), (&constants, &step.with, "with")];
        let mut counts = [0usize; 3];
        for (gi, (vals, names, key)) in groups.into_iter().enumerate() {
            for (v, n) in vals.iter().zip(names.iter()) {
                if key == "with" && matches!(v, Val::Int(_) | Val::Float(_) | Val::Bool(_) | Val::List(_)) {
                    inner.vars.insert(n.name.clone(), v.clone());
                    continue;
                }
                let Val::Tensor(t) = v else {
                    return Err(Diagnostic::at(
                        &loc,
                        format!("`{key}` value for `{}` is {}, not a tensor", n.name, v.kind()),
                    ));
                };
                let mut ty = g.value_type(*t).clone();
                if key == "over" {
                    let Some(&len) = ty.shape.dims().first() else {
                        return Err(Diagnostic::at(
                            &loc,
                            format!("`over` value for `{}` is a scalar; a sequence has a leading time axis", n.name),
                        ));
                    };
                    if let Some(prev) = steps_len.replace(len) {
                        if prev != len {
                            return Err(Diagnostic::at(
                                &loc,
                                format!(
                                    "sequences of step `{step_name}` differ in length: {prev} and {len} (for `{}`)",
                                    n.name
                                ),
                            ));
                        }
                    }
                    ty = Type::new(ty.dtype, Shape::new(ty.shape.dims()[1..].iter().copied()));
                }
                let index = operands.len();
                let arg = body.add_input(
                    Param { role: ParamRole::Argument { index }, name: n.name.clone() },
                    ty,
                    Some(n.loc.origin(None)),
                );
                inner.vars.insert(n.name.clone(), Val::Tensor(arg));
                operands.push(*t);
                counts[gi] += 1;
            }
        }
        for b in &step.bindings {
            if step.carry.iter().chain(&step.over).chain(&step.with).any(|a| a.name == b.name.name) {
                return Err(Diagnostic::at(
                    &b.name.loc,
                    format!("`{}` is already an argument of step `{step_name}`", b.name.name),
                ));
            }
        }
        self.depth += 1;
        let result = self.scan_body(&mut body, &inner, step);
        self.depth -= 1;
        result?;
        let scan = Scan { body, carries: counts[0], sequences: counts[1], constants: counts[2], reverse };
        let origin = self.origin(frame, span);
        let node =
            g.add(Op::Scan(Box::new(scan)), &operands, origin).map_err(|e| Diagnostic::at(&loc, e.to_string()))?;
        let mut record = BTreeMap::new();
        for (k, n) in step.carry.iter().chain(&step.emit).enumerate() {
            record.insert(n.name.clone(), Val::Tensor(Value::new(node, k as u16)));
        }
        Ok(Val::Record(Rc::new(record)))
    }

    fn scan_body(
        &mut self,
        body: &mut Graph,
        inner: &Frame<'s>,
        step: &'s crate::spec::StepDecl,
    ) -> Result<(), Diagnostic> {
        let file = &self.spec.file;
        let step_name = &step.name.name;
        for c in &step.carry {
            let Some(b) = step.next.iter().find(|b| b.name.name == c.name) else {
                return Err(Diagnostic::at(
                    &c.loc,
                    format!("step `{step_name}` does not say how `{}` evolves", c.name),
                )
                .help(format!("add `{} = \"...\"` to [steps.{step_name}.next]", c.name)));
            };
            let at = Location::new(file, b.expr.span.clone());
            let v = self.eval(body, inner, &b.expr)?;
            let old = match inner.vars.get(&c.name) {
                Some(Val::Tensor(t)) => body.value_type(*t).clone(),
                _ => Type::new(DType::F32, Shape::scalar()),
            };
            let Val::Tensor(v) = v else {
                return Err(Diagnostic::at(
                    &at,
                    format!("the next `{}` is {}, not a tensor of type {old}", c.name, v.kind()),
                ));
            };
            if *body.value_type(v) != old {
                return Err(Diagnostic::at(
                    &at,
                    format!("the next `{}` has type {} but the carry is {old}", c.name, body.value_type(v)),
                )
                .label("type changes between steps"));
            }
            body.add_output(c.name.clone(), v, OutputRole::Result);
        }
        if let Some(b) = step.next.iter().find(|b| !step.carry.iter().any(|c| c.name == b.name.name)) {
            return Err(Diagnostic::at(
                &b.name.loc,
                format!("`{}` in [steps.{step_name}.next] is not a carry of the step", b.name.name),
            ));
        }
        for e in &step.emit {
            match self.lookup(body, inner, &e.name, &e.loc)? {
                Val::Tensor(v) => body.add_output(e.name.clone(), v, OutputRole::Result),
                other => {
                    return Err(Diagnostic::at(
                        &e.loc,
                        format!("emitted `{}` is {}, not a tensor", e.name, other.kind()),
                    ))
                }
            }
        }
        self.eval_all(body, inner)
    }
}
