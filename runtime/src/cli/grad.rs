//! `kiln grad`: the loss of one token sequence and the gradient of every trainable tensor —
//! an adapter's (LoRA) or, without `--adapter`, every weight's — written to a safetensors file
//! as `loss` and `grad.<name>` (the adapter tensors' names as in `adapter_model.safetensors`).

use super::BackendArg;
use crate::adapter::Adapter;
use crate::checkpoint::{self, TensorData};
use crate::finetune::{Finetune, Tuning};
use crate::gradient::GradientOptions;
use crate::Error;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Write the loss of a token sequence and its gradient for an adapter's tensors (or every weight).
#[derive(Debug, Clone, Args)]
pub struct GradArgs {
    /// QLoRA: the frozen base's weights in 4 bits (the adapter stays f32).
    #[command(flatten)]
    pub quantize: super::QuantizeArgs,
    /// A model directory (config.json + model.safetensors).
    pub model_dir: PathBuf,
    /// A peft adapter directory: its tensors are differentiated, the model is frozen. Without
    /// it, every weight of the model is.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Comma-separated token ids (at least 2): the loss is the mean cross-entropy of predicting
    /// each from the ones before it, as transformers computes it with `labels = input_ids`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<i64>,
    /// A spec file to use instead of the built-in one matching config.json's model_type.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Backpropagate through the sequence in chunks of N tokens (bounded memory, same gradients).
    #[arg(long, value_name = "N")]
    pub chunk: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendArg::Jit)]
    pub backend: BackendArg,
    /// Where to write `loss` and the gradients.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn grad(args: GradArgs, out: &mut dyn Write) -> Result<(), Error> {
    if args.out.exists() && !args.force {
        return Err(Error::Usage(format!("{} already exists; pass --force to overwrite it", args.out.display())));
    }
    let tuning = match &args.adapter {
        Some(dir) => Tuning::Adapter(Adapter::open(dir)?),
        None => Tuning::Full,
    };
    let options = GradientOptions {
        backend: super::commands::backend(args.backend),
        chunk: args.chunk,
        quantize: args.quantize.options(),
        ..Default::default()
    };
    let finetune = Finetune::new(&args.model_dir, args.spec.as_deref(), tuning, &options)?;
    if let Some(vocab) = finetune.program.vocab_size() {
        if let Some((position, &id)) = args.tokens.iter().enumerate().find(|(_, &id)| id < 0 || id as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, position, vocab });
        }
    }
    let (loss, grads) = finetune.program.loss_and_grad(&finetune.params, &args.tokens)?;
    let names: Vec<String> = finetune.program.trainables().iter().map(|t| format!("grad.{}", t.name)).collect();
    let loss_value = [loss];
    let mut tensors: Vec<(&str, &[usize], TensorData<'_>)> = vec![("loss", &[1], TensorData::F32(&loss_value))];
    for ((name, t), g) in names.iter().zip(finetune.program.trainables()).zip(&grads) {
        tensors.push((name, &t.shape, TensorData::F32(g)));
    }
    checkpoint::save(&args.out, &tensors)?;
    let io = |source| Error::Io { path: args.out.clone(), source };
    writeln!(out, "loss {loss:.6}; wrote it and {} gradients to {}", grads.len(), args.out.display()).map_err(io)
}
