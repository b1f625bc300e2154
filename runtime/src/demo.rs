//! `kiln demo`: the main job on an embedded default, with no download. It trains a small
//! character-level RWKV-4 from scratch on the bundled tinyshakespeare text (compiled into the
//! binary), shows the progress and the validation loss falling, saves the model as a Hugging Face
//! directory, and generates a sample from it.
//!
//! Steps: write the text and a randomly initialized model (`kiln init` with
//! `runtime/assets/char-rwkv4.json`) into `DIR/init`, train every weight (`kiln train --full`,
//! the JIT backend) into `DIR/model`, then sample from `DIR/model` (`kiln generate`). Everything
//! it writes is under `DIR`, which must be new or empty unless `--force`.

use crate::cli::train::TrainArgs;
use crate::cli::BackendArg;
use crate::init::{init_model, InitOptions};
use crate::tokenizer::TextStream;
use crate::{Backend, Error, GenerateOptions, LoadOptions, Model, SamplingOptions, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};

const TEXT: &str = include_str!("../assets/tinyshakespeare.txt");
const CONFIG: &str = include_str!("../assets/char-rwkv4.json");
const SPEC: &str = "rwkv";

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub steps: u64,
    pub prompt: String,
    pub sample_len: usize,
    pub seed: u64,
    pub force: bool,
    pub quiet: bool,
}

pub(crate) fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<(), Error> {
    let w = |e| Error::Io { path: "<stdout>".into(), source: e };
    let dir = &options.dir;
    prepare(dir, options.force)?;
    let data = dir.join("tinyshakespeare.txt");
    std::fs::write(&data, TEXT).map_err(|source| Error::Io { path: data.clone(), source })?;

    // 1. A random model.
    let config: serde_json::Value =
        serde_json::from_str(CONFIG).map_err(|e| Error::Usage(format!("the embedded config is invalid: {e}")))?;
    let spec = crate::specs::for_model_type(SPEC)?;
    let init = dir.join("init");
    let summary = init_model(&spec, &config, &init, &InitOptions { seed: options.seed, force: true })?;
    writeln!(
        out,
        "1. initialized a {}-parameter character-level RWKV-4 in {} (kiln init)",
        summary.parameters,
        init.display()
    )
    .map_err(w)?;

    // 2. Train every weight on the text.
    let model_dir = dir.join("model");
    writeln!(out, "2. training it on {} ({} characters) (kiln train --full)", data.display(), TEXT.chars().count())
        .map_err(w)?;
    let args = TrainArgs {
        model_dir: init,
        data,
        adapter: None,
        lora_r: 8,
        lora_alpha: 16.0,
        targets: Vec::new(),
        full: true,
        out: model_dir.clone(),
        steps: options.steps,
        batch: 8,
        seq_len: 128,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup: options.steps.min(20),
        weight_decay: 0.01,
        clip: 1.0,
        val_every: (options.steps / 6).max(1),
        val_fraction: 0.1,
        val_windows: 16,
        save_every: 0,
        resume: false,
        seed: options.seed,
        force: true,
        quiet: options.quiet,
        chunk: None,
        backend: BackendArg::Jit,
        quantize: Default::default(),
    };
    let trained = crate::cli::train::run(&args, out)?;

    // 3. Sample from the saved model.
    let model = Model::load(&model_dir, &LoadOptions { backend: Backend::Jit, ..LoadOptions::default() })?;
    let tokenizer = Tokenizer::from_dir(&model_dir)?
        .ok_or_else(|| Error::Usage(format!("{} has no tokenizer.json", model_dir.display())))?;
    let prompt = tokenizer.encode(&options.prompt)?;
    writeln!(
        out,
        "3. sampling from {} (kiln generate, temperature 0.8; validation loss {}):\n",
        model_dir.display(),
        trained.val_loss.map_or_else(|| "not measured".into(), |l| format!("{l:.3}"))
    )
    .map_err(w)?;
    write!(out, "{}", options.prompt).map_err(w)?;
    let sampling = SamplingOptions { temperature: 0.8, top_k: 0, top_p: 1.0, seed: options.seed };
    let generate = GenerateOptions { max_new: options.sample_len, sampling, stop_at: None };
    let mut stream = TextStream::default();
    crate::generate(&model, &prompt, &generate, |id| {
        let text = stream.push(&tokenizer, id)?;
        write!(out, "{text}").and_then(|()| out.flush()).map_err(w)
    })?;
    writeln!(out, "\n\nthe model, its tokenizer.json and train_log.jsonl are in {}", model_dir.display()).map_err(w)
}

/// Makes `dir` exist and be empty, refusing to touch an earlier one without `force`.
fn prepare(dir: &Path, force: bool) -> Result<(), Error> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty && !force {
            return Err(Error::Usage(format!(
                "{} already holds files (an earlier demo?); pass --force to replace them, or --dir elsewhere",
                dir.display()
            )));
        }
        if !empty {
            for sub in ["init", "model"] {
                let path = dir.join(sub);
                if path.exists() {
                    std::fs::remove_dir_all(&path).map_err(|source| Error::Io { path, source })?;
                }
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io)
}
