//! Kernel-level tests of the JIT against the interpreter: every op at vector and row level,
//! odd column counts (tails), one and many rows, broadcast operands, NaN/inf/huge/denormal
//! inputs, reductions feeding row values back (norm and softmax patterns), random programs, the
//! rows split across threads, and what the JIT rejects.
//!
//! Elementwise arithmetic must agree bit for bit (same IEEE operations in the same order); sums
//! to 1e-5 relative (the JIT reassociates them); transcendentals to a few ulp.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jit_support;

use jit_support::{activations, check, close, compile, kernel, layer_norm, same, softmax, ulps, Case, Rng};
use kiln_backend::jit::{ColStride, JitError, JitModule, JitOptions};
use kiln_backend::Tensor;
use kiln_ir::{BinaryOp, CompareOp, Dim, Instr, Kernel, KernelOutput, Level, ReduceOp, Shape, UnaryOp};

const COLS: [usize; 11] = [1, 3, 4, 5, 7, 8, 9, 12, 16, 33, 257];

/// A case whose operands are the kernel's read shapes, filled from `rng`.
fn case(kernel: Kernel, rng: &mut Rng, special: f32) -> Case {
    let dims: Vec<Vec<usize>> = kernel.reads.iter().map(|r| r.resolve(1).unwrap().to_vec()).collect();
    let data = dims.iter().map(|d| rng.values(d.iter().product(), special)).collect();
    Case { shapes: kernel.reads.clone(), kernel, dims, data, t: 1 }
}

fn exact(a: f32, b: f32) -> bool {
    same(a, b)
}

fn is_transcendental(op: UnaryOp) -> bool {
    matches!(op, UnaryOp::Exp | UnaryOp::Log | UnaryOp::Log1p | UnaryOp::Tanh)
}

#[test]
fn every_unary_op_at_vector_and_row_level() {
    let mut rng = Rng::new(1);
    for op in UnaryOp::ALL {
        for &cols in &COLS {
            for rows in [1, 3] {
                // $2 = op(x) per element, $3 = op(r) per row, also written broadcast.
                let k = kernel(
                    &[rows, cols],
                    &[&[rows, cols], &[rows, 1]],
                    vec![
                        Instr::Input(0, Level::Vector),
                        Instr::Input(1, Level::Row),
                        Instr::Unary(op, 0),
                        Instr::Unary(op, 1),
                    ],
                    &[(2, Level::Vector), (3, Level::Row), (3, Level::Vector)],
                );
                let (_m, jit) = compile(&k);
                let c = case(k, &mut rng, 0.3);
                let what = format!("{} [{rows}, {cols}]", op.name());
                if is_transcendental(op) {
                    check(&c, &jit, &what, |a, b| ulps(a, b) <= 4);
                } else {
                    check(&c, &jit, &what, exact);
                }
            }
        }
    }
}

#[test]
fn every_binary_op_with_broadcast_operands() {
    let mut rng = Rng::new(2);
    let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min];
    for op in ops {
        for &cols in &COLS {
            for rows in [1, 2, 5] {
                // x [rows, cols], w [cols] (contiguous, same for every row), c [rows, 1] (broadcast
                // along the row), s [] (scalar).
                let k = kernel(
                    &[rows, cols],
                    &[&[rows, cols], &[cols], &[rows, 1], &[]],
                    vec![
                        Instr::Input(0, Level::Vector),
                        Instr::Input(1, Level::Vector),
                        Instr::Input(2, Level::Vector),
                        Instr::Input(3, Level::Vector),
                        Instr::Binary(op, 0, 1),
                        Instr::Binary(op, 2, 0),
                        Instr::Binary(op, 2, 3),
                        Instr::Input(2, Level::Row),
                        Instr::Const(0.75),
                        Instr::Binary(op, 7, 8),
                        Instr::Binary(op, 9, 1),
                    ],
                    &[(4, Level::Vector), (5, Level::Vector), (6, Level::Vector), (9, Level::Row), (10, Level::Vector)],
                );
                let (_m, jit) = compile(&k);
                if cols > 1 {
                    assert_eq!(
                        jit.col_strides(),
                        &[ColStride::Contiguous, ColStride::Contiguous, ColStride::Broadcast, ColStride::Broadcast]
                    );
                }
                let c = case(k, &mut rng, 0.3);
                check(&c, &jit, &format!("{} [{rows}, {cols}]", op.name()), exact);
            }
        }
    }
}

#[test]
fn compares_and_selects_on_masks_and_flags() {
    let mut rng = Rng::new(3);
    for op in CompareOp::ALL {
        for &cols in &[1, 4, 7, 33] {
            let k = kernel(
                &[3, cols],
                &[&[3, cols], &[3, cols], &[3, 1]],
                vec![
                    Instr::Input(0, Level::Vector),
                    Instr::Input(1, Level::Vector),
                    Instr::Input(2, Level::Row),
                    Instr::Compare(op, 0, 1), // vector mask
                    Instr::Select(3, 0, 2),   // mask, vector / row
                    Instr::Const(0.5),
                    Instr::Compare(op, 2, 5), // row flag
                    Instr::Select(6, 1, 0),   // flag on vectors
                    Instr::Select(6, 2, 5),   // flag on rows
                    Instr::Compare(op, 0, 2), // vector vs row
                    Instr::Select(9, 5, 2),   // mask on row values
                ],
                &[(4, Level::Vector), (7, Level::Vector), (8, Level::Row), (10, Level::Vector)],
            );
            let (_m, jit) = compile(&k);
            let c = case(k, &mut rng, 0.4);
            check(&c, &jit, &format!("cmp.{} [3, {cols}]", op.name()), exact);
        }
    }
}

#[test]
fn reductions_with_row_values_fed_back() {
    let mut rng = Rng::new(4);
    for &cols in &COLS {
        for rows in [1, 4] {
            // max is exact in any order; sums are compared to rounding.
            let k = kernel(
                &[rows, cols],
                &[&[rows, cols]],
                vec![
                    Instr::Input(0, Level::Vector),
                    Instr::Reduce(ReduceOp::Max, 0),
                    Instr::Binary(BinaryOp::Sub, 0, 1),
                    Instr::Reduce(ReduceOp::Max, 2),
                    Instr::Unary(UnaryOp::Abs, 2),
                    Instr::Reduce(ReduceOp::Max, 4),
                ],
                &[(1, Level::Row), (3, Level::Row), (5, Level::Vector), (2, Level::Vector)],
            );
            let (_m, jit) = compile(&k);
            check(&case(k, &mut rng, 0.1), &jit, &format!("max [{rows}, {cols}]"), exact);

            let k = kernel(
                &[rows, cols],
                &[&[rows, cols]],
                vec![Instr::Input(0, Level::Vector), Instr::Reduce(ReduceOp::Sum, 0), Instr::Reduce(ReduceOp::Max, 0)],
                &[(1, Level::Row), (2, Level::Row)],
            );
            let (_m, jit) = compile(&k);
            // Moderate values (no cancellation beyond rounding)...
            let mut c = case(k.clone(), &mut rng, 0.0);
            c.data[0].iter_mut().for_each(|x| *x = x.abs() + 0.5);
            check(&c, &jit, &format!("sum [{rows}, {cols}]"), close(1e-5, 0.0));
            // ...and NaN/inf propagation.
            for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut c = case(k.clone(), &mut rng, 0.0);
                let i = rng.below(c.data[0].len());
                c.data[0][i] = special;
                check(&c, &jit, &format!("sum with {special} [{rows}, {cols}]"), close(1e-5, 1e-5));
            }
        }
    }
}

#[test]
fn norm_softmax_and_activation_patterns() {
    let mut rng = Rng::new(5);
    for &cols in &COLS {
        for rows in [&[1][..], &[7], &[2, 3]] {
            let shape: Vec<usize> = rows.iter().copied().chain([cols]).collect();
            for (name, k) in
                [("layer norm", layer_norm(&shape)), ("softmax", softmax(&shape)), ("act", activations(&shape))]
            {
                let (_m, jit) = compile(&k);
                check(&case(k, &mut rng, 0.0), &jit, &format!("{name} {shape:?}"), close(1e-5, 1e-5));
            }
        }
    }
}

#[test]
fn large_kernels_split_rows_across_threads() {
    let mut rng = Rng::new(6);
    for shape in [[300, 257], [4099, 9], [64, 768]] {
        for k in [layer_norm(&shape), softmax(&shape)] {
            let (_m, jit) = compile(&k);
            check(&case(k, &mut rng, 0.0), &jit, &format!("{shape:?}"), close(1e-5, 1e-5));
        }
    }
}

#[test]
fn sequence_length_dependent_shapes() {
    let mut rng = Rng::new(7);
    // x [T, 6] * w [6] + row-wise max, over [T, 6] for several T.
    let k = Kernel {
        shape: Shape::new([Dim::T, Dim::Fixed(6)]),
        reads: vec![Shape::new([Dim::T, Dim::Fixed(6)]), Shape::fixed(&[6]), Shape::new([Dim::T, Dim::Fixed(1)])],
        body: vec![
            Instr::Input(0, Level::Vector),
            Instr::Input(1, Level::Vector),
            Instr::Binary(BinaryOp::Mul, 0, 1),
            Instr::Reduce(ReduceOp::Max, 2),
            Instr::Input(2, Level::Row),
            Instr::Binary(BinaryOp::Add, 3, 4),
            Instr::Binary(BinaryOp::Sub, 2, 5),
        ],
        outputs: vec![KernelOutput { instr: 6, level: Level::Vector }, KernelOutput { instr: 5, level: Level::Row }],
    };
    let (_m, jit) = compile(&k);
    for t in [1, 2, 5, 33] {
        let dims = vec![vec![t, 6], vec![6], vec![t, 1]];
        let data = dims.iter().map(|d: &Vec<usize>| rng.values(d.iter().product(), 0.2)).collect();
        let c = Case { shapes: k.reads.clone(), kernel: k.clone(), dims, data, t };
        check(&c, &jit, &format!("T = {t}"), exact);
    }
}

#[test]
fn broadcast_along_middle_axes() {
    let mut rng = Rng::new(8);
    for cols in [1, 5, 8, 13] {
        let k = kernel(
            &[2, 3, cols],
            &[&[2, 3, cols], &[2, 1, cols], &[3, 1], &[1]],
            vec![
                Instr::Input(0, Level::Vector),
                Instr::Input(1, Level::Vector),
                Instr::Input(2, Level::Row),
                Instr::Input(3, Level::Vector),
                Instr::Binary(BinaryOp::Mul, 0, 1),
                Instr::Binary(BinaryOp::Add, 4, 2),
                Instr::Binary(BinaryOp::Max, 5, 3),
                Instr::Reduce(ReduceOp::Max, 6),
            ],
            &[(6, Level::Vector), (7, Level::Row)],
        );
        let (_m, jit) = compile(&k);
        check(&case(k, &mut rng, 0.2), &jit, &format!("[2, 3, {cols}]"), exact);
    }
}

/// A random program over the ops that are exact in the JIT (everything but transcendentals
/// and sums), at mixed levels with broadcast operands.
fn random_exact_kernel(rng: &mut Rng) -> Kernel {
    let rows: Vec<usize> = match rng.below(3) {
        0 => vec![1],
        1 => vec![rng.pick(&[2, 3, 17])],
        _ => vec![2, rng.pick(&[1, 3])],
    };
    let cols = rng.pick(&COLS);
    let full: Vec<usize> = rows.iter().copied().chain([cols]).collect();
    let column: Vec<usize> = rows.iter().copied().chain([1]).collect();
    let mut reads: Vec<Vec<usize>> = Vec::new();
    let mut body = Vec::new();
    let mut f32s: Vec<(u16, Level)> = Vec::new();
    let mut bools: Vec<(u16, Level)> = Vec::new();
    for k in 0..1 + rng.below(4) {
        let (read, row_readable) = match if k == 0 { 0 } else { rng.below(4) } {
            0 => (full.clone(), false),
            1 => (vec![cols], cols == 1),
            2 => (column.clone(), true),
            _ => (vec![], true),
        };
        reads.push(read);
        f32s.push((body.len() as u16, Level::Vector));
        body.push(Instr::Input(k as u16, Level::Vector));
        if row_readable && rng.below(2) == 0 {
            f32s.push((body.len() as u16, Level::Row));
            body.push(Instr::Input(k as u16, Level::Row));
        }
    }
    f32s.push((body.len() as u16, Level::Row));
    body.push(Instr::Const(rng.value(0.3)));
    let unary = [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Sqrt, UnaryOp::Recip];
    let binary = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min];
    for _ in 0..3 + rng.below(14) {
        let i = body.len() as u16;
        let (a, la) = rng.pick(&f32s);
        let (b, lb) = rng.pick(&f32s);
        match rng.below(10) {
            0 | 1 => {
                body.push(Instr::Unary(rng.pick(&unary), a));
                f32s.push((i, la));
            }
            2..=5 => {
                body.push(Instr::Binary(rng.pick(&binary), a, b));
                f32s.push((i, la.max(lb)));
            }
            6 => {
                body.push(Instr::Compare(rng.pick(&CompareOp::ALL), a, b));
                bools.push((i, la.max(lb)));
            }
            7 | 8 if !bools.is_empty() => {
                let (c, lc) = rng.pick(&bools);
                body.push(Instr::Select(c, a, b));
                f32s.push((i, lc.max(la).max(lb)));
            }
            _ => {
                let vectors: Vec<(u16, Level)> = f32s.iter().copied().filter(|v| v.1 == Level::Vector).collect();
                body.push(Instr::Reduce(ReduceOp::Max, rng.pick(&vectors).0));
                f32s.push((i, Level::Row));
            }
        }
    }
    let mut outputs = vec![*f32s.last().unwrap()];
    for _ in 0..rng.below(3) {
        let (i, l) = rng.pick(&f32s);
        outputs.push((i, if l == Level::Row && rng.below(2) == 0 { Level::Row } else { Level::Vector }));
    }
    let reads: Vec<&[usize]> = reads.iter().map(|r| r.as_slice()).collect();
    kernel(&full, &reads, body, &outputs)
}

#[test]
fn random_exact_programs_agree_bit_for_bit() {
    let mut rng = Rng::new(9);
    // One module for many kernels, as for a whole graph.
    let kernels: Vec<Kernel> = (0..300).map(|_| random_exact_kernel(&mut rng)).collect();
    let refs: Vec<&Kernel> = kernels.iter().collect();
    let module = JitModule::compile(&refs, &JitOptions { verify: true, ..JitOptions::default() }).unwrap();
    for (i, k) in kernels.iter().enumerate() {
        let jit = module.kernel(i).unwrap_or_else(|e| panic!("{e}\n{k:#?}"));
        for special in [0.0, 0.5] {
            check(&case(k.clone(), &mut rng, special), jit, &format!("random kernel {i}"), exact);
        }
    }
}

#[test]
fn unsupported_kernels_are_rejected_per_kernel() {
    let pow = kernel(
        &[2, 4],
        &[&[2, 4]],
        vec![Instr::Input(0, Level::Vector), Instr::Binary(BinaryOp::Pow, 0, 0)],
        &[(1, Level::Vector)],
    );
    let boolean = kernel(
        &[2, 4],
        &[&[2, 4]],
        vec![Instr::Input(0, Level::Vector), Instr::Compare(CompareOp::Lt, 0, 0)],
        &[(1, Level::Vector)],
    );
    let fine = layer_norm(&[2, 4]);
    let module = JitModule::compile(&[&pow, &boolean, &fine], &JitOptions::default()).unwrap();
    assert!(matches!(module.kernel(0), Err(JitError::Unsupported { .. })));
    assert!(matches!(module.kernel(1), Err(JitError::Unsupported { .. })));
    assert!(module.kernel(2).is_ok());
    assert!(module.kernel(3).is_err());
    assert_eq!(module.stats().per_kernel.len(), 3);
}

#[test]
fn bad_operands_are_errors_not_crashes() {
    let k = layer_norm(&[2, 4]);
    let (_m, jit) = compile(&k);
    let x = Tensor::f32(&[2, 4], vec![1.0; 8]).unwrap();
    let w = Tensor::f32(&[4], vec![1.0; 4]).unwrap();
    let short = Tensor::f32(&[3], vec![1.0; 3]).unwrap();
    let ints = Tensor::i64(&[4], vec![1; 4]).unwrap();
    assert!(jit.run(&[&x, &w, &w], 1).is_ok());
    for ops in [vec![&x, &w], vec![&x, &w, &short], vec![&x, &w, &ints], vec![&w, &w, &w]] {
        assert!(matches!(jit.run(&ops, 1), Err(JitError::Operand { .. })), "{ops:?}");
    }
}

#[test]
fn handles_keep_code_alive_after_the_module_is_dropped() {
    let k = softmax(&[3, 5]);
    let jit = {
        let module = JitModule::compile(&[&k], &JitOptions::default()).unwrap();
        module.kernel(0).unwrap().clone()
    };
    let x = Tensor::f32(&[3, 5], (0..15).map(|i| i as f32).collect()).unwrap();
    let y = jit.run(&[&x], 1).unwrap();
    let row: f32 = y[0].as_f32().unwrap()[..5].iter().sum();
    assert!((row - 1.0).abs() < 1e-6);
    // Many modules created and freed.
    for _ in 0..50 {
        let m = JitModule::compile(&[&k], &JitOptions::default()).unwrap();
        assert!(m.kernel(0).is_ok());
    }
}

#[test]
fn empty_rows_and_columns() {
    let body = vec![Instr::Input(0, Level::Vector), Instr::Reduce(ReduceOp::Sum, 0), Instr::Reduce(ReduceOp::Max, 0)];
    // No rows: empty outputs of every level.
    let k = kernel(&[0, 5], &[&[0, 5]], body.clone(), &[(0, Level::Vector), (1, Level::Row), (2, Level::Row)]);
    let (_m, jit) = compile(&k);
    check(&case(k, &mut Rng::new(10), 0.0), &jit, "[0, 5]", exact);
    // No columns: reductions give their identities (+0.0 and -inf). The interpreter cannot
    // write an empty vector output (it panics on a zero chunk size), so that one is checked
    // against the expected shape only.
    let k = kernel(&[3, 0], &[&[3, 0]], body.clone(), &[(1, Level::Row), (2, Level::Row)]);
    let (_m, jit) = compile(&k);
    let bits = |a: f32, b: f32| a.to_bits() == b.to_bits();
    check(&case(k, &mut Rng::new(10), 0.0), &jit, "[3, 0]", bits);
    let k = kernel(&[3, 0], &[&[3, 0]], body, &[(0, Level::Vector), (1, Level::Row)]);
    let (_m, jit) = compile(&k);
    let x = Tensor::f32(&[3, 0], vec![]).unwrap();
    let y = jit.run(&[&x], 1).unwrap();
    assert_eq!((y[0].shape(), y[1].shape()), (&[3, 0][..], &[3, 1][..]));
    assert_eq!(y[1].as_f32().unwrap(), &[0.0; 3]);
}

#[test]
fn handles_are_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<kiln_backend::jit::CompiledKernel>();
    send_sync::<JitModule>();
    let k = layer_norm(&[9, 33]);
    let (_m, jit) = compile(&k);
    let c = case(k, &mut Rng::new(12), 0.0);
    let want = c.jit(&jit);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert_eq!(c.jit(&jit), want);
                }
            });
        }
    });
}
