//! Shared helpers for the JIT tests: running a kernel through the interpreter (as a one-node
//! graph with an `Op::Fused` node, through the public API) and through the JIT, comparing
//! results, measuring ulp distances, a small deterministic RNG and input distributions with
//! special values.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use kiln_backend::jit::{CompiledKernel, JitModule, JitOptions};
use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{
    BinaryOp, Graph, Instr, Kernel, KernelOutput, Level, Op, OutputRole, Param, ParamRole, ReduceOp, Shape, Type,
    UnaryOp, Value,
};

/// One call of a kernel: declared operand shapes, concrete data, and `T`.
#[derive(Clone, Debug)]
pub struct Case {
    pub kernel: Kernel,
    pub shapes: Vec<Shape>,
    pub dims: Vec<Vec<usize>>,
    pub data: Vec<Vec<f32>>,
    pub t: usize,
}

impl Case {
    pub fn tensors(&self) -> Vec<Tensor<'static>> {
        self.dims.iter().zip(&self.data).map(|(d, x)| Tensor::f32(d, x.clone()).unwrap()).collect()
    }

    /// The interpreter's results (the reference).
    pub fn interpret(&self) -> Vec<Tensor<'static>> {
        let mut g = Graph::new("kernel");
        let inputs: Vec<Value> = self
            .shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                g.add_input(Param { role: ParamRole::Weight, name: format!("x{i}") }, Type::f32(s.clone()), None)
            })
            .collect();
        let node = g.add(Op::Fused(Box::new(self.kernel.clone())), &inputs, None).unwrap();
        for j in 0..self.kernel.outputs.len() {
            g.add_output(format!("y{j}"), Value::new(node, j as u16), OutputRole::Result);
        }
        Interpreter::new(g).run(&self.tensors()).unwrap()
    }

    /// The JIT's results.
    pub fn jit(&self, compiled: &CompiledKernel) -> Vec<Tensor<'static>> {
        let tensors = self.tensors();
        let refs: Vec<&Tensor<'_>> = tensors.iter().collect();
        compiled.run(&refs, self.t).unwrap().into_vec()
    }
}

/// Compiles one kernel (verifier on).
pub fn compile(kernel: &Kernel) -> (JitModule, CompiledKernel) {
    compile_with(kernel, &JitOptions { verify: true, ..JitOptions::default() })
}

pub fn compile_with(kernel: &Kernel, options: &JitOptions) -> (JitModule, CompiledKernel) {
    let m = JitModule::compile(&[kernel], options).unwrap();
    let k = m.kernel(0).unwrap_or_else(|e| panic!("{e}\n{kernel:#?}")).clone();
    (m, k)
}

/// A kernel over fixed shapes.
pub fn kernel(shape: &[usize], reads: &[&[usize]], body: Vec<Instr>, outputs: &[(u16, Level)]) -> Kernel {
    Kernel {
        shape: Shape::fixed(shape),
        reads: reads.iter().map(|r| Shape::fixed(r)).collect(),
        body,
        outputs: outputs.iter().map(|&(instr, level)| KernelOutput { instr, level }).collect(),
    }
}

/// Layer norm over the last axis, with weight and bias `[cols]`.
pub fn layer_norm(shape: &[usize]) -> Kernel {
    let cols = *shape.last().unwrap();
    kernel(
        shape,
        &[shape, &[cols], &[cols]],
        vec![
            Instr::Input(0, Level::Vector),
            Instr::Reduce(ReduceOp::Sum, 0),
            Instr::Const(cols as f32),
            Instr::Binary(BinaryOp::Div, 1, 2),
            Instr::Binary(BinaryOp::Sub, 0, 3),
            Instr::Binary(BinaryOp::Mul, 4, 4),
            Instr::Reduce(ReduceOp::Sum, 5),
            Instr::Binary(BinaryOp::Div, 6, 2),
            Instr::Const(1e-5),
            Instr::Binary(BinaryOp::Add, 7, 8),
            Instr::Unary(UnaryOp::Sqrt, 9),
            Instr::Binary(BinaryOp::Div, 4, 10),
            Instr::Input(1, Level::Vector),
            Instr::Binary(BinaryOp::Mul, 11, 12),
            Instr::Input(2, Level::Vector),
            Instr::Binary(BinaryOp::Add, 13, 14),
        ],
        &[(15, Level::Vector), (3, Level::Row)],
    )
}

/// Softmax over the last axis, plus its log-sum-exp as a row value.
pub fn softmax(shape: &[usize]) -> Kernel {
    kernel(
        shape,
        &[shape],
        vec![
            Instr::Input(0, Level::Vector),
            Instr::Reduce(ReduceOp::Max, 0),
            Instr::Binary(BinaryOp::Sub, 0, 1),
            Instr::Unary(UnaryOp::Exp, 2),
            Instr::Reduce(ReduceOp::Sum, 3),
            Instr::Binary(BinaryOp::Div, 3, 4),
            Instr::Unary(UnaryOp::Log, 4),
            Instr::Binary(BinaryOp::Add, 6, 1),
        ],
        &[(5, Level::Vector), (7, Level::Row)],
    )
}

/// silu(x) * tanh(softplus(y)) (a mix of every transcendental), RMS-normalized.
pub fn activations(shape: &[usize]) -> Kernel {
    let cols = *shape.last().unwrap();
    kernel(
        shape,
        &[shape, shape],
        vec![
            Instr::Input(0, Level::Vector),
            Instr::Unary(UnaryOp::Neg, 0),
            Instr::Unary(UnaryOp::Exp, 1),
            Instr::Const(1.0),
            Instr::Binary(BinaryOp::Add, 2, 3),
            Instr::Binary(BinaryOp::Div, 0, 4), // silu
            Instr::Input(1, Level::Vector),
            Instr::Unary(UnaryOp::Exp, 6),
            Instr::Unary(UnaryOp::Log1p, 7), // softplus
            Instr::Unary(UnaryOp::Tanh, 8),
            Instr::Binary(BinaryOp::Mul, 5, 9),
            Instr::Binary(BinaryOp::Mul, 10, 10),
            Instr::Reduce(ReduceOp::Sum, 11),
            Instr::Const(cols as f32),
            Instr::Binary(BinaryOp::Div, 12, 13),
            Instr::Const(1e-6),
            Instr::Binary(BinaryOp::Add, 14, 15),
            Instr::Unary(UnaryOp::Sqrt, 16),
            Instr::Unary(UnaryOp::Recip, 17),
            Instr::Binary(BinaryOp::Mul, 10, 18),
        ],
        &[(19, Level::Vector), (10, Level::Vector)],
    )
}

/// Equal, or both NaN (`0.0 == -0.0`).
pub fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Distance in units in the last place (ordered bit patterns); 0 for two NaNs, `u64::MAX`
/// when only one is NaN.
pub fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() { 0 } else { u64::MAX };
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        i64::from(if i < 0 { i32::MIN - i } else { i })
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Error of `y` against an exact `reference`, in ulps of the reference rounded to f32.
pub fn ulp_error(y: f32, reference: f64) -> f64 {
    if reference.is_nan() {
        return if y.is_nan() { 0.0 } else { f64::INFINITY };
    }
    let r32 = reference as f32;
    if r32.is_infinite() || y.is_infinite() {
        return if y == r32 { 0.0 } else { f64::INFINITY };
    }
    let exp = if r32 == 0.0 { -126 } else { (r32.abs() as f64).log2().floor() as i32 };
    let ulp = 2f64.powi(exp.max(-126) - 23);
    (f64::from(y) - reference).abs() / ulp
}

/// Compares every output element; `tol(reference, jit) -> bool`.
pub fn check(case: &Case, compiled: &CompiledKernel, what: &str, tol: impl Fn(f32, f32) -> bool) {
    let want = case.interpret();
    let got = case.jit(compiled);
    assert_eq!(want.len(), got.len(), "{what}: output count");
    for (j, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.shape(), g.shape(), "{what}: output {j} shape");
        assert_eq!(w.dtype(), g.dtype(), "{what}: output {j} dtype");
        let (w, g) = (w.as_f32().unwrap(), g.as_f32().unwrap());
        for (i, (&a, &b)) in w.iter().zip(g).enumerate() {
            assert!(tol(a, b), "{what}: output {j} element {i}: interpreter {a:e}, JIT {b:e}\n{:?}", case.kernel);
        }
    }
}

/// `|a - b| <= rel * max(|a|, |b|) + abs`, or the same special value.
pub fn close(rel: f32, abs: f32) -> impl Fn(f32, f32) -> bool {
    move |a, b| same(a, b) || (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
}

/// xorshift64*: deterministic, good enough for test inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// Mostly moderate values, with a share of `special` ones.
    pub fn value(&mut self, special: f32) -> f32 {
        if self.uniform(0.0, 1.0) < special {
            self.pick(&SPECIALS)
        } else {
            self.uniform(-4.0, 4.0)
        }
    }

    pub fn values(&mut self, n: usize, special: f32) -> Vec<f32> {
        (0..n).map(|_| self.value(special)).collect()
    }
}

/// Values every kernel should see: signed zeros, infinities, NaN, huge, tiny and denormal.
pub const SPECIALS: [f32; 22] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    100.0,
    -100.0,
    1e30,
    -1e30,
    3e38,
    -3e38,
    1e-20,
    -1e-20,
    1e-40,
    -1e-40,
    f32::MIN_POSITIVE,
    0.5,
    -0.625,
    88.8,
    -104.5,
];
