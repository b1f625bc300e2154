//! Memory plans: where every intermediate value of a graph lives during one call, and in which
//! order the nodes run. The `memory-plan` pass (kiln-passes) builds one; the interpreter executes
//! a planned graph with every intermediate in ONE arena allocation at the planned offsets.
//!
//! What a plan holds:
//! - `order`: the execution order (every node once, a topological order).
//! - a [`Placement`] for every result of every node: `External` (graph inputs, which the caller
//!   owns, and at the top level the graph's outputs: they get their own allocation, which the
//!   kernel writes directly and the caller receives without a copy; the arena never holds the
//!   `[T, V]` logits), `Buffer` (the value founds a buffer), `InPlace` (an elementwise op writes
//!   over the buffer of an operand that dies at it, same dtype and size) or `View` (a reshape:
//!   the operand's bytes under a new shape, no copy).
//! - [`Buffer`]s: size in bytes and offset, both linear in `T` ([`Count`]), and the lifetime
//!   `first..=last` in positions of `order` (the union of the lifetimes of the values it holds).
//!   A scan node also gets a *scratch* buffer, live only at the scan, holding its body's arena,
//!   and so does a `matmul.fused` node, holding the product its epilogue reads. `bool` and `i64`
//!   values live in the arena like `f32` ones, as bytes (1 and 8 per element).
//!
//! Offsets are symbolic (`a·T + b`): the layout is decided once, at compile time, and is valid
//! for every `T ≥ 1`. For linear functions, `f(T) ≤ g(T)` for all `T ≥ 1` exactly when
//! `f(1) ≤ g(1)` and `f`'s slope is at most `g`'s ([`Count::le_for_all_t`]), so non-overlap of
//! two buffers is decided exactly, with no per-`T` work at run time and nothing to cache; a dump
//! shows the real offsets. Sizes are padded to [`ALIGN`] bytes in both coefficients (and a
//! constant below `-slope` is raised so that no size is negative at `T = 1`), so every offset is
//! `ALIGN`-aligned for every `T`. The arena of a call is [`MemoryPlan::arena_bytes`] for its `T`.
//!
//! Scan bodies carry their own plan (set on the body graph): one step's intermediates, laid out in
//! the scan's scratch buffer and reused by every step. A body's outputs live in its arena (the
//! scan copies them into its carries and stacked results after each step), so they stay live to
//! the end of the body. The scratch size is [`MemoryPlan::arena_bound`] of the body: the
//! coefficient-wise maximum of the buffer ends, which bounds the body's arena for every `T ≥ 1`.
//!
//! Guarantees: [`MemoryPlan::validate`] accepts a plan only when it matches its graph (order,
//! placements, in-place and view rules, lifetimes covering every use, alignment, body plans and
//! scratch sizes) and no two buffers that are live at the same position share a byte for any
//! `T ≥ 1`. A graph drops its plan whenever it is changed ([`crate::Graph::plan`]), so a plan
//! never outlives the graph it was made for.

use crate::graph::{Graph, NodeId, Value};
use crate::op::Op;
use crate::types::{packed_row_bytes, Count, DType, QuantScheme, Type};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Alignment of every buffer offset and size, in bytes, for every `T`.
pub const ALIGN: i64 = 64;

/// The sequence length at which plans are compared and chosen.
pub const REFERENCE_T: usize = 512;

/// A buffer of a plan: an index into [`MemoryPlan::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BufferId(pub u32);

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// Values of one dtype: its founder, then in-place results and views.
    Values(DType),
    /// The arena of the body of this scan node, for the duration of the scan.
    Scratch(NodeId),
}

/// A region of the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub holds: Holds,
    /// Bytes, padded to [`ALIGN`].
    pub size: Count,
    /// Bytes from the start of the arena, a multiple of [`ALIGN`] for every `T`.
    pub offset: Count,
    /// First and last position in the order at which the buffer holds a live value.
    pub first: usize,
    pub last: usize,
}

impl Buffer {
    /// One past the buffer's last byte.
    pub fn end(&self) -> Count {
        self.offset.plus(self.size)
    }

    /// Whether the two lifetimes share a position.
    pub fn overlaps_in_time(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where one value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Outside the arena: a graph input, or a top-level graph output.
    External,
    /// Founds this buffer.
    Buffer(BufferId),
    /// Written over `buffer`, which holds operand `slot` of the node (an elementwise op whose
    /// operand dies here).
    InPlace { buffer: BufferId, slot: u16 },
    /// A reshape of operand 0: its bytes, in `buffer` when the operand is in the arena.
    View { buffer: Option<BufferId> },
}

impl Placement {
    pub fn buffer(self) -> Option<BufferId> {
        match self {
            Placement::External | Placement::View { buffer: None } => None,
            Placement::Buffer(b) | Placement::InPlace { buffer: b, .. } | Placement::View { buffer: Some(b) } => {
                Some(b)
            }
        }
    }
}

/// A graph's memory plan; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryPlan {
    pub order: Vec<NodeId>,
    pub placements: BTreeMap<Value, Placement>,
    /// The scratch buffer of every scan node.
    pub scratch: BTreeMap<NodeId, BufferId>,
    pub buffers: Vec<Buffer>,
    /// Scan bodies keep their outputs in the arena; top-level graphs hand them out (`External`).
    pub outputs_in_arena: bool,
}

/// Arithmetic on byte counts `per_t·T + constant`, for memory plans.
impl Count {
    pub const ZERO: Count = Count { per_t: 0, constant: 0 };

    /// The value for a call of `t` tokens.
    pub fn at(self, t: usize) -> i64 {
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        self.per_t.saturating_mul(t).saturating_add(self.constant)
    }

    pub fn plus(self, other: Count) -> Count {
        Count { per_t: self.per_t + other.per_t, constant: self.constant + other.constant }
    }

    pub fn scaled(self, k: i64) -> Count {
        Count { per_t: self.per_t * k, constant: self.constant * k }
    }

    /// The coefficient-wise maximum: at least both for every `T ≥ 0`.
    pub fn max_each(self, other: Count) -> Count {
        Count { per_t: self.per_t.max(other.per_t), constant: self.constant.max(other.constant) }
    }

    /// Whether `self(T) ≤ other(T)` for every `T ≥ 1` (exact: both are linear).
    pub fn le_for_all_t(self, other: Count) -> bool {
        self.per_t <= other.per_t && self.at(1) <= other.at(1)
    }

    /// Both coefficients rounded up to multiples of [`ALIGN`], after raising a constant below
    /// `-per_t` to `-per_t` (so the result is `≥ self` and `≥ 0` for every `T ≥ 1`).
    pub fn padded(self) -> Count {
        let up = |x: i64| (x + ALIGN - 1).div_euclid(ALIGN) * ALIGN;
        Count { per_t: up(self.per_t), constant: up(self.constant.max(-self.per_t)) }
    }

    pub fn is_aligned(self) -> bool {
        self.per_t % ALIGN == 0 && self.constant % ALIGN == 0
    }
}

/// Bytes per element; `None` for a quantized matrix, whose size is not per element (see
/// [`value_bytes`]).
pub fn dtype_bytes(dtype: DType) -> Option<i64> {
    match dtype {
        DType::F32 => Some(4),
        DType::I64 => Some(8),
        DType::Bool => Some(1),
        DType::Quant(_) => None,
    }
}

/// The exact byte size of a value of type `ty`; `None` if it is not linear in `T`. A quantized
/// matrix `[N, K]` (fixed sizes) counts its packed codes, two per byte and each group starting
/// on a byte, and its f16 scales (and minimums) per group.
pub fn value_bytes(ty: &Type) -> Option<Count> {
    match ty.dtype {
        DType::Quant(q) => {
            let [n, k] = ty.shape.dims() else { return None };
            let (n, k, g) = (n.fixed()?, k.fixed()?, (q.group as usize).max(1));
            let per_group = match q.scheme {
                QuantScheme::Q4_0 => 2,
                QuantScheme::Q4_1 => 4,
            };
            let row = packed_row_bytes(k, g).checked_add(k.div_ceil(g).checked_mul(per_group)?)?;
            Some(Count { per_t: 0, constant: i64::try_from(n.checked_mul(row)?).ok()? })
        }
        dtype => ty.shape.count().map(|c| c.scaled(dtype_bytes(dtype).unwrap_or(0))),
    }
}

/// The bytes of every intermediate of `graph` (each value its own allocation, nothing freed, not
/// counting inputs and, at the top level, outputs), plus for each scan one step of its body's
/// intermediates (outputs included); `None` if a size is not linear in `T`.
pub fn intermediate_bytes(graph: &Graph, top_level: bool) -> Option<Count> {
    let outputs: Vec<Value> = graph.outputs().iter().map(|o| o.value).collect();
    let mut total = Count::ZERO;
    for id in graph.node_ids() {
        let node = graph.node(id);
        match &node.op {
            Op::Input(_) => continue,
            Op::Scan(scan) => total = total.plus(intermediate_bytes(&scan.body, false)?),
            _ => {}
        }
        for (r, ty) in node.results.iter().enumerate() {
            if !(top_level && outputs.contains(&Value::new(id, r as u16))) {
                total = total.plus(value_bytes(ty)?);
            }
        }
    }
    Some(total)
}

/// The padded bytes of the product a `matmul.fused` node computes before its epilogue (its
/// scratch buffer); `None` for another node or a size not linear in `T`.
pub fn fused_product(graph: &Graph, id: NodeId) -> Option<Count> {
    let Op::FusedMatMul { transpose_rhs, .. } = graph.node(id).op else {
        return None;
    };
    let operands = graph.operands(id);
    let types: Vec<&Type> = operands.iter().take(2).map(|v| graph.value_type(*v)).collect();
    let product = crate::infer::infer(&Op::MatMul { transpose_rhs }, &types).ok()?;
    Some(value_bytes(product.first()?)?.padded())
}

/// Formats a byte count as `2048+512·T`.
#[derive(Clone, Copy, Debug)]
pub struct Bytes(pub Count);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Count { per_t, constant } = self.0;
        match (per_t, constant) {
            (0, c) => write!(f, "{c}"),
            (p, 0) => write!(f, "{p}·T"),
            (p, c) if c > 0 => write!(f, "{c}+{p}·T"),
            (p, c) => write!(f, "{p}·T-{}", -c),
        }
    }
}

/// Why a plan does not fit its graph.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{}memory plan: {what}", scope.iter().map(|s| format!("in scan %{}: ", s.index())).collect::<String>())]
pub struct PlanError {
    /// The scan nodes leading to the graph whose plan is wrong, outermost first.
    pub scope: Vec<NodeId>,
    pub what: String,
}

impl PlanError {
    fn new(what: impl Into<String>) -> PlanError {
        PlanError { scope: Vec::new(), what: what.into() }
    }

    fn in_scan(mut self, node: NodeId) -> PlanError {
        self.scope.insert(0, node);
        self
    }
}

impl MemoryPlan {
    pub fn placement(&self, v: Value) -> Option<Placement> {
        self.placements.get(&v).copied()
    }

    pub fn buffer(&self, id: BufferId) -> Option<&Buffer> {
        self.buffers.get(id.0 as usize)
    }

    /// Bytes of arena a call of `t` tokens needs: the end of the highest buffer.
    pub fn arena_bytes(&self, t: usize) -> i64 {
        self.buffers.iter().map(|b| b.end().at(t)).max().unwrap_or(0).max(0)
    }

    /// A bound on [`MemoryPlan::arena_bytes`] valid for every `T ≥ 1` (exact when no offset
    /// depends on `T` in another way than the others).
    pub fn arena_bound(&self) -> Count {
        self.buffers.iter().map(Buffer::end).fold(Count::ZERO, Count::max_each)
    }

    /// The most bytes live at one position for `t` tokens: a lower bound for any layout of
    /// this order.
    pub fn live_peak(&self, t: usize) -> i64 {
        let mut delta = vec![0i64; self.order.len() + 1];
        for b in &self.buffers {
            let size = b.size.at(t);
            if let (Some(d0), Some(_)) = (delta.get_mut(b.first), self.order.get(b.last)) {
                *d0 += size;
                delta[b.last + 1] -= size;
            }
        }
        let mut live = 0;
        delta
            .iter()
            .map(|d| {
                live += d;
                live
            })
            .max()
            .unwrap_or(0)
    }

    /// How many values are written in place.
    pub fn in_place_count(&self) -> usize {
        self.placements.values().filter(|p| matches!(p, Placement::InPlace { .. })).count()
    }

    /// The trailing dump comment of node `id` at position `pos`: its step, and for each result
    /// where it lives (`#r` first when there are several), then its scratch buffer, separated
    /// by ` | `.
    pub fn annotation(&self, graph: &Graph, id: NodeId, pos: usize) -> String {
        let node = graph.node(id);
        let mut parts = Vec::new();
        for r in 0..node.results.len() {
            let v = Value::new(id, r as u16);
            let text = match self.placement(v) {
                None => "unplanned".to_string(),
                Some(Placement::External) if matches!(node.op, Op::Input(_)) => continue,
                Some(Placement::External) => "out".to_string(),
                Some(Placement::Buffer(b)) => self.describe(b),
                Some(Placement::InPlace { buffer, slot }) => {
                    format!("{}, inplace over operand {slot}", self.describe(buffer))
                }
                Some(Placement::View { buffer: Some(b) }) => format!("view of buf {b}"),
                Some(Placement::View { buffer: None }) => "view".to_string(),
            };
            parts.push(if node.results.len() > 1 { format!("#{r} {text}") } else { text });
        }
        if let Some(&b) = self.scratch.get(&id) {
            parts.push(format!("scratch {}", self.describe(b)));
        }
        if parts.is_empty() {
            format!("{pos}")
        } else {
            format!("{pos}: {}", parts.join(" | "))
        }
    }

    fn describe(&self, id: BufferId) -> String {
        match self.buffer(id) {
            Some(b) => format!("buf {id} @ {}, {} B, live {}..{}", Bytes(b.offset), Bytes(b.size), b.first, b.last),
            None => format!("buf {id} (missing)"),
        }
    }

    /// One line for the head of a dump.
    pub fn summary(&self) -> String {
        let views = self.placements.values().filter(|p| matches!(p, Placement::View { .. })).count();
        format!(
            "memory plan: {} buffers, in place: {}, views: {}, arena {} B at T = 1, {} B at T = {REFERENCE_T} (at most {} B)",
            self.buffers.len(),
            self.in_place_count(),
            views,
            self.arena_bytes(1),
            self.arena_bytes(REFERENCE_T),
            Bytes(self.arena_bound())
        )
    }

    /// Checks that this plan fits `graph` (a top-level graph when its outputs are handed out, a
    /// scan body when they stay in the arena; scan bodies are checked with their own plans) and
    /// that no two simultaneously live buffers overlap for any `T ≥ 1`.
    pub fn validate(&self, graph: &Graph) -> Result<(), PlanError> {
        self.validate_in(graph, self.outputs_in_arena)
    }

    fn validate_in(&self, graph: &Graph, body: bool) -> Result<(), PlanError> {
        if self.outputs_in_arena != body {
            return Err(PlanError::new(if body {
                "a scan body's plan must keep its outputs in the arena"
            } else {
                "a top-level plan must hand its outputs out"
            }));
        }
        let pos = self.check_order(graph)?;
        let len = self.order.len();
        let outputs: Vec<Value> = graph.outputs().iter().map(|o| o.value).collect();
        // Every value's last use (outputs in the arena are live to the end).
        let mut last_use: BTreeMap<Value, usize> = BTreeMap::new();
        for &id in &self.order {
            for v in graph.operands(id) {
                let e = last_use.entry(v).or_insert(0);
                *e = (*e).max(pos[&id]);
            }
        }
        if body {
            for &v in &outputs {
                last_use.insert(v, len.saturating_sub(1));
            }
        }
        let mut founded = vec![false; self.buffers.len()];
        // Values placed in each buffer so far: (definition, last use, is an output in the arena).
        let mut members: Vec<Vec<(usize, usize, bool)>> = vec![Vec::new(); self.buffers.len()];
        for (p, &id) in self.order.iter().enumerate() {
            let node = graph.node(id);
            let operands = graph.operands(id);
            let at = |what: String| PlanError::new(format!("%{}: {what}", id.index()));
            for (r, ty) in node.results.iter().enumerate() {
                let v = Value::new(id, r as u16);
                let placement = self.placement(v).ok_or_else(|| at(format!("result {r} has no placement")))?;
                let is_output = outputs.contains(&v);
                let external_ok = matches!(node.op, Op::Input(_)) || (!body && is_output);
                if external_ok != (placement == Placement::External) {
                    return Err(at(format!("result {r} is {placement:?}, which is wrong for this value")));
                }
                let Some(b) = placement.buffer() else {
                    if let Placement::View { .. } = placement {
                        self.check_view(graph, id, None)?;
                    }
                    continue;
                };
                let buf = self.buffer(b).ok_or_else(|| at(format!("buffer {b} does not exist")))?;
                let bytes = value_bytes(ty).ok_or_else(|| at("a size is not linear in T".into()))?;
                if buf.holds != Holds::Values(ty.dtype) || !bytes.padded().le_for_all_t(buf.size) {
                    return Err(at(format!("result {r} ({ty}) does not fit buffer {b}")));
                }
                let last = last_use.get(&v).copied().unwrap_or(p);
                if p < buf.first || last > buf.last {
                    return Err(at(format!("buffer {b} is live {}..{}, the value {p}..{last}", buf.first, buf.last)));
                }
                match placement {
                    Placement::Buffer(_) => {
                        if std::mem::replace(&mut founded[b.0 as usize], true) || buf.first != p {
                            return Err(at(format!("buffer {b} is founded twice or not at its first position")));
                        }
                    }
                    Placement::InPlace { slot, .. } => {
                        let legal = matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                            && r == 0
                            && ty.dtype == DType::F32
                            && operands.get(slot as usize).is_some_and(|u| {
                                self.placement(*u).and_then(Placement::buffer) == Some(b) && graph.value_type(*u) == ty
                            });
                        let dead = members[b.0 as usize].iter().all(|&(_, l, out)| l <= p && !out);
                        if !legal || !dead {
                            return Err(at(format!("writing over buffer {b} in place is not legal here")));
                        }
                    }
                    Placement::View { .. } => self.check_view(graph, id, Some(b))?,
                    Placement::External => {}
                }
                members[b.0 as usize].push((p, last, body && is_output));
            }
            let need = match &node.op {
                Op::Scan(scan) => {
                    let body_plan = scan.body.plan().ok_or_else(|| at("the scan body has no plan".into()))?;
                    body_plan.validate_in(&scan.body, true).map_err(|e| e.in_scan(id))?;
                    Some(body_plan.arena_bound())
                }
                Op::FusedMatMul { .. } => {
                    let product =
                        fused_product(graph, id).ok_or_else(|| at("the product has no linear size".into()))?;
                    Some(product)
                }
                _ => None,
            };
            match (need, self.scratch.get(&id)) {
                (None, None) => {}
                (None, Some(_)) => return Err(at("a scratch buffer for a node that needs none".into())),
                (Some(_), None) => return Err(at("the node has no scratch buffer".into())),
                (Some(need), Some(&b)) => {
                    let buf = self.buffer(b).ok_or_else(|| at(format!("buffer {b} does not exist")))?;
                    if buf.holds != Holds::Scratch(id) || buf.first > p || buf.last < p {
                        return Err(at(format!("buffer {b} is not this node's scratch at position {p}")));
                    }
                    if !need.le_for_all_t(buf.size) {
                        return Err(at(format!("scratch buffer {b} is smaller than {} B", Bytes(need))));
                    }
                }
            }
        }
        for (i, buf) in self.buffers.iter().enumerate() {
            let what = |what: &str| PlanError::new(format!("buffer {i}: {what}"));
            if !buf.size.is_aligned() || !buf.offset.is_aligned() {
                return Err(what("offset or size is not aligned"));
            }
            if !Count::ZERO.le_for_all_t(buf.offset) || !Count::ZERO.le_for_all_t(buf.size) {
                return Err(what("offset or size is negative for some T"));
            }
            if buf.first > buf.last || buf.last >= len.max(1) {
                return Err(what("the lifetime is not within the order"));
            }
            if matches!(buf.holds, Holds::Values(_)) && !founded[i] {
                return Err(what("no value founds it"));
            }
        }
        self.check_overlaps()
    }

    /// The order is every node once, each after its operands; returns each node's position.
    fn check_order(&self, graph: &Graph) -> Result<BTreeMap<NodeId, usize>, PlanError> {
        let mut pos = BTreeMap::new();
        for (p, &id) in self.order.iter().enumerate() {
            if !graph.contains(id) || pos.insert(id, p).is_some() {
                return Err(PlanError::new(format!("the order names %{} twice or it does not exist", id.index())));
            }
        }
        if pos.len() != graph.node_count() {
            return Err(PlanError::new("the order misses nodes"));
        }
        for &id in &self.order {
            let here = pos.get(&id).copied().unwrap_or(0);
            if graph.operands(id).iter().any(|u| pos.get(&u.node).is_none_or(|&q| q >= here)) {
                return Err(PlanError::new(format!("%{} runs before one of its operands", id.index())));
            }
        }
        Ok(pos)
    }

    fn check_view(&self, graph: &Graph, id: NodeId, buffer: Option<BufferId>) -> Result<(), PlanError> {
        let operand = graph.operands(id).first().copied();
        let ok = matches!(graph.node(id).op, Op::Reshape(_))
            && operand.is_some_and(|u| self.placement(u).and_then(Placement::buffer) == buffer);
        if ok {
            Ok(())
        } else {
            Err(PlanError::new(format!("%{}: only a reshape is a view, of its operand's buffer", id.index())))
        }
    }

    /// No two buffers live at one position share a byte, for any `T ≥ 1`.
    fn check_overlaps(&self) -> Result<(), PlanError> {
        let mut by_first: Vec<usize> = (0..self.buffers.len()).collect();
        by_first.sort_by_key(|&i| self.buffers[i].first);
        for (k, &i) in by_first.iter().enumerate() {
            let a = &self.buffers[i];
            for &j in &by_first[k + 1..] {
                let b = &self.buffers[j];
                if b.first > a.last {
                    break;
                }
                let empty = a.size == Count::ZERO || b.size == Count::ZERO;
                if !empty && !a.end().le_for_all_t(b.offset) && !b.end().le_for_all_t(a.offset) {
                    return Err(PlanError::new(format!(
                        "buffers {i} and {j} are live together but may overlap ({}..{} and {}..{})",
                        Bytes(a.offset),
                        Bytes(a.end()),
                        Bytes(b.offset),
                        Bytes(b.end())
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_compare_for_every_t_and_pad() {
        let a = Count { per_t: 4, constant: 100 };
        let b = Count { per_t: 8, constant: 96 };
        assert!(a.le_for_all_t(b));
        assert!(!b.le_for_all_t(a));
        assert!(!Count { per_t: 0, constant: 1000 }.le_for_all_t(Count { per_t: 1, constant: 0 }));
        assert_eq!(a.padded(), Count { per_t: 64, constant: 128 });
        assert_eq!(Count { per_t: 3072, constant: -3072 }.padded(), Count { per_t: 3072, constant: -3072 });
        assert_eq!(Count { per_t: 64, constant: -200 }.padded(), Count { per_t: 64, constant: -64 });
        assert_eq!(Bytes(Count { per_t: 512, constant: 2048 }).to_string(), "2048+512·T");
        assert_eq!(Bytes(Count { per_t: 512, constant: -64 }).to_string(), "512·T-64");
        assert_eq!(Bytes(Count { per_t: 0, constant: 64 }).to_string(), "64");
    }
}
