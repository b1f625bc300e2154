//! The JIT backend: every fused kernel of a graph (scan bodies and `matmul.fused` epilogues
//! included) compiled to native code in one Cranelift module, the rest of the graph run by the
//! interpreter's executor, which calls the compiled code in place of its kernel loops and the
//! JIT's matrix products ([`super::products`]: `gemm` tiles, the matrix-vector kernel, epilogues
//! per row tile) in place of its own; a scan whose body is one kernel runs by blocks of rows
//! ([`super::scan`]). A kernel the code generator rejects runs interpreted; [`JitReport`] says
//! which.
//!
//! Guarantee: the same results as the interpreter up to the JIT's reassociation of reductions
//! and products and its polynomial transcendentals (1e-5 relative; bit-identical for exact
//! ops), and the same results with any number of threads.

use super::{CompiledKernel, JitError, JitModule, JitOptions};
use crate::interp::plan::{kernel_key, NativeKernels};
use crate::{ExecError, Executable, Interpreter, Tensor};
use kiln_ir::{Graph, Kernel, Op};
use std::time::Duration;

/// What compiling a graph's kernels did.
#[derive(Clone, Debug, Default)]
pub struct JitReport {
    pub kernels: usize,
    pub compiled: usize,
    /// Kernels left to the interpreter, with the reason.
    pub rejected: Vec<String>,
    pub compile_time: Duration,
    /// Scan nodes of the graph, and how many of them run by blocks of rows ([`super::scan`]).
    pub scans: usize,
    pub scans_by_rows: usize,
}

/// A graph ready to run with compiled kernels.
#[derive(Debug)]
pub struct Jit {
    interpreter: Interpreter,
    report: JitReport,
    _module: JitModule,
}

/// Every kernel of `graph` and its scan bodies, with its key.
fn kernels(graph: &Graph, out: &mut Vec<(usize, Kernel)>) {
    for n in graph.node_ids() {
        let op = &graph.node(n).op;
        match op {
            Op::Scan(scan) => kernels(&scan.body, out),
            Op::Fused(k) | Op::FusedMatMul { epilogue: k, .. } => {
                if let Some(key) = kernel_key(op) {
                    out.push((key, (**k).clone()));
                }
            }
            _ => {}
        }
    }
}

impl Jit {
    /// Compiles `graph`'s kernels. Fails only when the host cannot run JIT code at all.
    pub fn new(graph: Graph, options: &JitOptions) -> Result<Jit, JitError> {
        let mut found = Vec::new();
        kernels(&graph, &mut found);
        let refs: Vec<&Kernel> = found.iter().map(|(_, k)| k).collect();
        let module = JitModule::compile(&refs, options)?;
        let mut native = NativeKernels::new();
        let mut report = JitReport { kernels: found.len(), compile_time: module.stats().total, ..JitReport::default() };
        for (i, (key, _)) in found.iter().enumerate() {
            match module.kernel(i) {
                Ok(code) => {
                    native.insert(*key, code.clone());
                    report.compiled += 1;
                }
                Err(e) => report.rejected.push(e.to_string()),
            }
        }
        let interpreter = Interpreter::with_native(graph, &native);
        (report.scans, report.scans_by_rows) = interpreter.scans_by_rows();
        Ok(Jit { interpreter, report, _module: module })
    }

    pub fn report(&self) -> &JitReport {
        &self.report
    }

    pub fn graph(&self) -> &Graph {
        self.interpreter.graph()
    }
}

impl Executable for Jit {
    fn run(&self, inputs: &[Tensor<'_>]) -> Result<Vec<Tensor<'static>>, ExecError> {
        self.interpreter.run(inputs)
    }
}

/// Compiled kernels are shared between threads through their handles.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledKernel>();
    assert_send_sync::<Jit>();
};
