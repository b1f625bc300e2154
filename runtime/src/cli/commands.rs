//! The implementation of each `kiln` command.

use super::{BackendArg, Command};
use crate::checkpoint::{self, TensorData};
use crate::{compile_spec, resolve_spec, specs, Backend, Error, LoadOptions, Model};
use kiln_frontend::CompileOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(super) fn execute(command: Command, out: &mut dyn Write) -> Result<(), Error> {
    match command {
        Command::Forward { model_dir, tokens, split, spec, backend, out: path, force } => {
            forward(&model_dir, &tokens, split, spec, backend, &path, force, out)
        }
        Command::Dump { model_dir, spec, config, dot } => dump(model_dir, spec, config, dot, out),
        Command::Check { spec, config } => check(&spec, config, out),
        Command::Demo { tokens, top } => crate::demo::run(tokens, top, out),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn backend(b: BackendArg) -> Backend {
    match b {
        BackendArg::Interp => Backend::Interpreter,
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    dir: &Path,
    tokens: &[i64],
    split: Option<usize>,
    spec: Option<PathBuf>,
    b: BackendArg,
    path: &Path,
    force: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if path.exists() && !force {
        return Err(Error::Usage(format!("{} already exists; pass --force to overwrite it", path.display())));
    }
    if let Some(k) = split {
        if k == 0 || k >= tokens.len() {
            return Err(Error::Usage(format!("--split {k} must leave tokens on both sides (1..{})", tokens.len())));
        }
    }
    let model = Model::load(dir, &LoadOptions { spec, backend: backend(b), compile: CompileOptions::default() })?;
    let mut state = model.new_state();
    let logits = match split {
        None => model.forward(tokens, &mut state)?,
        Some(k) => {
            let mut first = model.forward(&tokens[..k], &mut state)?;
            let second = model.forward(&tokens[k..], &mut state)?;
            first.data.extend_from_slice(&second.data);
            first.tokens += second.tokens;
            first
        }
    };
    checkpoint::save(path, &[("logits", &[logits.tokens, logits.vocab], TensorData::F32(&logits.data))])?;
    writeln!(out, "wrote logits [{}, {}] to {}", logits.tokens, logits.vocab, path.display()).map_err(io(path))
}

fn read_config(path: &Path) -> Result<serde_json::Value, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}:{}:{}: invalid JSON: {e}", path.display(), e.line(), e.column())))
}

/// The spec and config named by `dump`/`check` arguments.
fn spec_and_config(
    model_dir: Option<PathBuf>,
    spec: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<(kiln_frontend::SpecFile, serde_json::Value), Error> {
    let config = match (&config, &model_dir) {
        (Some(c), _) => read_config(c)?,
        (None, Some(dir)) => read_config(&dir.join("config.json"))?,
        (None, None) => serde_json::json!({}),
    };
    let spec = match (spec, &model_dir) {
        (Some(s), _) => specs::parse_file(&s)?,
        (None, Some(_)) => resolve_spec(&config, None)?,
        (None, None) => return Err(Error::Usage("give a model directory or --spec FILE".into())),
    };
    Ok((spec, config))
}

fn dump(
    model_dir: Option<PathBuf>,
    spec: Option<PathBuf>,
    config: Option<PathBuf>,
    dot: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (spec, config) = spec_and_config(model_dir, spec, config)?;
    let graph = compile_spec(&spec, &config, &CompileOptions::default())?;
    let text = if dot { kiln_ir::dot::to_dot(&graph) } else { graph.to_string() };
    out.write_all(text.as_bytes()).map_err(io(Path::new("<stdout>")))
}

fn check(spec: &Path, config: Option<PathBuf>, out: &mut dyn Write) -> Result<(), Error> {
    let (spec_file, config) = spec_and_config(None, Some(spec.to_path_buf()), config)?;
    let graph = compile_spec(&spec_file, &config, &CompileOptions::default())?;
    let weights = graph
        .inputs()
        .iter()
        .filter(|&&n| graph.param(n).is_some_and(|p| p.role == kiln_ir::ParamRole::Weight))
        .count();
    let states = graph.inputs().len() - weights - 1;
    writeln!(out, "{}: ok ({} nodes, {weights} weights, {states} state tensors)", spec.display(), graph.node_count())
        .map_err(io(spec))
}
