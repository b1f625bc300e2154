//! A loaded model: a spec compiled for a checkpoint's config, its weights bound from the
//! memory-mapped safetensors files, and a backend ready to run it.
//!
//! The caller holds the recurrent [`State`]: running `tokens[..k]` and then `tokens[k..]` with the
//! state returned by the first call gives the same logits as one run over all tokens.

use crate::adapter::{compile_spec_adapted, Adapter, AdapterWeight};
use crate::checkpoint::Checkpoint;
use crate::quantized::quantized_inputs;
use crate::specs;
use crate::Error;
use kiln_backend::jit::{Jit, JitOptions};
use kiln_backend::quant::QuantizedMatrix;
use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_frontend::{CompileOptions, SpecFile};
use kiln_ir::{Graph, Op, OutputRole, ParamRole};
use kiln_passes::{PipelineOptions, QuantizeOptions, QuantizeReport, RunReport};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which backend executes the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter.
    Interpreter,
    /// Fused kernels compiled to native code with Cranelift, matrix products through `gemm` and
    /// a SIMD matrix-vector kernel; the rest interpreted. The default: it agrees with the
    /// interpreter to 1e-5 relative on every fixture (`tests/jit_parity.rs`).
    #[default]
    Jit,
}

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A spec file to use instead of the built-in spec matching `config.json`'s `model_type`.
    pub spec: Option<PathBuf>,
    pub backend: Backend,
    pub compile: CompileOptions,
    /// Which passes run (and which are disabled) after lowering.
    pub passes: PipelineOptions,
    /// An adapter (LoRA) applied to the model: its rewrite runs before the passes, its tensors
    /// are bound from it and every other weight from the checkpoint.
    pub adapter: Option<Adapter>,
    /// Quantize weights to 4 bits at load (`--quantize`). A checkpoint written by
    /// `kiln quantize` is loaded quantized without it.
    pub quantize: Option<QuantizeOptions>,
}

/// Compiles a spec for a config: lowering, the default pass pipeline, verification.
pub fn compile_spec(spec: &SpecFile, config: &serde_json::Value, options: &CompileOptions) -> Result<Graph, Error> {
    compile_spec_with(spec, config, options, &PipelineOptions::default()).map(|(g, _)| g)
}

/// [`compile_spec`] with control over the passes; also returns what each pass did.
pub fn compile_spec_with(
    spec: &SpecFile,
    config: &serde_json::Value,
    options: &CompileOptions,
    passes: &PipelineOptions,
) -> Result<(Graph, RunReport), Error> {
    compile_spec_adapted(spec, config, options, None, None, passes).map(|c| (c.graph, c.report))
}

/// The spec a model directory (or `--spec`) calls for.
pub fn resolve_spec(config: &serde_json::Value, spec: Option<&Path>) -> Result<SpecFile, Error> {
    match spec {
        Some(path) => specs::parse_file(path),
        None => {
            let ty = config.get("model_type").and_then(|v| v.as_str()).ok_or(Error::NoModelType)?;
            specs::for_model_type(ty)
        }
    }
}

/// Where one graph input's data comes from.
#[derive(Debug)]
enum Binding {
    Tokens,
    /// A weight borrowed from the memory map on every call (f32, aligned).
    Mapped {
        name: String,
        shape: Vec<usize>,
    },
    /// A weight converted once at load (another dtype, or unaligned).
    Owned {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    /// A 4-bit weight, read packed or quantized at load.
    Quantized {
        matrix: Arc<QuantizedMatrix>,
    },
    /// An adapter tensor, copied from the adapter (replaced by [`Model::set_adapter`]).
    Adapter {
        weight: AdapterWeight,
        data: Vec<f32>,
    },
    /// The `index`-th state tensor.
    State {
        index: usize,
    },
}

/// One state tensor's description.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: f32,
}

/// The recurrent state carried between calls, held by the caller.
#[derive(Clone, Debug)]
pub struct State {
    owner: String,
    slots: Vec<StateSlot>,
    values: Vec<Vec<f32>>,
}

impl State {
    /// State tensors by name, in the graph's order.
    pub fn tensors(&self) -> impl Iterator<Item = (&StateSlot, &[f32])> {
        self.slots.iter().zip(self.values.iter().map(Vec::as_slice))
    }

    /// Total number of f32 values held.
    pub fn len(&self) -> usize {
        self.values.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Logits of one call: `tokens` rows of `vocab` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub tokens: usize,
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl Logits {
    pub fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.vocab..(t + 1) * self.vocab]
    }

    pub fn last(&self) -> &[f32] {
        self.row(self.tokens - 1)
    }
}

/// A model ready to run.
pub struct Model {
    name: String,
    graph: Graph,
    checkpoint: Checkpoint,
    bindings: Vec<Binding>,
    slots: Vec<StateSlot>,
    executable: Box<dyn Executable + Send + Sync>,
    vocab: Option<usize>,
    logits_index: usize,
    adapter_weights: Vec<AdapterWeight>,
    quantized: Option<QuantizeReport>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).field("dir", &self.checkpoint.dir()).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a model directory as `save_pretrained` writes it.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Model, Error> {
        let checkpoint = Checkpoint::open(dir)?;
        let spec = resolve_spec(checkpoint.config(), options.spec.as_deref())?;
        Model::with_spec(&spec, checkpoint, options)
    }

    /// Compiles `spec` for `checkpoint` (and `options.adapter`) and binds its weights.
    pub fn with_spec(spec: &SpecFile, checkpoint: Checkpoint, options: &LoadOptions) -> Result<Model, Error> {
        let adapter = options.adapter.as_ref();
        let quantize = crate::quantized::load_options(&checkpoint, options.quantize.as_ref())?;
        let compiled = compile_spec_adapted(
            spec,
            checkpoint.config(),
            &options.compile,
            adapter.map(Adapter::config),
            quantize.as_ref(),
            &options.passes,
        )?;
        Model::with_graph(compiled.graph, compiled.adapter_weights, compiled.quantized, checkpoint, options)
    }

    /// Binds the weights of an already compiled `graph` (which may carry outputs besides
    /// `logits` and the state, as calibration adds; [`Model::run`] returns them all).
    pub(crate) fn with_graph(
        graph: Graph,
        adapter_weights: Vec<AdapterWeight>,
        decisions: Option<QuantizeReport>,
        checkpoint: Checkpoint,
        options: &LoadOptions,
    ) -> Result<Model, Error> {
        let adapter = options.adapter.as_ref();
        let mut bindings = Vec::with_capacity(graph.inputs().len());
        let mut slots = Vec::new();
        let mut quantized = quantized_inputs(&checkpoint, &graph)?;
        for &input in graph.inputs() {
            let Some(param) = graph.param(input) else { continue };
            let ty = &graph.node(input).results[0];
            let shape: Vec<usize> = ty.shape.dims().iter().filter_map(|d| d.fixed()).collect();
            let adapted = adapter_weights.iter().find(|w| w.name == param.name);
            bindings.push(match (param.role, adapted, adapter) {
                (ParamRole::Tokens, ..) => Binding::Tokens,
                (ParamRole::Weight, Some(w), Some(a)) => {
                    Binding::Adapter { weight: w.clone(), data: a.values_for(w)?.to_vec() }
                }
                (ParamRole::Weight, ..) if ty.dtype.is_quantized() => {
                    let matrix = quantized.remove(&param.name).ok_or_else(|| {
                        Error::Usage(format!("the quantized weight `{}` is not a matrix", param.name))
                    })?;
                    Binding::Quantized { matrix }
                }
                (ParamRole::Weight, ..) => match checkpoint.tensor_f32(&param.name, &shape).map_err(|source| {
                    match &graph.node(input).origin {
                        Some(o) => Error::Weight { source, declared: o.to_string() },
                        None => Error::Checkpoint(source),
                    }
                })? {
                    Cow::Borrowed(_) => Binding::Mapped { name: param.name.clone(), shape },
                    Cow::Owned(data) => Binding::Owned { shape, data },
                },
                (ParamRole::State { init }, ..) => {
                    slots.push(StateSlot { name: param.name.clone(), shape, init });
                    Binding::State { index: slots.len() - 1 }
                }
                (ParamRole::Argument { .. } | ParamRole::Cotangent, ..) => {
                    return Err(Error::Usage(format!(
                        "a model graph cannot take the {:?} input `{}`",
                        param.role, param.name
                    )))
                }
            });
        }
        if let Some(a) = adapter {
            a.check_all_used(&adapter_weights)?;
        }
        let logits_index = graph
            .outputs()
            .iter()
            .position(|o| o.role == OutputRole::Result && o.name == "logits")
            .ok_or_else(|| Error::MissingOutput("logits".into()))?;
        let vocab = token_table_rows(&graph);
        let executable: Box<dyn Executable + Send + Sync> = match options.backend {
            Backend::Interpreter => Box::new(Interpreter::new(graph.clone())),
            Backend::Jit => Box::new(Jit::new(graph.clone(), &JitOptions::default())?),
        };
        Ok(Model {
            name: graph.name.clone(),
            graph,
            checkpoint,
            bindings,
            slots,
            executable,
            vocab,
            logits_index,
            adapter_weights,
            quantized: decisions,
        })
    }

    /// The spec's model name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The compiled graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The tensors the adapter's rewrite added (empty without an adapter): their names in the
    /// graph and the adapter file, shapes, modules, initial-value rules and declarations.
    pub fn adapter_weights(&self) -> &[AdapterWeight] {
        &self.adapter_weights
    }

    /// Rebinds the adapter tensors from `adapter` (updated values of the adapter the model was
    /// loaded with), checking that it holds exactly the tensors the model needs, at their shapes.
    pub fn set_adapter(&mut self, adapter: &Adapter) -> Result<(), Error> {
        adapter.check_all_used(&self.adapter_weights)?;
        let mut fresh = Vec::new();
        for b in &self.bindings {
            if let Binding::Adapter { weight, .. } = b {
                fresh.push(adapter.values_for(weight)?.to_vec());
            }
        }
        let slots = self.bindings.iter_mut().filter_map(|b| match b {
            Binding::Adapter { data, .. } => Some(data),
            _ => None,
        });
        for (slot, values) in slots.zip(fresh) {
            *slot = values;
        }
        Ok(())
    }

    /// What the quantize pass decided for every weight matrix, when the model is quantized.
    pub fn quantization(&self) -> Option<&QuantizeReport> {
        self.quantized.as_ref()
    }

    /// Number of rows of the table token ids index (the vocabulary), when the graph has one.
    pub fn vocab_size(&self) -> Option<usize> {
        self.vocab
    }

    /// A fresh state: every tensor filled with its declared initial value.
    pub fn new_state(&self) -> State {
        State {
            owner: self.identity(),
            slots: self.slots.clone(),
            values: self.slots.iter().map(|s| vec![s.init; s.shape.iter().product()]).collect(),
        }
    }

    fn identity(&self) -> String {
        format!("model `{}` ({})", self.name, self.checkpoint.dir().display())
    }

    /// Runs `tokens` from `state`, returning their logits and advancing the state.
    pub fn forward(&self, tokens: &[i64], state: &mut State) -> Result<Logits, Error> {
        let outputs = self.run(tokens, state)?;
        let data = outputs
            .into_iter()
            .nth(self.logits_index)
            .flatten()
            .and_then(Tensor::into_f32_vec)
            .ok_or_else(|| Error::MissingOutput("logits (as f32)".into()))?;
        Ok(Logits { tokens: tokens.len(), vocab: data.len() / tokens.len(), data })
    }

    /// Runs `tokens` from `state`, advancing the state; returns the graph's outputs in its
    /// order, `None` for the state outputs (moved into `state`).
    pub(crate) fn run(&self, tokens: &[i64], state: &mut State) -> Result<Vec<Option<Tensor<'static>>>, Error> {
        if tokens.is_empty() {
            return Err(Error::NoTokens);
        }
        if state.slots != self.slots {
            return Err(Error::WrongState { expected: self.identity(), found: state.owner.clone() });
        }
        if let Some(vocab) = self.vocab {
            if let Some((position, &id)) = tokens.iter().enumerate().find(|(_, &id)| id < 0 || id as usize >= vocab) {
                return Err(Error::TokenOutOfRange { id, position, vocab });
            }
        }
        let mut inputs = Vec::with_capacity(self.bindings.len());
        for b in &self.bindings {
            inputs.push(match b {
                Binding::Tokens => Tensor::i64(&[tokens.len()], tokens.to_vec())?,
                Binding::Mapped { name, shape } => match self.checkpoint.tensor_f32(name, shape)? {
                    Cow::Borrowed(data) => Tensor::borrowed_f32(shape, data)?,
                    Cow::Owned(data) => Tensor::f32(shape, data)?,
                },
                Binding::Owned { shape, data } => Tensor::borrowed_f32(shape, data)?,
                Binding::Quantized { matrix } => Tensor::quantized(Arc::clone(matrix)),
                Binding::Adapter { weight, data } => Tensor::borrowed_f32(&weight.shape, data)?,
                Binding::State { index } => Tensor::borrowed_f32(&self.slots[*index].shape, &state.values[*index])?,
            });
        }
        let outputs = self.executable.run(&inputs)?;
        drop(inputs);
        let mut results = Vec::with_capacity(outputs.len());
        for (o, t) in self.graph.outputs().iter().zip(outputs) {
            let slot = self.slots.iter().position(|s| s.name == o.name);
            match (o.role, slot) {
                (OutputRole::State, Some(k)) => {
                    state.values[k] =
                        t.into_f32_vec().ok_or_else(|| Error::MissingOutput(format!("{} (as f32)", o.name)))?;
                    results.push(None);
                }
                _ => results.push(Some(t)),
            }
        }
        Ok(results)
    }
}

/// Rows of the table that a `gather` indexes with the token ids.
pub(crate) fn token_table_rows(graph: &Graph) -> Option<usize> {
    let tokens =
        graph.inputs().iter().copied().find(|&n| graph.param(n).is_some_and(|p| p.role == ParamRole::Tokens))?;
    graph.users(tokens).into_iter().find_map(|u| {
        let ops = graph.operands(u);
        match graph.node(u).op {
            Op::Gather if ops.get(1).is_some_and(|v| v.node == tokens) => {
                graph.value_type(ops[0]).shape.dims().first().and_then(|d| d.fixed())
            }
            _ => None,
        }
    })
}
