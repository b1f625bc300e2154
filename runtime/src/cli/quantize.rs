//! `kiln quantize`: writes a model directory with 4-bit weights
//! ([`crate::quantized::write_quantized`]) and reports what it quantized and the sizes.

use crate::awq::{self, AwqReport, CalibrationOptions};
use crate::checkpoint::Checkpoint;
use crate::quantized::{decisions, write_quantized, Written};
use crate::{train, Error, Tokenizer};
use clap::Args;
use kiln_passes::QuantizeOptions;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct QuantizeCmdArgs {
    /// The f32 (or f16/bf16) model directory to quantize.
    pub model_dir: PathBuf,
    /// The directory to write (config.json, model.safetensors and the source's other files).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The format: `q4_0` or `q4_1`, with an optional group size (`q4_0:64`; default 32).
    #[arg(long, value_name = "FORMAT[:GROUP]", default_value = "q4_0", value_parser = crate::quantized::parse_quant)]
    pub format: kiln_ir::Quant,
    /// Quantize the token embedding too.
    #[arg(long)]
    pub quantize_embeddings: bool,
    /// Quantize the head (the logits' projection) too.
    #[arg(long)]
    pub quantize_head: bool,
    /// Keep these weights in f32 (tensor names, comma-separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub keep_f32: Vec<String>,
    /// Activation-aware scales (AWQ): calibrate on this text (tokenized by the model's
    /// tokenizer.json) and store each product weight as Q(W·diag(s)) with the scales s that
    /// minimize the product's error on it. Weights also read by a gather keep plain rounding.
    #[arg(long, value_name = "FILE")]
    pub awq: Option<PathBuf>,
    /// With --awq: calibrate on at most this many tokens from the start of the text.
    #[arg(long, value_name = "N", default_value_t = 4096, requires = "awq")]
    pub awq_tokens: usize,
    /// Print every weight matrix's decision (quantized or not, and why).
    #[arg(long)]
    pub verbose: bool,
    /// Replace the files of an existing output directory.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(args: &QuantizeCmdArgs, out: &mut dyn Write) -> Result<(), Error> {
    let mut options = QuantizeOptions::new(args.format);
    options.embeddings = args.quantize_embeddings;
    options.head = args.quantize_head;
    options.overrides = args.keep_f32.iter().map(|n| (n.clone(), false)).collect();
    let write = |out: &mut dyn Write, text: &str| {
        out.write_all(text.as_bytes()).map_err(|source| Error::Io { path: "<stdout>".into(), source })
    };
    let scales = match &args.awq {
        None => BTreeMap::new(),
        Some(path) => {
            let (scales, report) = awq_scales(args, &options, path)?;
            write(out, &if args.verbose { report.table() } else { String::new() })?;
            write(
                out,
                &format!(
                    "AWQ: relative squared error of the products on the calibration rows, mean over {} weights: \
                     {:.4e} with round-to-nearest, {:.4e} activation-aware ({} weights chose scales)\n",
                    scales.len(),
                    report.mean_relative().0,
                    report.mean_relative().1,
                    report.improved()
                ),
            )?;
            scales
        }
    };
    let written = write_quantized(&args.model_dir, &args.out, &options, &scales, args.force)?;
    write(out, &summary(args, &written))
}

/// Calibrates on the text at `path` and searches the scales of every quantized weight that
/// only products read.
fn awq_scales(
    args: &QuantizeCmdArgs,
    options: &QuantizeOptions,
    path: &Path,
) -> Result<(BTreeMap<String, Vec<f32>>, AwqReport), Error> {
    let tokenizer = Tokenizer::from_dir(&args.model_dir)?.ok_or_else(|| {
        Error::Usage(format!("{} has no tokenizer.json to tokenize {} with", args.model_dir.display(), path.display()))
    })?;
    let mut tokens = tokenizer.encode(&train::read_text(path)?)?;
    tokens.truncate(args.awq_tokens);
    if tokens.len() < 2 {
        return Err(Error::Usage(format!("{}: too little calibration text", path.display())));
    }
    let checkpoint = Checkpoint::open(&args.model_dir)?;
    let chosen = decisions(&checkpoint, options)?;
    let mut calibration = awq::calibrate(checkpoint, &tokens, &CalibrationOptions::default())?;
    calibration.weights.retain(|w| w.other_uses == 0 && chosen.quantized().any(|d| d.name == w.name));
    let checkpoint = Checkpoint::open(&args.model_dir)?;
    let format = options.quant.scheme;
    let group = options.quant.group as usize;
    let scaled = awq::search_model(&checkpoint, &calibration, format, group)?;
    let report = AwqReport::new(format, group, &scaled);
    Ok((scaled.into_iter().map(|w| (w.name, w.choice.scale)).collect(), report))
}

fn summary(args: &QuantizeCmdArgs, w: &Written) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let count = w.report.quantized().count();
    let mut s = String::new();
    if args.verbose {
        s += &w.report.to_string();
    }
    s += &format!(
        "quantized {count} of {} weight matrices to {}: {:.2} MiB of f32 → {:.2} MiB ({:.2}× smaller)\n",
        w.report.decisions.len(),
        args.format,
        mib(w.f32_bytes),
        mib(w.quantized_bytes),
        w.f32_bytes as f64 / w.quantized_bytes.max(1) as f64
    );
    s += &format!(
        "model file: {:.2} MiB → {:.2} MiB ({:.2}× smaller); wrote {}\n",
        mib(w.source_file_bytes),
        mib(w.file_bytes),
        w.source_file_bytes as f64 / w.file_bytes.max(1) as f64,
        args.out.display()
    );
    s
}
