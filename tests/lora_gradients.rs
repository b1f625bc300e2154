//! `kiln grad` against peft: the loss and every LoRA gradient of the committed adapters
//! (RWKV-4 with targets matching attention and feed-forward layers, Mamba, Mamba2), computed by
//! peft 0.21.2 on transformers 5.23.0 (`lora_reference.safetensors`), on both backends and with
//! chunked backpropagation. The bar is 1e-4 relative.

use kiln_suite::{fixture, read_safetensors, rel_err, scratch};

const TOLERANCE: f32 = 1e-4;

fn run_grad(name: &str, extra: &[&str]) -> Vec<(String, kiln_suite::Loaded)> {
    let dir = fixture(name);
    let reference = read_safetensors(&dir.join("lora_reference.safetensors"));
    let tokens = &reference.iter().find(|(k, _)| k == "tokens").unwrap().1.i64;
    let ids: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let out = scratch(&format!("grad-{name}-{}", extra.join("-").replace("--", ""))).join("grads.safetensors");
    let mut args = vec![
        "kiln".to_string(),
        "grad".into(),
        dir.display().to_string(),
        "--adapter".into(),
        dir.join("adapter").display().to_string(),
        "--tokens".into(),
        ids.join(","),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut printed = Vec::new();
    kiln_runtime::cli::run(args, &mut printed).unwrap_or_else(|e| panic!("{name}: {}", e.render()));
    read_safetensors(&out)
}

fn check(name: &str, extra: &[&str]) {
    let reference = read_safetensors(&fixture(name).join("lora_reference.safetensors"));
    let got = run_grad(name, extra);
    let get = |set: &[(String, kiln_suite::Loaded)], k: &str| set.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (loss, expected) = (get(&got, "loss").unwrap().f32[0], get(&reference, "loss").unwrap().f32[0]);
    let loss_err = (loss - expected).abs() / expected.abs();
    assert!(loss_err < TOLERANCE, "{name}: loss {loss} vs peft's {expected}");
    let mut worst = 0f32;
    let mut count = 0;
    for (k, want) in reference.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let have = get(&got, k).unwrap_or_else(|| panic!("{name}: kiln grad wrote no `{k}`"));
        assert_eq!(have.shape, want.shape, "{name}: {k}");
        let err = rel_err(&have.f32, &want.f32);
        assert!(err < TOLERANCE, "{name} {extra:?}: `{k}` differs from peft's by {err:e}");
        worst = worst.max(err);
        count += 1;
    }
    let written = got.iter().filter(|(k, _)| k.starts_with("grad.")).count();
    assert_eq!(written, count, "{name}: kiln grad wrote gradients peft has none for");
    eprintln!("{name:<12} {extra:?}: loss error {loss_err:.1e}, {count} gradients, worst relative error {worst:.2e}");
}

#[test]
fn rwkv4_lora_gradients_match_peft() {
    check("lora-rwkv4", &[]);
    check("lora-rwkv4", &["--backend", "jit"]);
    check("lora-rwkv4", &["--chunk", "5"]);
}

#[test]
fn mamba_lora_gradients_match_peft() {
    check("lora-mamba", &[]);
    check("lora-mamba", &["--backend", "jit"]);
    check("lora-mamba", &["--chunk", "5"]);
}

#[test]
fn mamba2_lora_gradients_match_peft() {
    check("lora-mamba2", &[]);
    check("lora-mamba2", &["--backend", "jit"]);
    check("lora-mamba2", &["--chunk", "5"]);
}
