//! The `kiln` command line. [`run`] parses arguments and executes one command, writing its
//! output to the given writer, so the binary is a thin wrapper and tests call it in-process.

mod bench;
mod commands;
pub mod eval;
pub mod grad;
mod init;
mod quantize;
mod stats;
pub mod train;

use crate::Error;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

/// Kiln: a compiler and execution engine for recurrent language models written as TOML specs.
#[derive(Debug, Parser)]
#[command(name = "kiln", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum BackendArg {
    /// The reference interpreter.
    Interp,
    /// Fused kernels compiled to native code (Cranelift); the rest interpreted. The default.
    #[default]
    Jit,
}

/// Which passes of the pipeline run (`kiln dump --passes` lists them).
#[derive(Debug, Clone, Default, Args)]
pub struct PassArgs {
    /// Skip these passes (comma-separated names; a pass that runs more than once is skipped
    /// every time).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    pub disable: Vec<String>,
    #[command(flatten)]
    pub quantize: QuantizeArgs,
}

/// The quantize pass: 4-bit weights (see docs/quantization.md).
#[derive(Debug, Clone, Default, Args)]
pub struct QuantizeArgs {
    /// Quantize weight matrices to 4 bits: `q4_0` or `q4_1`, with an optional group size along
    /// the input dimension (`q4_0:64`; default 32). Embeddings and the head stay f32 unless asked.
    #[arg(long, value_name = "FORMAT[:GROUP]", value_parser = crate::quantized::parse_quant)]
    pub quantize: Option<kiln_ir::Quant>,
    /// With --quantize: quantize the token embedding too.
    #[arg(long, requires = "quantize")]
    pub quantize_embeddings: bool,
    /// With --quantize: quantize the head (the logits' projection) too.
    #[arg(long, requires = "quantize")]
    pub quantize_head: bool,
    /// With --quantize: keep these weights in f32 (tensor names, comma-separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',', requires = "quantize")]
    pub keep_f32: Vec<String>,
}

impl QuantizeArgs {
    /// The quantize pass's options, when --quantize is given.
    pub fn options(&self) -> Option<kiln_passes::QuantizeOptions> {
        let mut options = kiln_passes::QuantizeOptions::new(self.quantize?);
        options.embeddings = self.quantize_embeddings;
        options.head = self.quantize_head;
        options.overrides = self.keep_f32.iter().map(|n| (n.clone(), false)).collect();
        Some(options)
    }
}

/// How a model directory is loaded: its spec, an adapter, the backend and the passes.
#[derive(Debug, Clone, Default, Args)]
pub struct LoadArgs {
    /// A spec file to use instead of the built-in one matching config.json's model_type.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// A peft adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub passes: PassArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run tokens through a model and write their logits (safetensors: `logits` f32 [T, vocab]
    /// and the `tokens` i64 [T] they are for).
    Forward {
        /// A model directory as `save_pretrained` writes it (config.json + model.safetensors).
        model_dir: PathBuf,
        /// Comma-separated token ids, e.g. `3,14,15`.
        #[arg(long, value_delimiter = ',', required = true, allow_negative_numbers = true)]
        tokens: Vec<i64>,
        /// Run tokens[..K], then tokens[K..] in a second call with the carried state.
        #[arg(long, value_name = "K")]
        split: Option<usize>,
        /// A spec file to use instead of the built-in one matching config.json's model_type.
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// A peft adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
        #[arg(long, value_name = "DIR")]
        adapter: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
        backend: BackendArg,
        /// Where to write the logits.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passes: PassArgs,
    },
    /// Generate text (or token ids) one token at a time with the carried state, streaming it.
    Generate {
        /// A model directory; its tokenizer.json is used for --prompt and for printing text.
        model_dir: PathBuf,
        /// The prompt as text (needs tokenizer.json).
        #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
        prompt: Option<String>,
        /// The prompt as comma-separated token ids.
        #[arg(long, value_delimiter = ',')]
        tokens: Option<Vec<i64>>,
        /// How many tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_new: usize,
        /// Softmax temperature; 0 is greedy.
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Sample among the K most likely tokens only (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sample among the most likely tokens holding this much probability.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler: the same seed gives the same text.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep going past the end-of-sequence token.
        #[arg(long)]
        ignore_eos: bool,
        /// Print token ids even when the model has a tokenizer.
        #[arg(long)]
        ids: bool,
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// A peft adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
        #[arg(long, value_name = "DIR")]
        adapter: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
        backend: BackendArg,
        #[command(flatten)]
        passes: PassArgs,
    },
    /// The perplexity of a model on a text (or token ids): mean next-token NLL over the held-out
    /// part `kiln train` validates on, or the whole file, with the state carried across windows.
    Eval(eval::EvalArgs),
    /// Print a model's IR: after the whole pass pipeline, or before or after any one pass.
    Dump {
        /// A model directory (its config.json and spec are used; weights are not read).
        model_dir: Option<PathBuf>,
        /// A spec file (with --config, or the hyperparameters' defaults).
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// A config.json to compile the spec for.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Apply the adapter in DIR (only its adapter_config.json is read); `--after lora` shows
        /// the graph right after its rewrite.
        #[arg(long, value_name = "DIR")]
        adapter: Option<PathBuf>,
        /// Dump the training graph instead: the loss and the gradients of every weight (of the
        /// adapter's tensors, with --adapter), built by the autodiff pass, through the pipeline.
        #[arg(long)]
        grad: bool,
        /// Write Graphviz instead of the text dump.
        #[arg(long)]
        dot: bool,
        /// Print the graph as it is after PASS (after its last run, if it runs more than once).
        #[arg(long, value_name = "PASS", conflicts_with = "before")]
        after: Option<String>,
        /// Print the graph as it is before PASS (before its first run).
        #[arg(long, value_name = "PASS")]
        before: Option<String>,
        #[command(flatten)]
        passes: PassArgs,
        /// After the graph, print what each pass changed and how long it took.
        #[arg(long)]
        timings: bool,
        /// List the passes of the pipeline, in the order they run, instead of dumping a graph.
        #[arg(long = "passes", conflicts_with_all = ["model_dir", "spec", "config", "adapter", "grad", "dot", "after", "before", "timings"])]
        list_passes: bool,
    },
    /// Check a spec against a config without loading weights.
    Check {
        /// The spec file.
        spec: PathBuf,
        /// The config.json to compile it for (default: the hyperparameters' defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Write a randomly initialized model (config.json + model.safetensors) for a spec and config.
    Init(init::InitArgs),
    /// Write a model directory with 4-bit weights that forward/generate/eval/bench load directly.
    Quantize(quantize::QuantizeCmdArgs),
    /// Write the loss of a token sequence and its gradient for an adapter's tensors (or every
    /// weight), as `loss` and `grad.<name>` in a safetensors file.
    Grad(grad::GradArgs),
    /// Train a LoRA adapter (or every weight, with --full) on a text file: AdamW with warmup and
    /// cosine decay, gradient clipping, validation, atomic checkpoints and --resume.
    Train(train::TrainArgs),
    /// Measure prefill and decode tokens/s, compile time and peak memory of a model directory.
    Bench(bench::BenchArgs),
    /// Node counts before and after the passes, and planned arena size against the sum of all
    /// intermediates at T = 1 and T = 512, as one table (no weights needed).
    Stats(stats::StatsArgs),
    /// The main job, with nothing to download: train a small character-level RWKV-4 from
    /// scratch on the bundled tinyshakespeare text, save it, and generate a sample.
    Demo {
        /// Where to write the text, the initial and the trained model.
        #[arg(long, value_name = "DIR", default_value = "kiln-demo")]
        dir: PathBuf,
        /// Optimizer steps (8 sequences of 128 characters each).
        #[arg(long, default_value_t = 300)]
        steps: u64,
        /// The text the sample starts from.
        #[arg(long, default_value = "ROMEO:")]
        prompt: String,
        /// Characters to sample.
        #[arg(long, default_value_t = 300)]
        sample_len: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace an earlier demo's files in DIR.
        #[arg(long)]
        force: bool,
        /// Do not draw the progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// Parses `args` (including the program name) and runs the command, writing to `out`.
pub fn run<I, T>(args: I, out: &mut dyn Write) -> Result<(), Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            return write!(out, "{}", e.render()).map_err(|source| Error::Io { path: "<stdout>".into(), source });
        }
        Err(e) => return Err(Error::Usage(e.render().to_string().trim_end().to_string())),
    };
    commands::execute(cli.command, out)
}
