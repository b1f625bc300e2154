//! The implementation of each `kiln` command.

use super::{BackendArg, Command, LoadArgs};
use crate::adapter::{self, compile_spec_adapted, Adapter, AdapterConfig};
use crate::checkpoint::{self, TensorData};
use crate::tokenizer::TextStream;
use crate::{
    compile_spec, generate, resolve_spec, specs, Backend, Error, GenerateOptions, LoadOptions, Model, SamplingOptions,
    Tokenizer,
};
use kiln_frontend::CompileOptions;
use kiln_passes::{DumpPoint, PipelineOptions, RunReport};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(super) fn execute(command: Command, out: &mut dyn Write) -> Result<(), Error> {
    match command {
        Command::Forward { model_dir, tokens, split, spec, adapter, backend, out: path, force, passes } => {
            let options = LoadArgs { spec, adapter, backend, passes }.load_options()?;
            forward(&model_dir, &tokens, split, &options, &path, force, out)
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
            adapter,
            backend,
            passes,
        } => {
            let sampling = SamplingOptions { temperature, top_k, top_p, seed };
            let options = LoadArgs { spec, adapter, backend, passes }.load_options()?;
            let model = Model::load(&model_dir, &options)?;
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
        Command::Dump { list_passes: true, .. } => list_passes(out),
        Command::Dump {
            model_dir,
            spec,
            config,
            adapter,
            grad,
            dot,
            after,
            before,
            passes,
            timings,
            list_passes: false,
        } => {
            let at = match (after, before) {
                (Some(name), _) => Some((name, DumpPoint::After)),
                (None, Some(name)) => Some((name, DumpPoint::Before)),
                (None, None) => None,
            };
            // The verifier runs after every pass, so a broken graph names the pass that broke it.
            let options = PipelineOptions { disabled: passes.disable.clone(), verify_each: true, dump: at };
            let adapter = adapter.as_deref().map(adapter::read_config).transpose()?;
            let quantize = passes.quantize.options();
            let what = DumpWhat { adapter: adapter.as_ref(), quantize: quantize.as_ref(), grad, dot, timings };
            dump(model_dir, spec, config, &what, &options, out)
        }
        Command::Check { spec, config } => check(&spec, config, out),
        Command::Demo { dir, steps, prompt, sample_len, seed, force, quiet } => {
            let options = crate::demo::DemoOptions { dir, steps, prompt, sample_len, seed, force, quiet };
            crate::demo::run(&options, out)
        }
        Command::Eval(args) => super::eval::run(&args, out),
        Command::Init(args) => super::init::run(&args, out),
        Command::Quantize(args) => super::quantize::run(&args, out),
        Command::Grad(args) => super::grad::grad(args, out),
        Command::Train(args) => super::train::run(&args, out).map(|_| ()),
        Command::Bench(args) => super::bench::run(&args, out),
        Command::Stats(args) => super::stats::run(&args, out),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

pub(super) fn backend(b: BackendArg) -> Backend {
    match b {
        BackendArg::Interp => Backend::Interpreter,
        BackendArg::Jit => Backend::Jit,
    }
}

impl LoadArgs {
    /// The [`LoadOptions`] these arguments ask for (the adapter opened and checked).
    pub fn load_options(self) -> Result<LoadOptions, Error> {
        let adapter = self.adapter.as_deref().map(Adapter::open).transpose()?;
        let quantize = self.passes.quantize.options();
        let passes = PipelineOptions { disabled: self.passes.disable, ..PipelineOptions::default() };
        Ok(LoadOptions {
            spec: self.spec,
            backend: backend(self.backend),
            passes,
            adapter,
            quantize,
            ..LoadOptions::default()
        })
    }
}

fn forward(
    dir: &Path,
    tokens: &[i64],
    split: Option<usize>,
    options: &LoadOptions,
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
    let model = Model::load(dir, options)?;
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
    checkpoint::save(
        path,
        &[
            ("logits", &[logits.tokens, logits.vocab], TensorData::F32(&logits.data)),
            ("tokens", &[tokens.len()], TensorData::I64(tokens)),
        ],
    )?;
    writeln!(out, "wrote logits [{}, {}] to {}", logits.tokens, logits.vocab, path.display()).map_err(io(path))
}

fn read_config(path: &Path) -> Result<serde_json::Value, Error> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}:{}:{}: invalid JSON: {e}", path.display(), e.line(), e.column())))
}

/// The spec and config named by `dump`/`check` arguments.
pub(super) fn spec_and_config(
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

#[allow(clippy::too_many_arguments)]
/// What `kiln dump` shows.
struct DumpWhat<'a> {
    adapter: Option<&'a AdapterConfig>,
    quantize: Option<&'a kiln_passes::QuantizeOptions>,
    /// The training graph rather than the model's.
    grad: bool,
    dot: bool,
    timings: bool,
}

fn dump(
    model_dir: Option<PathBuf>,
    spec: Option<PathBuf>,
    config: Option<PathBuf>,
    what: &DumpWhat<'_>,
    options: &PipelineOptions,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (spec, config) = spec_and_config(model_dir, spec, config)?;
    let (dot, timings) = (what.dot, what.timings);
    let (graph, report) = if what.grad {
        let compile = CompileOptions::default();
        let (lowered, wrt) = match what.adapter {
            Some(a) => {
                let (g, weights) = adapter::lora_graph(&spec, &config, &compile, a)?;
                (g, weights.into_iter().map(|w| w.name).collect())
            }
            None => {
                let g = kiln_frontend::compile(&spec, &config, &compile)?;
                let names = crate::finetune::weight_names(&g);
                (g, names)
            }
        };
        let mut g = kiln_passes::training_graph(&lowered, &wrt)?;
        kiln_ir::verify(&g)?;
        let report = kiln_passes::default_pipeline().run(&mut g, options)?;
        (g, report)
    } else {
        let compiled =
            compile_spec_adapted(&spec, &config, &CompileOptions::default(), what.adapter, what.quantize, options)?;
        (compiled.graph, compiled.report)
    };
    // With --before/--after the pipeline captured the graph at that point; otherwise it is the end.
    let graph = report.dump_graph.as_ref().unwrap_or(&graph);
    let text = if dot { kiln_ir::dot::to_dot(graph) } else { graph.to_string() };
    let stdout = Path::new("<stdout>");
    out.write_all(text.as_bytes()).map_err(io(stdout))?;
    if timings {
        write_timings(&report, out).map_err(io(stdout))?;
    }
    Ok(())
}

/// One line per pass run: its changes and time (or that it was disabled), then the total.
fn write_timings(report: &RunReport, out: &mut dyn Write) -> std::io::Result<()> {
    let width = report.passes.iter().map(|p| p.name.len()).max().unwrap_or(0).max("total".len());
    writeln!(out, "{:width$}  {:>7}  {:>10}", "pass", "changes", "time")?;
    for p in &report.passes {
        if p.skipped {
            writeln!(out, "{:width$}  {:>7}  {:>10}", p.name, "-", "disabled")?;
        } else {
            let ms = format!("{:.3} ms", p.time.as_secs_f64() * 1e3);
            writeln!(out, "{:width$}  {:>7}  {ms:>10}", p.name, p.changes)?;
        }
    }
    let changes: usize = report.passes.iter().map(|p| p.changes).sum();
    let total: std::time::Duration = report.passes.iter().map(|p| p.time).sum();
    writeln!(out, "{:width$}  {changes:>7}  {:>10}", "total", format!("{:.3} ms", total.as_secs_f64() * 1e3))
}

/// `kiln dump --passes`: the default pipeline, in order.
fn list_passes(out: &mut dyn Write) -> Result<(), Error> {
    let pipeline = kiln_passes::default_pipeline();
    let width = pipeline.passes().iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut text = String::from("the passes, in the order they run (turn one off with --disable NAME):\n");
    for (i, p) in pipeline.passes().iter().enumerate() {
        let required = if p.required { "required" } else { "optional" };
        text += &format!("{:>3}. {:width$}  {required}  {}\n", i + 1, p.name, p.description);
    }
    text += &format!("with --adapter, `{}` runs first: {}\n", kiln_passes::lora::NAME, kiln_passes::lora::DESCRIPTION);
    text += &format!(
        "with --quantize, `{}` runs next: {}\n",
        kiln_passes::quantize::NAME,
        kiln_passes::quantize::DESCRIPTION
    );
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
