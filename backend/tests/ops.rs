//! Every op of the interpreter against hand-computed results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kiln_backend::Tensor;
use kiln_ir::{BinaryOp, CompareOp, DType, Dim, Graph, Op, ReduceOp, Shape, UnaryOp};
use smallvec::smallvec;

#[test]
fn unary_ops_follow_the_ir_semantics() {
    let xs = vec![1.0, -2.0, 0.5, 4.0];
    for u in UnaryOp::ALL {
        let mut g = Graph::new("unary");
        let x = input(&mut g, "x", &f(&[4]));
        let y = op(&mut g, Op::Unary(u), &[x]);
        output(&mut g, "y", y);
        let (shape, data) = run1(g, &[t32(&[4], xs.clone())]);
        assert_eq!(shape, vec![4]);
        let expected: Vec<f32> = xs.iter().map(|&v| u.apply(v)).collect();
        for (a, b) in data.iter().zip(&expected) {
            assert!(a == b || (a.is_nan() && b.is_nan()), "{u:?}: {a} vs {b}");
        }
    }
}

#[test]
fn binary_ops_by_hand() {
    let a = vec![1.0, -2.0, 3.0, 2.0];
    let b = vec![4.0, 5.0, -6.0, 3.0];
    let cases: [(BinaryOp, [f32; 4]); 7] = [
        (BinaryOp::Add, [5.0, 3.0, -3.0, 5.0]),
        (BinaryOp::Sub, [-3.0, -7.0, 9.0, -1.0]),
        (BinaryOp::Mul, [4.0, -10.0, -18.0, 6.0]),
        (BinaryOp::Div, [0.25, -0.4, -0.5, 2.0 / 3.0]),
        (BinaryOp::Max, [4.0, 5.0, 3.0, 3.0]),
        (BinaryOp::Min, [1.0, -2.0, -6.0, 2.0]),
        (BinaryOp::Pow, [1.0, -32.0, 1.0 / 729.0, 8.0]),
    ];
    for (bop, expected) in cases {
        let mut g = Graph::new("binary");
        let x = input(&mut g, "a", &f(&[2, 2]));
        let y = input(&mut g, "b", &f(&[2, 2]));
        let z = op(&mut g, Op::Binary(bop), &[x, y]);
        output(&mut g, "z", z);
        let (shape, data) = run1(g, &[t32(&[2, 2], a.clone()), t32(&[2, 2], b.clone())]);
        assert_eq!(shape, vec![2, 2]);
        assert_close(&data, &expected);
    }
}

#[test]
fn max_and_min_propagate_nan() {
    let mut g = Graph::new("nan");
    let x = input(&mut g, "a", &f(&[2]));
    let y = input(&mut g, "b", &f(&[2]));
    let mx = op(&mut g, Op::Binary(BinaryOp::Max), &[x, y]);
    let mn = op(&mut g, Op::Binary(BinaryOp::Min), &[x, y]);
    output(&mut g, "max", mx);
    output(&mut g, "min", mn);
    let out = run(g, &[t32(&[2], vec![f32::NAN, 1.0]), t32(&[2], vec![0.0, f32::NAN])]);
    for t in out {
        assert!(t.as_f32().unwrap().iter().all(|v| v.is_nan()));
    }
}

#[test]
fn compare_and_select() {
    let mut g = Graph::new("select");
    let a = input(&mut g, "a", &f(&[4]));
    let b = input(&mut g, "b", &f(&[4]));
    let lt = op(&mut g, Op::Compare(CompareOp::Lt), &[a, b]);
    let gt = op(&mut g, Op::Compare(CompareOp::Gt), &[a, b]);
    let sel = op(&mut g, Op::Select, &[gt, a, b]);
    output(&mut g, "lt", lt);
    output(&mut g, "sel", sel);
    let out = run(g, &[t32(&[4], vec![1.0, 2.0, 3.0, 4.0]), t32(&[4], vec![2.0, 2.0, 2.0, 2.0])]);
    assert_eq!(out[0].dtype(), DType::Bool);
    assert_eq!(out[0].as_bool(), Some(&[true, false, false, false][..]));
    assert_eq!(out[1].as_f32(), Some(&[2.0, 2.0, 3.0, 4.0][..]));

    for (c, expected) in [
        (CompareOp::Le, [true, true, false, false]),
        (CompareOp::Ge, [false, true, true, true]),
        (CompareOp::Eq, [false, true, false, false]),
        (CompareOp::Ne, [true, false, true, true]),
    ] {
        let mut g = Graph::new("cmp");
        let a = input(&mut g, "a", &f(&[4]));
        let b = input(&mut g, "b", &f(&[4]));
        let r = op(&mut g, Op::Compare(c), &[a, b]);
        output(&mut g, "r", r);
        let out = run(g, &[t32(&[4], vec![1.0, 2.0, 3.0, 4.0]), t32(&[4], vec![2.0; 4])]);
        assert_eq!(out[0].as_bool(), Some(&expected[..]), "{c:?}");
    }
}

fn broadcast_case(from: &[usize], data: Vec<f32>, to: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let mut g = Graph::new("broadcast");
    let x = input(&mut g, "x", &f(from));
    let y = op(&mut g, Op::Broadcast(Shape::fixed(to)), &[x]);
    output(&mut g, "y", y);
    run1(g, &[t32(from, data)])
}

#[test]
fn broadcasting() {
    let (s, d) = broadcast_case(&[3], vec![1.0, 2.0, 3.0], &[2, 3]);
    assert_eq!((s, d), (vec![2, 3], vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]));
    let (s, d) = broadcast_case(&[2, 1], vec![1.0, 2.0], &[2, 3]);
    assert_eq!((s, d), (vec![2, 3], vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]));
    // A middle axis: out[i, j, k] = x[j].
    let (s, d) = broadcast_case(&[3, 1], vec![1.0, 2.0, 3.0], &[2, 3, 2]);
    assert_eq!(s, vec![2, 3, 2]);
    assert_eq!(d, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    // Same shape: a copy.
    let (_, d) = broadcast_case(&[2], vec![7.0, 8.0], &[2]);
    assert_eq!(d, vec![7.0, 8.0]);

    // A scalar constant, and a row broadcast to a T-dependent shape.
    let mut g = Graph::new("broadcast_t");
    let x = input(&mut g, "x", &[Dim::T, Dim::Fixed(2)]);
    let row = input(&mut g, "row", &f(&[1, 2]));
    let c = g.constant(5.0, None);
    let shape_t = Shape::new([Dim::T, Dim::Fixed(2)]);
    let rows = op(&mut g, Op::Broadcast(shape_t.clone()), &[row]);
    let fives = op(&mut g, Op::Broadcast(shape_t), &[c]);
    let s = op(&mut g, Op::Binary(BinaryOp::Add), &[x, rows]);
    let s = op(&mut g, Op::Binary(BinaryOp::Add), &[s, fives]);
    output(&mut g, "s", s);
    let (shape, data) = run1(g, &[t32(&[3, 2], iota(6)), t32(&[1, 2], vec![10.0, 20.0])]);
    assert_eq!(shape, vec![3, 2]);
    assert_eq!(data, vec![15.0, 26.0, 17.0, 28.0, 19.0, 30.0]);
}

fn reduce_case(r: ReduceOp, axis: usize) -> (Vec<usize>, Vec<f32>) {
    let mut g = Graph::new("reduce");
    let x = input(&mut g, "x", &f(&[2, 3, 4]));
    let y = op(&mut g, Op::Reduce { op: r, axis }, &[x]);
    output(&mut g, "y", y);
    // x[i, j, k] = 12i + 4j + k
    run1(g, &[t32(&[2, 3, 4], iota(24))])
}

#[test]
fn reduce_on_each_axis() {
    let sum0: Vec<f32> = (0..3).flat_map(|j| (0..4).map(move |k| (12 + 8 * j + 2 * k) as f32)).collect();
    assert_eq!(reduce_case(ReduceOp::Sum, 0), (vec![1, 3, 4], sum0));
    assert_eq!(reduce_case(ReduceOp::Sum, 1), (vec![2, 1, 4], vec![12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]));
    assert_eq!(reduce_case(ReduceOp::Sum, 2), (vec![2, 3, 1], vec![6.0, 22.0, 38.0, 54.0, 70.0, 86.0]));
    assert_eq!(reduce_case(ReduceOp::Max, 0), (vec![1, 3, 4], (12..24).map(|v| v as f32).collect()));
    assert_eq!(reduce_case(ReduceOp::Max, 1), (vec![2, 1, 4], vec![8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]));
    assert_eq!(reduce_case(ReduceOp::Max, 2), (vec![2, 3, 1], vec![3.0, 7.0, 11.0, 15.0, 19.0, 23.0]));
}

#[test]
fn reduce_max_of_negatives_nan_and_empty_axes() {
    let mut g = Graph::new("reduce");
    let x = input(&mut g, "x", &f(&[2, 3]));
    let y = op(&mut g, Op::Reduce { op: ReduceOp::Max, axis: 1 }, &[x]);
    output(&mut g, "y", y);
    let (_, d) = run1(g, &[t32(&[2, 3], vec![-3.0, -1.0, -2.0, 1.0, f32::NAN, 0.0])]);
    assert_eq!(d[0], -1.0);
    assert!(d[1].is_nan());

    // An axis of length T - 1 = 0: the identities.
    let mut g = Graph::new("reduce_empty");
    let x = input(&mut g, "x", &[Dim::T, Dim::Fixed(2)]);
    let tail = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(1), end: Dim::T }, &[x]);
    let s = op(&mut g, Op::Reduce { op: ReduceOp::Sum, axis: 0 }, &[tail]);
    let m = op(&mut g, Op::Reduce { op: ReduceOp::Max, axis: 0 }, &[tail]);
    output(&mut g, "s", s);
    output(&mut g, "m", m);
    let out = run(g, &[t32(&[1, 2], vec![1.0, 2.0])]);
    assert_eq!(out[0].shape(), &[1, 2]);
    assert_eq!(out[0].as_f32(), Some(&[0.0, 0.0][..]));
    assert_eq!(out[1].as_f32(), Some(&[f32::NEG_INFINITY; 2][..]));
}

fn matmul_graph(lhs: &[usize], rhs: &[usize], transpose_rhs: bool) -> Graph {
    let mut g = Graph::new("matmul");
    let a = input(&mut g, "a", &f(lhs));
    let b = input(&mut g, "b", &f(rhs));
    let c = op(&mut g, Op::MatMul { transpose_rhs }, &[a, b]);
    output(&mut g, "c", c);
    g
}

#[test]
fn matmul_both_layouts_and_batched_lhs() {
    let a = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
    let b = vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]; // [3, 2]
    let bt = vec![7.0, 9.0, 11.0, 8.0, 10.0, 12.0]; // [2, 3] = bᵀ
    let expected = vec![58.0, 64.0, 139.0, 154.0];

    let g = matmul_graph(&[2, 3], &[3, 2], false);
    let r = run1(g, &[t32(&[2, 3], a.clone()), t32(&[3, 2], b.clone())]);
    assert_eq!(r, (vec![2, 2], expected.clone()));

    let g = matmul_graph(&[2, 3], &[2, 3], true);
    let r = run1(g, &[t32(&[2, 3], a.clone()), t32(&[2, 3], bt.clone())]);
    assert_eq!(r, (vec![2, 2], expected.clone()));

    // Rank-3 lhs: the second batch picks rows 0 and 1 of b.
    let mut a3 = a.clone();
    a3.extend([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    let mut expected3 = expected.clone();
    expected3.extend([7.0, 8.0, 9.0, 10.0]);
    for (transpose, rhs, rhs_shape) in [(false, &b, [3, 2]), (true, &bt, [2, 3])] {
        let g = matmul_graph(&[2, 2, 3], &rhs_shape, transpose);
        let r = run1(g, &[t32(&[2, 2, 3], a3.clone()), t32(&rhs_shape, rhs.clone())]);
        assert_eq!(r, (vec![2, 2, 2], expected3.clone()));
    }

    // Rank-1 lhs: a vector-matrix product.
    let g = matmul_graph(&[3], &[3, 2], false);
    let r = run1(g, &[t32(&[3], vec![1.0, 2.0, 3.0]), t32(&[3, 2], b)]);
    assert_eq!(r, (vec![2], vec![58.0, 64.0]));
}

#[test]
fn matmul_long_rows_match_a_wide_reference() {
    // K = 19 exercises the 8-wide accumulators and the tail; N = 3, M = 2.
    let (m, k, n) = (2, 19, 3);
    let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut expected = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| a[i * k + p] as f64 * bt[j * k + p] as f64).sum();
            expected[i * n + j] = s as f32;
        }
    }
    let g = matmul_graph(&[m, k], &[n, k], true);
    let (_, d) = run1(g, &[t32(&[m, k], a.clone()), t32(&[n, k], bt.clone())]);
    assert_close(&d, &expected);

    let mut b = vec![0.0f32; k * n];
    for p in 0..k {
        for j in 0..n {
            b[p * n + j] = bt[j * k + p];
        }
    }
    let g = matmul_graph(&[m, k], &[k, n], false);
    let (_, d) = run1(g, &[t32(&[m, k], a), t32(&[k, n], b)]);
    assert_close(&d, &expected);
}

#[test]
fn transposes() {
    let mut g = Graph::new("transpose2");
    let x = input(&mut g, "x", &f(&[2, 3]));
    let y = op(&mut g, Op::Transpose(smallvec![1, 0]), &[x]);
    output(&mut g, "y", y);
    let r = run1(g, &[t32(&[2, 3], iota(6))]);
    assert_eq!(r, (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));

    // out[k, i, j] = x[i, j, k] = 12i + 4j + k
    let mut g = Graph::new("transpose3");
    let x = input(&mut g, "x", &f(&[2, 3, 4]));
    let y = op(&mut g, Op::Transpose(smallvec![2, 0, 1]), &[x]);
    output(&mut g, "y", y);
    let (shape, d) = run1(g, &[t32(&[2, 3, 4], iota(24))]);
    assert_eq!(shape, vec![4, 2, 3]);
    let expected: Vec<f32> =
        (0..4).flat_map(|k| (0..2).flat_map(move |i| (0..3).map(move |j| (12 * i + 4 * j + k) as f32))).collect();
    assert_eq!(d, expected);

    // The identity permutation of a bool tensor.
    let mut g = Graph::new("transpose_id");
    let x = typed_input(&mut g, "x", DType::Bool, &f(&[2]));
    let y = op(&mut g, Op::Transpose(smallvec![0]), &[x]);
    output(&mut g, "y", y);
    let out = run(g, &[Tensor::bool(&[2], vec![true, false]).unwrap()]);
    assert_eq!(out[0].as_bool(), Some(&[true, false][..]));
}

#[test]
fn slices_with_seq_bounds() {
    let mut g = Graph::new("slice");
    let x = input(&mut g, "x", &[Dim::Seq(2), Dim::Fixed(2)]);
    let mid = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(1), end: Dim::Seq(1) }, &[x]);
    let last = op(&mut g, Op::Slice { axis: 0, start: Dim::Seq(1), end: Dim::Seq(2) }, &[x]);
    let col = op(&mut g, Op::Slice { axis: 1, start: Dim::Fixed(1), end: Dim::Fixed(2) }, &[x]);
    output(&mut g, "mid", mid);
    output(&mut g, "last", last);
    output(&mut g, "col", col);
    // T = 3: x is [5, 2].
    let out = run(g, &[t32(&[5, 2], iota(10))]);
    assert_eq!(out[0].shape(), &[3, 2]);
    assert_eq!(out[0].as_f32(), Some(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0][..]));
    assert_eq!(out[1].shape(), &[1, 2]);
    assert_eq!(out[1].as_f32(), Some(&[8.0, 9.0][..]));
    assert_eq!(out[2].shape(), &[5, 1]);
    assert_eq!(out[2].as_f32(), Some(&[1.0, 3.0, 5.0, 7.0, 9.0][..]));
}

#[test]
fn concat_with_a_t_dependent_operand() {
    // Token shift: prepend the previous state row, drop the last row.
    let mut g = Graph::new("shift");
    let state = input(&mut g, "state", &f(&[1, 2]));
    let x = input(&mut g, "x", &[Dim::T, Dim::Fixed(2)]);
    let cat = op(&mut g, Op::Concat { axis: 0 }, &[state, x]);
    let shifted = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(0), end: Dim::T }, &[cat]);
    output(&mut g, "cat", cat);
    output(&mut g, "shifted", shifted);
    let out = run(g, &[t32(&[1, 2], vec![10.0, 20.0]), t32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0])]);
    assert_eq!(out[0].shape(), &[3, 2]);
    assert_eq!(out[0].as_f32(), Some(&[10.0, 20.0, 1.0, 2.0, 3.0, 4.0][..]));
    assert_eq!(out[1].shape(), &[2, 2]);
    assert_eq!(out[1].as_f32(), Some(&[10.0, 20.0, 1.0, 2.0][..]));

    // Along a later axis, with three operands.
    let mut g = Graph::new("concat1");
    let a = input(&mut g, "a", &f(&[2, 1]));
    let b = input(&mut g, "b", &f(&[2, 2]));
    let c = input(&mut g, "c", &f(&[2, 0]));
    let cat = op(&mut g, Op::Concat { axis: 1 }, &[a, b, c]);
    output(&mut g, "cat", cat);
    let r = run1(g, &[t32(&[2, 1], vec![1.0, 2.0]), t32(&[2, 2], vec![3.0, 4.0, 5.0, 6.0]), t32(&[2, 0], vec![])]);
    assert_eq!(r, (vec![2, 3], vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]));
}

#[test]
fn unfold_windows() {
    let case = |shape: &[usize], axis: usize, size: usize| {
        let mut g = Graph::new("unfold");
        let x = input(&mut g, "x", &f(shape));
        let y = op(&mut g, Op::Unfold { axis, size }, &[x]);
        output(&mut g, "y", y);
        let n = shape.iter().product();
        run1(g, &[t32(shape, iota(n))])
    };
    assert_eq!(case(&[5], 0, 3), (vec![3, 3], vec![0.0, 1.0, 2.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0]));
    assert_eq!(case(&[2, 4], 1, 2), (vec![2, 3, 2], vec![0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, 6.0, 7.0]));
    assert_eq!(case(&[4, 2], 0, 2), (vec![3, 2, 2], vec![0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 5.0, 4.0, 5.0, 6.0, 7.0]));

    // A causal-convolution window over [carried row; T rows]: [T + 1, 1] -> [T, 2, 1].
    let mut g = Graph::new("unfold_t");
    let x = input(&mut g, "x", &[Dim::Seq(1), Dim::Fixed(1)]);
    let y = op(&mut g, Op::Unfold { axis: 0, size: 2 }, &[x]);
    output(&mut g, "y", y);
    let r = run1(g, &[t32(&[3, 1], vec![1.0, 2.0, 3.0])]);
    assert_eq!(r, (vec![2, 2, 1], vec![1.0, 2.0, 2.0, 3.0]));
}

#[test]
fn gather_rows() {
    let mut g = Graph::new("gather");
    let table = input(&mut g, "emb", &f(&[4, 2]));
    let tokens = typed_input(&mut g, "tokens", DType::I64, &[Dim::T]);
    let rows = op(&mut g, Op::Gather, &[table, tokens]);
    output(&mut g, "rows", rows);
    let r = run1(
        g,
        &[t32(&[4, 2], vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0]), Tensor::i64(&[3], vec![3, 0, 3]).unwrap()],
    );
    assert_eq!(r, (vec![3, 2], vec![30.0, 31.0, 0.0, 1.0, 30.0, 31.0]));

    // Rank-2 indices into a rank-1 table.
    let mut g = Graph::new("gather2");
    let table = input(&mut g, "t", &f(&[3]));
    let idx = typed_input(&mut g, "i", DType::I64, &f(&[2, 2]));
    let y = op(&mut g, Op::Gather, &[table, idx]);
    output(&mut g, "y", y);
    let r = run1(g, &[t32(&[3], vec![5.0, 6.0, 7.0]), Tensor::i64(&[2, 2], vec![2, 2, 0, 1]).unwrap()]);
    assert_eq!(r, (vec![2, 2], vec![7.0, 7.0, 5.0, 6.0]));
}

#[test]
fn reshape_with_t() {
    let mut g = Graph::new("reshape");
    let x = input(&mut g, "x", &[Dim::T, Dim::Fixed(4)]);
    let y = op(&mut g, Op::Reshape(Shape::new([Dim::T, Dim::Fixed(2), Dim::Fixed(2)])), &[x]);
    let z = op(&mut g, Op::Reshape(Shape::new([Dim::Fixed(2), Dim::T, Dim::Fixed(2)])), &[y]);
    output(&mut g, "z", z);
    let r = run1(g, &[t32(&[3, 4], iota(12))]);
    assert_eq!(r, (vec![2, 3, 2], iota(12)));
}

#[test]
fn large_elementwise_and_reductions_take_the_parallel_path() {
    let n = 1 << 16;
    let mut g = Graph::new("big");
    let x = input(&mut g, "x", &f(&[2, n / 2]));
    let y = op(&mut g, Op::Unary(UnaryOp::Neg), &[x]);
    let z = op(&mut g, Op::Binary(BinaryOp::Mul), &[y, x]);
    let s = op(&mut g, Op::Reduce { op: ReduceOp::Max, axis: 1 }, &[z]);
    output(&mut g, "z", z);
    output(&mut g, "s", s);
    let xs: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let out = run(g, &[t32(&[2, n / 2], xs.clone())]);
    let expected: Vec<f32> = xs.iter().map(|v| -v * v).collect();
    assert_eq!(out[0].as_f32(), Some(&expected[..]));
    assert_eq!(out[1].as_f32(), Some(&[0.0, 0.0][..]));
}
