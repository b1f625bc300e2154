//! Kiln's executors. For now: the reference interpreter ([`Interpreter`]), which defines what a
//! graph computes; the JIT and every graph pass are checked against it.
//!
//! Every executor implements [`Executable`]: inputs bind `graph.inputs()` by position, the
//! sequence length `T` is read off the inputs ([`check_inputs`]), and the results come back in
//! the order of `graph.outputs()`. Tensors ([`Tensor`]) may borrow their data, so weights can be
//! passed straight from a memory-mapped checkpoint.
//!
//! Guarantee: no executor panics on bad input; every failure is an [`ExecError`] whose message is
//! one line naming the input, or the node (`%N`), its spec location and the enclosing scans.

mod disjoint;
pub mod error;
mod inputs;
mod interp;
pub mod jit;
pub mod quant;
mod team;
pub mod tensor;
#[doc(hidden)]
pub mod testing;

pub use error::{ExecError, Location, NodeErrorKind, ScanFrame, Scope};
pub use inputs::check_inputs;
pub use tensor::{Dims, Tensor, TensorData, TensorType};

use interp::eval::run_plan;
use interp::plan::{Binding, Plan};
use kiln_ir::Graph;

/// Something that runs a graph: `inputs[i]` binds `graph.inputs()[i]`, and the results are
/// `graph.outputs()` in order.
pub trait Executable {
    fn run(&self, inputs: &[Tensor<'_>]) -> Result<Vec<Tensor<'static>>, ExecError>;
}

/// The reference interpreter for one graph.
///
/// Construction derives the execution plan (topological order, last uses, scan body plans)
/// once; a structurally broken graph (a cycle, a dangling output, ...) is reported by every
/// [`Executable::run`]. Run [`kiln_ir::verify`] first to get all of a graph's problems at once.
///
/// When the graph carries a memory plan ([`Graph::plan`], made by the `memory-plan` pass) it is
/// validated here and every call runs it: the plan's order, all intermediates in one arena
/// allocation at the planned offsets (see [`kiln_ir::plan`]). Without one, every value is its own
/// allocation. Both give bit-identical results.
#[derive(Debug)]
pub struct Interpreter {
    graph: Graph,
    plan: Result<Plan, ExecError>,
}

impl Interpreter {
    pub fn new(graph: Graph) -> Interpreter {
        let plan = match graph.plan() {
            None => Plan::build(&graph, Binding::Positional, false),
            Some(memory) => match memory.validate(&graph) {
                Ok(()) if !memory.outputs_in_arena => Plan::build(&graph, Binding::Positional, true),
                Ok(()) => Err(ExecError::Plan(kiln_ir::PlanError {
                    scope: Vec::new(),
                    what: "a top-level graph's plan keeps its outputs in the arena".into(),
                })),
                Err(e) => Err(e.into()),
            },
        };
        Interpreter { graph, plan }
    }

    /// An interpreter that calls compiled code for the kernels in `native` (see [`jit::Jit`]).
    pub(crate) fn with_native(graph: Graph, native: &interp::plan::NativeKernels) -> Interpreter {
        let mut interpreter = Interpreter::new(graph);
        if let Ok(plan) = &mut interpreter.plan {
            plan.attach_native(&interpreter.graph, native);
        }
        interpreter
    }

    /// The scan nodes of the top-level graph, and how many of them run by blocks of rows.
    pub(crate) fn scans_by_rows(&self) -> (usize, usize) {
        let Ok(plan) = &self.plan else { return (0, 0) };
        plan.steps.iter().fold((0, 0), |(all, rows), step| match &step.kind {
            interp::plan::StepKind::Scan(body) => (all + 1, rows + usize::from(body.rows.is_some())),
            _ => (all, rows),
        })
    }

    /// Whether calls run the graph's memory plan (one arena) rather than unplanned.
    pub fn is_planned(&self) -> bool {
        self.plan.as_ref().is_ok_and(|p| p.arena.is_some())
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Gives the graph back.
    pub fn into_graph(self) -> Graph {
        self.graph
    }
}

impl Executable for Interpreter {
    fn run(&self, inputs: &[Tensor<'_>]) -> Result<Vec<Tensor<'static>>, ExecError> {
        let plan = self.plan.as_ref().map_err(Clone::clone)?;
        let t = check_inputs(&self.graph, inputs)?;
        let args = inputs.iter().map(|x| Some(x.view())).collect();
        if plan.arena.is_some() {
            return interp::planned::run_top(&self.graph, plan, args, t);
        }
        run_plan(&self.graph, plan, args, t)
    }
}
