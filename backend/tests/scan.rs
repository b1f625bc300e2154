//! Scans: carries, sequences, constants, per-step outputs, reverse order, empty sequences,
//! nested scans and `T` inside bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kiln_backend::{ExecError, NodeErrorKind, Tensor};
use kiln_ir::{BinaryOp, CompareOp, DType, Dim, Graph, Op, ReduceOp, Scan, Shape, Value};

/// `acc' = acc + x_t * scale`, returning `acc'` as the new carry and as the per-step output.
fn running_sum(reverse: bool) -> Graph {
    let mut body = Graph::new("body");
    let acc = arg(&mut body, 0, DType::F32, &f(&[2]));
    let x = arg(&mut body, 1, DType::F32, &f(&[2]));
    let scale = arg(&mut body, 2, DType::F32, &f(&[2]));
    let xs = op(&mut body, Op::Binary(BinaryOp::Mul), &[x, scale]);
    let next = op(&mut body, Op::Binary(BinaryOp::Add), &[acc, xs]);
    output(&mut body, "acc", next);
    output(&mut body, "y", next);

    let mut g = Graph::new("running_sum");
    let acc0 = input(&mut g, "acc0", &f(&[2]));
    let xs = input(&mut g, "xs", &[Dim::T, Dim::Fixed(2)]);
    let scale = input(&mut g, "scale", &f(&[2]));
    let id = scan(&mut g, Scan { body, carries: 1, sequences: 1, constants: 1, reverse }, &[acc0, xs, scale]);
    output(&mut g, "final", Value::new(id, 0));
    output(&mut g, "ys", Value::new(id, 1));
    g
}

fn running_sum_inputs() -> Vec<Tensor<'static>> {
    vec![t32(&[2], vec![1.0, 2.0]), t32(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), t32(&[2], vec![10.0, 100.0])]
}

#[test]
fn running_sum_with_a_constant_and_per_step_output() {
    let out = run(running_sum(false), &running_sum_inputs());
    assert_eq!(out[0].shape(), &[2]);
    assert_eq!(out[0].as_f32(), Some(&[91.0, 1202.0][..]));
    assert_eq!(out[1].shape(), &[3, 2]);
    assert_eq!(out[1].as_f32(), Some(&[11.0, 202.0, 41.0, 602.0, 91.0, 1202.0][..]));
}

#[test]
fn reverse_scan_stores_outputs_at_their_own_step() {
    let out = run(running_sum(true), &running_sum_inputs());
    assert_eq!(out[0].as_f32(), Some(&[91.0, 1202.0][..]));
    assert_eq!(out[1].as_f32(), Some(&[91.0, 1202.0, 81.0, 1002.0, 51.0, 602.0][..]));
}

#[test]
fn cumulative_product_with_scalar_steps_and_a_bool_output() {
    let mut body = Graph::new("body");
    let p = arg(&mut body, 0, DType::F32, &f(&[1]));
    let x = arg(&mut body, 1, DType::F32, &[]);
    let x1 = op(&mut body, Op::Broadcast(Shape::fixed(&[1])), &[x]);
    let next = op(&mut body, Op::Binary(BinaryOp::Mul), &[p, x1]);
    let five = body.constant(5.0, None);
    let five = op(&mut body, Op::Broadcast(Shape::fixed(&[1])), &[five]);
    let big = op(&mut body, Op::Compare(CompareOp::Gt), &[next, five]);
    output(&mut body, "p", next);
    output(&mut body, "prod", next);
    output(&mut body, "big", big);

    let mut g = Graph::new("cumprod");
    let p0 = input(&mut g, "p0", &f(&[1]));
    let xs = input(&mut g, "xs", &[Dim::T]);
    let id = scan(&mut g, Scan { body, carries: 1, sequences: 1, constants: 0, reverse: false }, &[p0, xs]);
    for r in 0..3 {
        output(&mut g, &format!("r{r}"), Value::new(id, r));
    }
    let out = run(g, &[t32(&[1], vec![1.0]), t32(&[3], vec![2.0, 3.0, 4.0])]);
    assert_eq!(out[0].as_f32(), Some(&[24.0][..]));
    assert_eq!(out[1].shape(), &[3, 1]);
    assert_eq!(out[1].as_f32(), Some(&[2.0, 6.0, 24.0][..]));
    assert_eq!(out[2].shape(), &[3, 1]);
    assert_eq!(out[2].as_bool(), Some(&[false, true, true][..]));
}

/// The body closes over the whole `[T, 2]` input and uses `T` itself: a slice with `T`-relative
/// bounds, a reduction over `T` rows and a `[T, 2]` per-step output.
#[test]
fn t_inside_a_scan_body() {
    let mut body = Graph::new("body");
    let acc = arg(&mut body, 0, DType::F32, &f(&[2]));
    let x = arg(&mut body, 1, DType::F32, &f(&[2]));
    let all = arg(&mut body, 2, DType::F32, &[Dim::T, Dim::Fixed(2)]);
    let last = op(&mut body, Op::Slice { axis: 0, start: Dim::Seq(-1), end: Dim::T }, &[all]);
    let last = op(&mut body, Op::Reshape(Shape::fixed(&[2])), &[last]);
    let total = op(&mut body, Op::Reduce { op: ReduceOp::Sum, axis: 0 }, &[all]);
    let total = op(&mut body, Op::Reshape(Shape::fixed(&[2])), &[total]);
    let xl = op(&mut body, Op::Binary(BinaryOp::Mul), &[x, last]);
    let next = op(&mut body, Op::Binary(BinaryOp::Add), &[acc, xl]);
    let next = op(&mut body, Op::Binary(BinaryOp::Add), &[next, total]);
    let xb = op(&mut body, Op::Broadcast(Shape::new([Dim::T, Dim::Fixed(2)])), &[x]);
    let z = op(&mut body, Op::Binary(BinaryOp::Mul), &[all, xb]);
    output(&mut body, "acc", next);
    output(&mut body, "z", z);

    let mut g = Graph::new("nested_t");
    let acc0 = input(&mut g, "acc0", &f(&[2]));
    let xs = input(&mut g, "xs", &[Dim::T, Dim::Fixed(2)]);
    let id = scan(&mut g, Scan { body, carries: 1, sequences: 1, constants: 1, reverse: false }, &[acc0, xs, xs]);
    output(&mut g, "final", Value::new(id, 0));
    output(&mut g, "z", Value::new(id, 1));
    let out = run(g, &[t32(&[2], vec![0.0, 0.0]), t32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0])]);
    assert_eq!(out[0].as_f32(), Some(&[20.0, 36.0][..]));
    assert_eq!(out[1].shape(), &[2, 2, 2]);
    assert_eq!(out[1].as_f32(), Some(&[1.0, 4.0, 3.0, 8.0, 3.0, 8.0, 9.0, 16.0][..]));
}

/// An outer scan over rows whose body scans the row's elements: a running sum over everything.
#[test]
fn nested_scans() {
    let mut inner = Graph::new("inner");
    let c = arg(&mut inner, 0, DType::F32, &f(&[1]));
    let e = arg(&mut inner, 1, DType::F32, &[]);
    let e1 = op(&mut inner, Op::Broadcast(Shape::fixed(&[1])), &[e]);
    let next = op(&mut inner, Op::Binary(BinaryOp::Add), &[c, e1]);
    output(&mut inner, "c", next);
    output(&mut inner, "y", next);

    let mut outer = Graph::new("outer");
    let acc = arg(&mut outer, 0, DType::F32, &f(&[1]));
    let row = arg(&mut outer, 1, DType::F32, &f(&[3]));
    let id =
        scan(&mut outer, Scan { body: inner, carries: 1, sequences: 1, constants: 0, reverse: false }, &[acc, row]);
    output(&mut outer, "acc", Value::new(id, 0));
    output(&mut outer, "ys", Value::new(id, 1));

    let mut g = Graph::new("nested");
    let acc0 = input(&mut g, "acc0", &f(&[1]));
    let xs = input(&mut g, "xs", &[Dim::T, Dim::Fixed(3)]);
    let id = scan(&mut g, Scan { body: outer, carries: 1, sequences: 1, constants: 0, reverse: false }, &[acc0, xs]);
    output(&mut g, "final", Value::new(id, 0));
    output(&mut g, "ys", Value::new(id, 1));
    let out = run(g, &[t32(&[1], vec![0.0]), t32(&[2, 3], iota(6))]);
    assert_eq!(out[0].as_f32(), Some(&[15.0][..]));
    assert_eq!(out[1].shape(), &[2, 3, 1]);
    assert_eq!(out[1].as_f32(), Some(&[0.0, 1.0, 3.0, 6.0, 10.0, 15.0][..]));
}

/// Sequences of length `T - 1 = 0`: the carries pass through and the stacked outputs are empty.
#[test]
fn zero_step_scan() {
    let mut g = running_sum(false);
    // Re-route the scan's sequence through a slice `1..T` of the input.
    let xs = g.inputs()[1];
    let tail = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(1), end: Dim::T }, &[xs.into()]);
    let scan_id = g.outputs()[0].value.node;
    let body = match &g.node(scan_id).op {
        Op::Scan(s) => s.as_ref().clone(),
        _ => unreachable!(),
    };
    let operands = g.operands(scan_id);
    let id = scan(&mut g, body, &[operands[0], tail, operands[2]]);
    g.replace_all_uses(Value::new(scan_id, 0), Value::new(id, 0));
    g.replace_all_uses(Value::new(scan_id, 1), Value::new(id, 1));
    g.remove_node(scan_id);

    let inputs = [t32(&[2], vec![1.0, 2.0]), t32(&[1, 2], vec![5.0, 6.0]), t32(&[2], vec![10.0, 100.0])];
    let out = run(g, &inputs);
    assert_eq!(out[0].as_f32(), Some(&[1.0, 2.0][..]));
    assert_eq!(out[1].shape(), &[0, 2]);
    assert!(out[1].is_empty());
}

#[test]
fn errors_inside_a_body_name_the_scan_and_step() {
    let mut body = Graph::new("body");
    let i = arg(&mut body, 0, DType::I64, &[]);
    let table = arg(&mut body, 1, DType::F32, &f(&[3, 2]));
    let row = body.add1(Op::Gather, &[table, i], Some(origin(4, 2))).unwrap();
    output(&mut body, "row", row);

    for (reverse, bad_step) in [(false, 1), (true, 1)] {
        let mut g = Graph::new("lookup");
        let idx = typed_input(&mut g, "idx", DType::I64, &[Dim::T]);
        let table = input(&mut g, "table", &f(&[3, 2]));
        let id =
            scan(&mut g, Scan { body: body.clone(), carries: 0, sequences: 1, constants: 1, reverse }, &[idx, table]);
        output(&mut g, "rows", Value::new(id, 0));
        let err = try_run(g, &[Tensor::i64(&[3], vec![0, 5, 7]).unwrap(), t32(&[3, 2], iota(6))]).unwrap_err();
        // Forward, step 1 fails first; in reverse, step 2 (index 7) fails first.
        let (step, index) = if reverse { (2, 7) } else { (bad_step, 5) };
        let ExecError::Node { at, kind } = &err else { panic!("{err}") };
        assert_eq!(at.scope.0.len(), 1);
        assert_eq!(at.scope.0[0].node, id);
        assert_eq!(at.scope.0[0].step, Some(step));
        assert_eq!(*kind, NodeErrorKind::GatherIndex { index, size: 3 });
        assert_eq!(
            err.to_string(),
            format!(
                "in scan %{} at step {step}: %{} (test.toml:4:2): gather: index {index} is out \
                 of range for a table of 3 rows",
                id.index(),
                row.node.index()
            )
        );
    }
}
