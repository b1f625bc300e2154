//! The implementation of each `kiln` command.

use super::{BackendArg, Command};
use crate::checkpoint::{self, TensorData};
use crate::tokenizer::TextStream;
use crate::{
    compile_spec, generate, resolve_spec, specs, Backend, Error, GenerateOptions, LoadOptions, Model, SamplingOptions,
    Tokenizer,
};
use kiln_frontend::CompileOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(super) fn execute(command: Command, out: &mut dyn Write) -> Result<(), Error> {
    match command {
        Command::Forward { model_dir, tokens, split, spec, backend, out: path, force } => {
            forward(&model_dir, &tokens, split, spec, backend, &path, force, out)
        }
        Command::Generate {
            model_dir,
            prompt,
            tokens,
            max_new,
            temperature,
            top_k,
            top_p,
            seed,
            ignore_eos,
            ids,
            spec,
            backend: b,
        } => {
            let sampling = SamplingOptions { temperature, top_k, top_p, seed };
            let model = Model::load(&model_dir, &LoadOptions { spec, backend: backend(b), ..LoadOptions::default() })?;
            let tokenizer = Tokenizer::from_dir(&model_dir)?;
            let prompt = match (prompt, tokens, &tokenizer) {
                (Some(text), _, Some(t)) => t.encode(&text)?,
                (Some(_), _, None) => {
                    return Err(Error::Usage(format!(
                        "{} has no tokenizer.json; give the prompt as ids with --tokens",
                        model_dir.display()
                    )));
                }
                (None, Some(ids), _) => ids,
                (None, None, _) => return Err(Error::Usage("give --prompt TEXT or --tokens IDS".into())),
            };
            if !(0.0..=1.0).contains(&top_p) || temperature < 0.0 || !temperature.is_finite() {
                return Err(Error::Usage("--temperature must be ≥ 0 and --top-p within [0, 1]".into()));
            }
            let stop_at = if ignore_eos {
                None
            } else {
                model.checkpoint().config().get("eos_token_id").and_then(|v| v.as_i64())
            };
            let text = if ids { None } else { tokenizer.as_ref() };
            generate_cmd(&model, &prompt, &GenerateOptions { max_new, sampling, stop_at }, text, out)
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
    let model = Model::load(dir, &LoadOptions { spec, backend: backend(b), ..LoadOptions::default() })?;
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

/// Streams generated tokens to `out` as text (with a tokenizer) or as ids.
fn generate_cmd(
    model: &Model,
    prompt: &[i64],
    options: &GenerateOptions,
    tokenizer: Option<&Tokenizer>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let stdout = Path::new("<stdout>");
    match tokenizer {
        Some(t) => write!(out, "{}", t.decode(prompt)?).map_err(io(stdout))?,
        None => {
            write!(out, "{}", prompt.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")).map_err(io(stdout))?
        }
    }
    let mut stream = TextStream::default();
    generate(model, prompt, options, |id| {
        match tokenizer {
            Some(t) => write!(out, "{}", stream.push(t, id)?),
            None => write!(out, " {id}"),
        }
        .and_then(|()| out.flush())
        .map_err(io(stdout))
    })?;
    writeln!(out).map_err(io(stdout))
}
