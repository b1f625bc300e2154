//! `memory-plan`: chooses an execution order, gives every intermediate value a place in one
//! arena and attaches the result as the graph's [`MemoryPlan`] (see [`kiln_ir::plan`] for what a
//! plan holds and how the interpreter uses it). It runs last: any later change to the graph
//! drops the plan, and without a plan the interpreter runs unplanned.
//!
//! 1. Scan bodies are planned first (each its own plan; the scan's scratch buffer must hold the
//!    body's arena), then the graph itself. A `matmul.fused` node's scratch buffer holds its
//!    product.
//! 2. Three orders are tried: the deterministic topological order (lowest ready id first); a
//!    greedy list schedule that, among the ready nodes, runs the one that frees the most live
//!    bytes net of what it allocates (at `T = 512`), ties going to the topological order; and an
//!    *eager-free* schedule that runs a ready node freeing at least what it allocates when there
//!    is one (the most first) and otherwise follows the topological order. Pure greedy is best on
//!    fused graphs but, on unfused ones, runs every layer's cheap allocations (broadcasts) early
//!    and keeps them live; eager-free never does that. Bytes are counted per *group*: a value
//!    and the reshapes viewing it, freed when the group's last user has run. Each order is
//!    planned in full and the one with the smallest arena at `T = 512` (then `T = 1`) is kept,
//!    the earlier candidate on a tie.
//! 3. Placements, in order: inputs and top-level outputs are external; a reshape views its
//!    operand's buffer (extending its lifetime); a unary, binary or select op with an `f32` result
//!    writes in place over an operand's buffer when every value in that buffer dies at this op,
//!    the operand has the result's type and the buffer holds no scan-body output; anything else
//!    founds a buffer of its padded size, live from its definition to its last use (a body's
//!    outputs to the end).
//! 4. Layout: buffers by decreasing size at `T = 512`, each at the lowest candidate offset (0,
//!    the end of a conflicting buffer, or the coefficient-wise maximum of those ends, which is
//!    always free) that clears every already placed buffer with an overlapping lifetime for all
//!    `T ≥ 1` (compared exactly, [`Count::le_for_all_t`]).
//!
//! Guarantees: deterministic (ordered maps, ties broken by node order); the attached plan passes
//! [`MemoryPlan::validate`]. A graph with a value whose size is not linear in `T` is left
//! unplanned (0 changes), as is every enclosing graph of such a body.

use crate::PassError;
use kiln_ir::plan::{fused_product, value_bytes, Buffer, BufferId, Holds, REFERENCE_T};
use kiln_ir::{Count, DType, Graph, MemoryPlan, NodeId, Op, Placement, Value};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Plans `graph` and its scan bodies; returns how many buffers the plans hold.
pub fn memory_plan(graph: &mut Graph) -> Result<usize, PassError> {
    Ok(plan_graph(graph, false)?.unwrap_or(0))
}

fn fail(message: impl Into<String>) -> PassError {
    PassError::Failed { pass: "memory-plan", message: message.into() }
}

/// Plans the bodies, then `graph`; `None` when some size is not linear in `T`.
fn plan_graph(graph: &mut Graph, body: bool) -> Result<Option<usize>, PassError> {
    let mut planned = 0;
    let scans: Vec<NodeId> = graph.node_ids().filter(|&n| matches!(graph.node(n).op, Op::Scan(_))).collect();
    for n in scans {
        if let Op::Scan(scan) = &mut graph.node_mut(n).op {
            match plan_graph(&mut scan.body, true)? {
                Some(k) => planned += k,
                None => return Ok(None),
            }
        }
    }
    let Some(info) = Info::new(graph, body) else {
        return Ok(None);
    };
    let topo = graph.topo_order().map_err(|_| fail("the graph has a cycle"))?;
    let greedy = schedule(graph, &info, &topo, Strategy::Greedy);
    let eager = schedule(graph, &info, &topo, Strategy::EagerFree);
    let lazy = schedule(graph, &info, &topo, Strategy::Lazy);
    let by_topo = assign(graph, &info, topo);
    let by_greedy = assign(graph, &info, greedy);
    let by_eager = assign(graph, &info, eager);
    let by_lazy = assign(graph, &info, lazy);
    // The cheapest plan; on a tie the earlier candidate (the topological order first).
    let mut best = by_topo;
    for candidate in [by_eager, by_lazy, by_greedy] {
        if cost(&candidate) < cost(&best) {
            best = candidate;
        }
    }
    best.validate(graph).map_err(|e| fail(e.to_string()))?;
    planned += best.buffers.len();
    graph.set_plan(best);
    Ok(Some(planned))
}

/// What ranks two plans of one graph: the arena at the reference `T`, then at `T = 1`.
fn cost(plan: &MemoryPlan) -> (i64, i64) {
    (plan.arena_bytes(REFERENCE_T), plan.arena_bytes(1))
}

/// Facts about the graph that do not depend on the order.
struct Info {
    body: bool,
    /// Padded bytes of every non-input result.
    size: BTreeMap<Value, Count>,
    outputs: BTreeSet<Value>,
    /// The distinct nodes using each value.
    users: BTreeMap<Value, Vec<NodeId>>,
    /// The scratch bytes of each scan node (its body's arena bound).
    scratch: BTreeMap<NodeId, Count>,
}

impl Info {
    fn new(graph: &Graph, body: bool) -> Option<Info> {
        let mut size = BTreeMap::new();
        let mut users: BTreeMap<Value, Vec<NodeId>> = BTreeMap::new();
        let mut scratch = BTreeMap::new();
        for id in graph.node_ids() {
            let node = graph.node(id);
            for (r, ty) in node.results.iter().enumerate() {
                size.insert(Value::new(id, r as u16), value_bytes(ty)?.padded());
            }
            for v in graph.operands(id) {
                let list = users.entry(v).or_default();
                if !list.contains(&id) {
                    list.push(id);
                }
            }
            match &node.op {
                Op::Scan(scan) => {
                    scratch.insert(id, scan.body.plan()?.arena_bound());
                }
                Op::FusedMatMul { .. } => {
                    scratch.insert(id, fused_product(graph, id)?);
                }
                _ => {}
            }
        }
        let outputs = graph.outputs().iter().map(|o| o.value).collect();
        Some(Info { body, size, outputs, users, scratch })
    }

    fn external(&self, graph: &Graph, v: Value) -> bool {
        matches!(graph.node(v.node).op, Op::Input(_)) || (!self.body && self.outputs.contains(&v))
    }

    fn size(&self, v: Value) -> Count {
        self.size.get(&v).copied().unwrap_or(Count::ZERO)
    }
}

/// How [`schedule`] picks among the ready nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    /// The node freeing the most bytes net of what it allocates.
    Greedy,
    /// A node freeing at least what it allocates (the most net first), else the first ready node
    /// of the topological order.
    EagerFree,
    /// Like `EagerFree`, but otherwise the ready node whose first user comes first in the
    /// topological order (values are made when they are needed, not when they can be).
    Lazy,
}

/// A list schedule (see the module documentation).
fn schedule(graph: &Graph, info: &Info, topo: &[NodeId], strategy: Strategy) -> Vec<NodeId> {
    let rank: BTreeMap<NodeId, usize> = topo.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // Groups: a value and the reshapes viewing it, keyed by the root value.
    let mut group: BTreeMap<Value, Value> = BTreeMap::new();
    for &id in topo {
        let node = graph.node(id);
        for r in 0..node.results.len() {
            let v = Value::new(id, r as u16);
            let root = match (&node.op, graph.operands(id).first()) {
                (Op::Reshape(_), Some(u)) if !info.external(graph, v) => group.get(u).copied().unwrap_or(*u),
                _ => v,
            };
            group.insert(v, root);
        }
    }
    let mut group_users: BTreeMap<Value, BTreeSet<NodeId>> = BTreeMap::new();
    let mut pinned: BTreeSet<Value> = BTreeSet::new();
    for (&v, &root) in &group {
        group_users.entry(root).or_default().extend(info.users.get(&v).into_iter().flatten().copied());
        if info.body && info.outputs.contains(&v) {
            pinned.insert(root);
        }
    }
    let mut remaining: BTreeMap<Value, usize> = group_users.iter().map(|(&g, u)| (g, u.len())).collect();
    let in_arena = |root: Value| !info.external(graph, root);
    let score = |id: NodeId, remaining: &BTreeMap<Value, usize>| -> i64 {
        let mut roots: Vec<Value> = graph.operands(id).iter().filter_map(|v| group.get(v).copied()).collect();
        roots.sort_unstable();
        roots.dedup();
        let freed: i64 = roots
            .iter()
            .filter(|&&g| remaining.get(&g) == Some(&1) && in_arena(g) && !pinned.contains(&g))
            .map(|&g| info.size(g).at(REFERENCE_T))
            .sum();
        let allocated: i64 = (0..graph.node(id).results.len())
            .map(|r| Value::new(id, r as u16))
            .filter(|v| group.get(v) == Some(v) && in_arena(*v))
            .filter(|v| group_users.get(v).is_some_and(|u| !u.is_empty()) || pinned.contains(v))
            .map(|v| info.size(v).at(REFERENCE_T))
            .sum();
        freed - allocated
    };

    // The topological position of each node's first user (lazy: run a node when it is needed).
    let needed_at: BTreeMap<NodeId, usize> = topo
        .iter()
        .map(|&n| (n, graph.users(n).iter().filter_map(|u| rank.get(u).copied()).min().unwrap_or(rank[&n])))
        .collect();
    let mut pending: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut ready: Vec<NodeId> = Vec::new();
    for &id in topo {
        let mut producers: Vec<NodeId> = graph.operands(id).iter().map(|v| v.node).collect();
        producers.sort_unstable();
        producers.dedup();
        pending.insert(id, producers.len());
        if producers.is_empty() {
            ready.push(id);
        }
    }
    let mut order = Vec::with_capacity(topo.len());
    while !ready.is_empty() {
        let rank_of = |n: NodeId| rank.get(&n).copied().unwrap_or(usize::MAX);
        let scored = ready.iter().enumerate().map(|(k, &n)| (k, score(n, &remaining), rank_of(n)));
        let pick = match strategy {
            Strategy::Greedy => scored.max_by_key(|&(_, score, rank)| (score, Reverse(rank))),
            Strategy::EagerFree | Strategy::Lazy => {
                let scored: Vec<(usize, i64, usize)> = scored.collect();
                let freeing = scored.iter().copied().filter(|&(_, score, _)| score >= 0);
                let next = |&(k, _, rank): &(usize, i64, usize)| match strategy {
                    Strategy::Lazy => (needed_at.get(&ready[k]).copied().unwrap_or(rank), rank),
                    _ => (rank, rank),
                };
                freeing
                    .max_by_key(|&(_, score, rank)| (score, Reverse(rank)))
                    .or_else(|| scored.iter().copied().min_by_key(next))
            }
        };
        let Some((k, _, _)) = pick else {
            break;
        };
        let id = ready.swap_remove(k);
        order.push(id);
        let mut roots: Vec<Value> = graph.operands(id).iter().filter_map(|v| group.get(v).copied()).collect();
        roots.sort_unstable();
        roots.dedup();
        for g in roots {
            if let Some(r) = remaining.get_mut(&g) {
                *r = r.saturating_sub(1);
            }
        }
        for user in graph.users(id) {
            if let Some(p) = pending.get_mut(&user) {
                *p -= 1;
                if *p == 0 {
                    ready.push(user);
                }
            }
        }
    }
    order
}

/// Places every value for `order` and lays the buffers out.
fn assign(graph: &Graph, info: &Info, order: Vec<NodeId>) -> MemoryPlan {
    let pos: BTreeMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let end = order.len().saturating_sub(1);
    let last_use = |v: Value| -> usize {
        let def = pos.get(&v.node).copied().unwrap_or(0);
        if info.body && info.outputs.contains(&v) {
            return end;
        }
        info.users.get(&v).into_iter().flatten().filter_map(|u| pos.get(u).copied()).fold(def, usize::max)
    };
    let mut plan = MemoryPlan { outputs_in_arena: info.body, ..MemoryPlan::default() };
    let mut pinned: Vec<bool> = Vec::new();
    for (p, &id) in order.iter().enumerate() {
        let node = graph.node(id);
        let operands = graph.operands(id);
        for (r, ty) in node.results.iter().enumerate() {
            let v = Value::new(id, r as u16);
            let last = last_use(v);
            let placement = if info.external(graph, v) {
                Placement::External
            } else if let Op::Reshape(_) = node.op {
                let buffer = operands.first().and_then(|u| plan.placement(*u)).and_then(Placement::buffer);
                Placement::View { buffer }
            } else {
                let in_place =
                    (r == 0 && ty.dtype == DType::F32 && matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Select))
                        .then(|| {
                            operands.iter().enumerate().find_map(|(slot, u)| {
                                let b = plan.placement(*u)?.buffer()?;
                                let buf = plan.buffer(b)?;
                                let fits = buf.last == p
                                    && !pinned[b.0 as usize]
                                    && buf.holds == Holds::Values(DType::F32)
                                    && buf.size == info.size(v)
                                    && graph.value_type(*u) == ty;
                                fits.then_some(Placement::InPlace { buffer: b, slot: slot as u16 })
                            })
                        })
                        .flatten();
                in_place.unwrap_or_else(|| {
                    let b = BufferId(plan.buffers.len() as u32);
                    plan.buffers.push(Buffer {
                        holds: Holds::Values(ty.dtype),
                        size: info.size(v),
                        offset: Count::ZERO,
                        first: p,
                        last: p,
                    });
                    pinned.push(false);
                    Placement::Buffer(b)
                })
            };
            if let Some(b) = placement.buffer() {
                let buf = &mut plan.buffers[b.0 as usize];
                buf.last = buf.last.max(last);
                pinned[b.0 as usize] |= info.body && info.outputs.contains(&v);
            }
            plan.placements.insert(v, placement);
        }
        if let Some(&size) = info.scratch.get(&id) {
            plan.scratch.insert(id, BufferId(plan.buffers.len() as u32));
            plan.buffers.push(Buffer { holds: Holds::Scratch(id), size, offset: Count::ZERO, first: p, last: p });
            pinned.push(false);
        }
    }
    plan.order = order;
    layout(&mut plan.buffers);
    plan
}

/// Assigns offsets (see the module documentation).
fn layout(buffers: &mut [Buffer]) {
    let mut by_size: Vec<usize> = (0..buffers.len()).collect();
    by_size.sort_by_key(|&i| {
        let b = &buffers[i];
        (Reverse(b.size.at(REFERENCE_T)), Reverse(b.size.at(1)), b.first, i)
    });
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    for i in by_size {
        let size = buffers[i].size;
        if size == Count::ZERO {
            continue;
        }
        let conflicts: Vec<(Count, Count)> = placed
            .iter()
            .map(|&j| &buffers[j])
            .filter(|b| b.overlaps_in_time(&buffers[i]))
            .map(|b| (b.offset, b.end()))
            .collect();
        let mut candidates: Vec<Count> = vec![Count::ZERO];
        candidates.extend(conflicts.iter().map(|&(_, e)| e));
        candidates.push(conflicts.iter().map(|&(_, e)| e).fold(Count::ZERO, Count::max_each));
        candidates.sort_by_key(|c| (c.at(REFERENCE_T), c.at(1), c.per_t));
        candidates.dedup();
        let clear = |at: Count| {
            let end = at.plus(size);
            conflicts.iter().all(|&(o, e)| end.le_for_all_t(o) || e.le_for_all_t(at))
        };
        // The last candidate, the maximum of all ends, is always clear.
        let offset = candidates
            .iter()
            .copied()
            .find(|&c| clear(c))
            .unwrap_or_else(|| conflicts.iter().map(|&(_, e)| e).fold(Count::ZERO, Count::max_each));
        buffers[i].offset = offset;
        placed.push(i);
    }
}

#[cfg(test)]
mod tests;
