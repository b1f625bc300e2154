//! 4-bit weights end to end, on every model fixture:
//!
//! - a quantized model computes what the f32 model computes with its weights replaced by their
//!   dequantized values (the reference: the quantized products must be exact up to
//!   reassociation), on the interpreter (unoptimized and optimized) and the JIT, full, split and
//!   one token per call;
//! - `kiln quantize` writes a directory that loads to the same logits bit for bit, with matrices
//!   at least 6× smaller;
//! - the policy: recurrent parameters are never quantized, the head and embedding only when
//!   asked, and the spec's and the command line's directions are followed or rejected with an
//!   error naming the weight.
//!
//! `cargo test --test quantize -- --nocapture` prints the logit error against f32 (relative RMS)
//! for each fixture and format.

use kiln_backend::quant::quantize;
use kiln_ir::{Quant, QuantScheme};
use kiln_passes::{PipelineOptions, QuantizeOptions};
use kiln_runtime::checkpoint::{save_f32, Checkpoint};
use kiln_runtime::quantized::write_quantized;
use kiln_runtime::{Backend, LoadOptions, Model};
use kiln_suite::{fixture, model_fixtures, reference, rel_err, runs, scratch};
use std::collections::BTreeMap;
use std::path::Path;

fn formats() -> [(Quant, bool); 3] {
    [
        (Quant { scheme: QuantScheme::Q4_0, group: 32 }, false),
        (Quant { scheme: QuantScheme::Q4_1, group: 32 }, false),
        // Odd groups (whose codes end mid-byte) shorter than a row, the last one cut short,
        // with the head and the embedding quantized too.
        (Quant { scheme: QuantScheme::Q4_1, group: 17 }, true),
    ]
}

fn options(quant: Quant, all: bool) -> QuantizeOptions {
    let mut o = QuantizeOptions::new(quant);
    o.head = all;
    o.embeddings = all;
    o
}

fn load(dir: &Path, backend: Backend, quantize: Option<QuantizeOptions>, optimize: bool) -> Model {
    let passes = if optimize {
        PipelineOptions::default()
    } else {
        let disabled = kiln_passes::all_passes().iter().filter(|p| !p.required).map(|p| p.name.to_string()).collect();
        PipelineOptions { disabled, ..PipelineOptions::default() }
    };
    Model::load(dir, &LoadOptions { backend, quantize, passes, ..LoadOptions::default() })
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// A copy of the checkpoint `dir` whose quantized weights (by `model`'s decisions) hold their
/// dequantized values, in f32.
fn dequantized_copy(dir: &Path, model: &Model, quant: Quant, name: &str) -> std::path::PathBuf {
    let out = scratch(name);
    let checkpoint = Checkpoint::open(dir).unwrap();
    let chosen: BTreeMap<&str, (usize, usize)> =
        model.quantization().unwrap().quantized().map(|d| (d.name.as_str(), (d.rows, d.cols))).collect();
    let format = quant.scheme;
    let mut tensors = Vec::new();
    for name in checkpoint.tensor_names() {
        let shape = checkpoint.info(name).unwrap().shape.clone();
        let values = checkpoint.tensor_f32(name, &shape).unwrap().into_owned();
        let values = match chosen.get(name) {
            Some(&(rows, cols)) => quantize(&values, rows, cols, format, quant.group as usize).unwrap().dequantize(),
            None => values,
        };
        tensors.push((name.to_string(), shape, values));
    }
    save_f32(&out.join("model.safetensors"), &tensors).unwrap();
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    out
}

fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn quantized_products_equal_dequantized_weights_on_every_backend() {
    let mut table = String::from(
        "logits vs f32, relative RMS  | q4_0:32 | q4_1:32 | q4_1:17 + head + embedding\n---|---|---|---\n",
    );
    for name in model_fixtures() {
        let dir = fixture(&name);
        let r = reference(&dir);
        let f32_model = load(&dir, Backend::Interpreter, None, false);
        let f32_full = f32_model.forward(&r.tokens, &mut f32_model.new_state()).unwrap().data;
        table += &name;
        for (quant, all) in formats() {
            let reference_model = load(&dir, Backend::Interpreter, Some(options(quant, all)), false);
            let copy = dequantized_copy(&dir, &reference_model, quant, &format!("deq-{name}-{}", quant.scheme.name()));
            let dequantized = load(&copy, Backend::Interpreter, None, false);
            let expected = runs(&dequantized, &r.tokens, r.split);
            for (backend, optimize) in
                [(Backend::Interpreter, false), (Backend::Interpreter, true), (Backend::Jit, true)]
            {
                let model = load(&dir, backend, Some(options(quant, all)), optimize);
                let got = runs(&model, &r.tokens, r.split);
                for (what, (x, y)) in ["full", "split", "decode"].iter().zip(got.iter().zip(&expected)) {
                    let err = rel_err(x, y);
                    assert!(err < 1e-5, "{name} {quant} {backend:?} optimized={optimize} {what}: {err:e}");
                }
            }
            table += &format!(" | {:.3}", rel_rms(&expected[0], &f32_full));
            let _ = std::fs::remove_dir_all(copy);
        }
        table += "\n";
    }
    eprintln!("{table}");
}

#[test]
fn kiln_quantize_round_trips_bit_for_bit() {
    for name in ["rwkv4-untied", "mamba-untied-bias", "mamba2-g2"] {
        let dir = fixture(name);
        let r = reference(&dir);
        for (quant, all) in formats() {
            let out = scratch(&format!("quantized-{name}-{}", quant.scheme.name()));
            let written = write_quantized(&dir, &out, &options(quant, all), &BTreeMap::new(), true).unwrap();
            let ratio = written.f32_bytes as f64 / written.quantized_bytes as f64;
            eprintln!(
                "{name:<20} {quant:<8} matrices {:.2}× smaller, file {} → {} bytes",
                ratio, written.source_file_bytes, written.file_bytes
            );
            // q4_1 stores a minimum per group as well, and 17-wide groups pay their scales
            // more often than 32-wide ones.
            let bar = if quant.scheme == QuantScheme::Q4_0 { 6.0 } else { 5.0 };
            assert!(ratio >= bar, "{name} {quant}: only {ratio:.2}× smaller");
            let stored = load(&out, Backend::Jit, None, true);
            let at_load = load(&dir, Backend::Jit, Some(options(quant, all)), true);
            assert_eq!(runs(&stored, &r.tokens, r.split), runs(&at_load, &r.tokens, r.split), "{name} {quant}");
            let again = write_quantized(&out, &scratch("twice"), &options(quant, all), &BTreeMap::new(), true);
            assert!(again.unwrap_err().to_string().contains("already quantized"));
            let _ = std::fs::remove_dir_all(out);
        }
    }
}

fn decisions(name: &str, options: QuantizeOptions) -> BTreeMap<String, bool> {
    let model = load(&fixture(name), Backend::Interpreter, Some(options), true);
    model.quantization().unwrap().decisions.iter().map(|d| (d.name.clone(), d.quantized)).collect()
}

#[test]
fn the_policy_quantizes_products_only_and_follows_directions() {
    let q4 = Quant { scheme: QuantScheme::Q4_0, group: 32 };
    for name in model_fixtures() {
        let dir = fixture(&name);
        let checkpoint = Checkpoint::open(&dir).unwrap();
        let chosen = decisions(&name, QuantizeOptions::new(q4));
        assert!(chosen.values().any(|&q| q), "{name}: nothing quantized");
        for (weight, quantized) in &chosen {
            let recurrent = ["time_decay", "time_first", "A_log", ".D", "conv1d", "norm", "ln"];
            if *quantized {
                assert!(!recurrent.iter().any(|r| weight.contains(r)), "{name}: {weight} quantized");
                assert!(!weight.contains("embed") && !weight.contains("head"), "{name}: {weight} by default");
            }
        }
        // Every f32 tensor that is not a matrix stays out of the decisions altogether.
        for t in checkpoint.tensor_names() {
            let rank = checkpoint.info(t).unwrap().shape.len();
            assert!(rank == 2 || !chosen.contains_key(t), "{name}: {t} of rank {rank} considered");
        }
    }
    // The head and the embedding by option; a tied one needs both.
    let mut all = QuantizeOptions::new(q4);
    all.head = true;
    all.embeddings = true;
    let untied = decisions("rwkv4-untied", all.clone());
    assert!(untied["head.weight"] && untied["rwkv.embeddings.weight"]);
    let mut head_only = QuantizeOptions::new(q4);
    head_only.head = true;
    assert!(!decisions("rwkv4-tied", head_only.clone())["rwkv.embeddings.weight"]);
    assert!(decisions("rwkv4-tied", all)["rwkv.embeddings.weight"]);
    assert!(decisions("rwkv4-untied", head_only)["head.weight"]);

    // Directions from the command line.
    let mut keep = QuantizeOptions::new(q4);
    keep.overrides.insert("rwkv.blocks.0.attention.key.weight".into(), false);
    assert!(!decisions("rwkv4-untied", keep)["rwkv.blocks.0.attention.key.weight"]);
    let mut unknown = QuantizeOptions::new(q4);
    unknown.overrides.insert("rwkv.blocks.0.attention.time_decay".into(), true);
    let err = Model::load(&fixture("rwkv4-untied"), &LoadOptions { quantize: Some(unknown), ..LoadOptions::default() })
        .unwrap_err()
        .to_string();
    assert!(err.contains("`rwkv.blocks.0.attention.time_decay`"), "{err}");
}

/// A spec's `quantize = false` keeps a weight in f32, and `quantize = true` on a weight no
/// product reads is an error naming it.
#[test]
fn the_spec_directs_the_policy() {
    let dir = fixture("rwkv4-untied");
    let spec_text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rwkv4.toml")).unwrap();
    let key = r#"att_key        = { name = "rwkv.blocks.{i}.attention.key.weight", shape = "[A, H]" }"#;
    assert!(spec_text.contains(key));
    let scratch_dir = scratch("quantize-spec");
    let write = |text: &str| {
        let path = scratch_dir.join("rwkv4.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let q4 = Quant { scheme: QuantScheme::Q4_0, group: 32 };
    let kept = write(
        &spec_text.replace(key, &key.replace(r#"shape = "[A, H]" }"#, r#"shape = "[A, H]", quantize = false }"#)),
    );
    let options = LoadOptions { spec: Some(kept), quantize: Some(QuantizeOptions::new(q4)), ..LoadOptions::default() };
    let model = Model::load(&dir, &options).unwrap();
    let report = model.quantization().unwrap();
    for d in &report.decisions {
        let linear = d.role == Some(kiln_passes::quantize::WeightRole::Linear);
        assert_eq!(d.quantized, linear && !d.name.contains("attention.key"), "{}", d.name);
    }
    let decay = r#"time_decay     = { name = "rwkv.blocks.{i}.attention.time_decay", shape = "[A]" }"#;
    assert!(spec_text.contains(decay));
    let forced =
        write(&spec_text.replace(decay, &decay.replace(r#"shape = "[A]" }"#, r#"shape = "[A]", quantize = true }"#)));
    let options =
        LoadOptions { spec: Some(forced), quantize: Some(QuantizeOptions::new(q4)), ..LoadOptions::default() };
    let err = Model::load(&dir, &options).unwrap_err().to_string();
    assert!(
        err.contains("weight `rwkv.blocks.0.attention.time_decay` is directed to be quantized (in the spec)"),
        "{err}"
    );
    assert!(err.contains("not a weight matrix"), "{err}");
    let bad = write(
        &spec_text.replace(key, &key.replace(r#"shape = "[A, H]" }"#, r#"shape = "[A, H]", quantize = "yes" }"#)),
    );
    let err = Model::load(&dir, &LoadOptions { spec: Some(bad), ..LoadOptions::default() }).unwrap_err().to_string();
    assert!(err.contains("`quantize` must be true or false"), "{err}");
    let _ = std::fs::remove_dir_all(scratch_dir);
}

/// QLoRA: the adapter's gradients through 4-bit products equal its gradients on the f32 base
/// with dequantized weights, on both backends and with chunked backpropagation.
#[test]
fn qlora_gradients_equal_those_on_the_dequantized_base() {
    use kiln_runtime::finetune::{Finetune, Tuning};
    use kiln_runtime::{Adapter, GradientOptions};
    let q4 = Quant { scheme: QuantScheme::Q4_0, group: 32 };
    for name in ["lora-rwkv4", "lora-mamba", "lora-mamba2"] {
        let dir = fixture(name);
        let tokens: Vec<i64> = (0..12).map(|i| (i * 37 + 5) % 300).collect();
        let base = load(&dir, Backend::Interpreter, Some(QuantizeOptions::new(q4)), false);
        let copy = dequantized_copy(&dir, &base, q4, &format!("qlora-{name}"));
        let grads = |dir: &Path, quantize: Option<QuantizeOptions>, backend, chunk| {
            let adapter = Adapter::open(&fixture(name).join("adapter")).unwrap();
            let options = GradientOptions { backend, quantize, chunk, ..GradientOptions::default() };
            let f = Finetune::new(dir, None, Tuning::Adapter(adapter), &options).unwrap();
            f.program.loss_and_grad(&f.params, &tokens).unwrap()
        };
        let (loss, expected) = grads(&copy, None, Backend::Interpreter, None);
        let (f32_loss, _) = grads(&dir, None, Backend::Interpreter, None);
        assert_ne!(loss, f32_loss, "{name}: quantization changed nothing");
        for (backend, chunk) in [(Backend::Interpreter, None), (Backend::Jit, None), (Backend::Jit, Some(5))] {
            let (l, g) = grads(&dir, Some(QuantizeOptions::new(q4)), backend, chunk);
            assert!((l - loss).abs() <= 1e-5 * loss.abs(), "{name} {backend:?}: loss {l} vs {loss}");
            for (a, b) in g.iter().zip(&expected) {
                let err = rel_err(a, b);
                assert!(err < 1e-4, "{name} {backend:?} chunk {chunk:?}: gradient error {err:e}");
            }
        }
        let _ = std::fs::remove_dir_all(copy);
    }
}

/// Full fine-tuning cannot train 4-bit weights: asking for it is an error, not a silent f32 run.
#[test]
fn full_fine_tuning_of_a_quantized_base_is_refused() {
    use kiln_runtime::finetune::{Finetune, Tuning};
    use kiln_runtime::GradientOptions;
    let q4 = Quant { scheme: QuantScheme::Q4_0, group: 32 };
    let options = GradientOptions { quantize: Some(QuantizeOptions::new(q4)), ..GradientOptions::default() };
    let err = Finetune::new(&fixture("rwkv4-tied"), None, Tuning::Full, &options).unwrap_err().to_string();
    assert!(err.contains("4-bit weights cannot be trained"), "{err}");
}

/// Activation-aware scales: a weight stored as `Q(W·diag(s))` beside `s` computes
/// `(x / s)·Q(W·diag(s))ᵀ`, i.e. the f32 model with the weight `Q(W·diag(s))·diag(1/s)`; and
/// `kiln quantize --awq` calibrates, searches and writes a model that loads with its scales.
#[test]
fn activation_aware_scales_divide_the_products_inputs() {
    let dir = fixture("rwkv4-untied");
    let r = reference(&dir);
    let q4 = Quant { scheme: QuantScheme::Q4_0, group: 32 };
    let options = QuantizeOptions::new(q4);
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let decisions = kiln_runtime::quantized::decisions(&checkpoint, &options).unwrap();
    let mut scales = BTreeMap::new();
    for (i, d) in decisions.quantized().enumerate() {
        let s: Vec<f32> = kiln_suite::random_values(d.cols, i as u64 + 7).iter().map(|v| (2.0 * v).exp()).collect();
        scales.insert(d.name.clone(), s);
    }
    let out = scratch("awq-written");
    write_quantized(&dir, &out, &options, &scales, true).unwrap();

    let reference_dir = scratch("awq-reference");
    let mut tensors = Vec::new();
    for name in checkpoint.tensor_names() {
        let shape = checkpoint.info(name).unwrap().shape.clone();
        let mut values = checkpoint.tensor_f32(name, &shape).unwrap().into_owned();
        if let Some(s) = scales.get(name) {
            let (rows, cols) = (shape[0], shape[1]);
            let scaled: Vec<f32> =
                values.chunks_exact(cols).flat_map(|w| w.iter().zip(s).map(|(w, s)| w * s)).collect();
            let q = quantize(&scaled, rows, cols, QuantScheme::Q4_0, 32).unwrap().dequantize();
            values = q.chunks_exact(cols).flat_map(|w| w.iter().zip(s).map(|(w, s)| w / s)).collect();
        }
        tensors.push((name.to_string(), shape, values));
    }
    save_f32(&reference_dir.join("model.safetensors"), &tensors).unwrap();
    std::fs::copy(dir.join("config.json"), reference_dir.join("config.json")).unwrap();
    let expected = runs(&load(&reference_dir, Backend::Interpreter, None, false), &r.tokens, r.split);
    for (backend, optimize) in [(Backend::Interpreter, false), (Backend::Jit, true)] {
        let got = runs(&load(&out, backend, None, optimize), &r.tokens, r.split);
        for (what, (x, y)) in ["full", "split", "decode"].iter().zip(got.iter().zip(&expected)) {
            let err = rel_err(x, y);
            assert!(err < 1e-5, "{backend:?} {what}: {err:e}");
        }
    }

    // The command: calibration text through the fixture's tokenizer.
    let text = scratch("awq-text").join("calibration.txt");
    std::fs::write(&text, "First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(8)).unwrap();
    let cli_out = scratch("awq-cli");
    let mut printed = Vec::new();
    let args = ["kiln", "quantize", dir.to_str().unwrap(), "--out", cli_out.to_str().unwrap(), "--force", "--awq"];
    kiln_runtime::cli::run(args.iter().copied().chain([text.to_str().unwrap()]), &mut printed).unwrap();
    let printed = String::from_utf8(printed).unwrap();
    assert!(printed.contains("AWQ: relative squared error"), "{printed}");
    let written = Checkpoint::open(&cli_out).unwrap();
    assert!(written.contains("rwkv.blocks.0.attention.key.weight.awq_scale"));
    let model = load(&cli_out, Backend::Jit, None, true);
    assert!(model.graph().to_string().contains(".awq_scale"));
    for d in [out, reference_dir, cli_out, text.parent().unwrap().to_path_buf()] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Bad quantization requests get one-line errors naming what is wrong, and `kiln quantize`
/// overwrites nothing unasked.
#[test]
fn bad_quantization_requests_are_refused() {
    use kiln_suite::cli_err;
    let model = fixture("rwkv4-tied");
    let m = model.to_str().unwrap();
    let fwd = |extra: &[&str]| {
        let out = scratch("bad-quantize").join("logits.safetensors");
        let mut args = vec!["forward", m, "--tokens", "1,2", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        cli_err(&args)
    };
    assert!(fwd(&["--quantize", "q5"]).contains("unknown format `q5`"));
    assert!(fwd(&["--quantize", "q4_0:0"]).contains("not a group size"));
    assert!(fwd(&["--quantize-head"]).contains("--quantize"));
    assert!(fwd(&["--quantize", "q4_0", "--keep-f32", "nope"]).contains("names `nope`, which is not a weight matrix"));

    let dir = scratch("bad-quantize-out");
    let out = dir.join("q");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), "precious").unwrap();
    let o = out.to_str().unwrap();
    assert!(cli_err(&["quantize", m, "--out", o]).contains("pass --force"));
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "precious");
    assert!(cli_err(&["quantize", m, "--out", m, "--force"]).contains("is the model directory itself"));
    let no_tokenizer = fixture("mamba2-g1");
    let text = dir.join("calibration.txt");
    std::fs::write(&text, "some text").unwrap();
    let e =
        cli_err(&["quantize", no_tokenizer.to_str().unwrap(), "--out", o, "--force", "--awq", text.to_str().unwrap()]);
    assert!(e.contains("no tokenizer.json"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A quantized checkpoint missing a packed part, or holding one of the wrong shape, is an error
/// naming the tensor (and both shapes) and the spec line that declared the weight.
#[test]
fn damaged_quantized_checkpoints_name_the_tensor() {
    use safetensors::tensor::TensorView;
    let dir = scratch("damaged-quantized");
    let options = QuantizeOptions::new(Quant { scheme: QuantScheme::Q4_0, group: 32 });
    write_quantized(&fixture("rwkv4-tied"), &dir, &options, &BTreeMap::new(), true).unwrap();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let rewrite = |drop: &str, narrow: &str| {
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut kept = Vec::new();
        for (name, view) in file.tensors() {
            if name == drop {
                continue;
            }
            let data = if name == narrow {
                let [rows, cols] = view.shape()[..] else { panic!("{name} is not a matrix") };
                let half: Vec<u8> = view.data().chunks(cols).flat_map(|r| r[..cols / 2].to_vec()).collect();
                (vec![rows, cols / 2], half)
            } else {
                (view.shape().to_vec(), view.data().to_vec())
            };
            kept.push((name, view.dtype(), data));
        }
        let views: Vec<(String, TensorView<'_>)> =
            kept.iter().map(|(n, d, (s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    };
    let load_err = || Model::load(&dir, &LoadOptions::default()).unwrap_err().to_string();
    rewrite("rwkv.blocks.0.attention.key.weight.scales", "");
    let e = load_err();
    assert!(e.contains("tensor `rwkv.blocks.0.attention.key.weight.scales` not found"), "{e}");
    assert!(e.contains("declared at models/rwkv4.toml:"), "{e}");
    rewrite("", "rwkv.blocks.1.attention.value.weight.qweight");
    let e = load_err();
    let shapes = "`rwkv.blocks.1.attention.value.weight.qweight` has shape [32, 8] in model.safetensors but the spec declares [32, 16]";
    assert!(e.contains(shapes), "{e}");
    assert!(e.contains("declared at models/rwkv4.toml:"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
