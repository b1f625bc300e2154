//! Graphviz export of a graph (scan bodies become clusters).

use crate::display::node_line;
use crate::graph::{Graph, OutputRole};
use crate::op::Op;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use std::fmt::Write;

/// Renders `graph` in the DOT language.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {:?} {{", graph.name);
    let _ = writeln!(out, "  node [shape=box, fontname=\"monospace\", fontsize=10];");
    write_cluster(graph, "n", &mut out);
    let _ = writeln!(out, "}}");
    out
}

fn write_cluster(g: &Graph, prefix: &str, out: &mut String) {
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids().collect());
    for id in &order {
        let node = g.node(*id);
        let label = node_line(g, *id).replace('\\', "\\\\").replace('"', "\\\"");
        let style = match node.op {
            Op::Input(_) => ", style=filled, fillcolor=\"#dde8f7\"",
            Op::Constant(_) => ", style=filled, fillcolor=\"#eeeeee\"",
            Op::Scan(_) => ", style=filled, fillcolor=\"#f7e6cc\"",
            _ => "",
        };
        let _ = writeln!(out, "  {prefix}{} [label=\"{label}\"{style}];", id.index());
        if let Op::Scan(scan) = &node.op {
            let inner = format!("{prefix}{}_", id.index());
            let _ = writeln!(out, "  subgraph cluster_{inner} {{ label=\"scan %{} body\";", id.index());
            write_cluster(&scan.body, &inner, out);
            let _ = writeln!(out, "  }}");
        }
    }
    for e in g.petgraph().edge_references() {
        let _ = writeln!(
            out,
            "  {prefix}{} -> {prefix}{} [label=\"{}\"];",
            e.source().index(),
            e.target().index(),
            e.weight().slot
        );
    }
    for o in g.outputs() {
        let shape = if o.role == OutputRole::State { "cds" } else { "oval" };
        let _ = writeln!(out, "  {prefix}out_{} [label={:?}, shape={shape}];", o.name.replace(['.', '-'], "_"), o.name);
        let _ = writeln!(out, "  {prefix}{} -> {prefix}out_{};", o.value.node.index(), o.name.replace(['.', '-'], "_"));
    }
}
