//! Text generation: prefill the prompt in one call, then decode one token per call with the
//! carried state. Memory is constant in the number of generated tokens: the state has a fixed
//! size and each step's logits are dropped once a token is drawn.

use crate::sample::{Sampler, SamplingOptions};
use crate::{Error, Model};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new: usize,
    pub sampling: SamplingOptions,
    /// Stop after drawing this token (the checkpoint's `eos_token_id`), if set.
    pub stop_at: Option<i64>,
}

/// Runs `prompt` and generates up to `options.max_new` tokens, handing each to `on_token` as it
/// is drawn (return an error from it to stop). Returns the generated ids.
pub fn generate(
    model: &Model,
    prompt: &[i64],
    options: &GenerateOptions,
    mut on_token: impl FnMut(i64) -> Result<(), Error>,
) -> Result<Vec<i64>, Error> {
    let mut state = model.new_state();
    let mut sampler = Sampler::new(options.sampling);
    let mut logits = model.forward(prompt, &mut state)?;
    let mut generated = Vec::with_capacity(options.max_new.min(1 << 16));
    for step in 0..options.max_new {
        let next = sampler.sample(logits.last()) as i64;
        generated.push(next);
        on_token(next)?;
        if Some(next) == options.stop_at || step + 1 == options.max_new {
            break;
        }
        logits = model.forward(&[next], &mut state)?;
    }
    Ok(generated)
}
