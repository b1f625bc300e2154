//! The evaluator and input binding: freeing values, outputs, `T` from the inputs, and errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kiln_backend::{check_inputs, ExecError, Executable, Interpreter, NodeErrorKind, Tensor};
use kiln_ir::{BinaryOp, DType, Dim, Graph, Node, Op, OutputRole, Param, ParamRole, Shape, Type, UnaryOp, Value};
use smallvec::smallvec;

#[test]
fn an_operand_used_twice_survives_until_the_node_has_run() {
    let mut g = Graph::new("square");
    let x = input(&mut g, "x", &f(&[3]));
    let n = op(&mut g, Op::Unary(UnaryOp::Neg), &[x]);
    let sq = op(&mut g, Op::Binary(BinaryOp::Mul), &[n, n]);
    let sq2 = op(&mut g, Op::Binary(BinaryOp::Mul), &[sq, sq]);
    output(&mut g, "y", sq2);
    let r = run1(g, &[t32(&[3], vec![1.0, -2.0, 3.0])]);
    assert_eq!(r, (vec![3], vec![1.0, 16.0, 81.0]));
}

#[test]
fn reshape_copies_a_live_operand_and_takes_a_dying_one() {
    let mut g = Graph::new("reshape");
    let x = input(&mut g, "x", &f(&[2, 2]));
    let r = op(&mut g, Op::Unary(UnaryOp::Neg), &[x]);
    // Runs before `sum` (lower id), while `r` is still needed.
    let flat = op(&mut g, Op::Reshape(Shape::fixed(&[4])), &[r]);
    let sum = op(&mut g, Op::Binary(BinaryOp::Add), &[r, r]);
    // The last use of `sum`: its buffer is reused.
    let sum_flat = op(&mut g, Op::Reshape(Shape::fixed(&[4])), &[sum]);
    // Reshaping an input keeps borrowing it.
    let x_flat = op(&mut g, Op::Reshape(Shape::fixed(&[4])), &[x]);
    output(&mut g, "flat", flat);
    output(&mut g, "sum", sum_flat);
    output(&mut g, "x", x_flat);
    let data = [1.0, 2.0, 3.0, 4.0];
    let out = run(g, &[Tensor::borrowed_f32(&[2, 2], &data).unwrap()]);
    assert_eq!(out[0].as_f32(), Some(&[-1.0, -2.0, -3.0, -4.0][..]));
    assert_eq!(out[1].as_f32(), Some(&[-2.0, -4.0, -6.0, -8.0][..]));
    assert_eq!(out[2].as_f32(), Some(&data[..]));
    assert_eq!(out[2].shape(), &[4]);
}

#[test]
fn outputs_may_repeat_and_may_be_inputs() {
    let mut g = Graph::new("outputs");
    let x = input(&mut g, "x", &f(&[2]));
    let y = op(&mut g, Op::Unary(UnaryOp::Abs), &[x]);
    output(&mut g, "a", y);
    output(&mut g, "b", x);
    output(&mut g, "c", y);
    let out = run(g, &[t32(&[2], vec![-1.0, 2.0])]);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_f32(), Some(&[1.0, 2.0][..]));
    assert_eq!(out[1].as_f32(), Some(&[-1.0, 2.0][..]));
    assert_eq!(out[2], out[0]);
}

#[test]
fn state_tokens_and_weights_are_all_inputs() {
    let mut g = Graph::new("state");
    let tokens = g.add_input(
        Param { role: ParamRole::Tokens, name: "tokens".into() },
        Type::new(DType::I64, Shape::new([Dim::T])),
        None,
    );
    let emb = input(&mut g, "emb", &f(&[3, 2]));
    let state = g.add_input(
        Param { role: ParamRole::State { init: 0.0 }, name: "h".into() },
        Type::f32(Shape::fixed(&[1, 2])),
        None,
    );
    let rows = op(&mut g, Op::Gather, &[emb, tokens]);
    let sum = op(&mut g, Op::Reduce { op: kiln_ir::ReduceOp::Sum, axis: 0 }, &[rows]);
    let next = op(&mut g, Op::Binary(BinaryOp::Add), &[state, sum]);
    g.add_output("h", next, OutputRole::State);
    output(&mut g, "rows", rows);
    let out =
        run(g, &[Tensor::i64(&[2], vec![2, 1]).unwrap(), t32(&[3, 2], iota(6)), t32(&[1, 2], vec![100.0, 200.0])]);
    assert_eq!(out[0].as_f32(), Some(&[106.0, 208.0][..]));
    assert_eq!(out[1].as_f32(), Some(&[4.0, 5.0, 2.0, 3.0][..]));
}

fn t_graph() -> Graph {
    let mut g = Graph::new("t");
    let w = input(&mut g, "w", &f(&[2]));
    let x = input(&mut g, "x", &[Dim::Seq(1), Dim::Fixed(2)]);
    let y = input(&mut g, "y", &[Dim::T, Dim::Fixed(2)]);
    let xs = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(1), end: Dim::Seq(1) }, &[x]);
    let s = op(&mut g, Op::Binary(BinaryOp::Add), &[xs, y]);
    let wb = op(&mut g, Op::Broadcast(Shape::new([Dim::T, Dim::Fixed(2)])), &[w]);
    let s = op(&mut g, Op::Binary(BinaryOp::Mul), &[s, wb]);
    output(&mut g, "s", s);
    g
}

#[test]
fn t_comes_from_the_first_t_dependent_input() {
    let g = t_graph();
    let inputs = [t32(&[2], vec![1.0, 10.0]), t32(&[3, 2], iota(6)), t32(&[2, 2], vec![1.0; 4])];
    assert_eq!(check_inputs(&g, &inputs).unwrap(), 2);
    let interp = Interpreter::new(g);
    let out = interp.run(&inputs).unwrap();
    assert_eq!(out[0].as_f32(), Some(&[3.0, 40.0, 5.0, 60.0][..]));
    // The same interpreter with another T.
    let inputs = [t32(&[2], vec![1.0, 1.0]), t32(&[2, 2], iota(4)), t32(&[1, 2], vec![0.0; 2])];
    let out = interp.run(&inputs).unwrap();
    assert_eq!(out[0].as_f32(), Some(&[2.0, 3.0][..]));
}

#[test]
fn without_t_dependent_inputs_t_is_irrelevant() {
    let mut g = Graph::new("no_t");
    let x = input(&mut g, "x", &f(&[2]));
    output(&mut g, "x", x);
    assert_eq!(check_inputs(&g, &[t32(&[2], vec![1.0, 2.0])]).unwrap(), 1);
}

#[test]
fn wrong_input_shape_names_the_input_and_the_resolved_type() {
    let g = t_graph();
    let err = try_run(g, &[t32(&[2], vec![1.0, 10.0]), t32(&[3, 2], iota(6)), t32(&[3, 2], iota(6))]).unwrap_err();
    assert!(matches!(
        &err,
        ExecError::InputType { index: 2, name, t: Some(2), .. } if name == "y"
    ));
    assert_eq!(err.to_string(), "input 2 `y` is f32[3, 2] but the graph declares f32[T, 2] (f32[2, 2] for T = 2)");

    // A fixed-shape input of the wrong shape, and one of the wrong dtype.
    let err = try_run(t_graph(), &[t32(&[3], vec![0.0; 3]), t32(&[3, 2], iota(6)), t32(&[2, 2], iota(4))]).unwrap_err();
    assert_eq!(err.to_string(), "input 0 `w` is f32[3] but the graph declares f32[2]");
    let err =
        try_run(t_graph(), &[Tensor::i64(&[2], vec![0, 0]).unwrap(), t32(&[3, 2], iota(6)), t32(&[2, 2], iota(4))])
            .unwrap_err();
    assert_eq!(err.to_string(), "input 0 `w` is i64[2] but the graph declares f32[2]");

    // The input that fixes T has the wrong rank.
    let err = try_run(t_graph(), &[t32(&[2], vec![0.0; 2]), t32(&[6], iota(6)), t32(&[2, 2], iota(4))]).unwrap_err();
    assert_eq!(err.to_string(), "input 1 `x` is f32[6] but the graph declares f32[T+1, 2]");
}

#[test]
fn t_below_one_and_wrong_input_count_are_errors() {
    let err = try_run(t_graph(), &[t32(&[2], vec![0.0; 2]), t32(&[1, 2], iota(2)), t32(&[0, 2], vec![])]).unwrap_err();
    assert!(matches!(err, ExecError::SeqLen { index: 1, t: 0, .. }));
    assert_eq!(
        err.to_string(),
        "input 1 `x` is [1, 2], which makes T = 0 for its declared shape [T+1, 2], but a call \
         needs T >= 1"
    );
    let err = try_run(t_graph(), &[t32(&[2], vec![0.0; 2])]).unwrap_err();
    assert_eq!(err, ExecError::InputCount { expected: 3, found: 1 });
    assert_eq!(err.to_string(), "the graph takes 3 input(s), got 1");
}

#[test]
fn gather_out_of_range_names_node_origin_index_and_size() {
    for bad in [4i64, -1] {
        let mut g = Graph::new("gather");
        let table = input(&mut g, "emb", &f(&[4, 2]));
        let tokens = typed_input(&mut g, "tokens", DType::I64, &[Dim::T]);
        let rows = g.add1(Op::Gather, &[table, tokens], Some(origin(7, 3))).unwrap();
        output(&mut g, "rows", rows);
        let err = try_run(g, &[t32(&[4, 2], iota(8)), Tensor::i64(&[2], vec![1, bad]).unwrap()]).unwrap_err();
        let ExecError::Node { at, kind } = &err else { panic!("{err}") };
        assert_eq!(at.node, rows.node);
        assert_eq!(*kind, NodeErrorKind::GatherIndex { index: bad, size: 4 });
        assert_eq!(
            err.to_string(),
            format!(
                "%{} (test.toml:7:3): gather: index {bad} is out of range for a table of 4 rows",
                rows.node.index()
            )
        );
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn a_cycle_is_an_error_not_a_panic() {
    let mut g = Graph::new("cycle");
    let x = input(&mut g, "x", &f(&[1]));
    let b = op(&mut g, Op::Unary(UnaryOp::Neg), &[x]);
    let c = op(&mut g, Op::Unary(UnaryOp::Neg), &[b]);
    g.replace_all_uses(b, c); // `c` now reads itself
    output(&mut g, "c", c);
    let err = Interpreter::new(g).run(&[t32(&[1], vec![1.0])]).unwrap_err();
    assert!(matches!(err, ExecError::Cycle { .. }), "{err}");
    assert_eq!(err.to_string(), format!("the graph has a cycle through %{}", c.node.index()));
}

#[test]
fn unverified_graphs_fail_cleanly() {
    // A node whose recorded type disagrees with what it computes.
    let mut g = Graph::new("lie");
    let x = input(&mut g, "x", &f(&[2]));
    let node = Node {
        op: Op::Unary(UnaryOp::Neg),
        results: smallvec![Type::f32(Shape::fixed(&[3]))],
        origin: Some(origin(1, 1)),
    };
    let y = g.add_unchecked(node, &[x]);
    output(&mut g, "y", y.into());
    let err = Interpreter::new(g).run(&[t32(&[2], vec![1.0, 2.0])]).unwrap_err();
    assert!(matches!(&err, ExecError::Node { kind: NodeErrorKind::ResultType { .. }, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "%{} (test.toml:1:1): produced (f32[2]) but the graph records (f32[3]), i.e. \
             (f32[3]) for T = 1",
            y.index()
        )
    );

    // A binary op on operands of different shapes.
    let mut g = Graph::new("mismatch");
    let a = input(&mut g, "a", &f(&[2]));
    let b = input(&mut g, "b", &f(&[3]));
    let node = Node { op: Op::Binary(BinaryOp::Add), results: smallvec![Type::f32(Shape::fixed(&[2]))], origin: None };
    let s = g.add_unchecked(node, &[a, b]);
    output(&mut g, "s", s.into());
    let err = Interpreter::new(g).run(&[t32(&[2], vec![0.0; 2]), t32(&[3], vec![0.0; 3])]).unwrap_err();
    assert_eq!(err.to_string(), format!("%{}: `add` needs operands of one shape, got [2] and [3]", s.index()));

    // An output naming a result that does not exist.
    let mut g = Graph::new("dangling");
    let x = input(&mut g, "x", &f(&[2]));
    output(&mut g, "bad", Value::new(x.node, 3));
    let err = Interpreter::new(g).run(&[t32(&[2], vec![0.0; 2])]).unwrap_err();
    assert_eq!(err.to_string(), "output `bad` names a value that does not exist");
}

/// Runs one node built without type checking over `inputs` and returns the error.
fn unchecked_error(op: Op, inputs: Vec<Tensor<'static>>) -> NodeErrorKind {
    let mut g = Graph::new("unchecked");
    let values: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dims: Vec<Dim> = t.shape().iter().map(|&d| Dim::Fixed(d)).collect();
            typed_input(&mut g, &format!("x{i}"), t.dtype(), &dims)
        })
        .collect();
    let node = Node { op, results: smallvec![Type::f32(Shape::scalar())], origin: None };
    let id = g.add_unchecked(node, &values);
    output(&mut g, "y", id.into());
    match Interpreter::new(g).run(&inputs) {
        Err(ExecError::Node { kind, .. }) => kind,
        other => panic!("expected a node error, got {other:?}"),
    }
}

#[test]
fn kernels_reject_bad_operands_without_panicking() {
    let m23 = || t32(&[2, 3], iota(6));
    let v3 = || t32(&[3], iota(3));
    let idx = |v: Vec<i64>| Tensor::i64(&[v.len()], v).unwrap();
    let cases: Vec<(Op, Vec<Tensor<'static>>)> = vec![
        (Op::Unary(UnaryOp::Exp), vec![]),
        (Op::Unary(UnaryOp::Exp), vec![idx(vec![1])]),
        (Op::Select, vec![m23(), m23(), m23()]),
        (Op::Reduce { op: kiln_ir::ReduceOp::Sum, axis: 2 }, vec![m23()]),
        (Op::MatMul { transpose_rhs: false }, vec![m23(), m23()]),
        (Op::MatMul { transpose_rhs: true }, vec![m23(), v3()]),
        (Op::Reshape(Shape::fixed(&[4])), vec![m23()]),
        (Op::Reshape(Shape::new([Dim::Seq(-2)])), vec![m23()]),
        (Op::Broadcast(Shape::fixed(&[2, 2])), vec![v3()]),
        (Op::Broadcast(Shape::fixed(&[usize::MAX, 4])), vec![v3()]),
        (Op::Transpose(smallvec![0, 0]), vec![m23()]),
        (Op::Transpose(smallvec![0]), vec![m23()]),
        (Op::Slice { axis: 1, start: Dim::Fixed(2), end: Dim::Fixed(4) }, vec![m23()]),
        (Op::Slice { axis: 0, start: Dim::Fixed(2), end: Dim::Fixed(1) }, vec![m23()]),
        (Op::Slice { axis: 5, start: Dim::Fixed(0), end: Dim::Fixed(1) }, vec![m23()]),
        (Op::Concat { axis: 0 }, vec![]),
        (Op::Concat { axis: 0 }, vec![m23(), v3()]),
        (Op::Concat { axis: 0 }, vec![v3(), idx(vec![1])]),
        (Op::Unfold { axis: 1, size: 4 }, vec![m23()]),
        (Op::Unfold { axis: 1, size: 0 }, vec![m23()]),
        (Op::Gather, vec![m23(), m23()]),
        (Op::Gather, vec![t32(&[], vec![1.0]), idx(vec![0])]),
        (Op::Gather, vec![m23(), idx(vec![2])]),
        (Op::Compare(kiln_ir::CompareOp::Lt), vec![m23(), v3()]),
    ];
    for (op, inputs) in cases {
        let name = op.mnemonic();
        let kind = unchecked_error(op, inputs);
        let message = kind.to_string();
        assert!(!message.is_empty() && !message.contains('\n'), "{name}: {message}");
        assert!(
            !matches!(kind, NodeErrorKind::Internal { .. } | NodeErrorKind::ResultType { .. }),
            "{name}: {message}"
        );
    }
}
