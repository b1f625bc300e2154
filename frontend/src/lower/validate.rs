//! Static checks on a spec before lowering: every name means one thing.
//!
//! A binding may not reuse the name of something its scope already provides (a function
//! parameter, a block's input, `i`, `state`, `tokens`, a weight or a hyperparameter), since it
//! would be silently ignored or would silently hide the other. Step arguments are distinct, a
//! carry and an emitted value have different names (both become fields of the scan's result),
//! and blocks do not take the names of primitives or functions.

use super::builtins;
use crate::source::Diagnostic;
use crate::spec::{Binding, Ident, SpecFile};

fn clash(b: &Ident, what: &str, other: Option<&Ident>) -> Diagnostic {
    let d = Diagnostic::at(&b.loc, format!("`{}` is already {what}", b.name)).label("this name is taken");
    match other {
        Some(o) => d.note(format!("it is declared at {}", o.loc)),
        None => d,
    }
    .help("give it another name")
}

/// Checks `bindings` against the names their scope already has.
fn check_bindings(bindings: &[Binding], taken: &[(&Ident, &str)], reserved: &[(&str, &str)]) -> Result<(), Diagnostic> {
    for b in bindings {
        if let Some((other, what)) = taken.iter().find(|(i, _)| i.name == b.name.name) {
            return Err(clash(&b.name, what, Some(other)));
        }
        if let Some((_, what)) = reserved.iter().find(|(n, _)| *n == b.name.name) {
            return Err(clash(&b.name, what, None));
        }
    }
    Ok(())
}

/// Runs every check on `spec`, whose functions may also be called by the prelude's names.
pub(crate) fn validate(spec: &SpecFile, prelude: &SpecFile) -> Result<(), Diagnostic> {
    let mut globals: Vec<(&Ident, &str)> = spec.params.iter().map(|p| (&p.name, "a hyperparameter")).collect();
    globals.extend(spec.weights.iter().map(|w| (&w.name, "a weight")));
    for b in &spec.blocks {
        if builtins::is_builtin(&b.name.name) {
            return Err(Diagnostic::at(
                &b.name.loc,
                format!("a block cannot be named `{}`, which is a primitive", b.name.name),
            ));
        }
        if let Some(f) = spec.functions.iter().chain(&prelude.functions).find(|f| f.name.name == b.name.name) {
            return Err(clash(&b.name, "a function", Some(&f.name)));
        }
        let mut taken = globals.clone();
        taken.extend(b.weights.iter().map(|w| (&w.name, "a weight of this block")));
        taken.push((&b.input, "the block's input"));
        check_bindings(&b.bindings, &taken, &[("i", "the layer index"), ("state", "the block's state")])?;
    }
    for s in &spec.steps {
        let mut args: Vec<(&Ident, &str)> = Vec::new();
        for (list, what) in [(&s.carry, "a carry"), (&s.over, "a per-step input"), (&s.with, "a constant of the step")]
        {
            for a in list {
                if let Some((other, w)) = args.iter().find(|(o, _)| o.name == a.name) {
                    return Err(clash(a, w, Some(other)));
                }
                args.push((a, what));
            }
        }
        for e in &s.emit {
            if let Some(c) = s.carry.iter().find(|c| c.name == e.name) {
                return Err(Diagnostic::at(
                    &e.loc,
                    format!(
                        "`{}` is both emitted and carried; the scan's result would have two fields of that name",
                        e.name
                    ),
                )
                .note(format!("the carry is declared at {}", c.loc))
                .help("emit the carry's per-step value under another name"));
            }
        }
        check_bindings(&s.bindings, &args, &[])?;
    }
    for f in spec.functions.iter().chain(&prelude.functions) {
        let params: Vec<(&Ident, &str)> = f.params.iter().map(|p| (p, "a parameter of this function")).collect();
        check_bindings(&f.bindings, &params, &[])?;
    }
    if let Some(g) = &spec.graph {
        check_bindings(&g.bindings, &globals, &[("tokens", "the token ids")])?;
    }
    Ok(())
}
