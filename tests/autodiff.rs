//! Finite-difference checks of the autodiff pass: for every primitive (scans and the loss
//! included), the gradient of `Σ f(x) ⊙ r` for random inputs `x` and random weights `r`, computed
//! by the backward graph on the interpreter, against central differences of the same graph's loss.
//! Each backward graph is also verified, run through the default pipeline, and checked to give
//! the same gradients optimized as unoptimized.

use kiln_backend::{Executable, Interpreter, Tensor};
use kiln_ir::{
    BinaryOp, CompareOp, DType, Dim, Graph, Op, OutputRole, Param, ParamRole, ReduceOp, Scan, Shape, Type, UnaryOp,
    Value,
};
use kiln_passes::{autodiff, PipelineOptions};

/// A deterministic uniform generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    fn uniform(&mut self, lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.next()).collect()
    }
}

/// One input of a checked function: its shape and the range its random values come from.
struct Arg {
    shape: Vec<usize>,
    lo: f32,
    hi: f32,
}

fn arg(shape: &[usize], lo: f32, hi: f32) -> Arg {
    Arg { shape: shape.to_vec(), lo, hi }
}

fn weight(g: &mut Graph, name: &str, shape: &[usize]) -> Value {
    g.add_input(Param { role: ParamRole::Weight, name: name.into() }, Type::f32(Shape::fixed(shape)), None)
}

fn add(g: &mut Graph, op: Op, operands: &[Value]) -> Value {
    g.add1(op, operands, None).unwrap()
}

/// `loss = Σ y ⊙ r` with `r` a random weight input named `r`; for a `T`-dependent `y`, which no
/// weight can match, `Σ y³` instead.
fn weighted_sum(g: &mut Graph, y: Value) -> Value {
    let dims = g.value_type(y).shape.dims().to_vec();
    let shape: Option<Vec<usize>> = dims.iter().map(|d| d.fixed()).collect();
    let mut acc = match shape {
        Some(shape) => {
            let r = weight(g, "r", &shape);
            add(g, Op::Binary(BinaryOp::Mul), &[y, r])
        }
        None => {
            let y2 = add(g, Op::Binary(BinaryOp::Mul), &[y, y]);
            add(g, Op::Binary(BinaryOp::Mul), &[y2, y])
        }
    };
    for axis in 0..dims.len() {
        acc = add(g, Op::Reduce { op: ReduceOp::Sum, axis }, &[acc]);
    }
    add(g, Op::Reshape(Shape::scalar()), &[acc])
}

fn run(g: &Graph, inputs: &[Tensor<'static>]) -> Vec<Vec<f32>> {
    let views: Vec<Tensor<'_>> = inputs.iter().map(Tensor::view).collect();
    Interpreter::new(g.clone()).run(&views).unwrap().into_iter().map(|t| t.into_f32_vec().unwrap()).collect()
}

/// Checks the gradient of `build(x0, x1, ..)` at random points; `tokens` (if any) is an extra
/// `i64` token input passed to `build` last.
fn check(name: &str, args: &[Arg], tokens: Option<Vec<i64>>, build: impl Fn(&mut Graph, &[Value]) -> Value) {
    let mut rng = Rng(name.bytes().fold(7, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let mut g = Graph::new(name);
    let mut xs: Vec<Value> = args.iter().enumerate().map(|(i, a)| weight(&mut g, &format!("x{i}"), &a.shape)).collect();
    if let Some(t) = &tokens {
        let ty = Type::new(DType::I64, Shape::new([Dim::T]));
        xs.push(g.add_input(Param { role: ParamRole::Tokens, name: "tokens".into() }, ty, None));
        assert!(!t.is_empty());
    }
    let y = build(&mut g, &xs);
    let loss = if g.value_type(y).shape.rank() == 0 { y } else { weighted_sum(&mut g, y) };
    g.add_output("loss", loss, OutputRole::Result);
    let wrt: Vec<String> = (0..args.len()).map(|i| format!("x{i}")).collect();
    autodiff(&mut g, "loss", &wrt).unwrap();
    kiln_ir::verify(&g).unwrap();

    // Inputs in graph order: the x's, then r (if any), then tokens.
    let mut values: Vec<Vec<f32>> = args.iter().map(|a| rng.uniform(a.lo, a.hi, a.shape.iter().product())).collect();
    let tensors = |values: &[Vec<f32>]| -> Vec<Tensor<'static>> {
        let mut out = Vec::new();
        for &input in g.inputs() {
            let p = g.param(input).unwrap();
            let shape: Vec<usize> = g.node(input).results[0].shape.dims().iter().filter_map(|d| d.fixed()).collect();
            out.push(match (p.role, p.name.as_str()) {
                (ParamRole::Tokens, _) => {
                    Tensor::i64(&[tokens.as_ref().unwrap().len()], tokens.clone().unwrap()).unwrap()
                }
                (_, "r") => {
                    let mut r = Rng(99);
                    Tensor::f32(&shape, r.uniform(-1.0, 1.0, shape.iter().product())).unwrap()
                }
                (_, n) => {
                    let i: usize = n[1..].parse().unwrap();
                    Tensor::f32(&shape, values[i].clone()).unwrap()
                }
            });
        }
        out
    };
    let outputs = run(&g, &tensors(&values));
    let grads: Vec<Vec<f32>> = outputs[1..].to_vec();

    // The optimized backward graph gives the same numbers.
    let mut optimized = g.clone();
    kiln_passes::default_pipeline()
        .run(&mut optimized, &PipelineOptions { verify_each: true, ..Default::default() })
        .unwrap();
    let opt = run(&optimized, &tensors(&values));
    for (a, b) in outputs.iter().zip(&opt) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{name}: optimized {y} vs unoptimized {x}");
        }
    }

    // Central differences of the loss, one element at a time.
    let mut loss_only = g.clone();
    loss_only.retain_outputs(|o| o.name == "loss");
    for (i, a) in args.iter().enumerate() {
        for j in 0..values[i].len() {
            let x = values[i][j];
            let h = 1e-2 * (1.0 + x.abs()) * 0.5;
            values[i][j] = x + h;
            let up = run(&loss_only, &tensors(&values))[0][0] as f64;
            values[i][j] = x - h;
            let down = run(&loss_only, &tensors(&values))[0][0] as f64;
            values[i][j] = x;
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = grads[i][j] as f64;
            let tol = 2e-3 * (1.0 + numeric.abs());
            assert!(
                (numeric - analytic).abs() <= tol,
                "{name}: d/dx{i}[{j}] (shape {:?}) is {analytic} by autodiff but {numeric} by finite differences",
                a.shape
            );
        }
    }
}

fn unary(u: UnaryOp) -> impl Fn(&mut Graph, &[Value]) -> Value {
    move |g, x| add(g, Op::Unary(u), &[x[0]])
}

#[test]
fn unary_ops() {
    for u in UnaryOp::ALL {
        let (lo, hi) = match u {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Recip => (0.5, 2.0),
            UnaryOp::Log1p => (-0.5, 2.0),
            UnaryOp::Abs => (0.1, 1.0),
            _ => (-1.5, 1.5),
        };
        check(u.name(), &[arg(&[3, 4], lo, hi)], None, unary(u));
        if u == UnaryOp::Abs {
            check("abs-negative", &[arg(&[5], -1.0, -0.1)], None, unary(u));
        }
    }
}

#[test]
fn binary_ops() {
    for op in BinaryOp::ALL {
        let (lo, hi) = match op {
            BinaryOp::Div | BinaryOp::Pow => (0.5, 2.0),
            _ => (-1.5, 1.5),
        };
        check(op.name(), &[arg(&[2, 3], lo, hi), arg(&[2, 3], lo, hi)], None, move |g, x| {
            add(g, Op::Binary(op), &[x[0], x[1]])
        });
    }
}

#[test]
fn max_and_min_split_ties_evenly_like_torch() {
    // Both operands are the same tensor: d/dx max(x, x) = 1, split as 1/2 + 1/2.
    check("max-tie", &[arg(&[4], -1.0, 1.0)], None, |g, x| add(g, Op::Binary(BinaryOp::Max), &[x[0], x[0]]));
}

#[test]
fn select_and_compare() {
    check("select", &[arg(&[3, 3], -1.0, 1.0), arg(&[3, 3], -1.0, 1.0)], None, |g, x| {
        let c = add(g, Op::Compare(CompareOp::Gt), &[x[0], x[1]]);
        add(g, Op::Select, &[c, x[0], x[1]])
    });
}

#[test]
fn reductions() {
    for axis in 0..2 {
        check("reduce-sum", &[arg(&[3, 4], -1.0, 1.0)], None, move |g, x| {
            add(g, Op::Reduce { op: ReduceOp::Sum, axis }, &[x[0]])
        });
        check("reduce-max", &[arg(&[3, 4], -1.0, 1.0)], None, move |g, x| {
            add(g, Op::Reduce { op: ReduceOp::Max, axis }, &[x[0]])
        });
    }
}

#[test]
fn matrix_products() {
    for transpose_rhs in [false, true] {
        let w = if transpose_rhs { [5, 3] } else { [3, 5] };
        check("matmul", &[arg(&[4, 3], -1.0, 1.0), arg(&w, -1.0, 1.0)], None, move |g, x| {
            add(g, Op::MatMul { transpose_rhs }, &[x[0], x[1]])
        });
        check("matmul-rank3", &[arg(&[1, 4, 3], -1.0, 1.0), arg(&w, -1.0, 1.0)], None, move |g, x| {
            add(g, Op::MatMul { transpose_rhs }, &[x[0], x[1]])
        });
    }
}

#[test]
fn shape_ops() {
    check("reshape", &[arg(&[2, 6], -1.0, 1.0)], None, |g, x| add(g, Op::Reshape(Shape::fixed(&[3, 4])), &[x[0]]));
    check("broadcast", &[arg(&[3, 1], -1.0, 1.0)], None, |g, x| {
        add(g, Op::Broadcast(Shape::fixed(&[2, 3, 4])), &[x[0]])
    });
    check("transpose", &[arg(&[2, 3, 4], -1.0, 1.0)], None, |g, x| {
        add(g, Op::Transpose([2, 0, 1].into_iter().collect()), &[x[0]])
    });
    check("slice", &[arg(&[5, 3], -1.0, 1.0)], None, |g, x| {
        add(g, Op::Slice { axis: 0, start: Dim::Fixed(1), end: Dim::Fixed(4) }, &[x[0]])
    });
    check("concat", &[arg(&[2, 3], -1.0, 1.0), arg(&[2, 2], -1.0, 1.0)], None, |g, x| {
        add(g, Op::Concat { axis: 1 }, &[x[0], x[1]])
    });
    check("unfold", &[arg(&[3, 6], -1.0, 1.0)], None, |g, x| add(g, Op::Unfold { axis: 1, size: 3 }, &[x[0]]));
}

#[test]
fn gather_accumulates_repeated_rows() {
    check("gather", &[arg(&[5, 3], -1.0, 1.0)], Some(vec![4, 1, 4, 0, 2, 4]), |g, x| add(g, Op::Gather, &[x[0], x[1]]));
}

#[test]
fn next_token_cross_entropy() {
    check("cross-entropy", &[arg(&[8, 7], -2.0, 2.0)], Some(vec![3, 0, 6, 6, 1, 2, 5]), |g, x| {
        // Logits [T, V]: rows of a table picked by the tokens themselves.
        let logits = add(g, Op::Gather, &[x[0], x[1]]);
        kiln_passes::autodiff::next_token_cross_entropy(g, logits, x[1]).unwrap()
    });
}

/// A gated recurrence with two carries, a constant, two sequences and a per-step output:
/// `h' = tanh(a ⊙ h + x_t · u)`, `m' = max(m, h')`, `y_t = h' ⊙ g_t + m'`.
fn recurrence(g: &mut Graph, x: &[Value], reverse_inner: bool) -> Value {
    let mut body = Graph::new("cell");
    let argument = |body: &mut Graph, index: usize, name: &str, shape: &[usize]| {
        body.add_input(
            Param { role: ParamRole::Argument { index }, name: name.into() },
            Type::f32(Shape::fixed(shape)),
            None,
        )
    };
    let h = argument(&mut body, 0, "h", &[3]);
    let m = argument(&mut body, 1, "m", &[3]);
    let xt = argument(&mut body, 2, "x", &[3]);
    let gt = argument(&mut body, 3, "g", &[3]);
    let a = argument(&mut body, 4, "a", &[3]);
    let u = argument(&mut body, 5, "u", &[3]);
    let ah = add(&mut body, Op::Binary(BinaryOp::Mul), &[a, h]);
    let xu = add(&mut body, Op::Binary(BinaryOp::Mul), &[xt, u]);
    let pre = add(&mut body, Op::Binary(BinaryOp::Add), &[ah, xu]);
    let h2 = add(&mut body, Op::Unary(UnaryOp::Tanh), &[pre]);
    let m2 = add(&mut body, Op::Binary(BinaryOp::Max), &[m, h2]);
    let hg = add(&mut body, Op::Binary(BinaryOp::Mul), &[h2, gt]);
    let y = add(&mut body, Op::Binary(BinaryOp::Add), &[hg, m2]);
    body.add_output("h", h2, OutputRole::Result);
    body.add_output("m", m2, OutputRole::Result);
    body.add_output("y", y, OutputRole::Result);
    let scan = Scan { body, carries: 2, sequences: 2, constants: 2, reverse: reverse_inner };
    // operands: h0, m0, xs, gs, a, u
    let id = g.add(Op::Scan(Box::new(scan)), &[x[0], x[1], x[2], x[3], x[4], x[5]], None).unwrap();
    let ys = Value::new(id, 2);
    let h_final = Value::new(id, 0);
    let hb = add(g, Op::Broadcast(Shape::fixed(&[5, 3])), &[h_final]);
    add(g, Op::Binary(BinaryOp::Add), &[ys, hb])
}

#[test]
fn scan_with_carries_sequences_constants_and_outputs() {
    let args = [
        arg(&[3], -0.5, 0.5),    // h0
        arg(&[3], -3.0, -2.0),   // m0 (below every h, so max picks h' at first)
        arg(&[5, 3], -1.0, 1.0), // xs
        arg(&[5, 3], -1.0, 1.0), // gs
        arg(&[3], 0.2, 0.9),     // a
        arg(&[3], -1.0, 1.0),    // u
    ];
    check("scan", &args, None, |g, x| recurrence(g, x, false));
}

#[test]
fn nested_scan() {
    // An outer scan over 2 steps whose body runs the recurrence over its constant sequences.
    let args = [arg(&[3], -0.5, 0.5), arg(&[2, 3], -1.0, 1.0), arg(&[5, 3], -1.0, 1.0)];
    check("nested-scan", &args, None, |g, x| {
        let mut body = Graph::new("outer");
        let h = body.add_input(
            Param { role: ParamRole::Argument { index: 0 }, name: "h".into() },
            Type::f32(Shape::fixed(&[3])),
            None,
        );
        let a = body.add_input(
            Param { role: ParamRole::Argument { index: 1 }, name: "a".into() },
            Type::f32(Shape::fixed(&[3])),
            None,
        );
        let xs = body.add_input(
            Param { role: ParamRole::Argument { index: 2 }, name: "xs".into() },
            Type::f32(Shape::fixed(&[5, 3])),
            None,
        );
        let m0 = body.constant(-3.0, None);
        let m0 = add(&mut body, Op::Broadcast(Shape::fixed(&[3])), &[m0]);
        let sig = add(&mut body, Op::Unary(UnaryOp::Tanh), &[a]);
        let inner = recurrence(&mut body, &[h, m0, xs, xs, sig, a], false);
        let last = add(&mut body, Op::Slice { axis: 0, start: Dim::Fixed(4), end: Dim::Fixed(5) }, &[inner]);
        let last = add(&mut body, Op::Reshape(Shape::fixed(&[3])), &[last]);
        let h2 = add(&mut body, Op::Unary(UnaryOp::Tanh), &[last]);
        body.add_output("h", h2, OutputRole::Result);
        body.add_output("y", last, OutputRole::Result);
        let scan = Scan { body, carries: 1, sequences: 1, constants: 1, reverse: false };
        let id = g.add(Op::Scan(Box::new(scan)), &[x[0], x[1], x[2]], None).unwrap();
        Value::new(id, 1)
    });
}
