//! A model's training step, compiled: the loss (mean next-token cross-entropy) of a token
//! sequence and its gradient with respect to chosen weights, the *trainables*.
//!
//! The lowered model graph (after any adapter rewrite) goes through the autodiff pass and then
//! the default pipeline, like any graph; a second graph computes the loss alone (validation).
//! Trainables are passed in by the caller on every call (they change every optimizer step);
//! every other weight is read from the checkpoint's memory map, and recurrent states start from
//! their declared initial values (each sequence is scored from a fresh state, as transformers does).
//!
//! Guarantee: gradients come back in [`GradientProgram::trainables`] order, one `Vec` per tensor
//! of exactly its element count; a trainable the loss does not depend on gets zeros.

use crate::checkpoint::Checkpoint;
use crate::model::Backend;
use crate::Error;
use kiln_backend::jit::{Jit, JitOptions};
use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{Graph, ParamRole};
use kiln_passes::PipelineOptions;
use std::borrow::Cow;

/// One tensor the optimizer updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trainable {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Trainable {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How to compile a training step.
#[derive(Clone, Debug, Default)]
pub struct GradientOptions {
    pub backend: Backend,
    pub passes: PipelineOptions,
}

/// Where one input of a compiled graph comes from.
#[derive(Debug)]
enum Source {
    Tokens,
    Frozen { name: String, shape: Vec<usize> },
    Trainable(usize),
    State { shape: Vec<usize>, init: Vec<f32> },
}

/// One compiled graph and how to feed it.
struct Program {
    graph: Graph,
    sources: Vec<Source>,
    executable: Box<dyn Executable + Send + Sync>,
}

/// The compiled training step of a model; see the module docs.
pub struct GradientProgram {
    checkpoint: Checkpoint,
    trainables: Vec<Trainable>,
    train: Program,
    eval: Program,
}

impl std::fmt::Debug for GradientProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientProgram").field("trainables", &self.trainables.len()).finish_non_exhaustive()
    }
}

impl GradientProgram {
    /// Compiles the training step of `lowered` (a model graph fresh from the front end, before
    /// the pass pipeline) for the weights named in `trainables`; other weights are read from
    /// `checkpoint`.
    pub fn new(
        lowered: &Graph,
        checkpoint: Checkpoint,
        trainables: &[String],
        options: &GradientOptions,
    ) -> Result<GradientProgram, Error> {
        let mut train = kiln_passes::training_graph(lowered, trainables)?;
        let mut eval = kiln_passes::loss_graph(lowered)?;
        for g in [&mut train, &mut eval] {
            kiln_ir::verify(g)?;
            kiln_passes::default_pipeline().run(g, &options.passes)?;
            kiln_ir::verify(g)?;
        }
        let specs = trainables
            .iter()
            .map(|name| {
                let input = lowered
                    .inputs()
                    .iter()
                    .copied()
                    .find(|&n| lowered.param(n).is_some_and(|p| p.role == ParamRole::Weight && p.name == *name))
                    .ok_or_else(|| Error::Usage(format!("the model has no weight named `{name}` to train")))?;
                let shape = lowered.node(input).results[0].shape.dims().iter().filter_map(|d| d.fixed()).collect();
                Ok(Trainable { name: name.clone(), shape })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let train = Program::new(train, &specs, &checkpoint, options.backend)?;
        let eval = Program::new(eval, &specs, &checkpoint, options.backend)?;
        Ok(GradientProgram { checkpoint, trainables: specs, train, eval })
    }

    pub fn trainables(&self) -> &[Trainable] {
        &self.trainables
    }

    /// The training graph (loss and `grad.<name>` outputs), after the pass pipeline.
    pub fn graph(&self) -> &Graph {
        &self.train.graph
    }

    /// The trainables' current values in the checkpoint (to start full fine-tuning from).
    pub fn checkpoint_values(&self) -> Result<Vec<Vec<f32>>, Error> {
        self.trainables.iter().map(|t| Ok(self.checkpoint.tensor_f32(&t.name, &t.shape)?.into_owned())).collect()
    }

    /// The loss of `tokens` and its gradient for every trainable, given their values `params`.
    pub fn loss_and_grad(&self, params: &[Vec<f32>], tokens: &[i64]) -> Result<(f32, Vec<Vec<f32>>), Error> {
        let outputs = self.train.run(&self.checkpoint, &self.trainables, params, tokens)?;
        let mut loss = None;
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; self.trainables.len()];
        for (o, data) in self.train.graph.outputs().iter().zip(outputs) {
            if o.name == "loss" {
                loss = data.first().copied();
            } else if let Some(name) = o.name.strip_prefix("grad.") {
                if let Some(i) = self.trainables.iter().position(|t| t.name == name) {
                    grads[i] = Some(data);
                }
            }
        }
        let loss = loss.ok_or_else(|| Error::MissingOutput("loss".into()))?;
        let grads = grads
            .into_iter()
            .zip(&self.trainables)
            .map(|(g, t)| g.ok_or_else(|| Error::MissingOutput(format!("grad.{}", t.name))))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok((loss, grads))
    }

    /// The loss of `tokens` alone.
    pub fn loss(&self, params: &[Vec<f32>], tokens: &[i64]) -> Result<f32, Error> {
        let outputs = self.eval.run(&self.checkpoint, &self.trainables, params, tokens)?;
        outputs.first().and_then(|l| l.first().copied()).ok_or_else(|| Error::MissingOutput("loss".into()))
    }
}

impl Program {
    fn new(
        graph: Graph,
        trainables: &[Trainable],
        checkpoint: &Checkpoint,
        backend: Backend,
    ) -> Result<Program, Error> {
        let mut sources = Vec::with_capacity(graph.inputs().len());
        for &input in graph.inputs() {
            let Some(param) = graph.param(input) else { continue };
            let shape: Vec<usize> =
                graph.node(input).results[0].shape.dims().iter().filter_map(|d| d.fixed()).collect();
            sources.push(match param.role {
                ParamRole::Tokens => Source::Tokens,
                ParamRole::Weight => match trainables.iter().position(|t| t.name == param.name) {
                    Some(i) => Source::Trainable(i),
                    None => {
                        // Checked now, so a missing or misshaped weight fails at load, not mid-training.
                        checkpoint.tensor_f32(&param.name, &shape).map_err(|source| {
                            match &graph.node(input).origin {
                                Some(o) => Error::Weight { source, declared: o.to_string() },
                                None => Error::Checkpoint(source),
                            }
                        })?;
                        Source::Frozen { name: param.name.clone(), shape }
                    }
                },
                ParamRole::State { init } => {
                    let n = shape.iter().product();
                    Source::State { shape, init: vec![init; n] }
                }
                ParamRole::Argument { .. } => {
                    return Err(Error::Usage("a top-level graph cannot take scan arguments".into()))
                }
            });
        }
        let executable: Box<dyn Executable + Send + Sync> = match backend {
            Backend::Interpreter => Box::new(Interpreter::new(graph.clone())),
            Backend::Jit => Box::new(Jit::new(graph.clone(), &JitOptions::default())?),
        };
        Ok(Program { graph, sources, executable })
    }

    fn run(
        &self,
        checkpoint: &Checkpoint,
        trainables: &[Trainable],
        params: &[Vec<f32>],
        tokens: &[i64],
    ) -> Result<Vec<Vec<f32>>, Error> {
        if tokens.len() < 2 {
            return Err(Error::Usage(format!(
                "a training sequence needs at least 2 tokens (one to predict), got {}",
                tokens.len()
            )));
        }
        if params.len() != trainables.len() {
            return Err(Error::Usage(format!(
                "{} trainable tensors given, {} expected",
                params.len(),
                trainables.len()
            )));
        }
        for (p, t) in params.iter().zip(trainables) {
            if p.len() != t.len() {
                return Err(Error::Usage(format!(
                    "trainable `{}` has {} values, its shape {:?} needs {}",
                    t.name,
                    p.len(),
                    t.shape,
                    t.len()
                )));
            }
        }
        let mut inputs = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            inputs.push(match s {
                Source::Tokens => Tensor::borrowed_i64(&[tokens.len()], tokens)?,
                Source::Frozen { name, shape } => match checkpoint.tensor_f32(name, shape)? {
                    Cow::Borrowed(data) => Tensor::borrowed_f32(shape, data)?,
                    Cow::Owned(data) => Tensor::f32(shape, data)?,
                },
                Source::Trainable(i) => Tensor::borrowed_f32(&trainables[*i].shape, &params[*i])?,
                Source::State { shape, init } => Tensor::borrowed_f32(shape, init)?,
            });
        }
        let outputs = self.executable.run(&inputs)?;
        outputs
            .into_iter()
            .zip(self.graph.outputs())
            .map(|(t, o)| t.into_f32_vec().ok_or_else(|| Error::MissingOutput(format!("{} (as f32)", o.name))))
            .collect()
    }
}
