//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p,
//! driven by a small seeded generator so that a seed always gives the same text.

use crate::rng::SplitMix64;

/// How to pick the next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    /// 0 picks the most likely token (greedy); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `top_p`.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> SamplingOptions {
        SamplingOptions { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// Picks tokens according to [`SamplingOptions`].
#[derive(Clone, Debug)]
pub struct Sampler {
    options: SamplingOptions,
    rng: SplitMix64,
    /// Scratch: candidate (token, weight) pairs, reused between calls.
    candidates: Vec<(usize, f64)>,
}

impl Sampler {
    pub fn new(options: SamplingOptions) -> Sampler {
        Sampler { options, rng: SplitMix64(options.seed), candidates: Vec::new() }
    }

    /// The next token for one row of logits. Ties go to the lowest id; NaN logits are never
    /// picked unless every logit is NaN.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        let o = self.options;
        if o.temperature <= 0.0 || o.top_k == 1 {
            return argmax(logits);
        }
        self.candidates.clear();
        self.candidates.extend(logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i, f64::from(l))));
        if self.candidates.is_empty() {
            return 0;
        }
        self.candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if o.top_k > 0 {
            self.candidates.truncate(o.top_k);
        }
        let max = self.candidates[0].1;
        let t = f64::from(o.temperature);
        let mut total = 0.0;
        for c in &mut self.candidates {
            c.1 = ((c.1 - max) / t).exp();
            total += c.1;
        }
        if o.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = self
                .candidates
                .iter()
                .position(|c| {
                    mass += c.1 / total;
                    mass >= f64::from(o.top_p)
                })
                .map_or(self.candidates.len(), |i| i + 1);
            self.candidates.truncate(keep);
            total = self.candidates.iter().map(|c| c.1).sum();
        }
        let mut u = self.rng.next_f64() * total;
        for &(id, w) in &self.candidates {
            if u < w {
                return id;
            }
            u -= w;
        }
        self.candidates.last().map_or(0, |c| c.0)
    }
}

/// Index of the largest logit (the lowest index among ties; NaN is ignored).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest_and_ignores_nan() {
        let mut s = Sampler::new(SamplingOptions { temperature: 0.0, ..SamplingOptions::default() });
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, 0.7]), 2);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [5.0, 4.0, 0.0, -3.0];
        let mut s = Sampler::new(SamplingOptions { top_k: 2, seed: 7, ..SamplingOptions::default() });
        assert!((0..500).all(|_| s.sample(&logits) < 2));
        // p(0) = 0.72 ≥ 0.5, so top-p 0.5 keeps only token 0.
        let mut s = Sampler::new(SamplingOptions { top_p: 0.5, seed: 7, ..SamplingOptions::default() });
        assert!((0..500).all(|_| s.sample(&logits) == 0));
    }

    #[test]
    fn sampling_follows_the_distribution_and_is_reproducible() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let draw = |seed| {
            let mut s = Sampler::new(SamplingOptions { seed, ..SamplingOptions::default() });
            (0..20_000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.015, "frequency of token 1: {ones}");
    }
}
