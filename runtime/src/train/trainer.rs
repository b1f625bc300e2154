//! [`train`]: the training loop (see the [module docs](super) for what a step does).
//!
//! The output directory holds `trainer_state.safetensors` (the latest checkpoint),
//! `train_log.jsonl` (the loss log) and the files of the caller's [`SaveTrained`]. A new run
//! refuses to write over any of them unless `force` is given; `resume` continues from the
//! checkpoint instead. When the run ends it prints `train: N tokens/s` (N an integer: the batch
//! tokens of this invocation's steps over the time spent in them, validation and saving excluded),
//! the line `benches/train_compare.py` reads.

use super::adamw::AdamW;
use super::clip::{clip_grad_norm, global_norm};
use super::data::Dataset;
use super::export::SaveTrained;
use super::log::{LogRecord, LossLog};
use super::options::TrainOptions;
use super::progress::Progress;
use super::state::{load_state, save_state, RunIdentity, TrainState};
use super::{Objective, TrainError, TrainableSpec};
use crate::rng::SplitMix64;
use crate::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The training checkpoint's file name in the output directory.
pub const STATE_FILE: &str = "trainer_state.safetensors";
/// The loss log's file name in the output directory.
pub const LOG_FILE: &str = "train_log.jsonl";

/// Where and how a run writes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The output directory (created if missing).
    pub out_dir: PathBuf,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    /// Start over in an `out_dir` that holds an earlier run's files, replacing them.
    pub force: bool,
    /// Draw the progress bar (on stderr, and only if it is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Optimizer steps taken in all, the resumed ones included.
    pub steps: u64,
    /// The step this invocation resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Mean loss of the last step's batch (none if this invocation took no step).
    pub train_loss: Option<f64>,
    /// The last validation loss measured (none without validation windows).
    pub val_loss: Option<f64>,
    /// Training throughput of this invocation (0 if it took no step).
    pub tokens_per_s: f64,
    /// The trained values, in trainables order.
    pub params: Vec<Vec<f32>>,
}

/// Trains `objective` on `data` with `options`, starting from `initial` (in trainables order;
/// ignored when resuming), writing to `run.out_dir`; saves the result through `saver` and
/// prints validation losses and the final `train: N tokens/s` to `out`.
pub fn train(
    objective: &mut dyn Objective,
    initial: Vec<Vec<f32>>,
    data: &Dataset,
    options: &TrainOptions,
    run: &RunOptions,
    saver: &mut dyn SaveTrained,
    out: &mut dyn Write,
) -> Result<TrainSummary, Error> {
    options.validate()?;
    let schedule = options.schedule()?;
    let trainables: Vec<TrainableSpec> = objective.trainables().to_vec();
    if trainables.is_empty() {
        return Err(TrainError::InvalidOption("the objective has no trainable tensors".into()).into());
    }
    if data.train_tokens().len() < options.seq_len {
        return Err(TrainError::Data {
            path: data.source().to_path_buf(),
            reason: format!(
                "{} training tokens cannot fill one sequence of {}",
                data.train_tokens().len(),
                options.seq_len
            ),
        }
        .into());
    }
    let dir = &run.out_dir;
    prepare_out_dir(dir, run, saver)?;
    let state_path = dir.join(STATE_FILE);
    let log_path = dir.join(LOG_FILE);
    let id = RunIdentity { trainables: &trainables, options, data: data.fingerprint() };
    let decay: Vec<bool> = trainables.iter().map(|s| s.shape.len() >= 2).collect();

    let (mut state, mut log) = if run.resume {
        let state = load_state(&state_path, id, decay)?;
        let log = LossLog::resume(&log_path, state.step)?;
        (state, log)
    } else {
        check_sizes("the initial value", &trainables, &initial)?;
        let lens: Vec<usize> = trainables.iter().map(TrainableSpec::len).collect();
        let optimizer = AdamW::new(options.adamw()?, &lens, decay);
        let state = TrainState { step: 0, params: initial, optimizer, rng: options.seed };
        (state, LossLog::create(&log_path)?)
    };
    let resumed_from = run.resume.then_some(state.step);
    let val_windows = data.validation_windows(options.seq_len, options.val_windows);
    let mut progress = Progress::new(options.steps, state.step, run.progress);
    let stdout = |source| Error::Io { path: "<stdout>".into(), source };

    let mut val_loss = None;
    if let Some(step) = resumed_from {
        progress.println(out, &format!("resuming from step {step} of {}", options.steps)).map_err(stdout)?;
    } else if !val_windows.is_empty() {
        let loss = validation_loss(objective, &state.params, &val_windows)?;
        log.append(&LogRecord {
            step: 0,
            train_loss: None,
            val_loss: Some(loss),
            lr: None,
            tokens_per_s: None,
            grad_norm: None,
        })?;
        progress.validation(loss);
        progress.println(out, &format!("step 0: val loss {loss:.4}")).map_err(stdout)?;
        val_loss = Some(loss);
    }

    let mut rng = SplitMix64(state.rng);
    let mut grads: Vec<Vec<f32>> = trainables.iter().map(|s| vec![0.0; s.len()]).collect();
    let step_tokens = (options.batch * options.seq_len) as f64;
    let (mut busy, mut steps_run, mut train_loss) = (Duration::ZERO, 0u64, None);
    while state.step < options.steps {
        let started = Instant::now();
        let lr = schedule.lr(state.step);
        let mut loss_sum = 0.0f64;
        grads.iter_mut().for_each(|g| g.fill(0.0));
        let windows = data.sample_batch(&mut rng, options.batch, options.seq_len);
        for (loss, g) in objective.batch_loss_and_grad(&state.params, &windows)? {
            check_sizes("the gradient", &trainables, &g)?;
            loss_sum += f64::from(loss);
            for (acc, g) in grads.iter_mut().zip(&g) {
                acc.iter_mut().zip(g).for_each(|(a, b)| *a += b);
            }
        }
        let batch = options.batch as f32;
        grads.iter_mut().flat_map(|g| g.iter_mut()).for_each(|g| *g /= batch);
        let loss = loss_sum / options.batch as f64;
        let step = state.step + 1;
        if !loss.is_finite() {
            return Err(TrainError::NotFinite { step, what: "training loss", value: loss }.into());
        }
        let grad_norm = match options.clip {
            Some(max) => clip_grad_norm(&mut grads, max as f32),
            None => global_norm(&grads),
        };
        if !grad_norm.is_finite() {
            return Err(TrainError::NotFinite { step, what: "gradient norm", value: grad_norm }.into());
        }
        state.optimizer.step(&mut state.params, &grads, lr)?;
        state.step = step;
        let elapsed = started.elapsed();
        busy += elapsed;
        steps_run += 1;
        train_loss = Some(loss);
        let tokens_per_s = step_tokens / elapsed.as_secs_f64().max(1e-9);

        let last = step == options.steps;
        let validate = !val_windows.is_empty() && (last || every(options.val_every, step));
        let step_val = if validate { Some(validation_loss(objective, &state.params, &val_windows)?) } else { None };
        log.append(&LogRecord {
            step,
            train_loss: Some(loss),
            val_loss: step_val,
            lr: Some(lr),
            tokens_per_s: Some(tokens_per_s),
            grad_norm: Some(grad_norm),
        })?;
        if let Some(v) = step_val {
            progress.validation(v);
            val_loss = Some(v);
            progress
                .println(out, &format!("step {step}: train loss {loss:.4}, val loss {v:.4}, lr {lr:.3e}"))
                .map_err(stdout)?;
        }
        progress.step(step, loss, lr, tokens_per_s);
        if last || every(options.save_every, step) {
            state.rng = rng.0;
            save_state(&state_path, id, &state)?;
            saver.save(dir, &trainables, &state.params)?;
        }
    }
    progress.finish();

    let tokens_per_s = if steps_run == 0 { 0.0 } else { steps_run as f64 * step_tokens / busy.as_secs_f64().max(1e-9) };
    if steps_run == 0 {
        writeln!(out, "nothing to do: the run already took its {} steps", options.steps).map_err(stdout)?;
    } else {
        writeln!(out, "train: {tokens_per_s:.0} tokens/s").map_err(stdout)?;
    }
    Ok(TrainSummary { steps: state.step, resumed_from, train_loss, val_loss, tokens_per_s, params: state.params })
}

fn every(period: u64, step: u64) -> bool {
    period > 0 && step.is_multiple_of(period)
}

/// Creates `dir` if needed; refuses a new run over an earlier run's files without `force`, and
/// removes them with it (so a later `resume` cannot pick up a checkpoint of another run).
fn prepare_out_dir(dir: &Path, run: &RunOptions, saver: &dyn SaveTrained) -> Result<(), TrainError> {
    if dir.exists() && !dir.is_dir() {
        return Err(TrainError::InvalidOption(format!("{} exists and is not a directory", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { op: "create", path: dir.to_path_buf(), source })?;
    if run.resume {
        return Ok(());
    }
    let mut files = vec![STATE_FILE.to_string(), LOG_FILE.to_string()];
    files.extend(saver.file_names());
    for file in files.iter().filter(|f| dir.join(f).exists()) {
        if !run.force {
            return Err(TrainError::OutDirInUse { dir: dir.to_path_buf(), file: file.clone() });
        }
        let path = dir.join(file);
        std::fs::remove_file(&path).map_err(|source| TrainError::Io { op: "remove", path, source })?;
    }
    Ok(())
}

fn check_sizes(what: &'static str, trainables: &[TrainableSpec], values: &[Vec<f32>]) -> Result<(), TrainError> {
    if values.len() != trainables.len() {
        return Err(TrainError::TensorCount { what, expected: trainables.len(), found: values.len() });
    }
    for (spec, v) in trainables.iter().zip(values) {
        if v.len() != spec.len() {
            return Err(TrainError::WrongSize {
                what,
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                expected: spec.len(),
                found: v.len(),
            });
        }
    }
    Ok(())
}

/// The mean loss over the validation windows.
fn validation_loss(objective: &mut dyn Objective, params: &[Vec<f32>], windows: &[&[i64]]) -> Result<f64, Error> {
    let mut sum = 0.0;
    for window in windows {
        sum += f64::from(objective.loss(params, window)?);
    }
    Ok(sum / windows.len() as f64)
}
