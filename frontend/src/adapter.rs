//! The adapter spec format (`models/lora.toml`): a rewrite of a model's matrix products, written
//! in the spec language and compiled against an adapter's `adapter_config.json`.
//!
//! ```toml
//! [adapter]    # name, peft_type (what adapter_config.json's "peft_type" must say), description
//! [params]     # hyperparameters read from adapter_config.json, as in a model spec
//! [targets]    # key (the config's list of module names), weight ("{module}.weight"), rule
//! [weights]    # the tensors the adapter adds per matched module: { name, shape, init }
//! [rewrite]    # params = ["x", "W"]: what replaces linear(x, W); the result is `out`
//! ```
//!
//! This module parses and checks the structure (every table, key and template); the meaning
//! (evaluating hyperparameters, matching weights, building the replacement) is in
//! [`crate::lower::adapter`]. Errors name the file, line and column like any spec error.

use crate::expr::Expr;
use crate::source::{suggest, Diagnostic, Location, SourceFile};
use crate::spec::{sorted, Binding, Ident, ModelInfo, Reader, SpecFile};
use std::sync::Arc;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The placeholder for the matched module's path in `[targets] weight` and weight names.
pub const MODULE: &str = "{module}";

/// A parsed adapter spec.
#[derive(Debug)]
pub struct AdapterSpec {
    pub file: Arc<SourceFile>,
    pub name: String,
    /// The `peft_type` an adapter_config.json must have for this spec to apply (`LORA`).
    pub peft_type: String,
    pub description: Option<String>,
    /// The hyperparameters, held as a spec of `[params]` only, so the model lowerer evaluates them.
    pub(crate) params: SpecFile,
    pub targets: TargetsDecl,
    pub weights: Vec<AdapterWeightDecl>,
    pub rewrite: RewriteDecl,
}

/// `[targets]`: which matrix products the rewrite applies to.
#[derive(Clone, Debug)]
pub struct TargetsDecl {
    pub loc: Location,
    /// The adapter_config.json key holding the list of target module names.
    pub key: String,
    /// Where `key` is written (errors about the config's list point there).
    pub key_loc: Location,
    /// The checkpoint name of a module's weight, with one `{module}` (`"{module}.weight"`).
    pub weight: String,
    pub rule: MatchRule,
}

/// How a module path is matched against a target name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchRule {
    /// `exact`: the module path equals the target.
    Exact,
    /// `name-or-suffix` (peft's rule): the path equals the target or ends with `.` + target.
    NameOrSuffix,
}

impl MatchRule {
    const NAMES: [&'static str; 2] = ["exact", "name-or-suffix"];

    /// Whether `module` matches `target`.
    pub fn matches(self, module: &str, target: &str) -> bool {
        module == target
            || (self == MatchRule::NameOrSuffix
                && module.len() > target.len()
                && module.ends_with(target)
                && module.as_bytes()[module.len() - target.len() - 1] == b'.')
    }
}

/// A tensor the adapter adds for every matched module.
#[derive(Clone, Debug)]
pub struct AdapterWeightDecl {
    pub name: Ident,
    /// The tensor's name in the adapter file, with one `{module}`.
    pub template: String,
    pub shape: Expr,
    /// Initial values of a fresh adapter: a number, or `uniform(lo, hi)`.
    pub init: Expr,
}

/// `[rewrite]`: the replacement of `linear(x, W)`.
#[derive(Clone, Debug)]
pub struct RewriteDecl {
    pub loc: Location,
    /// The names of the product's input and weight, in that order.
    pub params: Vec<Ident>,
    pub bindings: Vec<Binding>,
}

/// Parses an adapter spec. Errors name the file, line and column.
pub fn parse_adapter_spec(file: Arc<SourceFile>) -> Result<AdapterSpec, Diagnostic> {
    let doc = DeTable::parse(&file.text).map_err(|e| {
        let loc = e.span().map(|s| Location::new(&file, s));
        Diagnostic::new(format!("invalid TOML: {}", e.message().trim_end()), loc).label("here")
    })?;
    let r = Reader { file: file.clone() };
    let whole = Location::new(&file, 0..0);
    let mut info = None;
    let mut params = Vec::new();
    let mut targets = None;
    let mut weights = Vec::new();
    let mut rewrite = None;
    for (key, value) in sorted(doc.get_ref()) {
        let table = r.table(key, value)?;
        match key.get_ref().as_ref() {
            "adapter" => info = Some(adapter_info(&r, table)?),
            "params" => {
                for (k, v) in sorted(table) {
                    params.push(r.param(k, v)?);
                }
            }
            "targets" => targets = Some(targets_decl(&r, table, r.loc(key.span()))?),
            "weights" => weights = weight_decls(&r, table)?,
            "rewrite" => rewrite = Some(rewrite_decl(&r, table, r.loc(key.span()))?),
            other => {
                let known = ["adapter", "params", "targets", "weights", "rewrite"];
                let mut d = Diagnostic::at(&r.loc(key.span()), format!("unknown section `[{other}]`"))
                    .label("not an adapter spec section");
                if let Some(s) = suggest(other, known) {
                    d = d.help(format!("did you mean `[{s}]`?"));
                }
                return Err(d.note(format!("the sections are {}", known.map(|k| format!("[{k}]")).join(", "))));
            }
        }
    }
    let missing = |section: &str, what: &str| {
        Diagnostic::at(&whole, format!("{} has no [{section}] section", file.name)).help(what.to_string())
    };
    let (name, peft_type, description) =
        info.ok_or_else(|| missing("adapter", "add `[adapter]` with `name` and `peft_type`"))?;
    let targets = targets.ok_or_else(|| missing("targets", "add `[targets]` with `key`, `weight` and `rule`"))?;
    let rewrite =
        rewrite.ok_or_else(|| missing("rewrite", "add `[rewrite]` with `params = [\"x\", \"W\"]` and `out`"))?;
    check_names(&params, &weights, &rewrite)?;
    let params = SpecFile {
        file: file.clone(),
        model: Some(ModelInfo { name: name.clone(), model_type: None, description: None }),
        params,
        weights: Vec::new(),
        blocks: Vec::new(),
        steps: Vec::new(),
        functions: Vec::new(),
        graph: None,
    };
    Ok(AdapterSpec { file, name, peft_type, description, params, targets, weights, rewrite })
}

fn adapter_info(r: &Reader, t: &DeTable<'_>) -> Result<(String, String, Option<String>), Diagnostic> {
    let (mut name, mut peft_type, mut description) = (None, None, None);
    let mut first = None;
    for (k, v) in sorted(t) {
        first.get_or_insert_with(|| r.loc(k.span()));
        match k.get_ref().as_ref() {
            "name" => name = Some(r.string(v, "`name`")?),
            "peft_type" => peft_type = Some(r.string(v, "`peft_type`")?),
            "description" | "doc" => description = Some(r.string(v, "`description`")?),
            other => return Err(r.unknown_key(k, other, &["name", "peft_type", "description"], "[adapter]")),
        }
    }
    let at = first.unwrap_or_else(|| r.loc(0..0));
    let name = name.ok_or_else(|| Diagnostic::at(&at, "[adapter] needs `name`"))?;
    let peft_type = peft_type.ok_or_else(|| {
        Diagnostic::at(&at, "[adapter] needs `peft_type`").help("the value of \"peft_type\" in adapter_config.json")
    })?;
    Ok((name, peft_type, description))
}

/// A `{module}` template: exactly one placeholder, and no other braces.
fn template(r: &Reader, v: &Spanned<DeValue<'_>>, what: &str) -> Result<String, Diagnostic> {
    let s = r.string(v, what)?;
    let rest = s.replacen(MODULE, "", 1);
    if !s.contains(MODULE) || rest.contains(['{', '}']) {
        return Err(Diagnostic::at(&r.loc(v.span()), format!("{what} must contain `{MODULE}` once and no other `{{`"))
            .label("here")
            .note(format!("`{MODULE}` stands for the matched module's path, e.g. `rwkv.blocks.0.attention.key`")));
    }
    Ok(s)
}

fn targets_decl(r: &Reader, t: &DeTable<'_>, loc: Location) -> Result<TargetsDecl, Diagnostic> {
    let (mut key, mut weight, mut rule) = (None, None, None);
    for (k, v) in sorted(t) {
        match k.get_ref().as_ref() {
            "key" => key = Some((r.string(v, "`key`")?, r.loc(v.span()))),
            "weight" => weight = Some(template(r, v, "`weight`")?),
            "rule" => {
                let s = r.string(v, "`rule`")?;
                rule = Some(match s.as_str() {
                    "exact" => MatchRule::Exact,
                    "name-or-suffix" => MatchRule::NameOrSuffix,
                    other => {
                        let mut d = Diagnostic::at(&r.loc(v.span()), format!("unknown match rule `{other}`"))
                            .label("not a rule")
                            .note(format!("the rules are {}", MatchRule::NAMES.join(", ")));
                        if let Some(s) = suggest(other, MatchRule::NAMES) {
                            d = d.help(format!("did you mean `{s}`?"));
                        }
                        return Err(d);
                    }
                });
            }
            "doc" => {}
            other => return Err(r.unknown_key(k, other, &["key", "weight", "rule", "doc"], "[targets]")),
        }
    }
    let missing = |what: &str| Diagnostic::at(&loc, format!("[targets] needs `{what}`"));
    let (key, key_loc) = key.ok_or_else(|| missing("key"))?;
    Ok(TargetsDecl {
        key,
        key_loc,
        weight: weight.ok_or_else(|| missing("weight"))?,
        rule: rule.ok_or_else(|| missing("rule"))?,
        loc,
    })
}

fn weight_decls(r: &Reader, t: &DeTable<'_>) -> Result<Vec<AdapterWeightDecl>, Diagnostic> {
    let mut out = Vec::new();
    for (k, v) in sorted(t) {
        let name = r.ident(k)?;
        let table = r.table(k, v)?;
        let (mut template_, mut shape, mut init) = (None, None, None);
        for (k2, v2) in sorted(table) {
            match k2.get_ref().as_ref() {
                "name" => template_ = Some(template(r, v2, "a weight's `name`")?),
                "shape" => shape = Some(r.expr(v2)?),
                "init" => init = Some(r.expr(v2)?),
                "doc" => {}
                other => return Err(r.unknown_key(k2, other, &["name", "shape", "init", "doc"], "an adapter weight")),
            }
        }
        let missing = |what: &str| Diagnostic::at(&name.loc, format!("weight `{}` needs `{what}`", name.name));
        out.push(AdapterWeightDecl {
            template: template_.ok_or_else(|| missing("name"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
            init: init.ok_or_else(|| missing("init"))?,
            name,
        });
    }
    Ok(out)
}

fn rewrite_decl(r: &Reader, t: &DeTable<'_>, loc: Location) -> Result<RewriteDecl, Diagnostic> {
    let (params, bindings) = r.bindings(t, &["params", "doc"], |key, v| match key {
        "params" => r.ident_list(v).map(Some),
        _ => Ok(None),
    })?;
    let params = params.into_iter().next().unwrap_or_default();
    if params.len() != 2 {
        return Err(Diagnostic::at(
            &loc,
            format!("[rewrite] names {} parameter(s), but a product has two", params.len()),
        )
        .help("write `params = [\"x\", \"W\"]`: the product's input and its weight, in that order"));
    }
    if !bindings.iter().any(|b| b.name.name == "out") {
        return Err(Diagnostic::at(&loc, "[rewrite] has no `out` binding")
            .help("the rewrite's result, which replaces the product, is the binding named `out`"));
    }
    Ok(RewriteDecl { loc, params, bindings })
}

/// Every name means one thing: rewrite bindings do not reuse a parameter, weight or
/// hyperparameter name, and weights do not reuse a hyperparameter or parameter name.
fn check_names(
    params: &[crate::spec::ParamDecl],
    weights: &[AdapterWeightDecl],
    rewrite: &RewriteDecl,
) -> Result<(), Diagnostic> {
    let mut taken: Vec<(&Ident, &str)> = params.iter().map(|p| (&p.name, "a hyperparameter")).collect();
    taken.extend(rewrite.params.iter().map(|p| (p, "a parameter of the rewrite")));
    let clash = |b: &Ident, what: &str, other: &Ident| {
        Diagnostic::at(&b.loc, format!("`{}` is already {what}", b.name))
            .label("this name is taken")
            .note(format!("it is declared at {}", other.loc))
            .help("give it another name")
    };
    for w in weights {
        if let Some((other, what)) = taken.iter().find(|(i, _)| i.name == w.name.name) {
            return Err(clash(&w.name, what, other));
        }
    }
    taken.extend(weights.iter().map(|w| (&w.name, "an adapter weight")));
    for b in &rewrite.bindings {
        if let Some((other, what)) = taken.iter().find(|(i, _)| i.name == b.name.name) {
            return Err(clash(&b.name, what, other));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_matching_rule() {
        let r = MatchRule::NameOrSuffix;
        assert!(r.matches("rwkv.blocks.0.attention.key", "key"));
        assert!(r.matches("key", "key"));
        assert!(r.matches("backbone.layers.1.mixer.in_proj", "mixer.in_proj"));
        assert!(!r.matches("rwkv.blocks.0.attention.monkey", "key"));
        assert!(!r.matches("rwkv.blocks.0.attention.key", "attention"));
        assert!(!MatchRule::Exact.matches("rwkv.blocks.0.attention.key", "key"));
    }

    #[test]
    fn the_shipped_lora_spec_parses() {
        let text = include_str!("../../models/lora.toml");
        let spec = parse_adapter_spec(SourceFile::new("models/lora.toml", text)).unwrap();
        assert_eq!((spec.name.as_str(), spec.peft_type.as_str()), ("lora", "LORA"));
        assert_eq!(spec.targets.rule, MatchRule::NameOrSuffix);
        let names: Vec<&str> = spec.weights.iter().map(|w| w.name.name.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn templates_need_one_module_placeholder() {
        let text = "[adapter]\nname = \"x\"\npeft_type = \"X\"\n[targets]\nkey = \"t\"\nweight = \"{i}.weight\"\nrule = \"exact\"\n";
        let e = parse_adapter_spec(SourceFile::new("bad.toml", text)).unwrap_err();
        assert_eq!(e.short(), "bad.toml:6:10: `weight` must contain `{module}` once and no other `{`");
    }
}
