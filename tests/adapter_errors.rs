//! Bad adapters: damaged or mismatched adapter files and configs peft could write but Kiln does
//! not implement. Each error is one specific line (snapshotted) that names the tensor, shape or
//! key involved; none is a panic.

use kiln_runtime::checkpoint::{save, TensorData};
use kiln_runtime::{Adapter, Error, LoadOptions, Model};
use kiln_suite::{fixture, read_safetensors, scratch, Loaded};
use std::path::{Path, PathBuf};

/// Copies the adapter of fixture `name` into a scratch directory, letting `edit_tensors` change
/// its tensors and `edit_config` its adapter_config.json.
fn damaged_adapter(
    test: &str,
    name: &str,
    edit_tensors: impl FnOnce(&mut Vec<(String, Loaded)>),
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let src = fixture(name).join("adapter");
    let dir = scratch(test);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let mut tensors = read_safetensors(&src.join("adapter_model.safetensors"));
    edit_tensors(&mut tensors);
    let views: Vec<(&str, &[usize], TensorData<'_>)> =
        tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), TensorData::F32(&t.f32))).collect();
    save(&dir.join("adapter_model.safetensors"), &views).unwrap();
    dir
}

fn message(e: &Error, dir: &Path) -> String {
    e.to_string().replace(&dir.display().to_string(), "<dir>")
}

/// Opens the adapter in `dir` and loads fixture `model` with it; the error's one line.
fn load_err(model: &str, dir: &Path) -> String {
    let adapter = match Adapter::open(dir) {
        Ok(a) => a,
        Err(e) => return message(&e, dir),
    };
    match Model::load(&fixture(model), &LoadOptions { adapter: Some(adapter), ..LoadOptions::default() }) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => message(&e, dir),
    }
}

const A0: &str = "base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight";

#[test]
fn missing_adapter_tensor() {
    let dir = damaged_adapter("adapter-missing", "lora-mamba", |t| t.retain(|(n, _)| n != A0), |_| {});
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"adapter tensor `base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight` not found in <dir>/adapter_model.safetensors (declared at models/lora.toml:29:1)");
}

#[test]
fn missing_adapter_tensor_under_another_prefix() {
    let dir = damaged_adapter(
        "adapter-prefix",
        "lora-mamba",
        |t| t.iter_mut().for_each(|(n, _)| *n = n.replace("base_model.model.", "model.")),
        |_| {},
    );
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"adapter tensor `base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight` not found in <dir>/adapter_model.safetensors (declared at models/lora.toml:29:1); did you mean `model.backbone.layers.0.mixer.in_proj.lora_A.weight`?");
}

#[test]
fn misshaped_adapter_tensor() {
    let dir = damaged_adapter(
        "adapter-misshaped",
        "lora-mamba",
        |t| {
            let a = &mut t.iter_mut().find(|(n, _)| n == A0).unwrap().1;
            a.shape = vec![a.shape[1], a.shape[0]];
        },
        |_| {},
    );
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"adapter tensor `base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight` has shape [32, 4] in <dir>/adapter_model.safetensors but the model needs [4, 32] (declared at models/lora.toml:29:1)");
}

#[test]
fn rank_differs_from_the_config() {
    let dir = damaged_adapter("adapter-rank", "lora-mamba2", |_| {}, |c| c["r"] = 8.into());
    insta::assert_snapshot!(load_err("lora-mamba2", &dir), @"adapter tensor `base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight` has shape [4, 32] in <dir>/adapter_model.safetensors but the model needs [8, 32] (declared at models/lora.toml:29:1)");
}

#[test]
fn tensors_no_target_uses() {
    // The config adapts in_proj only, but the file also holds x_proj's tensors.
    let dir = damaged_adapter(
        "adapter-unused",
        "lora-mamba",
        |_| {},
        |c| c["target_modules"] = serde_json::json!(["in_proj"]),
    );
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"<dir>/adapter_model.safetensors holds `base_model.model.backbone.layers.0.mixer.x_proj.lora_A.weight`, which no adapted product of this model uses (target_modules: in_proj)");
}

#[test]
fn targets_of_another_architecture() {
    let dir = damaged_adapter("adapter-targets", "lora-rwkv4", |_| {}, |_| {});
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"no matrix product of the model has a weight in a module named by target_modules (key, receptance, value)");
}

#[test]
fn unsupported_configs() {
    let cases: [(&str, serde_json::Value, &str); 5] = [
        ("use_dora", true.into(), "<dir>/adapter_config.json: `use_dora` is true: DoRA (weight-decomposed LoRA) is not supported"),
        ("bias", "lora_only".into(), "<dir>/adapter_config.json: `bias` is \"lora_only\": adapters that train biases are not supported (only \"none\")"),
        ("fan_in_fan_out", true.into(), "<dir>/adapter_config.json: `fan_in_fan_out` is true: fan_in_fan_out (Conv1D-layout weights) is not supported"),
        ("rank_pattern", serde_json::json!({"in_proj": 8}), "<dir>/adapter_config.json: `rank_pattern` is set ({\"in_proj\":8}): it is not supported"),
        ("r", "four".into(), "<dir>/adapter_config.json: `r` must be a positive integer, found \"four\""),
    ];
    for (key, value, expected) in cases {
        let dir = damaged_adapter(&format!("adapter-config-{key}"), "lora-mamba", |_| {}, |c| c[key] = value);
        assert_eq!(load_err("lora-mamba", &dir), expected);
    }
}

#[test]
fn broken_directories() {
    let dir = damaged_adapter("adapter-json", "lora-mamba", |_| {}, |_| {});
    std::fs::write(dir.join("adapter_config.json"), "{\n  \"r\": 4,\n  \"lora_alpha\": ,\n}\n").unwrap();
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"<dir>/adapter_config.json:3:17: invalid JSON: expected value");
    std::fs::remove_file(dir.join("adapter_config.json")).unwrap();
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"no adapter_config.json in adapter directory <dir>");

    let dir = damaged_adapter("adapter-pickle", "lora-mamba", |_| {}, |_| {});
    std::fs::rename(dir.join("adapter_model.safetensors"), dir.join("adapter_model.bin")).unwrap();
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"no adapter_model.safetensors in adapter directory <dir>; found only adapter_model.bin (PyTorch pickles are not supported: re-save with safe_serialization=True)");
    let e = Adapter::open(&dir.join("nope")).unwrap_err();
    insta::assert_snapshot!(message(&e, &dir), @"adapter directory <dir>/nope does not exist");
}

#[test]
fn the_same_tensor_with_and_without_the_adapter_name() {
    let dir = damaged_adapter(
        "adapter-duplicate",
        "lora-mamba",
        |t| {
            let a = t.iter().find(|(n, _)| n == A0).unwrap().1.clone();
            t.push((A0.replace(".weight", ".default.weight"), a));
        },
        |_| {},
    );
    insta::assert_snapshot!(load_err("lora-mamba", &dir), @"<dir>/adapter_model.safetensors holds `base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight` twice, with and without the adapter name `.default`");
}
