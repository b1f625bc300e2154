//! `kiln stats`: what the pass pipeline does to a model, as one Markdown table. Rows count nodes
//! by op (`Op::mnemonic`, so ops added later show up by themselves) in the graph as lowered and
//! after the default pipeline, scan bodies included, and the primitive ops inside fused kernels;
//! then memory at `T = 1` and `T = 512`: the arena the memory plan needs (the planned peak) and
//! the sum of all intermediate sizes (each value its own allocation, nothing freed: inputs and
//! top-level outputs, which live outside the arena, are not counted; a scan counts one step of
//! its body). The lowered graph is planned by the `memory-plan` pass alone, so the two columns
//! also show what the other passes save.
//!
//! Needs no weights: a model directory's `config.json` (and its spec), or `--spec` with an
//! optional `--config`. Deterministic output.

use super::commands::spec_and_config;
use crate::Error;
use clap::Args;
use kiln_frontend::CompileOptions;
use kiln_ir::plan::intermediate_bytes;
use kiln_ir::{Graph, Op};
use kiln_passes::PipelineOptions;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A model directory (its config.json and spec are used; weights are not read).
    pub model_dir: Option<PathBuf>,
    /// A spec file (with --config, or the hyperparameters' defaults).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// A config.json to compile the spec for.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The sequence lengths the memory rows are given for.
const TS: [usize; 2] = [1, 512];

pub(super) fn run(args: &StatsArgs, out: &mut dyn Write) -> Result<(), Error> {
    let (spec, config) = spec_and_config(args.model_dir.clone(), args.spec.clone(), args.config.clone())?;
    let mut lowered = kiln_frontend::compile(&spec, &config, &CompileOptions::default())?;
    kiln_ir::verify(&lowered)?;
    let mut optimized = lowered.clone();
    kiln_passes::default_pipeline().run(&mut optimized, &PipelineOptions::default())?;
    kiln_ir::verify(&optimized)?;
    kiln_passes::memory_plan(&mut lowered)?;
    let source = match (&args.spec, &args.model_dir) {
        (Some(s), _) => s.display().to_string(),
        (None, Some(d)) => d.display().to_string(),
        (None, None) => String::new(),
    };
    let config_name = args.config.as_ref().map(|c| format!(", config {}", c.display())).unwrap_or_default();
    let text = table(&format!("{} ({source}{config_name})", optimized.name), &lowered, &optimized);
    out.write_all(text.as_bytes()).map_err(|source| Error::Io { path: Path::new("<stdout>").into(), source })
}

/// Counts the nodes of `graph` and its scan bodies by mnemonic, and the primitive ops inside
/// fused kernels.
fn count(graph: &Graph, counts: &mut BTreeMap<String, usize>, in_kernels: &mut usize) {
    for id in graph.node_ids() {
        let op = &graph.node(id).op;
        *counts.entry(op.mnemonic()).or_default() += 1;
        match op {
            Op::Scan(scan) => count(&scan.body, counts, in_kernels),
            Op::Fused(k) => *in_kernels += k.op_count(),
            Op::FusedMatMul { epilogue, .. } => *in_kernels += epilogue.op_count(),
            _ => {}
        }
    }
}

/// `1.5 KiB`, `12.0 MiB`, ...
fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < units.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[unit])
    }
}

/// The table for one model: `lowered` (planned alone) against `optimized` (the full pipeline).
fn table(title: &str, lowered: &Graph, optimized: &Graph) -> String {
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    let (mut fused_before, mut fused_after) = (0, 0);
    count(lowered, &mut before, &mut fused_before);
    count(optimized, &mut after, &mut fused_after);
    let ops: Vec<&String> = {
        let mut all: Vec<&String> = before.keys().chain(after.keys()).collect();
        all.sort();
        all.dedup();
        all
    };
    let total = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    let mut rows: Vec<(String, String, String)> =
        vec![("**nodes** (scan bodies included)".into(), total(&before).to_string(), total(&after).to_string())];
    for op in ops {
        let get = |m: &BTreeMap<String, usize>| m.get(op).copied().unwrap_or(0).to_string();
        rows.push((format!("`{op}`"), get(&before), get(&after)));
    }
    rows.push(("primitive ops inside fused kernels".into(), fused_before.to_string(), fused_after.to_string()));
    for t in TS {
        let peak = |g: &Graph| g.plan().map_or("unplanned".into(), |p| bytes(p.arena_bytes(t)));
        let sum = |g: &Graph| intermediate_bytes(g, true).map_or("not linear in T".into(), |c| bytes(c.at(t)));
        rows.push((format!("**arena** (planned peak), T = {t}"), peak(lowered), peak(optimized)));
        rows.push((format!("Σ intermediate sizes, T = {t}"), sum(lowered), sum(optimized)));
    }
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max("lowered".len());
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max("optimized".len());
    let mut s = format!("{title}\n\n");
    s += &format!("| {:w0$} | {:>w1$} | {:>w2$} |\n", "", "lowered", "optimized");
    s += &format!("|{}|{}:|{}:|\n", "-".repeat(w0 + 2), "-".repeat(w1 + 1), "-".repeat(w2 + 1));
    for (a, b, c) in rows {
        let pad = w0 - a.chars().count();
        s += &format!("| {a}{:pad$} | {b:>w1$} | {c:>w2$} |\n", "");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
