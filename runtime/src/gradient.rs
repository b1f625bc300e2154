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
use crate::quantized::quantized_inputs;
use crate::train::TrainableSpec;
use crate::Error;
use kiln_backend::jit::{Jit, JitOptions};
use kiln_backend::quant::QuantizedMatrix;
use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{Graph, OutputRole, Param, ParamRole};
use kiln_passes::PipelineOptions;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes of one training step's memory; see [`GradientProgram::planned_memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedMemory {
    /// The planned arena: the peak of the backward pass's intermediates.
    pub arena: i64,
    /// Every intermediate in its own buffer (what no planning would need).
    pub unplanned: i64,
    /// The gradients of the trainables (outputs, outside the arena).
    pub gradients: i64,
}

/// How to compile a training step.
#[derive(Clone, Debug, Default)]
pub struct GradientOptions {
    pub backend: Backend,
    pub passes: PipelineOptions,
    /// Backpropagate through sequences longer than this many tokens in chunks of it, keeping
    /// only the states at chunk boundaries (see [`kiln_passes::chunk_training_graph`]): memory
    /// bounded by one chunk, the forward pass run twice, the same gradients.
    pub chunk: Option<usize>,
    /// Quantize the frozen weights to 4 bits (QLoRA; see [`crate::finetune::Finetune::new`]).
    pub quantize: Option<kiln_passes::QuantizeOptions>,
}

/// Where one input of a compiled graph comes from.
#[derive(Debug)]
enum Source {
    Tokens,
    /// The token each position predicts (chunk graphs).
    Targets,
    /// A frozen weight read from the memory map on every call (f32, aligned).
    Mapped {
        name: String,
        shape: Vec<usize>,
    },
    /// A frozen weight converted once when compiling (another dtype, or unaligned).
    Converted {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    /// A frozen 4-bit weight, read packed or quantized when compiling.
    Quantized(Arc<QuantizedMatrix>),
    Trainable(usize),
    /// The `index`-th state (in [`GradientProgram::states`] order), given by the caller.
    State(usize),
    /// The adjoint of the `index`-th state's next value, given by the caller.
    Cotangent(usize),
}

/// What one run of a program is fed besides the frozen weights.
struct Feed<'a> {
    tokens: &'a [i64],
    targets: &'a [i64],
    params: &'a [Vec<f32>],
    states: &'a [Vec<f32>],
    cotangents: &'a [Vec<f32>],
}

/// One recurrent state of the model.
#[derive(Clone, Debug)]
struct StateSpec {
    name: String,
    shape: Vec<usize>,
    init: f32,
}

/// The programs of chunked backpropagation.
struct Chunked {
    size: usize,
    /// The model with only its next states as outputs (the forward sweep).
    advance: Program,
    /// The chunk training step.
    step: Program,
}

/// One compiled graph and how to feed it.
struct Program {
    graph: Graph,
    sources: Vec<Source>,
    /// Shapes of the trainables and of the states, by index.
    shapes: Vec<Vec<usize>>,
    state_shapes: Vec<Vec<usize>>,
    executable: Box<dyn Executable + Send + Sync>,
}

/// The compiled training step of a model; see the module docs.
pub struct GradientProgram {
    checkpoint: Checkpoint,
    trainables: Vec<TrainableSpec>,
    states: Vec<StateSpec>,
    vocab: Option<usize>,
    train: Program,
    eval: Program,
    chunked: Option<Chunked>,
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
        let optimize = |mut g: Graph| -> Result<Graph, Error> {
            kiln_ir::verify(&g)?;
            kiln_passes::default_pipeline().run(&mut g, &options.passes)?;
            kiln_ir::verify(&g)?;
            Ok(g)
        };
        let train = optimize(kiln_passes::training_graph(lowered, trainables)?)?;
        let eval = optimize(kiln_passes::loss_graph(lowered)?)?;
        let states: Vec<StateSpec> = lowered
            .inputs()
            .iter()
            .filter_map(|&n| match lowered.param(n) {
                Some(Param { role: ParamRole::State { init }, name }) => {
                    Some(StateSpec { name: name.clone(), shape: fixed_shape(lowered, n), init: *init })
                }
                _ => None,
            })
            .collect();
        let specs = trainables
            .iter()
            .map(|name| {
                let input = lowered
                    .inputs()
                    .iter()
                    .copied()
                    .find(|&n| lowered.param(n).is_some_and(|p| p.role == ParamRole::Weight && p.name == *name))
                    .ok_or_else(|| Error::Usage(format!("the model has no weight named `{name}` to train")))?;
                Ok(TrainableSpec { name: name.clone(), shape: fixed_shape(lowered, input) })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Quantized once for every program (each is a graph over the same weights).
        let quantized = quantized_inputs(&checkpoint, lowered)?;
        let build = |g: Graph| Program::new(g, &specs, &states, &checkpoint, &quantized, options.backend);
        let train = build(train)?;
        let eval = build(eval)?;
        let chunked = match options.chunk {
            Some(0) => return Err(Error::Usage("the chunk length must be at least 1 token".into())),
            Some(size) => {
                let mut advance = lowered.clone();
                advance.retain_outputs(|o| o.role == OutputRole::State);
                let step = optimize(kiln_passes::chunk_training_graph(lowered, trainables)?)?;
                Some(Chunked { size, advance: build(optimize(advance)?)?, step: build(step)? })
            }
            None => None,
        };
        let vocab = crate::model::token_table_rows(lowered);
        Ok(GradientProgram { checkpoint, trainables: specs, states, vocab, train, eval, chunked })
    }

    pub fn trainables(&self) -> &[TrainableSpec] {
        &self.trainables
    }

    /// Number of rows of the table token ids index (the vocabulary), when the graph has one.
    pub fn vocab_size(&self) -> Option<usize> {
        self.vocab
    }

    /// The memory of one training step for a sequence of `t` tokens, as planned: the arena the
    /// memory plan lays out (every activation, saved carry and gradient), the sum of all those
    /// intermediates were each given its own buffer, and the trainables' gradients among them.
    pub fn planned_memory(&self, t: usize) -> Option<PlannedMemory> {
        let plan = self.train.graph.plan()?;
        let unplanned = kiln_ir::plan::intermediate_bytes(&self.train.graph, true)?.at(t);
        let gradients = self.trainables.iter().map(|s| s.len() as i64 * 4).sum();
        Some(PlannedMemory { arena: plan.arena_bytes(t), unplanned, gradients })
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
        self.check(params, tokens)?;
        if let Some(chunked) = self.chunked.as_ref().filter(|c| tokens.len() > c.size) {
            return self.chunked_loss_and_grad(chunked, params, tokens);
        }
        let outputs = self.train.run(&self.checkpoint, &self.feed(tokens, params))?;
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
        self.check(params, tokens)?;
        let outputs = self.eval.run(&self.checkpoint, &self.feed(tokens, params))?;
        outputs.first().and_then(|l| l.first().copied()).ok_or_else(|| Error::MissingOutput("loss".into()))
    }

    fn feed<'a>(&self, tokens: &'a [i64], params: &'a [Vec<f32>]) -> Feed<'a> {
        Feed { tokens, targets: &[], params, states: &[], cotangents: &[] }
    }

    fn check(&self, params: &[Vec<f32>], tokens: &[i64]) -> Result<(), Error> {
        if tokens.len() < 2 {
            return Err(Error::Usage(format!(
                "a training sequence needs at least 2 tokens (one to predict), got {}",
                tokens.len()
            )));
        }
        if params.len() != self.trainables.len() {
            return Err(Error::Usage(format!(
                "{} trainable tensors given, {} expected",
                params.len(),
                self.trainables.len()
            )));
        }
        for (p, t) in params.iter().zip(&self.trainables) {
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
        Ok(())
    }

    /// Backpropagation through time in chunks: a forward sweep keeping the state at every chunk
    /// boundary, then the chunks from last to first, each passing its starting state's adjoint
    /// to the one before it. Sums are divided by the number of predictions at the end.
    fn chunked_loss_and_grad(
        &self,
        chunked: &Chunked,
        params: &[Vec<f32>],
        tokens: &[i64],
    ) -> Result<(f32, Vec<Vec<f32>>), Error> {
        let starts: Vec<usize> = (0..tokens.len()).step_by(chunked.size).collect();
        let mut boundary: Vec<Vec<Vec<f32>>> =
            vec![self.states.iter().map(|s| vec![s.init; s.shape.iter().product()]).collect()];
        for &start in &starts[..starts.len() - 1] {
            let piece = &tokens[start..start + chunked.size];
            let last = boundary.last().map(Vec::as_slice).unwrap_or_default();
            let feed = Feed { tokens: piece, targets: &[], params, states: last, cotangents: &[] };
            let next = chunked.advance.run(&self.checkpoint, &feed)?;
            boundary.push(self.states_by_name(&chunked.advance, next)?);
        }

        let mut cotangents: Vec<Vec<f32>> = self.states.iter().map(|s| vec![0.0; s.shape.iter().product()]).collect();
        let mut loss_sum = 0f64;
        let mut count = 0f64;
        let mut grads: Vec<Vec<f32>> = self.trainables.iter().map(|t| vec![0.0; t.len()]).collect();
        for (&start, states) in starts.iter().zip(&boundary).rev() {
            let end = (start + chunked.size).min(tokens.len());
            let targets: Vec<i64> = (start..end).map(|p| tokens.get(p + 1).copied().unwrap_or(-1)).collect();
            let feed = Feed { tokens: &tokens[start..end], targets: &targets, params, states, cotangents: &cotangents };
            let outputs = chunked.step.run(&self.checkpoint, &feed)?;
            let mut next_cotangents = cotangents.clone();
            for (o, data) in chunked.step.graph.outputs().iter().zip(outputs) {
                let scalar = || data.first().copied().unwrap_or(f32::NAN) as f64;
                if o.name == "loss_sum" {
                    loss_sum += scalar();
                } else if o.name == "count" {
                    count += scalar();
                } else if let Some(name) = o.name.strip_prefix("grad.") {
                    if let Some(i) = self.trainables.iter().position(|t| t.name == name) {
                        grads[i].iter_mut().zip(&data).for_each(|(g, d)| *g += d);
                    }
                } else if let Some(name) = o.name.strip_prefix("dstate.") {
                    if let Some(i) = self.states.iter().position(|s| s.name == name) {
                        next_cotangents[i] = data;
                    }
                }
            }
            cotangents = next_cotangents;
        }
        let scale = (1.0 / count) as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
        Ok(((loss_sum / count) as f32, grads))
    }

    /// Orders a program's state outputs as [`GradientProgram::states`].
    fn states_by_name(&self, program: &Program, outputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, Error> {
        let mut by_name: Vec<Option<Vec<f32>>> = vec![None; self.states.len()];
        for (o, data) in program.graph.outputs().iter().zip(outputs) {
            if let Some(i) = self.states.iter().position(|s| s.name == o.name && o.role == OutputRole::State) {
                by_name[i] = Some(data);
            }
        }
        by_name
            .into_iter()
            .zip(&self.states)
            .map(|(d, s)| d.ok_or_else(|| Error::MissingOutput(s.name.clone())))
            .collect()
    }
}

fn fixed_shape(graph: &Graph, input: kiln_ir::NodeId) -> Vec<usize> {
    graph.node(input).results[0].shape.dims().iter().filter_map(|d| d.fixed()).collect()
}

impl Program {
    fn new(
        graph: Graph,
        trainables: &[TrainableSpec],
        states: &[StateSpec],
        checkpoint: &Checkpoint,
        quantized: &BTreeMap<String, Arc<QuantizedMatrix>>,
        backend: Backend,
    ) -> Result<Program, Error> {
        let state_index = |name: &str| {
            states.iter().position(|s| s.name == name).ok_or_else(|| Error::MissingOutput(format!("state `{name}`")))
        };
        let mut sources = Vec::with_capacity(graph.inputs().len());
        for &input in graph.inputs() {
            let Some(param) = graph.param(input) else { continue };
            let shape = fixed_shape(&graph, input);
            sources.push(match param.role {
                ParamRole::Tokens if param.name == "targets" => Source::Targets,
                ParamRole::Tokens => Source::Tokens,
                ParamRole::Weight => match trainables.iter().position(|t| t.name == param.name) {
                    Some(i) => Source::Trainable(i),
                    None if graph.value_type(input.into()).dtype.is_quantized() => {
                        Source::Quantized(quantized.get(&param.name).cloned().ok_or_else(|| {
                            Error::Usage(format!("the quantized weight `{}` is not a matrix", param.name))
                        })?)
                    }
                    None => {
                        // Read now, so a missing or misshaped weight fails at load, not mid-training,
                        // and a weight that needs converting is converted once.
                        let read = checkpoint.tensor_f32(&param.name, &shape).map_err(|source| {
                            match &graph.node(input).origin {
                                Some(o) => Error::Weight { source, declared: o.to_string() },
                                None => Error::Checkpoint(source),
                            }
                        })?;
                        match read {
                            Cow::Borrowed(_) => Source::Mapped { name: param.name.clone(), shape },
                            Cow::Owned(data) => Source::Converted { shape, data },
                        }
                    }
                },
                ParamRole::State { .. } => Source::State(state_index(&param.name)?),
                ParamRole::Cotangent => Source::Cotangent(state_index(&param.name)?),
                ParamRole::Argument { .. } => {
                    return Err(Error::Usage("a top-level graph cannot take scan arguments".into()))
                }
            });
        }
        let executable: Box<dyn Executable + Send + Sync> = match backend {
            Backend::Interpreter => Box::new(Interpreter::new(graph.clone())),
            Backend::Jit => Box::new(Jit::new(graph.clone(), &JitOptions::default())?),
        };
        let shapes = trainables.iter().map(|t| t.shape.clone()).collect();
        let state_shapes = states.iter().map(|s| s.shape.clone()).collect();
        Ok(Program { graph, sources, shapes, state_shapes, executable })
    }

    fn run(&self, checkpoint: &Checkpoint, feed: &Feed<'_>) -> Result<Vec<Vec<f32>>, Error> {
        let missing = |what: &str| Error::Usage(format!("the training program needs {what}, which was not given"));
        let mut inputs = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            inputs.push(match s {
                Source::Tokens => Tensor::borrowed_i64(&[feed.tokens.len()], feed.tokens)?,
                Source::Targets => Tensor::borrowed_i64(&[feed.targets.len()], feed.targets)?,
                Source::Mapped { name, shape } => match checkpoint.tensor_f32(name, shape)? {
                    Cow::Borrowed(data) => Tensor::borrowed_f32(shape, data)?,
                    Cow::Owned(data) => Tensor::f32(shape, data)?,
                },
                Source::Converted { shape, data } => Tensor::borrowed_f32(shape, data)?,
                Source::Quantized(matrix) => Tensor::quantized(Arc::clone(matrix)),
                Source::Trainable(i) => {
                    let values = feed.params.get(*i).ok_or_else(|| missing("a trainable"))?;
                    Tensor::borrowed_f32(&self.shapes[*i], values)?
                }
                Source::State(i) => {
                    let values = feed.states.get(*i).ok_or_else(|| missing("a state"))?;
                    Tensor::borrowed_f32(&self.state_shapes[*i], values)?
                }
                Source::Cotangent(i) => {
                    let values = feed.cotangents.get(*i).ok_or_else(|| missing("a state's adjoint"))?;
                    Tensor::borrowed_f32(&self.state_shapes[*i], values)?
                }
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
