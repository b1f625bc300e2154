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
    let order = match g.topo_order() {
        Ok(order) => order,
        Err(_) => {
            // A cyclic graph still prints (the verifier explains it), in id order.
            g.node_ids().collect()
        }
    };
    for id in order {
        let line = node_line(g, id);
        let node = g.node(id);
        match &node.origin {
            Some(o) => {
                let pad = COMMENT_COLUMN.saturating_sub(indent.len() + line.chars().count()).max(2);
                writeln!(f, "{indent}{line}{:pad$}; {o}", "")?;
            }
            None => writeln!(f, "{indent}{line}")?,
        }
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
