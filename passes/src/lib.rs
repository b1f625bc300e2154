//! Kiln's passes over the IR. Each pass is a free function in its own module that takes a
//! graph and leaves it valid (the verifier holds before and after); [`manager`] runs them as a
//! named, timed pipeline. [`default_pipeline`] is the list the runtime uses. [`lora`] applies an
//! adapter before it and [`quantize`] retypes weights after it; neither is in that list (they
//! need the adapter, the quantization options).

pub mod algebraic;
pub mod autodiff;
pub mod const_fold;
pub mod cse;
pub mod dead_code;
pub mod error;
pub mod fuse_elementwise;
pub mod fuse_matmul;
pub mod lora;
pub mod manager;
pub mod memory_plan;
pub mod quantize;
pub mod rewrite;
pub mod shape_fold;
#[cfg(test)]
mod testing;

pub use algebraic::algebraic;
pub use autodiff::{autodiff, backprop, chunk_training_graph, loss_graph, training_graph, AutodiffError};
pub use const_fold::const_fold;
pub use cse::cse;
pub use dead_code::dead_code;
pub use error::PassError;
pub use fuse_elementwise::fuse_elementwise;
pub use fuse_matmul::fuse_matmul;
pub use lora::{lora, LoraError, LoraTemplate};
pub use manager::{DumpPoint, Pass, PassReport, Pipeline, PipelineOptions, RunReport};
pub use memory_plan::memory_plan;
pub use quantize::{quantize, QuantizeError, QuantizeOptions, QuantizeReport};
pub use shape_fold::shape_fold;

/// Every pass, in the order the default pipeline runs them.
pub fn all_passes() -> Vec<Pass> {
    let dead = Pass {
        name: "dead-code",
        description: "remove nodes no output needs (and weights nothing reads)",
        required: false,
        run: |g| Ok(dead_code(g)),
    };
    vec![
        dead,
        Pass {
            name: "const-fold",
            description: "evaluate elementwise ops of constants (through broadcasts and reshapes)",
            required: false,
            run: const_fold,
        },
        Pass {
            name: "algebraic",
            description: "apply the arithmetic identities that are exact in f32 (x * 1, x - 0, neg(neg x), ...)",
            required: false,
            run: algebraic,
        },
        Pass {
            name: "shape-fold",
            description: "fold chains of reshapes, broadcasts and transposes, and shape ops that do nothing",
            required: false,
            run: shape_fold,
        },
        Pass {
            name: "cse",
            description: "merge nodes computing the same op of the same operands (equal constants too)",
            required: false,
            run: cse,
        },
        dead,
        Pass {
            name: "fuse-elementwise",
            description: "fuse elementwise chains, last-axis reductions and broadcasts into kernels (scan bodies too)",
            required: false,
            run: fuse_elementwise,
        },
        Pass {
            name: "fuse-matmul",
            description: "run elementwise work that follows a matrix product as its epilogue, row by row",
            required: false,
            run: fuse_matmul,
        },
        dead,
        Pass {
            name: "memory-plan",
            description: "choose the execution order and place every intermediate in one arena (last: changes drop it)",
            required: false,
            run: memory_plan,
        },
    ]
}

/// The pipeline the runtime runs after lowering.
pub fn default_pipeline() -> Pipeline {
    Pipeline::new(all_passes())
}
