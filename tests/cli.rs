//! The `kiln` command line, run in-process: forward (full and split) against transformers'
//! logits, dump, check, demo and generate.

use kiln_runtime::{LoadOptions, Model};
use kiln_suite::{fixture, read_safetensors, reference, rel_err, scratch};

fn kiln(args: &[&str]) -> String {
    let mut out = Vec::new();
    let argv = std::iter::once("kiln").chain(args.iter().copied());
    if let Err(e) = kiln_runtime::cli::run(argv, &mut out) {
        panic!("kiln {}: {}", args.join(" "), e.render());
    }
    String::from_utf8(out).unwrap()
}

fn ids(tokens: &[i64]) -> String {
    tokens.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn forward_writes_transformers_logits_full_and_split() {
    for name in ["rwkv4-untied", "mamba-untied-bias", "mamba2-g2"] {
        let dir = fixture(name);
        let r = reference(&dir);
        let out = scratch(&format!("forward-{name}"));
        for split in [None, Some(r.split), Some(1)] {
            let path = out.join("logits.safetensors");
            let mut args = vec!["forward", dir.to_str().unwrap(), "--force", "--out", path.to_str().unwrap()];
            let tokens = ids(&r.tokens);
            args.extend(["--tokens", &tokens]);
            let k = split.map(|k| k.to_string());
            if let Some(k) = &k {
                args.extend(["--split", k]);
            }
            let printed = kiln(&args);
            assert!(printed.starts_with(&format!("wrote logits [{}, {}]", r.tokens.len(), r.vocab)), "{printed}");
            let written = read_safetensors(&path);
            assert_eq!(written[0].0, "logits");
            assert_eq!(written[0].1.shape, vec![r.tokens.len(), r.vocab]);
            let err = rel_err(&written[0].1.f32, &r.logits);
            assert!(err < 1e-5, "{name} split {split:?}: {err:e}");
        }
    }
}

#[test]
fn dump_check_and_demo() {
    let dir = fixture("mamba2-g1");
    let text = kiln(&["dump", dir.to_str().unwrap()]);
    assert!(text.starts_with("graph mamba2 {\n  %0 = tokens \"tokens\" : i64[T]"), "{}", &text[..200]);
    let dot = kiln(&[
        "dump",
        "--spec",
        "models/rwkv4.toml",
        "--config",
        fixture("rwkv4-tied").join("config.json").to_str().unwrap(),
        "--dot",
    ]);
    assert!(dot.starts_with("digraph \"rwkv4\" {") && dot.contains("cluster_"), "{}", &dot[..100]);
    let checked =
        kiln(&["check", "models/mamba.toml", "--config", fixture("mamba-tied").join("config.json").to_str().unwrap()]);
    assert!(checked.starts_with("models/mamba.toml: ok ("), "{checked}");
    // The training graph: loss, gradients, and the reverse scans that carry them back in time.
    let grad = kiln(&["dump", fixture("rwkv4-tied").to_str().unwrap(), "--grad"]);
    assert!(grad.starts_with("graph rwkv4.train {") && grad.contains("scan.reverse"), "{}", &grad[..200]);
    assert!(grad.contains("return loss = ") && grad.contains("grad.rwkv.blocks.1.attention.time_decay = "));
    // With no config, the hyperparameters' defaults (transformers' config defaults) apply.
    assert!(kiln(&["check", "models/rwkv4.toml"]).contains("ok"));
}

/// The main job, cut short: a char-level model is initialized, trained a few steps, saved as a
/// model directory `kiln generate` runs, and sampled; a second run does not replace it unasked.
#[test]
fn demo_trains_saves_and_samples() {
    let dir = kiln_suite::scratch("demo");
    let d = dir.to_str().unwrap();
    let args = ["demo", "--dir", d, "--steps", "3", "--sample-len", "16", "--quiet"];
    let text = kiln(&args);
    for part in ["1. initialized", "2. training", "step 3:", "3. sampling", "ROMEO:"] {
        assert!(text.contains(part), "no `{part}` in:\n{text}");
    }
    for file in ["config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl"] {
        assert!(dir.join("model").join(file).is_file(), "the demo wrote no model/{file}");
    }
    let generated = kiln(&["generate", dir.join("model").to_str().unwrap(), "--prompt", "KING", "--max-new", "8"]);
    assert!(generated.starts_with("KING"), "{generated}");
    let mut out = Vec::new();
    let again = kiln_runtime::cli::run(["kiln"].into_iter().chain(args), &mut out).unwrap_err().to_string();
    assert!(again.contains("--force"), "{again}");
    let mut forced: Vec<&str> = args.to_vec();
    forced.push("--force");
    assert!(kiln(&forced).contains("3. sampling"));
}

/// Greedy decoding one token per call picks, at every step, the argmax of the logits a single
/// full-sequence run gives at that position.
#[test]
fn greedy_generation_agrees_with_the_full_sequence() {
    for name in ["rwkv4-tied", "mamba-tied", "mamba2-g2"] {
        let dir = fixture(name);
        let prompt = &reference(&dir).tokens[..5];
        let printed = kiln(&[
            "generate",
            dir.to_str().unwrap(),
            "--tokens",
            &ids(prompt),
            "--max-new",
            "12",
            "--temperature",
            "0",
            "--ignore-eos",
            "--ids",
        ]);
        let all: Vec<i64> = printed.split_whitespace().map(|t| t.parse().unwrap()).collect();
        assert_eq!(&all[..5], prompt);
        assert_eq!(all.len(), 5 + 12, "{printed}");
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let logits = model.forward(&all[..all.len() - 1], &mut model.new_state()).unwrap();
        for t in 4..all.len() - 1 {
            assert_eq!(kiln_runtime::sample::argmax(logits.row(t)) as i64, all[t + 1], "{name} position {t}");
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_text_streams_through_the_tokenizer() {
    let dir = fixture("rwkv4-untied");
    let d = dir.to_str().unwrap();
    let run = |seed: &str| {
        kiln(&[
            "generate",
            d,
            "--prompt",
            "ROMEO:",
            "--max-new",
            "30",
            "--seed",
            seed,
            "--top-k",
            "50",
            "--top-p",
            "0.9",
            "--ignore-eos",
        ])
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    assert_ne!(a, run("8"));
    assert!(a.starts_with("ROMEO:"), "{a}");
    let mut out = Vec::new();
    let e = kiln_runtime::cli::run(
        ["kiln", "generate", fixture("mamba2-g1").to_str().unwrap(), "--prompt", "hi"],
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().ends_with("has no tokenizer.json; give the prompt as ids with --tokens"), "{e}");
}

/// `kiln dump` shows the graph before or after any pass, in text or Graphviz, lists the passes,
/// times them, and turns them off by name (so do `forward` and `generate`).
#[test]
fn dump_around_passes_and_disable_them() {
    let listed = kiln(&["dump", "--passes"]);
    for p in kiln_passes::default_pipeline().passes() {
        assert!(listed.contains(&format!("{}  ", p.name)) && listed.contains(p.description), "{listed}");
    }
    let config = fixture("rwkv4-tied").join("config.json");
    let dump = |extra: &[&str]| {
        let mut args = vec!["dump", "--spec", "models/rwkv4.toml", "--config", config.to_str().unwrap()];
        args.extend(extra);
        kiln(&args)
    };
    // The lowered graph holds one `const 1.0` per use; `cse` leaves one.
    let ones = |text: &str| text.matches("= const 1.0 ").count();
    let before = dump(&["--before", "cse"]);
    let after = dump(&["--after", "cse"]);
    assert!(ones(&before) > 1 && ones(&after) == 1, "{} then {}", ones(&before), ones(&after));
    assert_eq!(dump(&["--after", "cse", "--disable", "cse"]), before);
    let dot = dump(&["--after", "shape-fold", "--dot"]);
    // Before fusion, layer norms are primitive nodes; after it, kernel instructions (`$N`).
    assert!(dot.starts_with("digraph \"rwkv4\" {") && dot.contains("reduce.sum %"), "{}", &dot[..100]);
    assert!(!dump(&[]).contains("reduce.sum %"), "fusion runs after shape-fold");
    let timed = dump(&["--timings", "--disable", "cse,fuse-elementwise"]);
    let table = &timed[timed.find("\npass ").unwrap()..];
    assert!(table.contains("\ncse ") && table.contains("disabled") && table.contains("\ntotal "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("algebraic") && l.contains(" ms")), "{table}");

    let mut out = Vec::new();
    let e = kiln_runtime::cli::run(["kiln", "dump", "--spec", "models/rwkv4.toml", "--after", "csee"], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pass is named `csee` (the passes are: dead-code, const-fold,"), "{e}");
    let dir = fixture("rwkv4-tied");
    let r = reference(&dir);
    let path = scratch("forward-disable").join("logits.safetensors");
    let tokens = ids(&r.tokens);
    let disable = "const-fold,algebraic,shape-fold,cse,fuse-elementwise";
    kiln(&[
        "forward",
        dir.to_str().unwrap(),
        "--tokens",
        &tokens,
        "--out",
        path.to_str().unwrap(),
        "--disable",
        disable,
    ]);
    assert!(rel_err(&read_safetensors(&path)[0].1.f32, &r.logits) < 1e-5);
    let generated = |extra: &[&str]| {
        let mut args = vec!["generate", dir.to_str().unwrap(), "--tokens", "1,2", "--max-new", "4", "--ids"];
        args.extend(extra);
        args.extend(["--temperature", "0", "--ignore-eos"]);
        kiln(&args)
    };
    assert_eq!(generated(&["--disable", "cse"]), generated(&[]));
}
