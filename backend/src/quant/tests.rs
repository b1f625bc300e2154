//! Quantization round trips against the documented error bounds, the packed layout, both kernels
//! against dequantize-then-multiply in f64 at odd shapes, thread-count independence, and every
//! error.

use super::kernels::matvec_on;
use super::simd::Isa;
use super::*;
use crate::testing::random_values as random;
use half::f16;

/// The scale, offset and group minimum of element (r, c).
fn group_of(q: &QuantizedMatrix, r: usize, c: usize) -> (f32, f32) {
    let i = r * q.groups_per_row() + c / q.group();
    let d = q.scales()[i].to_f32();
    let o = q.mins().map_or(-8.0 * d, |m| m[i].to_f32());
    (d, o)
}

const FORMATS: [QuantScheme; 2] = [QuantScheme::Q4_0, QuantScheme::Q4_1];

#[test]
fn round_trip_within_documented_bounds() {
    for (rows, cols, group) in [(3, 100, 32), (2, 70, 64), (4, 5, 32), (3, 300, 17), (1, 1, 32), (5, 64, 64)] {
        let x: Vec<f32> = random(rows * cols, (rows * cols + group) as u64).iter().map(|v| v * 3.0).collect();
        for format in FORMATS {
            let q = quantize(&x, rows, cols, format, group).unwrap();
            let back = q.dequantize();
            assert_eq!(back.len(), x.len());
            let mut clamped = 0;
            for (i, (&v, &b)) in x.iter().zip(&back).enumerate() {
                let (r, c) = (i / cols, i % cols);
                let (d, o) = group_of(&q, r, c);
                let err = (v - b).abs();
                assert!(d.is_finite(), "{format} {rows}×{cols}/{group}: scale {d}");
                let bound = match format {
                    QuantScheme::Q4_0 => {
                        let t = v / d + 8.0;
                        if (-0.5..15.5).contains(&t) {
                            d.abs() * 0.5 * (1.0 + 1e-6)
                        } else {
                            clamped += 1;
                            d.abs() * (1.0 + 1.0 / 256.0)
                        }
                    }
                    QuantScheme::Q4_1 => {
                        let g = c / group * group;
                        let lo = x[r * cols + g..r * cols + (g + group).min(cols)]
                            .iter()
                            .copied()
                            .fold(f32::INFINITY, f32::min);
                        0.51 * d.abs() + (o - lo).abs() + v.abs() * f32::EPSILON
                    }
                };
                assert!(err <= bound, "{format} {rows}×{cols}/{group} at ({r}, {c}): {v} → {b}, error {err} > {bound}");
            }
            // Clamping only happens at the far side of a group's extreme, and rarely.
            assert!(clamped * 10 <= x.len(), "{format}: {clamped} clamped of {}", x.len());
        }
    }
}

#[test]
fn values_on_the_grid_come_back_exactly() {
    let (d, c) = (f16::from_f32(0.375).to_f32(), f16::from_f32(-1.25).to_f32());
    // Two rows of 40 values in groups of 16 (the last group of 8 is partial).
    let levels: Vec<i32> = (0..80).map(|i| [0, 15, 3, 8, 11, 7, 1, 14][i % 8] + (i as i32 % 3) - 1).collect();
    let q40: Vec<f32> = levels
        .iter()
        .enumerate()
        .map(|(i, &l)| if i % 8 == 0 { -8.0 * d } else { (l.clamp(0, 15) - 8) as f32 * d })
        .collect();
    let q41: Vec<f32> = levels
        .iter()
        .enumerate()
        .map(|(i, &l)| match i % 8 {
            0 => c,
            1 => 15.0 * d + c,
            _ => l.clamp(0, 15) as f32 * d + c,
        })
        .collect();
    for (format, x) in [(QuantScheme::Q4_0, q40), (QuantScheme::Q4_1, q41)] {
        let q = quantize(&x, 2, 40, format, 16).unwrap();
        assert_eq!(q.dequantize(), x, "{format}");
        assert!(q.scales().iter().all(|&s| s.to_f32().abs() == d), "{format}: {:?}", q.scales());
    }
}

#[test]
fn zero_and_constant_groups() {
    let zeros = quantize(&[0.0; 12], 2, 6, QuantScheme::Q4_0, 4).unwrap();
    assert_eq!(zeros.dequantize(), vec![0.0; 12]);
    let constant = quantize(&[0.75; 6], 1, 6, QuantScheme::Q4_1, 4).unwrap();
    assert_eq!(constant.dequantize(), vec![0.75; 6]);
    let constant = quantize(&[0.75; 6], 1, 6, QuantScheme::Q4_0, 4).unwrap();
    assert_eq!(constant.dequantize(), vec![0.75; 6]);
}

#[test]
fn packing_follows_the_documented_layout() {
    // One group of 5 with d = 1 (the extreme is −8): q = [0, 1, 9, 10, 15]; h = 3, so bytes are
    // [q0 | q3 << 4, q1 | q4 << 4, q2]; a second group of 2 values [4, −2] has d = 4 / −8, so
    // q = [0, 12]: one byte 0 | 12 << 4.
    let q = quantize(&[-8.0, -7.0, 1.0, 2.0, 7.0, 4.0, -2.0], 1, 7, QuantScheme::Q4_0, 5).unwrap();
    assert_eq!(q.packed(), &[0xA0, 0xF1, 0x09, 0xC0]);
    assert_eq!(q.row_bytes(), 4);
    assert_eq!(q.scales(), &[f16::from_f32(1.0), f16::from_f32(-0.5)]);
    assert_eq!(q.bytes(), 4 + 2 * 2);
}

#[test]
fn stored_form_matches_the_parts_and_reads_back() {
    for format in FORMATS {
        let q = quantize(&random(3 * 45, 5), 3, 45, format, 32).unwrap();
        let tensors = q.stored_tensors("blocks.0.ffn.key.weight");
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape[0] * t.shape[1] * t.dtype.size()).collect();
        let parts = [q.packed().len(), 2 * q.scales().len(), 2 * q.mins().map_or(0, <[f16]>::len)];
        assert_eq!(sizes.iter().sum::<usize>(), q.bytes());
        assert_eq!(sizes, parts.iter().copied().filter(|&p| p > 0).collect::<Vec<_>>());
        assert_eq!(tensors[0].name, "blocks.0.ffn.key.weight.qweight");
        let meta = q.stored_metadata("w");
        assert_eq!(meta[0], ("w.quant".to_string(), format.name().to_string()));
        assert_eq!(meta[2].1, "3,45");
        let back = QuantizedMatrix::from_parts(
            format,
            32,
            3,
            45,
            q.packed().to_vec(),
            q.scales().to_vec(),
            q.mins().map(<[f16]>::to_vec),
        )
        .unwrap();
        assert_eq!(back, q);
        assert_eq!(QuantScheme::from_name(format.name()), Some(format));
    }
}

/// `y = x · ŵᵀ` in f64 from the dequantized weight, and the scale of the terms (`Σ |x|·(|ŵ| +
/// 16·|d| + |o|)` per output) that bounds the rounding of any summation order.
fn reference(q: &QuantizedMatrix, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (n, k) = (q.rows(), q.cols());
    let w = q.dequantize();
    let mut y = Vec::new();
    let mut scale = Vec::new();
    for xi in x.chunks_exact(k) {
        for j in 0..n {
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for p in 0..k {
                let (d, o) = group_of(q, j, p);
                s += f64::from(xi[p]) * f64::from(w[j * k + p]);
                m += f64::from(xi[p].abs()) * f64::from(w[j * k + p].abs() + 16.0 * d.abs() + o.abs());
            }
            y.push(s);
            scale.push(m);
        }
    }
    (y, scale)
}

/// Every instruction set this CPU runs: the portable loop, and AVX2 (the byte-order loop) on an
/// AVX-512 machine too, where `matvec` itself takes the table kernel.
fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx512 {
        v.push(Isa::Avx2);
    }
    if Isa::detect() != Isa::Portable {
        v.push(Isa::detect());
    }
    v
}

fn check(what: &str, got: &[f32], want: &[f64], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(err <= 1e-5 * s + 1e-30, "{what}: y[{i}] = {g}, reference {w}, error {err} (term scale {s})");
    }
}

/// (rows N, cols K, group, activation rows M): odd `K`, partial last groups (of odd and even
/// lengths), `K` below the group, group sizes that suit the AVX-512 chunks (multiples of 8, up to
/// 16 groups per chunk) and ones that do not, rows not a multiple of the 4-row passes or of the
/// 64-row blocks.
const SHAPES: [(usize, usize, usize, usize); 16] = [
    (37, 100, 32, 7),
    (1, 100, 32, 1),
    (20, 70, 64, 7),
    (9, 5, 32, 1),
    (9, 5, 32, 7),
    (130, 768, 32, 1),
    (33, 300, 17, 7),
    (17, 1, 64, 7),
    (70, 129, 64, 3),
    (5, 96, 17, 1),
    (67, 203, 8, 3),
    (131, 777, 32, 1),
    (6, 1000, 256, 7),
    (11, 4100, 128, 3),
    (3, 24, 16, 1),
    (200, 31, 8, 7),
];

#[test]
fn matvec_agrees_with_dequantize_then_multiply() {
    for (n, k, group, _) in SHAPES {
        let w = random(n * k, (n * 31 + k) as u64);
        for format in FORMATS {
            let q = quantize(&w, n, k, format, group).unwrap();
            let x = random(k, k as u64 + 7);
            let (want, scale) = reference(&q, &x);
            for isa in isas() {
                let mut y = vec![f32::NAN; n];
                matvec_on(isa, &q, &x, &mut y).unwrap();
                check(&format!("matvec {format} {isa:?} N={n} K={k} G={group}"), &y, &want, &scale);
            }
        }
    }
}

#[test]
fn matmul_agrees_with_dequantize_then_multiply() {
    for (n, k, group, m) in SHAPES {
        let w = random(n * k, (n * 29 + k) as u64);
        for format in FORMATS {
            let q = quantize(&w, n, k, format, group).unwrap();
            let x = random(m * k, (m * k) as u64 + 3);
            let (want, scale) = reference(&q, &x);
            let mut y = vec![f32::NAN; m * n];
            matmul(&q, &x, &mut y).unwrap();
            check(&format!("matmul {format} M={m} N={n} K={k} G={group}"), &y, &want, &scale);
        }
    }
}

/// `out = g · ŵ` in f64 from the dequantized weight, and the scale of the terms (as in
/// [`reference`]).
fn reference_nn(q: &QuantizedMatrix, g: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (n, k) = (q.rows(), q.cols());
    let w = q.dequantize();
    let mut out = Vec::new();
    let mut scale = Vec::new();
    for gi in g.chunks_exact(n) {
        for p in 0..k {
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for j in 0..n {
                let (d, o) = group_of(q, j, p);
                s += f64::from(gi[j]) * f64::from(w[j * k + p]);
                m += f64::from(gi[j].abs()) * f64::from(w[j * k + p].abs() + 16.0 * d.abs() + o.abs());
            }
            out.push(s);
            scale.push(m);
        }
    }
    (out, scale)
}

#[test]
fn matmul_nn_agrees_with_dequantize_then_multiply() {
    for (n, k, group, _) in SHAPES {
        let w = random(n * k, (n * 23 + k) as u64);
        for format in FORMATS {
            let q = quantize(&w, n, k, format, group).unwrap();
            for m in [1, 3, 7] {
                let g = random(m * n, (m * n) as u64 + 5);
                let (want, scale) = reference_nn(&q, &g);
                let mut out = vec![f32::NAN; m * k];
                matmul_nn(&q, &g, &mut out).unwrap();
                check(&format!("matmul_nn {format} M={m} N={n} K={k} G={group}"), &out, &want, &scale);
            }
        }
    }
}

/// The documented bound of [`matvec_q8`]: half an activation step per group times the group's
/// weight magnitudes, plus rounding.
#[test]
fn matvec_q8_stays_within_its_error_bound() {
    for (n, k, group, _) in SHAPES {
        let w = random(n * k, (n * 37 + k) as u64);
        for format in FORMATS {
            let q = quantize(&w, n, k, format, group).unwrap();
            let wq = q.dequantize();
            // Activations of mixed magnitudes, so the 8-bit steps differ between groups.
            let x: Vec<f32> = random(k, k as u64 + 9).iter().enumerate().map(|(p, v)| v * (1 + p % 5) as f32).collect();
            let steps: Vec<f64> =
                x.chunks(group).map(|g| f64::from(g.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)).collect();
            let (want, scale) = reference(&q, &x);
            let mut y = vec![f32::NAN; n];
            matvec_q8(&q, &x, &mut y).unwrap();
            let mut exact = vec![f32::NAN; n];
            matvec(&q, &x, &mut exact).unwrap();
            for (j, ((&got, &want), &scale)) in y.iter().zip(&want).zip(&scale).enumerate() {
                let row = &wq[j * k..(j + 1) * k];
                let bound: f64 = row
                    .chunks(group)
                    .zip(&steps)
                    .map(|(wg, &s)| {
                        s / 2.0 * (1.0 + 2f64.powi(-14)) * wg.iter().map(|v| f64::from(v.abs())).sum::<f64>()
                    })
                    .sum();
                let err = (f64::from(got) - want).abs();
                assert!(
                    err <= bound + 1e-5 * scale,
                    "{format} N={n} K={k} G={group}: y[{j}] = {got}, reference {want}, error {err} > {bound}"
                );
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512vnni") && group % 8 == 0 && k > 1 {
                assert_ne!(y, exact, "{format} N={n} K={k} G={group}: the 8-bit kernel should have run");
            }
        }
    }
}

/// Activations on the 8-bit grid of every group (`x = s·q` with one `|q| = 127` per group and `s`
/// a power of two) are represented exactly, so [`matvec_q8`] is then exact up to rounding.
#[test]
fn matvec_q8_is_exact_on_the_activation_grid() {
    for (n, k, group, _) in SHAPES {
        let w = random(n * k, (n * 41 + k) as u64);
        let x: Vec<f32> = (0..k)
            .map(|p| {
                let s = 2f32.powi(-((p / group) as i32 % 5) - 3);
                let q = if p % group == 0 { -127 } else { (p * 37 % 255) as i32 - 127 };
                s * q as f32
            })
            .collect();
        for format in FORMATS {
            let q = quantize(&w, n, k, format, group).unwrap();
            let (want, scale) = reference(&q, &x);
            let mut y = vec![f32::NAN; n];
            matvec_q8(&q, &x, &mut y).unwrap();
            check(&format!("matvec_q8 {format} N={n} K={k} G={group}"), &y, &want, &scale);
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (n, k, m) = (301, 200, 7);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let run = |threads: usize, q: &QuantizedMatrix, x: &[f32], g: &[f32]| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut v = vec![0.0; n];
            matvec(q, &x[..k], &mut v).unwrap();
            let mut v8 = vec![0.0; n];
            matvec_q8(q, &x[..k], &mut v8).unwrap();
            let mut y = vec![0.0; m * n];
            matmul(q, x, &mut y).unwrap();
            let mut back = vec![0.0; m * k];
            matmul_nn(q, g, &mut back).unwrap();
            [bits(&v), bits(&v8), bits(&y), bits(&back)]
        })
    };
    for format in FORMATS {
        let q = quantize(&random(n * k, 11), n, k, format, 32).unwrap();
        let x = random(m * k, 12);
        let g = random(m * n, 13);
        let one = run(1, &q, &x, &g);
        assert_eq!(one, run(2, &q, &x, &g), "{format}");
        assert_eq!(one, run(3, &q, &x, &g), "{format}");
    }
}

/// A row's result does not depend on the rows computed with it (the 4-row passes, the 64-row
/// blocks): each row of a matrix, alone as a one-row matrix, gives the same bits.
#[test]
fn rows_do_not_depend_on_their_neighbours() {
    for (n, k, group) in [(71, 200, 32), (9, 77, 8), (6, 1000, 256)] {
        for format in FORMATS {
            let q = quantize(&random(n * k, 21), n, k, format, group).unwrap();
            let x = random(k, 22);
            let (mut all, mut all8) = (vec![0.0; n], vec![0.0; n]);
            matvec(&q, &x, &mut all).unwrap();
            matvec_q8(&q, &x, &mut all8).unwrap();
            let (rb, gr) = (q.row_bytes(), q.groups_per_row());
            for j in 0..n {
                let row = QuantizedMatrix::from_parts(
                    format,
                    group,
                    1,
                    k,
                    q.packed()[j * rb..(j + 1) * rb].to_vec(),
                    q.scales()[j * gr..(j + 1) * gr].to_vec(),
                    q.mins().map(|m| m[j * gr..(j + 1) * gr].to_vec()),
                )
                .unwrap();
                let (mut one, mut one8) = ([0.0], [0.0]);
                matvec(&row, &x, &mut one).unwrap();
                matvec_q8(&row, &x, &mut one8).unwrap();
                assert_eq!(one[0].to_bits(), all[j].to_bits(), "{format} {n}×{k}/{group} row {j}");
                assert_eq!(one8[0].to_bits(), all8[j].to_bits(), "q8 {format} {n}×{k}/{group} row {j}");
            }
        }
    }
}

/// NaNs and infinities in the activation give NaN or the same infinity where
/// dequantize-then-multiply in f32 does.
#[test]
fn non_finite_activations_propagate_as_in_the_reference() {
    let (n, k) = (70, 100);
    for format in FORMATS {
        // Zero weights, so that `0·∞` terms appear in the reference.
        let mut w = random(n * k, 31);
        for v in w.iter_mut().step_by(7) {
            *v = 0.0;
        }
        let q = quantize(&w, n, k, format, 32).unwrap();
        let wq = q.dequantize();
        for (col, value) in [(3, f32::INFINITY), (40, f32::NEG_INFINITY), (99, f32::NAN)] {
            let mut x = random(k, 32);
            x[col] = value;
            let want: Vec<f32> = wq.chunks_exact(k).map(|row| row.iter().zip(&x).map(|(&a, &b)| a * b).sum()).collect();
            let class = |v: f32| {
                if v.is_nan() {
                    "NaN".to_string()
                } else if v.is_infinite() {
                    v.to_string()
                } else {
                    "finite".into()
                }
            };
            let mut outs: Vec<(String, Vec<f32>)> = Vec::new();
            for isa in isas() {
                let mut y = vec![0.0; n];
                matvec_on(isa, &q, &x, &mut y).unwrap();
                outs.push((format!("matvec {isa:?}"), y));
            }
            let mut y = vec![0.0; n];
            matvec_q8(&q, &x, &mut y).unwrap();
            outs.push(("matvec_q8".into(), y));
            for (what, y) in outs {
                for (j, (&a, &b)) in y.iter().zip(&want).enumerate() {
                    assert_eq!(class(a), class(b), "{what} {format} x[{col}] = {value}: y[{j}] = {a}, reference {b}");
                }
            }
        }
    }
}

#[test]
fn empty_shapes() {
    let q = quantize(&[], 3, 0, QuantScheme::Q4_0, 32).unwrap();
    let mut y = vec![1.0; 3];
    matvec(&q, &[], &mut y).unwrap();
    assert_eq!(y, vec![0.0; 3]);
    matvec_q8(&q, &[], &mut y).unwrap();
    assert_eq!(y, vec![0.0; 3]);
    let mut out = vec![];
    matmul_nn(&q, &random(6, 1), &mut out).unwrap();
    let q = quantize(&[], 0, 8, QuantScheme::Q4_1, 32).unwrap();
    matmul(&q, &random(16, 1), &mut []).unwrap();
    let mut out = vec![1.0; 16];
    matmul_nn(&q, &[], &mut out).unwrap();
    assert_eq!(out, vec![0.0; 16]);
    assert_eq!(q.bytes(), 0);
}

#[test]
fn bad_input_is_an_error() {
    assert_eq!(quantize(&[1.0; 4], 2, 2, QuantScheme::Q4_0, 0), Err(QuantError::ZeroGroup));
    assert_eq!(
        quantize(&[1.0; 5], 2, 2, QuantScheme::Q4_0, 32),
        Err(QuantError::SizeMismatch { rows: 2, cols: 2, expected: 4, actual: 5 })
    );
    let mut x = vec![0.5; 6];
    x[4] = f32::NAN;
    let e = quantize(&x, 2, 3, QuantScheme::Q4_1, 2).unwrap_err();
    assert!(matches!(e, QuantError::NonFinite { row: 1, col: 1, .. }), "{e}");
    x[4] = f32::NEG_INFINITY;
    assert!(matches!(quantize(&x, 2, 3, QuantScheme::Q4_0, 2), Err(QuantError::NonFinite { row: 1, col: 1, .. })));
    let e = quantize(&[1e6, 0.0, 0.0, 0.0], 2, 2, QuantScheme::Q4_0, 2).unwrap_err();
    assert!(matches!(e, QuantError::F16Overflow { what: "scale", row: 0, group: 0, .. }), "{e}");
    let e = quantize(&[0.0, 0.0, -1e5, -1e5], 2, 2, QuantScheme::Q4_1, 2).unwrap_err();
    assert!(matches!(e, QuantError::F16Overflow { what: "minimum", row: 1, group: 0, .. }), "{e}");

    let q = quantize(&random(12, 2), 3, 4, QuantScheme::Q4_1, 3).unwrap();
    let mut y = vec![0.0; 3];
    assert!(matches!(matvec(&q, &[0.0; 5], &mut y), Err(QuantError::OperandLength { expected: 4, actual: 5, .. })));
    assert!(matches!(
        matvec(&q, &[0.0; 4], &mut y[..2]),
        Err(QuantError::OperandLength { expected: 3, actual: 2, .. })
    ));
    assert!(matches!(matmul(&q, &[0.0; 6], &mut [0.0; 3]), Err(QuantError::OperandLength { .. })));
    assert!(matches!(
        matmul(&q, &[0.0; 8], &mut [0.0; 3]),
        Err(QuantError::OperandLength { expected: 6, actual: 3, .. })
    ));
    let e = matmul(&q, &[0.0; 6], &mut [0.0; 3]).unwrap_err().to_string();
    assert!(e.contains("3 × 4"), "{e}");
    assert!(matches!(matvec_q8(&q, &[0.0; 5], &mut y), Err(QuantError::OperandLength { expected: 4, actual: 5, .. })));
    assert!(matches!(matvec_q8(&q, &[0.0; 4], &mut y[..2]), Err(QuantError::OperandLength { .. })));
    let mut out = [7.0; 8];
    assert!(matches!(
        matmul_nn(&q, &[0.0; 5], &mut out),
        Err(QuantError::OperandLength { expected: 6, actual: 5, .. })
    ));
    assert!(matches!(
        matmul_nn(&q, &[0.0; 6], &mut out[..7]),
        Err(QuantError::OperandLength { expected: 8, actual: 7, .. })
    ));
    assert_eq!(out, [7.0; 8], "nothing is written on an error");

    let parts = |packed: usize, scales: usize, mins: Option<usize>| {
        QuantizedMatrix::from_parts(
            QuantScheme::Q4_1,
            3,
            3,
            4,
            vec![0; packed],
            vec![f16::ONE; scales],
            mins.map(|m| vec![f16::ZERO; m]),
        )
    };
    assert!(parts(9, 6, Some(6)).is_ok());
    assert!(matches!(parts(8, 6, Some(6)), Err(QuantError::PartLength { what: "packed values", expected: 9, .. })));
    assert!(matches!(parts(9, 5, Some(6)), Err(QuantError::PartLength { what: "scales", .. })));
    assert_eq!(parts(9, 6, None), Err(QuantError::MissingMinimums { rows: 3, cols: 4 }));
    let e =
        QuantizedMatrix::from_parts(QuantScheme::Q4_0, 3, 3, 4, vec![0; 9], vec![f16::INFINITY; 6], None).unwrap_err();
    assert!(matches!(e, QuantError::PartNonFinite { what: "scales", index: 0, .. }), "{e}");
    let e =
        QuantizedMatrix::from_parts(QuantScheme::Q4_0, 3, 3, 4, vec![0; 9], vec![f16::ONE; 6], Some(vec![f16::ONE; 6]));
    assert!(matches!(e, Err(QuantError::PartLength { what: "minimums", expected: 0, actual: 6, .. })), "{e:?}");
    assert_eq!(
        QuantizedMatrix::from_parts(QuantScheme::Q4_0, 0, 1, 1, vec![], vec![], None),
        Err(QuantError::ZeroGroup)
    );
}
