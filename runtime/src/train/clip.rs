//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_(grads, max_norm)` does:
//! the norm is the 2-norm over every element of every gradient, and when it exceeds `max_norm`
//! every gradient is scaled by `max_norm / (norm + 1e-6)` (the coefficient is clamped to 1, so
//! gradients under the limit are left as they are). The squares are summed in `f64`; the
//! coefficient is computed in `f32` as PyTorch computes it on an `f32` norm tensor.

/// Clips `grads` in place to global norm `max_norm` and returns their norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f64 {
    let norm = global_norm(grads);
    let coefficient = (max_norm / (norm as f32 + 1e-6)).min(1.0);
    if coefficient < 1.0 {
        for g in grads.iter_mut().flat_map(|g| g.iter_mut()) {
            *g *= coefficient;
        }
    }
    norm
}

/// The 2-norm of all elements of all `grads` together.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads.iter().flat_map(|g| g.iter()).map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `torch.nn.utils.clip_grad_norm_` (torch 2.15.0, CPU f32) on gradients [3, −4] and
    /// [[1, 2], [0.5, −0.5]] with max_norm 1: it returned 5.522680282592773 and left
    /// [0.5432144403457642, −0.724285900592804] and [0.181071475148201, 0.362142950296402,
    /// 0.0905357375741005, −0.0905357375741005]; with max_norm 10 it changed nothing.
    #[test]
    fn matches_torch_clip_grad_norm() {
        let original = vec![vec![3.0f32, -4.0], vec![1.0, 2.0, 0.5, -0.5]];
        let mut grads = original.clone();
        let norm = clip_grad_norm(&mut grads, 1.0);
        assert!((norm - 5.522680282592773).abs() < 1e-6, "{norm}");
        let want = [
            [0.5432144403457642, -0.724285900592804].as_slice(),
            [0.181071475148201, 0.362142950296402, 0.0905357375741005, -0.0905357375741005].as_slice(),
        ];
        for (g, w) in grads.iter().zip(want) {
            for (a, b) in g.iter().zip(w) {
                assert!((f64::from(*a) - b).abs() <= f64::from(f32::EPSILON) * b.abs(), "{a} vs torch {b}");
            }
        }
        let mut grads = original.clone();
        assert!((clip_grad_norm(&mut grads, 10.0) - 5.522680282592773).abs() < 1e-6);
        assert_eq!(grads, original);
    }
}
