//! The model specs shipped with Kiln (`models/*.toml`, embedded at build time), and how a
//! checkpoint's `config.json` picks one; likewise the adapter specs, picked by an
//! `adapter_config.json`'s `peft_type`.

use kiln_frontend::{parse_adapter_spec, parse_spec, AdapterSpec, Diagnostic, SourceFile, SpecFile};
use std::path::Path;

/// An embedded spec: file name and text.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinSpec {
    pub file: &'static str,
    pub text: &'static str,
}

/// Every spec in `models/` (the prelude is embedded by the frontend).
pub const BUILTIN: &[BuiltinSpec] = &[
    BuiltinSpec { file: "rwkv4.toml", text: include_str!("../../models/rwkv4.toml") },
    BuiltinSpec { file: "mamba.toml", text: include_str!("../../models/mamba.toml") },
    BuiltinSpec { file: "mamba2.toml", text: include_str!("../../models/mamba2.toml") },
];

/// Parses an embedded spec.
pub fn parse_builtin(spec: &BuiltinSpec) -> Result<SpecFile, Diagnostic> {
    parse_spec(SourceFile::new(format!("models/{}", spec.file), spec.text))
}

/// Reads and parses a spec file from disk. The file name in diagnostics is the path as given.
pub fn parse_file(path: &Path) -> Result<SpecFile, crate::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::Io { path: path.to_path_buf(), source: e })?;
    Ok(parse_spec(SourceFile::new(path.display().to_string(), text))?)
}

/// The embedded spec whose `model_type` matches, if any.
pub fn for_model_type(model_type: &str) -> Result<SpecFile, crate::Error> {
    let mut known = Vec::new();
    for b in BUILTIN {
        let spec = parse_builtin(b)?;
        let ty = spec.model.as_ref().and_then(|m| m.model_type.clone());
        if ty.as_deref() == Some(model_type) {
            return Ok(spec);
        }
        known.extend(ty);
    }
    Err(crate::Error::UnknownModelType { model_type: model_type.to_string(), known })
}

/// Every adapter spec in `models/`, with the `peft_type` it implements.
pub const BUILTIN_ADAPTERS: &[(&str, BuiltinSpec)] =
    &[("LORA", BuiltinSpec { file: "lora.toml", text: include_str!("../../models/lora.toml") })];

/// The embedded adapter spec for `peft_type`.
pub fn adapter_for_peft_type(peft_type: &str) -> Result<AdapterSpec, crate::Error> {
    let Some((_, b)) = BUILTIN_ADAPTERS.iter().find(|(t, _)| *t == peft_type) else {
        let known: Vec<&str> = BUILTIN_ADAPTERS.iter().map(|(t, _)| *t).collect();
        return Err(crate::Error::Usage(format!(
            "no adapter spec for peft_type `{peft_type}` (known: {})",
            known.join(", ")
        )));
    };
    Ok(parse_adapter_spec(SourceFile::new(format!("models/{}", b.file), b.text))?)
}
