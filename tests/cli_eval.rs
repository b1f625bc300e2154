//! `kiln eval`, run in-process on committed fixtures: its mean NLL equals a log-softmax computed
//! here by hand from one `Model::forward` over the whole sequence; it does not depend on the
//! window; the held-out split is the trainer's validation tail; character-level models get bits
//! per character and per byte; bad input gets a one-line error naming what is wrong.

use kiln_runtime::train::CharVocab;
use kiln_runtime::{LoadOptions, Model, Tokenizer};
use kiln_suite::{cli, cli_err, fixture, scratch};
use std::path::Path;

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n\
First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n";

/// `kiln eval ARGS --json`, parsed.
fn eval_json(args: &[&str]) -> serde_json::Value {
    let mut argv = vec!["eval"];
    argv.extend(args);
    argv.push("--json");
    let out = cli(&argv).unwrap_or_else(|e| panic!("kiln {}: {}", argv.join(" "), e.render()));
    assert_eq!(out.lines().count(), 1, "{out}");
    serde_json::from_str(&out).unwrap()
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

/// `−log softmax(row)[target]` in f64, by hand.
fn nll(row: &[f32], target: i64) -> f64 {
    let max = row.iter().map(|&x| f64::from(x)).fold(f64::NEG_INFINITY, f64::max);
    let log_z = max + row.iter().map(|&x| (f64::from(x) - max).exp()).sum::<f64>().ln();
    log_z - f64::from(row[target as usize])
}

/// Mean NLL of `tokens[1..]` from one forward pass over `tokens` from a fresh state.
fn reference_nll(model: &Model, tokens: &[i64]) -> f64 {
    let logits = model.forward(tokens, &mut model.new_state()).unwrap();
    let sum: f64 = (1..tokens.len()).map(|t| nll(logits.row(t - 1), tokens[t])).sum();
    sum / (tokens.len() - 1) as f64
}

/// The trainer's validation tail of `n` tokens, computed here: the last round(n · fraction).
fn held_out_start(n: usize, fraction: f64) -> usize {
    n - (n as f64 * fraction).round() as usize
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn text_through_the_tokenizer_matches_a_hand_log_softmax_and_ignores_the_window() {
    let dir = fixture("rwkv4-untied");
    let m = dir.to_str().unwrap();
    let scratch = scratch("eval-text");
    let data = write(&scratch, "text.txt", TEXT);
    let tokens = Tokenizer::from_dir(&dir).unwrap().unwrap().encode(TEXT).unwrap();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    assert!(tokens.len() > 40, "{}", tokens.len());

    let all = eval_json(&[m, "--data", &data, "--split", "all"]);
    assert_eq!(
        (all["tokens"].as_u64(), all["predicted"].as_u64()),
        (Some(tokens.len() as u64), Some(tokens.len() as u64 - 1))
    );
    let expected = reference_nll(&model, &tokens);
    assert!((number(&all, "mean_nll") - expected).abs() < 1e-5, "{all} vs {expected}");
    assert!((number(&all, "perplexity") - expected.exp()).abs() < 1e-4 * expected.exp());
    assert!((number(&all, "bits_per_token") - expected / std::f64::consts::LN_2).abs() < 1e-5);
    assert!(all.get("bits_per_char").is_none(), "a BPE tokenizer is not character-level: {all}");

    // The held-out part is the trainer's validation tail, from a fresh state.
    let start = held_out_start(tokens.len(), 0.25);
    let held = eval_json(&[m, "--data", &data, "--val-fraction", "0.25"]);
    assert_eq!((held["start"].as_u64(), held["split"].as_str()), (Some(start as u64), Some("held-out")));
    let expected = reference_nll(&model, &tokens[start..]);
    assert!((number(&held, "mean_nll") - expected).abs() < 1e-5, "{held} vs {expected}");

    // The state is carried across windows: any window gives one long pass's result.
    for window in ["1", "7", "13"] {
        let w = eval_json(&[m, "--data", &data, "--split", "all", "--window", window]);
        assert!((number(&w, "mean_nll") - number(&all, "mean_nll")).abs() < 1e-5, "window {window}: {w}");
    }
    let interp = eval_json(&[m, "--data", &data, "--split", "all", "--window", "7", "--backend", "interp"]);
    assert!((number(&interp, "mean_nll") - number(&all, "mean_nll")).abs() < 1e-5, "{interp}");

    // --max-tokens keeps the first N tokens of the split.
    let capped = eval_json(&[m, "--data", &data, "--split", "all", "--max-tokens", "20", "--window", "6"]);
    let expected = reference_nll(&model, &tokens[..20]);
    assert_eq!(capped["predicted"].as_u64(), Some(19));
    assert!((number(&capped, "mean_nll") - expected).abs() < 1e-5, "{capped} vs {expected}");

    // The table names the numbers.
    let table = cli(&["eval", m, "--data", &data]).unwrap();
    for part in ["mean NLL:", "perplexity:", "bits/token:", "tokens/s", "held-out"] {
        assert!(table.contains(part), "no `{part}` in:\n{table}");
    }
}

#[test]
fn token_ids_and_per_window_context() {
    let dir = fixture("mamba2-g1");
    let m = dir.to_str().unwrap();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let vocab = model.vocab_size().unwrap() as i64;
    let tokens: Vec<i64> = (0..61).map(|i| (i * 37 + 11) % vocab).collect();
    let scratch = scratch("eval-ids");
    let text =
        tokens.chunks(8).map(|c| c.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")).collect::<Vec<_>>();
    let ids = write(&scratch, "ids.txt", &text.join("\n"));

    let all = eval_json(&[m, "--ids", &ids, "--split", "all", "--window", "5"]);
    let expected = reference_nll(&model, &tokens);
    assert!((number(&all, "mean_nll") - expected).abs() < 1e-5, "{all} vs {expected}");
    let long = eval_json(&[m, "--ids", &ids, "--split", "all"]);
    assert!((number(&long, "mean_nll") - number(&all, "mean_nll")).abs() < 1e-5, "{long}");

    // Per window, as the trainer validates: fresh state, predictions inside each window only;
    // 61 tokens in windows of 16 are 16 + 16 + 16 + 13 tokens with 15 + 15 + 15 + 12 predictions.
    let per = eval_json(&[m, "--ids", &ids, "--split", "all", "--window", "16", "--per-window"]);
    let (mut sum, mut count) = (0.0, 0);
    for window in tokens.chunks(16) {
        sum += reference_nll(&model, window) * (window.len() - 1) as f64;
        count += window.len() - 1;
    }
    assert_eq!(per["predicted"].as_u64(), Some(count as u64));
    assert!((number(&per, "mean_nll") - sum / count as f64).abs() < 1e-5, "{per} vs {}", sum / count as f64);
    assert!(number(&per, "mean_nll") != number(&all, "mean_nll"));
}

/// A character-level model (a fixture with a `CharVocab` tokenizer, as `kiln train` saves one):
/// bits per character are bits per token, and bits per byte count the UTF-8 bytes predicted.
#[test]
fn character_models_report_bits_per_character_and_byte() {
    let text = "héllo wörld, héllo again\n".repeat(3);
    let scratch = scratch("eval-chars");
    let model_dir = scratch.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("rwkv4-tied").join(file), model_dir.join(file)).unwrap();
    }
    let vocab = CharVocab::from_text(&text);
    vocab.save(&model_dir.join("tokenizer.json")).unwrap();
    let data = write(&scratch, "text.txt", &text);
    let m = model_dir.to_str().unwrap();

    let r = eval_json(&[m, "--data", &data, "--split", "all"]);
    let tokens = vocab.encode(&text).unwrap();
    let model = Model::load(&model_dir, &LoadOptions::default()).unwrap();
    let expected = reference_nll(&model, &tokens);
    assert!((number(&r, "mean_nll") - expected).abs() < 1e-5, "{r} vs {expected}");
    assert_eq!(number(&r, "bits_per_char"), number(&r, "bits_per_token"));
    let bytes = text.chars().skip(1).map(char::len_utf8).sum::<usize>() as f64;
    let bits = number(&r, "nll_sum") / std::f64::consts::LN_2;
    assert!((number(&r, "bits_per_byte") - bits / bytes).abs() < 1e-9, "{r}");
    assert!(number(&r, "bits_per_byte") < number(&r, "bits_per_char"));
}

#[test]
fn bad_input_gets_a_one_line_error() {
    let dir = fixture("rwkv4-untied");
    let m = dir.to_str().unwrap();
    let no_tokenizer = fixture("mamba2-g1");
    let scratch = scratch("eval-errors");
    let text = write(&scratch, "text.txt", TEXT);
    let empty = write(&scratch, "empty.txt", "");
    let short = write(&scratch, "short.txt", "a");
    let missing = scratch.join("missing.txt");
    let missing = missing.to_str().unwrap();
    let out_of_vocab = write(&scratch, "oov.txt", "1, 2, 300, 4");
    let not_ids = write(&scratch, "bad.txt", "1 2 three");
    let blank = write(&scratch, "blank.txt", " \n");

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![m, "--data", missing], vec!["missing.txt"]),
        (vec![m, "--data", &empty], vec!["empty.txt", "empty"]),
        (vec![m, "--data", &short, "--split", "all"], vec!["short.txt", "1 token to evaluate", "at least 2"]),
        (vec![m, "--data", &text, "--val-fraction", "0.001"], vec!["text.txt", "held-out", "0 tokens"]),
        (vec![m, "--data", &text, "--val-fraction", "1.5"], vec!["validation fraction", "1.5"]),
        (vec![m, "--ids", &out_of_vocab, "--split", "all"], vec!["oov.txt", "token 2 has id 300", "300"]),
        (vec![m, "--ids", &not_ids], vec!["bad.txt", "`three`"]),
        (vec![m, "--ids", &blank], vec!["blank.txt", "no token ids"]),
        (vec![no_tokenizer.to_str().unwrap(), "--data", &text], vec!["no tokenizer.json", "--ids"]),
        (vec![m, "--data", &text, "--window", "0"], vec!["--window"]),
        (vec![m, "--data", &text, "--window", "1", "--per-window"], vec!["--window", "at least 2"]),
        (vec![m], vec!["--data"]),
        (vec![m, "--data", &text, "--ids", &out_of_vocab], vec!["--ids"]),
    ];
    for (args, parts) in cases {
        let mut argv = vec!["eval"];
        argv.extend(&args);
        let e = cli_err(&argv);
        for part in parts {
            assert!(e.contains(part), "kiln {}: no `{part}` in: {e}", argv.join(" "));
        }
        // clap's usage errors (`error: ...`) add a usage line; Kiln's own errors are one line.
        if !e.starts_with("error:") {
            assert!(!e.trim_end().contains('\n'), "more than one line: {e}");
        }
    }
}
