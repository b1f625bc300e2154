//! An adapter spec compiled against an `adapter_config.json`: which checkpoint weights it
//! targets, and the rewrite of one matched product built as IR.
//!
//! [`compile_adapter`] evaluates the hyperparameters (so a bad config is reported at once) and
//! reads the list of target modules. [`AdapterCompiler::target`] then says whether a weight's
//! checkpoint name belongs to a targeted module, and [`AdapterCompiler::expand`] adds the
//! rewrite's nodes for one product `linear(x, W)` to a graph and returns the replacement value.
//! The adapter weights become ordinary weight inputs whose origins are their declarations, and
//! every node of the rewrite records where in the adapter spec it was written. A weight is
//! created once per name, so a module whose weight feeds several products gets one set.

use super::scope::Frame;
use super::{prelude, Lowerer, Val};
use crate::adapter::{AdapterSpec, AdapterWeightDecl, MODULE};
use crate::expr::ExprKind;
use crate::source::{Diagnostic, Location};
use crate::CompileOptions;
use kiln_ir::{Graph, Origin, Param, ParamRole, Shape, Type, Value};

/// Adapter hyperparameters come from adapter_config.json only.
static NO_OVERRIDES: CompileOptions = CompileOptions { overrides: Vec::new() };

/// How a fresh adapter fills a tensor (the spec's `init`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InitRule {
    Constant(f64),
    /// Uniform in `[lo, hi)`.
    Uniform {
        lo: f64,
        hi: f64,
    },
}

/// One adapter tensor the rewrite added to a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterWeight {
    /// Its name in the graph and in the adapter file (`base_model.model.….lora_A.weight`).
    pub name: String,
    /// The spec's name for it (`A`).
    pub role: String,
    /// The module it adapts (`rwkv.blocks.0.attention.key`).
    pub module: String,
    pub shape: Vec<usize>,
    pub init: InitRule,
    /// Where the adapter spec declares it.
    pub declared: Origin,
}

/// An adapter spec compiled for one adapter configuration.
pub struct AdapterCompiler<'s> {
    lowerer: Lowerer<'s>,
    spec: &'s AdapterSpec,
    targets: Vec<String>,
    /// Whether each target matched a module that was expanded.
    matched: Vec<bool>,
    weights: Vec<AdapterWeight>,
}

impl std::fmt::Debug for AdapterCompiler<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterCompiler")
            .field("spec", &self.spec.name)
            .field("targets", &self.targets)
            .field("weights", &self.weights.len())
            .finish_non_exhaustive()
    }
}

/// Compiles `spec` for `config` (an adapter_config.json): evaluates every hyperparameter and reads
/// the target module names.
pub fn compile_adapter<'s>(
    spec: &'s AdapterSpec,
    config: &'s serde_json::Value,
) -> Result<AdapterCompiler<'s>, Diagnostic> {
    let mut lowerer = Lowerer::new(&spec.params, prelude()?, config, &NO_OVERRIDES)?;
    let mut scratch = Graph::new("params");
    let frame = Frame::params(&spec.file);
    for p in &spec.params.params {
        lowerer.lookup(&mut scratch, &frame, &p.name.name, &p.name.loc)?;
    }
    let targets = target_names(spec, config)?;
    let matched = vec![false; targets.len()];
    Ok(AdapterCompiler { lowerer, spec, targets, matched, weights: Vec::new() })
}

/// The list of module names under `[targets] key`.
fn target_names(spec: &AdapterSpec, config: &serde_json::Value) -> Result<Vec<String>, Diagnostic> {
    let key = &spec.targets.key;
    let at = |message: String| Diagnostic::at(&spec.targets.key_loc, message).label("read from here");
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Err(at(format!("adapter_config.json has no `{key}`"))
            .help(format!("list the modules to adapt, e.g. \"{key}\": [\"key\", \"value\"]"))),
        Some(serde_json::Value::String(s)) => Err(at(format!(
            "adapter_config.json's `{key}` is the regular expression {s:?}; only a list of module names is supported"
        ))),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| at(format!("adapter_config.json's `{key}` holds {i}, not a module name")))
            })
            .collect(),
        Some(other) => {
            Err(at(format!("adapter_config.json's `{key}` is {other}, not a non-empty list of module names")))
        }
    }
}

impl<'s> AdapterCompiler<'s> {
    /// The target module names, as the configuration lists them.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The targets that matched no expanded product so far.
    pub fn unmatched_targets(&self) -> Vec<&str> {
        self.targets.iter().zip(&self.matched).filter(|(_, m)| !**m).map(|(t, _)| t.as_str()).collect()
    }

    /// Every adapter tensor added so far, in the order they were created.
    pub fn weights(&self) -> &[AdapterWeight] {
        &self.weights
    }

    /// The module path of checkpoint tensor `weight_name` if the adapter targets it: the name
    /// fits `[targets] weight` and the module matches a target by the spec's rule.
    pub fn target(&self, weight_name: &str) -> Option<String> {
        let (prefix, suffix) = self.spec.targets.weight.split_once(MODULE)?;
        let module = weight_name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        let rule = self.spec.targets.rule;
        (!module.is_empty() && self.targets.iter().any(|t| rule.matches(module, t))).then(|| module.to_string())
    }

    /// Adds the rewrite of `linear(x, w)` for `module` to `g` and returns the value replacing it.
    /// `w` is the product's weight in a Linear's layout, `[out_features, in_features]`.
    pub fn expand(&mut self, g: &mut Graph, module: &str, x: Value, w: Value) -> Result<Value, Diagnostic> {
        let rule = self.spec.targets.rule;
        for (t, m) in self.targets.iter().zip(&mut self.matched) {
            *m |= rule.matches(module, t);
        }
        let spec = self.spec;
        let mut frame = Frame::rewrite(&spec.file, &spec.rewrite.bindings, format!("{} on {module}", spec.name));
        frame.vars.insert(spec.rewrite.params[0].name.clone(), Val::Tensor(x));
        frame.vars.insert(spec.rewrite.params[1].name.clone(), Val::Tensor(w));
        let mut created = Vec::with_capacity(spec.weights.len());
        for decl in &spec.weights {
            created.push((decl.name.name.clone(), self.weight(g, &frame, decl, module)?));
        }
        frame.vars.extend(created.into_iter().map(|(n, v)| (n, Val::Tensor(v))));
        let out = spec.rewrite.bindings.iter().find(|b| b.name.name == "out").map(|b| &b.name);
        let out_loc = out.map_or_else(|| spec.rewrite.loc.clone(), |o| o.loc.clone());
        let result = self.lowerer.lookup(g, &frame, "out", &out_loc)?;
        self.lowerer.eval_all(g, &frame)?;
        match result {
            Val::Tensor(v) => Ok(v),
            other => Err(Diagnostic::at(&out_loc, format!("the rewrite's `out` is {}, not a tensor", other.kind()))),
        }
    }

    /// The input for adapter weight `decl` of `module`, created on first use.
    fn weight(
        &mut self,
        g: &mut Graph,
        frame: &Frame<'s>,
        decl: &'s AdapterWeightDecl,
        module: &str,
    ) -> Result<Value, Diagnostic> {
        let file = &self.spec.file;
        let at = |span: &std::ops::Range<usize>| Location::new(file, span.clone());
        let shape = match self.lowerer.eval(g, frame, &decl.shape)? {
            Val::List(items) => items
                .iter()
                .map(|v| match v {
                    Val::Int(n) if *n >= 0 => Ok(*n as usize),
                    other => Err(Diagnostic::at(
                        &at(&decl.shape.span),
                        format!("a weight's shape holds non-negative integers, found {}", other.kind()),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(Diagnostic::at(
                    &at(&decl.shape.span),
                    format!("a shape is a list such as `[r, dim(W, 1)]`, found {}", other.kind()),
                ))
            }
        };
        let init = self.init(g, frame, decl)?;
        let name = decl.template.replace(MODULE, module);
        let ty = Type::f32(Shape::fixed(&shape));
        if let Some((v, declared)) = self.lowerer.weight_inputs.get(&name) {
            if *g.value_type(*v) != ty {
                return Err(Diagnostic::at(
                    &at(&decl.shape.span),
                    format!("tensor `{name}` is {ty} here but {} at {declared}", g.value_type(*v)),
                ));
            }
            return Ok(*v);
        }
        let declared = decl.name.loc.origin(None);
        let v = g.add_input(Param { role: ParamRole::Weight, name: name.clone() }, ty, Some(declared.clone()));
        self.lowerer.weight_inputs.insert(name.clone(), (v, decl.name.loc.clone()));
        self.weights.push(AdapterWeight {
            name,
            role: decl.name.name.clone(),
            module: module.to_string(),
            shape,
            init,
            declared,
        });
        Ok(v)
    }

    /// Evaluates a weight's `init`: a number, or `uniform(lo, hi)` of numbers.
    fn init(&mut self, g: &mut Graph, frame: &Frame<'s>, decl: &'s AdapterWeightDecl) -> Result<InitRule, Diagnostic> {
        let file = &self.spec.file;
        let bad = |span: &std::ops::Range<usize>, found: &Val| {
            Diagnostic::at(
                &Location::new(file, span.clone()),
                format!("`init` needs a number here, found {}", found.kind()),
            )
            .help("write a number such as `0`, or `uniform(lo, hi)`")
        };
        let mut number = |lowerer: &mut Lowerer<'s>, e: &crate::expr::Expr| match lowerer.eval(g, frame, e)? {
            v @ (Val::Int(_) | Val::Float(_)) => Ok(v.as_f64().unwrap_or_default()),
            other => Err(bad(&e.span, &other)),
        };
        match &decl.init.kind {
            ExprKind::Call { callee, args, kwargs, .. } if callee == "uniform" => {
                let [lo, hi] = args.as_slice() else {
                    return Err(Diagnostic::at(
                        &Location::new(file, decl.init.span.clone()),
                        format!("`uniform` takes two numbers (lo, hi), got {}", args.len() + kwargs.len()),
                    ));
                };
                if !kwargs.is_empty() {
                    return Err(Diagnostic::at(
                        &Location::new(file, decl.init.span.clone()),
                        "`uniform` takes no named arguments",
                    ));
                }
                let (lo, hi) = (number(&mut self.lowerer, lo)?, number(&mut self.lowerer, hi)?);
                Ok(InitRule::Uniform { lo, hi })
            }
            _ => number(&mut self.lowerer, &decl.init).map(InitRule::Constant),
        }
    }
}
