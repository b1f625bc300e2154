//! What a fine-tuning job trains, and its compiled training step: every weight of the model
//! (full fine-tuning, or training from `kiln init` from scratch), or the tensors of a LoRA
//! adapter on a frozen base (given, or freshly initialized as peft does).
//!
//! The model is lowered from its spec, the adapter's rewrite (if any) applied, and the result
//! handed to [`GradientProgram`]; the starting values of the trainables come from the checkpoint
//! (full) or the adapter (LoRA), in the program's trainable order. With
//! [`GradientOptions::quantize`] (or a checkpoint written by `kiln quantize`) the frozen base is
//! 4-bit (QLoRA).

use crate::adapter::apply::quantize_adapted;
use crate::adapter::{lora_graph, Adapter, AdapterConfig, AdapterTensor, AdapterWeight};
use crate::checkpoint::Checkpoint;
use crate::gradient::{GradientOptions, GradientProgram};
use crate::train::{LossAndGrad, Objective, SaveTrained, TrainableSpec};
use crate::{resolve_spec, Error};
use kiln_frontend::CompileOptions;
use kiln_ir::{Graph, ParamRole};
use kiln_passes::QuantizeOptions;
use std::path::Path;

/// What is trained.
#[derive(Debug)]
pub enum Tuning {
    /// Every weight of the model.
    Full,
    /// The tensors of this adapter; the base model is frozen.
    Adapter(Adapter),
    /// A new LoRA adapter with this config, initialized as peft does (`A` uniform, `B` zero).
    NewAdapter { config: AdapterConfig, seed: u64 },
}

/// A compiled training step with the trainables' starting values.
#[derive(Debug)]
pub struct Finetune {
    pub program: GradientProgram,
    pub params: Vec<Vec<f32>>,
    /// The adapter being trained (its tensors are `params`), when not full fine-tuning.
    pub adapter: Option<Adapter>,
}

impl Finetune {
    /// Compiles the training step of the model in `dir` (its spec from `config.json`, or `spec`).
    pub fn new(
        dir: &Path,
        spec_path: Option<&Path>,
        tuning: Tuning,
        options: &GradientOptions,
    ) -> Result<Finetune, Error> {
        let checkpoint = Checkpoint::open(dir)?;
        let spec = resolve_spec(checkpoint.config(), spec_path)?;
        let compile = CompileOptions::default();
        let quantize = crate::quantized::load_options(&checkpoint, options.quantize.as_ref())?;
        match tuning {
            Tuning::Full if quantize.is_some() => Err(Error::Usage(
                "full fine-tuning trains every weight, and 4-bit weights cannot be trained; \
                 train an adapter on the 4-bit base instead (QLoRA: --targets or --adapter)"
                    .into(),
            )),
            Tuning::Full => {
                let lowered = kiln_frontend::compile(&spec, checkpoint.config(), &compile)?;
                let names = weight_names(&lowered);
                let program = GradientProgram::new(&lowered, checkpoint, &names, options)?;
                let params = program.checkpoint_values()?;
                Ok(Finetune { program, params, adapter: None })
            }
            Tuning::Adapter(adapter) => {
                let (mut lowered, weights) = lora_graph(&spec, checkpoint.config(), &compile, adapter.config())?;
                quantize_base(&mut lowered, &weights, quantize.as_ref())?;
                Finetune::for_adapter(&lowered, &weights, adapter, checkpoint, options)
            }
            Tuning::NewAdapter { config, seed } => {
                let (mut lowered, weights) = lora_graph(&spec, checkpoint.config(), &compile, &config)?;
                quantize_base(&mut lowered, &weights, quantize.as_ref())?;
                let adapter = Adapter::init(config, &weights, seed);
                Finetune::for_adapter(&lowered, &weights, adapter, checkpoint, options)
            }
        }
    }
}

/// QLoRA: the base's weights quantized by `quantize` (the adapter's tensors stay f32), before
/// the training graph is built, so gradients flow to the adapter through the 4-bit products.
fn quantize_base(
    lowered: &mut Graph,
    adapter_weights: &[AdapterWeight],
    quantize: Option<&QuantizeOptions>,
) -> Result<(), Error> {
    match quantize {
        Some(options) => quantize_adapted(lowered, adapter_weights, options).map(drop),
        None => Ok(()),
    }
}

impl Finetune {
    /// The training step of `adapter`'s tensors on `lowered`, a graph the adapter's rewrite
    /// introduced `weights` into.
    fn for_adapter(
        lowered: &Graph,
        weights: &[AdapterWeight],
        adapter: Adapter,
        checkpoint: Checkpoint,
        options: &GradientOptions,
    ) -> Result<Finetune, Error> {
        let names: Vec<String> = weights.iter().map(|w| w.name.clone()).collect();
        let program = GradientProgram::new(lowered, checkpoint, &names, options)?;
        let params = names
            .iter()
            .map(|n| {
                adapter.tensor(n).map(|t| t.data.clone()).ok_or_else(|| {
                    Error::Usage(format!("the adapter has no tensor `{n}` for a product its targets match"))
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Finetune { program, params, adapter: Some(adapter) })
    }
}

/// The distinct weights a graph reads, in input order: what full fine-tuning trains.
pub fn weight_names(graph: &Graph) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in graph.inputs().iter().filter_map(|&n| graph.param(n)) {
        if p.role == ParamRole::Weight && !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    names
}

impl Objective for Finetune {
    fn trainables(&self) -> &[TrainableSpec] {
        self.program.trainables()
    }

    fn loss_and_grad(&mut self, params: &[Vec<f32>], tokens: &[i64]) -> Result<(f32, Vec<Vec<f32>>), Error> {
        self.program.loss_and_grad(params, tokens)
    }

    fn loss(&mut self, params: &[Vec<f32>], tokens: &[i64]) -> Result<f32, Error> {
        self.program.loss(params, tokens)
    }

    /// The sequences of a batch run concurrently (each compiled program is shared read-only);
    /// small models gain more from this than from splitting each product across threads.
    fn batch_loss_and_grad(&mut self, params: &[Vec<f32>], batch: &[&[i64]]) -> Result<Vec<LossAndGrad>, Error> {
        use rayon::prelude::*;
        batch.par_iter().map(|tokens| self.program.loss_and_grad(params, tokens)).collect()
    }
}

/// Saves a trained LoRA adapter in peft's format (`adapter_model.safetensors` and
/// `adapter_config.json`, each replaced atomically).
#[derive(Debug)]
pub struct SaveAdapter {
    pub config: AdapterConfig,
}

impl SaveTrained for SaveAdapter {
    fn file_names(&self) -> Vec<String> {
        vec![crate::adapter::WEIGHTS_FILE.into(), crate::adapter::CONFIG_FILE.into()]
    }

    fn save(&mut self, dir: &Path, trainables: &[TrainableSpec], params: &[Vec<f32>]) -> Result<(), Error> {
        let tensors = trainables
            .iter()
            .zip(params)
            .map(|(t, p)| (t.name.clone(), AdapterTensor { shape: t.shape.clone(), data: p.clone() }));
        // The trainer owns the no-overwrite check of the run directory, so replacing is right here.
        Adapter::from_tensors(self.config.clone(), tensors)?.save(dir, true)
    }
}
