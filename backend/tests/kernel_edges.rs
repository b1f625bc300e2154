//! Fused kernels at the edges of their space: empty rows (`cols = 0`) still produce their row
//! values (the reduction's identity), and no row at all produces nothing; neither panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{
    Dim, Graph, Instr, Kernel, KernelOutput, Level, Op, OutputRole, Param, ParamRole, ReduceOp, Shape, Type,
};

fn sum_kernel(rows: usize, cols: usize) -> Graph {
    let mut g = Graph::new("edges");
    let shape = Shape::new([Dim::Fixed(rows), Dim::Fixed(cols)]);
    let x = g.add_input(Param { role: ParamRole::Weight, name: "x".into() }, Type::f32(shape.clone()), None);
    let kernel = Kernel {
        shape: shape.clone(),
        reads: vec![shape],
        body: vec![
            Instr::Input(0, Level::Vector),
            Instr::Reduce(ReduceOp::Sum, 0),
            Instr::Const(2.0),
            Instr::Binary(kiln_ir::BinaryOp::Mul, 0, 2),
        ],
        outputs: vec![KernelOutput { instr: 1, level: Level::Row }, KernelOutput { instr: 3, level: Level::Vector }],
    };
    let node = g.add(Op::Fused(Box::new(kernel)), &[x], None).unwrap();
    g.add_output("sum", kiln_ir::Value::new(node, 0), OutputRole::Result);
    g.add_output("twice", kiln_ir::Value::new(node, 1), OutputRole::Result);
    kiln_ir::verify(&g).unwrap();
    g
}

#[test]
fn empty_rows_give_the_reduction_identity() {
    let out = Interpreter::new(sum_kernel(3, 0)).run(&[Tensor::f32(&[3, 0], vec![]).unwrap()]).unwrap();
    assert_eq!(out[0].shape(), &[3, 1]);
    assert_eq!(out[0].as_f32().unwrap(), &[0.0, 0.0, 0.0]);
    assert_eq!(out[1].shape(), &[3, 0]);
    let out = Interpreter::new(sum_kernel(0, 4)).run(&[Tensor::f32(&[0, 4], vec![]).unwrap()]).unwrap();
    assert!(out[0].as_f32().unwrap().is_empty() && out[1].as_f32().unwrap().is_empty());
}

#[test]
fn ordinary_rows_still_work() {
    let x: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let out = Interpreter::new(sum_kernel(2, 3)).run(&[Tensor::f32(&[2, 3], x).unwrap()]).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[3.0, 12.0]);
    assert_eq!(out[1].as_f32().unwrap(), &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
}
