//! The graph: an SSA dataflow graph on petgraph.
//!
//! Nodes are operations; an edge from a producer to a consumer carries which result of the
//! producer feeds which operand slot of the consumer. Node ids come from a `StableGraph`, so
//! removing a node never renumbers the others and dumps stay comparable across passes.
//! Every node records its result types and the spec location it came from.
//!
//! Guarantee: a node added through [`Graph::add`] has operand types that satisfy its op's type
//! rule ([`crate::infer`]); the verifier re-checks this after any transformation. A graph may
//! carry a [`MemoryPlan`]; every method that can change the graph (adding or removing nodes and
//! outputs, `node_mut`, `rewrite`, `replace_all_uses`) drops it, so a plan always describes its graph.

use crate::infer::{infer, TypeError};
use crate::op::{Op, Param};
use crate::plan::MemoryPlan;
use crate::types::Type;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::sync::Arc;

/// Identifies a node within one graph.
pub type NodeId = NodeIndex<u32>;

/// One result of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeId,
    pub result: u16,
}

impl Value {
    pub fn new(node: NodeId, result: u16) -> Value {
        Value { node, result }
    }
}

impl From<NodeId> for Value {
    fn from(node: NodeId) -> Value {
        Value { node, result: 0 }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.result == 0 {
            write!(f, "%{}", self.node.index())
        } else {
            write!(f, "%{}#{}", self.node.index(), self.result)
        }
    }
}

/// Where a node came from in the spec: `file:line:col`, and the prelude function or step it was
/// written in when that is not the model itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
    pub context: Option<Arc<str>>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)?;
        if let Some(c) = &self.context {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// An operation with its result types and origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub results: SmallVec<[Type; 1]>,
    pub origin: Option<Origin>,
}

/// Edge payload: operand slot of the consumer, result index of the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    pub slot: u16,
    pub result: u16,
}

/// A named result of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub value: Value,
    pub role: OutputRole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRole {
    /// An ordinary result such as `logits`, or a scan body's result.
    Result,
    /// The next value of the state input of the same name.
    State,
}

/// A typed SSA graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    graph: StableDiGraph<Node, Use>,
    inputs: Vec<NodeId>,
    outputs: Vec<Output>,
    plan: Option<Box<MemoryPlan>>,
    /// The spec's `quantize = true | false` on weights, by tensor name: directions for the
    /// quantize pass, not semantics (dumps and equality ignore them).
    quantize_hints: BTreeMap<String, bool>,
}

impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds an input of a declared type.
    pub fn add_input(&mut self, param: Param, ty: Type, origin: Option<Origin>) -> Value {
        self.plan = None;
        let id = self.graph.add_node(Node { op: Op::Input(param), results: [ty].into_iter().collect(), origin });
        self.inputs.push(id);
        id.into()
    }

    /// Records the spec's direction to quantize the weight `name` (`true`) or keep it in f32.
    pub fn set_quantize_hint(&mut self, name: &str, quantize: bool) {
        self.quantize_hints.insert(name.to_string(), quantize);
    }

    /// The spec's direction for the weight `name`, if it gave one.
    pub fn quantize_hint(&self, name: &str) -> Option<bool> {
        self.quantize_hints.get(name).copied()
    }

    /// Every direction the spec gave, by tensor name.
    pub fn quantize_hints(&self) -> impl Iterator<Item = (&str, bool)> {
        self.quantize_hints.iter().map(|(n, &q)| (n.as_str(), q))
    }

    /// Adds a scalar constant.
    pub fn constant(&mut self, value: f32, origin: Option<Origin>) -> Value {
        self.plan = None;
        let ty = Type::f32(crate::types::Shape::scalar());
        self.graph.add_node(Node { op: Op::Constant(value), results: [ty].into_iter().collect(), origin }).into()
    }

    /// Adds a node after checking its operands against the op's type rule.
    pub fn add(&mut self, op: Op, operands: &[Value], origin: Option<Origin>) -> Result<NodeId, TypeError> {
        let results = {
            let types: SmallVec<[&Type; 4]> = operands.iter().map(|v| self.value_type(*v)).collect();
            infer(&op, &types)?
        };
        Ok(self.add_unchecked(Node { op, results, origin }, operands))
    }

    /// Adds a single-result node; see [`Graph::add`].
    pub fn add1(&mut self, op: Op, operands: &[Value], origin: Option<Origin>) -> Result<Value, TypeError> {
        self.add(op, operands, origin).map(Value::from)
    }

    /// Adds a node whose result types the caller vouches for (passes that rebuild nodes);
    /// the verifier catches a wrong claim.
    pub fn add_unchecked(&mut self, node: Node, operands: &[Value]) -> NodeId {
        self.plan = None;
        let id = self.graph.add_node(node);
        for (slot, v) in operands.iter().enumerate() {
            self.graph.add_edge(v.node, id, Use { slot: slot as u16, result: v.result });
        }
        id
    }

    pub fn add_output(&mut self, name: impl Into<String>, value: Value, role: OutputRole) {
        self.plan = None;
        self.outputs.push(Output { name: name.into(), value, role });
    }

    /// Keeps only the outputs `keep` accepts (their values stay in the graph until dead-code
    /// removes what nothing needs any more).
    pub fn retain_outputs(&mut self, keep: impl FnMut(&Output) -> bool) {
        self.plan = None;
        self.outputs.retain(keep);
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.graph[id]
    }

    /// Mutable access to a node; drops the memory plan.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.plan = None;
        &mut self.graph[id]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.graph.contains_node(id)
    }

    /// The type of one result. Panics on a value of another graph: values are only ever made by
    /// this graph's own builders.
    pub fn value_type(&self, v: Value) -> &Type {
        &self.graph[v.node].results[v.result as usize]
    }

    /// Operands of a node in slot order.
    pub fn operands(&self, id: NodeId) -> SmallVec<[Value; 4]> {
        let mut uses: SmallVec<[(u16, Value); 4]> = self
            .graph
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().slot, Value::new(e.source(), e.weight().result)))
            .collect();
        uses.sort_unstable_by_key(|(slot, _)| *slot);
        uses.into_iter().map(|(_, v)| v).collect()
    }

    /// Nodes that use any result of `id`, each once, in id order.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self.graph.neighbors_directed(id, Direction::Outgoing).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The input node standing for `param`'s role and name, if any.
    pub fn param(&self, id: NodeId) -> Option<&Param> {
        match &self.graph[id].op {
            Op::Input(p) => Some(p),
            _ => None,
        }
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.node_indices()
    }

    /// Removes a node and its edges. The caller makes sure nothing still uses it.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.plan = None;
        self.inputs.retain(|&i| i != id);
        self.graph.remove_node(id)
    }

    /// Turns node `id` into `op` over `operands` in place, keeping its id, result types and
    /// origin (passes that rewrite a node into an equivalent one, so dumps before and after
    /// line up). The caller vouches that the result types still hold; the verifier catches a
    /// wrong claim. The old operands lose this use and may become dead.
    pub fn rewrite(&mut self, id: NodeId, op: Op, operands: &[Value]) {
        self.plan = None;
        let incoming: Vec<_> = self.graph.edges_directed(id, Direction::Incoming).map(|e| e.id()).collect();
        for edge in incoming {
            self.graph.remove_edge(edge);
        }
        self.graph[id].op = op;
        for (slot, v) in operands.iter().enumerate() {
            self.graph.add_edge(v.node, id, Use { slot: slot as u16, result: v.result });
        }
    }

    /// Redirects every use of `from` (and graph outputs naming it) to `to`.
    pub fn replace_all_uses(&mut self, from: Value, to: Value) {
        self.plan = None;
        let uses: Vec<_> = self
            .graph
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().result == from.result)
            .map(|e| (e.id(), e.target(), e.weight().slot))
            .collect();
        for (edge, target, slot) in uses {
            self.graph.remove_edge(edge);
            self.graph.add_edge(to.node, target, Use { slot, result: to.result });
        }
        for o in &mut self.outputs {
            if o.value == from {
                o.value = to;
            }
        }
    }

    /// Nodes in a deterministic topological order: among the nodes whose operands are ready,
    /// the lowest id comes first. Returns the nodes on a cycle as the error.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, Vec<NodeId>> {
        let mut pending: Vec<usize> = vec![0; self.graph.node_bound()];
        let mut ready = BinaryHeap::new();
        for id in self.graph.node_indices() {
            let n = self.graph.edges_directed(id, Direction::Incoming).count();
            pending[id.index()] = n;
            if n == 0 {
                ready.push(Reverse(id));
            }
        }
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for e in self.graph.edges_directed(id, Direction::Outgoing) {
                let t = e.target();
                pending[t.index()] -= 1;
                if pending[t.index()] == 0 {
                    ready.push(Reverse(t));
                }
            }
        }
        if order.len() == self.graph.node_count() {
            Ok(order)
        } else {
            Err(self.graph.node_indices().filter(|id| pending[id.index()] > 0).collect())
        }
    }

    /// The memory plan, if the `memory-plan` pass made one and nothing changed the graph since.
    pub fn plan(&self) -> Option<&MemoryPlan> {
        self.plan.as_deref()
    }

    /// Attaches a memory plan (made for this graph as it is now).
    pub fn set_plan(&mut self, plan: MemoryPlan) {
        self.plan = Some(Box::new(plan));
    }

    /// Detaches the memory plan: the graph then runs unplanned.
    pub fn take_plan(&mut self) -> Option<MemoryPlan> {
        self.plan.take().map(|p| *p)
    }

    /// The underlying petgraph graph, for algorithms and Graphviz export.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Use> {
        &self.graph
    }
}
