//! Perplexity: how well a model predicts a token sequence, as the mean next-token negative
//! log-likelihood (NLL) of its tokens `1..` given the tokens before each.
//!
//! [`perplexity`] runs the sequence through [`Model::forward`] in windows of
//! [`EvalOptions::window`] tokens. By default ([`Context::Carried`]) the state is carried from
//! window to window, so every token is predicted from all the tokens before it and the result is
//! that of one long forward pass whatever the window (the window only bounds memory). With
//! [`Context::PerWindow`] each window starts from a fresh state and only the predictions inside
//! it count, which is how the trainer measures its validation loss on windows of `seq_len` tokens.
//!
//! Each prediction's log-softmax is computed stably (the row's maximum subtracted before
//! exponentiating) in `f64`, and the NLLs are summed in `f64`.

use crate::{Error, Model};
use std::ops::Range;
use std::time::Instant;

/// How much context each prediction gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Context {
    /// The state is carried across windows: every token is predicted from all the tokens before
    /// it, exactly as in one forward pass over the whole sequence.
    #[default]
    Carried,
    /// Every window starts from a fresh state; a window's first token is context only (not
    /// predicted), like each validation window of the trainer.
    PerWindow,
}

/// How [`perplexity`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// Tokens per forward call.
    pub window: usize,
    pub context: Context,
}

impl EvalOptions {
    /// Checks the window: at least 1 token, or 2 per window (one predicted).
    pub fn validate(&self) -> Result<(), EvalError> {
        let min = match self.context {
            Context::Carried => 1,
            Context::PerWindow => 2,
        };
        if self.window < min {
            return Err(EvalError::WindowTooSmall { window: self.window, min });
        }
        Ok(())
    }
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions { window: 512, context: Context::Carried }
    }
}

/// Why a sequence cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Fewer than two tokens (or, per window, no window of two): nothing to predict.
    #[error("{found} tokens to evaluate: perplexity needs at least 2 (one to predict from, one predicted)")]
    TooFewTokens { found: usize },
    #[error("the evaluation window (--window) must hold at least {min} tokens, not {window}")]
    WindowTooSmall { window: usize, min: usize },
    #[error("the model has no token embedding, so it does not predict tokens")]
    NoVocabulary,
    /// The model's logits at a position are NaN or infinite.
    #[error("the log-likelihood of token {position} is not finite ({value}): the model's logits are")]
    NotFinite { position: usize, value: f64 },
}

/// What [`perplexity`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalReport {
    /// Tokens run through the model.
    pub tokens: usize,
    /// Tokens predicted (and scored): the mean is over these.
    pub predicted: usize,
    /// The sum of their NLLs, in nats.
    pub nll_sum: f64,
    /// Seconds spent in forward calls and scoring.
    pub seconds: f64,
}

impl EvalReport {
    /// Mean NLL per predicted token, in nats.
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.predicted as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }

    /// Mean NLL per predicted token, in bits.
    pub fn bits_per_token(&self) -> f64 {
        self.mean_nll() / std::f64::consts::LN_2
    }

    /// Tokens run through the model per second.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// One forward call of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The positions fed to the model.
    pub fed: Range<usize>,
    /// The positions predicted (and scored) from its logits.
    pub scored: Range<usize>,
}

/// The windows a sequence of `len` tokens is run in. With [`Context::Carried`] the last token
/// is never fed (nothing follows it) and a window's last logits predict the next window's first
/// token; with [`Context::PerWindow`] a window predicts its own tokens after the first.
pub fn windows(len: usize, options: &EvalOptions) -> Result<Vec<Window>, EvalError> {
    options.validate()?;
    if len < 2 {
        return Err(EvalError::TooFewTokens { found: len });
    }
    let w = options.window;
    Ok(match options.context {
        Context::Carried => (0..len - 1)
            .step_by(w)
            .map(|s| {
                let end = (s + w).min(len - 1);
                Window { fed: s..end, scored: s + 1..end + 1 }
            })
            .collect(),
        Context::PerWindow => (0..len)
            .step_by(w)
            .map(|s| Window { fed: s..(s + w).min(len), scored: s + 1..(s + w).min(len) })
            .filter(|window| window.fed.len() >= 2)
            .collect(),
    })
}

/// The mean next-token NLL of `tokens` under `model` (see the module docs). Every id must be in
/// the model's vocabulary; at least two tokens are needed.
pub fn perplexity(model: &Model, tokens: &[i64], options: &EvalOptions) -> Result<EvalReport, Error> {
    let windows = windows(tokens.len(), options)?;
    let vocab = model.vocab_size().ok_or(EvalError::NoVocabulary)?;
    if let Some((position, &id)) = tokens.iter().enumerate().find(|(_, &id)| id < 0 || id as u64 >= vocab as u64) {
        return Err(Error::TokenOutOfRange { id, position, vocab });
    }
    let started = Instant::now();
    let (mut nll_sum, mut predicted, mut fed) = (0.0f64, 0usize, 0usize);
    let mut state = model.new_state();
    for Window { fed: run, scored } in windows {
        if options.context == Context::PerWindow {
            state = model.new_state();
        }
        let logits = model.forward(&tokens[run.clone()], &mut state)?;
        fed += run.len();
        // Row r of the logits (position run.start + r) predicts position run.start + r + 1.
        for position in scored {
            let row = logits.row(position - 1 - run.start);
            let nll = token_nll(row, tokens[position] as usize);
            if !nll.is_finite() {
                return Err(EvalError::NotFinite { position, value: nll }.into());
            }
            nll_sum += nll;
            predicted += 1;
        }
    }
    Ok(EvalReport { tokens: fed, predicted, nll_sum, seconds: started.elapsed().as_secs_f64() })
}

/// `−log softmax(logits)[target]`, in `f64`: `logsumexp(logits) − logits[target]` with the
/// maximum subtracted before exponentiating.
pub fn token_nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln() - logits.get(target).map_or(f64::NAN, |&x| f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(len: usize, options: &EvalOptions) -> Vec<(Range<usize>, Range<usize>)> {
        windows(len, options).unwrap().into_iter().map(|w| (w.fed, w.scored)).collect()
    }

    #[test]
    fn carried_windows_feed_every_token_but_the_last_and_predict_every_token_but_the_first() {
        let options = EvalOptions { window: 3, context: Context::Carried };
        assert_eq!(ranges(8, &options), vec![(0..3, 1..4), (3..6, 4..7), (6..7, 7..8)]);
        assert_eq!(ranges(2, &EvalOptions { window: 512, ..options }), vec![(0..1, 1..2)]);
    }

    #[test]
    fn per_window_context_predicts_inside_each_window_and_drops_a_single_token_tail() {
        let options = EvalOptions { window: 3, context: Context::PerWindow };
        assert_eq!(ranges(8, &options), vec![(0..3, 1..3), (3..6, 4..6), (6..8, 7..8)]);
        assert_eq!(ranges(7, &options), vec![(0..3, 1..3), (3..6, 4..6)]);
    }

    #[test]
    fn too_little_is_refused() {
        let carried = EvalOptions { window: 4, context: Context::Carried };
        assert!(matches!(windows(1, &carried), Err(EvalError::TooFewTokens { found: 1 })));
        assert!(matches!(windows(9, &EvalOptions { window: 0, ..carried }), Err(EvalError::WindowTooSmall { .. })));
        let per_window = EvalOptions { window: 1, context: Context::PerWindow };
        assert!(matches!(windows(9, &per_window), Err(EvalError::WindowTooSmall { min: 2, .. })));
    }

    #[test]
    fn nll_is_stable_for_large_logits() {
        let uniform = token_nll(&[1000.0, 1000.0, 1000.0, 1000.0], 2);
        assert!((uniform - 4f64.ln()).abs() < 1e-12, "{uniform}");
        let sure = token_nll(&[-1e4, 50.0, -1e4], 1);
        assert!(sure.abs() < 1e-12, "{sure}");
        let by_hand = {
            let z: f64 = [0.5f64, -1.0, 2.0].iter().map(|x| x.exp()).sum();
            z.ln() - (-1.0)
        };
        assert!((token_nll(&[0.5, -1.0, 2.0], 1) - by_hand).abs() < 1e-12);
    }
}
