//! The scale search on synthetic weights and activations.

use super::*;
use crate::rng::SplitMix64;
use kiln_backend::quant::quantize;

/// `len` values uniform in `[-1, 1)`.
fn uniform(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| 2.0 * rng.next_f32() - 1.0).collect()
}

/// `m` activation rows of `k` channels; the channels in `outliers` are `gain` times larger.
fn activations(seed: u64, m: usize, k: usize, outliers: &[usize], gain: f32) -> Vec<f32> {
    let mut x = uniform(seed, m * k);
    for row in x.chunks_exact_mut(k) {
        for &c in outliers {
            row[c] *= gain;
        }
    }
    x
}

/// `‖X·Wᵀ − X·Ŵᵀ‖²` computed naively in f64, `Ŵ` the dequantized round-to-nearest weight.
fn naive_rtn_error(w: &[f32], n: usize, k: usize, x: &[f32], format: QuantScheme, group: usize) -> f64 {
    let q = quantize(w, n, k, format, group).unwrap().dequantize();
    let mut total = 0.0;
    for row in x.chunks_exact(k) {
        for j in 0..n {
            let d: f64 = (0..k).map(|p| f64::from(row[p]) * f64::from(w[j * k + p] - q[j * k + p])).sum();
            total += d * d;
        }
    }
    total
}

#[test]
fn awq_beats_round_to_nearest_when_a_few_channels_carry_large_activations() {
    let (n, k, m) = (96, 256, 128);
    let w = uniform(1, n * k);
    let x = activations(2, m, k, &[3, 77, 140, 201], 40.0);
    let stats = ChannelStats::from_rows(k, &x, 512).unwrap();
    for format in [QuantScheme::Q4_0, QuantScheme::Q4_1] {
        let choice = search_scales("w", &w, n, k, &stats, format, 32).unwrap();
        eprintln!("{format}: α = {}, AWQ/RTN = {:.3}", choice.alpha, choice.error_awq / choice.error_rtn);
        assert!(choice.alpha > 0.0, "{format}: α = {}", choice.alpha);
        assert!(
            choice.error_awq < 0.7 * choice.error_rtn,
            "{format}: AWQ {} vs RTN {}",
            choice.error_awq,
            choice.error_rtn
        );
        let rerun = calibration_error("w", &w, n, k, &x, &choice.scale, format, 32).unwrap();
        assert_eq!(rerun, choice.error_awq, "the reported error is the chosen scale's");
        assert!(choice.error_rtn < choice.reference, "the errors are small next to the product");
    }
}

#[test]
fn alpha_zero_is_round_to_nearest_exactly() {
    let (n, k, m) = (40, 100, 24);
    let w = uniform(3, n * k);
    let x = activations(4, m, k, &[5], 10.0);
    let stats = ChannelStats::from_rows(k, &x, 512).unwrap();
    let ones = awq_scales(stats.mean_abs(), 0.0).unwrap();
    assert!(ones.iter().all(|&s| s == 1.0));
    let scaled: Vec<f32> = w.chunks_exact(k).flat_map(|r| r.iter().zip(&ones).map(|(a, s)| a * s)).collect();
    assert_eq!(scaled, w, "scaling by ones leaves the weight as it was");
    assert_eq!(quantize(&scaled, n, k, QuantScheme::Q4_0, 32), quantize(&w, n, k, QuantScheme::Q4_0, 32));
    let choice = search_scales("w", &w, n, k, &stats, QuantScheme::Q4_0, 32).unwrap();
    let direct = calibration_error("w", &w, n, k, &x, &ones, QuantScheme::Q4_0, 32).unwrap();
    assert_eq!(choice.error_rtn, direct);
    let naive = naive_rtn_error(&w, n, k, &x, QuantScheme::Q4_0, 32);
    assert!((direct - naive).abs() <= 1e-4 * naive, "fast {direct} vs naive {naive}");
}

#[test]
fn the_choice_is_never_worse_than_round_to_nearest() {
    // No outliers: AWQ has little to gain, but the choice never loses to α = 0.
    for seed in 0..4 {
        let (n, k, m) = (33, 70, 17);
        let w = uniform(10 + seed, n * k);
        let x = activations(20 + seed, m, k, &[], 1.0);
        let stats = ChannelStats::from_rows(k, &x, 512).unwrap();
        let choice = search_scales("w", &w, n, k, &stats, QuantScheme::Q4_1, 16).unwrap();
        assert!(choice.error_awq <= choice.error_rtn);
        assert_eq!(choice.alpha == 0.0, choice.error_awq == choice.error_rtn);
        assert!(choice.scale.iter().all(|&s| s > 0.0 && s.is_finite()));
    }
}

#[test]
fn scales_follow_the_activations_and_are_normalized() {
    let scale = awq_scales(&[4.0, 1.0, 0.25, 0.0], 0.5).unwrap();
    // Raw: 2, 1, 0.5, 1e-4 (clamped); divided by √(2 · 1e-4).
    let norm = (2.0f64 * 1e-4).sqrt() as f32;
    assert_eq!(scale, vec![2.0 / norm, 1.0 / norm, 0.5 / norm, 1e-4 / norm]);
    assert_eq!(alpha_grid().count(), 21);
    assert_eq!(alpha_grid().last(), Some(1.0));
}

#[test]
fn bad_input_is_an_error() {
    let stats = ChannelStats::from_rows(4, &[1.0; 8], 4).unwrap();
    let w = vec![0.5; 12];
    let q = QuantScheme::Q4_0;
    assert!(matches!(search_scales("w", &w, 3, 4, &stats, q, 0), Err(AwqError::Quant { .. })));
    assert!(matches!(search_scales("w", &w, 4, 4, &stats, q, 2), Err(AwqError::Length { .. })));
    assert!(matches!(search_scales("w", &w, 2, 6, &stats, q, 2), Err(AwqError::ChannelMismatch { expected: 6, .. })));
    assert!(matches!(search_scales("w", &[], 3, 0, &stats, q, 2), Err(AwqError::NoChannels)));
    let mut nan = w.clone();
    nan[5] = f32::NAN;
    assert!(matches!(search_scales("w", &nan, 3, 4, &stats, q, 2), Err(AwqError::NonFinite { index: 5, .. })));
    assert!(matches!(awq_scales(&[], 0.5), Err(AwqError::NoChannels)));
    assert!(matches!(awq_scales(&[1.0, f32::NAN], 0.5), Err(AwqError::NonFinite { .. })));
    assert!(matches!(calibration_error("w", &w, 3, 4, &[1.0; 5], &[1.0; 4], q, 2), Err(AwqError::Length { .. })));
    let err = search_scales("head", &w, 2, 6, &stats, q, 2).unwrap_err().to_string();
    assert!(err.contains("head") && err.contains("K = 6"), "{err}");
}
