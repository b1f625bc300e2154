//! Memory planning end to end: every fixture model gives bit-identical logits and states planned
//! (one arena) and unplanned, fused or not, for full, split and one-token calls; the plans of
//! every model, for the fixture configs and the full-size ones (`benches/configs/`), are valid
//! and never let two live buffers share a byte, at several `T`, scan bodies included; and
//! `kiln stats` reports them.

use kiln_backend::Interpreter;
use kiln_frontend::CompileOptions;
use kiln_ir::plan::intermediate_bytes;
use kiln_ir::{Graph, MemoryPlan, Op};
use kiln_passes::PipelineOptions;
use kiln_runtime::{LoadOptions, Model};
use kiln_suite::{fixture, model_fixtures, reference};

const UNFUSED: [&str; 2] = ["fuse-elementwise", "fuse-matmul"];

fn load(name: &str, disabled: &[&str]) -> Model {
    let passes = PipelineOptions { disabled: disabled.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    Model::load(&fixture(name), &LoadOptions { passes, ..LoadOptions::default() })
        .unwrap_or_else(|e| panic!("{name}: {}", e.render()))
}

/// Logits of a full run, a split run and one token per call, then the final states, as bits.
fn run_everything(model: &Model, tokens: &[i64], split: usize) -> Vec<u32> {
    let mut bits = Vec::new();
    let mut keep = |data: &[f32]| bits.extend(data.iter().map(|x| x.to_bits()));
    let mut state = model.new_state();
    keep(&model.forward(tokens, &mut state).unwrap().data);
    let mut state = model.new_state();
    keep(&model.forward(&tokens[..split], &mut state).unwrap().data);
    keep(&model.forward(&tokens[split..], &mut state).unwrap().data);
    for (_, values) in state.tensors() {
        keep(values);
    }
    let mut state = model.new_state();
    for &t in tokens {
        keep(&model.forward(&[t], &mut state).unwrap().data);
    }
    for (_, values) in state.tensors() {
        keep(values);
    }
    bits
}

#[test]
fn every_fixture_runs_bit_identically_planned_and_unplanned() {
    let fixtures = model_fixtures();
    assert!(fixtures.len() >= 9, "{fixtures:?}");
    for name in fixtures {
        let r = reference(&fixture(&name));
        for extra in [&[][..], &UNFUSED[..]] {
            let planned = load(&name, extra);
            let unplanned = load(&name, &[extra, &["memory-plan"]].concat());
            assert!(planned.graph().plan().is_some() && unplanned.graph().plan().is_none(), "{name}");
            assert!(Interpreter::new(planned.graph().clone()).is_planned(), "{name}");
            let a = run_everything(&planned, &r.tokens, r.split);
            let b = run_everything(&unplanned, &r.tokens, r.split);
            assert_eq!(a.len(), b.len());
            let diff = a.iter().zip(&b).position(|(x, y)| x != y);
            assert!(diff.is_none(), "{name} (disabled {extra:?}): planned and unplanned differ at element {diff:?}");
        }
    }
}

/// Checks the plan of `g` and its bodies: valid, and at each `t` no two buffers live at one
/// position share a byte (concrete numbers, independent of `validate`).
fn check_plans(g: &Graph, ts: &[usize], what: &str) -> usize {
    let plan: &MemoryPlan = g.plan().unwrap_or_else(|| panic!("{what}: no plan"));
    plan.validate(g).unwrap_or_else(|e| panic!("{what}: {e}"));
    for &t in ts {
        for (i, a) in plan.buffers.iter().enumerate() {
            let (ao, asz) = (a.offset.at(t), a.size.at(t));
            assert!(ao >= 0 && asz >= 0 && ao % 64 == 0, "{what}: buffer {i} at T = {t}");
            for (j, b) in plan.buffers.iter().enumerate().skip(i + 1) {
                let (bo, bsz) = (b.offset.at(t), b.size.at(t));
                if a.overlaps_in_time(b) && asz > 0 && bsz > 0 {
                    assert!(ao + asz <= bo || bo + bsz <= ao, "{what}: buffers {i} and {j} share bytes at T = {t}");
                }
            }
        }
    }
    let mut in_place = plan.in_place_count();
    for id in g.node_ids() {
        if let Op::Scan(scan) = &g.node(id).op {
            in_place += check_plans(&scan.body, ts, &format!("{what}, body of %{}", id.index()));
        }
    }
    in_place
}

fn compile(spec: &str, config: &std::path::Path, disabled: &[&str]) -> Graph {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/models/{spec}")).unwrap();
    let spec = kiln_frontend::parse_spec(kiln_frontend::SourceFile::new(format!("models/{spec}"), text)).unwrap();
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let passes = PipelineOptions {
        disabled: disabled.iter().map(|s| s.to_string()).collect(),
        verify_each: true,
        ..Default::default()
    };
    kiln_runtime::compile_spec_with(&spec, &config, &CompileOptions::default(), &passes)
        .unwrap_or_else(|e| panic!("{}", e.render()))
        .0
}

#[test]
fn plans_are_valid_for_every_t_and_beat_the_unplanned_sum() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        ("rwkv4.toml", fixture("rwkv4-rescale").join("config.json")),
        ("rwkv4.toml", root.join("benches/configs/rwkv4-169m.json")),
        ("mamba.toml", fixture("mamba-untied-bias").join("config.json")),
        ("mamba.toml", root.join("benches/configs/mamba-130m.json")),
        ("mamba2.toml", fixture("mamba2-g2").join("config.json")),
        ("mamba2.toml", root.join("benches/configs/mamba2-130m.json")),
    ];
    let mut in_place = 0;
    for (spec, config) in &cases {
        for disabled in [&[][..], &UNFUSED[..]] {
            let g = compile(spec, config, disabled);
            let what = format!("{spec} for {} (disabled {disabled:?})", config.display());
            in_place += check_plans(&g, &[1, 2, 7, 512, 2048], &what);
            let plan = g.plan().unwrap();
            let sum = intermediate_bytes(&g, true).unwrap();
            for t in [1, 512] {
                assert!(
                    plan.arena_bytes(t) <= sum.at(t),
                    "{what}: arena {} > Σ {} at T = {t}",
                    plan.arena_bytes(t),
                    sum.at(t)
                );
                assert!(plan.live_peak(t) <= plan.arena_bytes(t), "{what}");
            }
        }
    }
    assert!(in_place > 0, "unfused graphs have elementwise ops that run in place");
}

#[test]
fn planned_dumps_annotate_every_node() {
    let g = compile("mamba.toml", &fixture("mamba-tied").join("config.json"), &[]);
    let text = g.to_string();
    assert!(text.contains("; memory plan: "), "{text}");
    for line in text.lines().filter(|l| l.trim_start().starts_with('%')) {
        // `; N` (an input), or `; N: ` and where each result lives.
        let tail = line.rsplit("  ; ").next().unwrap();
        let (step, places) = tail.split_once(": ").unwrap_or((tail, ""));
        assert!(step.chars().all(|c| c.is_ascii_digit()), "{line}");
        let inputs = ["tokens", "weight", "state", "arg"];
        if places.is_empty() {
            assert!(inputs.iter().any(|i| line.contains(&format!(" = {i} "))), "{line}");
        } else {
            assert!(
                places.split(" | ").all(|p| p.contains("buf ") || p.contains("view") || p.ends_with("out")),
                "{line}"
            );
        }
    }
    assert_eq!(text, compile("mamba.toml", &fixture("mamba-tied").join("config.json"), &[]).to_string());
}

#[test]
fn stats_reports_nodes_and_memory_without_weights() {
    let mut out = Vec::new();
    let args = ["kiln", "stats", "--spec", "models/mamba2.toml", "--config", "benches/configs/mamba2-130m.json"];
    kiln_runtime::cli::run(args, &mut out).unwrap_or_else(|e| panic!("{}", e.render()));
    let text = String::from_utf8(out).unwrap();
    for row in ["**nodes**", "`fused`", "`scan`", "**arena** (planned peak), T = 1", "Σ intermediate sizes, T = 512"] {
        assert!(text.contains(row), "{row}:\n{text}");
    }
    let mut out = Vec::new();
    kiln_runtime::cli::run(["kiln", "stats", fixture("rwkv4-tied").to_str().unwrap()], &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().starts_with("rwkv4 ("));
}
