//! `fuse-elementwise`: chains of elementwise ops, last-axis reductions and the broadcasts
//! between them become single [`Kernel`]s.
//!
//! Grouping walks the graph in topological order. A node joins the group of one of its operands
//! when it fits that group's iteration space `S = [rows.., cols]` (its result is `S`, or `S`
//! with the last axis reduced to 1, a *row* value), and when none of its other operands depends
//! on the group (otherwise the fused node would feed itself). Broadcasts are looked through: a
//! kernel reads what they broadcast (a `[H]` weight, a scalar constant, a row value of its own)
//! at the level it needs, so they are never materialized, and die once every user is fused. This recovers layer norm, RMS norm, sigmoid/silu/softplus chains, token-shift
//! mixes and whole scan bodies (the pass recurses into them) as single kernels.
//!
//! Guarantee: every group computes what its members computed, in the same order per element
//! (see [`kiln_ir::kernel`]); a group that cannot be expressed is left as it was.

use crate::PassError;
use kiln_ir::{Dim, Graph, Instr, Kernel, KernelOutput, Level, NodeId, Op, ReduceOp, Shape, Value};
use std::collections::BTreeMap;

/// A group under construction.
struct Group {
    /// The vector shape `[rows.., cols]`.
    shape: Shape,
    members: Vec<NodeId>,
    /// Topological position of the first member (dependency searches stop before it).
    first: usize,
}

fn row_shape(s: &Shape) -> Shape {
    let mut r = s.clone();
    if let Some(last) = r.0.last_mut() {
        *last = Dim::Fixed(1);
    }
    r
}

/// `s` without its last axis: a row value written without the trailing 1.
fn rows_of(s: &Shape) -> Shape {
    Shape::new(s.dims()[..s.rank().saturating_sub(1)].iter().copied())
}

/// The level of a value of `shape` in a group of vector shape `s`, if it has one. A row value
/// may have the shape `[rows.., 1]` or `[rows..]`.
fn level_in(shape: &Shape, s: &Shape) -> Option<Level> {
    if shape == s {
        Some(Level::Vector)
    } else if *shape == row_shape(s) || (s.rank() > 1 && *shape == rows_of(s)) {
        Some(Level::Row)
    } else {
        None
    }
}

/// Whether a reshape only adds or removes axes of size 1 (a squeeze or unsqueeze).
fn is_squeeze(from: &Shape, to: &Shape) -> bool {
    let strip = |s: &Shape| s.dims().iter().copied().filter(|d| *d != Dim::Fixed(1)).collect::<Vec<_>>();
    strip(from) == strip(to)
}

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select)
}

/// Fuses `graph` and its scan bodies; returns how many kernels were formed.
pub fn fuse_elementwise(graph: &mut Graph) -> Result<usize, PassError> {
    fuse(graph, false)
}

/// In a scan body (`body`), groups of one space also merge when they never meet: a step should
/// be one kernel.
fn fuse(graph: &mut Graph, body: bool) -> Result<usize, PassError> {
    let mut made = 0;
    let scans: Vec<NodeId> = graph.node_ids().filter(|&n| matches!(graph.node(n).op, Op::Scan(_))).collect();
    for n in scans {
        if let Op::Scan(scan) = &mut graph.node_mut(n).op {
            made += fuse(&mut scan.body, true)?;
        }
    }
    let order = graph
        .topo_order()
        .map_err(|_| PassError::Failed { pass: "fuse-elementwise", message: "the graph has a cycle".into() })?;
    let mut position = vec![usize::MAX; order.iter().map(|n| n.index() + 1).max().unwrap_or(0)];
    for (i, n) in order.iter().enumerate() {
        position[n.index()] = i;
    }
    let mut group_of: Vec<Option<usize>> = vec![None; position.len()];
    let mut groups: Vec<Group> = Vec::new();
    for (pos, &n) in order.iter().enumerate() {
        let node = graph.node(n);
        let result = &node.results[0].shape;
        let fusible = match &node.op {
            op if is_elementwise(op) => result.rank() > 0,
            Op::Reduce { axis, .. } => *axis + 1 == result.rank(),
            _ => false,
        };
        if !fusible {
            continue;
        }
        // Operands are seen through the views (broadcasts, squeezes) a kernel can read through.
        let operands = graph.operands(n);
        let joinable = |g: usize| -> bool {
            let s = &groups[g].shape;
            let fits = match &node.op {
                Op::Reduce { .. } => graph.value_type(operands[0]).shape == *s,
                _ => level_in(result, s).is_some(),
            };
            fits && operands
                .iter()
                .map(|&v| root_in(graph, v, s))
                .filter(|v| group_of[v.node.index()] != Some(g))
                .all(|v| !depends_on(graph, v.node, g, &group_of, &position, groups[g].first))
        };
        let mut candidates: Vec<usize> = operands
            .iter()
            .filter_map(|&v| {
                let root = chain_root(graph, v);
                group_of[root.node.index()].filter(|&g| root_in(graph, v, &groups[g].shape) == root)
            })
            .filter(|&g| joinable(g))
            .collect();
        candidates.dedup();
        match candidates.first().copied() {
            Some(g) => {
                // Sibling groups of the same space that meet here merge (horizontal fusion), when
                // no path leaves one and re-enters the other.
                for &other in &candidates[1..] {
                    if other != g
                        && fits_into(graph, &groups[other], &groups[g].shape)
                        && mergeable(graph, &groups, g, other, &group_of, &position)
                    {
                        let moved = std::mem::take(&mut groups[other].members);
                        for &m in &moved {
                            group_of[m.index()] = Some(g);
                        }
                        groups[g].first = groups[g].first.min(groups[other].first);
                        groups[g].members.extend(moved);
                    }
                }
                groups[g].members.push(n);
                group_of[n.index()] = Some(g);
            }
            None => {
                let shape = match &node.op {
                    Op::Reduce { .. } => graph.value_type(operands[0]).shape.clone(),
                    _ => result.clone(),
                };
                group_of[n.index()] = Some(groups.len());
                groups.push(Group { shape, members: vec![n], first: pos });
            }
        }
    }
    if body {
        for a in 0..groups.len() {
            for b in a + 1..groups.len() {
                let same = !groups[a].members.is_empty() && fits_into(graph, &groups[b], &groups[a].shape);
                if same && !groups[b].members.is_empty() && mergeable(graph, &groups, a, b, &group_of, &position) {
                    let moved = std::mem::take(&mut groups[b].members);
                    for &m in &moved {
                        group_of[m.index()] = Some(a);
                    }
                    groups[a].first = groups[a].first.min(groups[b].first);
                    groups[a].members.extend(moved);
                }
            }
        }
    }
    for mut group in groups {
        group.members.sort_by_key(|m| position[m.index()]);
        // A lone op gains nothing from becoming a kernel unless it absorbs a broadcast.
        let absorbs = group
            .members
            .iter()
            .any(|&m| graph.operands(m).iter().any(|v| matches!(graph.node(v.node).op, Op::Broadcast(_))));
        if group.members.len() < 2 && !absorbs {
            continue;
        }
        if let Some(built) = build(graph, &group) {
            replace(graph, &group, built);
            made += 1;
        }
    }
    Ok(made)
}

/// Whether every value of `group` has a level in the space `s` (the same space, or a group of
/// row values of `s` without reductions).
fn fits_into(graph: &Graph, group: &Group, s: &Shape) -> bool {
    group.shape == *s
        || (level_in(&group.shape, s) == Some(Level::Row)
            && group.members.iter().all(|&m| {
                !matches!(graph.node(m).op, Op::Reduce { .. }) && level_in(&graph.node(m).results[0].shape, s).is_some()
            }))
}

/// Whether groups `a` and `b` can become one: no operand from outside both depends on the other.
fn mergeable(
    graph: &Graph,
    groups: &[Group],
    a: usize,
    b: usize,
    group_of: &[Option<usize>],
    position: &[usize],
) -> bool {
    let outside = |v: &Value| !matches!(group_of[v.node.index()], Some(g) if g == a || g == b);
    let clean = |from: usize, to: usize| {
        groups[from].members.iter().all(|&m| {
            let s = &groups[from].shape;
            graph
                .operands(m)
                .iter()
                .map(|&v| root_in(graph, v, s))
                .filter(outside)
                .all(|v| !depends_on(graph, v.node, to, group_of, position, groups[to].first))
        })
    };
    clean(a, b) && clean(b, a)
}

/// One step back through a view: the operand of a broadcast or of a squeeze/unsqueeze.
fn view_operand(graph: &Graph, v: Value) -> Option<Value> {
    match &graph.node(v.node).op {
        Op::Broadcast(_) => Some(graph.operands(v.node)[0]),
        Op::Reshape(to) => {
            let x = graph.operands(v.node)[0];
            is_squeeze(&graph.value_type(x).shape, to).then_some(x)
        }
        _ => None,
    }
}

/// Where a chain of views ending at `v` starts (ignoring whether a kernel could follow it).
fn chain_root(graph: &Graph, mut v: Value) -> Value {
    while let Some(x) = view_operand(graph, v) {
        v = x;
    }
    v
}

/// The value a kernel over space `s` can read in place of `v`: `v` itself, or the start of the
/// chain of views ending at `v` as far as every step keeps its meaning in `s`. A broadcast step
/// is followed only from `[rows.., 1]` (a row value, broadcast along the row) or from `s` itself,
/// since numpy aligns any other shape with the last axes; a squeeze step only between the two
/// spellings of a row value, `[rows.., 1]` and `[rows..]`.
fn root_in(graph: &Graph, mut v: Value, s: &Shape) -> Value {
    while let Some(x) = view_operand(graph, v) {
        let (from, to) = (&graph.value_type(x).shape, &graph.value_type(v).shape);
        let ok = match graph.node(v.node).op {
            Op::Broadcast(_) => *from == row_shape(s) || from == s,
            _ => from == to || (level_in(from, s) == Some(Level::Row) && level_in(to, s) == Some(Level::Row)),
        };
        if !ok {
            break;
        }
        v = x;
    }
    v
}

/// Where a kernel reads an operand `v` from, and as what shape: through broadcasts (read
/// broadcast) and reshapes (a reshape is a view of the same elements), but not through a
/// reshape of a broadcast, which is not a view of anything.
fn source(graph: &Graph, mut v: Value) -> (Value, Shape) {
    let mut read = graph.value_type(v).shape.clone();
    let mut reshaped = false;
    loop {
        match graph.node(v.node).op {
            Op::Broadcast(_) if !reshaped => {
                v = graph.operands(v.node)[0];
                read = graph.value_type(v).shape.clone();
            }
            Op::Reshape(_) if graph.value_type(v).dtype == kiln_ir::DType::F32 => {
                v = graph.operands(v.node)[0];
                reshaped = true;
            }
            _ => return (v, read),
        }
    }
}

/// Whether `from` depends (through operands) on a member of group `g`, looking only at nodes
/// at or after the group's first member.
fn depends_on(
    graph: &Graph,
    from: NodeId,
    g: usize,
    group_of: &[Option<usize>],
    position: &[usize],
    first: usize,
) -> bool {
    let mut stack = vec![from];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(n) = stack.pop() {
        if position[n.index()] < first || !seen.insert(n) {
            continue;
        }
        if group_of[n.index()] == Some(g) {
            return true;
        }
        stack.extend(graph.operands(n).iter().map(|v| v.node));
    }
    false
}

/// The kernel for a group, the fused node's operands and the member values it returns.
/// A group's kernel, the fused node's operands, and which member each result replaces.
struct Built {
    kernel: Kernel,
    inputs: Vec<Value>,
    outputs: Vec<(Value, KernelOutput)>,
}

fn build(graph: &Graph, group: &Group) -> Option<Built> {
    let s = &group.shape;
    let members: std::collections::BTreeSet<NodeId> = group.members.iter().copied().collect();
    let mut body: Vec<Instr> = Vec::new();
    let mut inputs: Vec<(Value, Shape)> = Vec::new();
    let mut input_instr: BTreeMap<(Value, Level, Shape), u16> = BTreeMap::new();
    // Constants by bit pattern: one instruction each.
    let mut constants: BTreeMap<u32, u16> = BTreeMap::new();
    // Member → (instruction holding its value, the level it has in the graph).
    let mut value_of: BTreeMap<NodeId, (u16, Level)> = BTreeMap::new();
    let push = |body: &mut Vec<Instr>, i: Instr| -> Option<u16> {
        body.push(i);
        u16::try_from(body.len() - 1).ok()
    };
    for &m in &group.members {
        let node = graph.node(m);
        let level = level_in(&node.results[0].shape, s)?;
        let short_row = level == Level::Row && node.results[0].shape != row_shape(s);
        let ops = graph.operands(m);
        let mut arg = |body: &mut Vec<Instr>, v: Value, at: Level| -> Option<u16> {
            // A broadcast operand is read at `at` from what it broadcasts; the numpy rule that
            // made the broadcast valid makes the read valid.
            let member = root_in(graph, v, s);
            if let Some(&(i, _)) = value_of.get(&member.node).filter(|_| members.contains(&member.node)) {
                return Some(i);
            }
            let (v, mut read) = source(graph, v);
            if short_row {
                // The member is a row value spelled `[rows..]`: its operands broadcast (numpy)
                // against `[rows..]`, so against `[rows.., 1]` they need a trailing 1.
                read.0.push(Dim::Fixed(1));
            }
            if let Op::Constant(c) = graph.node(v.node).op {
                if let Some(&i) = constants.get(&c.to_bits()) {
                    return Some(i);
                }
                let i = push(body, Instr::Const(c))?;
                constants.insert(c.to_bits(), i);
                return Some(i);
            }
            let key = (v, at, read.clone());
            if let Some(&i) = input_instr.get(&key) {
                return Some(i);
            }
            let k = match inputs.iter().position(|(x, r)| *x == v && *r == read) {
                Some(k) => k,
                None => {
                    inputs.push((v, read));
                    inputs.len() - 1
                }
            };
            let i = push(body, Instr::Input(u16::try_from(k).ok()?, at))?;
            input_instr.insert(key, i);
            Some(i)
        };
        let instr = match &node.op {
            Op::Reduce { op, .. } => {
                let a = arg(&mut body, ops[0], Level::Vector)?;
                if value_of.get(&ops[0].node).is_some_and(|&(i, _)| kernel_level(&body, i) == Some(Level::Row)) {
                    return None;
                }
                let op: ReduceOp = *op;
                push(&mut body, Instr::Reduce(op, a))?
            }
            op => {
                let mut a = Vec::with_capacity(ops.len());
                for v in &ops {
                    a.push(arg(&mut body, *v, level)?);
                }
                let i = match (op, a.as_slice()) {
                    (Op::Unary(u), [x]) => Instr::Unary(*u, *x),
                    (Op::Binary(b), [x, y]) => Instr::Binary(*b, *x, *y),
                    (Op::Compare(c), [x, y]) => Instr::Compare(*c, *x, *y),
                    (Op::Select, [c, x, y]) => Instr::Select(*c, *x, *y),
                    _ => return None,
                };
                push(&mut body, i)?
            }
        };
        value_of.insert(m, (instr, level));
    }
    // Members whose values are needed outside the group become results.
    let graph_outputs: std::collections::BTreeSet<Value> = graph.outputs().iter().map(|o| o.value).collect();
    let mut outputs = Vec::new();
    for &m in &group.members {
        let escapes = escapes(graph, m, &members, &graph_outputs);
        if escapes {
            let (instr, level) = value_of[&m];
            outputs.push((Value::from(m), KernelOutput { instr, level }));
        }
    }
    let reads = inputs.iter().map(|(_, r)| r.clone()).collect();
    let kernel = Kernel { shape: s.clone(), reads, body, outputs: outputs.iter().map(|(_, o)| *o).collect() };
    Some(Built { kernel, inputs: inputs.into_iter().map(|(v, _)| v).collect(), outputs })
}

/// Whether a member's value is needed outside its group: by a non-member, or a graph output,
/// looking through the views (broadcasts, squeezes) that die once their users are fused.
fn escapes(
    graph: &Graph,
    m: NodeId,
    members: &std::collections::BTreeSet<NodeId>,
    outputs: &std::collections::BTreeSet<Value>,
) -> bool {
    let mut stack = vec![m];
    while let Some(n) = stack.pop() {
        if outputs.contains(&Value::from(n)) {
            return true;
        }
        for u in graph.users(n) {
            if members.contains(&u) {
                continue;
            }
            if view_operand(graph, Value::from(u)).is_none() {
                return true;
            }
            stack.push(u);
        }
    }
    false
}

/// The natural level of instruction `i` (without operand checks).
fn kernel_level(body: &[Instr], i: u16) -> Option<Level> {
    let probe = Kernel { shape: Shape::fixed(&[1]), reads: Vec::new(), body: body.to_vec(), outputs: Vec::new() };
    probe.instr_types().ok().and_then(|t| t.get(i as usize).map(|t| t.level))
}

/// Puts the fused node in place of the group's members.
fn replace(graph: &mut Graph, group: &Group, Built { kernel, inputs, outputs }: Built) {
    let origin = group.members.last().and_then(|&m| graph.node(m).origin.clone());
    let Ok(fused) = graph.add(Op::Fused(Box::new(kernel)), &inputs, origin) else {
        return;
    };
    for (k, (v, _)) in outputs.iter().enumerate() {
        let mut result = Value::new(fused, k as u16);
        let want = graph.value_type(*v).shape.clone();
        if graph.value_type(result).shape != want {
            // A row value the graph holds as `[rows..]`: the kernel writes `[rows.., 1]`.
            let origin = graph.node(v.node).origin.clone();
            match graph.add1(Op::Reshape(want), &[result], origin) {
                Ok(r) => result = r,
                Err(_) => return,
            }
        }
        graph.replace_all_uses(*v, result);
    }
    // Views of members (broadcasts, squeezes) that only members read die with them.
    let mut views = Vec::new();
    let mut stack: Vec<NodeId> = group.members.clone();
    while let Some(n) = stack.pop() {
        for u in graph.users(n) {
            if !group.members.contains(&u) && view_operand(graph, Value::from(u)).is_some() && !views.contains(&u) {
                views.push(u);
                stack.push(u);
            }
        }
    }
    for &m in group.members.iter().rev() {
        graph.remove_node(m);
    }
    let outputs: Vec<NodeId> = graph.outputs().iter().map(|o| o.value.node).collect();
    loop {
        let dead: Vec<NodeId> = views
            .iter()
            .copied()
            .filter(|&v| graph.contains(v) && graph.users(v).is_empty() && !outputs.contains(&v))
            .collect();
        if dead.is_empty() {
            break;
        }
        for v in dead {
            graph.remove_node(v);
        }
    }
}
