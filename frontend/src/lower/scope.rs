//! Scopes: what a name means where it is written, and hyperparameters from `config.json`.
//!
//! Lexical rules, innermost first:
//! - a frame's own variables (function parameters, step arguments, a block's input, `i`,
//!   `state`, `tokens`) and its bindings (evaluated once, on first use);
//! - weights: a block sees its own and the global ones, the graph sees the global ones;
//! - hyperparameters, everywhere but in functions (functions are model-independent);
//! - `T` (the sequence length) everywhere but inside a scan step; `inf`.

use super::{Lowerer, Val};
use crate::source::{suggest, Diagnostic, Location, SourceFile};
use crate::spec::{Binding, ParamDecl, SpecFile, WeightDecl};
use kiln_ir::Graph;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Slot {
    InProgress,
    Done(Val),
}

/// What a frame can see beyond its own names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access<'s> {
    pub params: bool,
    pub global_weights: bool,
    pub block_weights: Option<&'s [WeightDecl]>,
    pub t: bool,
}

pub(crate) struct Frame<'s> {
    pub file: &'s Arc<SourceFile>,
    /// Bindings in file order, and by name.
    pub bindings: indexed::Bindings<'s>,
    memo: RefCell<HashMap<String, Slot>>,
    weight_memo: RefCell<HashMap<String, Val>>,
    pub vars: HashMap<String, Val>,
    /// Shown in node origins: the function or step the code was written in.
    pub context: Option<Arc<str>>,
    pub access: Access<'s>,
    pub layer: Option<usize>,
    /// Describes the frame in "unknown name" errors.
    pub what: &'static str,
}

pub(crate) mod indexed {
    use crate::spec::Binding;

    /// Bindings in file order with lookup by name.
    pub struct Bindings<'s>(Vec<&'s Binding>);

    impl<'s> Bindings<'s> {
        pub fn new(list: &'s [Binding]) -> Bindings<'s> {
            Bindings(list.iter().collect())
        }

        pub fn get(&self, name: &str) -> Option<&'s Binding> {
            self.0.iter().find(|b| b.name.name == name).copied()
        }

        pub fn values(&self) -> impl Iterator<Item = &'s Binding> + '_ {
            self.0.iter().copied()
        }
    }
}

impl<'s> Frame<'s> {
    fn new(file: &'s Arc<SourceFile>, bindings: &'s [Binding], access: Access<'s>, what: &'static str) -> Frame<'s> {
        Frame {
            file,
            bindings: indexed::Bindings::new(bindings),
            memo: RefCell::default(),
            weight_memo: RefCell::default(),
            vars: HashMap::new(),
            context: None,
            access,
            layer: None,
            what,
        }
    }

    pub fn graph(file: &'s Arc<SourceFile>, bindings: &'s [Binding]) -> Frame<'s> {
        Frame::new(
            file,
            bindings,
            Access { params: true, global_weights: true, block_weights: None, t: true },
            "[graph]",
        )
    }

    pub fn block(
        file: &'s Arc<SourceFile>,
        bindings: &'s [Binding],
        weights: &'s [WeightDecl],
        name: &str,
        layer: usize,
    ) -> Frame<'s> {
        let mut f = Frame::new(
            file,
            bindings,
            Access { params: true, global_weights: true, block_weights: Some(weights), t: true },
            "this block",
        );
        f.layer = Some(layer);
        f.context = Some(format!("{name} {layer}").into());
        f
    }

    pub fn step(file: &'s Arc<SourceFile>, bindings: &'s [Binding], name: &str) -> Frame<'s> {
        let mut f = Frame::new(
            file,
            bindings,
            Access { params: true, global_weights: false, block_weights: None, t: false },
            "this step",
        );
        f.context = Some(format!("step {name}").into());
        f
    }

    pub fn function(file: &'s Arc<SourceFile>, bindings: &'s [Binding], caller: &Frame<'s>, name: &str) -> Frame<'s> {
        let access = Access { params: false, global_weights: false, block_weights: None, t: caller.access.t };
        let mut f = Frame::new(file, bindings, access, "this function");
        f.context = Some(name.into());
        f
    }

    /// An adapter's rewrite of one matched product: it sees the adapter's hyperparameters, its
    /// parameters (the product's operands), the adapter weights and its bindings, but not `T`
    /// (a product may be inside a scan step).
    /// `context` names the adapter and module in node origins.
    pub fn rewrite(file: &'s Arc<SourceFile>, bindings: &'s [Binding], context: String) -> Frame<'s> {
        let access = Access { params: true, global_weights: false, block_weights: None, t: false };
        let mut f = Frame::new(file, bindings, access, "the rewrite");
        f.context = Some(context.into());
        f
    }

    /// The frame global weight declarations are evaluated in: hyperparameters and global
    /// weights (so a tied head can say `else = "emb"`).
    pub fn weights(file: &'s Arc<SourceFile>) -> Frame<'s> {
        Frame::new(file, &[], Access { params: true, global_weights: true, block_weights: None, t: false }, "[weights]")
    }

    /// A frame that sees only hyperparameters (for defaults, shapes and conditions).
    pub fn params(file: &'s Arc<SourceFile>) -> Frame<'s> {
        Frame::new(file, &[], Access { params: true, global_weights: false, block_weights: None, t: false }, "[params]")
    }
}

/// Hyperparameters: declarations, the config they are read from, and their memoized values.
pub(crate) struct Globals<'s> {
    decls: Vec<&'s ParamDecl>,
    config: &'s serde_json::Value,
    overrides: &'s [(String, serde_json::Value)],
    values: RefCell<HashMap<String, Slot>>,
    file: &'s Arc<SourceFile>,
}

impl<'s> Globals<'s> {
    pub fn new(
        spec: &'s SpecFile,
        config: &'s serde_json::Value,
        options: &'s super::CompileOptions,
    ) -> Result<Globals<'s>, Diagnostic> {
        if !config.is_object() {
            return Err(Diagnostic::new("config.json must hold a JSON object", None));
        }
        for (name, _) in &options.overrides {
            if !spec.params.iter().any(|p| &p.name.name == name) {
                let mut d = Diagnostic::new(
                    format!("cannot override `{name}`: {} has no such hyperparameter", spec.file.name),
                    None,
                );
                if let Some(s) = suggest(name, spec.params.iter().map(|p| p.name.name.as_str())) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                return Err(d);
            }
        }
        for p in &spec.params {
            if let Some(w) = spec.weights.iter().find(|w| w.name.name == p.name.name) {
                return Err(Diagnostic::at(
                    &w.name.loc,
                    format!("`{}` is both a hyperparameter and a weight", p.name.name),
                )
                .note(format!("the hyperparameter is declared at {}", p.name.loc)));
            }
        }
        Ok(Globals {
            decls: spec.params.iter().collect(),
            config,
            overrides: &options.overrides,
            values: RefCell::default(),
            file: &spec.file,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.decls.iter().map(|d| d.name.name.as_str())
    }
}

/// Converts a config.json value; `None` for `null` (use the default).
fn json_value(v: &serde_json::Value) -> Result<Option<Val>, String> {
    use serde_json::Value as J;
    Ok(Some(match v {
        J::Null => return Ok(None),
        J::Bool(b) => Val::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Val::Int(i),
            None => Val::Float(n.as_f64().ok_or("a number out of range")?),
        },
        J::Array(items) => Val::List(
            items
                .iter()
                .map(|i| json_value(i)?.ok_or_else(|| "a list holding null".to_string()))
                .collect::<Result<_, _>>()?,
        ),
        // transformers writes non-finite floats as {"__float__": "Infinity"}.
        J::Object(o) => match o.get("__float__").and_then(J::as_str) {
            Some("Infinity") => Val::Float(f64::INFINITY),
            Some("-Infinity") => Val::Float(f64::NEG_INFINITY),
            Some("NaN") => Val::Float(f64::NAN),
            _ => return Err("an object".into()),
        },
        J::String(s) => return Err(format!("the string {s:?}")),
    }))
}

impl<'s> Lowerer<'s> {
    /// The value of hyperparameter `name`, if the spec declares one.
    fn param(&mut self, g: &mut Graph, name: &str, used_at: &Location) -> Result<Option<Val>, Diagnostic> {
        let Some(decl) = self.globals.decls.iter().copied().find(|d| d.name.name == name) else {
            return Ok(None);
        };
        match self.globals.values.borrow().get(name) {
            Some(Slot::Done(v)) => return Ok(Some(v.clone())),
            Some(Slot::InProgress) => {
                return Err(
                    Diagnostic::at(used_at, format!("hyperparameter `{name}` depends on itself")).label("cycle")
                );
            }
            None => {}
        }
        self.globals.values.borrow_mut().insert(name.to_string(), Slot::InProgress);
        let from_config = match self.globals.overrides.iter().find(|(n, _)| n == name) {
            Some((_, v)) => Some(("--set", v)),
            None => decl.key.as_ref().and_then(|k| self.globals.config.get(k).map(|v| (k.as_str(), v))),
        };
        let configured = match from_config {
            Some((key, v)) => json_value(v).map_err(|what| {
                Diagnostic::at(
                    &decl.name.loc,
                    format!(
                        "config key `{key}` holds {what}, but hyperparameter `{name}` needs a number, boolean or list"
                    ),
                )
            })?,
            None => None,
        };
        let value = match (configured, &decl.default) {
            (Some(v), _) => v,
            (None, Some(default)) => {
                let file = self.globals.file;
                let frame = Frame::params(file);
                let v = self.eval(g, &frame, default)?;
                if matches!(v, Val::Tensor(_) | Val::Record(_) | Val::Dim(_)) {
                    return Err(Diagnostic::at(
                        &Location::new(file, default.span.clone()),
                        format!(
                            "hyperparameter `{name}` must be known when compiling, but its default is {}",
                            v.kind()
                        ),
                    ));
                }
                v
            }
            (None, None) => {
                let key = decl.key.as_deref().unwrap_or(name);
                return Err(Diagnostic::at(
                    &decl.name.loc,
                    format!("config.json has no `{key}`, and hyperparameter `{name}` has no default"),
                )
                .help(format!("add `\"{key}\": ...` to config.json, or a `default` to the spec")));
            }
        };
        self.globals.values.borrow_mut().insert(name.to_string(), Slot::Done(value.clone()));
        Ok(Some(value))
    }

    /// Resolves a name in `frame`.
    pub(crate) fn lookup(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        name: &str,
        used_at: &Location,
    ) -> Result<Val, Diagnostic> {
        if let Some(v) = frame.vars.get(name) {
            return Ok(v.clone());
        }
        if let Some(b) = frame.bindings.get(name) {
            return self.binding(g, frame, b, used_at);
        }
        if let Some(decls) = frame.access.block_weights {
            if let Some(w) = decls.iter().find(|w| w.name.name == name) {
                if let Some(v) = frame.weight_memo.borrow().get(name) {
                    return Ok(v.clone());
                }
                let v = self.weight(g, frame, w, used_at)?;
                frame.weight_memo.borrow_mut().insert(name.to_string(), v.clone());
                return Ok(v);
            }
        }
        if frame.access.global_weights {
            let spec = self.spec;
            if let Some(w) = spec.weights.iter().find(|w| w.name.name == name) {
                let global = Frame::weights(&spec.file);
                return self.weight(g, &global, w, used_at);
            }
        }
        if frame.access.params {
            if let Some(v) = self.param(g, name, used_at)? {
                return Ok(v);
            }
        }
        match name {
            "T" if frame.access.t => return Ok(Val::Dim(kiln_ir::Dim::T)),
            "T" if frame.what == "this step" => {
                return Err(Diagnostic::at(used_at, "`T` (the sequence length) is not defined inside a scan step")
                    .help("a step sees one time step; pass what it needs with `over` or `with`"));
            }
            "inf" => return Ok(Val::Float(f64::INFINITY)),
            _ => {}
        }
        Err(self.unknown_name(frame, name, used_at))
    }

    fn binding(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        b: &'s Binding,
        used_at: &Location,
    ) -> Result<Val, Diagnostic> {
        let name = b.name.name.as_str();
        match frame.memo.borrow().get(name) {
            Some(Slot::Done(v)) => return Ok(v.clone()),
            Some(Slot::InProgress) => {
                return Err(Diagnostic::at(used_at, format!("`{name}` depends on itself"))
                    .label("cycle")
                    .note(format!("`{name}` is defined at {}", b.name.loc)));
            }
            None => {}
        }
        frame.memo.borrow_mut().insert(name.to_string(), Slot::InProgress);
        let v = self.eval(g, frame, &b.expr)?;
        frame.memo.borrow_mut().insert(name.to_string(), Slot::Done(v.clone()));
        Ok(v)
    }

    fn unknown_name(&self, frame: &Frame<'s>, name: &str, used_at: &Location) -> Diagnostic {
        let mut visible: Vec<String> = Vec::new();
        visible.extend(frame.vars.keys().cloned());
        visible.extend(frame.bindings.values().map(|b| b.name.name.clone()));
        if let Some(ws) = frame.access.block_weights {
            visible.extend(ws.iter().map(|w| w.name.name.clone()));
        }
        if frame.access.global_weights {
            visible.extend(self.spec.weights.iter().map(|w| w.name.name.clone()));
        }
        if frame.access.params {
            visible.extend(self.globals.names().map(str::to_string));
        }
        let kind = if frame.what == "[params]" { "hyperparameter" } else { "name" };
        let mut d =
            Diagnostic::at(used_at, format!("unknown {kind} `{name}`")).label(format!("not defined in {}", frame.what));
        if let Some(s) = suggest(name, visible.iter().map(String::as_str)) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        if !frame.access.params && self.globals.names().any(|n| n == name) {
            d = d.note(format!(
                "`{name}` is a hyperparameter; functions see only their parameters, so pass it as an argument"
            ));
        }
        d
    }
}
