//! `kiln init`: a randomly initialized model directory for a spec and a config
//! (see [`crate::init`] for the initialization rules).

use crate::init::{init_model, InitOptions};
use crate::{specs, Error};
use clap::Args;
use kiln_frontend::SpecFile;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A spec file, or the name of a built-in spec (`rwkv4`, `mamba`, `mamba2`) or its model_type.
    pub spec: PathBuf,
    /// The config.json to compile the spec for; written to DIR with `model_type` set.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The directory to write (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the random weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write into a directory that is not empty (replaces config.json and model.safetensors).
    #[arg(long)]
    pub force: bool,
}

/// A spec file path, or else a built-in spec by file stem, name or model_type.
pub(super) fn load_spec(arg: &Path) -> Result<SpecFile, Error> {
    if arg.is_file() {
        return specs::parse_file(arg);
    }
    let wanted = arg.to_string_lossy();
    let mut known = Vec::new();
    for b in specs::BUILTIN {
        let spec = specs::parse_builtin(b)?;
        let stem = b.file.trim_end_matches(".toml");
        let name = spec.model.as_ref().map(|m| m.name.as_str());
        let ty = spec.model.as_ref().and_then(|m| m.model_type.as_deref());
        if wanted == stem || Some(&*wanted) == name || Some(&*wanted) == ty {
            return Ok(spec);
        }
        known.push(stem.to_string());
    }
    Err(Error::Usage(format!(
        "{wanted}: no such spec file, and no built-in spec by that name (known: {})",
        known.join(", ")
    )))
}

pub(super) fn run(args: &InitArgs, out: &mut dyn Write) -> Result<(), Error> {
    let spec = load_spec(&args.spec)?;
    let text =
        std::fs::read_to_string(&args.config).map_err(|source| Error::Io { path: args.config.clone(), source })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!("{}:{}:{}: invalid JSON: {e}", args.config.display(), e.line(), e.column()))
    })?;
    let summary = init_model(&spec, &config, &args.out, &InitOptions { seed: args.seed, force: args.force })?;
    let stdout = |source| Error::Io { path: "<stdout>".into(), source };
    writeln!(
        out,
        "wrote {} ({}): {} tensors, {:.1}M parameters (f32), seed {}",
        args.out.display(),
        summary.model_type,
        summary.tensors,
        summary.parameters as f64 / 1e6,
        args.seed
    )
    .map_err(stdout)?;
    for (rule, count) in &summary.rules {
        writeln!(out, "  {count:>4} × {rule}").map_err(stdout)?;
    }
    Ok(())
}
