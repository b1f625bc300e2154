//! Differential test of fusion: every model spec (compiled for a fixture's config) and every
//! spec under `tests/in/fusion/` runs with the whole pipeline and with the fusion passes off, on
//! random weights, tokens and states, and the two must agree bit for bit: a fused kernel computes
//! each element with the same operations in the same order as the primitives it replaced.

use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_frontend::CompileOptions;
use kiln_ir::{Graph, ParamRole};
use kiln_passes::PipelineOptions;
use kiln_suite::fixture;
use std::path::Path;

fn compile(path: &Path, config: &serde_json::Value, disabled: &[&str]) -> Graph {
    let text = std::fs::read_to_string(path).unwrap();
    let spec = kiln_frontend::parse_spec(kiln_frontend::SourceFile::new(path.display().to_string(), text)).unwrap();
    let options =
        PipelineOptions { disabled: disabled.iter().map(|s| s.to_string()).collect(), verify_each: true, dump: None };
    kiln_runtime::compile_spec_with(&spec, config, &CompileOptions::default(), &options)
        .unwrap_or_else(|e| panic!("{}", e.render()))
        .0
}

/// Deterministic pseudo-random values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    // Doubling is exact, so these are the values the generator gave before it was shared.
    kiln_suite::random_values(n, seed).into_iter().map(|v| 2.0 * v).collect()
}

/// Runs `graph` on random inputs named like its parameters (so both graphs get the same data).
fn run(graph: &Graph, t: usize) -> Vec<Vec<f32>> {
    let mut owned: Vec<Tensor<'static>> = Vec::new();
    for &n in graph.inputs() {
        let p = graph.param(n).unwrap();
        let shape: Vec<usize> = graph.node(n).results[0].shape.resolve(t).unwrap().to_vec();
        let count = shape.iter().product();
        let seed = p.name.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        owned.push(match p.role {
            ParamRole::Tokens => Tensor::i64(&shape, (0..count as i64).map(|i| (i * 5 + 3) % 4).collect()).unwrap(),
            // State inputs may hold anything; keep exponents of RWKV-like states in range.
            _ => Tensor::f32(&shape, noise(seed, count)).unwrap(),
        });
    }
    let out = Interpreter::new(graph.clone()).run(&owned).unwrap();
    out.into_iter().map(|t| t.into_f32_vec().unwrap()).collect()
}

fn check(path: &Path, config: &serde_json::Value) {
    let fused = compile(path, config, &[]);
    let plain = compile(path, config, &["fuse-elementwise", "fuse-matmul"]);
    let kernels = fused
        .node_ids()
        .filter(|&n| matches!(fused.node(n).op, kiln_ir::Op::Fused(_) | kiln_ir::Op::FusedMatMul { .. }))
        .count();
    assert!(kernels > 0, "{}: nothing was fused", path.display());
    for t in [1, 3, 8] {
        let (a, b) = (run(&fused, t), run(&plain, t));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let same = x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()));
            assert!(same, "{}: output {i} differs at T = {t} with fusion on", path.display());
        }
    }
}

#[test]
fn fused_graphs_equal_unfused_bit_for_bit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (spec, fixture_name) in
        [("rwkv4", "rwkv4-rescale"), ("mamba", "mamba-untied-bias"), ("mamba2", "mamba2-g2"), ("mamba2", "lora-mamba2")]
    {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name).join("config.json")).unwrap()).unwrap();
        check(&root.join(format!("models/{spec}.toml")), &config);
    }
    let mut specs: Vec<_> =
        std::fs::read_dir(root.join("tests/in/fusion")).unwrap().map(|e| e.unwrap().path()).collect();
    specs.sort();
    for path in specs {
        check(&path, &serde_json::json!({}));
    }
}

/// What fusion must achieve on the real models: a scan step is one kernel (Mamba2's grouped B/C
/// views are materialized beside it), and norms come back whole.
#[test]
fn scan_steps_become_single_kernels() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (spec, fixture_name, kernels) in
        [("rwkv4", "rwkv4-tied", 1), ("mamba", "mamba-tied", 1), ("mamba2", "mamba2-g2", 1)]
    {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name).join("config.json")).unwrap()).unwrap();
        let graph = compile(&root.join(format!("models/{spec}.toml")), &config, &[]);
        for n in graph.node_ids() {
            let kiln_ir::Op::Scan(scan) = &graph.node(n).op else { continue };
            let body = &scan.body;
            let fused = body.node_ids().filter(|&b| matches!(body.node(b).op, kiln_ir::Op::Fused(_))).count();
            let compute = body
                .node_ids()
                .filter(|&b| body.node(b).op.is_elementwise() || matches!(body.node(b).op, kiln_ir::Op::Reduce { .. }))
                .count();
            assert_eq!((fused, compute), (kernels, 0), "{spec}: the step is not fused as expected:\n{body}");
        }
    }
    // Layer norm (RWKV) and RMS norm (Mamba) each become part of one kernel with no primitive
    // reductions left at the top level.
    for (spec, fixture_name) in [("rwkv4", "rwkv4-tied"), ("mamba", "mamba-tied")] {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name).join("config.json")).unwrap()).unwrap();
        let graph = compile(&root.join(format!("models/{spec}.toml")), &config, &[]);
        let elementwise = graph.node_ids().filter(|&n| graph.node(n).op.is_elementwise()).count();
        assert_eq!(elementwise, 0, "{spec}: elementwise primitives left after fusion:\n{graph}");
    }
}
