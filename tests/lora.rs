//! LoRA adapters against peft: the committed `lora-*` fixtures hold a base model, an adapter
//! saved by `PeftModel.save_pretrained` and the logits peft computes with it
//! (`lora_reference.safetensors`). Kiln must match them on every backend, read adapter files with
//! and without the `.default` adapter name, and write adapters it reads back unchanged.

use kiln_runtime::adapter::{self, AdapterTensor};
use kiln_runtime::checkpoint::{save, TensorData};
use kiln_runtime::{Adapter, AdapterConfig, Backend, LoadOptions, Model};
use kiln_suite::{fixture, read_safetensors, reference, rel_err, scratch};
use std::path::Path;

/// Like `transformers_parity.rs`: a correct f32 implementation lands near 1e-6 of the largest
/// logit; these fixtures measure 3e-7 to 6e-7.
const TOLERANCE: f32 = 1e-5;

const FIXTURES: [&str; 3] = ["lora-rwkv4", "lora-mamba", "lora-mamba2"];

/// Tokens and peft's logits with the adapter applied.
fn lora_reference(dir: &Path) -> (Vec<i64>, Vec<f32>) {
    let t = read_safetensors(&dir.join("lora_reference.safetensors"));
    let get = |n: &str| t.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap();
    (get("tokens").i64, get("logits").f32)
}

fn load(dir: &Path, adapter: Adapter, backend: Backend) -> Model {
    let options = LoadOptions { adapter: Some(adapter), backend, ..LoadOptions::default() };
    Model::load(dir, &options).unwrap_or_else(|e| panic!("{}: {}", dir.display(), e.render()))
}

fn logits(model: &Model, tokens: &[i64]) -> Vec<f32> {
    model.forward(tokens, &mut model.new_state()).unwrap().data
}

#[test]
fn logits_match_peft_on_every_backend() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (tokens, expected) = lora_reference(&dir);
        let adapter = Adapter::open(&dir.join("adapter")).unwrap();
        for backend in [Backend::Interpreter, Backend::Jit] {
            let model = load(&dir, adapter.clone(), backend);
            let err = rel_err(&logits(&model, &tokens), &expected);
            eprintln!("{name:<12} {backend:?}: relative error {err:.2e}");
            assert!(err < TOLERANCE, "{name} on {backend:?}: relative error {err:e} exceeds {TOLERANCE:e}");
            // The carried state works the same with the adapter.
            let mut state = model.new_state();
            let mut split = model.forward(&tokens[..5], &mut state).unwrap().data;
            split.extend(model.forward(&tokens[5..], &mut state).unwrap().data);
            assert!(rel_err(&split, &expected) < TOLERANCE, "{name} on {backend:?}: split run");
        }
    }
}

#[test]
fn every_target_of_every_layer_is_adapted() {
    // RWKV's targets `key`, `value` and `receptance` match attention and feed-forward layers:
    // 2 layers × (3 + 3) Linear modules, an A and a B each, as in the adapter file.
    let dir = fixture("lora-rwkv4");
    let model = load(&dir, Adapter::open(&dir.join("adapter")).unwrap(), Backend::Interpreter);
    let names: Vec<&str> = model.adapter_weights().iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names.len(), 24, "{names:#?}");
    assert!(names.contains(&"base_model.model.rwkv.blocks.1.feed_forward.receptance.lora_B.weight"));
    let a = &model.adapter_weights()[0];
    assert_eq!((a.role.as_str(), a.shape.as_slice()), ("A", &[4, 32][..]));
    assert_eq!(a.declared.to_string(), "models/lora.toml:29:1");
}

#[test]
fn names_with_the_default_adapter_name_load_the_same() {
    let dir = fixture("lora-mamba");
    let renamed = scratch("lora-default-names");
    std::fs::copy(dir.join("adapter/adapter_config.json"), renamed.join("adapter_config.json")).unwrap();
    let tensors = read_safetensors(&dir.join("adapter/adapter_model.safetensors"));
    let names: Vec<String> = tensors.iter().map(|(n, _)| n.replace(".weight", ".default.weight")).collect();
    let views: Vec<(&str, &[usize], TensorData<'_>)> = tensors
        .iter()
        .zip(&names)
        .map(|((_, t), n)| (n.as_str(), t.shape.as_slice(), TensorData::F32(&t.f32)))
        .collect();
    save(&renamed.join("adapter_model.safetensors"), &views).unwrap();
    let (tokens, expected) = lora_reference(&dir);
    let adapter = Adapter::open(&renamed).unwrap();
    assert!(adapter.tensor("base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight").is_some());
    assert!(adapter.tensor("base_model.model.backbone.layers.0.mixer.in_proj.lora_A.default.weight").is_some());
    let model = load(&dir, adapter, Backend::Interpreter);
    assert!(rel_err(&logits(&model, &tokens), &expected) < TOLERANCE);
}

#[test]
fn a_fresh_adapter_leaves_the_model_unchanged() {
    // peft's initialization: B = 0, so the adapted model is the base model.
    for name in FIXTURES {
        let dir = fixture(name);
        let config = adapter::read_config(&dir.join("adapter")).unwrap();
        let spec = kiln_runtime::resolve_spec(&read_json(&dir.join("config.json")), None).unwrap();
        let (_, weights) =
            adapter::lora_graph(&spec, &read_json(&dir.join("config.json")), &Default::default(), &config).unwrap();
        let fresh = Adapter::init(config, &weights, 7);
        for w in &weights {
            let t = fresh.tensor(&w.name).unwrap();
            let bound = 1.0 / (w.shape[1] as f32).sqrt();
            match w.role.as_str() {
                "A" => assert!(t.data.iter().all(|v| v.abs() <= bound) && t.data.iter().any(|&v| v != 0.0)),
                _ => assert!(t.data.iter().all(|&v| v == 0.0)),
            }
        }
        let r = reference(&dir);
        let model = load(&dir, fresh, Backend::Interpreter);
        assert!(rel_err(&logits(&model, &r.tokens), &r.logits) < TOLERANCE, "{name}");
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fresh adapter for fixture `name` with every B made nonzero, saved to a scratch directory
/// (which `tests/fixtures/check_adapter.py` can load in peft).
fn saved_fresh_adapter(name: &str, model: &Model, targets: &[&str]) -> (Adapter, std::path::PathBuf) {
    let config = AdapterConfig::lora(4, 8.0, targets.iter().map(|t| t.to_string()).collect());
    let mut fresh = Adapter::init(config, model.adapter_weights(), 3);
    for w in model.adapter_weights() {
        let t = fresh.tensor_mut(&w.name).unwrap();
        for (i, v) in t.data.iter_mut().enumerate() {
            *v += 0.05 * ((i % 7) as f32 - 3.0);
        }
    }
    let out = scratch(&format!("lora-roundtrip-{name}")).join("adapter");
    fresh.save(&out, false).unwrap();
    (fresh, out)
}

#[test]
fn saved_adapters_load_back_unchanged() {
    let stored = |a: &Adapter| a.tensors().map(|(n, t)| (n.to_string(), t.clone())).collect::<Vec<_>>();
    for (name, targets) in [
        ("lora-rwkv4", &["key", "receptance", "value"][..]),
        ("lora-mamba", &["in_proj", "x_proj"]),
        ("lora-mamba2", &["in_proj"]),
    ] {
        let dir = fixture(name);
        let model = load(&dir, Adapter::open(&dir.join("adapter")).unwrap(), Backend::Interpreter);
        let (fresh, out) = saved_fresh_adapter(name, &model, targets);
        let back = Adapter::open(&out).unwrap();
        assert_eq!(stored(&back), stored(&fresh));
        assert_eq!(back.config().to_json(), fresh.config().to_json());
        let saved = read_json(&out.join("adapter_config.json"));
        assert_eq!(saved["peft_type"], "LORA");
        assert_eq!(saved["task_type"], "CAUSAL_LM");
        let names: Vec<String> =
            read_safetensors(&out.join("adapter_model.safetensors")).into_iter().map(|t| t.0).collect();
        assert!(names.iter().all(|n| n.starts_with("base_model.model.") && !n.contains(".default.")), "{names:?}");

        // A loaded model takes new adapter values in place, as a training step needs.
        let (tokens, peft) = lora_reference(&dir);
        let mut model = model;
        model.set_adapter(&back).unwrap();
        let reloaded = load(&dir, back.clone(), Backend::Interpreter);
        let updated = logits(&model, &tokens);
        assert_eq!(updated, logits(&reloaded, &tokens));
        assert!(rel_err(&updated, &peft) > 1e-2, "{name}: the new values changed nothing");

        // Saving again needs `force`, and leaves the adapter whole either way.
        let e = fresh.save(&out, false).unwrap_err();
        assert_eq!(e.to_string(), format!("{} already holds an adapter; pass force to overwrite it", out.display()));
        back.save(&out, true).unwrap();
        assert_eq!(stored(&Adapter::open(&out).unwrap()), stored(&fresh));
    }
}

#[test]
fn adapter_tensors_can_be_built_in_memory() {
    let dir = fixture("lora-rwkv4");
    let opened = Adapter::open(&dir.join("adapter")).unwrap();
    let tensors = opened.tensors().map(|(n, t)| (n.replace(".weight", ".default.weight"), t.clone()));
    let built = Adapter::from_tensors(opened.config().clone(), tensors).unwrap();
    assert_eq!(
        built.tensors().map(|(n, t)| (n.to_string(), t.clone())).collect::<Vec<(String, AdapterTensor)>>(),
        opened.tensors().map(|(n, t)| (n.to_string(), t.clone())).collect::<Vec<_>>()
    );
}

fn kiln(args: &[&str]) -> String {
    let mut out = Vec::new();
    kiln_runtime::cli::run(std::iter::once("kiln").chain(args.iter().copied()), &mut out)
        .unwrap_or_else(|e| panic!("kiln {}: {}", args.join(" "), e.render()));
    String::from_utf8(out).unwrap()
}

#[test]
fn the_command_line_takes_an_adapter() {
    let dir = fixture("lora-rwkv4");
    let (m, a) = (dir.to_str().unwrap(), dir.join("adapter"));
    let a = a.to_str().unwrap();
    let (tokens, expected) = lora_reference(&dir);
    let ids = tokens.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let path = scratch("lora-cli").join("logits.safetensors");
    let p = path.to_str().unwrap();
    kiln(&["forward", m, "--adapter", a, "--tokens", &ids, "--out", p, "--backend", "jit"]);
    let written = read_safetensors(&path);
    assert_eq!(written[1].0, "tokens");
    assert_eq!(written[1].1.i64, tokens);
    assert!(rel_err(&written[0].1.f32, &expected) < TOLERANCE);

    let after = kiln(&["dump", m, "--adapter", a, "--after", "lora"]);
    let rewritten = after.lines().filter(|l| l.contains("(lora on rwkv.blocks.0.feed_forward.key)")).count();
    assert_eq!(rewritten, 7, "three products, a constant, a broadcast, a mul and an add:\n{after}");
    let timings = kiln(&["dump", m, "--adapter", a, "--timings"]);
    assert!(timings.lines().any(|l| l.starts_with("lora ") && l.split_whitespace().nth(1) == Some("12")), "{timings}");

    let generated = kiln(&["generate", m, "--adapter", a, "--tokens", "1,2", "--max-new", "3", "--temperature", "0"]);
    assert_eq!(generated.split_whitespace().count(), 5, "{generated}");
}
