//! Kiln's passes over the IR. Each pass is a free function in its own module that takes a
//! graph and leaves it valid (the verifier holds before and after); [`manager`] runs them as a
//! named, timed pipeline. [`default_pipeline`] is the list the runtime uses.

pub mod dead_code;
pub mod error;
pub mod fuse_elementwise;
pub mod fuse_matmul;
pub mod manager;

pub use dead_code::dead_code;
pub use error::PassError;
pub use fuse_elementwise::fuse_elementwise;
pub use fuse_matmul::fuse_matmul;
pub use manager::{DumpPoint, Pass, PassReport, Pipeline, PipelineOptions, RunReport};

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
    ]
}

/// The pipeline the runtime runs after lowering.
pub fn default_pipeline() -> Pipeline {
    Pipeline::new(all_passes())
}
