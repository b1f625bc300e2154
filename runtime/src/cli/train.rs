//! `kiln train`'s arguments ([`TrainArgs`]) and their translation to the trainer's
//! [`TrainOptions`] and [`RunOptions`]. What is trained (a new or loaded LoRA adapter, or every
//! weight with `--full`) is chosen by the command that builds the objective.

use super::BackendArg;
use crate::adapter::{Adapter, AdapterConfig};
use crate::checkpoint::Checkpoint;
use crate::finetune::{Finetune, SaveAdapter, Tuning};
use crate::gradient::GradientOptions;
use crate::train::{self, Dataset, RunOptions, SaveTensors, SaveTrained, TextTokens, TrainOptions};
use crate::Error;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Train a LoRA adapter (default) or every weight (`--full`) of a model on a text file.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// QLoRA: the frozen base's weights in 4 bits (the adapter stays f32).
    #[command(flatten)]
    pub quantize: super::QuantizeArgs,
    /// A model directory (config.json + model.safetensors, e.g. from `kiln init`); its
    /// tokenizer.json tokenizes the text, or without one the text's characters are the tokens.
    pub model_dir: PathBuf,
    /// The UTF-8 text to train on; its last --val-fraction is held out for validation.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Continue training this LoRA adapter (adapter_config.json + adapter_model.safetensors, as
    /// peft saves them) instead of a new one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["full", "lora_r", "lora_alpha", "targets"])]
    pub adapter: Option<PathBuf>,
    /// Rank of a new LoRA adapter.
    #[arg(long, value_name = "R", default_value_t = 8)]
    pub lora_r: usize,
    /// Scale of a new LoRA adapter: the update is (alpha / r)·B·A.
    #[arg(long, value_name = "ALPHA", default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// Modules a new LoRA adapter wraps (peft's target_modules: a weight matches if its module is
    /// named so or ends with `.NAME`), comma-separated, e.g. `key,value,receptance`.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Train every weight of the model instead of an adapter (e.g. from scratch after `kiln init`).
    #[arg(long, conflicts_with_all = ["lora_r", "lora_alpha", "targets"])]
    pub full: bool,
    /// The run's directory: the result (the model or adapter), train_log.jsonl and the training
    /// checkpoint trainer_state.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Optimizer steps in the whole run.
    #[arg(long, default_value_t = 500)]
    pub steps: u64,
    /// Sequences per step (the gradient is their mean).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// The learning rate the cosine decays to by the last step.
    #[arg(long, default_value_t = 1e-4)]
    pub min_lr: f64,
    /// Steps of linear warmup from 0 to --lr.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// AdamW's decoupled weight decay, applied to matrices (not to vectors such as norms and biases).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Measure the validation loss every N steps (0: only after the last).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub val_every: u64,
    /// The fraction of the text, at its end, held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// At most this many validation sequences (spread over the held-out text).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub val_windows: usize,
    /// Write a checkpoint and the result every N steps (0: only after the last).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub save_every: u64,
    /// Continue the run in --out from its last checkpoint (with the same options).
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Seed of the sequence sampler (and of a new adapter's initialization).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start over in an --out that holds an earlier run, replacing its files.
    #[arg(long)]
    pub force: bool,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Backpropagate through each sequence in chunks of N tokens (bounded memory, same gradients).
    #[arg(long, value_name = "N")]
    pub chunk: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
    pub backend: BackendArg,
}

impl TrainArgs {
    /// The trainer's hyperparameters (AdamW's betas and epsilon are PyTorch's defaults).
    pub fn train_options(&self) -> TrainOptions {
        TrainOptions {
            steps: self.steps,
            batch: self.batch,
            seq_len: self.seq_len,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            clip: (self.clip != 0.0).then_some(self.clip),
            val_every: self.val_every,
            val_windows: self.val_windows,
            save_every: self.save_every,
            seed: self.seed,
            ..TrainOptions::default()
        }
    }

    /// Where and how the run writes.
    pub fn run_options(&self) -> RunOptions {
        RunOptions { out_dir: self.out.clone(), resume: self.resume, force: self.force, progress: !self.quiet }
    }
}

/// Runs `kiln train`: compiles the training step of what is trained, tokenizes the text, and
/// hands both to the trainer with a saver for the result (the model directory, or the adapter).
pub(crate) fn run(args: &TrainArgs, out: &mut dyn Write) -> Result<train::TrainSummary, Error> {
    let tuning = if args.full {
        Tuning::Full
    } else if let Some(dir) = &args.adapter {
        Tuning::Adapter(Adapter::open(dir)?)
    } else if args.targets.is_empty() {
        return Err(Error::Usage(
            "say what to train: --targets MODULES for a new LoRA adapter, --adapter DIR, or --full".into(),
        ));
    } else {
        let config = AdapterConfig::lora(args.lora_r, args.lora_alpha, args.targets.clone());
        Tuning::NewAdapter { config, seed: args.seed }
    };
    let options = GradientOptions {
        backend: super::commands::backend(args.backend),
        chunk: args.chunk,
        quantize: args.quantize.options(),
        ..Default::default()
    };
    let mut finetune = Finetune::new(&args.model_dir, None, tuning, &options)?;
    let vocab = finetune.program.vocab_size().ok_or_else(|| {
        Error::Usage(format!("{}: the model has no token embedding to train on text", args.model_dir.display()))
    })?;
    let io = |source| Error::Io { path: "<stdout>".into(), source };
    let mib = |b: i64| b as f64 / (1 << 20) as f64;
    let trainables = finetune.program.trainables();
    let values: usize = trainables.iter().map(|t| t.len()).sum();
    write!(out, "training step: {} tensors of {values} values trained", trainables.len()).map_err(io)?;
    match finetune.program.planned_memory(args.seq_len) {
        Some(m) => writeln!(
            out,
            "; planned memory of a {}-token step {:.1} MiB (unplanned {:.1} MiB) + {:.1} MiB of gradients",
            args.seq_len,
            mib(m.arena),
            mib(m.unplanned),
            mib(m.gradients)
        ),
        None => writeln!(out),
    }
    .map_err(io)?;
    let (tokens, text_tokens) = train::tokenize_file(&args.model_dir, &args.data, vocab)?;
    let data = Dataset::new(&args.data, tokens, vocab, args.val_fraction, args.seq_len)?;
    let mut saver: Box<dyn SaveTrained> = match &finetune.adapter {
        Some(adapter) => Box::new(SaveAdapter { config: adapter.config().clone() }),
        None => {
            let config = Checkpoint::open(&args.model_dir)?.config().clone();
            let text = serde_json::to_string_pretty(&config)
                .map_err(|e| Error::Usage(format!("cannot write config.json: {e}")))?;
            let mut save = SaveTensors::new("model.safetensors").with_file("config.json", text.into_bytes());
            let tokenizer = match &text_tokens {
                TextTokens::Chars(chars) => Some(chars.tokenizer_json_text()?.into_bytes()),
                TextTokens::Model => {
                    let path = args.model_dir.join("tokenizer.json");
                    Some(std::fs::read(&path).map_err(|source| Error::Io { path, source })?)
                }
            };
            if let Some(bytes) = tokenizer {
                save = save.with_file("tokenizer.json", bytes);
            }
            Box::new(save)
        }
    };
    let initial = finetune.params.clone();
    train::train(&mut finetune, initial, &data, &args.train_options(), &args.run_options(), saver.as_mut(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn parse(args: &[&str]) -> Result<TrainArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("train").chain(args.iter().copied())).map(|h| h.args)
    }

    #[test]
    fn arguments_become_options() {
        let args = parse(&[
            "m",
            "--data",
            "t.txt",
            "--out",
            "o",
            "--targets",
            "key,value",
            "--clip",
            "0",
            "--steps",
            "7",
            "--warmup",
            "2",
        ])
        .unwrap();
        assert_eq!(args.targets, vec!["key", "value"]);
        let options = args.train_options();
        assert_eq!((options.steps, options.clip, options.beta2), (7, None, 0.999));
        options.validate().unwrap();
        let run = args.run_options();
        assert!(!run.resume && !run.force && run.progress);
    }

    #[test]
    fn conflicting_choices_are_refused() {
        assert!(parse(&["m", "--data", "t", "--out", "o", "--full", "--lora-r", "4"]).is_err());
        assert!(parse(&["m", "--data", "t", "--out", "o", "--adapter", "a", "--targets", "key"]).is_err());
        assert!(parse(&["m", "--data", "t", "--out", "o", "--resume", "--force"]).is_err());
        assert!(parse(&["m", "--data", "t", "--out", "o", "--full"]).unwrap().full);
    }
}
