//! `kiln quantize`: writes a model directory with 4-bit weights
//! ([`crate::quantized::write_quantized`]) and reports what it quantized and the sizes.

use crate::quantized::{write_quantized, Written};
use crate::Error;
use clap::Args;
use kiln_passes::QuantizeOptions;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

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
    let written = write_quantized(&args.model_dir, &args.out, &options, &BTreeMap::new(), args.force)?;
    let text = summary(args, &written);
    out.write_all(text.as_bytes()).map_err(|source| Error::Io { path: "<stdout>".into(), source })
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
