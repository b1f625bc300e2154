//! Bad input at run time: damaged checkpoints, bad token ids, the wrong model's state and CLI
//! misuse. Each error is one specific line (snapshotted); none is a panic.

use kiln_runtime::checkpoint::{save, TensorData};
use kiln_runtime::{Error, LoadOptions, Model};
use kiln_suite::{cli, fixture, read_safetensors, scratch};
use std::path::Path;

/// Copies fixture `name` into a scratch directory, letting `edit` change its tensors.
fn damaged_copy(
    test: &str,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, kiln_suite::Loaded)>),
) -> std::path::PathBuf {
    let src = fixture(name);
    let dir = scratch(test);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut tensors = read_safetensors(&src.join("model.safetensors"));
    edit(&mut tensors);
    let views: Vec<(&str, &[usize], TensorData<'_>)> =
        tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), TensorData::F32(&t.f32))).collect();
    save(&dir.join("model.safetensors"), &views).unwrap();
    dir
}

/// The error's one-line message with the scratch directory replaced by `<dir>`.
fn message(e: &Error, dir: &Path) -> String {
    e.to_string().replace(&dir.display().to_string(), "<dir>")
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => message(&e, dir),
    }
}

#[test]
fn missing_weight() {
    let dir = damaged_copy("missing", "rwkv4-tied", |t| t.retain(|(n, _)| n != "rwkv.blocks.1.ln2.bias"));
    insta::assert_snapshot!(load_err(&dir), @"tensor `rwkv.blocks.1.ln2.bias` not found in model.safetensors (declared at models/rwkv4.toml:30:1)");
}

#[test]
fn misshaped_weight() {
    let dir = damaged_copy("misshaped", "rwkv4-tied", |t| {
        let w = &mut t.iter_mut().find(|(n, _)| n == "rwkv.blocks.0.attention.key.weight").unwrap().1;
        w.shape = vec![w.shape[1], w.shape[0] / 2, 2];
    });
    insta::assert_snapshot!(load_err(&dir), @"tensor `rwkv.blocks.0.attention.key.weight` has shape [32, 16, 2] in model.safetensors but the spec declares [32, 32] (declared at models/rwkv4.toml:36:1)");
}

#[test]
fn truncated_safetensors() {
    let dir = damaged_copy("truncated", "rwkv4-tied", |_| {});
    let path = dir.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let msg = load_err(&dir);
    assert!(msg.starts_with("<dir>/model.safetensors: corrupt safetensors file: tensor `"), "{msg}");
    assert!(msg.ends_with("(truncated?)"), "{msg}");
}

#[test]
fn token_out_of_range_and_empty_calls() {
    let model = Model::load(&fixture("rwkv4-tied"), &LoadOptions::default()).unwrap();
    let mut state = model.new_state();
    let e = model.forward(&[1, 2, 257], &mut state).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"token id 257 at position 2 is out of range: the vocabulary has 257 entries");
    let e = model.forward(&[-1], &mut state).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"token id -1 at position 0 is out of range: the vocabulary has 257 entries");
    let e = model.forward(&[], &mut state).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"no tokens given: a call needs at least one token");
}

#[test]
fn state_of_the_wrong_model() {
    let rwkv = Model::load(&fixture("rwkv4-tied"), &LoadOptions::default()).unwrap();
    let mamba = Model::load(&fixture("mamba-tied"), &LoadOptions::default()).unwrap();
    let mut state = mamba.new_state();
    let e = rwkv.forward(&[1, 2], &mut state).unwrap_err();
    let root = env!("CARGO_MANIFEST_DIR");
    insta::assert_snapshot!(e.to_string().replace(root, "<root>"), @"this state belongs to model `mamba` (<root>/tests/fixtures/data/mamba-tied), but the model is model `rwkv4` (<root>/tests/fixtures/data/rwkv4-tied)");
}

#[test]
fn unknown_model_type_and_missing_directory() {
    let dir = damaged_copy("model-type", "rwkv4-tied", |_| {});
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"rwkv\"", "\"gpt2\"");
    std::fs::write(dir.join("config.json"), config).unwrap();
    insta::assert_snapshot!(load_err(&dir), @"no built-in spec for model_type `gpt2` (known: rwkv, mamba, mamba2); pass one with --spec");
    let e = Model::load(&dir.join("nope"), &LoadOptions::default()).unwrap_err();
    insta::assert_snapshot!(message(&e, &dir), @"checkpoint directory <dir>/nope does not exist");
}

#[test]
fn cli_misuse() {
    let model = fixture("rwkv4-tied");
    let dir = scratch("cli-misuse");
    let out = dir.join("logits.safetensors");
    std::fs::write(&out, b"precious").unwrap();
    let m = model.to_str().unwrap();
    let o = out.to_str().unwrap();
    let e = cli(&["forward", m, "--tokens", "1,2,3", "--out", o]).unwrap_err();
    insta::assert_snapshot!(message(&e, &dir), @"<dir>/logits.safetensors already exists; pass --force to overwrite it");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious", "the user's file must survive");
    let e = cli(&["forward", m, "--tokens", "1,2,3", "--split", "3", "--out", o, "--force"]).unwrap_err();
    insta::assert_snapshot!(e.to_string(), @"--split 3 must leave tokens on both sides (1..3)");
    let e = cli(&["forward", m, "--tokens", "1,x", "--out", o]).unwrap_err();
    assert!(e.to_string().contains("invalid value 'x' for '--tokens"), "{e}");
}
