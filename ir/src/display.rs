//! The text dump of a graph: what snapshots record and what people read when a pass goes wrong.
//!
//! One node per line in a deterministic topological order (lowest ready id first), with node ids
//! as they are in the graph, so deleting a node does not renumber the dump:
//!
//! ```text
//! graph rwkv4 {
//!   %5 = gather %1, %0 : f32[T, 64]                               ; rwkv4.toml:40:10
//!   %9 = scan %2, %3, %4, %7, %8 {carries = 3, ...} : f32[64], ...
//!     body { ... }
//!   return logits = %40
//!   state att_x.0 = %12
//! }
//! ```
//!
//! When the graph carries a memory plan ([`crate::plan`]) the nodes are printed in the plan's
//! execution order, a `; memory plan: ...` summary line closes the body, and every node line
//! ends with its step in that order and where its results live, after the `; origin` comment
//! (the origin is always first, the plan always last):
//! `; 14: buf 7 @ 2048+512·T, 3072·T B, live 14..19`, with `inplace over operand 0` for an
//! in-place write, `view of buf 7` for a reshape, `out` for a top-level output and
//! `scratch buf ...` for the body arena of a scan or the product of a `matmul.fused` (parts
//! separated by ` | `). Scan bodies print their own plans the same way.

use crate::graph::{Graph, NodeId, OutputRole};
use crate::op::{Attributes, Op};
use std::fmt::{self, Write};

/// The column at which the `; origin` comment starts.
const COMMENT_COLUMN: usize = 64;

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        write_body(self, f, 1)?;
        writeln!(f, "}}")
    }
}

fn write_body(g: &Graph, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
    let indent = "  ".repeat(depth);
    let plan = g.plan().filter(|p| p.order.len() == g.node_count() && p.order.iter().all(|&id| g.contains(id)));
    let order = match (plan, g.topo_order()) {
        (Some(plan), _) => plan.order.clone(),
        (None, Ok(order)) => order,
        (None, Err(_)) => {
            // A cyclic graph still prints (the verifier explains it), in id order.
            g.node_ids().collect()
        }
    };
    for (pos, id) in order.into_iter().enumerate() {
        let mut line = node_line(g, id);
        let node = g.node(id);
        let mut comments: Vec<String> = node.origin.iter().map(ToString::to_string).collect();
        comments.extend(plan.map(|p| p.annotation(g, id, pos)));
        if !comments.is_empty() {
            let pad = COMMENT_COLUMN.saturating_sub(indent.len() + line.chars().count()).max(2);
            let _ = write!(line, "{:pad$}; {}", "", comments.join("  ; "));
        }
        writeln!(f, "{indent}{line}")?;
        match &node.op {
            Op::Scan(scan) => {
                writeln!(f, "{indent}  body {{")?;
                write_body(&scan.body, f, depth + 2)?;
                writeln!(f, "{indent}  }}")?;
            }
            Op::Fused(kernel) | Op::FusedMatMul { epilogue: kernel, .. } => {
                kernel.write_body(f, &format!("{indent}  "))?
            }
            _ => {}
        }
    }
    let results: Vec<String> = g
        .outputs()
        .iter()
        .filter(|o| o.role == OutputRole::Result)
        .map(|o| format!("{} = {}", o.name, o.value))
        .collect();
    writeln!(f, "{indent}return {}", results.join(", "))?;
    for o in g.outputs().iter().filter(|o| o.role == OutputRole::State) {
        writeln!(f, "{indent}state {} = {}", o.name, o.value)?;
    }
    if let Some(plan) = plan {
        writeln!(f, "{indent}; {}", plan.summary())?;
    }
    Ok(())
}

/// `%N = op operands {attrs} : types` for one node.
pub fn node_line(g: &Graph, id: NodeId) -> String {
    let node = g.node(id);
    let mut s = format!("%{} = {}", id.index(), node.op.mnemonic());
    match &node.op {
        Op::Input(p) => {
            let _ = write!(s, " {:?}", p.name);
        }
        Op::Constant(c) => {
            let _ = write!(s, " {c:?}");
        }
        _ => {}
    }
    let operands = g.operands(id);
    for (i, v) in operands.iter().enumerate() {
        let _ = write!(s, "{}{v}", if i == 0 { " " } else { ", " });
    }
    let _ = write!(s, "{}", Attributes(&node.op));
    let types: Vec<String> = node.results.iter().map(|t| t.to_string()).collect();
    let _ = write!(s, " : {}", types.join(", "));
    s
}
