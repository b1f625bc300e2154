//! Execution plans: everything about running a graph that does not depend on the inputs,
//! derived once per graph (and once per scan body, not once per step).
//!
//! A plan lists the nodes in the graph's deterministic topological order with their operands in
//! slot order, which input slot each input node binds, the plan of every scan body, and for each
//! step the values whose last use it is, so the evaluator can free intermediates as early as
//! possible. Graph outputs are never freed.
//!
//! When the graph is run with its memory plan ([`kiln_ir::MemoryPlan`], already validated by the
//! interpreter) the steps follow the memory plan's order instead, each step records where its
//! results live and its scratch buffer, and the plan holds every buffer's offset and size; the
//! free lists are then unused (the arena is the only storage). Scan bodies of a planned graph
//! are planned too: a planned graph runs planned all the way down.
//!
//! Guarantees: building a plan rejects, with an error naming the node, everything structural
//! that would otherwise make evaluation fail or panic: cycles, operands naming results that do
//! not exist, outputs naming values that do not exist, input nodes that bind no slot or the same
//! slot twice, and scan bodies whose argument count disagrees with the scan.

use super::matmul::Products;
use crate::error::{ExecError, Location, NodeErrorKind, Scope};
use crate::jit::scan::RowScan;
use kiln_ir::plan::BufferId;
use kiln_ir::{Count, Graph, NodeId, Op, ParamRole, Placement, Value};
use petgraph::visit::NodeIndexable;
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};

/// How a graph's input nodes are bound to the values passed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The top level: the `i`-th entry of `graph.inputs()` binds slot `i`.
    Positional,
    /// A scan body: each input is an `Argument { index }` and binds slot `index`.
    Arguments,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    /// One past the largest node index of the graph (the size of the evaluator's value table).
    pub node_bound: usize,
    /// The graph's outputs in order.
    pub outputs: Vec<Value>,
    /// The number of values the graph binds (its inputs).
    pub slots: usize,
    /// With a memory plan: every buffer's offset and size in bytes.
    pub arena: Option<Vec<(Count, Count)>>,
    /// A scan body that is one compiled kernel: how to run the whole scan by blocks of rows.
    pub rows: Option<RowScan>,
}

#[derive(Debug)]
pub(crate) struct Step {
    pub node: NodeId,
    pub operands: SmallVec<[Value; 4]>,
    /// Values to free once this step has run: their last use is here (or they are never used).
    pub free: SmallVec<[Value; 2]>,
    pub kind: StepKind,
    /// With a memory plan: where each result lives, and the step's scratch buffer.
    pub place: SmallVec<[Placement; 1]>,
    pub scratch: Option<BufferId>,
    /// The JIT-compiled code of this step's kernel (`fused`, or a `matmul.fused` epilogue).
    pub native: Option<crate::jit::CompiledKernel>,
    /// The code computing this step's matrix product (`matmul`, `matmul.fused`).
    pub products: Products,
}

#[derive(Debug)]
pub(crate) enum StepKind {
    /// An input node binding the given slot.
    Input { slot: usize },
    /// A scan node, with the plan of its body.
    Scan(Box<Plan>),
    /// Any other op.
    Compute,
}

fn node_error(graph: &Graph, node: NodeId, kind: NodeErrorKind) -> ExecError {
    ExecError::Node {
        at: Box::new(Location { scope: Scope::default(), node, origin: graph.node(node).origin.clone() }),
        kind,
    }
}

/// Compiled kernels by the address of the [`kiln_ir::Kernel`] they compute (kernels are boxed in
/// their ops, so the address is stable for as long as the graph lives).
pub(crate) type NativeKernels = std::collections::HashMap<usize, crate::jit::CompiledKernel>;

/// The address a kernel is keyed by in [`NativeKernels`].
pub(crate) fn kernel_key(op: &kiln_ir::Op) -> Option<usize> {
    match op {
        kiln_ir::Op::Fused(k) | kiln_ir::Op::FusedMatMul { epilogue: k, .. } => {
            Some(&**k as *const kiln_ir::Kernel as usize)
        }
        _ => None,
    }
}

impl Plan {
    /// Gives every kernel step (here and in scan bodies) its compiled code, when there is some,
    /// and every matrix product the JIT's product code.
    pub(crate) fn attach_native(&mut self, graph: &Graph, native: &NativeKernels) {
        for step in &mut self.steps {
            let op = &graph.node(step.node).op;
            match (&mut step.kind, op) {
                (StepKind::Scan(body), kiln_ir::Op::Scan(scan)) => {
                    body.attach_native(&scan.body, native);
                    let mut kernels = body.steps.iter().filter_map(|s| Some((s.node, s.native.as_ref()?)));
                    body.rows = match (kernels.next(), kernels.next()) {
                        (Some((node, code)), None) => RowScan::analyze(scan, node, code),
                        _ => None,
                    };
                }
                _ => {
                    step.native = kernel_key(op).and_then(|k| native.get(&k).cloned());
                    if matches!(op, Op::MatMul { .. } | Op::FusedMatMul { .. }) {
                        step.products = Products::Native;
                    }
                }
            }
        }
    }

    /// The plan of `graph`; `planned` follows its memory plan (which must exist, and its
    /// bodies', and have been validated).
    pub fn build(graph: &Graph, binding: Binding, planned: bool) -> Result<Plan, ExecError> {
        let memory = match (planned, graph.plan()) {
            (false, _) => None,
            (true, Some(m)) => Some(m),
            (true, None) => {
                let what = "a scan body of a planned graph has no plan".to_string();
                return Err(ExecError::Plan(kiln_ir::PlanError { scope: Vec::new(), what }));
            }
        };
        let order = match memory {
            Some(m) => m.order.clone(),
            None => graph.topo_order().map_err(|nodes| ExecError::Cycle { scope: Scope::default(), nodes })?,
        };
        let slots = input_slots(graph, binding)?;
        let exists = |v: Value| graph.contains(v.node) && (v.result as usize) < graph.node(v.node).results.len();

        let mut steps = Vec::with_capacity(order.len());
        for &id in &order {
            let operands = graph.operands(id);
            if let Some(v) = operands.iter().find(|v| !exists(**v)) {
                return Err(node_error(graph, id, NodeErrorKind::Missing { operand: v.to_string() }));
            }
            let kind = match &graph.node(id).op {
                Op::Input(p) => match slots.get(&id) {
                    Some(&slot) => StepKind::Input { slot },
                    None => {
                        return Err(node_error(
                            graph,
                            id,
                            NodeErrorKind::Unbound {
                                name: p.name.clone(),
                                what: "the node is not among the graph's inputs".into(),
                            },
                        ))
                    }
                },
                Op::Scan(scan) => {
                    let n = scan.carries + scan.sequences + scan.constants;
                    if scan.body.inputs().len() != n {
                        return Err(node_error(
                            graph,
                            id,
                            NodeErrorKind::Scan {
                                what: format!(
                                    "the body takes {} arguments, the scan passes {n}",
                                    scan.body.inputs().len()
                                ),
                            },
                        ));
                    }
                    let body = Plan::build(&scan.body, Binding::Arguments, planned).map_err(|e| e.in_scan(id, None))?;
                    StepKind::Scan(Box::new(body))
                }
                _ => StepKind::Compute,
            };
            let (place, scratch) = match memory {
                None => (SmallVec::new(), None),
                Some(m) => {
                    let results = graph.node(id).results.len();
                    let place = (0..results)
                        .map(|r| m.placement(Value::new(id, r as u16)).ok_or_else(|| missing_placement(graph, id, r)))
                        .collect::<Result<_, _>>()?;
                    (place, m.scratch.get(&id).copied())
                }
            };
            steps.push(Step {
                node: id,
                operands,
                free: SmallVec::new(),
                kind,
                place,
                scratch,
                native: None,
                products: Products::Reference,
            });
        }

        let mut outputs = Vec::with_capacity(graph.outputs().len());
        for o in graph.outputs() {
            if !exists(o.value) {
                return Err(ExecError::DanglingOutput { scope: Scope::default(), name: o.name.clone() });
            }
            outputs.push(o.value);
        }

        // Last uses: the last step reading a value frees it; an unused value is freed right
        // after the step producing it; outputs are kept to the end.
        let mut last_use: HashMap<Value, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            for &v in &step.operands {
                last_use.insert(v, i);
            }
        }
        let kept: HashSet<Value> = outputs.iter().copied().collect();
        for i in 0..steps.len() {
            let node = steps[i].node;
            for r in 0..graph.node(node).results.len() {
                let v = Value::new(node, r as u16);
                if kept.contains(&v) {
                    continue;
                }
                let at = last_use.get(&v).copied().unwrap_or(i);
                steps[at].free.push(v);
            }
        }

        let arena = memory.map(|m| m.buffers.iter().map(|b| (b.offset, b.size)).collect());
        Ok(Plan {
            steps,
            node_bound: graph.petgraph().node_bound(),
            outputs,
            slots: graph.inputs().len(),
            arena,
            rows: None,
        })
    }
}

fn missing_placement(graph: &Graph, node: NodeId, result: usize) -> ExecError {
    node_error(graph, node, NodeErrorKind::Internal { what: format!("the memory plan does not place result {result}") })
}

/// The slot each input node binds, checked to be in range and distinct.
fn input_slots(graph: &Graph, binding: Binding) -> Result<HashMap<NodeId, usize>, ExecError> {
    let n = graph.inputs().len();
    let mut slots = HashMap::with_capacity(n);
    let mut taken = vec![false; n];
    for (position, &id) in graph.inputs().iter().enumerate() {
        let Some(param) = graph.param(id) else {
            return Err(node_error(
                graph,
                id,
                NodeErrorKind::Unbound {
                    name: String::new(),
                    what: "the graph lists it as an input but it is not an input node".into(),
                },
            ));
        };
        let unbound = |what: String| node_error(graph, id, NodeErrorKind::Unbound { name: param.name.clone(), what });
        let slot = match (binding, param.role) {
            (Binding::Positional, _) => position,
            (Binding::Arguments, ParamRole::Argument { index }) => index,
            (Binding::Arguments, role) => {
                return Err(unbound(format!("a scan body takes only arguments, this is {role:?}")))
            }
        };
        match taken.get_mut(slot) {
            None => return Err(unbound(format!("argument index {slot} is out of range for a body of {n} arguments"))),
            Some(true) => return Err(unbound(format!("argument index {slot} is bound by another input too"))),
            Some(t) => *t = true,
        }
        if graph.node(id).results.len() != 1 {
            return Err(unbound("an input node must declare exactly one type".into()));
        }
        slots.insert(id, slot);
    }
    Ok(slots)
}
