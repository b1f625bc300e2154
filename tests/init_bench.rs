//! `kiln init` (random models in the Hugging Face layout) and `kiln bench`, run in-process.

use kiln_runtime::{LoadOptions, Model};
use kiln_suite::{fixture, scratch};
use std::path::Path;

fn kiln(args: &[&str]) -> Result<String, kiln_runtime::Error> {
    let mut out = Vec::new();
    let argv = std::iter::once("kiln").chain(args.iter().copied());
    kiln_runtime::cli::run(argv, &mut out).map(|()| String::from_utf8(out).unwrap())
}

fn init(spec: &str, config: &Path, out: &Path, extra: &[&str]) -> Result<String, kiln_runtime::Error> {
    let mut args = vec!["init", spec, "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    kiln(&args)
}

const CASES: [(&str, &str); 3] =
    [("models/rwkv4.toml", "rwkv4-tied"), ("mamba", "mamba-tied"), ("models/mamba2.toml", "mamba2-g1")];

#[test]
fn init_writes_loadable_sane_models() {
    for (spec, fixture_name) in CASES {
        let config = fixture(fixture_name).join("config.json");
        let dir = scratch(&format!("init-{fixture_name}"));
        let printed = init(spec, &config, &dir.join("model"), &["--seed", "3"]).unwrap();
        assert!(printed.starts_with(&format!("wrote {}", dir.join("model").display())), "{printed}");

        let model = Model::load(&dir.join("model"), &LoadOptions::default()).unwrap();
        // The same tensors as the fixture transformers wrote, at the same shapes.
        let ours = kiln_runtime::checkpoint::Checkpoint::open(&dir.join("model")).unwrap();
        let theirs = kiln_runtime::checkpoint::Checkpoint::open(&fixture(fixture_name)).unwrap();
        assert_eq!(ours.tensor_names(), theirs.tensor_names(), "{fixture_name}");
        for name in ours.tensor_names() {
            assert_eq!(ours.info(name).unwrap().shape, theirs.info(name).unwrap().shape, "{name}");
        }

        let tokens: Vec<i64> = (0..12).map(|i| (i * 37 + 5) % 250).collect();
        let mut state = model.new_state();
        let logits = model.forward(&tokens, &mut state).unwrap();
        assert!(logits.data.iter().all(|x| x.is_finite()), "{fixture_name}: non-finite logits");
        for t in 0..logits.tokens {
            let row = logits.row(t);
            let (lo, hi) = row.iter().fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            assert!(hi - lo > 1e-3, "{fixture_name}: row {t} is constant ({lo}..{hi})");
        }
        assert_ne!(logits.row(0), logits.row(1), "{fixture_name}");
        // The state carries: continuing gives finite, different logits.
        let next = model.forward(&tokens[..1], &mut state).unwrap();
        assert!(next.data.iter().all(|x| x.is_finite()));
        assert_ne!(next.row(0), logits.row(0));
    }
}

#[test]
fn init_is_deterministic_and_refuses_to_overwrite() {
    let config = fixture("mamba2-g1").join("config.json");
    let dir = scratch("init-determinism");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    init("mamba2", &config, &a, &["--seed", "11"]).unwrap();
    init("mamba2", &config, &b, &["--seed", "11"]).unwrap();
    init("mamba2", &config, &c, &["--seed", "12"]).unwrap();
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read(&a, "model.safetensors"), read(&b, "model.safetensors"));
    assert_eq!(read(&a, "config.json"), read(&b, "config.json"));
    assert_ne!(read(&a, "model.safetensors"), read(&c, "model.safetensors"));

    let refused = init("mamba2", &config, &a, &["--seed", "12"]).unwrap_err();
    assert!(refused.to_string().contains("not empty; pass --force"), "{refused}");
    assert_eq!(read(&a, "model.safetensors"), read(&b, "model.safetensors"), "a refused init changed files");
    init("mamba2", &config, &a, &["--seed", "12", "--force"]).unwrap();
    assert_eq!(read(&a, "model.safetensors"), read(&c, "model.safetensors"));

    let written: serde_json::Value = serde_json::from_slice(&read(&a, "config.json")).unwrap();
    assert_eq!(written["model_type"], "mamba2");
    assert_eq!(written["num_heads"], 8);

    let wrong = init("rwkv4", &config, &dir.join("d"), &[]).unwrap_err();
    assert!(wrong.to_string().contains("model_type `mamba2` differs from the spec's `rwkv`"), "{wrong}");
    let unknown = init("nosuchspec", &config, &dir.join("d"), &[]).unwrap_err();
    assert!(unknown.to_string().contains("known: rwkv4, mamba, mamba2"), "{unknown}");
}

#[test]
fn bench_reports_throughput_as_text_and_json() {
    let dir = fixture("rwkv4-tied");
    let d = dir.to_str().unwrap();
    let short = ["--prefill", "8", "--decode", "4", "--warmup", "1", "--reps", "2", "--threads", "1"];
    let mut args = vec!["bench", d];
    args.extend(short);
    let text = kiln(&args).unwrap();
    for line in [
        "backend jit, weights f32, 1 threads",
        "compile",
        "prefill 8",
        "decode 4",
        "memory read",
        "decode floor",
        "peak RSS",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    args.push("--json");
    let v: serde_json::Value = serde_json::from_str(&kiln(&args).unwrap()).unwrap();
    assert_eq!(v["model"], "rwkv4");
    assert_eq!(v["threads"], 1);
    assert_eq!(v["prefill_samples_s"].as_array().unwrap().len(), 2);
    for key in ["compile_s", "prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {}", v[key]);
    }
    // Several backends in one run: one JSON line each, in the order given.
    let mut both = vec!["bench", d, "--json", "--backend", "jit,interp"];
    both.extend(short);
    let lines: Vec<serde_json::Value> =
        kiln(&both).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|v| v["backend"].as_str().unwrap()).collect::<Vec<_>>(), ["jit", "interp"]);
    // Weight formats in one run: each relative to the first.
    let mut formats = vec!["bench", d, "--weights", "f32,q4_0:16", "--quantize-head"];
    formats.extend(short);
    let text = kiln(&formats).unwrap();
    assert!(text.contains("weights q4_0:16, 1 threads"), "{text}");
    assert!(text.contains("vs f32          prefill"), "{text}");
    let bad = kiln(&["bench", d, "--weights", "q3"]).unwrap_err();
    assert!(bad.to_string().contains("unknown format `q3`"), "{bad}");
    let zero = kiln(&["bench", d, "--reps", "0"]).unwrap_err();
    assert!(zero.to_string().contains("at least 1"), "{zero}");
}
