//! Helpers shared by the interpreter's integration tests: building small graphs by hand and
//! running them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use kiln_backend::{ExecError, Executable, Interpreter, Tensor};
use kiln_ir::{DType, Dim, Graph, Op, Origin, OutputRole, Param, ParamRole, Scan, Shape, Type, Value};
use std::sync::Arc;

/// A weight input of type `f32[dims]`.
pub fn input(g: &mut Graph, name: &str, dims: &[Dim]) -> Value {
    typed_input(g, name, DType::F32, dims)
}

pub fn typed_input(g: &mut Graph, name: &str, dtype: DType, dims: &[Dim]) -> Value {
    g.add_input(
        Param { role: ParamRole::Weight, name: name.into() },
        Type::new(dtype, Shape::new(dims.iter().copied())),
        None,
    )
}

/// The `index`-th argument of a scan body.
pub fn arg(g: &mut Graph, index: usize, dtype: DType, dims: &[Dim]) -> Value {
    g.add_input(
        Param { role: ParamRole::Argument { index }, name: format!("a{index}") },
        Type::new(dtype, Shape::new(dims.iter().copied())),
        None,
    )
}

pub fn f(dims: &[usize]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

pub fn op(g: &mut Graph, op: Op, operands: &[Value]) -> Value {
    g.add1(op, operands, None).unwrap()
}

pub fn origin(line: u32, col: u32) -> Origin {
    Origin { file: Arc::from("test.toml"), line, col, context: None }
}

pub fn output(g: &mut Graph, name: &str, v: Value) {
    g.add_output(name, v, OutputRole::Result);
}

pub fn scan(g: &mut Graph, s: Scan, operands: &[Value]) -> kiln_ir::NodeId {
    g.add(Op::Scan(Box::new(s)), operands, None).unwrap()
}

pub fn t32(shape: &[usize], data: Vec<f32>) -> Tensor<'static> {
    Tensor::f32(shape, data).unwrap()
}

/// Runs `g` unplanned, and again with a memory plan (one arena, in-place writes, views): both
/// must give bit-identical results, or the same error.
pub fn try_run(g: Graph, inputs: &[Tensor<'_>]) -> Result<Vec<Tensor<'static>>, ExecError> {
    kiln_ir::verify(&g).map_err(|e| e.to_string()).unwrap();
    let mut planned = g.clone();
    kiln_passes::memory_plan(&mut planned).unwrap();
    // A graph with a size not linear in `T` (e.g. `[T, T]`) stays unplanned.
    let has_plan = planned.plan().is_some();
    let planned = Interpreter::new(planned);
    let unplanned = Interpreter::new(g);
    assert!(planned.is_planned() == has_plan && !unplanned.is_planned());
    let expected = unplanned.run(inputs);
    match (&expected, planned.run(inputs)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((x.dtype(), x.shape()), (y.dtype(), y.shape()));
                let bits = |t: &Tensor<'_>| t.as_f32().map(|d| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                assert_eq!(bits(x), bits(y), "planned and unplanned results differ");
                assert_eq!((x.as_i64(), x.as_bool()), (y.as_i64(), y.as_bool()));
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("unplanned: {a:?}\nplanned: {b:?}"),
    }
    expected
}

pub fn run(g: Graph, inputs: &[Tensor<'_>]) -> Vec<Tensor<'static>> {
    try_run(g, inputs).unwrap_or_else(|e| panic!("run failed: {e}"))
}

/// Runs a single-output graph and returns the output's shape and `f32` data.
pub fn run1(g: Graph, inputs: &[Tensor<'_>]) -> (Vec<usize>, Vec<f32>) {
    let out = run(g, inputs);
    assert_eq!(out.len(), 1);
    let t = out.into_iter().next().unwrap();
    (t.shape().to_vec(), t.into_f32_vec().unwrap())
}

pub fn assert_close(found: &[f32], expected: &[f32]) {
    assert_eq!(found.len(), expected.len(), "{found:?} vs {expected:?}");
    for (i, (a, b)) in found.iter().zip(expected).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "element {i}: {a} vs {b} ({found:?} vs {expected:?})");
    }
}

/// `0, 1, 2, ...` as `f32`.
pub fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}
