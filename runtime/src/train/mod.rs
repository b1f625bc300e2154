//! Training: the loop that fits trainable tensors to a text, and everything around it.
//!
//! What is trained is an [`Objective`]: a differentiable loss of some named tensors (its
//! [`TrainableSpec`]s) on a token sequence, with the gradient of every tensor. The autodiff pass
//! supplies objectives for real models (LoRA adapters, or every weight for full training);
//! [`bigram::BigramObjective`] is a small one with an analytic gradient.
//!
//! [`train`] runs the loop: each step draws `batch` random windows of `seq_len` tokens
//! ([`Dataset`]), averages the objective's loss and gradients over them, clips the global
//! gradient norm ([`clip_grad_norm`]), and applies [`AdamW`] at the rate of the warmup-cosine
//! [`CosineSchedule`]; every `val_every` steps it measures the loss on fixed validation windows.
//! It shows a progress bar, appends every step to a loss log ([`LossLog`], `train_log.jsonl`),
//! and every `save_every` steps writes a checkpoint atomically ([`save_state`],
//! `trainer_state.safetensors`) and the trained result through the caller's [`SaveTrained`].
//! A run resumed from a checkpoint continues exactly: its parameters are bit-identical to those
//! of a run that was never interrupted.
//!
//! The same arithmetic as PyTorch: AdamW as `torch.optim.AdamW`, the schedule as transformers'
//! `get_cosine_with_min_lr_schedule_with_warmup`, clipping as `torch.nn.utils.clip_grad_norm_`.

pub mod adamw;
mod atomic;
pub mod bigram;
mod chars;
mod clip;
mod corpus;
mod data;
mod error;
mod export;
mod log;
mod options;
mod progress;
pub mod schedule;
mod state;
mod trainer;

#[cfg(test)]
mod tests;

pub use adamw::{AdamW, AdamWConfig};
pub use atomic::write_atomically;
pub use chars::CharVocab;
pub use clip::{clip_grad_norm, global_norm};
pub use corpus::{tokenize_file, TextTokens};
pub use data::{check_vocab, read_text, validation_start, Dataset};
pub use error::TrainError;
pub use export::{SaveTensors, SaveTrained};
pub use log::{LogRecord, LossLog};
pub use options::TrainOptions;
pub use schedule::CosineSchedule;
pub use state::{load_state, save_state, RunIdentity, TrainState};
pub use trainer::{train, RunOptions, TrainSummary, LOG_FILE, STATE_FILE};

/// One trainable tensor: its name (as in the files the result is saved to) and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainableSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TrainableSpec {
    pub fn new(name: impl Into<String>, shape: Vec<usize>) -> TrainableSpec {
        TrainableSpec { name: name.into(), shape }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The loss of one sequence and the gradient of every trainable.
pub type LossAndGrad = (f32, Vec<Vec<f32>>);

/// What the trainer optimizes: a differentiable loss of trainable tensors on token sequences.
///
/// Values and gradients are flat row-major `f32` vectors, one per trainable, in
/// [`Objective::trainables`] order, each of its spec's size.
pub trait Objective {
    /// The tensors trained, in the order of `params` and of the gradients.
    fn trainables(&self) -> &[TrainableSpec];

    /// The mean next-token cross-entropy of `tokens` (predicting `tokens[1..]` from the tokens
    /// before each, as transformers computes it with `labels = input_ids`), and its gradient for
    /// every trainable. `params` holds the current values.
    fn loss_and_grad(&mut self, params: &[Vec<f32>], tokens: &[i64]) -> Result<(f32, Vec<Vec<f32>>), crate::Error>;

    /// The loss alone (validation).
    fn loss(&mut self, params: &[Vec<f32>], tokens: &[i64]) -> Result<f32, crate::Error>;

    /// [`Objective::loss_and_grad`] of every sequence of a batch, in batch order: an objective
    /// that can evaluate sequences concurrently overrides this. The trainer sums the results in
    /// this order, so the sum does not depend on how the work was scheduled.
    fn batch_loss_and_grad(&mut self, params: &[Vec<f32>], batch: &[&[i64]]) -> Result<Vec<LossAndGrad>, crate::Error> {
        batch.iter().map(|tokens| self.loss_and_grad(params, tokens)).collect()
    }
}
