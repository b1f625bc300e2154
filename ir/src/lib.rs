//! Kiln's intermediate representation: a typed SSA dataflow graph of a small, closed set of
//! primitive ops ([`Op`]), with the sequence length `T` kept symbolic ([`Dim`]).
//!
//! Layers: [`types`] (dtypes, symbolic shapes), [`op`] (the primitives), [`infer`] (their type
//! rules: the one source of truth for shapes), [`graph`] (the graph on petgraph), [`verify`]
//! (collects every error, naming nodes and spec locations), [`plan`] (memory plans: execution
//! order, buffers and their symbolic offsets), [`display`] (the deterministic text dump) and
//! [`dot`] (Graphviz).

pub mod display;
pub mod dot;
pub mod graph;
pub mod infer;
pub mod kernel;
pub mod op;
pub mod plan;
pub mod types;
pub mod verify;

pub use graph::{Graph, Node, NodeId, Origin, Output, OutputRole, Use, Value};
pub use infer::{broadcast_shapes, broadcasts_to, infer, TypeError};
pub use kernel::{Instr, Kernel, KernelOutput, Level};
pub use op::{BinaryOp, CompareOp, Op, Param, ParamRole, ReduceOp, Scan, UnaryOp};
pub use plan::{BufferId, MemoryPlan, Placement, PlanError};
pub use types::{packed_row_bytes, Count, DType, Dim, Quant, QuantScheme, Shape, Type};
pub use verify::{verify, VerifyError, VerifyErrorKind, VerifyErrors};
