//! Lowering: evaluates a spec against a checkpoint's `config.json` and builds the IR graph.
//!
//! Hyperparameters, the layer index and sizes are compile-time values and fold away; every
//! tensor operation becomes a primitive node. Prelude and spec functions are inlined; blocks are
//! unrolled once per layer; `scan` builds a body graph from a step. Bindings are evaluated on
//! demand (so `if` branches not taken, and weights that exist only on some layers, are never
//! touched) and then all of them, so that an error in an unused binding is still reported.
//! The resulting graph may contain dead nodes from unused bindings; the `dead-code` pass removes
//! them. Every node records the spec location it came from.

pub mod adapter;
mod builtins;
mod scope;
mod structure;
mod validate;
mod value;

use crate::expr::{BinOp, Expr, ExprKind, UnaryOp};
use crate::source::{suggest, Diagnostic, Location, SourceFile};
use crate::spec::{parse_spec, BlockDecl, FunctionDecl, SpecFile, StepDecl};
use kiln_ir::{Graph, Op, Origin, Value};
use scope::{Frame, Globals};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
pub use value::Val;

/// Options for [`compile`].
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Overrides for hyperparameters by spec name, applied on top of `config.json`.
    pub overrides: Vec<(String, serde_json::Value)>,
}

/// Maximum depth of nested function calls (guards against recursion).
const MAX_CALL_DEPTH: usize = 64;

fn prelude() -> Result<&'static SpecFile, Diagnostic> {
    static PRELUDE: OnceLock<Result<SpecFile, Diagnostic>> = OnceLock::new();
    PRELUDE.get_or_init(|| parse_spec(SourceFile::new("prelude.toml", crate::PRELUDE))).as_ref().map_err(Clone::clone)
}

/// Compiles `spec` for the hyperparameters in `config` (a checkpoint's `config.json`).
pub fn compile(spec: &SpecFile, config: &serde_json::Value, options: &CompileOptions) -> Result<Graph, Diagnostic> {
    let prelude = prelude()?;
    validate::validate(spec, prelude)?;
    let mut lowerer = Lowerer::new(spec, prelude, config, options)?;
    lowerer.lower_graph()
}

/// Where a function is defined.
struct FunctionRef<'s> {
    decl: &'s FunctionDecl,
    file: &'s Arc<SourceFile>,
}

pub(crate) struct Lowerer<'s> {
    spec: &'s SpecFile,
    functions: HashMap<&'s str, FunctionRef<'s>>,
    steps: HashMap<&'s str, &'s StepDecl>,
    blocks: HashMap<&'s str, &'s BlockDecl>,
    globals: Globals<'s>,
    /// Weight inputs already created, by checkpoint tensor name, with their declaring location.
    weight_inputs: HashMap<String, (Value, Location)>,
    depth: usize,
}

impl<'s> Lowerer<'s> {
    fn new(
        spec: &'s SpecFile,
        prelude: &'s SpecFile,
        config: &'s serde_json::Value,
        options: &'s CompileOptions,
    ) -> Result<Lowerer<'s>, Diagnostic> {
        let mut functions = HashMap::new();
        for (file, decl) in
            prelude.functions.iter().map(|f| (&prelude.file, f)).chain(spec.functions.iter().map(|f| (&spec.file, f)))
        {
            if builtins::is_builtin(&decl.name.name) {
                return Err(Diagnostic::at(
                    &decl.name.loc,
                    format!("`{}` is a primitive and cannot be redefined", decl.name.name),
                ));
            }
            // A spec function may replace a prelude function of the same name.
            functions.insert(decl.name.name.as_str(), FunctionRef { decl, file });
        }
        let mut steps = HashMap::new();
        for s in &spec.steps {
            steps.insert(s.name.name.as_str(), s);
        }
        let mut blocks = HashMap::new();
        for b in &spec.blocks {
            blocks.insert(b.name.name.as_str(), b);
        }
        let globals = Globals::new(spec, config, options)?;
        Ok(Lowerer { spec, functions, steps, blocks, globals, weight_inputs: HashMap::new(), depth: 0 })
    }

    fn lower_graph(&mut self) -> Result<Graph, Diagnostic> {
        let spec = self.spec;
        let name = spec.model.as_ref().map_or("model", |m| m.name.as_str());
        let decl = spec.graph.as_ref().ok_or_else(|| {
            Diagnostic::new(format!("{} has no [graph] section", spec.file.name), None)
                .help("the [graph] section names the outputs, e.g. `outputs = [\"logits\"]`, and computes them")
        })?;
        if decl.outputs.is_empty() {
            return Err(Diagnostic::at(&decl.loc, "[graph] declares no outputs").help("add `outputs = [\"logits\"]`"));
        }
        let mut g = Graph::new(name);
        let tokens = g.add_input(
            kiln_ir::Param { role: kiln_ir::ParamRole::Tokens, name: "tokens".into() },
            kiln_ir::Type::new(kiln_ir::DType::I64, kiln_ir::Shape::new([kiln_ir::Dim::T])),
            None,
        );
        let mut frame = Frame::graph(&spec.file, &decl.bindings);
        frame.vars.insert("tokens".into(), Val::Tensor(tokens));
        for out in &decl.outputs {
            let v = self.lookup(&mut g, &frame, &out.name, &out.loc)?;
            let Val::Tensor(v) = v else {
                return Err(Diagnostic::at(&out.loc, format!("output `{}` is {}, not a tensor", out.name, v.kind())));
            };
            g.add_output(out.name.clone(), v, kiln_ir::OutputRole::Result);
        }
        self.eval_all(&mut g, &frame)?;
        Ok(g)
    }

    /// Evaluates every binding of a frame (for errors in unused ones).
    fn eval_all(&mut self, g: &mut Graph, frame: &Frame<'s>) -> Result<(), Diagnostic> {
        for b in frame.bindings.values() {
            self.lookup(g, frame, &b.name.name, &b.name.loc)?;
        }
        Ok(())
    }

    fn origin(&self, frame: &Frame<'s>, span: &std::ops::Range<usize>) -> Option<Origin> {
        Some(Location::new(frame.file, span.clone()).origin(frame.context.clone()))
    }

    fn loc(&self, frame: &Frame<'s>, span: &std::ops::Range<usize>) -> Location {
        Location::new(frame.file, span.clone())
    }

    /// Evaluates an expression.
    pub(crate) fn eval(&mut self, g: &mut Graph, frame: &Frame<'s>, e: &Expr) -> Result<Val, Diagnostic> {
        match &e.kind {
            ExprKind::Int(n) => Ok(Val::Int(*n)),
            ExprKind::Float(x) => Ok(Val::Float(*x)),
            ExprKind::Bool(b) => Ok(Val::Bool(*b)),
            ExprKind::Name(parts) => {
                let loc = self.loc(frame, &e.span);
                let mut v = self.lookup(g, frame, &parts[0], &loc)?;
                for field in &parts[1..] {
                    v = match v {
                        Val::Record(r) => r.get(field).cloned().ok_or_else(|| {
                            let names: Vec<&str> = r.keys().map(String::as_str).collect();
                            let mut d = Diagnostic::at(&loc, format!("`{}` has no field `{field}`", parts[0]))
                                .label("unknown field")
                                .note(format!("its fields are {}", names.join(", ")));
                            if let Some(s) = suggest(field, names.iter().copied()) {
                                d = d.help(format!("did you mean `{s}`?"));
                            }
                            d
                        })?,
                        other => {
                            return Err(Diagnostic::at(
                                &loc,
                                format!("`{}` is {}, which has no fields", parts[0], other.kind()),
                            ))
                        }
                    };
                }
                Ok(v)
            }
            ExprKind::List(items) => {
                let vals = items.iter().map(|i| self.eval(g, frame, i)).collect::<Result<_, _>>()?;
                Ok(Val::List(vals))
            }
            ExprKind::Index(list, index) => {
                let l = self.eval(g, frame, list)?;
                let i = self.eval(g, frame, index)?;
                match (&l, &i) {
                    (Val::List(items), Val::Int(n)) => {
                        let k = if *n < 0 { items.len() as i64 + n } else { *n };
                        usize::try_from(k).ok().and_then(|k| items.get(k)).cloned().ok_or_else(|| {
                            Diagnostic::at(
                                &self.loc(frame, &index.span),
                                format!("index {n} is out of range for a list of {}", items.len()),
                            )
                        })
                    }
                    _ => Err(Diagnostic::at(
                        &self.loc(frame, &e.span),
                        format!("cannot index {} with {}", l.kind(), i.kind()),
                    )
                    .help("only lists (such as a list hyperparameter) can be indexed")),
                }
            }
            ExprKind::Unary(op, x) => {
                let v = self.eval(g, frame, x)?;
                self.unary(g, frame, *op, v, &e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let va = self.eval(g, frame, a)?;
                if matches!(op, BinOp::And | BinOp::Or) {
                    // Short-circuit, so `i > 0 and x[i - 1]`-style conditions work.
                    match (&va, op) {
                        (Val::Bool(false), BinOp::And) => return Ok(Val::Bool(false)),
                        (Val::Bool(true), BinOp::Or) => return Ok(Val::Bool(true)),
                        _ => {}
                    }
                }
                let vb = self.eval(g, frame, b)?;
                self.binary(g, frame, *op, va, vb, &e.span)
            }
            ExprKind::If { cond, then, other } => match self.eval(g, frame, cond)? {
                Val::Bool(true) => self.eval(g, frame, then),
                Val::Bool(false) => self.eval(g, frame, other),
                v => Err(Diagnostic::at(
                    &self.loc(frame, &cond.span),
                    format!("the condition of `if` is {}, not a boolean known when compiling", v.kind()),
                )
                .help("`if` chooses between graphs at compile time; use `where(cond, a, b)` to choose per element")),
            },
            ExprKind::Call { callee, callee_span, args, kwargs } => {
                self.call(g, frame, callee, callee_span, args, kwargs, &e.span)
            }
        }
    }

    fn unary(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        op: UnaryOp,
        v: Val,
        span: &std::ops::Range<usize>,
    ) -> Result<Val, Diagnostic> {
        match (op, v) {
            (UnaryOp::Neg, Val::Int(n)) => Ok(Val::Int(-n)),
            (UnaryOp::Neg, Val::Float(x)) => Ok(Val::Float(-x)),
            (UnaryOp::Neg, Val::Tensor(t)) => {
                let origin = self.origin(frame, span);
                self.emit(g, frame, Op::Unary(kiln_ir::UnaryOp::Neg), &[t], origin, span)
            }
            (UnaryOp::Not, Val::Bool(b)) => Ok(Val::Bool(!b)),
            (op, v) => Err(Diagnostic::at(
                &self.loc(frame, span),
                format!("`{}` does not apply to {}", if op == UnaryOp::Neg { "-" } else { "not" }, v.kind()),
            )),
        }
    }

    /// Adds a node, reporting a type error at the expression that produced it.
    pub(crate) fn emit(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        op: Op,
        operands: &[Value],
        origin: Option<Origin>,
        span: &std::ops::Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let mnemonic = op.mnemonic();
        g.add1(op, operands, origin).map(Val::Tensor).map_err(|e| {
            let types: Vec<String> = operands.iter().map(|v| g.value_type(*v).to_string()).collect();
            Diagnostic::at(&self.loc(frame, span), format!("{e}"))
                .label(format!("this `{mnemonic}` gets {}", types.join(", ")))
        })
    }

    /// Calls a function, primitive, block or scan.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        callee: &str,
        callee_span: &std::ops::Range<usize>,
        args: &[Expr],
        kwargs: &[(String, std::ops::Range<usize>, Expr)],
        span: &std::ops::Range<usize>,
    ) -> Result<Val, Diagnostic> {
        if callee == "scan" {
            return self.scan(g, frame, args, kwargs, span);
        }
        if let Some(&block) = self.blocks.get(callee) {
            return self.call_block(g, frame, block, args, kwargs, span);
        }
        if let Some(f) = self.functions.get(callee) {
            let (decl, file) = (f.decl, f.file);
            return self.call_function(g, frame, decl, file, args, kwargs, span);
        }
        if builtins::is_builtin(callee) {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push((self.eval(g, frame, a)?, a.span.clone()));
            }
            let mut kw = Vec::with_capacity(kwargs.len());
            for (k, ks, v) in kwargs {
                kw.push((k.as_str(), ks.clone(), self.eval(g, frame, v)?));
            }
            return self.builtin(g, frame, callee, vals, kw, span);
        }
        let loc = self.loc(frame, callee_span);
        let mut names: Vec<&str> = builtins::NAMES.to_vec();
        names.extend(self.functions.keys().copied());
        names.extend(self.blocks.keys().copied());
        let mut d = Diagnostic::at(&loc, format!("unknown function `{callee}`"))
            .label("not a primitive, prelude or spec function");
        if let Some(s) = suggest(callee, names) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn call_function(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        decl: &'s FunctionDecl,
        file: &'s Arc<SourceFile>,
        args: &[Expr],
        kwargs: &[(String, std::ops::Range<usize>, Expr)],
        span: &std::ops::Range<usize>,
    ) -> Result<Val, Diagnostic> {
        let call_loc = self.loc(frame, span);
        let name = &decl.name.name;
        if self.depth >= MAX_CALL_DEPTH {
            return Err(Diagnostic::at(
                &call_loc,
                format!("calls nest deeper than {MAX_CALL_DEPTH} (is `{name}` recursive?)"),
            ));
        }
        let params: Vec<&str> = decl.params.iter().map(|p| p.name.as_str()).collect();
        if args.len() > params.len() {
            return Err(Diagnostic::at(
                &call_loc,
                format!("`{name}` takes {} argument(s), got {}", params.len(), args.len()),
            )
            .note(format!("`{name}({})` is defined at {}", params.join(", "), decl.name.loc)));
        }
        let mut inner = Frame::function(file, &decl.bindings, frame, name);
        for (p, a) in params.iter().zip(args) {
            let v = self.eval(g, frame, a)?;
            inner.vars.insert((*p).to_string(), v);
        }
        for (k, ks, v) in kwargs {
            if !params.contains(&k.as_str()) {
                return Err(Diagnostic::at(&self.loc(frame, ks), format!("`{name}` has no parameter `{k}`"))
                    .note(format!("its parameters are {}", params.join(", "))));
            }
            if inner.vars.contains_key(k) {
                return Err(Diagnostic::at(&self.loc(frame, ks), format!("argument `{k}` is given twice")));
            }
            let val = self.eval(g, frame, v)?;
            inner.vars.insert(k.clone(), val);
        }
        if let Some(missing) = params.iter().find(|p| !inner.vars.contains_key(**p)) {
            return Err(Diagnostic::at(&call_loc, format!("`{name}` is missing argument `{missing}`")).note(format!(
                "`{name}({})` is defined at {}",
                params.join(", "),
                decl.name.loc
            )));
        }
        self.depth += 1;
        let result = self.lookup(g, &inner, "out", &decl.name.loc).and_then(|v| {
            self.eval_all(g, &inner)?;
            Ok(v)
        });
        self.depth -= 1;
        result.map_err(|d| relocate(d, &call_loc, name, file, frame.file))
    }
}

/// An error raised inside a function defined in another file (the prelude) is reported at the
/// call site in the caller's file, with the original location as a note.
fn relocate(
    mut d: Diagnostic,
    call: &Location,
    name: &str,
    callee_file: &Arc<SourceFile>,
    caller_file: &Arc<SourceFile>,
) -> Diagnostic {
    let inside_callee = d.location.as_ref().is_some_and(|l| Arc::ptr_eq(&l.file, callee_file));
    if Arc::ptr_eq(callee_file, caller_file) || !inside_callee {
        let note = format!("note: in `{name}`, called at {call}");
        if inside_callee && !d.notes.contains(&note) {
            d.notes.push(note);
        }
        return d;
    }
    let inner = d.location.replace(call.clone());
    if let Some(inner) = inner {
        let what = if d.label.is_empty() { String::new() } else { format!(": {}", d.label) };
        d.notes.insert(0, format!("note: raised inside `{name}` at {inner}{what}"));
    }
    d.label = format!("in this call of `{name}`");
    d
}
