//! Applying an adapter to a model's graph: the adapter spec for the config's `peft_type`
//! (`models/lora.toml`) is compiled for the config, and the `lora` pass rewrites the graph as
//! lowered, before the default pipeline, and the `quantize` pass (with `--quantize`) after it.
//! Both show up first in the pipeline's report, and `--before NAME` / `--after NAME` dump around
//! them.

use super::{AdapterConfig, AdapterError, AdapterWeight};
use crate::{specs, Error};
use kiln_frontend::{compile_adapter, AdapterCompiler, AdapterSpec, CompileOptions, Diagnostic, SpecFile};
use kiln_ir::{Graph, Value};
use kiln_passes::{
    DumpPoint, LoraError, LoraTemplate, PassReport, PipelineOptions, QuantizeOptions, QuantizeReport, RunReport,
};
use std::time::Instant;

/// A model compiled through the whole pipeline, with or without an adapter.
#[derive(Debug)]
pub struct Compiled {
    pub graph: Graph,
    /// What each pass did (the `lora` pass first, when there is an adapter), and any dump.
    pub report: RunReport,
    /// The tensors the adapter added, as the rewrite created them (before dead code was removed).
    pub adapter_weights: Vec<AdapterWeight>,
    /// What the quantize pass decided, when it ran.
    pub quantized: Option<QuantizeReport>,
}

/// The adapter spec's rewrite, as the `lora` pass asks for it.
struct SpecTemplate<'a, 's>(&'a mut AdapterCompiler<'s>);

impl LoraTemplate for SpecTemplate<'_, '_> {
    type Error = Diagnostic;

    fn target(&self, weight_name: &str) -> Option<String> {
        self.0.target(weight_name)
    }

    fn expand(&mut self, graph: &mut Graph, module: &str, x: Value, weight: Value) -> Result<Value, Diagnostic> {
        self.0.expand(graph, module, x, weight)
    }
}

/// Applies the adapter described by `config` to `graph`, a model graph as lowered (before any
/// pass). Returns the adapter tensors it added and how many products it rewrote. Like peft, it is
/// an error when no target names a module of the model.
pub fn apply_adapter(graph: &mut Graph, config: &AdapterConfig) -> Result<(Vec<AdapterWeight>, usize), Error> {
    apply_adapter_spec(graph, &specs::adapter_for_peft_type(&config.peft_type)?, config)
}

/// [`apply_adapter`] with a given adapter spec instead of the built-in one for the config's
/// `peft_type`.
pub fn apply_adapter_spec(
    graph: &mut Graph,
    spec: &AdapterSpec,
    config: &AdapterConfig,
) -> Result<(Vec<AdapterWeight>, usize), Error> {
    let json = config.to_json();
    let mut compiler = compile_adapter(spec, &json)?;
    let done = kiln_passes::lora(graph, &mut SpecTemplate(&mut compiler)).map_err(|e| match e {
        LoraError::Template(d) => Error::Spec(d),
        other => AdapterError::Rewrite(other.to_string()).into(),
    })?;
    if done.is_empty() {
        return Err(AdapterError::NoTargetFound { targets: config.target_modules.clone() }.into());
    }
    kiln_ir::verify(graph)?;
    Ok((compiler.weights().to_vec(), done.len()))
}

/// `spec` lowered for `model_config` with the adapter applied, before any other pass: the graph
/// a trainer differentiates, and the adapter tensors it takes as weight inputs.
pub fn lora_graph(
    spec: &SpecFile,
    model_config: &serde_json::Value,
    options: &CompileOptions,
    adapter: &AdapterConfig,
) -> Result<(Graph, Vec<AdapterWeight>), Error> {
    let mut graph = kiln_frontend::compile(spec, model_config, options)?;
    kiln_ir::verify(&graph)?;
    let (weights, _) = apply_adapter(&mut graph, adapter)?;
    Ok((graph, weights))
}

/// Lowers `spec` for `config`, applies `adapter` if given, quantizes weights if `quantize` is
/// given, then runs the default pipeline with `passes`. `passes.dump` may name `lora` or
/// `quantize` (the passes run by hand) as well as any pipeline pass.
pub fn compile_spec_adapted(
    spec: &SpecFile,
    config: &serde_json::Value,
    options: &CompileOptions,
    adapter: Option<&AdapterConfig>,
    quantize: Option<&QuantizeOptions>,
    passes: &PipelineOptions,
) -> Result<Compiled, Error> {
    let mut graph = kiln_frontend::compile(spec, config, options)?;
    kiln_ir::verify(&graph)?;
    let mut pipeline_options = passes.clone();
    let mut report = RunReport::default();
    let mut adapter_weights = Vec::new();
    if let Some(adapter) = adapter {
        if passes.disabled.iter().any(|d| d == kiln_passes::lora::NAME) {
            return Err(Error::Usage(
                "the lora pass applies the adapter and cannot be disabled; leave out the adapter instead".into(),
            ));
        }
        adapter_weights = by_hand(kiln_passes::lora::NAME, &mut graph, &mut pipeline_options, &mut report, |g| {
            apply_adapter(g, adapter)
        })?;
    }
    let mut quantized = None;
    if let Some(quantize) = quantize {
        if passes.disabled.iter().any(|d| d == kiln_passes::quantize::NAME) {
            return Err(Error::Usage("the quantize pass cannot be disabled; leave out --quantize instead".into()));
        }
        let name = kiln_passes::quantize::NAME;
        quantized = Some(by_hand(name, &mut graph, &mut pipeline_options, &mut report, |g| {
            let r = quantize_adapted(g, &adapter_weights, quantize)?;
            let changes = r.quantized().count();
            Ok((r, changes))
        })?);
    }
    let rest = kiln_passes::default_pipeline().run(&mut graph, &pipeline_options)?;
    kiln_ir::verify(&graph)?;
    report.passes.extend(rest.passes);
    if report.dump.is_none() {
        report.dump = rest.dump;
        report.dump_graph = rest.dump_graph;
    }
    Ok(Compiled { graph, report, adapter_weights, quantized })
}

/// The quantize pass on a graph an adapter's rewrite may have added `adapter_weights` to: they
/// stay f32 (training updates them), whatever the policy says.
pub(crate) fn quantize_adapted(
    graph: &mut Graph,
    adapter_weights: &[AdapterWeight],
    options: &QuantizeOptions,
) -> Result<QuantizeReport, Error> {
    let mut options = options.clone();
    for w in adapter_weights {
        options.overrides.entry(w.name.clone()).or_insert(false);
    }
    let report = kiln_passes::quantize(graph, &options).map_err(|e| Error::Quantize(Box::new(e)))?;
    kiln_ir::verify(graph)?;
    Ok(report)
}

/// Runs a pass that is not in the default pipeline (it needs arguments), timing it into
/// `report` and capturing the dump `options` asks for around it (which the pipeline then no
/// longer captures).
fn by_hand<T>(
    name: &'static str,
    graph: &mut Graph,
    options: &mut PipelineOptions,
    report: &mut RunReport,
    pass: impl FnOnce(&mut Graph) -> Result<(T, usize), Error>,
) -> Result<T, Error> {
    let at = options.dump.as_ref().filter(|(n, _)| n == name).map(|(_, p)| *p);
    if at.is_some() {
        options.dump = None;
    }
    let capture = |report: &mut RunReport, graph: &Graph| {
        report.dump = Some(graph.to_string());
        report.dump_graph = Some(graph.clone());
    };
    if at == Some(DumpPoint::Before) {
        capture(report, graph);
    }
    let start = Instant::now();
    let (result, changes) = pass(graph)?;
    report.passes.push(PassReport { name, changes, time: start.elapsed(), skipped: false });
    if at == Some(DumpPoint::After) {
        capture(report, graph);
    }
    Ok(result)
}
