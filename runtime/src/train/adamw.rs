//! AdamW with PyTorch's exact semantics (`torch.optim.AdamW`, single-tensor path, `amsgrad=False`).
//!
//! For each trainable tensor at step `t` (1-based) with learning rate `lr`:
//!
//! ```text
//! p ← p · (1 − lr·wd)                     decoupled weight decay, before the Adam update
//! m ← lerp(m, g, 1 − β₁)                  = β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)    ε outside the square root
//! ```
//!
//! Scalars (`lr`, the betas, the bias corrections) are computed in `f64` as PyTorch's Python floats
//! are, and each is rounded to `f32` once where PyTorch hands it to an `f32` tensor op, so the
//! updates agree with PyTorch's to the last bit or two (its CPU kernels use fused multiply-adds in
//! vectorized loops). Weight decay applies only to the tensors marked for it (see
//! [`AdamW::new`]); the moments start at zero.

use super::TrainError;

/// AdamW's hyperparameters other than the learning rate (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// The optimizer and its state: the step count and both moments of every tensor.
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    steps: u64,
    /// First moments, one per tensor.
    m: Vec<Vec<f32>>,
    /// Second moments, one per tensor.
    v: Vec<Vec<f32>>,
    /// Whether each tensor is weight-decayed.
    decay: Vec<bool>,
}

impl AdamW {
    /// A fresh optimizer for tensors of `lens` elements; `decay[i]` says whether tensor `i` is
    /// weight-decayed (`torch.optim.AdamW` decays every tensor of a parameter group; the trainer
    /// puts matrices in a decayed group and vectors in an undecayed one).
    pub fn new(config: AdamWConfig, lens: &[usize], decay: Vec<bool>) -> AdamW {
        let zeros = || lens.iter().map(|&n| vec![0.0; n]).collect::<Vec<_>>();
        AdamW { config, steps: 0, m: zeros(), v: zeros(), decay }
    }

    /// An optimizer continuing from saved state (`steps` taken, moments `m` and `v`).
    pub fn from_state(
        config: AdamWConfig,
        steps: u64,
        m: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
        decay: Vec<bool>,
    ) -> Result<AdamW, TrainError> {
        if m.len() != decay.len() || v.len() != decay.len() {
            return Err(TrainError::InvalidOption(format!(
                "optimizer state has {} first and {} second moments for {} tensors",
                m.len(),
                v.len(),
                decay.len()
            )));
        }
        if let Some(i) = (0..m.len()).find(|&i| m[i].len() != v[i].len()) {
            return Err(TrainError::InvalidOption(format!(
                "optimizer moments of tensor {i} differ in size ({} and {})",
                m[i].len(),
                v[i].len()
            )));
        }
        Ok(AdamW { config, steps, m, v, decay })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// How many updates have been applied.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// First moments (`exp_avg`), one per tensor.
    pub fn first_moments(&self) -> &[Vec<f32>] {
        &self.m
    }

    /// Second moments (`exp_avg_sq`), one per tensor.
    pub fn second_moments(&self) -> &[Vec<f32>] {
        &self.v
    }

    /// Applies one update with learning rate `lr` to `params` given their gradients `grads`.
    /// Sizes must match the optimizer's tensors (names are not known here, so errors give indices).
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) -> Result<(), TrainError> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            let (what, found) = if params.len() != self.m.len() {
                ("AdamW parameters", params.len())
            } else {
                ("AdamW gradients", grads.len())
            };
            return Err(TrainError::TensorCount { what, expected: self.m.len(), found });
        }
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if p.len() != self.m[i].len() || g.len() != self.m[i].len() {
                return Err(TrainError::WrongSize {
                    what: if p.len() != self.m[i].len() { "the parameter" } else { "the gradient" },
                    name: format!("#{i}"),
                    shape: vec![self.m[i].len()],
                    expected: self.m[i].len(),
                    found: if p.len() != self.m[i].len() { p.len() } else { g.len() },
                });
            }
        }
        self.steps += 1;
        let c = self.config;
        let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
        let decay_factor = (1.0 - lr * c.weight_decay) as f32;
        let lerp_weight = (1.0 - c.beta1) as f32;
        let beta2 = c.beta2 as f32;
        let one_minus_beta2 = (1.0 - c.beta2) as f32;
        let step_size = (lr / (1.0 - c.beta1.powi(t))) as f32;
        let bias_correction2_sqrt = ((1.0 - c.beta2.powi(t)).sqrt()) as f32;
        let eps = c.eps as f32;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let decay = self.decay.get(i).copied().unwrap_or(false) && c.weight_decay != 0.0;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                if decay {
                    *p *= decay_factor;
                }
                *m = lerp_weight.mul_add(g - *m, *m);
                *v = *v * beta2 + one_minus_beta2 * g * g;
                let denom = v.sqrt() / bias_correction2_sqrt + eps;
                *p += -step_size * *m / denom;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three steps of `torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
    /// weight_decay=0.1)` from p = [0.5, -1.5, 2.0, 0.0] with gradients
    /// [0.1, -0.2, 0.3, 0.0], [0.05, 0.4, -0.3, 1e-3], [-0.2, 0.1, 0.0, -2.0]
    /// (torch 2.15.0 CPU, float32; `p.tolist()` after each step, the f32 values printed as f64).
    #[test]
    fn matches_torch_adamw() {
        let grads = [[0.1f32, -0.2, 0.3, 0.0], [0.05, 0.4, -0.3, 1e-3], [-0.2, 0.1, 0.0, -2.0]];
        let expected = TORCH_ADAMW_STEPS;
        let config = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let mut opt = AdamW::new(config, &[4], vec![true]);
        let mut p = vec![vec![0.5f32, -1.5, 2.0, 0.0]];
        for (g, want) in grads.iter().zip(expected) {
            opt.step(&mut p, &[g.to_vec()], 1e-2).unwrap();
            for (got, want) in p[0].iter().zip(want) {
                // PyTorch's CPU `sqrt` (MKL's vector math) is not correctly rounded, so allow 2 ulps of
                // the value plus a millionth of the learning rate (the size of one update), which
                // covers an ulp of difference in a moment carried through the steps.
                let tolerance = 2.0 * f64::from(f32::EPSILON) * want.abs() + 1e-6 * 1e-2;
                assert!((f64::from(*got) - want).abs() <= tolerance, "{got} vs torch {want}");
            }
        }
        assert_eq!(opt.steps(), 3);
    }

    const TORCH_ADAMW_STEPS: [[f64; 4]; 3] = [
        [0.4895000159740448, -1.4884999990463257, 1.9880000352859497, 0.0],
        [0.47968870401382446, -1.4906725883483887, 1.9865384101867676, -0.007441262248903513],
        [0.4812726080417633, -1.4933383464813232, 1.9849587678909302, -0.0010485611855983734],
    ];

    #[test]
    fn undecayed_tensors_keep_their_scale_with_zero_gradient() {
        let config = AdamWConfig { weight_decay: 0.5, ..AdamWConfig::default() };
        let mut opt = AdamW::new(config, &[2, 2], vec![false, true]);
        let mut p = vec![vec![1.0, -2.0], vec![1.0, -2.0]];
        opt.step(&mut p, &[vec![0.0; 2], vec![0.0; 2]], 0.1).unwrap();
        assert_eq!(p[0], vec![1.0, -2.0]);
        assert_eq!(p[1], vec![0.95, -1.9]);
    }

    #[test]
    fn first_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        // With zero moments, step 1 gives m̂ = g and v̂ = g², so the update is lr·g/(|g| + ε).
        let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }, &[3], vec![true]);
        let mut p = vec![vec![0.0f32; 3]];
        opt.step(&mut p, &[vec![3.0, -0.01, 0.0]], 0.1).unwrap();
        assert!((p[0][0] + 0.1).abs() < 1e-6 && (p[0][1] - 0.1).abs() < 1e-5 && p[0][2] == 0.0, "{:?}", p[0]);
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[3], vec![true]);
        let err = opt.step(&mut [vec![0.0; 2]], &[vec![0.0; 3]], 0.1).unwrap_err();
        assert!(err.to_string().contains("has 2 values"), "{err}");
        assert!(opt.step(&mut [vec![0.0; 3]], &[], 0.1).is_err());
    }
}
