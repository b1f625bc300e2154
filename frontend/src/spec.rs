//! The spec file format: TOML tables parsed into typed declarations that keep their locations.
//!
//! ```toml
//! [model]                      # name, model_type (matched against config.json), description
//! [params]                     # hyperparameters: { key = "config_key", default = ... } or "expr"
//! [weights]                    # global tensors: { name = "hf.name", shape = "[V, H]", when, else }
//! [blocks.NAME]                # a block repeated `repeat` times; `input` names the hidden value
//! [blocks.NAME.weights]        # per-layer tensors; `{i}` in a name is the layer index
//! [blocks.NAME.state]          # carried state: { shape, init, next }
//! [steps.NAME]                 # a scan body: over / carry / with / emit, bindings, [.next]
//! [functions.NAME]             # a function: params, bindings, result `out`
//! [graph]                      # top level: outputs, bindings
//! ```
//!
//! Everything that is not a reserved key in a block, step, function or graph table is a binding
//! `name = "expression"`. Bindings are order-free: each name is defined once and evaluated on
//! demand. This module only checks structure; names and shapes are checked during lowering.

use crate::expr::{parse_expr, Expr, ExprKind};
use crate::source::{suggest, Diagnostic, Location, SourceFile};
use std::sync::Arc;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A parsed spec file (a model, or the prelude, which holds only functions).
#[derive(Debug)]
pub struct SpecFile {
    pub file: Arc<SourceFile>,
    pub model: Option<ModelInfo>,
    pub params: Vec<ParamDecl>,
    pub weights: Vec<WeightDecl>,
    pub blocks: Vec<BlockDecl>,
    pub steps: Vec<StepDecl>,
    pub functions: Vec<FunctionDecl>,
    pub graph: Option<GraphDecl>,
}

#[derive(Debug)]
pub struct ModelInfo {
    pub name: String,
    pub model_type: Option<String>,
    pub description: Option<String>,
}

/// A name as written in the spec, with its location.
#[derive(Clone, Debug)]
pub struct Ident {
    pub name: String,
    pub loc: Location,
}

/// `name = "expression"`.
#[derive(Clone, Debug)]
pub struct Binding {
    pub name: Ident,
    pub expr: Expr,
}

#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: Ident,
    /// The config.json key it is read from; `None` for a derived value.
    pub key: Option<String>,
    /// Default (or the value itself when `key` is `None`); `None` means required.
    pub default: Option<Expr>,
}

#[derive(Clone, Debug)]
pub struct WeightDecl {
    pub name: Ident,
    /// Checkpoint tensor name; `{i}` is replaced by the layer index.
    pub template: String,
    pub shape: Expr,
    /// The weight exists only where this holds.
    pub when: Option<Expr>,
    /// What the name means where it does not exist (e.g. a tied head is the embedding).
    pub otherwise: Option<Expr>,
    /// `quantize = true | false`: overrides the quantize pass's policy for this weight.
    pub quantize: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct StateDecl {
    pub name: Ident,
    pub shape: Expr,
    pub init: Expr,
    pub next: Expr,
}

#[derive(Clone, Debug)]
pub struct BlockDecl {
    pub name: Ident,
    pub repeat: Expr,
    pub input: Ident,
    pub weights: Vec<WeightDecl>,
    pub state: Vec<StateDecl>,
    pub bindings: Vec<Binding>,
}

#[derive(Clone, Debug)]
pub struct StepDecl {
    pub name: Ident,
    pub over: Vec<Ident>,
    pub carry: Vec<Ident>,
    pub with: Vec<Ident>,
    pub emit: Vec<Ident>,
    pub bindings: Vec<Binding>,
    pub next: Vec<Binding>,
}

#[derive(Clone, Debug)]
pub struct FunctionDecl {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub bindings: Vec<Binding>,
}

#[derive(Clone, Debug)]
pub struct GraphDecl {
    pub loc: Location,
    pub outputs: Vec<Ident>,
    pub bindings: Vec<Binding>,
}

pub(crate) type Entry<'a, 'i> = (&'a Spanned<std::borrow::Cow<'i, str>>, &'a Spanned<DeValue<'i>>);

/// Reads TOML values of one file into spec declarations (shared with the adapter format).
pub(crate) struct Reader {
    pub(crate) file: Arc<SourceFile>,
}

/// Parses a spec file. Errors name the file, line and column.
pub fn parse_spec(file: Arc<SourceFile>) -> Result<SpecFile, Diagnostic> {
    let doc = DeTable::parse(&file.text).map_err(|e| {
        let loc = e.span().map(|s| Location::new(&file, s));
        Diagnostic::new(format!("invalid TOML: {}", e.message().trim_end()), loc).label("here")
    })?;
    let r = Reader { file: file.clone() };
    let mut spec = SpecFile {
        file: file.clone(),
        model: None,
        params: Vec::new(),
        weights: Vec::new(),
        blocks: Vec::new(),
        steps: Vec::new(),
        functions: Vec::new(),
        graph: None,
    };
    for (key, value) in sorted(doc.get_ref()) {
        let table = r.table(key, value)?;
        match key.get_ref().as_ref() {
            "model" => spec.model = Some(r.model(table)?),
            "params" => {
                for (k, v) in sorted(table) {
                    spec.params.push(r.param(k, v)?);
                }
            }
            "weights" => spec.weights = r.weights(table)?,
            "blocks" => {
                for (k, v) in sorted(table) {
                    spec.blocks.push(r.block(k, v)?);
                }
            }
            "steps" => {
                for (k, v) in sorted(table) {
                    spec.steps.push(r.step(k, v)?);
                }
            }
            "functions" => {
                for (k, v) in sorted(table) {
                    spec.functions.push(r.function(k, v)?);
                }
            }
            "graph" => {
                let (outputs, bindings) = r.bindings(table, &["outputs", "doc"], |name, v| match name {
                    "outputs" => r.ident_list(v).map(Some),
                    _ => Ok(None),
                })?;
                let outputs = outputs.into_iter().next().unwrap_or_default();
                spec.graph = Some(GraphDecl { loc: r.loc(key.span()), outputs, bindings });
            }
            other => {
                let known = ["model", "params", "weights", "blocks", "steps", "functions", "graph"];
                let mut d = Diagnostic::at(&r.loc(key.span()), format!("unknown section `[{other}]`"))
                    .label("not a spec section");
                if let Some(s) = suggest(other, known) {
                    d = d.help(format!("did you mean `[{s}]`?"));
                }
                return Err(d.note(format!("the sections are {}", known.map(|k| format!("[{k}]")).join(", "))));
            }
        }
    }
    Ok(spec)
}

/// Table entries in file order.
pub(crate) fn sorted<'a, 'i>(t: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

impl Reader {
    pub(crate) fn loc(&self, span: std::ops::Range<usize>) -> Location {
        Location::new(&self.file, span)
    }

    pub(crate) fn ident(&self, key: &Spanned<std::borrow::Cow<'_, str>>) -> Result<Ident, Diagnostic> {
        let name = key.get_ref().to_string();
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        const KEYWORDS: [&str; 8] = ["if", "then", "else", "and", "or", "not", "true", "false"];
        if KEYWORDS.contains(&name.as_str()) {
            return Err(Diagnostic::at(
                &self.loc(key.span()),
                format!("`{name}` is a keyword and cannot name anything"),
            ));
        }
        if !ok {
            return Err(Diagnostic::at(&self.loc(key.span()), format!("`{name}` is not a valid name"))
                .label("names are letters, digits and `_`, not starting with a digit"));
        }
        Ok(Ident { name, loc: self.loc(key.span()) })
    }

    pub(crate) fn table<'a, 'i>(
        &self,
        key: &Spanned<std::borrow::Cow<'i, str>>,
        v: &'a Spanned<DeValue<'i>>,
    ) -> Result<&'a DeTable<'i>, Diagnostic> {
        v.get_ref().as_table().ok_or_else(|| {
            Diagnostic::at(&self.loc(v.span()), format!("`{}` must be a table", key.get_ref()))
                .label(format!("found {}", v.get_ref().type_str()))
        })
    }

    pub(crate) fn string(&self, v: &Spanned<DeValue<'_>>, what: &str) -> Result<String, Diagnostic> {
        v.get_ref().as_str().map(str::to_string).ok_or_else(|| {
            Diagnostic::at(&self.loc(v.span()), format!("{what} must be a string"))
                .label(format!("found {}", v.get_ref().type_str()))
        })
    }

    /// Parses a TOML value as an expression: strings hold expression text, numbers and booleans
    /// are literals, arrays are lists.
    pub(crate) fn expr(&self, v: &Spanned<DeValue<'_>>) -> Result<Expr, Diagnostic> {
        let span = v.span();
        let lit = |kind| Ok(Expr { kind, span: span.clone() });
        match v.get_ref() {
            DeValue::String(s) => {
                let base = self.content_start(span.clone(), s);
                parse_expr(s, base).map_err(|e| {
                    Diagnostic::at(&self.loc(e.span), format!("syntax error: {}", e.message)).label("here")
                })
            }
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => lit(ExprKind::Int(n)),
                Err(_) => Err(Diagnostic::at(&self.loc(span.clone()), "integer out of range")),
            },
            DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
                Ok(x) => lit(ExprKind::Float(x)),
                Err(_) => {
                    let x = match f.as_str().trim_start_matches('+') {
                        "inf" => f64::INFINITY,
                        "-inf" => f64::NEG_INFINITY,
                        _ => f64::NAN,
                    };
                    lit(ExprKind::Float(x))
                }
            },
            DeValue::Boolean(b) => lit(ExprKind::Bool(*b)),
            DeValue::Array(items) => {
                let items = items.iter().map(|item| self.expr(item)).collect::<Result<_, _>>()?;
                lit(ExprKind::List(items))
            }
            other => Err(Diagnostic::at(&self.loc(span.clone()), "expected an expression")
                .label(format!("found {}", other.type_str()))),
        }
    }

    /// The byte offset where a string value's text starts in the file, so that spans inside the
    /// expression point at the right column. Falls back to the opening quote when escapes make
    /// the text differ from the source.
    fn content_start(&self, span: std::ops::Range<usize>, value: &str) -> usize {
        let raw = &self.file.text[span.clone()];
        for quote in ["'''", "\"\"\"", "'", "\""] {
            if let Some(rest) = raw.strip_prefix(quote) {
                let (skip, rest) = match rest.strip_prefix('\n') {
                    Some(r) if quote.len() == 3 => (quote.len() + 1, r),
                    _ => (quote.len(), rest),
                };
                if rest.starts_with(value) {
                    return span.start + skip;
                }
                return span.start;
            }
        }
        span.start
    }

    pub(crate) fn ident_list(&self, v: &Spanned<DeValue<'_>>) -> Result<Vec<Ident>, Diagnostic> {
        let items = v.get_ref().as_array().ok_or_else(|| {
            Diagnostic::at(&self.loc(v.span()), "expected a list of names")
                .label(format!("found {}", v.get_ref().type_str()))
        })?;
        items
            .iter()
            .map(|item| {
                let s = self.string(item, "a name")?;
                let span = item.span();
                let key = Spanned::new(span.start + 1..span.end.saturating_sub(1).max(span.start + 1), s.into());
                self.ident(&key)
            })
            .collect()
    }

    fn model(&self, t: &DeTable<'_>) -> Result<ModelInfo, Diagnostic> {
        let mut info = ModelInfo { name: String::new(), model_type: None, description: None };
        for (k, v) in sorted(t) {
            match k.get_ref().as_ref() {
                "name" => info.name = self.string(v, "`name`")?,
                "model_type" => info.model_type = Some(self.string(v, "`model_type`")?),
                "description" | "doc" => info.description = Some(self.string(v, "`description`")?),
                other => {
                    return Err(self.unknown_key(k, other, &["name", "model_type", "description", "doc"], "[model]"))
                }
            }
        }
        Ok(info)
    }

    pub(crate) fn unknown_key(
        &self,
        k: &Spanned<std::borrow::Cow<'_, str>>,
        name: &str,
        known: &[&str],
        table: &str,
    ) -> Diagnostic {
        let mut d =
            Diagnostic::at(&self.loc(k.span()), format!("unknown key `{name}` in {table}")).label("not expected here");
        if let Some(s) = suggest(name, known.iter().copied()) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        d.note(format!("expected one of: {}", known.join(", ")))
    }

    pub(crate) fn param(
        &self,
        k: &Spanned<std::borrow::Cow<'_, str>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Result<ParamDecl, Diagnostic> {
        let name = self.ident(k)?;
        let Some(t) = v.get_ref().as_table() else {
            return Ok(ParamDecl { name, key: None, default: Some(self.expr(v)?) });
        };
        let mut decl = ParamDecl { name, key: None, default: None };
        for (k2, v2) in sorted(t) {
            match k2.get_ref().as_ref() {
                "key" => decl.key = Some(self.string(v2, "`key`")?),
                "default" => decl.default = Some(self.expr(v2)?),
                "doc" => {}
                other => return Err(self.unknown_key(k2, other, &["key", "default", "doc"], "a hyperparameter")),
            }
        }
        if decl.key.is_none() && decl.default.is_none() {
            return Err(Diagnostic::at(
                &decl.name.loc,
                format!("hyperparameter `{}` has neither `key` nor `default`", decl.name.name),
            )
            .help("read it from config.json with `key = \"...\"`, or give its value"));
        }
        Ok(decl)
    }

    fn weights(&self, t: &DeTable<'_>) -> Result<Vec<WeightDecl>, Diagnostic> {
        let mut out = Vec::new();
        for (k, v) in sorted(t) {
            let name = self.ident(k)?;
            let table = self.table(k, v)?;
            let (mut template, mut shape, mut when, mut otherwise, mut quantize) = (None, None, None, None, None);
            for (k2, v2) in sorted(table) {
                match k2.get_ref().as_ref() {
                    "name" => template = Some(self.string(v2, "`name`")?),
                    "shape" => shape = Some(self.expr(v2)?),
                    "when" => when = Some(self.expr(v2)?),
                    "else" => otherwise = Some(self.expr(v2)?),
                    "quantize" => {
                        quantize = Some(v2.get_ref().as_bool().ok_or_else(|| {
                            Diagnostic::at(&self.loc(v2.span()), "`quantize` must be true or false")
                                .label(format!("found {}", v2.get_ref().type_str()))
                        })?)
                    }
                    "doc" => {}
                    other => {
                        const KEYS: [&str; 6] = ["name", "shape", "when", "else", "quantize", "doc"];
                        return Err(self.unknown_key(k2, other, &KEYS, "a weight"));
                    }
                }
            }
            let missing = |what: &str| Diagnostic::at(&name.loc, format!("weight `{}` needs `{what}`", name.name));
            let template = template.ok_or_else(|| missing("name"))?;
            let shape = shape.ok_or_else(|| missing("shape"))?;
            if otherwise.is_some() && when.is_none() {
                return Err(Diagnostic::at(&name.loc, format!("weight `{}` has `else` without `when`", name.name)));
            }
            out.push(WeightDecl { name, template, shape, when, otherwise, quantize });
        }
        Ok(out)
    }

    fn state(&self, t: &DeTable<'_>) -> Result<Vec<StateDecl>, Diagnostic> {
        let mut out = Vec::new();
        for (k, v) in sorted(t) {
            let name = self.ident(k)?;
            let table = self.table(k, v)?;
            let (mut shape, mut init, mut next) = (None, None, None);
            for (k2, v2) in sorted(table) {
                match k2.get_ref().as_ref() {
                    "shape" => shape = Some(self.expr(v2)?),
                    "init" => init = Some(self.expr(v2)?),
                    "next" => next = Some(self.expr(v2)?),
                    "doc" => {}
                    other => return Err(self.unknown_key(k2, other, &["shape", "init", "next", "doc"], "a state")),
                }
            }
            let missing = |what: &str| Diagnostic::at(&name.loc, format!("state `{}` needs `{what}`", name.name));
            let shape = shape.ok_or_else(|| missing("shape"))?;
            let next = next.ok_or_else(|| missing("next"))?;
            let init = init.unwrap_or(Expr { kind: ExprKind::Float(0.0), span: name.loc.span.clone() });
            out.push(StateDecl { name, shape, init, next });
        }
        Ok(out)
    }

    /// Splits a table into reserved keys (handled by `reserved`) and bindings.
    pub(crate) fn bindings<T>(
        &self,
        t: &DeTable<'_>,
        reserved: &[&str],
        mut handle: impl FnMut(&str, &Spanned<DeValue<'_>>) -> Result<Option<T>, Diagnostic>,
    ) -> Result<(Vec<T>, Vec<Binding>), Diagnostic> {
        let mut found = Vec::new();
        let mut bindings = Vec::new();
        for (k, v) in sorted(t) {
            let key = k.get_ref().as_ref();
            if reserved.contains(&key) {
                if let Some(x) = handle(key, v)? {
                    found.push(x);
                }
                continue;
            }
            let name = self.ident(k)?;
            if v.get_ref().is_table() {
                let mut d = Diagnostic::at(
                    &name.loc,
                    format!("`{}` is a table, but bindings are `name = \"expression\"`", name.name),
                );
                if let Some(s) = suggest(key, reserved.iter().copied()) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                return Err(d);
            }
            bindings.push(Binding { name, expr: self.expr(v)? });
        }
        Ok((found, bindings))
    }

    fn block(&self, k: &Spanned<std::borrow::Cow<'_, str>>, v: &Spanned<DeValue<'_>>) -> Result<BlockDecl, Diagnostic> {
        let name = self.ident(k)?;
        let t = self.table(k, v)?;
        let mut repeat = None;
        let mut input = None;
        let mut weights = Vec::new();
        let mut state = Vec::new();
        let (_, bindings) = self.bindings(t, &["repeat", "input", "weights", "state", "doc"], |key, v| {
            match key {
                "repeat" => repeat = Some(self.expr(v)?),
                "input" => {
                    let s = self.string(v, "`input`")?;
                    input = Some(self.ident(&Spanned::new(v.span(), s.into()))?);
                }
                "weights" => weights = self.weights(self.table(k, v)?)?,
                "state" => state = self.state(self.table(k, v)?)?,
                _ => {}
            }
            Ok(None::<()>)
        })?;
        let missing = |what: &str| Diagnostic::at(&name.loc, format!("block `{}` needs `{what}`", name.name));
        Ok(BlockDecl {
            repeat: repeat.ok_or_else(|| missing("repeat"))?,
            input: input.ok_or_else(|| missing("input"))?,
            name,
            weights,
            state,
            bindings,
        })
    }

    fn step(&self, k: &Spanned<std::borrow::Cow<'_, str>>, v: &Spanned<DeValue<'_>>) -> Result<StepDecl, Diagnostic> {
        let name = self.ident(k)?;
        let t = self.table(k, v)?;
        let mut step = StepDecl {
            name,
            over: Vec::new(),
            carry: Vec::new(),
            with: Vec::new(),
            emit: Vec::new(),
            bindings: Vec::new(),
            next: Vec::new(),
        };
        let (_, bindings) = self.bindings(t, &["over", "carry", "with", "emit", "next", "doc"], |key, v| {
            match key {
                "over" => step.over = self.ident_list(v)?,
                "carry" => step.carry = self.ident_list(v)?,
                "with" => step.with = self.ident_list(v)?,
                "emit" => step.emit = self.ident_list(v)?,
                "next" => {
                    let table = self.table(k, v)?;
                    step.next = self.bindings(table, &[], |_, _| Ok(None::<()>))?.1;
                }
                _ => {}
            }
            Ok(None::<()>)
        })?;
        step.bindings = bindings;
        if step.over.is_empty() {
            return Err(Diagnostic::at(&step.name.loc, format!("step `{}` iterates over nothing", step.name.name))
                .help("name the per-step inputs with `over = [\"k\", \"v\"]`"));
        }
        Ok(step)
    }

    fn function(
        &self,
        k: &Spanned<std::borrow::Cow<'_, str>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Result<FunctionDecl, Diagnostic> {
        let name = self.ident(k)?;
        let t = self.table(k, v)?;
        let (params, bindings) = self.bindings(t, &["params", "doc"], |key, v| match key {
            "params" => self.ident_list(v).map(Some),
            _ => Ok(None),
        })?;
        if !bindings.iter().any(|b| b.name.name == "out") {
            return Err(Diagnostic::at(&name.loc, format!("function `{}` has no `out` binding", name.name))
                .help("a function's result is the binding named `out`"));
        }
        Ok(FunctionDecl { name, params: params.into_iter().next().unwrap_or_default(), bindings })
    }
}
