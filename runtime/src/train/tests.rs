//! End-to-end tests of [`train`] with the bigram objective on the bundled Shakespeare text:
//! learning, exact resumption after a crash, and the output directory's rules.

use super::bigram::BigramObjective;
use super::*;
use crate::Error;
use std::path::{Path, PathBuf};

const SHAKESPEARE: &str = include_str!("../../assets/tinyshakespeare.txt");

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn shakespeare(val_fraction: f64, seq_len: usize) -> (CharVocab, Dataset) {
    let vocab = CharVocab::from_text(SHAKESPEARE);
    let tokens = vocab.encode(SHAKESPEARE).unwrap();
    let data = Dataset::new(Path::new("tinyshakespeare.txt"), tokens, vocab.len(), val_fraction, seq_len).unwrap();
    (vocab, data)
}

fn run(dir: &Path, resume: bool, force: bool) -> RunOptions {
    RunOptions { out_dir: dir.to_path_buf(), resume, force, progress: false }
}

/// The bigram objective, failing on its `fail_at`-th gradient call (a simulated crash).
struct Crashing {
    inner: BigramObjective,
    calls: usize,
    fail_at: Option<usize>,
}

impl Objective for Crashing {
    fn trainables(&self) -> &[TrainableSpec] {
        self.inner.trainables()
    }
    fn loss_and_grad(&mut self, params: &[Vec<f32>], tokens: &[i64]) -> Result<(f32, Vec<Vec<f32>>), Error> {
        self.calls += 1;
        if Some(self.calls) == self.fail_at {
            return Err(Error::Usage("simulated crash".into()));
        }
        self.inner.loss_and_grad(params, tokens)
    }
    fn loss(&mut self, params: &[Vec<f32>], tokens: &[i64]) -> Result<f32, Error> {
        self.inner.loss(params, tokens)
    }
}

#[test]
fn a_bigram_learns_shakespeare() {
    let (vocab, data) = shakespeare(0.1, 64);
    let dir = out_dir("learns");
    let options = TrainOptions {
        steps: 300,
        batch: 8,
        seq_len: 64,
        lr: 0.1,
        min_lr: 0.01,
        warmup: 10,
        val_every: 100,
        save_every: 0,
        ..TrainOptions::default()
    };
    let mut objective = BigramObjective::new(vocab.len());
    let initial = objective.initial_params();
    let mut saver = SaveTensors::new("model.safetensors").with_file("tokenizer.json", b"{}".to_vec());
    let mut out = Vec::new();
    let summary =
        train(&mut objective, initial, &data, &options, &run(&dir, false, false), &mut saver, &mut out).unwrap();
    let printed = String::from_utf8(out).unwrap();

    let uniform = (vocab.len() as f64).ln();
    let val = summary.val_loss.unwrap();
    assert!(val < uniform - 1.4, "validation loss {val} vs ln V = {uniform}\n{printed}");
    assert_eq!(summary.steps, 300);

    let records = LossLog::read(&dir.join(LOG_FILE)).unwrap();
    assert_eq!(records.len(), 301);
    assert_eq!((records[0].step, records[0].train_loss), (0, None));
    assert!((records[0].val_loss.unwrap() - uniform).abs() < 1e-6);
    let curve: Vec<(u64, f64)> = records.iter().filter_map(|r| Some((r.step, r.val_loss?))).collect();
    println!("bigram validation loss by step (ln V = {uniform:.4}): {curve:?}");
    let val_steps: Vec<u64> = curve.iter().map(|&(step, _)| step).collect();
    assert_eq!(val_steps, vec![0, 100, 200, 300]);
    assert_eq!(records[1].lr, Some(0.0), "warmup starts at 0, as transformers' schedule");
    assert!(printed.starts_with("step 0: val loss 4.17"), "{printed}");
    let last = printed.lines().last().unwrap();
    assert!(last.starts_with("train: ") && last.ends_with(" tokens/s"), "{last}");

    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.tensor("logits").unwrap().shape(), &[vocab.len(), vocab.len()]);
    assert!(dir.join(STATE_FILE).is_file() && dir.join("tokenizer.json").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_after_a_crash_is_bit_identical() {
    let (vocab, data) = shakespeare(0.1, 32);
    let options = TrainOptions {
        steps: 20,
        batch: 3,
        seq_len: 32,
        lr: 0.05,
        min_lr: 0.005,
        warmup: 4,
        val_every: 5,
        save_every: 10,
        seed: 42,
        ..TrainOptions::default()
    };
    let objective = |fail_at| Crashing { inner: BigramObjective::new(vocab.len()), calls: 0, fail_at };
    let initial = BigramObjective::new(vocab.len()).initial_params();
    let mut saver = SaveTensors::new("model.safetensors");

    let whole = out_dir("whole");
    let mut sink = Vec::new();
    let uninterrupted = train(
        &mut objective(None),
        initial.clone(),
        &data,
        &options,
        &run(&whole, false, false),
        &mut saver,
        &mut sink,
    )
    .unwrap();

    // Crash in step 14, after the checkpoint of step 10.
    let split = out_dir("split");
    let crash = train(
        &mut objective(Some(13 * 3 + 2)),
        initial.clone(),
        &data,
        &options,
        &run(&split, false, false),
        &mut saver,
        &mut sink,
    );
    assert!(matches!(crash, Err(Error::Usage(ref m)) if m == "simulated crash"));
    assert_eq!(LossLog::read(&split.join(LOG_FILE)).unwrap().last().unwrap().step, 13);

    // A new run refuses the directory; a resumed one (with other measuring options) continues.
    let err = train(
        &mut objective(None),
        initial.clone(),
        &data,
        &options,
        &run(&split, false, false),
        &mut saver,
        &mut sink,
    )
    .unwrap_err();
    assert!(err.to_string().contains("pass --resume"), "{err}");
    let measured_differently = TrainOptions { val_every: 7, ..options.clone() };
    let resumed = train(
        &mut objective(None),
        vec![],
        &data,
        &measured_differently,
        &run(&split, true, false),
        &mut saver,
        &mut sink,
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, Some(10));
    assert_eq!(resumed.params, uninterrupted.params, "resumed parameters differ from the uninterrupted run's");
    assert_eq!(
        std::fs::read(split.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap()
    );
    let steps: Vec<u64> = LossLog::read(&split.join(LOG_FILE)).unwrap().iter().map(|r| r.step).collect();
    assert_eq!(steps, (0..=20).collect::<Vec<_>>());

    // Resuming with options that change the math is refused.
    let other = TrainOptions { lr: 0.01, ..options.clone() };
    let err = train(&mut objective(None), vec![], &data, &other, &run(&split, true, false), &mut saver, &mut sink)
        .unwrap_err();
    assert!(err.to_string().contains("lr: 0.05 → 0.01"), "{err}");
    std::fs::remove_dir_all(&whole).unwrap();
    std::fs::remove_dir_all(&split).unwrap();
}

#[test]
fn out_dir_rules() {
    let (vocab, data) = shakespeare(0.0, 16);
    let options = TrainOptions { steps: 2, batch: 1, seq_len: 16, warmup: 0, ..TrainOptions::default() };
    let mut objective = BigramObjective::new(vocab.len());
    let mut saver = SaveTensors::new("model.safetensors");
    let mut sink = Vec::new();
    let dir = out_dir("rules");
    let nothing = train(&mut objective, vec![], &data, &options, &run(&dir, true, false), &mut saver, &mut sink);
    assert!(nothing.unwrap_err().to_string().contains("nothing to resume"));

    std::fs::write(dir.join("model.safetensors"), b"precious").unwrap();
    let initial = objective.initial_params();
    let err = train(&mut objective, initial.clone(), &data, &options, &run(&dir, false, false), &mut saver, &mut sink)
        .unwrap_err();
    assert!(err.to_string().contains("already holds model.safetensors"), "{err}");
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), b"precious");
    let forced =
        train(&mut objective, initial.clone(), &data, &options, &run(&dir, false, true), &mut saver, &mut sink)
            .unwrap();
    assert_eq!((forced.steps, forced.val_loss), (2, None), "no validation part, no validation loss");

    let err =
        train(&mut objective, vec![vec![0.0; 3]], &data, &options, &run(&dir, false, true), &mut saver, &mut sink)
            .unwrap_err();
    assert!(err.to_string().contains("the initial value for trainable `logits` has 3 values"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
