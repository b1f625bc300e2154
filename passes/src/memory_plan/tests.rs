//! Tests of the `memory-plan` pass: lifetimes, in-place legality, layouts valid for every `T`,
//! the peak against the unplanned sum, scan bodies, determinism and the choice of order.

use super::*;
use kiln_ir::plan::ALIGN;
use kiln_ir::{BinaryOp, CompareOp, Dim, OutputRole, Param, ParamRole, ReduceOp, Scan, Shape, Type, UnaryOp};

const TS: [usize; 4] = [1, 2, 7, 512];

fn weight(g: &mut Graph, name: &str, ty: Type) -> Value {
    g.add_input(Param { role: ParamRole::Weight, name: name.into() }, ty, None)
}

fn th(h: usize) -> Type {
    Type::f32(Shape::new([Dim::T, Dim::Fixed(h)]))
}

fn op(g: &mut Graph, op: Op, operands: &[Value]) -> Value {
    g.add1(op, operands, None).unwrap()
}

fn planned(mut g: Graph) -> Graph {
    kiln_ir::verify(&g).unwrap();
    memory_plan(&mut g).unwrap();
    let plan = g.plan().expect("a plan");
    plan.validate(&g).unwrap();
    assert_disjoint(plan, &TS);
    kiln_ir::verify(&g).unwrap();
    g
}

/// At each `t`, buffers live at one position occupy disjoint, aligned byte ranges (a check
/// independent of `validate`, on concrete numbers).
fn assert_disjoint(plan: &MemoryPlan, ts: &[usize]) {
    for &t in ts {
        for (i, a) in plan.buffers.iter().enumerate() {
            let (ao, asz) = (a.offset.at(t), a.size.at(t));
            assert!(ao >= 0 && asz >= 0 && ao % ALIGN == 0 && asz % ALIGN == 0, "buffer {i} at T = {t}");
            for (j, b) in plan.buffers.iter().enumerate().skip(i + 1) {
                let (bo, bsz) = (b.offset.at(t), b.size.at(t));
                if a.overlaps_in_time(b) && asz > 0 && bsz > 0 {
                    assert!(ao + asz <= bo || bo + bsz <= ao, "buffers {i} and {j} share bytes at T = {t}");
                }
            }
        }
        assert!(plan.arena_bytes(t) <= plan.arena_bound().at(t));
        assert!(plan.live_peak(t) <= plan.arena_bytes(t));
    }
}

/// The bytes of every arena value, each in its own buffer (what an unplanned arena would need).
fn unplanned_sum(g: &Graph, t: usize) -> i64 {
    let plan = g.plan().unwrap();
    let mut sum = 0;
    for (v, p) in &plan.placements {
        if p.buffer().is_some() {
            sum += value_bytes(g.value_type(*v)).unwrap().padded().at(t);
        }
    }
    sum + plan.scratch.values().map(|b| plan.buffer(*b).unwrap().size.at(t)).sum::<i64>()
}

/// `x [T, 8]` through an elementwise chain, a matmul and a second chain.
fn chain() -> Graph {
    let mut g = Graph::new("chain");
    let x = weight(&mut g, "x", th(8));
    let w = weight(&mut g, "w", Type::f32(Shape::fixed(&[16, 8])));
    let a = op(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let b = op(&mut g, Op::Unary(UnaryOp::Neg), &[a]);
    let c = op(&mut g, Op::Unary(UnaryOp::Tanh), &[b]);
    let m = op(&mut g, Op::MatMul { transpose_rhs: true }, &[c, w]);
    let d = op(&mut g, Op::Binary(BinaryOp::Mul), &[m, m]);
    let e = op(&mut g, Op::Unary(UnaryOp::Abs), &[d]);
    g.add_output("y", e, OutputRole::Result);
    g
}

#[test]
fn elementwise_chains_run_in_place_and_outputs_stay_outside() {
    let g = planned(chain());
    let plan = g.plan().unwrap();
    let place = |n: usize| plan.placement(Value::new(NodeId::new(n), 0)).unwrap();
    assert_eq!(place(0), Placement::External, "inputs live outside the arena");
    assert!(matches!(place(2), Placement::Buffer(_)), "exp reads an input: a fresh buffer");
    assert_eq!(place(3), Placement::InPlace { buffer: place(2).buffer().unwrap(), slot: 0 });
    assert_eq!(place(4), Placement::InPlace { buffer: place(2).buffer().unwrap(), slot: 0 });
    assert!(matches!(place(5), Placement::Buffer(_)), "a matmul never runs in place");
    assert!(matches!(place(6), Placement::InPlace { slot: 0, .. }), "x * x over its operand");
    assert_eq!(place(7), Placement::External, "the output gets its own allocation");
    assert_eq!(plan.in_place_count(), 3);
    for t in TS {
        assert!(plan.arena_bytes(t) <= unplanned_sum(&g, t), "T = {t}");
    }
}

#[test]
fn in_place_only_where_legal() {
    let mut g = Graph::new("legal");
    let x = weight(&mut g, "x", th(4));
    let a = op(&mut g, Op::Unary(UnaryOp::Exp), &[x]); // %1
    let b = op(&mut g, Op::Unary(UnaryOp::Neg), &[a]); // %2: `a` is used again by %3
    let c = op(&mut g, Op::Binary(BinaryOp::Add), &[a, b]); // %3: both die here
    let k = g.constant(0.5, None); // %4
    let kb = op(&mut g, Op::Broadcast(th(4).shape), &[k]); // %5
    let d = op(&mut g, Op::Compare(CompareOp::Gt), &[c, kb]); // %6: bool result
    let e = op(&mut g, Op::Select, &[d, kb, c]); // %7: `c` dies here, `kb` too
    let r = op(&mut g, Op::Reduce { op: ReduceOp::Sum, axis: 1 }, &[e]); // %8
    let s = op(&mut g, Op::Unary(UnaryOp::Sqrt), &[r]); // %9: [T, 1], not e's size
    g.add_output("y", s, OutputRole::Result);
    g.add_output("e", e, OutputRole::Result);
    let g = planned(g);
    let plan = g.plan().unwrap();
    let place = |v: Value| plan.placement(v).unwrap();
    assert!(matches!(place(b), Placement::Buffer(_)), "`a` is still needed: {:?}", place(b));
    assert!(matches!(place(c), Placement::InPlace { .. }));
    assert!(matches!(place(d), Placement::Buffer(_)), "bool results never reuse f32 buffers");
    assert_eq!(place(e), Placement::External);
    assert!(matches!(place(s), Placement::External));
    let mut g2 = Graph::new("legal2");
    let x = weight(&mut g2, "x", th(4));
    let a = op(&mut g2, Op::Unary(UnaryOp::Exp), &[x]);
    let r = op(&mut g2, Op::Reduce { op: ReduceOp::Max, axis: 1 }, &[a]);
    let rb = op(&mut g2, Op::Broadcast(th(4).shape), &[r]);
    let sel_c = op(&mut g2, Op::Compare(CompareOp::Lt), &[a, rb]);
    let sel = op(&mut g2, Op::Select, &[sel_c, a, rb]);
    let out = op(&mut g2, Op::Unary(UnaryOp::Neg), &[sel]);
    g2.add_output("y", out, OutputRole::Result);
    let g2 = planned(g2);
    let plan = g2.plan().unwrap();
    assert!(matches!(plan.placement(sel).unwrap(), Placement::InPlace { slot: 1, .. }), "over `a`, slot 1");
    assert_eq!(plan.placement(out).unwrap(), Placement::External);
}

/// A scan whose body computes `h' = h * a + x_t`, `y_t = exp(h')`, and reuses `h'` afterwards.
fn scan_graph() -> Graph {
    let mut body = Graph::new("step");
    let h = body.add_input(Param { role: ParamRole::Argument { index: 0 }, name: "h".into() }, th8(), None);
    let xt = body.add_input(Param { role: ParamRole::Argument { index: 1 }, name: "x".into() }, th8(), None);
    let a = body.add_input(Param { role: ParamRole::Argument { index: 2 }, name: "a".into() }, th8(), None);
    let ha = op(&mut body, Op::Binary(BinaryOp::Mul), &[h, a]);
    let h2 = op(&mut body, Op::Binary(BinaryOp::Add), &[ha, xt]);
    let y = op(&mut body, Op::Unary(UnaryOp::Exp), &[h2]);
    let z = op(&mut body, Op::Unary(UnaryOp::Neg), &[h2]); // `h2` is an output: never overwritten
    let y2 = op(&mut body, Op::Binary(BinaryOp::Add), &[y, z]);
    let flat = op(&mut body, Op::Reshape(Shape::fixed(&[2, 4])), &[y2]);
    body.add_output("h", h2, OutputRole::Result);
    body.add_output("y", flat, OutputRole::Result);

    let mut g = Graph::new("scanner");
    let h0 = g.add_input(Param { role: ParamRole::State { init: 0.0 }, name: "h".into() }, th8(), None);
    let xs = weight(&mut g, "xs", th(8));
    let a = weight(&mut g, "a", th8());
    let xe = op(&mut g, Op::Unary(UnaryOp::Exp), &[xs]);
    let scan = Scan { body, carries: 1, sequences: 1, constants: 1, reverse: false };
    let s = g.add(Op::Scan(Box::new(scan)), &[h0, xe, a], None).unwrap();
    let ys = Value::new(s, 1);
    let flat = op(&mut g, Op::Reshape(Shape::new([Dim::T, Dim::Fixed(8)])), &[ys]);
    let out = op(&mut g, Op::Unary(UnaryOp::Tanh), &[flat]);
    g.add_output("y", out, OutputRole::Result);
    g.add_output("h", Value::new(s, 0), OutputRole::State);
    g
}

fn th8() -> Type {
    Type::f32(Shape::fixed(&[8]))
}

#[test]
fn scan_bodies_get_their_own_plan_and_a_scratch_buffer() {
    let g = planned(scan_graph());
    let plan = g.plan().unwrap();
    let scan = NodeId::new(4);
    let Op::Scan(s) = &g.node(scan).op else { panic!() };
    let body = s.body.plan().expect("a body plan");
    assert!(body.outputs_in_arena);
    let h2 = Value::new(NodeId::new(4), 0);
    let z = Value::new(NodeId::new(6), 0);
    assert!(matches!(body.placement(h2).unwrap(), Placement::InPlace { .. }), "h * a + x over h * a");
    assert!(matches!(body.placement(z).unwrap(), Placement::Buffer(_)), "the carry output is never overwritten");
    assert!(matches!(body.placement(Value::new(NodeId::new(8), 0)).unwrap(), Placement::View { buffer: Some(_) }));
    let b = plan.scratch[&scan];
    assert_eq!(plan.buffer(b).unwrap().size, body.arena_bound());
    assert!(body.arena_bound().per_t == 0 && body.arena_bound().constant > 0);
    assert_eq!(plan.placement(Value::new(scan, 0)).unwrap(), Placement::External, "the state output");
    assert!(matches!(plan.placement(Value::new(scan, 1)).unwrap(), Placement::Buffer(_)));
    assert!(matches!(plan.placement(Value::new(NodeId::new(5), 0)).unwrap(), Placement::View { buffer: Some(_) }));
    assert_disjoint(body, &TS);
}

/// Branches with fixed, `T`, `T+k` and `T-k` sizes, concatenated and sliced.
fn mixed() -> Graph {
    let mut g = Graph::new("mixed");
    let x = weight(&mut g, "x", th(6));
    let s = weight(&mut g, "s", Type::f32(Shape::fixed(&[3, 6])));
    let w = weight(&mut g, "w", Type::f32(Shape::fixed(&[6, 6])));
    let cat = op(&mut g, Op::Concat { axis: 0 }, &[s, x]); // [T+3, 6]
    let win = op(&mut g, Op::Unfold { axis: 0, size: 4 }, &[cat]); // [T, 4, 6]
    let red = op(&mut g, Op::Reduce { op: ReduceOp::Sum, axis: 1 }, &[win]); // [T, 1, 6]
    let flat = op(&mut g, Op::Reshape(th(6).shape), &[red]);
    let tail = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(1), end: Dim::Seq(3) }, &[cat]); // [T+2, 6]
    let head = op(&mut g, Op::Slice { axis: 0, start: Dim::Fixed(0), end: Dim::Seq(-1) }, &[x]); // [T-1, 6]
    let e = op(&mut g, Op::Unary(UnaryOp::Exp), &[tail]);
    let m = op(&mut g, Op::MatMul { transpose_rhs: false }, &[flat, w]);
    let wexp = op(&mut g, Op::Unary(UnaryOp::Exp), &[w]);
    let m2 = op(&mut g, Op::MatMul { transpose_rhs: true }, &[m, wexp]);
    let h2 = op(&mut g, Op::Unary(UnaryOp::Neg), &[head]);
    let last = op(&mut g, Op::Slice { axis: 0, start: Dim::Seq(-3), end: Dim::Seq(0) }, &[e]); // [3, 6]
    let both = op(&mut g, Op::Concat { axis: 0 }, &[h2, last]); // [T+2, 6]
    g.add_output("m", m2, OutputRole::Result);
    g.add_output("both", both, OutputRole::Result);
    g
}

#[test]
fn overlapping_lifetimes_never_share_bytes_for_any_t() {
    for g in [chain(), mixed(), scan_graph()] {
        let g = planned(g);
        let plan = g.plan().unwrap();
        assert_disjoint(plan, &[1, 2, 3, 7, 64, 511, 512, 4096]);
        for t in TS {
            assert!(plan.arena_bytes(t) <= unplanned_sum(&g, t), "{}: T = {t}", g.name);
        }
    }
}

#[test]
fn planning_is_deterministic_and_dumps_show_the_plan() {
    let a = planned(mixed());
    let b = planned(mixed());
    assert_eq!(a.plan(), b.plan());
    let text = a.to_string();
    assert_eq!(text, b.to_string());
    assert!(text.contains("; memory plan: "), "{text}");
    assert!(text.contains(": buf "), "{text}");
    assert!(text.contains("view of buf"), "{text}");
    let scan = planned(scan_graph()).to_string();
    assert!(scan.contains("inplace over operand 0"), "{scan}");
    assert!(scan.contains("scratch buf"), "{scan}");
}

#[test]
fn changing_the_graph_drops_the_plan() {
    let mut g = planned(chain());
    assert!(g.plan().is_some());
    let c = g.constant(1.0, None);
    assert!(g.plan().is_none());
    memory_plan(&mut g).unwrap();
    g.remove_node(c.node);
    assert!(g.plan().is_none());
    memory_plan(&mut g).unwrap();
    let _ = g.node_mut(NodeId::new(2));
    assert!(g.plan().is_none());
}

#[test]
fn the_greedy_order_wins_when_it_frees_memory_sooner() {
    // Two branches whose ids interleave: the topological order computes both big values before
    // either reduction, the greedy schedule reduces each big value right after making it.
    let mut g = Graph::new("branches");
    let x = weight(&mut g, "x", th(1024));
    let a = op(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let b = op(&mut g, Op::Unary(UnaryOp::Tanh), &[x]);
    let ra = op(&mut g, Op::Reduce { op: ReduceOp::Sum, axis: 1 }, &[a]);
    let rb = op(&mut g, Op::Reduce { op: ReduceOp::Sum, axis: 1 }, &[b]);
    let s = op(&mut g, Op::Binary(BinaryOp::Add), &[ra, rb]);
    g.add_output("s", s, OutputRole::Result);
    let topo = g.topo_order().unwrap();
    let g = planned(g);
    let plan = g.plan().unwrap();
    assert_ne!(plan.order, topo);
    let big = 1024 * 4 * REFERENCE_T as i64;
    assert!(plan.arena_bytes(REFERENCE_T) < 2 * big, "{}", plan.arena_bytes(REFERENCE_T));
    assert!(plan.arena_bytes(REFERENCE_T) >= big);
}

#[test]
fn values_not_linear_in_t_leave_the_graph_unplanned() {
    let mut g = Graph::new("square");
    let x = weight(&mut g, "x", th(4));
    let xt = op(&mut g, Op::Transpose([1, 0].into_iter().collect()), &[x]);
    let sq = op(&mut g, Op::MatMul { transpose_rhs: false }, &[x, xt]); // [T, T]
    let r = op(&mut g, Op::Reduce { op: ReduceOp::Sum, axis: 1 }, &[sq]);
    g.add_output("r", r, OutputRole::Result);
    assert_eq!(memory_plan(&mut g).unwrap(), 0);
    assert!(g.plan().is_none());
}
