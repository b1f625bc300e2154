//! AWQ calibration on the committed fixtures: the capture finds every product weight with its
//! `K` and row counts, and the captured rows are the values the products read (checked against
//! transformers' logits through the head, and against a direct computation of the first
//! layer's key projection input).

use kiln_backend::quant::QuantScheme;
use kiln_runtime::awq::{calibrate, search_model, AwqReport, Calibration, CalibrationOptions};
use kiln_runtime::checkpoint::Checkpoint;
use kiln_runtime::{Backend, LoadOptions};
use kiln_suite::{fixture, model_fixtures, reference, rel_err};

fn options(window: usize, max_rows: usize, backend: Backend) -> CalibrationOptions {
    CalibrationOptions { window, max_rows, load: LoadOptions { backend, ..LoadOptions::default() } }
}

fn run(name: &str, window: usize, max_rows: usize, backend: Backend) -> Calibration {
    let dir = fixture(name);
    let tokens = reference(&dir).tokens;
    calibrate(Checkpoint::open(&dir).unwrap(), &tokens, &options(window, max_rows, backend)).unwrap()
}

#[test]
fn rwkv4_capture_finds_every_projection_with_its_channels_and_rows() {
    for (name, head, head_other_uses) in
        [("rwkv4-untied", "head.weight", 0), ("rwkv4-tied", "rwkv.embeddings.weight", 1)]
    {
        let dir = fixture(name);
        let config = Checkpoint::open(&dir).unwrap().config().clone();
        let dim = |key: &str| config[key].as_u64().unwrap() as usize;
        let (h, a, i, v) =
            (dim("hidden_size"), dim("attention_hidden_size"), dim("intermediate_size"), dim("vocab_size"));
        let c = run(name, 5, 8, Backend::Jit);
        let t = reference(&dir).tokens.len();
        assert_eq!((c.tokens, c.windows), (t, t.div_ceil(5)));
        let mut expected: Vec<(String, usize, usize)> = Vec::new();
        for layer in 0..dim("num_hidden_layers") {
            let b = format!("rwkv.blocks.{layer}");
            for (w, n, k) in [
                ("attention.key", a, h),
                ("attention.value", a, h),
                ("attention.receptance", a, h),
                ("attention.output", h, a),
                ("feed_forward.key", i, h),
                ("feed_forward.receptance", h, h),
                ("feed_forward.value", h, i),
            ] {
                expected.push((format!("{b}.{w}.weight"), n, k));
            }
        }
        expected.push((head.to_string(), v, h));
        expected.sort();
        let mut found: Vec<(String, usize, usize)> =
            c.weights.iter().map(|w| (w.name.clone(), w.rows, w.cols)).collect();
        found.sort();
        assert_eq!(found, expected, "{name}");
        // At most 8 of the T rows are sampled, every ⌈T / 8⌉-th from the first.
        let sampled = t.div_ceil(t.div_ceil(8));
        for w in &c.weights {
            assert_eq!((w.products, w.stats.rows_seen(), w.stats.sampled_rows()), (1, t, sampled), "{name} {}", w.name);
            assert_eq!(w.stats.channels(), w.cols);
            let other = if w.name == head { head_other_uses } else { 0 };
            assert_eq!(w.other_uses, other, "{name} {}", w.name);
        }
    }
}

#[test]
fn the_captured_head_input_times_the_head_gives_the_reference_logits() {
    for name in model_fixtures() {
        let dir = fixture(&name);
        let r = reference(&dir);
        let checkpoint = Checkpoint::open(&dir).unwrap();
        for backend in [Backend::Interpreter, Backend::Jit] {
            let c = run(&name, r.split, 1024, backend);
            let head = c.weights.iter().find(|w| w.rows == r.vocab).unwrap_or_else(|| panic!("{name}: no head"));
            let x = head.stats.rows();
            assert_eq!(head.stats.sampled_rows(), r.tokens.len(), "{name}: every row kept");
            let w = checkpoint.tensor_f32(&head.name, &[head.rows, head.cols]).unwrap();
            let logits: Vec<f32> = x
                .chunks_exact(head.cols)
                .flat_map(|row| w.chunks_exact(head.cols).map(move |wj| row.iter().zip(wj).map(|(a, b)| a * b).sum()))
                .collect();
            let err = rel_err(&logits, &r.logits);
            eprintln!("{name:<20} {backend:?}: captured head input · headᵀ vs transformers {err:.1e}");
            assert!(err < 1e-4, "{name} {backend:?}: {err:e}");
            let means: Vec<f32> = (0..head.cols)
                .map(|k| x.chunks_exact(head.cols).map(|row| row[k].abs()).sum::<f32>() / r.tokens.len() as f32)
                .collect();
            assert!(rel_err(head.stats.mean_abs(), &means) < 1e-6, "{name}: means over every row");
        }
    }
}

/// `(x − mean) / √(var + eps) · w + b` over each row of `h` values.
fn layer_norm(x: &[f32], w: &[f32], b: &[f32], h: usize) -> Vec<f32> {
    x.chunks_exact(h)
        .flat_map(|row| {
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + 1e-5).sqrt();
            row.iter().zip(w).zip(b).map(move |((v, w), b)| (v - mean) * inv * w + b)
        })
        .collect()
}

#[test]
fn the_captured_key_input_of_the_first_layer_is_its_time_mix() {
    let dir = fixture("rwkv4-untied");
    let tokens = reference(&dir).tokens;
    let ck = Checkpoint::open(&dir).unwrap();
    let (h, v) = (64, 300);
    let get = |n: &str, shape: &[usize]| ck.tensor_f32(n, shape).unwrap().into_owned();
    let emb = get("rwkv.embeddings.weight", &[v, h]);
    let x: Vec<f32> = tokens.iter().flat_map(|&t| emb[t as usize * h..(t as usize + 1) * h].to_vec()).collect();
    let x0 = layer_norm(&x, &get("rwkv.blocks.0.pre_ln.weight", &[h]), &get("rwkv.blocks.0.pre_ln.bias", &[h]), h);
    let a = layer_norm(&x0, &get("rwkv.blocks.0.ln1.weight", &[h]), &get("rwkv.blocks.0.ln1.bias", &[h]), h);
    let m = get("rwkv.blocks.0.attention.time_mix_key", &[1, 1, h]);
    // The shifted row is the previous token's (zeros, the initial state, before the first).
    let mut expected = Vec::with_capacity(a.len());
    for t in 0..tokens.len() {
        for c in 0..h {
            let prev = if t == 0 { 0.0 } else { a[(t - 1) * h + c] };
            expected.push(a[t * h + c] * m[c] + prev * (1.0 - m[c]));
        }
    }
    for (window, backend) in [(24, Backend::Interpreter), (5, Backend::Interpreter), (3, Backend::Jit)] {
        let c = run("rwkv4-untied", window, 1024, backend);
        let key = c.weights.iter().find(|w| w.name == "rwkv.blocks.0.attention.key.weight").unwrap();
        let err = rel_err(key.stats.rows(), &expected);
        assert!(err < 1e-5, "window {window} {backend:?}: {err:e}");
    }
}

#[test]
fn awq_on_a_fixture_never_loses_to_round_to_nearest_and_reports_every_weight() {
    let dir = fixture("mamba-tied");
    let c = run("mamba-tied", 6, 64, Backend::Jit);
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let scaled = search_model(&checkpoint, &c, QuantScheme::Q4_0, 16).unwrap();
    assert_eq!(scaled.len(), c.weights.len());
    for s in &scaled {
        assert!(s.choice.error_awq <= s.choice.error_rtn, "{}", s.name);
        assert_eq!(s.choice.scale.len(), s.cols);
    }
    let report = AwqReport::new(QuantScheme::Q4_0, 16, &scaled);
    let table = report.table();
    assert!(report.total_awq() <= report.total_rtn());
    for s in &scaled {
        assert!(table.contains(&s.name), "{table}");
    }
    assert_eq!(table.lines().count(), scaled.len() + 4, "{table}");
}

#[test]
fn bad_calibration_input_is_an_error() {
    let dir = fixture("rwkv4-tied");
    let open = || Checkpoint::open(&dir).unwrap();
    let err = |tokens: &[i64], o: &CalibrationOptions| calibrate(open(), tokens, o).unwrap_err().to_string();
    assert!(err(&[], &CalibrationOptions::default()).contains("at least one token"));
    assert!(err(&[1, 2], &options(0, 8, Backend::Jit)).contains("window"));
    assert!(err(&[1, 2], &options(4, 0, Backend::Jit)).contains("sampled rows"));
    assert!(err(&[1, 999], &options(4, 8, Backend::Jit)).contains("out of range"));
}
